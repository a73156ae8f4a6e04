"""Reading PyraTok checkpoint folders written by either front end (transformers or diffusers layout)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError
from safetensors.torch import load_file

CONFIG_NAME = "config.json"
TRANSFORMERS_WEIGHTS_NAME = "model.safetensors"
DIFFUSERS_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
# Hub download options both front ends accept and pass on to `hf_hub_download`.
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "proxies")


@dataclass
class PyraTokCheckpointFiles:
    """Where a checkpoint's config and weights live and which layout wrote them."""

    config_file: str
    weights_file: str
    layout: str  # "transformers" or "diffusers"


def _resolve_file(name_or_path: str, filename: str, subfolder: str | None, hub_kwargs: dict[str, Any]) -> str | None:
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, subfolder or "", filename)
        return path if os.path.isfile(path) else None
    try:
        return hf_hub_download(name_or_path, filename, subfolder=subfolder or None, **hub_kwargs)
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None


def resolve_checkpoint(
    name_or_path: str | os.PathLike, subfolder: str | None = None, **kwargs: Any
) -> PyraTokCheckpointFiles:
    """Find `config.json` and the safetensors weights of a local folder or Hub repo, in either layout.

    Raises:
        ValueError: when the folder has no config or no safetensors weights under a name PyraTok writes.
    """
    name_or_path = str(name_or_path)
    if not os.path.isdir(name_or_path) and (os.path.isabs(name_or_path) or name_or_path.startswith(".")):
        raise ValueError(f"{name_or_path!r} is not a folder; pass an existing checkpoint folder or a Hub repo id")
    hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if kwargs.get(k) is not None}
    try:
        config_file = _resolve_file(name_or_path, CONFIG_NAME, subfolder, hub_kwargs)
    except HFValidationError as err:
        raise ValueError(f"{name_or_path!r} is neither a local folder nor a valid Hub repo id: {err}") from err
    if config_file is None:
        raise ValueError(
            f"{name_or_path!r} (subfolder={subfolder!r}) has no {CONFIG_NAME}; is it a PyraTok checkpoint?"
        )
    for layout, filename in (("transformers", TRANSFORMERS_WEIGHTS_NAME), ("diffusers", DIFFUSERS_WEIGHTS_NAME)):
        weights_file = _resolve_file(name_or_path, filename, subfolder, hub_kwargs)
        if weights_file is not None:
            return PyraTokCheckpointFiles(config_file, weights_file, layout)
    raise ValueError(
        f"{name_or_path!r} (subfolder={subfolder!r}) has neither {TRANSFORMERS_WEIGHTS_NAME} nor "
        f"{DIFFUSERS_WEIGHTS_NAME}; PyraTok checkpoints are stored as safetensors"
    )


def read_config(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_state_dict_strict(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """`load_state_dict` that fails with the offending key names (and shapes) instead of loading half a model."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if own[k].shape != state_dict[k].shape
    )
    if missing or unexpected or mismatched:
        raise ValueError(checkpoint_mismatch_message(source, missing, unexpected, mismatched))
    module.load_state_dict(state_dict, strict=True)


def checkpoint_mismatch_message(source: str, missing, unexpected, mismatched, limit: int = 8) -> str:
    parts = [f"checkpoint {source} does not match the model built from its config:"]
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        keys = list(keys)
        if keys:
            more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
            parts.append(f"  {label} ({len(keys)}): {keys[:limit]}{more}")
    return "\n".join(parts)


def load_weights(files: PyraTokCheckpointFiles) -> dict[str, torch.Tensor]:
    return load_file(files.weights_file)


__all__ = [
    "PyraTokCheckpointFiles",
    "checkpoint_mismatch_message",
    "load_state_dict_strict",
    "load_weights",
    "read_config",
    "resolve_checkpoint",
]

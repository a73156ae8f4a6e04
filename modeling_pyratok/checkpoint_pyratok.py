"""Reading PyraTok checkpoint folders written by either front end (transformers or diffusers layout), and the
official release's diffusers folder (`_class_name: AutoencoderKLPyraTok`, Hub `onkarsus13/PyraTok`, `vae/`)."""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import PretrainedConfig
from transformers.utils import logging

from .configuration_pyratok import config_field_names

logger = logging.get_logger(__name__)

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


def resolve_config(name_or_path: str | os.PathLike, subfolder: str | None = None, **kwargs: Any) -> str:
    """Path of the `config.json` of a local folder or Hub repo.

    Raises:
        ValueError: when `name_or_path` is neither a folder nor a Hub id, or has no config.
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
    return config_file


def resolve_checkpoint(
    name_or_path: str | os.PathLike, subfolder: str | None = None, **kwargs: Any
) -> PyraTokCheckpointFiles:
    """Find `config.json` and the unsharded safetensors weights of a local folder or Hub repo, in either layout.

    Raises:
        ValueError: when the folder has no config or no safetensors weights under a name PyraTok writes.
    """
    name_or_path = str(name_or_path)
    config_file = resolve_config(name_or_path, subfolder, **kwargs)
    hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if kwargs.get(k) is not None}
    for layout, filename in (("transformers", TRANSFORMERS_WEIGHTS_NAME), ("diffusers", DIFFUSERS_WEIGHTS_NAME)):
        weights_file = _resolve_file(name_or_path, filename, subfolder, hub_kwargs)
        if weights_file is not None:
            return PyraTokCheckpointFiles(config_file, weights_file, layout)
    raise ValueError(
        f"{name_or_path!r} (subfolder={subfolder!r}) has neither {TRANSFORMERS_WEIGHTS_NAME} nor "
        f"{DIFFUSERS_WEIGHTS_NAME}; PyraTok checkpoints are stored as safetensors"
    )


def read_config(path: str) -> dict[str, Any]:
    """A checkpoint's `config.json` as a dict; logs a warning naming fields PyraTok does not know (a typo such as
    `text_max_lenght` would otherwise fall back to the default without a word).

    Raises:
        ValueError: when the file does not hold a JSON object.
    """
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    if not isinstance(raw, dict):
        raise ValueError(f"{path} holds a JSON {type(raw).__name__}, not an object of config fields")
    unknown = unknown_config_fields(raw)
    if unknown:
        logger.warning(f"{path} has fields PyraTok does not know, ignored: {unknown}")
    return raw


def unknown_config_fields(raw: dict[str, Any]) -> list[str]:
    """Sorted keys of a native PyraTok `config.json` that neither PyraTok nor the transformers / diffusers
    bookkeeping defines (an official release config is checked by `official_config_to_pyratok` instead)."""
    if is_official_config(raw):
        return []
    return sorted(set(raw) - _known_config_keys())


@functools.cache
def _known_config_keys() -> frozenset[str]:
    from .configuration_pyratok import PyraTokConfig

    known = set(config_field_names()) | set(PretrainedConfig().to_dict()) | set(_BOOKKEEPING_KEYS)
    return frozenset(known | set(PyraTokConfig.__annotations__) | set(vars(PyraTokConfig)))


def check_state_dict_values(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Raise `ValueError` naming the tensors of `state_dict` that hold NaN / Inf, or that are integer / bool where
    `module` keeps floating-point weights (loading would cast them silently: truncated weights, all-zero ids)."""
    own = module.state_dict()
    not_float = sorted(
        f"{k} ({v.dtype})"
        for k, v in state_dict.items()
        if k in own and own[k].is_floating_point() and not (v.is_floating_point() or v.is_complex())
    )
    if not_float:
        raise ValueError(f"checkpoint {source}: non-float tensors where the model has float weights: {not_float}")
    check_finite(state_dict.items(), source)


def check_finite(named_tensors: Iterable[tuple[str, torch.Tensor]], source: str, limit: int = 8) -> None:
    """Raise `ValueError` naming the floating-point tensors that hold NaN or Inf values."""
    bad = [k for k, v in named_tensors if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        more = f" (+{len(bad) - limit} more)" if len(bad) > limit else ""
        raise ValueError(f"checkpoint {source}: weights contain NaN or Inf values: {sorted(bad)[:limit]}{more}")


def check_weights_file_dtypes(module: torch.nn.Module, weights_files: Iterable[str], source: str) -> None:
    """Like the dtype half of `check_state_dict_values`, from the safetensors headers alone (no tensor is read)."""
    own = module.state_dict()
    not_float = []
    for path in weights_files:
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                dtype = f.get_slice(key).get_dtype()
                if key in own and own[key].is_floating_point() and not dtype.startswith(("F", "BF", "C")):
                    not_float.append(f"{key} ({dtype})")
    if not_float:
        raise ValueError(
            f"checkpoint {source}: non-float tensors where the model has float weights: {sorted(not_float)}"
        )


def check_loaded_weights(module: torch.nn.Module, source: str, subfolder: str | None = None) -> None:
    """After a library loader (transformers / diffusers) filled `module` from `source` (a folder or Hub id): raise
    `ValueError` naming integer / bool tensors stored for float weights (the loader cast them; checked from the
    safetensors headers of a local folder, shards and variants included) and weights holding NaN or Inf."""
    folder = os.path.join(source, subfolder or "")
    if os.path.isdir(folder):
        weights_files = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".safetensors"))
        check_weights_file_dtypes(module, weights_files, source)
    check_finite(module.state_dict().items(), source)


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
    check_state_dict_values(module, state_dict, source)
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


# ---- the official release (https://github.com/PLAN-Lab/PyraTok, `model.py` and `LaPQ.py`, commit 77741ee) ----------
OFFICIAL_CLASS_NAME = "AutoencoderKLPyraTok"
# Where our cores keep the `AutoencoderKLWan` whose keys the official backbone keys equal.
BACKBONE_PREFIX = "core.backbone.vae."
# Official config fields that only steer training or the (inert) text path: read, never needed for inference.
_OFFICIAL_TRAINING_ONLY = (
    "lapq_quantize_dropout",
    "lapq_quantize_dropout_cutoff_index",
    "lapq_quantize_dropout_multiple_of",
)
_OFFICIAL_TEXT_FIELDS = (
    "lapq_text_input_dim",
    "lapq_text_embed_dim",
    "lapq_text_mlp_hidden_dim",
    "lapq_text_condition_heads",
    "lapq_text_condition_scale",
)
_OFFICIAL_QUANTIZER_FIELDS = (
    "use_lapq_quantizer",
    "lapq_num_codes",
    "lapq_num_quantizers",
    "lapq_codebook_dim",
    "lapq_commitment_weight",
    "lapq_entropy_weight",
    "lapq_inv_temperature",
)
_OFFICIAL_BOOKKEEPING = ("_class_name", "_diffusers_version", "_name_or_path", "_use_default_values")
# Keys transformers and diffusers write into a saved `config.json` next to the model's own fields.
_BOOKKEEPING_KEYS = _OFFICIAL_BOOKKEEPING + (
    "architectures", "auto_map", "dtype", "torch_dtype", "model_type", "transformers_version", "_commit_hash",
)
# Official defaults (`AutoencoderKLPyraTok.__init__`) for quantizer fields a config may omit.
_OFFICIAL_DEFAULTS = {
    "use_lapq_quantizer": True,
    "lapq_num_codes": 2**16,
    "lapq_num_quantizers": 2,
    "lapq_codebook_dim": 16,
    "lapq_commitment_weight": 0.25,
    "lapq_entropy_weight": 0.1,
    "lapq_inv_temperature": 100.0,
}
_STAGE_KEY = re.compile(r"^lapq_quantizer\.layers\.(\d+)\.(.+)$")
_TEXT_LAYER_KEYS = (
    "cross_attn.in_proj_weight",
    "cross_attn.in_proj_bias",
    "cross_attn.out_proj.weight",
    "cross_attn.out_proj.bias",
    "query_norm.weight",
    "query_norm.bias",
    "text_context_norm.weight",
    "text_context_norm.bias",
)


def is_official_config(raw: dict[str, Any]) -> bool:
    """Whether a `config.json` was written by the official `AutoencoderKLPyraTok` (the released weights)."""
    return raw.get("_class_name") == OFFICIAL_CLASS_NAME


def _wan_init_params() -> list[str]:
    from diffusers import AutoencoderKLWan

    return [n for n in inspect.signature(AutoencoderKLWan.__init__).parameters if n != "self"]


def official_codebook_dim(raw: dict[str, Any]) -> int:
    """Bits per stage, resolved as the official quantizer does (`log2(lapq_num_codes)` when the dim is null)."""
    num_codes = int(raw.get("lapq_num_codes", _OFFICIAL_DEFAULTS["lapq_num_codes"]))
    dim = raw.get("lapq_codebook_dim", _OFFICIAL_DEFAULTS["lapq_codebook_dim"])
    dim = int(dim) if dim is not None else num_codes.bit_length() - 1
    if 2**dim != num_codes:
        raise ValueError(f"official config: lapq_num_codes={num_codes} is not 2**lapq_codebook_dim (= 2**{dim})")
    return dim


def official_config_to_pyratok(raw: dict[str, Any]) -> dict[str, Any]:
    """Map an official `AutoencoderKLPyraTok` config to `PyraTokConfig` fields (`quantizer_mode="residual"`).

    Raises:
        ValueError: for a field this mapping does not know, a disabled quantizer, or a codebook width that differs
            from `z_dim` (the official code only runs with `lapq_codebook_dim == z_dim`: its projection branch
            calls a non-existent `nn.TransposeConv3d`).
    """
    wan_params = _wan_init_params()
    known = set(wan_params) | set(_OFFICIAL_BOOKKEEPING) | set(_OFFICIAL_TRAINING_ONLY)
    known |= set(_OFFICIAL_TEXT_FIELDS) | set(_OFFICIAL_QUANTIZER_FIELDS)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"official {OFFICIAL_CLASS_NAME} config has fields PyraTok does not know: {unknown}")
    q = {**_OFFICIAL_DEFAULTS, **{k: raw[k] for k in _OFFICIAL_QUANTIZER_FIELDS if k in raw}}
    if not q["use_lapq_quantizer"]:
        raise ValueError(f"official config has use_lapq_quantizer={q['use_lapq_quantizer']!r}; PyraTok needs tokens")
    backbone = {k: raw[k] for k in wan_params if k in raw}
    codebook_dim = official_codebook_dim(raw)
    z_dim = int(backbone.get("z_dim", 16))
    if codebook_dim != z_dim:
        raise ValueError(f"official config: lapq_codebook_dim={codebook_dim} differs from z_dim={z_dim}")
    if raw.get("lapq_quantize_dropout"):
        logger.info("official config: lapq_quantize_dropout is a training-time option; ignored for inference")
    return {
        "backbone_config": backbone,
        "lora_rank": 0,
        "quantizer_mode": "residual",
        "num_levels": int(q["lapq_num_quantizers"]),
        "level_spatial_strides": [1] * int(q["lapq_num_quantizers"]),
        "codebook_dim": codebook_dim,
        "commitment_weight": float(q["lapq_commitment_weight"]),
        "entropy_weight": float(q["lapq_entropy_weight"]),
        "bit_inverse_temperature": float(q["lapq_inv_temperature"]),
        # The pyramid's text and hierarchy terms do not exist in this mode.
        "hierarchical_weight": 0.0,
        "text_alignment_weight": 0.0,
        "text_codebook_weight": 0.0,
        "text_dropout": 0.0,
    }


def _official_extras(raw: dict[str, Any]) -> tuple[set[str], set[str]]:
    """Non-backbone keys the official model saves (`LaPQ.py` / `model.py`): (required, optional).

    `text_proj` and `lapq_text_mlp` exist only when the text dims were set when the model was built, which a saved
    config need not record (the official `infer.py` passes them as `from_pretrained` overrides), so they are
    allowed, not required; they are dropped either way.
    """
    stages = int(raw.get("lapq_num_quantizers", _OFFICIAL_DEFAULTS["lapq_num_quantizers"]))
    required = {f"lapq_quantizer.layers.{i}.{k}" for i in range(stages) for k in ("bitmask", "codebook")}
    required |= {f"lapq_quantizer.layers.{i}.{k}" for i in range(stages) for k in _TEXT_LAYER_KEYS}
    optional = {f"lapq_quantizer.layers.{i}.text_proj.{p}" for i in range(stages) for p in ("weight", "bias")}
    optional |= {f"lapq_text_mlp.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    return required, optional


def convert_official_state_dict(
    state_dict: dict[str, torch.Tensor], raw: dict[str, Any], source: str
) -> dict[str, torch.Tensor]:
    """Official `AutoencoderKLPyraTok` weights → our core's keys (backbone under `core.backbone.vae.`).

    Every stage's `bitmask` / `codebook` buffer must equal the one the official code regenerates (MSB-first powers of
    two; all `2**d` codes as ±1 bits) and is then dropped: our quantizer computes both. The text weights
    (`lapq_text_mlp.*`, per stage `cross_attn`, `query_norm`, `text_context_norm`, `text_proj`) are dropped with a
    logged note: the official quantizer multiplies their output by a scale it forces to 0. Backbone keys pass through
    unchanged (the caller loads them strictly).

    Raises:
        ValueError: naming any quantizer key that is missing or unexpected, or a buffer that differs.
    """
    dim = official_codebook_dim(raw)
    required, optional = _official_extras(raw)
    extras = {k for k in state_dict if k.startswith(("lapq_quantizer.", "lapq_text_mlp."))}
    missing, unexpected = sorted(required - extras), sorted(extras - required - optional)
    if missing or unexpected:
        raise ValueError(checkpoint_mismatch_message(source, missing, unexpected, []))
    bitmask = 2 ** torch.arange(dim - 1, -1, -1, dtype=torch.long)
    codebook = ((torch.arange(2**dim, dtype=torch.long)[:, None] & bitmask) > 0).float() * 2 - 1
    for key in sorted(extras):
        match = _STAGE_KEY.match(key)
        name = match.group(2) if match else ""
        if name in ("bitmask", "codebook"):
            want = bitmask if name == "bitmask" else codebook
            got = state_dict[key]
            if tuple(got.shape) != tuple(want.shape) or not torch.equal(got.to(want.dtype), want):
                raise ValueError(
                    f"checkpoint {source}: buffer {key} {tuple(got.shape)} differs from the regenerated "
                    f"{tuple(want.shape)} one; this is not the official residual sign quantizer"
                )
    text_keys = [k for k in extras if not k.endswith((".bitmask", ".codebook"))]
    if text_keys:
        logger.info(
            f"{source}: dropped {len(text_keys)} text-conditioning weights (lapq_text_mlp.*, lapq_quantizer.layers.*."
            "{cross_attn,query_norm,text_context_norm,text_proj}); the official quantizer forces their scale to 0"
        )
    return {BACKBONE_PREFIX + k: v for k, v in state_dict.items() if k not in extras}


def read_foreign_checkpoint(
    files: PyraTokCheckpointFiles, raw: dict[str, Any], native_layout: str, source: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """Config fields and state dict of a folder the calling front end cannot load natively, or None.

    Foreign means the other front end's layout (same keys, other file name) or the official `AutoencoderKLPyraTok`
    release (converted here). The caller builds itself from the fields and loads the state with
    `load_state_dict_strict`.
    """
    if is_official_config(raw):
        return official_config_to_pyratok(raw), convert_official_state_dict(load_weights(files), raw, source)
    if files.layout != native_layout:
        return {k: v for k, v in raw.items() if k in config_field_names()}, load_weights(files)
    return None


# Any weights file either base class may read: plain, variant (`.fp16.`), sharded (`-00001-of-00002`) or its index,
# safetensors or pickle.
_NATIVE_WEIGHTS = re.compile(r"^(model|diffusion_pytorch_model)([.-].*)?\.(safetensors|bin|json)$")


def config_layout(raw: dict[str, Any]) -> str | None:
    """Which front end wrote a PyraTok `config.json`: "diffusers" (`_class_name`), "transformers" (`model_type`), or
    None when neither marker is there."""
    if "_class_name" in raw or "_diffusers_version" in raw:
        return "diffusers"
    if raw.get("model_type") == "pyratok":
        return "transformers"
    return None


def read_foreign_pretrained(
    name_or_path: str | os.PathLike, subfolder: str | None, native_layout: str, **kwargs: Any
) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """Config fields and state dict when `name_or_path` holds a checkpoint the calling front end's base class cannot
    read, else None (then the base class loads it: variants, shards with an index, `.bin`, Hub options).

    Foreign means written by the other front end (its `config.json` markers; weights `model.safetensors` or
    `diffusion_pytorch_model.safetensors`) or the official `AutoencoderKLPyraTok` release (converted here).

    Raises:
        ValueError: no such folder, no `config.json`, or (local folder) no weights file of any form.
    """
    source = str(name_or_path)
    raw = read_config(resolve_config(source, subfolder, **kwargs))
    if is_official_config(raw) or config_layout(raw) not in (None, native_layout):
        files = resolve_checkpoint(source, subfolder, **kwargs)
        return read_foreign_checkpoint(files, raw, native_layout, source)
    folder = os.path.join(source, subfolder or "")
    if os.path.isdir(folder) and not any(_NATIVE_WEIGHTS.match(name) for name in os.listdir(folder)):
        raise ValueError(
            f"{source!r} (subfolder={subfolder!r}) has no weights file ({TRANSFORMERS_WEIGHTS_NAME}, "
            f"{DIFFUSERS_WEIGHTS_NAME}, a variant, shards or .bin); is it a PyraTok checkpoint saved as safetensors?"
        )
    return None


def check_single_device(device_map: Any, name: str = "device_map") -> None:
    """Refuse a device map that splits PyraTok over devices or offloads part of it to CPU or disk.

    accelerate's offload hooks rebuild the list arguments that carry Wan's causal cache between chunks (an offloaded
    backbone silently encodes every chunk as a first chunk), and `nn.MultiheadAttention` in the quantizer reads its
    output projection's weight without running that module's hook; so any split would give wrong output or crash.

    Raises:
        ValueError: for several devices, or `"disk"` / `"meta"`.
    """
    if device_map is None:
        return
    values = device_map.values() if isinstance(device_map, dict) else [device_map]
    devices = {str(v) for v in values}
    if len(devices) > 1 or devices & {"disk", "meta"}:
        raise ValueError(
            f"{name}={device_map!r} places parts of PyraTok on {sorted(devices)}: PyraTok loads onto one device "
            "(offload hooks break its causal cache and quantizer attention); pass one device, e.g. 'cpu' or 'cuda:0'"
        )


def place_loaded_model(model: torch.nn.Module, kwargs: dict[str, Any]) -> torch.nn.Module:
    """Apply `dtype` (or its older name `torch_dtype`) and a one-device `device_map` (`check_single_device`) to a
    model built from a foreign folder, as the base class's loader would."""
    dtype = kwargs.get("dtype") or kwargs.get("torch_dtype")
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    if isinstance(dtype, torch.dtype):
        model = model.to(dtype)
    device_map = kwargs.get("device_map")
    device = next(iter(device_map.values())) if isinstance(device_map, dict) else device_map
    if device is not None and device not in ("auto", "balanced", "balanced_low_0", "sequential"):
        model = model.to(device)
    return model


def write_remote_code(save_directory: str | os.PathLike, module_file: str, class_ref: str) -> None:
    """Copy `module_file` and the package files it imports relatively into `save_directory`, and record
    `auto_map = {"AutoModel": class_ref}` in its `config.json` (diffusers' remote-code convention).

    Args:
        save_directory: A folder `save_pretrained` just wrote.
        module_file: Path of the module that defines the saved class.
        class_ref: `"<module name>.<class name>"`, e.g. `"autoencoder_pyratok.AutoencoderPyraTok"`.
    """
    from diffusers.utils.dynamic_modules_utils import get_relative_import_files

    for path in [module_file, *get_relative_import_files(module_file)]:
        shutil.copy(path, os.path.join(save_directory, os.path.basename(path)))
    config_file = os.path.join(save_directory, CONFIG_NAME)
    raw = read_config(config_file)
    raw["auto_map"] = {"AutoModel": class_ref}
    with open(config_file, "w", encoding="utf-8") as f:
        json.dump(raw, f, indent=2, sort_keys=True)
        f.write("\n")


__all__ = [
    "check_single_device",
    "place_loaded_model",
    "write_remote_code",
    "config_layout",
    "read_foreign_checkpoint",
    "read_foreign_pretrained",
    "resolve_config",
    "OFFICIAL_CLASS_NAME",
    "PyraTokCheckpointFiles",
    "convert_official_state_dict",
    "is_official_config",
    "official_config_to_pyratok",
    "checkpoint_mismatch_message",
    "check_finite",
    "check_loaded_weights",
    "check_state_dict_values",
    "check_weights_file_dtypes",
    "load_state_dict_strict",
    "load_weights",
    "read_config",
    "resolve_checkpoint",
    "unknown_config_fields",
]

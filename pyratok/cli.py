"""The `pyratok` command: reconstruct, tokenize and detokenize video files with a PyraTok checkpoint.

    pyratok reconstruct clip.mp4 --prompt "a red square jumps" --out runs/clip
    pyratok tokenize clip.mp4 --out clip.safetensors
    pyratok detokenize clip.safetensors --out clip_hat.mp4
    pyratok tokenize-dataset --data data/procedural/train --out runs/tokens --order frame_major

Encoding and decoding stream in the backbone's causal chunks (`PyraTokModel.iter_tokenize` / `iter_detokenize`), so
activation memory does not grow with the clip length; only the uint8 frames and the token ids are held whole.
User errors (missing or undecodable files, a folder that is not a checkpoint, tokens that do not fit the model) end
with exit status 2 and one `pyratok: error: ...` line on stderr.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm import tqdm
from transformers.utils import logging as hf_logging

from modeling_pyratok import AutoencoderPyraTok, PyraTokConfig, PyraTokModel, PyraTokTokens
from modeling_pyratok.tokens_pyratok import ORDERS

from . import model_cards
from .data_sources import unwritable_reason
from .quality import code_usage, lpips_or_reason, psnr, ssim
from .video_io import (
    VideoDecodeError,
    read_video,
    resize_and_crop,
    tensor_to_video,
    valid_frame_count,
    video_to_tensor,
    write_video,
)

PROG = "pyratok"
# The demo checkpoint shipped as package data of `pyratok.model_cards` (the repository's `model_cards/` folder), so the
# default works from any folder after a plain `pip install`.
DEFAULT_MODEL = Path(model_cards.__file__).resolve().parent / "pyratok-small-procedural"
DEFAULT_FPS = 8.0
# Frame rates an mp4 written by `write_video` stores faithfully (it keeps a rate as a fraction with a denominator up to
# 1001; PyAV takes integer rates up to 2**31 - 1); anything outside is refused as a typo.
MIN_FPS = 0.001
MAX_FPS = 1_000_000.0
TOKENS_FORMAT = "pyratok-tokens"
TOKENS_FORMAT_VERSION = "1"
# Frames resized at once when an input needs resizing (bounds the float copy of a long clip).
RESIZE_BLOCK_FRAMES = 16
LPIPS_NET = "alex"
RECONSTRUCT_OUTPUTS = ("reconstruction.mp4", "side_by_side.mp4", "tokens.safetensors", "metrics.json")


class CliError(Exception):
    """A user-facing problem: reported as one `pyratok: error: ...` line, exit status 2."""


def _note(message: str) -> None:
    print(f"{PROG}: note: {message}", file=sys.stderr)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise CliError(f"invalid --device {name!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {name} requested but CUDA is not available")
    if device.type == "meta":
        raise CliError("--device meta holds shapes but no data, so it cannot encode or decode; use cpu or cuda")
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as err:
        raise CliError(f"--device {name} is not usable here: {_one_line(err)}") from None
    return device


def _looks_like_path(name: str) -> bool:
    """Whether `--model NAME` can only mean a local folder (a Hub id is `name` or `owner/name`)."""
    parent = Path(name).expanduser().parent
    return (
        Path(name).expanduser().is_absolute()
        or name.startswith((".", "~"))
        or name.count("/") > 1
        or os.sep != "/" and os.sep in name
        or (parent != Path(".") and parent.is_dir())  # `model_cards/typo`: its folder exists here
    )


def _missing_folder_message(name: str) -> str:
    path = Path(name).expanduser()
    message = f"model folder not found locally: {name}"
    if path.parent.is_dir():
        siblings = [p.name for p in path.parent.iterdir() if p.is_dir()]
        close = difflib.get_close_matches(path.name, siblings, n=1)
        if close:
            message += f" (did you mean {path.parent / close[0]}?)"
    return message


def check_hub_model(name: str) -> None:
    """Fail with one line when `name` (no local folder of that name exists) cannot be had from the Hub: offline
    (`HF_HUB_OFFLINE=1`) it is looked up in the local Hub cache only, without a network request."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    where = f"--model {name}: no folder of that name here"
    try:
        hf_hub_download(name, "config.json", local_files_only=offline)
    except HFValidationError:
        raise CliError(f"{where}, and it is not a valid Hub id") from None
    except LocalEntryNotFoundError:  # before EntryNotFoundError, its base class
        if offline:
            raise CliError(f"{where}, and HF_HUB_OFFLINE=1 with no cached copy of Hub repo {name}") from None
        raise CliError(f"{where}, and the Hugging Face Hub could not be reached to fetch {name}") from None
    except RepositoryNotFoundError:
        raise CliError(f"{where}, and no Hub repo {name} exists (or it is private)") from None
    except EntryNotFoundError:
        raise CliError(f"{where}; Hub repo {name} has no config.json, so it is not a PyraTok checkpoint") from None
    except OSError as err:
        raise CliError(f"{where}, and fetching Hub repo {name} failed: {_one_line(err)}") from None


def load_model(name_or_path: str | None, device: torch.device) -> tuple[PyraTokModel, str]:
    """Load a PyraTok checkpoint (folder or Hub id; None → the shipped default) in eval mode on `device`.

    Returns:
        The model and the id recorded in outputs (the folder's resolved path, or the Hub id).
    """
    if name_or_path is None:
        if not DEFAULT_MODEL.is_dir():
            raise CliError(
                f"the default model {DEFAULT_MODEL} is missing from this installation (it ships as package data "
                "of pyratok.model_cards; reinstall PyraTok), or pass --model PATH_OR_HUB_ID"
            )
        name_or_path = str(DEFAULT_MODEL)
    path = Path(name_or_path).expanduser()
    # A Hub id is `owner/name`; anything that exists here or reads as a path is treated as a local folder.
    if path.exists() or _looks_like_path(name_or_path):
        if not path.exists():
            raise CliError(_missing_folder_message(name_or_path))
        if not path.is_dir():
            raise CliError(f"model folder is a file, not a folder: {name_or_path}")
        config_file = path / "config.json"
        if not config_file.is_file():
            raise CliError(f"{name_or_path} is not a PyraTok checkpoint: it has no config.json")
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CliError(f"{name_or_path} is not a PyraTok checkpoint: cannot read config.json ({err})") from None
        model_type = config.get("model_type") if isinstance(config, dict) else None
        if model_type is not None and model_type != PyraTokConfig.model_type:
            raise CliError(
                f"{name_or_path} is not a PyraTok checkpoint: config.json has model_type={model_type!r}, "
                f"expected {PyraTokConfig.model_type!r}"
            )
        model_id = str(path.resolve())
    else:
        _note(f"no local folder {name_or_path}: looking for Hub repo {name_or_path}")
        check_hub_model(name_or_path)
        model_id = name_or_path
    # transformers' per-weight loading bar would sit beside ours; silence it for this call only.
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = PyraTokModel.from_pretrained(model_id)
    except (ValueError, OSError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
        raise CliError(f"cannot load a PyraTok model from {name_or_path}: {err}") from None
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    return model.to(device).eval(), model_id


# ---------------------------------------------------------------------------------------------------------------------
# Input video
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class InputVideo:
    """A clip ready for the model.

    Args:
        frames: uint8 `(T, H, W, 3)` RGB, `T = 4k + 1`, H and W multiples of the model's `spatial_multiple`.
        fps: the source's frame rate (0 when the container does not say).
        source_size: `(T, H, W)` as decoded (after `--max-frames`).
    """

    frames: np.ndarray
    fps: float
    source_size: tuple[int, int, int]

    @property
    def size(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.frames.shape[:3])


def check_output(out: str | os.PathLike, inputs: dict[str, str], folder: bool = False) -> Path:
    """Check an `--out` path before any work: it must not be one of `inputs` (what → path; overwriting an input
    destroys it), a file output must not be an existing folder (nor a folder output an existing file), and its
    nearest existing ancestor must be a writable folder. Returns `out` as a Path."""
    out = Path(out).expanduser()
    for what, path in inputs.items():
        if out.exists() and Path(path).exists() and os.path.samefile(out, path):
            raise CliError(f"--out {out} is the {what}; refusing to overwrite it (pick another --out)")
    if out.is_dir() and not folder:
        raise CliError(f"--out {out} is a folder; give a file name")
    if out.exists() and not out.is_dir() and folder:
        raise CliError(f"--out {out} is a file; give a folder")
    reason = unwritable_reason(out if folder and out.is_dir() else out.parent)
    if reason is not None:
        raise CliError(f"cannot write {out}: {reason}")
    return out


def require_file(path: str, what: str) -> None:
    if not Path(path).exists():
        raise CliError(f"{what} not found: {path}")
    if not Path(path).is_file():
        raise CliError(f"{what} is not a file: {path}")


def load_video(path: str, model: PyraTokModel, max_frames: int | None) -> InputVideo:
    """Decode `path` and fit it to the model: drop trailing frames to `4k + 1` and centre-resize/crop H and W down
    to multiples of `config.spatial_multiple` (each with a note on stderr)."""
    require_file(path, "input video")
    frames, fps = read_video(path, max_frames=max_frames)
    source = tuple(int(s) for s in frames.shape[:3])
    count, height, width = source
    chunk = model.core.backbone.temporal_chunk
    used = valid_frame_count(count, chunk)
    if used != count:
        _note(f"using the first {used} of {count} frames ({count - used} dropped): PyraTok takes {chunk}k + 1 frames")
        frames = frames[:used]
    multiple = model.config.spatial_multiple
    target_h, target_w = height // multiple * multiple, width // multiple * multiple
    if target_h == 0 or target_w == 0:
        raise CliError(
            f"{path} is {height}x{width} (HxW); this model needs at least {multiple}x{multiple} "
            f"(H and W are multiples of {multiple})"
        )
    if (target_h, target_w) != (height, width):
        _note(
            f"resizing and centre-cropping {height}x{width} to {target_h}x{target_w} (HxW): this model takes "
            f"multiples of {multiple}"
        )
        fitted = np.empty((used, target_h, target_w, 3), dtype=np.uint8)
        for start in range(0, used, RESIZE_BLOCK_FRAMES):
            block = video_to_tensor(frames[start : start + RESIZE_BLOCK_FRAMES])
            fitted[start : start + RESIZE_BLOCK_FRAMES] = tensor_to_video(resize_and_crop(block, target_h, target_w))
        frames = fitted
    return InputVideo(frames=np.ascontiguousarray(frames), fps=fps, source_size=source)


def piece_bounds(num_frames: int, temporal_chunk: int, chunk_latent_frames: int) -> list[tuple[int, int]]:
    """Input-frame ranges of the streamed pieces: frame 0, then `temporal_chunk * chunk_latent_frames` at a time."""
    step = temporal_chunk * chunk_latent_frames
    return [(0, 1)] + [(start, min(start + step, num_frames)) for start in range(1, num_frames, step)]


def frame_runs(frames: np.ndarray, bounds: Sequence[tuple[int, int]], device: torch.device) -> Iterator[torch.Tensor]:
    """Each piece's frames as `(1, 3, t, H, W)` float in [-1, 1], converted only when the encoder asks for it."""
    for start, stop in bounds:
        yield video_to_tensor(frames[start:stop]).unsqueeze(0).to(device)


def stream_tokens(
    model: PyraTokModel,
    video: InputVideo,
    prompt: str | None,
    chunk_latent_frames: int,
    device: torch.device,
    level_ids: list[list[torch.Tensor]],
) -> Iterator[PyraTokTokens]:
    """Tokenize `video` piece by piece, appending every piece's ids (on the CPU) to `level_ids` as it goes."""
    bounds = piece_bounds(video.size[0], model.core.backbone.temporal_chunk, chunk_latent_frames)
    pieces = model.iter_tokenize(
        frame_runs(video.frames, bounds, device), text=prompt, chunk_latent_frames=chunk_latent_frames
    )
    for tokens in pieces:
        for store, ids in zip(level_ids, tokens.ids, strict=True):
            store.append(ids.cpu())
        yield tokens


# ---------------------------------------------------------------------------------------------------------------------
# Token files
# ---------------------------------------------------------------------------------------------------------------------


# Config fields that steer training only: a model whose loss weights were edited still decodes the same tokens.
_TRAINING_ONLY_FIELDS = (
    "backbone_name_or_path", "backbone_subfolder", "lora_dropout", "text_dropout", "mask_frame_ratio",
    "entropy_mode", "entropy_num_groups",
)
# Values sampled per weight tensor for the fingerprint: enough to tell two trainings apart, cheap on any model size.
_FINGERPRINT_SAMPLES = 64


@torch.no_grad()
def model_fingerprint(model: PyraTokModel | AutoencoderPyraTok) -> str:
    """A 16-hex-digit digest of what decides the tokens and their decoding: the config (training-only fields aside)
    and every weight's name, shape and `_FINGERPRINT_SAMPLES` evenly spaced values (as float32, so the device does
    not matter). Recorded in token files, token datasets and priors; `detokenize` compares it with the decoding
    model's. Both classes give the same value for the same weights (an `AutoencoderPyraTok` keeps its
    `PyraTokConfig` as `pyratok_config`, and its weight names are `PyraTokModel`'s)."""
    digest = hashlib.sha256()
    config = getattr(model, "pyratok_config", None) or model.config
    fields = {
        k: v for k, v in config.to_init_kwargs().items()
        if k not in _TRAINING_ONLY_FIELDS and not k.endswith("_weight")
    }
    digest.update(json.dumps(fields, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // _FINGERPRINT_SAMPLES)
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(flat[::step][:_FINGERPRINT_SAMPLES].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def token_metadata(model: PyraTokModel, model_id: str, prompt: str | None, video: InputVideo, fps: float) -> dict:
    t, h, w = video.size
    c = model.config
    return {
        "format": TOKENS_FORMAT,
        "format_version": TOKENS_FORMAT_VERSION,
        "model": model_id,
        "model_fingerprint": model_fingerprint(model),
        "prompt": json.dumps(prompt),
        "latent_size": json.dumps(list(model.core.latent_size(t, h, w))),
        "input_size": json.dumps([t, h, w]),
        "frames": str(t),
        "fps": json.dumps(float(fps)),
        "source_size": json.dumps(list(video.source_size)),
        "num_levels": str(c.num_levels),
        "codebook_dim": str(c.codebook_dim),
        "level_spatial_strides": json.dumps(list(c.level_spatial_strides)),
        "quantizer_mode": str(c.quantizer_mode),
    }


def write_tokens(path: Path, level_ids: list[list[torch.Tensor]], metadata: dict[str, str]) -> None:
    """One int64 tensor `level_{i}` of shape `(1, T', H_i, W_i)` per level, plus str → str metadata."""
    tensors = {f"level_{i}": torch.cat(parts, dim=1).to(torch.int64).contiguous() for i, parts in enumerate(level_ids)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=metadata)
    except (OSError, SafetensorError) as err:
        # safetensors names its temporary file (`.tmpXXXX`), not the path asked for.
        reason = re.sub(r'\s*at path "[^"]*"', "", str(err))
        raise CliError(f"cannot write {path}: {_one_line(reason)}") from None


def read_tokens(path: str) -> tuple[list[torch.Tensor], dict[str, str]]:
    """Read a token file written by `write_tokens`: the level tensors in order and the metadata."""
    require_file(path, "token file")
    try:
        with safe_open(path, framework="pt") as f:
            names = list(f.keys())
            metadata = f.metadata() or {}
            levels = sorted((int(n.split("_", 1)[1]), n) for n in names if n.startswith("level_") and n[6:].isdigit())
            if not levels:
                raise CliError(
                    f"{path} holds no level_<i> tensors, so it is not a PyraTok token file "
                    f"(found {names or 'nothing'})"
                )
            if [i for i, _ in levels] != list(range(len(levels))):
                raise CliError(f"{path}: level tensors must be level_0 .. level_{len(levels) - 1}, found {names}")
            ids = [f.get_tensor(n) for _, n in levels]
    except SafetensorError as err:
        raise CliError(f"cannot read {path} as a safetensors token file: {err}") from None
    return ids, metadata


def check_same_model(model: PyraTokModel, model_id: str, meta: dict, path: str, force: bool) -> None:
    """Refuse (unless `force`) to decode tokens whose recorded model fingerprint differs from `model`'s: another
    model of the same layout decodes them to garbage without any other sign. Old files without one get a note."""
    recorded = meta.get("model_fingerprint")
    if recorded is None:
        _note(f"{path} records no model fingerprint (written before pyratok recorded one): cannot check that "
              f"{model_id} is the model that wrote it")
        return
    found = model_fingerprint(model)
    if recorded == found:
        return
    message = (
        f"tokens {path} were written by model {meta.get('model', '?')} (fingerprint {recorded}), but {model_id} has "
        f"fingerprint {found}: another model decodes them to garbage"
    )
    if not force:
        raise CliError(f"{message}; pass --force to decode anyway")
    _note(f"{message}; decoding anyway (--force)")


def check_tokens_fit(model: PyraTokModel, model_id: str, ids: list[torch.Tensor], meta: dict, path: str) -> None:
    """Raise `CliError` naming expected vs found when the tokens in `path` cannot come from `model`."""
    c = model.config
    where = f"tokens {path} do not fit model {model_id}"
    if len(ids) != c.num_levels:
        raise CliError(f"{where}: the file has {len(ids)} levels, the model has {c.num_levels}")
    if "codebook_dim" in meta and meta["codebook_dim"] != str(c.codebook_dim):
        raise CliError(f"{where}: codebook_dim {meta['codebook_dim']} in the file, {c.codebook_dim} in the model")
    for i, level in enumerate(ids):
        if level.dtype.is_floating_point or level.dtype == torch.bool or level.is_complex():
            raise CliError(f"{where}: level_{i} has dtype {level.dtype}; token ids are integers")
        if level.numel() and (level.min() < 0 or level.max() >= 2**c.codebook_dim):
            raise CliError(
                f"{where}: level_{i} ids span [{int(level.min())}, {int(level.max())}], the model's codebook holds "
                f"[0, {2**c.codebook_dim})"
            )
    try:
        model.core.check_ids_layout([level.long() for level in ids], name="level tensors")
    except ValueError as err:
        raise CliError(f"{where}: {err}") from None


# ---------------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------------


class FrameMetrics:
    """Per-frame PSNR / SSIM (and LPIPS when its weights are available) accumulated piece by piece."""

    def __init__(self, device: torch.device) -> None:
        self.psnr: list[float] = []
        self.ssim: list[float] = []
        self.lpips: list[float] = []
        self.lpips_module, self.lpips_reason = lpips_or_reason(LPIPS_NET)
        if self.lpips_module is not None:
            self.lpips_module = self.lpips_module.to(device)

    @torch.no_grad()
    def update(self, reconstruction: torch.Tensor, target: torch.Tensor) -> None:
        """Add frames: both `(3, t, H, W)` in [-1, 1]."""
        x, y = reconstruction.transpose(0, 1).float(), target.transpose(0, 1).float()  # (t, 3, H, W)
        self.psnr += psnr(x, y, reduction="none").tolist()
        self.ssim += ssim(x, y, reduction="none").tolist()
        if self.lpips_module is not None:
            self.lpips += self.lpips_module(x, y).flatten().tolist()

    @staticmethod
    def _mean(values: list[float]) -> float | None:
        # JSON has no inf: a mean over identical frames (PSNR = inf) is reported as null.
        mean = sum(values) / len(values) if values else math.nan
        return mean if math.isfinite(mean) else None

    def summary(self) -> dict:
        return {
            "psnr": self._mean(self.psnr),
            "ssim": self._mean(self.ssim),
            "lpips": self._mean(self.lpips) if self.lpips_module is not None else None,
            "lpips_unavailable_reason": self.lpips_reason,
        }


def level_usage(model: PyraTokModel, level_ids: list[list[torch.Tensor]]) -> list[dict]:
    size = 2**model.config.codebook_dim
    return [{"level": i, **code_usage(parts, size)} for i, parts in enumerate(level_ids)]


# ---------------------------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------------------------


def _fps(requested: float | None, *fallbacks: tuple[str, float | None]) -> float:
    """`--fps` (validated by the parser), else the first fallback `(where, value)` in `[MIN_FPS, MAX_FPS]` (others
    get a note), else `DEFAULT_FPS`."""
    if requested is not None:
        return float(requested)
    for where, fps in fallbacks:
        if fps is None or fps == 0:
            continue
        if MIN_FPS <= fps <= MAX_FPS:
            return float(fps)
        _note(f"ignoring the frame rate {fps:g} of {where} (outside [{MIN_FPS:g}, {MAX_FPS:g}])")
    return DEFAULT_FPS


def _progress(iterable: Iterable, total: int, desc: str) -> tqdm:
    return tqdm(iterable, total=total, desc=desc, unit="chunk", file=sys.stderr, dynamic_ncols=True)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    require_file(args.video, "input video")  # before loading a model
    out = check_output(args.out, {}, folder=True)
    for name in RECONSTRUCT_OUTPUTS:
        check_output(out / name, {"input video": args.video})
    model, model_id = load_model(args.model, device)
    video = load_video(args.video, model, args.max_frames)
    fps = _fps(args.fps, (args.video, video.fps))
    out.mkdir(parents=True, exist_ok=True)
    num_frames, height, width = video.size
    bounds = piece_bounds(num_frames, model.core.backbone.temporal_chunk, args.chunk_latent_frames)

    level_ids: list[list[torch.Tensor]] = [[] for _ in range(model.config.num_levels)]
    tokens = stream_tokens(model, video, args.prompt, args.chunk_latent_frames, device, level_ids)
    # Decode each piece as soon as it is tokenized: encoder and decoder caches both stay one piece deep.
    pieces = model.iter_detokenize(tokens)
    metrics = FrameMetrics(device)
    reconstruction = np.empty_like(video.frames)
    for (start, stop), piece in _progress(zip(bounds, pieces, strict=True), len(bounds), "reconstruct"):
        target = video_to_tensor(video.frames[start:stop]).to(device)
        metrics.update(piece[0], target)
        reconstruction[start:stop] = tensor_to_video(piece[0])

    write_video(out / "reconstruction.mp4", reconstruction, fps=fps)
    write_video(out / "side_by_side.mp4", np.concatenate([video.frames, reconstruction], axis=2), fps=fps)
    write_tokens(out / "tokens.safetensors", level_ids, token_metadata(model, model_id, args.prompt, video, fps))
    report = {
        **metrics.summary(),
        "bits_per_pixel": model.bits_per_pixel(height, width, num_frames),
        "frames": num_frames,
        "height": height,
        "width": width,
        "fps": fps,
        "source_size": list(video.source_size),
        "latent_size": list(model.core.latent_size(num_frames, height, width)),
        "levels": level_usage(model, level_ids),
        "model": model_id,
        "prompt": args.prompt,
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    psnr_text = "n/a" if report["psnr"] is None else f"{report['psnr']:.2f} dB"
    print(
        f"wrote {out}/{{reconstruction.mp4, side_by_side.mp4, tokens.safetensors, metrics.json}}: "
        f"{num_frames} frames {height}x{width}, PSNR {psnr_text}, {report['bits_per_pixel']:.4f} bits/pixel"
    )
    return 0


def cmd_tokenize(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    require_file(args.video, "input video")  # before loading a model
    out = check_output(args.out, {"input video": args.video})
    model, model_id = load_model(args.model, device)
    video = load_video(args.video, model, args.max_frames)
    fps = _fps(args.fps, (args.video, video.fps))
    bounds = piece_bounds(video.size[0], model.core.backbone.temporal_chunk, args.chunk_latent_frames)
    level_ids: list[list[torch.Tensor]] = [[] for _ in range(model.config.num_levels)]
    tokens = stream_tokens(model, video, args.prompt, args.chunk_latent_frames, device, level_ids)
    for _ in _progress(tokens, len(bounds), "tokenize"):
        pass
    write_tokens(out, level_ids, token_metadata(model, model_id, args.prompt, video, fps))
    shapes = ", ".join(str(tuple(torch.cat(parts, dim=1).shape)) for parts in level_ids)
    print(f"wrote {out}: {len(level_ids)} levels {shapes}")
    return 0


def cmd_detokenize(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    ids, meta = read_tokens(args.tokens)
    out = check_output(args.out, {"token file": args.tokens})
    recorded = meta.get("model")
    try:
        model, model_id = load_model(args.model if args.model is not None else recorded, device)
    except CliError as err:
        if args.model is None and recorded is not None:
            raise CliError(f"{err} (model recorded in {args.tokens}; pass --model to choose another)") from None
        raise
    check_tokens_fit(model, model_id, ids, meta, args.tokens)
    check_same_model(model, model_id, meta, args.tokens, args.force)
    batch, latent_frames, height, width = ids[0].shape
    if batch != 1:
        _note(f"{args.tokens} holds {batch} clips; decoding the first")
    s0 = model.config.level_spatial_strides[0]
    tokens = PyraTokTokens(
        ids=[level[:1].long().to(device) for level in ids], latent_size=(latent_frames, height * s0, width * s0)
    )
    num_frames = 1 + model.core.backbone.temporal_chunk * (latent_frames - 1)
    num_pieces = 1 + math.ceil((latent_frames - 1) / args.chunk_latent_frames)
    frames: np.ndarray | None = None
    start = 0
    for piece in _progress(model.iter_detokenize(tokens, args.chunk_latent_frames), num_pieces, "detokenize"):
        clip = tensor_to_video(piece[0])
        if frames is None:
            frames = np.empty((num_frames, *clip.shape[1:]), dtype=np.uint8)
        frames[start : start + clip.shape[0]] = clip
        start += clip.shape[0]
    try:
        recorded_fps = float(json.loads(meta.get("fps", "null")) or 0)
    except (ValueError, TypeError, OverflowError):
        recorded_fps = 0.0
    fps = _fps(args.fps, (f"{args.tokens} (recorded)", recorded_fps if math.isfinite(recorded_fps) else 0.0))
    write_video(out, frames, fps=fps)
    print(f"wrote {args.out}: {num_frames} frames {frames.shape[1]}x{frames.shape[2]} at {fps:g} fps")
    return 0


def cmd_tokenize_dataset(args: argparse.Namespace) -> int:
    # Imported here: token_datasets imports this module (model_fingerprint), and `pyratok --help` stays fast.
    from .token_datasets import tokenize_dataset

    device = resolve_device(args.device)
    local = {f"data {src}": src for src in args.data if not src.startswith(("hf://", "http://", "https://"))}
    out = check_output(args.out, local, folder=True)
    state = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by `accelerate launch` / torchrun
        from accelerate import PartialState

        state = PartialState()
        if device.type == state.device.type and device.index is None:
            device = state.device  # one device per process
    model, model_id = load_model(args.model, device)
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the text encoder's loading bar would cut into ours
    try:
        model.get_text_encoder()
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    name = args.tokenizer_name or (Path(model_id).name if Path(model_id).is_dir() else model_id)
    height, width = args.size
    summary = tokenize_dataset(
        args.data if len(args.data) > 1 else args.data[0], out, model, name, order=args.order,
        num_frames=args.frames, height=height, width=width, batch_size=args.batch_size,
        video_column=args.video_column, caption_column=args.caption_column, caption_key=args.caption_key,
        dataset_config_name=args.dataset_config, dataset_split=args.split, max_clips=args.max_clips,
        rows_per_part=args.rows_per_part, upscale=args.upscale, resume=not args.no_resume, accelerator=state,
        progress=not args.no_progress, prompts=not args.no_prompt,
    )
    if state is None or state.is_main_process:
        reasons = ", ".join(f"{k.removeprefix('skipped_')} {v}" for k, v in summary["skipped"].items() if v)
        print(
            f"wrote {out}: {summary['num_rows']} clips of {summary['seq_len']} ids ({summary['written']} new, "
            f"{summary['already_written']} already there), skipped {summary['skipped_total']}"
            f"{f' ({reasons})' if reasons else ''}, {summary['seconds']:.1f} s"
        )
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# Argument parsing
# ---------------------------------------------------------------------------------------------------------------------


def _clip_size(text: str) -> tuple[int, int]:
    """`--size 64` (square) or `--size 48x64` (H x W)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected a size N or HxW of positive integers, got {text!r}")
    return (values[0], values[-1])


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _frame_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        message = f"expected a frame rate in [{MIN_FPS:g}, {MAX_FPS:g}], got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if not MIN_FPS <= value <= MAX_FPS:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(
            f"frame rate {text} is outside [{MIN_FPS:g}, {MAX_FPS:g}], the rates an mp4 written here stores"
        )
    return value


def _prompt(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the prompt is empty; leave --prompt out to encode without text")
    return text


def _add_model_options(parser: argparse.ArgumentParser, model_help: str, streaming: bool = True) -> None:
    parser.add_argument("--model", metavar="PATH_OR_HUB_ID", default=None, help=model_help)
    parser.add_argument("--device", default="cpu", help="torch device to run on (default: %(default)s)")
    if not streaming:
        return
    parser.add_argument(
        "--chunk-latent-frames",
        type=_positive_int,
        default=1,
        metavar="K",
        help="latent frames per streamed piece after the first (each is 4 input frames for a 4x temporal "
        "backbone); larger is faster, smaller uses less memory; the output does not depend on it (default: 1)",
    )


def _add_input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", metavar="VIDEO", help="input video file (anything PyAV/FFmpeg decodes)")
    parser.add_argument(
        "--prompt", type=_prompt, default=None, help="text describing the clip (default: encode without text)"
    )
    parser.add_argument(
        "--max-frames",
        type=_positive_int,
        default=None,
        metavar="N",
        help="decode at most N frames; the count used is then cut to the largest 4k+1",
    )
    parser.add_argument(
        "--fps", type=_frame_rate, default=None, metavar="F", help="frame rate to record (default: the input's)"
    )


def build_parser() -> argparse.ArgumentParser:
    default_model = f"default: {DEFAULT_MODEL}"
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="PyraTok video tokenizer: reconstruct a video through its tokens, or convert between videos and "
        "token files. Inputs are cut to 4k+1 frames and to H, W multiples of the model's spatial multiple (a note "
        "says so); encoding and decoding stream in causal chunks, so long videos need little memory.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rec = commands.add_parser(
        "reconstruct",
        help="tokenize and decode a video; write the reconstruction, a side-by-side, the tokens and metrics",
        description="Tokenize VIDEO and decode the tokens. Writes into DIR: reconstruction.mp4, side_by_side.mp4 "
        "(input | reconstruction), tokens.safetensors (level_0..level_{L-1}, int64 (1, T', H_l, W_l), with "
        "metadata) and metrics.json (PSNR, SSIM, LPIPS or the reason it is unavailable, bits per pixel, per-level "
        "code usage; levels are numbered from 0).",
    )
    _add_input_options(rec)
    rec.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    _add_model_options(rec, f"PyraTok checkpoint folder or Hub id ({default_model})")
    rec.set_defaults(handler=cmd_reconstruct)

    tok = commands.add_parser(
        "tokenize",
        help="write a video's tokens to a safetensors file",
        description="Tokenize VIDEO into OUT: one int64 tensor level_{i} of shape (1, T', H_i, W_i) per pyramid "
        "level, with metadata (model, prompt, latent_size, input_size, fps, frames).",
    )
    _add_input_options(tok)
    tok.add_argument("--out", required=True, metavar="TOKENS", help="output .safetensors file")
    _add_model_options(tok, f"PyraTok checkpoint folder or Hub id ({default_model})")
    tok.set_defaults(handler=cmd_tokenize)

    detok = commands.add_parser(
        "detokenize",
        help="decode a token file to a video",
        description="Decode a token file written by `pyratok tokenize` or `pyratok reconstruct` into an mp4. The "
        "model must be the one that wrote the tokens (same levels, codebook and pyramid shapes).",
    )
    detok.add_argument("tokens", metavar="TOKENS", help="token file (.safetensors)")
    detok.add_argument("--out", required=True, metavar="VIDEO", help="output .mp4 file")
    detok.add_argument(
        "--fps", type=_frame_rate, default=None, metavar="F", help="frame rate (default: the one recorded)"
    )
    detok.add_argument(
        "--force",
        action="store_true",
        help="decode even when the model's fingerprint differs from the one recorded in TOKENS (gives garbage "
        "unless the model is the same)",
    )
    _add_model_options(
        detok, f"PyraTok checkpoint folder or Hub id (default: the model recorded in TOKENS, else {DEFAULT_MODEL})"
    )
    detok.set_defaults(handler=cmd_detokenize)

    tds = commands.add_parser(
        "tokenize-dataset",
        help="tokenise a captioned video dataset into a Parquet dataset of id sequences",
        description="Stream a video dataset with the training reader (WebDataset shards with .json or .txt "
        "captions, or a Hub dataset id with its column names), tokenise each clip (the first FRAMES frames, "
        "centre-cropped to SIZE) with its caption as the prompt, and write OUT/data/train-r{rank}-{part}.parquet "
        "(key, caption, input_ids, layout, tokenizer_name, tokenizer_fingerprint), OUT/pyratok_tokens.json (counts, "
        "skipped clips by reason) and a dataset card. Loads with datasets.load_dataset('parquet', ...). A killed run "
        "resumes where it stopped; `accelerate launch` splits the clips over processes.",
    )
    tds.add_argument("--data", required=True, nargs="+", metavar="SRC",
                     help="shards (.tar files, folders of them, globs) or one Hub dataset id / dataset folder")
    tds.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    tds.add_argument("--order", choices=ORDERS, default="frame_major", help="sequence order (default: %(default)s)")
    tds.add_argument("--frames", type=_positive_int, default=17, metavar="T",
                     help="frames per clip, 4k+1 (default: %(default)s)")
    tds.add_argument("--size", type=_clip_size, default=(64, 64), metavar="N|HxW",
                     help="clip size, multiples of the model's spatial multiple (default: 64)")
    tds.add_argument("--batch-size", type=_positive_int, default=8, metavar="B",
                     help="clips encoded at once per process (default: %(default)s)")
    tds.add_argument("--video-column", default=None, metavar="NAME",
                     help="video member / column (default: found: mp4, webm, ... or the Video feature)")
    tds.add_argument("--caption-column", default=None, metavar="NAME",
                     help="caption member / column (default: found: json, txt, caption, text, prompt)")
    tds.add_argument("--caption-key", default="caption", metavar="KEY",
                     help="caption key inside a JSON caption (default: %(default)s)")
    tds.add_argument("--dataset-config", default=None, metavar="NAME", help="Hub dataset configuration name")
    tds.add_argument("--split", default="train", help="Hub dataset split to read (default: %(default)s)")
    tds.add_argument("--max-clips", type=_positive_int, default=None, metavar="N",
                     help="stop when the dataset holds N clips")
    tds.add_argument("--rows-per-part", type=_positive_int, default=1024, metavar="N",
                     help="rows per Parquet part (default: %(default)s)")
    tds.add_argument("--upscale", action="store_true",
                     help="tokenise videos smaller than SIZE (upscaled) instead of skipping them")
    tds.add_argument("--tokenizer-name", default=None, metavar="NAME",
                     help="name recorded in the rows (default: the Hub id or the model folder's name)")
    tds.add_argument("--no-resume", action="store_true",
                     help="delete the parts already in DIR and start over (default: continue after them)")
    tds.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    tds.add_argument("--no-prompt", action="store_true",
                     help="encode without the captions as prompts (a tokenizer trained without text); the captions "
                     "are still stored")
    _add_model_options(tds, f"PyraTok checkpoint folder or Hub id ({default_model})", streaming=False)
    tds.set_defaults(handler=cmd_tokenize_dataset)

    from .generate_cli import add_generate_parser  # imports the pipeline only when a command needs it

    add_generate_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `pyratok` command line; returns the exit status (0 ok, 2 usage or input error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2; argparse already printed the message)
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return args.handler(args)
    except (CliError, FileNotFoundError, VideoDecodeError, ValueError, OSError, SafetensorError) as err:
        if args.debug:
            raise
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return 2


__all__ = ["DEFAULT_MODEL", "build_parser", "load_model", "main", "piece_bounds", "read_tokens"]


if __name__ == "__main__":
    sys.exit(main())

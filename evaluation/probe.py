"""Linear probes of what a checkpoint's encoder keeps: is colour, is brightness, still in its features and latent?

    pyratok-eval probe --model PATH --data SPLIT_DIR [--max-clips N] [--num-frames 1] [--out probe.json]

A diagnostic for an autoencoder that reconstructs the wrong colours (or none). For every clip's first frame, each
cell of a feature grid (`h x w`, the grid of the layer probed) is paired with two targets computed from the pixels
that cell covers: *luminance* (the mean over RGB of the block's mean) and *chroma* (the block's mean RGB minus its
luminance, 3 values). A least-squares linear map with bias is fitted from the cell's feature vector to each target on
the first half of the cells (clip order) and scored on the second half by R² (1 − residual / variance about the
training mean: 1 is perfect, ≈ 0 is no better than predicting the mean, < 0 is worse). Layers probed: the encoder's
input conv, each of its down blocks, and the posterior mean (the latent the decoder gets).

The frozen Wan backbone is probed with its LoRA adapters off (the VAE as pretrained) and on (PyraTok's adapted
encoder). A linear probe is a lower bound on what a layer keeps (a nonlinear decoder may read more), but a latent
whose chroma R² is ≈ 0 while its luminance R² is high has, for a linear read-out, dropped colour: a decoder fed that
latent reconstructs grey video.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from .clips import iter_clips

DEFAULT_TRAIN_FRACTION = 0.5


def block_targets(frames: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cell luminance and chroma of `frames` on a `grid`.

    Args:
        frames: `(N, 3, H, W)` float RGB; `H` and `W` divisible by the grid.
        grid: `(h, w)` cells.

    Returns:
        `(luminance (N*h*w, 1), chroma (N*h*w, 3))`, cells in `(n, row, col)` order.
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (N, 3, H, W), got {tuple(frames.shape)}")
    height, width = frames.shape[-2:]
    if height % grid[0] or width % grid[1]:
        raise ValueError(f"frame size {height}x{width} is not divisible by the feature grid {grid[0]}x{grid[1]}")
    blocks = F.avg_pool2d(frames.float(), (height // grid[0], width // grid[1]))  # (N, 3, h, w)
    luminance = blocks.mean(dim=1, keepdim=True)
    chroma = blocks - luminance
    return luminance.permute(0, 2, 3, 1).reshape(-1, 1), chroma.permute(0, 2, 3, 1).reshape(-1, 3)


def linear_probe_r2(
    features: torch.Tensor, targets: torch.Tensor, train_fraction: float = DEFAULT_TRAIN_FRACTION
) -> float:
    """Held-out R² of a least-squares linear map (with bias) from `features` to `targets`.

    Args:
        features: `(M, C)` samples.
        targets: `(M, K)` values to predict.
        train_fraction: the first `round(M * train_fraction)` rows fit the map, the rest score it.

    Returns:
        R² over all `K` target columns together: `1 - Σ(pred - y)² / Σ(y - mean_train(y))²` on the held-out rows.
    """
    if features.ndim != 2 or targets.ndim != 2 or features.shape[0] != targets.shape[0]:
        raise ValueError(f"features (M, C) and targets (M, K) must agree, got {tuple(features.shape)} and "
                         f"{tuple(targets.shape)}")
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    num = features.shape[0]
    split = round(num * train_fraction)
    if split < 2 or num - split < 2:
        raise ValueError(f"need at least 2 training and 2 held-out samples, got {num} samples")
    design = torch.cat([features.double(), torch.ones(num, 1, dtype=torch.float64)], dim=1)
    y = targets.double()
    weights = torch.linalg.lstsq(design[:split], y[:split], driver="gelsd").solution
    residual = (design[split:] @ weights - y[split:]).square().sum()
    spread = (y[split:] - y[:split].mean(dim=0)).square().sum()
    if spread <= 0:
        raise ValueError("the held-out targets have no variance: a probe R² is undefined (use more varied clips)")
    return float(1.0 - residual / spread)


def _first_frame(tensor: torch.Tensor) -> torch.Tensor:
    """`(N, C, T, h, w)` -> `(N, C, h, w)` at the first (causal, image-like) frame."""
    return tensor[:, :, 0] if tensor.ndim == 5 else tensor


def encoder_probe_layers(vae: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """`(name, module)` of a diffusers `AutoencoderKLWan` encoder's layers to probe, input to output."""
    encoder = vae.encoder
    layers = [("conv_in", encoder.conv_in)]
    layers += [(f"down_blocks.{i}", block) for i, block in enumerate(encoder.down_blocks)]
    return layers


@torch.no_grad()
def collect_encoder_features(vae: torch.nn.Module, videos: torch.Tensor) -> dict[str, torch.Tensor]:
    """First-frame outputs of every probed encoder layer and the posterior mean, for one batch.

    Args:
        vae: a diffusers `AutoencoderKLWan` (with or without LoRA adapters).
        videos: `(N, 3, T, H, W)` in [-1, 1].

    Returns:
        `{layer name: (N, C, h, w)}`, input to output, ending with `"latent_mean"`.
    """
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in encoder_probe_layers(vae):
        def hook(_module, _inputs, output, name=name):
            captured[name] = _first_frame(output[0] if isinstance(output, tuple) else output)
        hooks.append(module.register_forward_hook(hook))
    try:
        posterior = vae.encode(videos).latent_dist
    finally:
        for handle in hooks:
            handle.remove()
    captured["latent_mean"] = _first_frame(posterior.mean)
    return captured


def probe_features(features: dict[str, torch.Tensor], frames: torch.Tensor,
                   train_fraction: float = DEFAULT_TRAIN_FRACTION) -> list[dict]:
    """Luminance / chroma probe of each layer's features against the frames they came from.

    Args:
        features: `{layer: (N, C, h, w)}` (from `collect_encoder_features`).
        frames: `(N, 3, H, W)` the first frames that were encoded.

    Returns:
        One dict per layer: `{"layer", "channels", "grid" [h, w], "luminance_r2", "chroma_r2"}`.
    """
    rows = []
    for name, feats in features.items():
        feats = feats.float().cpu()
        grid = (feats.shape[-2], feats.shape[-1])
        luminance, chroma = block_targets(frames, grid)
        flat = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
        rows.append({"layer": name, "channels": int(feats.shape[1]), "grid": list(grid),
                     "luminance_r2": linear_probe_r2(flat, luminance, train_fraction),
                     "chroma_r2": linear_probe_r2(flat, chroma, train_fraction)})
    return rows


def probe_wan_encoder(vae: torch.nn.Module, videos: torch.Tensor, train_fraction: float = DEFAULT_TRAIN_FRACTION
                      ) -> list[dict]:
    """`probe_features` of one batch of `videos (N, 3, T, H, W)` through a Wan VAE encoder."""
    return probe_features(collect_encoder_features(vae, videos), videos[:, :, 0], train_fraction)


def _stack_clips(clips: Iterable, num_frames: int) -> torch.Tensor:
    """`(N, 3, num_frames, H, W)` of the clips; at least 4, all of one size."""
    videos = [clip.video[:, :num_frames] for clip in clips]
    if len(videos) < 4:
        raise ValueError(f"the probe needs at least 4 clips, got {len(videos)}")
    sizes = {tuple(v.shape[-2:]) for v in videos}
    if len(sizes) != 1:
        raise ValueError(f"clips have different sizes {sorted(sizes)}: pass --size to resize them to one")
    return torch.stack(videos)


def evaluate_probe(model: torch.nn.Module, split_dir: str, max_clips: int | None = None, num_frames: int = 1,
                   size: int | tuple[int, int] | None = None, batch_size: int = 16,
                   train_fraction: float = DEFAULT_TRAIN_FRACTION) -> dict:
    """Probe a `PyraTokModel`'s backbone encoder (LoRA off, then on) on the first frames of an eval split.

    Returns:
        `{"num_clips", "num_frames", "train_fraction", "backbone": [rows], "adapted": [rows]}` (rows as in
        `probe_features`; each probe is fitted over every clip's cells together).
    """
    if num_frames < 1 or (num_frames - 1) % 4:
        raise ValueError(f"num_frames must be 4k+1, got {num_frames}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    videos = _stack_clips(iter_clips(split_dir, max_clips=max_clips, num_frames=num_frames, size=size), num_frames)
    backbone = model.core.backbone
    device = next(model.parameters()).device
    results: dict = {"num_clips": len(videos), "num_frames": num_frames, "train_fraction": train_fraction}
    for label, adapters in (("backbone", backbone.lora_disabled), ("adapted", contextlib.nullcontext)):
        with adapters():
            batches = [collect_encoder_features(backbone.vae, videos[start : start + batch_size].to(device))
                       for start in range(0, len(videos), batch_size)]
        features = {name: torch.cat([b[name] for b in batches]) for name in batches[0]}
        results[label] = probe_features(features, videos[:, :, 0], train_fraction)
    return results


# ------------------------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=16, help="clips per encoder forward")
    parser.add_argument("--train-fraction", type=float, default=DEFAULT_TRAIN_FRACTION,
                        help="share of the cells (in clip order) that fit each probe; the rest score it")


def run(args: argparse.Namespace, model: torch.nn.Module) -> dict:
    return evaluate_probe(model, args.data, max_clips=args.max_clips, num_frames=args.num_frames or 1,
                          size=args.size, batch_size=args.batch_size, train_fraction=args.train_fraction)


__all__ = [
    "block_targets", "collect_encoder_features", "encoder_probe_layers", "evaluate_probe", "linear_probe_r2",
    "probe_features", "probe_wan_encoder",
]

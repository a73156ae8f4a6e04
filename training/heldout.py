"""Held-out reconstruction metrics used during training (validation) and for the shipped model card."""

from __future__ import annotations

import math
from collections import Counter

import torch

from modeling_pyratok import PyraTokModel

from .losses import psnr, ssim


def frames_as_images(video: torch.Tensor) -> torch.Tensor:
    """`(B, C, T, H, W)` → `(B·T, C, H, W)`."""
    return video.transpose(1, 2).flatten(0, 1)


def clip_scores(
    reconstruction: torch.Tensor, target: torch.Tensor, lpips_module: torch.nn.Module | None = None
) -> dict[str, list[float | None]]:
    """Per-clip PSNR / SSIM / LPIPS, each the mean of that clip's per-frame values.

    Args:
        reconstruction, target: float `(B, 3, T, H, W)` in [-1, 1] (H, W >= 11 for SSIM's window).
        lpips_module: an `lpips.LPIPS` (inputs in [-1, 1]) or None.

    Returns:
        `{"psnr": [B floats, dB, inf for identical clips], "ssim": [B floats in [-1, 1]], "lpips": [B floats >= 0 or
        None]}`.
    """
    if reconstruction.shape != target.shape or reconstruction.ndim != 5:
        raise ValueError(
            f"reconstruction and target must both be (B, 3, T, H, W), got {tuple(reconstruction.shape)} and "
            f"{tuple(target.shape)}"
        )
    batch, _, frames = target.shape[:3]
    x, y = frames_as_images(reconstruction.float()), frames_as_images(target.float())  # (B*T, 3, H, W)
    out: dict[str, list[float | None]] = {
        "psnr": psnr(x, y, reduction="none").view(batch, frames).mean(1).tolist(),
        "ssim": ssim(x, y, reduction="none").view(batch, frames).mean(1).tolist(),
        "lpips": [None] * batch,
    }
    if lpips_module is not None:
        module_device = next(lpips_module.parameters()).device
        dist = lpips_module(x.to(module_device), y.to(module_device)).flatten()  # (B*T,)
        out["lpips"] = dist.view(batch, frames).mean(1).tolist()
    return out


def code_usage(ids: list[torch.Tensor], codebook_size: int) -> dict[str, float]:
    """Usage of one level's codes over many tokens: distinct codes, their share of the codebook and perplexity."""
    counts: Counter[int] = Counter()
    for level_ids in ids:
        counts.update(level_ids.flatten().tolist())
    total = sum(counts.values())
    entropy = -sum(c / total * math.log(c / total) for c in counts.values())
    return {
        "tokens": total,
        "distinct_codes": len(counts),
        "codebook_fraction": len(counts) / codebook_size,
        "perplexity": math.exp(entropy),
    }


@torch.no_grad()
def evaluate_reconstruction(model: torch.nn.Module, stream, num_batches: int, device: torch.device) -> dict:
    """Mean PSNR (dB) / SSIM over clips of `num_batches` batches of `stream` (frames in [-1, 1], data range 2).

    For a `PyraTokModel` also: per-level code usage and bits per pixel; captions are passed as prompts.
    Any other module is treated as a diffusers KL VAE (posterior mode, no sampling).
    """
    psnrs, ssims, level_ids, bpp = [], [], None, None
    for _ in range(num_batches):
        batch = next(stream)
        x = batch["pixel_values"].to(device)
        if isinstance(model, PyraTokModel):
            out = model(x, text=batch["captions"], return_loss=False)
            recon = out.reconstruction
            level_ids = [[] for _ in out.ids] if level_ids is None else level_ids
            for store, ids in zip(level_ids, out.ids, strict=True):
                store.append(ids.cpu())
            bpp = model.bits_per_pixel(x.shape[3], x.shape[4], x.shape[2])
        else:
            recon = model(x, sample_posterior=False).sample
        scores = clip_scores(recon, x)
        psnrs += scores["psnr"]
        ssims += scores["ssim"]
    metrics: dict = {
        "clips": len(psnrs),
        "psnr": sum(psnrs) / len(psnrs),
        "ssim": sum(ssims) / len(ssims),
    }
    if level_ids is not None:
        size = 2**model.config.codebook_dim
        for level, ids in enumerate(level_ids, start=1):
            for key, value in code_usage(ids, size).items():
                metrics[f"level{level}/{key}"] = value
        metrics["bits_per_pixel"] = bpp
    return metrics


__all__ = ["clip_scores", "code_usage", "evaluate_reconstruction", "frames_as_images"]

"""Held-out reconstruction metrics used during training (validation) and for the shipped model card."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch

from modeling_pyratok import PyraTokModel
from pyratok.quality import chroma, clip_scores, code_usage

from .data import VideoClipStream


def temporal_factor(model: torch.nn.Module) -> int | None:
    """Frames per causal chunk after the first frame: a `PyraTokModel`'s `scale_factor_temporal`, or `2 ** n` for a
    diffusers Wan VAE with `n` temporal downsamplings; None if the model says neither."""
    config = getattr(model, "config", None)
    if isinstance(getattr(config, "scale_factor_temporal", None), int):
        return config.scale_factor_temporal
    downsample = getattr(config, "temperal_downsample", None)  # diffusers' spelling
    return 2 ** sum(bool(d) for d in downsample) if downsample is not None else None


def psnr_by_chunk(squared_error: torch.Tensor, counts: torch.Tensor, chunk: int) -> dict[str, float]:
    """PSNR (dB, data range 2) of frame 0 and of each causal chunk of `chunk` frames after it, from pooled errors.

    Args:
        squared_error: `(T,)` sum over clips of each frame's mean squared error.
        counts: `(T,)` clips that had frame t.
        chunk: frames per chunk after the first.

    Returns:
        `{"psnr_frames_0": ..., "psnr_frames_1-4": ..., "psnr_frames_5-8": ...}` (for `chunk=4`), `inf` for no error.
    """
    out = {}
    starts = [0, *range(1, squared_error.numel(), chunk)]
    for start in starts:
        stop = 1 if start == 0 else min(start + chunk, squared_error.numel())
        mse = squared_error[start:stop].sum() / counts[start:stop].sum()
        name = "psnr_frames_0" if start == 0 else f"psnr_frames_{start}-{stop - 1}"
        out[name] = float("inf") if mse == 0 else (10 * torch.log10(4.0 / mse)).item()
    return out


@torch.no_grad()
def evaluate_reconstruction(
    model: torch.nn.Module, stream: Iterable[dict], num_batches: int | None, device: torch.device
) -> dict:
    """Mean PSNR (dB) / SSIM over clips of `num_batches` batches of `stream` (every batch of a finite stream if None;
    an endless `VideoClipStream` needs a count); a batch holds `pixel_values` `(B, 3, T, H, W)` in [-1, 1] (data
    range 2) and `captions`.

    Also the PSNR of frame 0 and of each causal chunk after it (`psnr_frames_1-4`, ...; MSE pooled over clips): a
    backbone trained on short clips can lose quality in chunks it never saw; and `chroma` of the reconstructions
    next to the clips' `data_chroma` (a backbone that drops colour outputs grey, chroma near 0). For a
    `PyraTokModel` also: per-level code usage and bits per pixel; captions are passed as prompts. Any other module
    is treated as a diffusers KL VAE (posterior mode, no sampling).
    """
    if num_batches is None and isinstance(stream, VideoClipStream):
        raise ValueError(
            "evaluate_reconstruction: a VideoClipStream repeats its data forever, so num_batches=None would never "
            "end; pass the number of batches to score"
        )
    psnrs, ssims, chromas, level_ids, bpp = [], [], [], None, None
    frame_error, frame_count = torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    for batch in itertools.islice(stream, num_batches):
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
        per_frame = ((recon.float() - x.float()).square().mean(dim=(1, 3, 4)).sum(0)).double().cpu()
        if per_frame.numel() > frame_error.numel():  # a longer clip than any before: grow the tallies
            grow = per_frame.numel() - frame_error.numel()
            frame_error = torch.cat([frame_error, torch.zeros(grow, dtype=torch.float64)])
            frame_count = torch.cat([frame_count, torch.zeros(grow, dtype=torch.float64)])
        frame_error[: per_frame.numel()] += per_frame
        frame_count[: per_frame.numel()] += x.shape[0]
        psnrs += scores["psnr"]
        ssims += scores["ssim"]
        chromas.append((chroma(recon.clamp(-1, 1)), chroma(x), x.shape[0]))
    if not psnrs:
        raise ValueError("evaluate_reconstruction: the stream gave no batches")
    metrics: dict = {
        "clips": len(psnrs),
        "psnr": sum(psnrs) / len(psnrs),
        "ssim": sum(ssims) / len(ssims),
        "chroma": sum(c * n for c, _, n in chromas) / len(psnrs),
        "data_chroma": sum(c * n for _, c, n in chromas) / len(psnrs),
    }
    chunk = temporal_factor(model)
    if chunk and frame_error.numel():
        metrics.update(psnr_by_chunk(frame_error, frame_count, chunk))
    if level_ids is not None:
        size = 2**model.config.codebook_dim
        for level, ids in enumerate(level_ids, start=1):
            for key, value in code_usage(ids, size).items():
                metrics[f"level{level}/{key}"] = value
        metrics["bits_per_pixel"] = bpp
    return metrics


__all__ = ["evaluate_reconstruction", "psnr_by_chunk", "temporal_factor"]

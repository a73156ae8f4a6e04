"""`pyratok-eval backbone`: the continuous KL video VAE under a tokenizer, scored like the trainer's validation.

    pyratok-eval backbone [--model PATH] --data SPLIT_DIR [--num-frames 17] [--max-clips N] [--out report.json]

`--model` is a diffusers `AutoencoderKLWan` folder (the `final` folder of a `task: backbone_vae` run, or the `vae`
folder of a Wan pipeline) or a PyraTok checkpoint folder, whose frozen backbone is evaluated (LoRA adapters left
out). Reconstructions use the posterior mode (no sampling, no quantisation), so they are the ceiling a PyraTok on
that backbone can reach. Reported (`training.heldout.evaluate_reconstruction` on one clip per batch): mean PSNR /
SSIM over clips, the PSNR of frame 0 and of each causal chunk after it (MSE pooled over clips), and the chroma of
the reconstructions next to the clips' own (a backbone that drops colour outputs grey: chroma near 0).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from pyratok.training.heldout import evaluate_reconstruction

from .clips import ClipReader


def load_backbone(path: str | os.PathLike) -> torch.nn.Module:
    """An `AutoencoderKLWan` from a diffusers VAE folder, or the frozen backbone of a PyraTok checkpoint folder."""
    from diffusers import AutoencoderKLWan

    from modeling_pyratok import PyraTokConfig, PyraTokModel

    folder = Path(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"not a model folder (no config.json): {folder}")
    config = json.loads(config_file.read_text())
    if config.get("model_type") == PyraTokConfig.model_type:
        return PyraTokModel.from_pretrained(str(folder)).core.backbone.frozen_wan_vae()
    if config.get("_class_name") != AutoencoderKLWan.__name__:
        found = config.get("_class_name") or config.get("model_type") or "unknown"
        raise ValueError(f"{folder} holds a {found}, not an AutoencoderKLWan or a PyraTok checkpoint")
    return AutoencoderKLWan.from_pretrained(str(folder))


def _batches(reader: ClipReader, device: torch.device) -> Iterator[dict]:
    for clip in reader:
        yield {"pixel_values": clip.video[None].to(device), "captions": [clip.caption]}


@torch.no_grad()
def evaluate_backbone(
    vae: torch.nn.Module,
    split_dir: str | os.PathLike,
    max_clips: int | None = None,
    num_frames: int | None = None,
    size: int | tuple[int, int] | None = None,
) -> dict:
    """Reconstruct every clip of a split through `vae` (posterior mode) and score it.

    Returns:
        `{"task", "num_clips", "skipped", "psnr", "ssim", "chroma", "data_chroma", "psnr_frames_0",
        "psnr_frames_1-4", ...}`: PSNR in dB (frames in [-1, 1], data range 2), SSIM in [-1, 1], chroma =
        mean |pixel - its mean over RGB|.
    """
    vae.eval()
    device = next(vae.parameters()).device
    reader = ClipReader(split_dir, max_clips=max_clips, num_frames=num_frames, size=size)
    try:
        metrics = evaluate_reconstruction(vae, _batches(reader, device), None, device)
    except ValueError as err:
        raise ValueError(f"no decodable clips in {split_dir} ({reader.stats.skipped} skipped)") from err
    clips = metrics.pop("clips")
    return {"task": "backbone", "num_clips": clips, "skipped": reader.stats.as_dict()["skipped_keys"], **metrics}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No flags beyond the common ones (`--model` names the VAE or PyraTok folder)."""


def run(args: argparse.Namespace) -> dict:
    vae = load_backbone(args.model).to(args.device)
    return evaluate_backbone(vae, args.data, max_clips=args.max_clips, num_frames=args.num_frames, size=args.size)


__all__ = ["evaluate_backbone", "load_backbone"]

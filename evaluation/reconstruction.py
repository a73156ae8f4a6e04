"""Reconstruction quality and codebook usage of a tokenizer on an eval split (paper Tab. 1-2, Fig. 29).

Per clip: PSNR and SSIM (`training.losses`: [-1, 1] frames, data range 2; SSIM scores the intensities the
frames encode) and LPIPS (AlexNet by default), each
the mean of its per-frame values; over the split: their means, per-level code usage (`training.heldout.code_usage`:
distinct codes, share of the `2**codebook_dim` codebook, perplexity), token bits per pixel and tokens per clip.

Object fidelity (`evaluation.objects`): when the split holds `annotations_vis.json` (procedural val/test splits of
`training/make_shards.py`), every annotated object is also scored inside its ground-truth mask: CIEDE2000 (and
CIE76) error of its mean colour, PSNR inside the mask, and whether its palette colour name survives; per clip and
averaged over all objects of the split (`object_delta_e`, `object_psnr`, `object_name_survival`, `objects`).

LPIPS needs torchvision's ImageNet trunk weights; when they are not cached the report holds `lpips: null` and
`lpips_unavailable_reason` (never a number from a random trunk).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from pyratok.quality import clip_scores, code_usage, lpips_or_reason

from .clips import VIS_FILE, ClipReader, EvalClip, load_vis_annotations, vis_instances
from .objects import object_scores, summarize_objects


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _is_pyramid(model: torch.nn.Module) -> bool:
    return getattr(model.config, "quantizer_mode", "pyramid") == "pyramid"


def _check_clip_fits(model: torch.nn.Module, clip: EvalClip) -> None:
    multiple = model.config.spatial_multiple
    _, _, height, width = clip.video.shape
    if height % multiple or width % multiple:
        raise ValueError(
            f"clip {clip.key} is {height}x{width}; this model needs multiples of {multiple}: pass a size "
            f"(e.g. size={max(multiple, height // multiple * multiple)})"
        )


@torch.no_grad()
def _level_usage(level_ids: list[list[torch.Tensor]], codebook_size: int) -> list[dict]:
    rows = []
    for level, ids in enumerate(level_ids, start=1):
        rows.append({"level": level, **code_usage(ids, codebook_size)})
    return rows


def _clip_objects(vis: dict, clip: EvalClip, source: torch.Tensor, reconstruction: torch.Tensor) -> list[dict | None]:
    """Object scores of one clip (`evaluation.objects.object_scores`); `[]` when the clip has no annotation."""
    if clip.key not in vis["videos_by_name"]:
        return []
    instances = vis_instances(vis, clip.key)
    if not instances:
        return []
    masks = np.stack([inst["masks"][: clip.num_frames] for inst in instances])
    if clip.resize is not None:
        masks = clip.resize.apply_to_masks(masks)
    colours = {o.get("id"): o.get("color") for o in clip.meta.get("objects", [])}
    labels = [colours.get(inst["object_id"]) for inst in instances]
    rows = object_scores(source, reconstruction, masks, labels=labels)
    for inst, row in zip(instances, rows, strict=True):
        if row is not None:
            row["object_id"] = inst["object_id"]
    return rows


@torch.no_grad()
def evaluate_reconstruction(
    model: torch.nn.Module,
    split_dir: str | os.PathLike,
    max_clips: int | None = None,
    num_frames: int | None = None,
    prompt_from_caption: bool = True,
    lpips_net: str | None = "alex",
    size: int | tuple[int, int] | None = None,
    objects: bool = True,
) -> dict:
    """Reconstruct every clip of a split and score it.

    Args:
        model: a `PyraTokModel` (eval mode is set here).
        split_dir: folder of `*.tar` eval shards.
        max_clips: evaluate at most this many clips (sorted key order).
        num_frames: frames per clip (`4k + 1`; default: the largest `4k + 1` each clip has).
        prompt_from_caption: condition tokenization on each clip's caption (LaPQ models only; residual-mode models
            are never text-conditioned).
        lpips_net: LPIPS trunk (`"alex"`, `"vgg"`, `"squeeze"`) or None to skip LPIPS.
        size: resize + centre-crop clips to this size first (int or `(H, W)`).
        objects: score annotated objects inside their masks when `split_dir/annotations_vis.json` exists.

    Returns:
        `{"task", "num_clips", "skipped", "prompt_from_caption", "psnr", "ssim", "lpips", "lpips_net",
        "lpips_unavailable_reason", "bits_per_pixel", "tokens_per_clip", "codebook_size", "code_usage": [per level
        {"level", "tokens", "distinct_codes", "codebook_fraction", "perplexity"}], "clips": [{"key", "num_frames",
        "height", "width", "psnr", "ssim", "lpips", "objects": summary or None, "object_rows": per object}]}`
        plus `"object_delta_e"` (mean CIEDE2000 over objects), `"object_psnr"`, `"object_name_survival"` and
        `"objects"` (`summarize_objects` over the split, with `"annotations"` and `"colour_difference"`), all None
        when the split has no object annotations; PSNR in dB (mean over clips, inf if a clip is identical), SSIM in
        [-1, 1], LPIPS >= 0 or None.
    """
    model.eval()
    device = _device(model)
    lpips_module, lpips_reason = (None, "LPIPS disabled (lpips_net=None)") if lpips_net is None else (
        lpips_or_reason(lpips_net)
    )
    if lpips_module is not None:
        lpips_module = lpips_module.to(device)
    use_text = prompt_from_caption and _is_pyramid(model)
    reader = ClipReader(split_dir, max_clips=max_clips, num_frames=num_frames, size=size)
    vis_path = os.path.join(split_dir, VIS_FILE)
    vis = load_vis_annotations(vis_path) if objects and os.path.isfile(vis_path) else None
    rows, level_ids, bpps, tokens, all_objects = [], None, [], [], []
    for clip in reader:
        _check_clip_fits(model, clip)
        x = clip.video[None].to(device)  # (1, 3, T, H, W)
        text = clip.caption if use_text and clip.caption.strip() else None
        out = model(x, text=text, return_loss=False)
        reconstruction = out.reconstruction.clamp(-1, 1)
        scores = clip_scores(reconstruction, x, lpips_module)
        _, frames, height, width = clip.video.shape
        rows.append({"key": clip.key, "num_frames": frames, "height": height, "width": width,
                     **{name: values[0] for name, values in scores.items()}})
        object_rows = _clip_objects(vis, clip, x[0], reconstruction[0]) if vis is not None else []
        all_objects += object_rows
        rows[-1]["objects"] = summarize_objects(object_rows) if object_rows else None
        rows[-1]["object_rows"] = [r for r in object_rows if r is not None]
        level_ids = [[] for _ in out.ids] if level_ids is None else level_ids
        for store, ids in zip(level_ids, out.ids, strict=True):
            store.append(ids.cpu())
        bpps.append(model.bits_per_pixel(height, width, frames))
        tokens.append(sum(ids[0].numel() for ids in out.ids))
    if not rows:
        raise ValueError(f"no decodable clips in {split_dir} ({reader.stats.skipped} skipped)")
    codebook_size = 2**model.config.codebook_dim
    object_summary = None
    if vis is not None:
        object_summary = {**summarize_objects(all_objects), "annotations": vis_path,
                          "colour_difference": "CIEDE2000 (delta_e_2000) and CIE76 (delta_e_76), CIELAB D65 from sRGB"}
    return {
        "task": "reconstruction",
        "num_clips": len(rows),
        "skipped": reader.stats.as_dict()["skipped_keys"],
        "prompt_from_caption": use_text,
        "psnr": _mean([r["psnr"] for r in rows]),
        "ssim": _mean([r["ssim"] for r in rows]),
        "lpips": _mean([r["lpips"] for r in rows]) if lpips_module is not None else None,
        "lpips_net": lpips_net,
        "lpips_unavailable_reason": lpips_reason,
        "bits_per_pixel": _mean(bpps),
        "tokens_per_clip": _mean(tokens),
        "codebook_size": codebook_size,
        "code_usage": _level_usage(level_ids, codebook_size),
        "object_delta_e": None if object_summary is None else object_summary["delta_e_2000"],
        "object_psnr": None if object_summary is None else object_summary["psnr"],
        "object_name_survival": None if object_summary is None else object_summary["name_survival"],
        "objects": object_summary,
        "clips": rows,
    }


@torch.no_grad()
def resolution_sweep(
    model: torch.nn.Module,
    split_dir: str | os.PathLike,
    sizes: Sequence[int] = (64, 128, 192, 256),
    max_clips: int | None = None,
    num_frames: int | None = None,
    prompt_from_caption: bool = True,
) -> dict:
    """Per-level codebook usage versus input resolution (paper Fig. 29): every clip resized to each size.

    Clips are upsampled (or downsampled) with `resize_and_crop` to `size x size`; only tokenization runs.

    Args:
        sizes: square sizes, each a multiple of `config.spatial_multiple`.
        Other arguments as `evaluate_reconstruction`.

    Returns:
        `{"task": "resolution_sweep", "sizes", "codebook_size", "results": [{"size", "num_clips", "tokens_per_clip",
        "bits_per_pixel", "code_usage": [per level {"level", "tokens", "distinct_codes", "codebook_fraction",
        "perplexity"}]}]}`.
    """
    sizes = [int(s) for s in sizes]
    multiple = model.config.spatial_multiple
    bad = [s for s in sizes if s < 1 or s % multiple]
    if not sizes or bad:
        raise ValueError(f"sizes must be positive multiples of spatial_multiple={multiple}, got {sizes}")
    model.eval()
    device = _device(model)
    use_text = prompt_from_caption and _is_pyramid(model)
    codebook_size = 2**model.config.codebook_dim
    results = []
    for size in sizes:
        level_ids, tokens, bpps, count = None, [], [], 0
        for clip in ClipReader(split_dir, max_clips=max_clips, num_frames=num_frames, size=size):
            x = clip.video[None].to(device)
            text = clip.caption if use_text and clip.caption.strip() else None
            ids = model.tokenize(x, text=text).ids
            level_ids = [[] for _ in ids] if level_ids is None else level_ids
            for store, level in zip(level_ids, ids, strict=True):
                store.append(level.cpu())
            tokens.append(sum(level[0].numel() for level in ids))
            bpps.append(model.bits_per_pixel(size, size, clip.num_frames))
            count += 1
        if count == 0:
            raise ValueError(f"no decodable clips in {split_dir}")
        results.append({
            "size": size,
            "num_clips": count,
            "tokens_per_clip": _mean(tokens),
            "bits_per_pixel": _mean(bpps),
            "code_usage": _level_usage(level_ids, codebook_size),
        })
    return {"task": "resolution_sweep", "sizes": sizes, "codebook_size": codebook_size, "results": results}


__all__ = ["clip_scores", "evaluate_reconstruction", "resolution_sweep"]

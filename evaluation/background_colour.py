"""Background-colour consistency of generated procedural clips: does the clip's background have the prompt's colour?

A coarse, classifier-free check of text following that still works when a prior draws no recognisable object: the
procedural captions end with "on <a|an|a noisy> <colour> [gradient|striped] background", and the background covers
most of the frame. Every pixel of the clip's border ring (the outer `BORDER` pixels of every frame, where objects
rarely are) is assigned to the nearest of the background palette's colours (each colour's base and its texture
variant, as `make_shards` draws them, and their blend); the clip's colour is the majority vote. Real test clips give
the ceiling (objects crossing the border make it < 100%), `1 / len(BACKGROUND_COLORS)` the chance level.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from pyratok.training.make_shards import BACKGROUND_COLORS

BORDER = 6  # pixels of the ring read at each frame edge (64x64 clips: about a third of the frame)
_PHRASE = re.compile(r" on (?:a noisy |an? )(?P<name>[a-z ]+?)(?: gradient| striped)? background$")


def background_colour_name(caption: str) -> str | None:
    """The background colour a procedural caption names, or None for other captions (camera pans)."""
    match = _PHRASE.search(caption.strip())
    if match is None or match["name"] not in BACKGROUND_COLORS:
        return None
    return match["name"]


def _palette() -> tuple[np.ndarray, list[str]]:
    """Each background colour's base RGB, its texture variant (as `make_shards._render_background`) and their mean
    (gradients and smooth noise blend the two), in [0, 1]."""
    colours, names = [], []
    for name, rgb in BACKGROUND_COLORS.items():
        base = np.asarray(rgb, dtype=np.float64) / 255
        other = base * 0.5 if base.mean() > 0.5 else base + (1 - base) * 0.45
        colours += [base, other, (base + other) / 2]
        names += [name, name, name]
    return np.stack(colours), names


def clip_background_colour(video: torch.Tensor) -> str:
    """The majority palette colour of a clip's border ring. `video`: `(3, T, H, W)` in [-1, 1]."""
    if video.ndim != 4 or video.shape[0] != 3 or min(video.shape[-2:]) <= 2 * BORDER:
        raise ValueError(f"expected a (3, T, H, W) clip larger than 2 x {BORDER} pixels, got {tuple(video.shape)}")
    pixels = ((video.detach().float().cpu() + 1) / 2).clamp(0, 1).permute(1, 2, 3, 0).numpy()  # (T, H, W, 3)
    ring = np.ones(pixels.shape[1:3], dtype=bool)
    ring[BORDER:-BORDER, BORDER:-BORDER] = False
    border = pixels[:, ring].reshape(-1, 3).astype(np.float64)
    colours, names = _palette()
    nearest = ((border[:, None, :] - colours[None]) ** 2).sum(-1).argmin(1)
    votes: dict[str, int] = {}
    for index, count in zip(*np.unique(nearest, return_counts=True), strict=True):
        votes[names[index]] = votes.get(names[index], 0) + int(count)
    return max(votes, key=lambda name: (votes[name], name))


def background_consistency(videos: torch.Tensor | Sequence[torch.Tensor], prompts: Sequence[str]) -> dict:
    """Share of clips whose border-ring colour is the prompt's background colour.

    Args:
        videos: `(N, 3, T, H, W)` in [-1, 1] (or a list of `(3, T, H, W)`).
        prompts: N captions; those naming no background colour are skipped and counted.

    Returns:
        `{"num_clips", "skipped_prompts", "recognised", "chance"}`.
    """
    if len(videos) != len(prompts):
        raise ValueError(f"got {len(videos)} videos but {len(prompts)} prompts")
    hits, skipped = [], 0
    for video, prompt in zip(videos, prompts, strict=True):
        wanted = background_colour_name(prompt)
        if wanted is None:
            skipped += 1
            continue
        hits.append(clip_background_colour(video) == wanted)
    if not hits:
        raise ValueError("none of the prompts names a procedural background colour")
    return {
        "num_clips": len(hits),
        "skipped_prompts": skipped,
        "recognised": float(np.mean(hits)),
        "chance": 1.0 / len(BACKGROUND_COLORS),
    }


__all__ = ["BORDER", "background_colour_name", "background_consistency", "clip_background_colour"]

"""COCO uncompressed run-length encoding of boolean masks (the procedural shards' object masks, VIS annotations)."""

from __future__ import annotations

import numpy as np


def rle_encode(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE of a boolean `(H, W)` mask, column-major: `{"counts": [...], "size": [H, W]}`.

    Counts alternate runs of 0 and 1 starting with 0 (a leading 0 count when the first pixel is set); they sum to H*W.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask (H, W), got shape={mask.shape}")
    flat = mask.astype(bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def rle_decode(rle: dict) -> np.ndarray:
    """Inverse of `rle_encode`: uncompressed column-major RLE → boolean `(H, W)`."""
    try:
        height, width = (int(s) for s in rle["size"])
        counts = np.asarray(rle["counts"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"not an uncompressed RLE dict with 'counts' and 'size': {rle!r:.200}") from err
    if counts.ndim != 1 or (counts < 0).any() or counts.sum() != height * width:
        raise ValueError(f"RLE counts must be non-negative and sum to H*W={height * width}, got sum {counts.sum()}")
    values = np.arange(counts.size) % 2 == 1
    flat = np.repeat(values, counts)
    return flat.reshape((width, height)).T.copy()


__all__ = ["rle_decode", "rle_encode"]

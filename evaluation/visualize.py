"""Qualitative figures of a PyraTok tokenizer, written as PNG files.

One function per figure, each taking explicit data and an output path (so it can be fed by any evaluator):

- `plot_pca_maps`: per-level PCA maps of the quantized tokens (paper Fig. 4): the token embeddings `W_c q` of all
  levels are projected jointly (they share the `d_s` semantic space, so a colour means the same thing on every level)
  onto their 3 principal components → RGB; one row per level, one column per latent frame.
- `plot_tsne`: t-SNE of clip embeddings coloured by caption class (Fig. 6), perplexity adapted to the clip count.
- `plot_codebook_usage`: per-level histograms of code indices, with distinct codes and perplexity.
- `plot_reconstruction`: input row over reconstruction row.
- `plot_segmentation_overlay`: predicted masks tinted on the frames (and the ground truth in a second row).
- `plot_localization_timeline`: similarity curve, threshold, predicted vs ground-truth segments (Fig. 16).

Image grids are drawn with PIL. Plots use matplotlib (Agg) when it is installed and a small PIL plotter otherwise
(same content, plainer look); `USE_MATPLOTLIB = False` forces the PIL path.

`run` (the `pyratok-eval visualize` task) draws every figure for an eval split into `--figures-dir`.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

logger = logging.getLogger(__name__)

USE_MATPLOTLIB = True
EXACT_TSNE_MAX = 300
DPI = 100
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
)
OTHER_COLOR = (190, 190, 190)
MAX_LEGEND = len(PALETTE)
GT_COLOR = (31, 119, 180)
PRED_COLOR = (255, 127, 14)
MASK_COLOR = (255, 40, 40)
GT_MASK_COLOR = (40, 220, 40)
LABEL_WIDTH = 88
HEADER_HEIGHT = 18


# -------------------------------------------------------------------------------------------------------- helpers


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or None (not installed, or `USE_MATPLOTLIB` is False)."""
    if not USE_MATPLOTLIB:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _prepare_path(path: str | os.PathLike) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"figures are PNG files: path must end in .png, got {str(path)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _as_numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _video_frames(video, name: str = "video") -> np.ndarray:
    """Float `(3, T, H, W)` in [-1, 1] → uint8 `(T, H, W, 3)`."""
    v = _as_numpy(video)
    if v.ndim != 4 or v.shape[0] != 3:
        raise ValueError(f"{name} must be (3, T, H, W), got shape {v.shape}")
    return np.clip(np.round((v.astype(np.float32) + 1) * 127.5), 0, 255).astype(np.uint8).transpose(1, 2, 3, 0)


def _pick_frames(num_frames: int, max_frames: int) -> list[int]:
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if num_frames <= max_frames:
        return list(range(num_frames))
    return sorted({int(round(i)) for i in np.linspace(0, num_frames - 1, max_frames)})


def _image_grid(
    rows: Sequence[Sequence[np.ndarray]],
    path: Path,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    cell: int | None = None,
    title: str | None = None,
) -> Path:
    """uint8 `(h, w, 3)` cells → one PNG; each cell resized (nearest) to `cell × cell·w/h` if `cell` is given."""
    if not rows or not all(rows):
        raise ValueError("an image grid needs at least one non-empty row")
    first = np.asarray(rows[0][0])
    height = cell if cell is not None else first.shape[0]
    width = cell * first.shape[1] // first.shape[0] if cell is not None else first.shape[1]
    ncols = max(len(r) for r in rows)
    left = LABEL_WIDTH if row_labels else 0
    top = (HEADER_HEIGHT if col_labels else 0) + (HEADER_HEIGHT if title else 0)
    gap = 2
    canvas = Image.new("RGB", (left + ncols * (width + gap), top + len(rows) * (height + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font()
    if title:
        draw.text((left + 2, 2), title, fill="black", font=font)
    col_top = HEADER_HEIGHT if title else 0
    for j, label in enumerate(col_labels or []):
        text = str(label)
        while len(text) > 1 and draw.textlength(text, font=font) > width:  # keep labels inside their column
            text = text[:-1]
        draw.text((left + j * (width + gap) + 2, col_top + 2), text, fill="black", font=font)
    for i, row in enumerate(rows):
        y = top + i * (height + gap)
        if row_labels:
            draw.text((2, y + height // 2 - 6), str(row_labels[i])[:14], fill="black", font=font)
        for j, img in enumerate(row):
            arr = np.asarray(img)
            if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
                raise ValueError(f"grid cells must be uint8 (h, w, 3), got {arr.dtype} {arr.shape}")
            tile = Image.fromarray(arr).resize((width, height), Image.NEAREST)
            canvas.paste(tile, (left + j * (width + gap), y))
    canvas.save(path)
    return path


class _PilAxes:
    """A minimal PIL plot panel: data → pixel mapping, frame, title, range labels, lines, points, spans."""

    def __init__(self, draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], xlim, ylim, title: str = "",
                 y_labels: bool = True):
        self.draw, self.font = draw, _font()
        x0, y0, x1, y1 = box
        self.box = (x0 + 44, y0 + 16, x1 - 6, y1 - 16)  # room for the title and the range labels
        self.xlim = (float(xlim[0]), float(xlim[1]) if xlim[1] > xlim[0] else float(xlim[0]) + 1.0)
        self.ylim = (float(ylim[0]), float(ylim[1]) if ylim[1] > ylim[0] else float(ylim[0]) + 1.0)
        bx0, by0, bx1, by1 = self.box
        draw.rectangle(self.box, outline="black")
        draw.text((bx0, y0 + 2), title, fill="black", font=self.font)
        draw.text((bx0, by1 + 2), f"{self.xlim[0]:.3g}", fill="black", font=self.font)
        right = f"{self.xlim[1]:.3g}"
        draw.text((bx1 - draw.textlength(right, font=self.font), by1 + 2), right, fill="black", font=self.font)
        if y_labels:
            draw.text((x0 + 2, by0), f"{self.ylim[1]:.3g}", fill="black", font=self.font)
            draw.text((x0 + 2, by1 - 10), f"{self.ylim[0]:.3g}", fill="black", font=self.font)

    def px(self, x: float, y: float) -> tuple[float, float]:
        bx0, by0, bx1, by1 = self.box
        u = (x - self.xlim[0]) / (self.xlim[1] - self.xlim[0])
        v = (y - self.ylim[0]) / (self.ylim[1] - self.ylim[0])
        return bx0 + u * (bx1 - bx0), by1 - v * (by1 - by0)

    def line(self, xs, ys, color, width: int = 2) -> None:
        points = [self.px(x, y) for x, y in zip(xs, ys)]
        if len(points) == 1:
            self.points(xs, ys, color)
        elif points:
            self.draw.line(points, fill=color, width=width)

    def points(self, xs, ys, color, radius: int = 3) -> None:
        for x, y in zip(xs, ys):
            u, v = self.px(x, y)
            self.draw.ellipse((u - radius, v - radius, u + radius, v + radius), fill=color)

    def span(self, x0: float, x1: float, y0: float, y1: float, color) -> None:
        (u0, v0), (u1, v1) = self.px(x0, y1), self.px(x1, y0)
        self.draw.rectangle((u0, v0, max(u1, u0 + 1), v1), fill=color)

    def legend(self, entries: Sequence[tuple[str, tuple[int, int, int]]]) -> None:
        bx0, by0, _, _ = self.box
        for k, (label, color) in enumerate(entries):
            y = by0 + 4 + 12 * k
            self.draw.rectangle((bx0 + 4, y + 2, bx0 + 12, y + 10), fill=color)
            self.draw.text((bx0 + 16, y), str(label)[:28], fill="black", font=self.font)


def _mpl_color(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    return tuple(c / 255 for c in rgb)


# ------------------------------------------------------------------------------------------------------- figures


def pca_rgb(embeddings: Sequence[torch.Tensor | np.ndarray]) -> list[np.ndarray]:
    """Joint 3-component PCA of several token-embedding volumes → RGB.

    Args:
        embeddings: per level float `(d, T', H_l, W_l)` (same `d`).

    Returns:
        Per level float `(T', H_l, W_l, 3)` in [0, 1] (each component scaled by its 1st-99th percentile range
        over all levels, so colours are comparable across levels).
    """
    arrays = [_as_numpy(e).astype(np.float64) for e in embeddings]
    if not arrays or any(a.ndim != 4 for a in arrays) or len({a.shape[0] for a in arrays}) != 1:
        raise ValueError(f"embeddings must be (d, T', H_l, W_l) volumes with one d, got "
                         f"{[a.shape for a in arrays]}")
    d = arrays[0].shape[0]
    flat = np.concatenate([a.reshape(d, -1).T for a in arrays])  # (N, d)
    centred = flat - flat.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    comps = np.zeros((d, 3))
    comps[:, : min(3, vt.shape[0])] = vt[:3].T
    proj = centred @ comps  # (N, 3)
    lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
    proj = np.clip((proj - lo) / np.where(hi - lo > 1e-12, hi - lo, 1.0), 0, 1)
    out, start = [], 0
    for a in arrays:
        n = int(np.prod(a.shape[1:]))
        out.append(proj[start : start + n].reshape(*a.shape[1:], 3))
        start += n
    return out


def plot_pca_maps(
    embeddings: Sequence[torch.Tensor | np.ndarray],
    path: str | os.PathLike,
    video: torch.Tensor | np.ndarray | None = None,
    cell: int = 64,
    title: str | None = None,
) -> Path:
    """Per-level PCA maps of token embeddings (paper Fig. 4).

    Args:
        embeddings: per level (shallow → deep) float `(d_s, T', H_l, W_l)` token embeddings
            (`evaluation.semantic.token_embeddings` of one clip).
        path: output `.png`.
        video: optional float `(3, T, H, W)` in [-1, 1], `T = 4(T' - 1) + 1`: adds a top row with the last input frame
            of each latent frame (frame `4t'`).
        cell: pixel height of each map (nearest upsampling, so tokens stay visible).
        title: optional title line.

    Returns:
        The written path. Image size: width `88 + T' (w_cell + 2)`, height `18 (+18 with title) + rows (cell + 2)`.
    """
    out = _prepare_path(path)
    maps = pca_rgb(embeddings)
    num_latent = maps[0].shape[0]
    if any(m.shape[0] != num_latent for m in maps):
        raise ValueError(f"levels disagree on T': {[m.shape[0] for m in maps]}")
    rows, labels = [], []
    if video is not None:
        frames = _video_frames(video)
        if frames.shape[0] != 4 * (num_latent - 1) + 1:
            raise ValueError(f"video has {frames.shape[0]} frames; {num_latent} latent frames need "
                             f"{4 * (num_latent - 1) + 1}")
        rows.append([frames[4 * t] for t in range(num_latent)])
        labels.append("input")
    aspect = maps[0].shape[2] / maps[0].shape[1]
    for level, m in enumerate(maps):
        u8 = (m * 255).round().astype(np.uint8)
        rows.append([u8[t] for t in range(num_latent)])
        labels.append(f"q{level + 1} {m.shape[1]}x{m.shape[2]}")
    if video is not None:  # frames and maps share the cell size; resize frames to the maps' aspect
        rows[0] = [np.asarray(Image.fromarray(f).resize((round(cell * aspect), cell), Image.BILINEAR))
                   for f in rows[0]]
    return _image_grid(rows, out, row_labels=labels, col_labels=[f"t'={t}" for t in range(num_latent)], cell=cell,
                       title=title)


def _pca_2d(embeddings: np.ndarray) -> np.ndarray:
    centred = embeddings - embeddings.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = np.zeros((embeddings.shape[0], 2))
    xy[:, : min(2, vt.shape[0])] = centred @ vt[:2].T
    return xy


def _tsne_2d(embeddings: np.ndarray, perplexity: float | None, seed: int) -> tuple[np.ndarray, str]:
    """2-D t-SNE coordinates and a description of the method; PCA when t-SNE cannot run."""
    n = embeddings.shape[0]
    if n < 4:  # t-SNE needs perplexity < N and a useful perplexity >= 2
        return _pca_2d(embeddings), "PCA (too few clips for t-SNE)"
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        logger.warning("scikit-learn is not installed: plotting a PCA projection instead of t-SNE")
        return _pca_2d(embeddings), "PCA (no scikit-learn)"
    perp = float(perplexity) if perplexity is not None else min(30.0, max(2.0, (n - 1) / 3))
    if not 0 < perp < n:
        raise ValueError(f"perplexity must be in (0, {n}) for {n} clips, got {perp}")
    # Exact gradients are O(N²) but faster than Barnes-Hut below a few hundred points (and not approximate).
    method = "exact" if n <= EXACT_TSNE_MAX else "barnes_hut"
    xy = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed, method=method).fit_transform(embeddings)
    return np.asarray(xy, dtype=np.float64), f"t-SNE (perplexity {perp:.3g})"


def plot_tsne(
    embeddings: torch.Tensor | np.ndarray,
    labels: Sequence[str],
    path: str | os.PathLike,
    perplexity: float | None = None,
    seed: int = 0,
    title: str = "clip embeddings",
    size: tuple[int, int] = (640, 480),
) -> Path:
    """t-SNE of clip embeddings coloured by class (paper Fig. 6).

    Args:
        embeddings: float `(N, d)` (e.g. `evaluation.semantic.clip_embedding`), N >= 1.
        labels: `N` class names; the `12` most frequent get colours and a legend entry, the rest are grey "other".
        path: output `.png`.
        perplexity: t-SNE perplexity in (0, N); default `min(30, max(2, (N - 1) / 3))`. Fewer than 4 points are
            projected with PCA instead (as without scikit-learn); the title names the method.
        seed: t-SNE random state.
        size: image `(width, height)` in pixels.

    Returns:
        The written path.
    """
    out = _prepare_path(path)
    emb = _as_numpy(embeddings).astype(np.float64)
    if emb.ndim != 2 or emb.shape[0] < 1:
        raise ValueError(f"embeddings must be (N, d) with N >= 1, got shape {emb.shape}")
    if len(labels) != emb.shape[0]:
        raise ValueError(f"got {len(labels)} labels for {emb.shape[0]} embeddings")
    xy, method = _tsne_2d(emb, perplexity, seed)
    ranked = [label for label, _ in Counter(labels).most_common(MAX_LEGEND)]
    colors = {label: PALETTE[i] for i, label in enumerate(ranked)}
    groups = ranked + (["other"] if len(set(labels)) > len(ranked) else [])
    point_color = [colors.get(label, OTHER_COLOR) for label in labels]
    heading = f"{title}: {method}, {emb.shape[0]} clips"
    plt = _pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
        for group in groups:
            idx = [i for i, label in enumerate(labels) if (label if label in colors else "other") == group]
            ax.scatter(xy[idx, 0], xy[idx, 1], s=18, color=_mpl_color(colors.get(group, OTHER_COLOR)), label=group)
        ax.set_title(heading, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=6, loc="best", markerscale=0.8)
        fig.savefig(out, dpi=DPI)
        plt.close(fig)
        return out
    canvas = Image.new("RGB", size, "white")
    pad = 0.05 * max(np.ptp(xy[:, 0]), np.ptp(xy[:, 1]), 1e-6)
    ax = _PilAxes(ImageDraw.Draw(canvas), (0, 0, size[0], size[1]), (xy[:, 0].min() - pad, xy[:, 0].max() + pad),
                  (xy[:, 1].min() - pad, xy[:, 1].max() + pad), heading)
    for (x, y), color in zip(xy, point_color):
        ax.points([x], [y], color)
    ax.legend([(g, colors.get(g, OTHER_COLOR)) for g in groups])
    canvas.save(out)
    return out


def plot_codebook_usage(
    ids: Sequence[torch.Tensor | np.ndarray | Sequence[torch.Tensor]],
    path: str | os.PathLike,
    codebook_size: int = 2**16,
    bins: int = 64,
    size: tuple[int, int] | None = None,
) -> Path:
    """Per-level histograms of code indices.

    Args:
        ids: per level, int code indices in `[0, codebook_size)` of any shape (or a list of such tensors, e.g. one
            per clip).
        path: output `.png`.
        codebook_size: number of codes (`2**codebook_dim`).
        bins: histogram bins over `[0, codebook_size)`.
        size: image `(width, height)`; default `(640, 150 · levels)`.

    Returns:
        The written path. Each panel's title gives the level's tokens, distinct codes (share of the codebook) and
        code perplexity.
    """
    out = _prepare_path(path)
    if not ids:
        raise ValueError("ids must hold at least one level")
    if bins < 1 or codebook_size < 1:
        raise ValueError(f"bins and codebook_size must be >= 1, got bins={bins}, codebook_size={codebook_size}")
    levels = []
    for level, level_ids in enumerate(ids):
        parts = level_ids if isinstance(level_ids, (list, tuple)) else [level_ids]
        flat = np.concatenate([_as_numpy(p).astype(np.int64).ravel() for p in parts]) if parts else np.zeros(0, int)
        if flat.size == 0:
            raise ValueError(f"level {level} has no code indices")
        if flat.min() < 0 or flat.max() >= codebook_size:
            raise ValueError(f"level {level} has code indices outside [0, {codebook_size}): "
                             f"[{flat.min()}, {flat.max()}]")
        counts = np.bincount(flat, minlength=codebook_size)
        p = counts[counts > 0] / flat.size
        perplexity = float(np.exp(-(p * np.log(p)).sum()))
        hist, edges = np.histogram(flat, bins=bins, range=(0, codebook_size))
        levels.append((hist, edges, f"q{level + 1}: {flat.size} tokens, {int((counts > 0).sum())} codes "
                                    f"({(counts > 0).mean():.2%}), perplexity {perplexity:.1f}"))
    width, height = size if size is not None else (640, 150 * len(levels))
    plt = _pyplot()
    if plt is not None:
        fig, axes = plt.subplots(len(levels), 1, figsize=(width / DPI, height / DPI), dpi=DPI, squeeze=False)
        for ax, (hist, edges, label) in zip(axes[:, 0], levels):
            ax.bar(edges[:-1], hist, width=np.diff(edges), align="edge", color=_mpl_color(PALETTE[0]))
            ax.set_title(label, fontsize=8)
            ax.set_xlim(0, codebook_size)
            ax.tick_params(labelsize=6)
        axes[-1, 0].set_xlabel("code index", fontsize=7)
        fig.tight_layout()
        fig.savefig(out, dpi=DPI)
        plt.close(fig)
        return out
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    panel = height // len(levels)
    for k, (hist, edges, label) in enumerate(levels):
        ax = _PilAxes(draw, (0, k * panel, width, (k + 1) * panel), (0, codebook_size), (0, max(hist.max(), 1)),
                      label)
        for count, lo, hi in zip(hist, edges[:-1], edges[1:]):
            if count:
                ax.span(lo, hi, 0, count, PALETTE[0])
    canvas.save(out)
    return out


def plot_reconstruction(
    video: torch.Tensor | np.ndarray,
    reconstruction: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    max_frames: int = 8,
    cell: int | None = None,
    title: str | None = None,
) -> Path:
    """Input frames over reconstructed frames.

    Args:
        video, reconstruction: float `(3, T, H, W)` in [-1, 1], same shape.
        path: output `.png`.
        max_frames: at most this many frames, evenly spaced (first and last included).
        cell: frame height in pixels (default: H).
        title: optional title line (the per-frame PSNR in dB heads each column).

    Returns:
        The written path.
    """
    out = _prepare_path(path)
    a, b = _video_frames(video, "video"), _video_frames(reconstruction, "reconstruction")
    if a.shape != b.shape:
        raise ValueError(f"video {a.shape} and reconstruction {b.shape} differ in shape (as (T, H, W, 3))")
    frames = _pick_frames(a.shape[0], max_frames)
    psnrs = []
    for t in frames:
        mse = np.mean((a[t].astype(np.float64) - b[t].astype(np.float64)) ** 2)
        psnrs.append(f"{10 * math.log10(255**2 / mse):.1f}dB" if mse > 0 else "inf")
    return _image_grid([[a[t] for t in frames], [b[t] for t in frames]], out, row_labels=["input", "reconstruction"],
                       col_labels=[f"t={t} {p}" for t, p in zip(frames, psnrs)], cell=cell, title=title)


def overlay_mask(frame: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = MASK_COLOR,
                 alpha: float = 0.5) -> np.ndarray:
    """uint8 `(H, W, 3)` frame with bool `(H, W)` mask tinted (`alpha` blend) and outlined in `color`."""
    m = np.asarray(mask, dtype=bool)
    if m.shape != frame.shape[:2]:
        raise ValueError(f"mask {m.shape} does not match frame {frame.shape[:2]}")
    out = frame.astype(np.float32)
    tint = np.asarray(color, dtype=np.float32)
    out[m] = (1 - alpha) * out[m] + alpha * tint
    padded = np.pad(m, 1, mode="edge")
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    out[m & ~interior] = tint
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def plot_segmentation_overlay(
    video: torch.Tensor | np.ndarray,
    masks: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    ground_truth: torch.Tensor | np.ndarray | None = None,
    max_frames: int = 8,
    cell: int | None = None,
    title: str | None = None,
) -> Path:
    """Predicted masks tinted red on the frames; ground truth (green) in a second row if given.

    Args:
        video: float `(3, T, H, W)` in [-1, 1].
        masks: bool `(T, H, W)` predicted masks.
        path: output `.png`.
        ground_truth: optional bool `(T, H, W)`.
        max_frames, cell, title: as `plot_reconstruction`.

    Returns:
        The written path.
    """
    out = _prepare_path(path)
    frames = _video_frames(video)
    pred = _as_numpy(masks).astype(bool)
    if pred.shape != frames.shape[:3]:
        raise ValueError(f"masks {pred.shape} must be (T, H, W) = {frames.shape[:3]}")
    picks = _pick_frames(frames.shape[0], max_frames)
    rows = [[overlay_mask(frames[t], pred[t]) for t in picks]]
    labels = ["prediction"]
    if ground_truth is not None:
        gt = _as_numpy(ground_truth).astype(bool)
        if gt.shape != pred.shape:
            raise ValueError(f"ground_truth {gt.shape} must match masks {pred.shape}")
        rows.append([overlay_mask(frames[t], gt[t], GT_MASK_COLOR) for t in picks])
        labels.append("ground truth")
    return _image_grid(rows, out, row_labels=labels, col_labels=[f"t={t}" for t in picks], cell=cell, title=title)


def plot_localization_timeline(
    frame_scores: Sequence[float] | np.ndarray,
    path: str | os.PathLike,
    fps: float = 1.0,
    threshold: float | None = None,
    predicted: Sequence[Sequence[float]] = (),
    ground_truth: Sequence[Sequence[float]] = (),
    curve: Sequence[float] | np.ndarray | None = None,
    curve_window: int = 1,
    title: str = "",
    size: tuple[int, int] = (720, 300),
) -> Path:
    """Localization timeline (paper Fig. 16): per-frame similarity, threshold, predicted and GT segments.

    Args:
        frame_scores: `(T,)` per-frame text-video similarity.
        path: output `.png`.
        fps: frames per second (the x axis is in seconds; frame `t` is at `t / fps`).
        threshold: τ, drawn as a horizontal line (on the smoothed curve's scale).
        predicted, ground_truth: `[start_s, end_s]` segments, drawn as bars below the curve (GT blue, prediction
            orange).
        curve: optional smoothed window scores `(num_windows,)`, window `i` drawn at the centre of frames
            `[i, i + curve_window - 1]` (stride 1).
        curve_window: the window length of `curve` in frames.
        title: the query, typically.
        size: image `(width, height)` in pixels.

    Returns:
        The written path.
    """
    out = _prepare_path(path)
    s = np.asarray(_as_numpy(frame_scores), dtype=np.float64).ravel()
    if s.size == 0 or not np.isfinite(s).all():
        raise ValueError(f"frame_scores must be a non-empty finite sequence, got {s.size} values")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    times = np.arange(s.size) / fps
    smoothed = None
    if curve is not None:
        c = np.asarray(_as_numpy(curve), dtype=np.float64).ravel()
        smoothed = ((np.arange(c.size) + (curve_window - 1) / 2) / fps, c)
    for name, segs in (("predicted", predicted), ("ground_truth", ground_truth)):
        for seg in segs:
            if len(seg) != 2 or seg[0] > seg[1]:
                raise ValueError(f"{name} segments must be [start, end] with start <= end, got {seg!r}")
    values = [s] + ([smoothed[1]] if smoothed is not None else []) + ([[threshold]] if threshold is not None else [])
    lo, hi = float(min(np.min(v) for v in values)), float(max(np.max(v) for v in values))
    margin = 0.1 * (hi - lo if hi > lo else 1.0)
    t_end = max(times[-1], max((seg[1] for seg in list(predicted) + list(ground_truth)), default=0.0)) + 1 / fps
    plt = _pyplot()
    if plt is not None:
        fig, (ax, bars) = plt.subplots(2, 1, figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, sharex=True,
                                       gridspec_kw={"height_ratios": [3, 1]})
        ax.plot(times, s, "-o", ms=3, color=_mpl_color(PALETTE[7]), label="frame similarity")
        if smoothed is not None:
            ax.plot(*smoothed, "-s", lw=2, ms=4, color=_mpl_color(PALETTE[4]), label=f"window mean (K={curve_window})")
        if threshold is not None:
            ax.axhline(threshold, ls="--", color="black", lw=1, label=f"τ = {threshold:.3g}")
        ax.set_ylim(lo - margin, hi + margin)
        ax.set_ylabel("cosine", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6, loc="best")
        ax.tick_params(labelsize=6)
        for row, (segs, color) in enumerate(((ground_truth, GT_COLOR), (predicted, PRED_COLOR))):
            for a, b in segs:
                bars.broken_barh([(a, max(b - a, 0.5 / fps))], (1 - row - 0.4, 0.8), color=_mpl_color(color))
        bars.set_yticks([1, 0])
        bars.set_yticklabels(["GT", "pred"], fontsize=7)
        bars.set_ylim(-0.6, 1.6)
        bars.set_xlim(0, t_end)
        bars.set_xlabel("time (s)", fontsize=7)
        bars.tick_params(labelsize=6)
        fig.tight_layout()
        fig.savefig(out, dpi=DPI)
        plt.close(fig)
        return out
    width, height = size
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    split = int(height * 0.7)
    ax = _PilAxes(draw, (0, 0, width, split), (0, t_end), (lo - margin, hi + margin), title)
    ax.line(times, s, PALETTE[7])
    ax.points(times, s, PALETTE[7], radius=2)
    legend = [("frame similarity", PALETTE[7])]
    if smoothed is not None:
        ax.line(*smoothed, PALETTE[4], width=3)
        legend.append((f"window mean (K={curve_window})", PALETTE[4]))
    if threshold is not None:
        ax.line([0, t_end], [threshold, threshold], (0, 0, 0), width=1)
        legend.append((f"threshold {threshold:.3g}", (0, 0, 0)))
    ax.legend(legend)
    bars = _PilAxes(draw, (0, split, width, height), (0, t_end), (-0.6, 1.6), "GT (top, blue) / prediction",
                    y_labels=False)
    for row, (segs, color) in enumerate(((ground_truth, GT_COLOR), (predicted, PRED_COLOR))):
        for a, b in segs:
            bars.span(a, max(b, a + 0.5 / fps), 1 - row - 0.4, 1 - row + 0.4, color)
    canvas.save(out)
    return out


# ------------------------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `pyratok-eval visualize` (the CLI adds --data, --out, --max-clips, --size, ...)."""
    parser.add_argument("--figures-dir", default=None,
                        help="output folder (default: <out stem>_figures beside --out, else ./pyratok_figures)")
    parser.add_argument("--clip-index", type=int, default=0,
                        help="which clip (sorted by key) the per-clip figures show; the first annotated one at or "
                             "after it for segmentation / localization")
    parser.add_argument("--level", type=int, default=0,
                        help="pyramid level of the segmentation overlay (0: finest grid; -1: the paper's q^(L))")
    parser.add_argument("--loc-window", type=int, default=None,
                        help="localization window K in frames (default: evaluation.localization's, clipped to T)")
    parser.add_argument("--max-frames", type=int, default=8, help="frames per strip")
    parser.add_argument("--cell", type=int, default=96, help="pixel height of each frame / map in the grids")


def _batches(clips: list, batch_size: int = 8) -> list[list]:
    """Consecutive clips of equal shape, at most `batch_size` per batch."""
    batches: list[list] = []
    for clip in clips:
        if batches and len(batches[-1]) < batch_size and batches[-1][0].video.shape == clip.video.shape:
            batches[-1].append(clip)
        else:
            batches.append([clip])
    return batches


def _load_one(split_dir: str | os.PathLike, geometry: dict, keys: list[str], index: int):
    """The `index`-th (clamped) of `keys` present in the split's shards, as an `EvalClip`; None if there is none."""
    from .clips import ClipReader

    reader = ClipReader(split_dir, **geometry)
    present = [k for k in keys if k in reader.index]
    if not present:
        return None
    reader.keys = [present[min(index, len(present) - 1)]]
    return next(iter(reader), None)


def _figures_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "figures_dir", None):
        return Path(args.figures_dir)
    if getattr(args, "out", None):
        out = Path(args.out)
        return out.parent / f"{out.stem}_figures"
    return Path("pyratok_figures")


@torch.no_grad()
def run(args: argparse.Namespace, model: torch.nn.Module) -> dict:
    """Draw every figure for the split `args.data` into the figures folder; returns `{figure name: path}`.

    Clips: up to `--max-clips` (default 32), evenly spread over the split's sorted keys (so every kind of clip shows).
    Figures: `pca_levels` and `reconstruction` (the selected clip at `--clip-index`), `tsne` (the selected clips,
    label = the sample json's `class`, embedded without text), `codebook_usage` (the selected clips, captions as
    prompts), `segmentation` (the `--clip-index`-th video of the VIS annotations, its first object, CRF-refined at
    `--level`, the query as prompt) and `localization` (the `--clip-index`-th annotated video of the localization
    file; level 0 frame descriptors without text, its first event's label as the query, `--loc-window`, τ = the
    curve's mean as `evaluation.localization`). A figure whose annotations the split lacks is left out (logged).
    """
    from .clips import (
        LOCALIZATION_FILE,
        VIS_FILE,
        ClipReader,
        load_localization_annotations,
        load_vis_annotations,
        split_folder,
        vis_instances,
    )
    from .localization import (
        DEFAULT_THRESHOLD,
        DEFAULT_WINDOW,
        latent_to_frame_scores,
        localize,
        resolve_threshold,
        smooth_scores,
    )
    from .segmentation import segment_video
    from .semantic import clip_embedding, encode_codes, frame_descriptors, text_embeddings, token_embeddings

    model.eval()
    folder = _figures_dir(args)
    folder.mkdir(parents=True, exist_ok=True)
    max_clips = args.max_clips if getattr(args, "max_clips", None) is not None else 32
    geometry = {"num_frames": getattr(args, "num_frames", None), "size": getattr(args, "size", None)}
    reader = ClipReader(args.data, **geometry)
    if max_clips < len(reader.keys):
        reader.keys = [reader.keys[int(i)] for i in np.linspace(0, len(reader.keys) - 1, max_clips).round()]
    clips = list(reader)
    if not clips:
        raise ValueError(f"no decodable clips in {args.data}")
    if not 0 <= args.clip_index < len(clips):
        raise ValueError(f"--clip-index {args.clip_index} is out of range for {len(clips)} clips")
    device = next(model.parameters()).device
    cell, max_frames = args.cell, args.max_frames
    figures: dict[str, str] = {}
    clip = clips[args.clip_index]
    prompt = clip.caption or None

    codes = encode_codes(model, clip.video[None], prompt)
    embeds = [token_embeddings(model, c)[0] for c in codes]
    figures["pca_levels"] = str(plot_pca_maps(embeds, folder / "pca_levels.png", video=clip.video, cell=cell,
                                              title=f"{clip.key}: {clip.caption[:80]}"))

    embeddings, ids = [], [[] for _ in range(model.core.quantizer.num_levels)]
    for batch in _batches(clips):
        videos = torch.stack([c.video for c in batch])
        embeddings.append(clip_embedding(model, videos).cpu())  # no text: the class must come from the video
        tokens = model.tokenize(videos.to(device), text=[c.caption or None for c in batch])
        for level, level_ids in enumerate(tokens.ids):
            ids[level].append(level_ids.cpu())
    labels = [str(c.meta.get("class") or c.caption or "?") for c in clips]
    figures["tsne"] = str(plot_tsne(torch.cat(embeddings), labels, folder / "tsne.png",
                                    seed=getattr(args, "seed", 0)))
    figures["codebook_usage"] = str(plot_codebook_usage(ids, folder / "codebook_usage.png",
                                                        codebook_size=2**model.config.codebook_dim))

    recon = model.detokenize(model.tokenize(clip.video[None].to(device), text=prompt))[0].cpu()
    figures["reconstruction"] = str(plot_reconstruction(clip.video, recon, folder / "reconstruction.png",
                                                        max_frames=max_frames, cell=cell, title=clip.key))

    split = split_folder(args.data)
    if (split / VIS_FILE).is_file():
        vis = load_vis_annotations(split / VIS_FILE)
        keys = sorted(k for k, v in vis["videos_by_name"].items() if vis["annotations_by_video"][v["id"]])
        target = _load_one(args.data, geometry, keys, args.clip_index)
        if target is not None:
            inst = vis_instances(vis, target.key)[0]
            gt = target.resize.apply_to_masks(inst["masks"][: target.num_frames])
            seg = segment_video(model, target.video, inst["name"], level=args.level)
            figures["segmentation"] = str(plot_segmentation_overlay(
                target.video, seg.mask.cpu(), folder / "segmentation.png", ground_truth=gt, max_frames=max_frames,
                cell=cell, title=f"{target.key}: '{inst['name']}' (level {args.level})"))
    else:
        logger.info("no %s in %s: skipping the segmentation figure", VIS_FILE, split)
    if (split / LOCALIZATION_FILE).is_file():
        database = load_localization_annotations(split / LOCALIZATION_FILE)["database"]
        keys = sorted(k for k, v in database.items() if v["annotations"])
        target = _load_one(args.data, geometry, keys, args.clip_index)
        if target is not None:
            entry = database[target.key]
            event = entry["annotations"][0]
            fps = float(entry["fps"]) if entry.get("fps") else target.fps
            desc = frame_descriptors(model, target.video[None], level=0)[0]  # (T', d_s)
            latent_scores = (desc @ text_embeddings(model, [event["label"]])[0].to(desc.device)).cpu()
            window = args.loc_window if args.loc_window is not None else DEFAULT_WINDOW
            frame_scores = latent_to_frame_scores(latent_scores, target.num_frames)
            curve, k = smooth_scores(frame_scores, window)
            tau = resolve_threshold(curve, DEFAULT_THRESHOLD)
            segments = localize(latent_scores, target.num_frames, fps, window=window, max_segments=3)
            same = [a["segment"] for a in entry["annotations"] if a["label"] == event["label"]]
            figures["localization"] = str(plot_localization_timeline(
                frame_scores, folder / "localization.png", fps=fps, threshold=tau,
                predicted=[s["segment"] for s in segments], ground_truth=same, curve=curve, curve_window=k,
                title=f"{target.key}: '{event['label']}'"))
    else:
        logger.info("no %s in %s: skipping the localization figure", LOCALIZATION_FILE, split)
    return figures


__all__ = [
    "add_arguments",
    "overlay_mask",
    "pca_rgb",
    "plot_codebook_usage",
    "plot_localization_timeline",
    "plot_pca_maps",
    "plot_reconstruction",
    "plot_segmentation_overlay",
    "plot_tsne",
    "run",
]

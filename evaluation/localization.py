"""Zero-shot temporal action localization from the tokenizer's shallowest codes (paper appendix B.3).

Per video and text query:

1. Frame descriptors: the level-0 (`q^(1)`) token embeddings `W_c q`, mean-pooled over space per latent frame and
   normalised (`evaluation.semantic.frame_descriptors`); the query's normalised `P(e_t)`; cosine similarity per latent
   frame. Latent frame `t'` covers input frame 0 (`t' = 0`) or frames `4t' - 3 .. 4t'`; each input frame takes its
   latent frame's score.
2. Smoothing: windows of `K` frames (default 25, as the paper; clipped to the clip length) at stride 1, each scored by
   the mean of its frame scores: `S_t = mean(s_t .. s_{t+K-1})`.
3. Decoding: `S_t >= τ` gives a binary sequence; its maximal runs of windows are candidate segments, scored by the mean
   of their `S_t`; the best run is taken, removed, and the next best taken, up to `max_segments`; a run covers the
   frames of its windows `[t_first, t_last + K - 1]`, and overlapping frame spans are merged.
4. A segment `[f0, f1]` (frames) is `[f0 / fps, f1 / fps]` seconds, the ground truth's convention
   (`training/make_shards.py`: an event's segment is `[start_frame / fps, end_frame / fps]`).

`τ` (`threshold`): a float is a fixed similarity value (the paper's choice; it depends on the model's similarity
scale); `"mean"` (default) is the mean of each curve, `"mean+std"` (or `"mean+<k>std"`) adds `k` standard deviations.
Why `"mean"`: on a step-shaped curve (high on the event, low elsewhere) the mean always separates the two levels,
while mean + std lies above the high level once the event covers more than half the clip, and a fixed `τ` must be
tuned per model.

Queries: by default (`negatives=True`) every label of the annotation file's label set is run against every video, so
false positives on videos without that action count and mAP means something; `negatives=False` only runs each video's
own labels (then mAP measures localization alone). Videos are encoded without text (`condition_on_query=False`, one
encoder pass per video); `condition_on_query=True` encodes each video once per query, with the query as the prompt.

Evaluation: ActivityNet mAP at tIoU 0.3:0.1:0.7 and their mean (`evaluation.metrics.detection_map`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .clips import LOCALIZATION_FILE, TEMPORAL_CHUNK, ClipReader, load_localization_annotations, split_folder
from .metrics import DEFAULT_TIOU_THRESHOLDS, detection_map
from .semantic import _core, frame_descriptors, text_embeddings

DEFAULT_WINDOW = 25
DEFAULT_THRESHOLD = "mean"
_RELATIVE = re.compile(r"^mean(?:\+(\d*\.?\d*)std)?$")


def latent_to_frame_scores(latent_scores: np.ndarray | torch.Tensor, num_frames: int) -> np.ndarray:
    """Spread per-latent-frame scores over input frames (frame 0 ← t' = 0; frames 4t'-3 .. 4t' ← t').

    Args:
        latent_scores: `(T', ...)` scores.
        num_frames: `T = 4(T' - 1) + 1`.

    Returns:
        float64 `(T, ...)`.
    """
    scores = np.asarray(latent_scores.cpu() if isinstance(latent_scores, torch.Tensor) else latent_scores, np.float64)
    expected = (num_frames - 1) // TEMPORAL_CHUNK + 1
    if scores.ndim < 1 or scores.shape[0] != expected or (num_frames - 1) % TEMPORAL_CHUNK:
        raise ValueError(f"{num_frames} input frames need {expected} latent frames (T = 4k + 1), "
                         f"got scores of shape {scores.shape}")
    latent_of_frame = (np.arange(num_frames) + TEMPORAL_CHUNK - 1) // TEMPORAL_CHUNK  # 0, 1,1,1,1, 2,2,2,2, ...
    return scores[latent_of_frame]


def smooth_scores(frame_scores: np.ndarray, window: int = DEFAULT_WINDOW, stride: int = 1) -> tuple[np.ndarray, int]:
    """Sliding-window means of a 1-D score sequence.

    Args:
        frame_scores: `(T,)`.
        window: `K` frames per window (>= 1); clipped to `T`.
        stride: step between window starts (>= 1).

    Returns:
        `(S, K_eff)`: `S` float64 `(num_windows,)`, window `i` covering frames `[i * stride, i * stride + K_eff - 1]`,
        and the clipped window length.
    """
    s = np.asarray(frame_scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"frame_scores must be a non-empty 1-D sequence, got shape {s.shape}")
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    k = min(window, s.size)
    csum = np.concatenate([[0.0], np.cumsum(s)])
    starts = np.arange(0, s.size - k + 1, stride)
    return (csum[starts + k] - csum[starts]) / k, k


def resolve_threshold(curve: np.ndarray, threshold: float | str) -> float:
    """τ for one smoothed curve: a fixed float, `"mean"`, `"mean+std"` or `"mean+<k>std"` (e.g. `"mean+0.5std"`)."""
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        return float(threshold)
    match = _RELATIVE.match(str(threshold).replace(" ", ""))
    if not match:
        raise ValueError(f"threshold must be a number, 'mean', 'mean+std' or 'mean+<k>std', got {threshold!r}")
    k = match.group(1)
    factor = 0.0 if k is None else (1.0 if k == "" else float(k))
    return float(curve.mean() + factor * curve.std())


def extract_segments(
    curve: np.ndarray, window: int, stride: int, threshold: float, max_segments: int = 1
) -> list[tuple[int, int, float]]:
    """Decode a smoothed curve into frame segments (module docstring, step 3).

    Args:
        curve: `(num_windows,)` window scores from `smooth_scores`.
        window: the effective window length `K_eff`.
        stride: window stride.
        threshold: τ; windows with `S >= τ` are on.
        max_segments: runs to take, best mean first (>= 1).

    Returns:
        `[(first_frame, last_frame, score)]`, frames inclusive, sorted by descending score; score = mean `S` of the
        segment's windows.
    """
    if max_segments < 1:
        raise ValueError(f"max_segments must be >= 1, got {max_segments}")
    on = np.concatenate([[False], curve >= threshold, [False]])
    edges = np.flatnonzero(on[1:] != on[:-1])
    runs = [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]  # window index ranges
    # Taking the best run, removing it and repeating = taking runs by descending mean (they are disjoint).
    runs.sort(key=lambda r: -curve[r[0] : r[1] + 1].mean())
    chosen = runs[:max_segments]
    spans = sorted((a * stride, b * stride + window - 1, list(range(a, b + 1))) for a, b in chosen)
    merged: list[list] = []
    for first, last, windows in spans:
        if merged and first <= merged[-1][1]:  # frame spans of two runs overlap: merge them
            merged[-1][1] = max(merged[-1][1], last)
            merged[-1][2] += windows
        else:
            merged.append([first, last, windows])
    out = [(first, last, float(curve[windows].mean())) for first, last, windows in merged]
    return sorted(out, key=lambda seg: -seg[2])


def localize(
    latent_scores: np.ndarray | torch.Tensor,
    num_frames: int,
    fps: float,
    window: int = DEFAULT_WINDOW,
    stride: int = 1,
    threshold: float | str = DEFAULT_THRESHOLD,
    max_segments: int = 1,
) -> list[dict]:
    """Latent-frame similarities of one query → scored segments in seconds.

    Returns:
        `[{"segment": [start_s, end_s], "frames": [first, last], "score"}]`, best first.
    """
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    frame_scores = latent_to_frame_scores(latent_scores, num_frames)
    curve, k = smooth_scores(frame_scores, window, stride)
    tau = resolve_threshold(curve, threshold)
    return [
        {"segment": [first / fps, last / fps], "frames": [first, last], "score": score}
        for first, last, score in extract_segments(curve, k, stride, tau, max_segments)
    ]


@torch.no_grad()
def evaluate_localization(
    model: torch.nn.Module,
    split_dir: str | os.PathLike,
    annotations: str | os.PathLike | None = None,
    max_clips: int | None = None,
    num_frames: int | None = None,
    size: int | tuple[int, int] | None = None,
    level: int = 0,
    window: int = DEFAULT_WINDOW,
    stride: int = 1,
    threshold: float | str = DEFAULT_THRESHOLD,
    max_segments: int = 3,
    negatives: bool = True,
    condition_on_query: bool = False,
    tiou_thresholds: Sequence[float] = DEFAULT_TIOU_THRESHOLDS,
    keep_predictions: bool = True,
) -> dict:
    """Zero-shot action localization mAP on an eval split (module docstring).

    Args:
        model: a LaPQ (`quantizer_mode="pyramid"`) `PyraTokModel`.
        split_dir: folder of `*.tar` eval shards.
        annotations: ActivityNet style JSON or THUMOS14 folder (`load_localization_annotations`); default
            `split_dir/annotations_localization.json`. Only videos present in both are evaluated.
        max_clips, num_frames, size: clip selection and geometry (`ClipReader`).
        level: pyramid level of the frame descriptors (0 = `q^(1)`, the paper's choice).
        window, stride, threshold, max_segments: decoding (module docstring).
        negatives: run every label against every video (True) or only each video's own labels.
        condition_on_query: encode each video with the query as its prompt (one pass per query).
        tiou_thresholds: mAP thresholds.
        keep_predictions: include every prediction in the report.

    Returns:
        `{"task", "num_videos", "num_labels", "num_ground_truth", "num_predictions", "missing_videos", "skipped",
        "settings": {...}, "metrics": {"mAP@0.3", ..., "average_mAP"}, "predictions": [{"video", "label", "segment",
        "frames", "score"}]}`.
    """
    core = _core(model)
    model.eval()
    if not isinstance(max_segments, int) or max_segments < 1:
        raise ValueError(f"max_segments must be a positive int, got {max_segments!r}")
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    resolve_threshold(np.zeros(1), threshold)  # validate early
    ann_path = split_folder(split_dir) / LOCALIZATION_FILE if annotations is None else Path(annotations)
    database = load_localization_annotations(ann_path)["database"]
    reader = ClipReader(split_dir, max_clips=max_clips, num_frames=num_frames, size=size)
    missing = sorted(set(database) - set(reader.index))
    reader.keys = sorted(set(database) & set(reader.index))
    if not reader.keys:
        raise ValueError(f"no video of {ann_path} is in the shards of {split_dir}")

    clips = list(reader)
    if not clips:
        raise ValueError(f"no decodable clips in {split_dir} ({reader.stats.skipped} skipped)")
    labels = sorted({a["label"] for clip in clips for a in database[clip.key]["annotations"]})
    if not labels:
        raise ValueError(f"the evaluated videos of {ann_path} have no annotated actions")
    label_embeds = text_embeddings(model, labels)  # (L, d_s)
    level_index = level % core.quantizer.num_levels if isinstance(level, int) else level

    predictions, ground_truth = [], []
    for clip in clips:
        entry = database[clip.key]
        fps = float(entry["fps"]) if entry.get("fps") else clip.fps
        own = sorted({a["label"] for a in entry["annotations"]})
        queries = labels if negatives else own
        for ann in entry["annotations"]:
            ground_truth.append({"video": clip.key, "segment": ann["segment"], "label": ann["label"]})
        if not queries:
            continue
        x = clip.video[None]
        if condition_on_query:
            scores = {}
            for label in queries:
                desc = frame_descriptors(model, x, level=level, text=label)[0]  # (T', d_s)
                scores[label] = desc @ label_embeds[labels.index(label)].to(desc.device)
        else:
            desc = frame_descriptors(model, x, level=level)[0]  # (T', d_s)
            sims = desc @ label_embeds.to(desc.device).t()  # (T', L)
            scores = {label: sims[:, labels.index(label)] for label in queries}
        for label, latent_scores in scores.items():
            for seg in localize(latent_scores, clip.num_frames, fps, window, stride, threshold, max_segments):
                predictions.append({"video": clip.key, "label": label, **seg})

    metrics = detection_map(predictions, ground_truth, tiou_thresholds)
    return {
        "task": "localization",
        "num_videos": len(clips),
        "num_labels": len(labels),
        "num_ground_truth": len(ground_truth),
        "num_predictions": len(predictions),
        "missing_videos": missing,
        "skipped": reader.stats.as_dict()["skipped_keys"],
        "settings": {
            "annotations": str(ann_path),
            "level": level_index,
            "window": window,
            "effective_window": min(window, min(c.num_frames for c in clips)),
            "stride": stride,
            "threshold": threshold,
            "max_segments": max_segments,
            "negatives": negatives,
            "condition_on_query": condition_on_query,
            "tiou_thresholds": [float(t) for t in tiou_thresholds],
        },
        "metrics": metrics,
        "predictions": predictions if keep_predictions else [],
    }


__all__ = [
    "evaluate_localization",
    "extract_segments",
    "latent_to_frame_scores",
    "localize",
    "resolve_threshold",
    "smooth_scores",
]

"""Task metrics: temporal detection mAP (ActivityNet), mask IoU / DAVIS J, instance mask AP (COCO / YouTube-VIS),
retrieval recall@k. Pure numpy; PSNR / SSIM / LPIPS live in `training/losses.py`.

Protocols, and where they deviate from the reference code:

- `detection_map` follows ActivityNet's `eval_detection.py` (github.com/activitynet/ActivityNet, `Evaluation/`):
  classes are those of the ground truth; per class, predictions sorted by descending score (stable sort: ties keep
  input order, the reference uses an unstable sort), each matched to the highest-tIoU still unmatched ground truth of
  the same video with tIoU >= threshold; a second hit on a matched ground truth is a false positive; AP by all-point
  interpolation (`interpolated_ap`); mAP = mean over classes.
- `mask_ap` follows COCO / YouTube-VIS (`cocoapi` `COCOeval`, `youtubevos/cocoapi`): greedy matching by score at each
  IoU threshold 0.50:0.05:0.95, precision made monotone, sampled at 101 recall points, averaged. No `iscrowd` or
  area ranges, and no `maxDets` cap (synthetic data has neither crowds nor size buckets).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

DEFAULT_TIOU_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
COCO_IOU_THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)
COCO_RECALL_POINTS = np.linspace(0.0, 1.0, 101)


# ------------------------------------------------------------------------------------------------ temporal detection


def segment_iou(
    target: Sequence[float] | np.ndarray, candidates: Sequence[Sequence[float]] | np.ndarray
) -> np.ndarray:
    """Temporal IoU of one segment with many.

    Args:
        target: `(2,)` `[start, end]`, `start <= end` (any unit, e.g. seconds).
        candidates: `(N, 2)` `[start, end]` rows.

    Returns:
        float64 `(N,)` in [0, 1]. Two zero-length segments at the same instant have IoU 1, otherwise a zero union
        gives 0.
    """
    a = np.asarray(target, dtype=np.float64)
    b = np.asarray(candidates, dtype=np.float64).reshape(-1, 2) if len(candidates) else np.zeros((0, 2))
    if a.shape != (2,):
        raise ValueError(f"target must be a [start, end] pair, got shape {a.shape}")
    if a[0] > a[1] or (b[:, 0] > b[:, 1]).any():
        raise ValueError(f"segments must have start <= end, got target {a.tolist()} and candidates {b.tolist()[:5]}")
    inter = np.clip(np.minimum(a[1], b[:, 1]) - np.maximum(a[0], b[:, 0]), 0.0, None)
    union = (a[1] - a[0]) + (b[:, 1] - b[:, 0]) - inter
    same_point = (union <= 0) & (b[:, 0] == a[0]) & (b[:, 1] == a[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return np.where(same_point, 1.0, iou)


def interpolated_ap(precision: Sequence[float] | np.ndarray, recall: Sequence[float] | np.ndarray) -> float:
    """All-point interpolated average precision (VOC 2010+ / ActivityNet `interpolated_prec_rec`).

    Args:
        precision, recall: `(K,)` values after each of the K ranked predictions (recall non-decreasing, in [0, 1]).

    Returns:
        The area under the precision envelope `p_interp(r) = max_{r' >= r} p(r')`, in [0, 1]; 0 for K = 0.
    """
    prec = np.asarray(precision, dtype=np.float64).ravel()
    rec = np.asarray(recall, dtype=np.float64).ravel()
    if prec.shape != rec.shape:
        raise ValueError(f"precision and recall must have the same length, got {prec.size} and {rec.size}")
    if prec.size == 0:
        return 0.0
    if np.any(np.diff(rec) < -1e-12):
        raise ValueError("recall must be non-decreasing along the ranking")
    mprec = np.concatenate([[0.0], prec, [0.0]])
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def _check_entries(entries: Sequence[dict], name: str, need_score: bool) -> None:
    fields = ("video", "segment", "label", "score") if need_score else ("video", "segment", "label")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or any(f not in entry for f in fields):
            raise ValueError(f"{name}[{i}] must be a dict with {fields}, got {str(entry)[:200]}")
        seg = entry["segment"]
        if not (isinstance(seg, (list, tuple, np.ndarray)) and len(seg) == 2 and seg[0] <= seg[1]):
            raise ValueError(f"{name}[{i}] segment must be [start, end] with start <= end, got {seg!r}")
        if need_score and not math.isfinite(float(entry["score"])):
            raise ValueError(f"{name}[{i}] score must be finite, got {entry['score']!r}")


def _class_ap(predictions: list[dict], ground_truth: list[dict], tiou_thresholds: np.ndarray) -> np.ndarray:
    """AP of one class at each threshold, `(len(tiou_thresholds),)`."""
    npos = len(ground_truth)
    num_thr = len(tiou_thresholds)
    if not predictions:
        return np.zeros(num_thr)
    gt_by_video: dict[str, list[int]] = defaultdict(list)
    for j, gt in enumerate(ground_truth):
        gt_by_video[gt["video"]].append(j)
    gt_segments = np.asarray([gt["segment"] for gt in ground_truth], dtype=np.float64)
    order = np.argsort(-np.asarray([float(p["score"]) for p in predictions]), kind="stable")
    tp = np.zeros((num_thr, len(predictions)))
    fp = np.zeros((num_thr, len(predictions)))
    matched = np.zeros((num_thr, npos), dtype=bool)
    for rank, i in enumerate(order):
        pred = predictions[i]
        candidates = gt_by_video.get(pred["video"], [])
        if not candidates:
            fp[:, rank] = 1
            continue
        tiou = segment_iou(pred["segment"], gt_segments[candidates])
        by_tiou = np.argsort(-tiou, kind="stable")
        for t, thr in enumerate(tiou_thresholds):
            for k in by_tiou:
                if tiou[k] < thr:
                    break
                j = candidates[k]
                if matched[t, j]:
                    continue
                matched[t, j] = True
                tp[t, rank] = 1
                break
            if not tp[t, rank]:
                fp[t, rank] = 1
    tp_cum, fp_cum = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
    recall = tp_cum / npos
    precision = tp_cum / (tp_cum + fp_cum)
    return np.asarray([interpolated_ap(precision[t], recall[t]) for t in range(num_thr)])


def detection_ap_per_class(
    predictions: Sequence[dict],
    ground_truth: Sequence[dict],
    tiou_thresholds: Sequence[float] = DEFAULT_TIOU_THRESHOLDS,
) -> dict[str, np.ndarray]:
    """Per-class AP at each tIoU threshold (see `detection_map`): label → float64 `(len(tiou_thresholds),)`."""
    _check_entries(predictions, "predictions", need_score=True)
    _check_entries(ground_truth, "ground_truth", need_score=False)
    if not ground_truth:
        raise ValueError("ground_truth is empty: mAP is undefined without ground-truth segments")
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0 or ((thresholds <= 0) | (thresholds > 1)).any():
        raise ValueError(f"tiou_thresholds must be a non-empty list of values in (0, 1], got {tiou_thresholds!r}")
    gt_by_label: dict[str, list[dict]] = defaultdict(list)
    for gt in ground_truth:
        gt_by_label[gt["label"]].append(gt)
    pred_by_label: dict[str, list[dict]] = defaultdict(list)
    for pred in predictions:
        pred_by_label[pred["label"]].append(pred)
    return {
        label: _class_ap(pred_by_label.get(label, []), gts, thresholds) for label, gts in sorted(gt_by_label.items())
    }


def detection_map(
    predictions: Sequence[dict],
    ground_truth: Sequence[dict],
    tiou_thresholds: Sequence[float] = DEFAULT_TIOU_THRESHOLDS,
) -> dict[str, float]:
    """Temporal action detection mAP, ActivityNet protocol (module docstring).

    Args:
        predictions: `{"video", "segment": [s, e], "score", "label"}` dicts. Predictions of labels absent from the
            ground truth are ignored (as in ActivityNet).
        ground_truth: `{"video", "segment": [s, e], "label"}` dicts, non-empty.
        tiou_thresholds: tIoU thresholds in (0, 1].

    Returns:
        `{"mAP@0.3": ..., ..., "average_mAP": ...}`, values in [0, 1] (one key per threshold, formatted `{t:g}`).
    """
    thresholds = [float(t) for t in tiou_thresholds]
    per_class = detection_ap_per_class(predictions, ground_truth, thresholds)
    mean_ap = np.mean(np.stack(list(per_class.values())), axis=0)  # (num_thresholds,)
    out = {f"mAP@{t:g}": float(v) for t, v in zip(thresholds, mean_ap, strict=True)}
    out["average_mAP"] = float(mean_ap.mean())
    return out


# ----------------------------------------------------------------------------------------------------------- masks


def _as_bool(mask, name: str) -> np.ndarray:
    arr = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1), got dtype {arr.dtype}")
        arr = arr.astype(bool)
    return arr


def mask_iou(a, b) -> float:
    """IoU of two boolean masks of the same shape (any ndim); both empty → 1.0 (nothing to find, nothing found)."""
    a, b = _as_bool(a, "a"), _as_bool(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"masks must have the same shape, got {a.shape} and {b.shape}")
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def jaccard_j(pred_masks, gt_masks) -> float:
    """DAVIS region similarity J: the mean over frames of the per-frame mask IoU.

    Every frame counts (the DAVIS semi-supervised benchmark drops the first and last frames because the first is
    given; zero-shot text segmentation is given none). A frame where both masks are empty scores 1.

    Args:
        pred_masks, gt_masks: bool `(T, H, W)`.

    Returns:
        J in [0, 1].
    """
    pred, gt = _as_bool(pred_masks, "pred_masks"), _as_bool(gt_masks, "gt_masks")
    if pred.ndim != 3 or pred.shape != gt.shape:
        raise ValueError(f"pred_masks and gt_masks must both be (T, H, W), got {pred.shape} and {gt.shape}")
    return float(np.mean([mask_iou(p, g) for p, g in zip(pred, gt, strict=True)]))


def video_mask_iou(pred_masks, gt_masks) -> float:
    """YouTube-VIS spatio-temporal IoU of two instance tracks: summed intersections over summed unions across frames.

    Args:
        pred_masks, gt_masks: bool `(T, H, W)`.

    Returns:
        IoU in [0, 1]; both empty in every frame → 1.0.
    """
    pred, gt = _as_bool(pred_masks, "pred_masks"), _as_bool(gt_masks, "gt_masks")
    if pred.ndim != 3 or pred.shape != gt.shape:
        raise ValueError(f"pred_masks and gt_masks must both be (T, H, W), got {pred.shape} and {gt.shape}")
    return mask_iou(pred, gt)


def mask_ap(
    scores: Sequence[float] | np.ndarray,
    ious: Sequence[Sequence[float]] | np.ndarray,
    thresholds: Sequence[float] | np.ndarray = COCO_IOU_THRESHOLDS,
) -> dict[str, float]:
    """COCO-style instance AP for one category (YouTube-VIS mAP = the mean of this over categories).

    Pool all videos of the category into one ranking: a prediction's IoU with ground truth of another video is 0
    (build `ious` block-diagonal). For video instances, use `video_mask_iou` (spatio-temporal IoU, as YouTube-VIS).

    At each threshold: predictions by descending score (stable), each matched to the unmatched ground truth of
    highest IoU >= threshold (true positive) or not (false positive); precision is made non-increasing in recall and
    read at the 101 recall points 0:0.01:1 (0 beyond the reached recall); AP = the mean of those 101 values.

    Args:
        scores: `(P,)` confidence of each predicted instance.
        ious: `(P, G)` IoU of prediction p with ground-truth instance g, in [0, 1]; G >= 1.
        thresholds: IoU thresholds (default 0.50:0.05:0.95).

    Returns:
        `{"AP": mean over thresholds, "AP@0.50": ..., "AP@0.55": ..., ...}` (thresholds formatted `{t:.2f}`), each
        in [0, 1]. With no predictions every AP is 0.

    Raises:
        ValueError: no ground truth (G = 0; COCO marks such a category -1 and skips it: do that in the caller), bad
            shapes, or IoUs outside [0, 1].
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    m = np.asarray(ious, dtype=np.float64)
    if m.ndim == 1 and m.size == 0:
        m = m.reshape(0, 0)
    if m.ndim != 2 or m.shape[0] != s.size:
        raise ValueError(f"ious must be (P, G) with P = len(scores) = {s.size}, got shape {m.shape}")
    if m.shape[1] == 0:
        raise ValueError("mask_ap needs at least one ground-truth instance (G = 0)")
    if m.size and (np.nanmin(m) < 0 or np.nanmax(m) > 1 or np.isnan(m).any()):
        raise ValueError(f"ious must lie in [0, 1], got range [{np.nanmin(m)}, {np.nanmax(m)}]")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    thr = np.asarray(thresholds, dtype=np.float64).ravel()
    if thr.size == 0 or ((thr <= 0) | (thr > 1)).any():
        raise ValueError(f"thresholds must be a non-empty list of values in (0, 1], got {thresholds!r}")
    num_gt = m.shape[1]
    order = np.argsort(-s, kind="stable")
    out: dict[str, float] = {}
    aps = []
    for t in thr:
        matched = np.zeros(num_gt, dtype=bool)
        tp = np.zeros(s.size)
        for rank, i in enumerate(order):
            candidate = np.where(matched | (m[i] < t - 1e-12), -1.0, m[i])
            j = int(np.argmax(candidate))
            if candidate[j] >= 0:
                matched[j] = True
                tp[rank] = 1
        if s.size == 0:
            ap = 0.0
        else:
            tp_cum = np.cumsum(tp)
            recall = tp_cum / num_gt
            precision = tp_cum / np.arange(1, s.size + 1)
            precision = np.maximum.accumulate(precision[::-1])[::-1]
            idx = np.searchsorted(recall, COCO_RECALL_POINTS, side="left")
            sampled = np.where(idx < s.size, precision[np.minimum(idx, s.size - 1)], 0.0)
            ap = float(sampled.mean())
        aps.append(ap)
        out[f"AP@{t:.2f}"] = ap
    return {"AP": float(np.mean(aps)), **out}


# ------------------------------------------------------------------------------------------------------- retrieval


def recall_at_k(similarity, k: int, targets: Sequence[int] | np.ndarray | None = None) -> float:
    """Fraction of queries whose match ranks in the top `k`.

    Ties count against the query: the match's rank is the number of *other* candidates scoring >= it (so a constant
    similarity matrix gives recall 0 unless k covers every candidate, never a lucky 1).

    Args:
        similarity: `(N_query, N_candidate)` scores (e.g. text × video cosine similarities); transpose it for the
            other direction.
        k: cut-off, >= 1.
        targets: `(N_query,)` index of each query's matching candidate; default `arange(N_query)` (the diagonal,
            needs N_query <= N_candidate).

    Returns:
        Recall@k in [0, 1].
    """
    sim = similarity.detach().cpu().numpy() if hasattr(similarity, "detach") else np.asarray(similarity)
    sim = sim.astype(np.float64)
    if sim.ndim != 2 or sim.shape[0] == 0 or sim.shape[1] == 0:
        raise ValueError(f"similarity must be a non-empty (N_query, N_candidate) matrix, got shape {sim.shape}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if not np.isfinite(sim).all():
        raise ValueError("similarity contains NaN or Inf")
    n_query, n_cand = sim.shape
    tgt = np.arange(n_query) if targets is None else np.asarray(targets, dtype=np.int64).ravel()
    if tgt.shape != (n_query,) or (tgt < 0).any() or (tgt >= n_cand).any():
        raise ValueError(f"targets must be {n_query} indices in [0, {n_cand}), got {np.asarray(targets).tolist()}")
    target_scores = sim[np.arange(n_query), tgt]
    rank = (sim >= target_scores[:, None]).sum(axis=1) - 1  # other candidates scoring >= the match
    return float(np.mean(rank < k))


__all__ = [
    "COCO_IOU_THRESHOLDS",
    "DEFAULT_TIOU_THRESHOLDS",
    "detection_ap_per_class",
    "detection_map",
    "interpolated_ap",
    "jaccard_j",
    "mask_ap",
    "mask_iou",
    "recall_at_k",
    "segment_iou",
    "video_mask_iou",
]

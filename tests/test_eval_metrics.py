"""Evaluation metrics against hand-computed answers (no model, no data: milliseconds)."""

import math

import numpy as np
import pytest
import torch

from pyratok.evaluation.localization import (
    extract_segments,
    latent_to_frame_scores,
    localize,
    resolve_threshold,
    smooth_scores,
)
from pyratok.evaluation.metrics import (
    detection_map,
    interpolated_ap,
    jaccard_j,
    mask_ap,
    mask_iou,
    recall_at_k,
    segment_iou,
    video_mask_iou,
)
from pyratok.evaluation.reconstruction import clip_scores

# ----------------------------------------------------------------------------------------------- reconstruction


def test_identical_clips_give_infinite_psnr_and_unit_ssim():
    x = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    scores = clip_scores(x, x.clone())
    assert scores["psnr"] == [math.inf, math.inf]
    assert scores["ssim"] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert scores["lpips"] == [None, None]


def test_constant_offset_gives_known_psnr():
    target = torch.zeros(1, 3, 5, 16, 16)
    # MSE = 0.1² = 0.01 on a data range of 2: PSNR = 10 log10(4 / 0.01) = 10 log10(400).
    scores = clip_scores(target + 0.1, target)
    assert scores["psnr"][0] == pytest.approx(10 * math.log10(400.0), abs=1e-3)


def test_clip_scores_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="reconstruction and target"):
        clip_scores(torch.zeros(1, 3, 5, 16, 16), torch.zeros(1, 3, 5, 16, 8))


# --------------------------------------------------------------------------------------------------- temporal


def test_segment_iou_by_hand():
    iou = segment_iou([0, 10], [[0, 5], [5, 15], [20, 30], [0, 10], [2, 4]])
    np.testing.assert_allclose(iou, [0.5, 5 / 15, 0.0, 1.0, 0.2])
    assert segment_iou([3, 3], [[3, 3], [4, 4]]).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="start <= end"):
        segment_iou([5, 1], [[0, 1]])


def test_interpolated_ap_by_hand():
    # Ranked TP, FP, TP with 2 positives: the envelope is 1 up to recall 0.5, then 2/3 up to recall 1.
    assert interpolated_ap([1.0, 0.5, 2 / 3], [0.5, 0.5, 1.0]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # FP first: precision 0 then 1/2 at recall 1; the envelope is 1/2 everywhere.
    assert interpolated_ap([0.0, 0.5], [0.0, 1.0]) == pytest.approx(0.5)
    assert interpolated_ap([], []) == 0.0


GT = [{"video": "a", "segment": [0.0, 10.0], "label": "jump"}]


def _pred(video, segment, score, label="jump"):
    return {"video": video, "segment": segment, "score": score, "label": label}


def test_perfect_prediction_has_map_one():
    out = detection_map([_pred("a", [0.0, 10.0], 0.9)], GT)
    assert set(out) == {"mAP@0.3", "mAP@0.4", "mAP@0.5", "mAP@0.6", "mAP@0.7", "average_mAP"}
    assert all(v == 1.0 for v in out.values())


def test_half_overlap_counts_up_to_threshold_half():
    out = detection_map([_pred("a", [0.0, 5.0], 0.9)], GT)  # tIoU = 0.5
    assert [out[f"mAP@{t}"] for t in (0.3, 0.4, 0.5, 0.6, 0.7)] == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert out["average_mAP"] == pytest.approx(0.6)


def test_duplicates_are_false_positives():
    gt = GT + [{"video": "b", "segment": [0.0, 10.0], "label": "jump"}]
    # TP (a), duplicate on a (FP), TP (b): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 → AP = 1/2 + 1/2 · 2/3.
    preds = [_pred("a", [0.0, 10.0], 0.9), _pred("a", [0.0, 10.0], 0.8), _pred("b", [0.0, 10.0], 0.7)]
    out = detection_map(preds, gt)
    assert out["average_mAP"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_greedy_matching_by_score_and_per_class_mean():
    # The higher-scored prediction (tIoU 0.6) takes the ground truth at thresholds <= 0.6; at 0.7 it misses and the
    # exact one (ranked second) matches: precision [0, 1/2] at recall [0, 1] → AP 1/2.
    preds = [_pred("a", [0.0, 6.0], 0.9), _pred("a", [0.0, 10.0], 0.5)]
    out = detection_map(preds, GT)
    assert [out[f"mAP@{t}"] for t in (0.3, 0.4, 0.5, 0.6, 0.7)] == [1.0, 1.0, 1.0, 1.0, 0.5]
    assert out["average_mAP"] == pytest.approx(0.9)
    # A second class without any correct prediction halves the mean; wrong-video and unknown-label predictions
    # change nothing for "jump".
    gt = GT + [{"video": "a", "segment": [20.0, 30.0], "label": "run"}]
    preds = [_pred("a", [0.0, 10.0], 0.9), _pred("a", [0.0, 10.0], 0.8, "run"), _pred("z", [0.0, 1.0], 0.1),
             _pred("a", [0.0, 10.0], 0.99, "fly")]
    out = detection_map(preds, gt)
    assert out["average_mAP"] == pytest.approx(0.5)


def test_detection_map_validates():
    with pytest.raises(ValueError, match="ground_truth is empty"):
        detection_map([], [])
    with pytest.raises(ValueError, match="predictions\\[0\\]"):
        detection_map([{"video": "a", "segment": [0, 1]}], GT)
    with pytest.raises(ValueError, match="tiou_thresholds"):
        detection_map([], GT, tiou_thresholds=(0.0,))
    assert detection_map([], GT)["average_mAP"] == 0.0


# ------------------------------------------------------------------------------------------------------ masks


def _block(shape=(4, 4), rows=(0, 2), cols=(0, 2)) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[rows[0] : rows[1], cols[0] : cols[1]] = True
    return m


def test_mask_iou_and_jaccard_by_hand():
    a, b = _block(), _block(cols=(1, 3))  # 4 pixels each, 2 shared, union 6
    assert mask_iou(a, b) == pytest.approx(1 / 3)
    empty = np.zeros((4, 4), dtype=bool)
    assert mask_iou(empty, empty) == 1.0
    assert mask_iou(a, empty) == 0.0
    pred = np.stack([a, empty, a])
    gt = np.stack([b, empty, empty])
    assert jaccard_j(pred, gt) == pytest.approx((1 / 3 + 1 + 0) / 3)
    # Spatio-temporal IoU sums over frames: intersection 2, union 6 + 4.
    assert video_mask_iou(pred, gt) == pytest.approx(2 / 10)
    with pytest.raises(ValueError, match="same shape"):
        mask_iou(a, np.zeros((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="\\(T, H, W\\)"):
        jaccard_j(a, b)


def test_mask_ap_by_hand():
    # One prediction with IoU 0.72: a hit at 0.50 ... 0.70 (5 of 10 thresholds), a miss above.
    out = mask_ap([0.9], [[0.72]])
    assert out["AP@0.50"] == 1.0 and out["AP@0.70"] == 1.0 and out["AP@0.75"] == 0.0
    assert out["AP"] == pytest.approx(0.5)
    # Two ground truths; predictions hit them with IoU 0.9 and 0.6. Up to 0.60 both match (AP 1); from 0.65 to 0.90
    # only the first: recall 1/2 at precision 1, so 51 of the 101 recall points score 1; at 0.95 nothing.
    out = mask_ap([0.9, 0.8], [[0.9, 0.0], [0.0, 0.6]])
    assert out["AP@0.60"] == 1.0
    assert out["AP@0.65"] == pytest.approx(51 / 101)
    assert out["AP@0.95"] == 0.0
    assert out["AP"] == pytest.approx((3 + 6 * 51 / 101) / 10)
    # A duplicate ranked after full recall costs nothing; a miss ranked first halves precision at every recall.
    out = mask_ap([0.5, 0.9], [[0.8], [0.8]], thresholds=[0.5])
    assert out["AP"] == 1.0
    out = mask_ap([0.9, 0.5], [[0.3], [0.8]], thresholds=[0.5])
    assert out["AP"] == pytest.approx(0.5)
    assert mask_ap([], np.zeros((0, 2)))["AP"] == 0.0
    with pytest.raises(ValueError, match="at least one ground-truth"):
        mask_ap([0.5], np.zeros((1, 0)))
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        mask_ap([0.5], [[1.5]])


# -------------------------------------------------------------------------------------------------- retrieval


def test_recall_at_k_by_hand():
    sim = np.array([[0.9, 0.1, 0.0], [0.8, 0.7, 0.1], [0.5, 0.6, 0.4]])  # targets on the diagonal: ranks 0, 1, 2
    assert recall_at_k(sim, 1) == pytest.approx(1 / 3)
    assert recall_at_k(sim, 2) == pytest.approx(2 / 3)
    assert recall_at_k(sim, 3) == 1.0
    assert recall_at_k(sim.T, 1) == 1.0  # each column's maximum is on the diagonal
    assert recall_at_k(torch.tensor(sim), 2, targets=[0, 0, 1]) == 1.0
    # Ties count against the query: a constant matrix is never a lucky hit.
    assert recall_at_k(np.zeros((3, 3)), 1) == 0.0
    assert recall_at_k(np.zeros((3, 3)), 3) == 1.0
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(sim, 0)


# ------------------------------------------------------------------------------------------ localization decoding


def test_latent_scores_spread_over_input_frames():
    out = latent_to_frame_scores(np.array([1.0, 2.0, 3.0]), 9)
    assert out.tolist() == [1, 2, 2, 2, 2, 3, 3, 3, 3]
    with pytest.raises(ValueError, match="latent frames"):
        latent_to_frame_scores(np.array([1.0, 2.0]), 9)


def test_sliding_window_and_threshold():
    curve, k = smooth_scores(np.array([1.0, 2.0, 3.0, 4.0]), window=2)
    assert k == 2 and curve.tolist() == [1.5, 2.5, 3.5]
    curve, k = smooth_scores(np.array([1.0, 2.0, 3.0, 4.0]), window=25)  # clipped to the sequence
    assert k == 4 and curve.tolist() == [2.5]
    curve, _ = smooth_scores(np.arange(6.0), window=2, stride=2)
    assert curve.tolist() == [0.5, 2.5, 4.5]
    c = np.array([0.0, 2.0])
    assert resolve_threshold(c, "mean") == 1.0
    assert resolve_threshold(c, "mean+std") == 2.0
    assert resolve_threshold(c, "mean+0.5std") == 1.5
    assert resolve_threshold(c, 0.3) == 0.3
    with pytest.raises(ValueError, match="threshold"):
        resolve_threshold(c, "median")


def test_segment_extraction_and_merging():
    curve = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 2.0, 2.0, 0.0])
    assert extract_segments(curve, 1, 1, 0.5, max_segments=2) == [(5, 6, 2.0), (2, 3, 1.0)]
    assert extract_segments(curve, 1, 1, 0.5, max_segments=1) == [(5, 6, 2.0)]
    assert extract_segments(curve, 1, 1, 5.0, max_segments=3) == []
    # With 3-frame windows the runs cover frames 2..5 and 5..8: they overlap and merge (score over both runs).
    assert extract_segments(curve, 3, 1, 0.5, max_segments=2) == [(2, 8, 1.5)]


def test_localize_in_seconds():
    # Latent frame 1 (input frames 1..4) is the only high one; 1-frame windows at 8 fps.
    segs = localize(np.array([0.0, 1.0, 0.0]), num_frames=9, fps=8.0, window=1, threshold=0.5)
    assert segs == [{"segment": [1 / 8, 4 / 8], "frames": [1, 4], "score": 1.0}]

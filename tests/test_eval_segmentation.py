"""Dense 3D CRF and zero-shot segmentation evaluation (evaluation/crf.py, evaluation/segmentation.py)."""

import importlib.util
import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pyratok.evaluation.segmentation as seg
from modeling_pyratok import PyraTokModel
from pyratok.evaluation.clips import ClipReader, load_vis_annotations, vis_instances
from pyratok.evaluation.crf import dense_crf_3d
from pyratok.evaluation.localization import latent_to_frame_scores
from pyratok.training.make_shards import make_shards
from tests.conftest import tiny_config

HAS_PYDENSECRF = importlib.util.find_spec("pydensecrf") is not None


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


def _square_case(frames: int = 5, size: int = 48, seed: int = 0):
    """A bright square moving right on a dark background, and a coarse, shifted, noisy relevance map of it."""
    g = torch.Generator().manual_seed(seed)
    gt = torch.zeros(frames, size, size, dtype=torch.bool)
    for t in range(frames):
        gt[t, 14:30, 12 + t : 28 + t] = True
    fg, bg = torch.tensor([0.8, 0.6, 0.7]), torch.tensor([-0.7, -0.6, -0.8])
    video = torch.where(gt[None], fg[:, None, None, None], bg[:, None, None, None])
    video = (video + 0.05 * torch.randn(video.shape, generator=g)).clamp(-1, 1)
    coarse = F.avg_pool3d(gt.float()[None, None], (1, 8, 8))  # an 8-pixel token grid
    probs = F.interpolate(coarse, size=(frames, size, size), mode="trilinear", align_corners=False)[0, 0]
    probs = torch.roll(probs, shifts=(3, -2), dims=(1, 2))  # misaligned by a few pixels
    probs = (0.7 * probs + 0.15 + 0.15 * torch.randn(probs.shape, generator=g)).clamp(0, 1)
    return video, probs, gt


# ---------------------------------------------------------------------------------------------------------- CRF


def test_crf_snaps_a_coarse_noisy_blob_to_the_object_edges():
    video, probs, gt = _square_case()
    raw = _iou(probs > 0.5, gt)
    q = dense_crf_3d(probs, video)
    assert q.shape == probs.shape and q.dtype == torch.float32
    assert 0 <= q.min() and q.max() <= 1
    refined = _iou(q > 0.5, gt)
    assert raw < 0.75 and refined > 0.9, (raw, refined)


def test_crf_keeps_a_confident_edge_aligned_map():
    video, _, gt = _square_case()
    probs = gt.float() * 0.98 + 0.01
    q = dense_crf_3d(probs, video)
    assert torch.equal(q > 0.5, gt)
    assert (q - probs).abs().max() < 0.02


def test_crf_zero_iterations_and_no_pairwise_terms_return_the_unary():
    video, probs, _ = _square_case()
    torch.testing.assert_close(dense_crf_3d(probs, video, n_iters=0), probs.clamp(1e-3, 1 - 1e-3))
    flat = dense_crf_3d(probs, video, w_appearance=0.0, w_smooth=0.0)
    torch.testing.assert_close(flat, probs.clamp(1e-3, 1 - 1e-3))


def test_crf_single_frame_and_cache_free_path(monkeypatch):
    video, probs, gt = _square_case(frames=1)
    cached = dense_crf_3d(probs, video)
    # recompute the appearance weights every iteration
    monkeypatch.setattr("pyratok.evaluation.crf.WEIGHT_CACHE_BYTES", 0)
    torch.testing.assert_close(dense_crf_3d(probs, video), cached)
    assert _iou(cached > 0.5, gt) > 0.9


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"probs": torch.rand(2, 8, 8) + 1}, "probs must be finite and in \\[0, 1\\]"),
        ({"probs": torch.rand(8, 8)}, "probs must be a \\(T, H, W\\) tensor"),
        ({"video": torch.zeros(3, 2, 8, 9)}, "does not match probs"),
        ({"video": torch.zeros(1, 2, 8, 8)}, "video must be a \\(3, T, H, W\\)"),
        ({"video": torch.full((3, 2, 8, 8), 200.0)}, "video must be finite and in \\[-1, 1\\]"),
        ({"theta_alpha": 0.0}, "theta_alpha must be > 0, got 0.0"),
        ({"w_smooth": -1.0}, "w_smooth must be >= 0, got -1.0"),
        ({"n_iters": 2.5}, "n_iters must be an int >= 0, got 2.5"),
        ({"dilation": 0}, "dilation must be an int >= 1, got 0"),
        ({"backend": "cuda"}, "backend must be one of"),
    ],
)
def test_crf_rejects_bad_inputs(change, match):
    kwargs = {"probs": torch.rand(2, 8, 8), "video": torch.zeros(3, 2, 8, 8), **change}
    with pytest.raises(ValueError, match=match):
        dense_crf_3d(**kwargs)


@pytest.mark.skipif(not HAS_PYDENSECRF, reason="pydensecrf (pip install pydensecrf2) is not installed")
def test_fully_connected_backend_agrees_with_the_windowed_one():
    video, probs, gt = _square_case()
    windowed = dense_crf_3d(probs, video) > 0.5
    full = dense_crf_3d(probs, video, backend="pydensecrf") > 0.5
    assert _iou(full, gt) > 0.9
    assert _iou(full, windowed) > 0.9


# -------------------------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("num_latent", [1, 2, 3, 5])
def test_nearest_frame_mapping_matches_localization(num_latent):
    num_frames = 4 * (num_latent - 1) + 1
    weights = seg.latent_to_frame_weights(num_latent, num_frames, "nearest")
    scores = np.arange(num_latent, dtype=np.float64) * 10
    np.testing.assert_allclose(weights.double().numpy() @ scores, latent_to_frame_scores(scores, num_frames))


def test_linear_frame_mapping_interpolates_between_chunk_centres():
    w = seg.latent_to_frame_weights(3, 9, "linear")  # centres: frame 0, 2.5, 6.5
    torch.testing.assert_close(w.sum(1), torch.ones(9))
    assert w[0].tolist() == [1.0, 0.0, 0.0]
    torch.testing.assert_close(w[1], torch.tensor([0.6, 0.4, 0.0]))
    torch.testing.assert_close(w[4], torch.tensor([0.0, 0.625, 0.375]))
    assert w[7].tolist() == w[8].tolist() == [0.0, 0.0, 1.0]  # clamped after the last centre
    with pytest.raises(ValueError, match="num_frames=8"):
        seg.latent_to_frame_weights(3, 8)
    with pytest.raises(ValueError, match="temporal must be one of"):
        seg.latent_to_frame_weights(3, 9, "cubic")


def test_block_aligned_token_map_upsamples_onto_the_mask():
    band = torch.zeros(9, 64, 64)
    band[:, 16:40] = 1  # rows aligned with 8-pixel tokens: bilinear upsampling puts the 0.5 level on the edges
    square = torch.zeros(9, 64, 64)
    square[:, 16:40, 8:32] = 1  # the same in 2-D, but bilinear interpolation rounds the corners
    for mask, min_iou in ((band, 1.0), (square, 0.95)):
        tokens = F.avg_pool2d(mask[::4][:, None], 8)[:, 0]  # (T'=3, 8, 8)
        up = seg.upsample_to_video(tokens, 9, 64, 64)
        assert up.min() >= 0 and up.max() <= 1
        assert _iou(up > 0.5, mask.bool()) >= min_iou


def test_similarity_to_probs():
    s = torch.tensor([-0.2, 0.1, 0.4])
    torch.testing.assert_close(seg.similarity_to_probs(s), torch.tensor([0.0, 0.5, 1.0]))
    assert seg.similarity_to_probs(torch.full((3,), 0.3)).tolist() == [0.5] * 3
    torch.testing.assert_close(seg.similarity_to_probs(s, "sigmoid", 0.1), torch.sigmoid(s / 0.1))
    with pytest.raises(ValueError, match="normalize must be one of"):
        seg.similarity_to_probs(s, "softmax")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        seg.similarity_to_probs(s, "sigmoid", 0.0)


def test_default_crf_params_are_the_crf_defaults():
    defaults = {k: v.default for k, v in inspect.signature(dense_crf_3d).parameters.items() if k in seg.DEFAULT_CRF}
    assert defaults == seg.DEFAULT_CRF


def test_crf_params_scale_with_resolution():
    p = seg.scaled_crf_params({"w_smooth": 1.0}, 4.0)
    assert p["theta_alpha"] == seg.DEFAULT_CRF["theta_alpha"] * 4 and p["w_smooth"] == 1.0
    assert p["dilation"] == seg.DEFAULT_CRF["dilation"] * 4 and p["window"] == seg.DEFAULT_CRF["window"]
    with pytest.raises(ValueError, match="unknown CRF parameter"):
        seg.scaled_crf_params({"theta_alfa": 3.0}, 1.0)


# ------------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    make_shards(root, seed=0, size=64, frames=9, num_train=2, num_val=2, num_test=3, shard_size=8)
    return root / "test"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return PyraTokModel(tiny_config()).eval()


def _check_metrics(metrics: dict) -> None:
    for key in ("J", "mAP", "mAP@0.50", "mAP@0.75", "mAP_name"):
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics[key])


def test_segmentation_runs_end_to_end_on_a_tiny_model(model, split_dir):
    result = seg.evaluate_segmentation(model, split_dir, level=0, max_videos=1)
    assert result["task"] == "segmentation" and result["num_videos"] == 1 and result["num_objects"] >= 1
    assert result["settings"]["level"] == 0 and result["settings"]["token_grid"] == [3, 8, 8]
    assert result["settings"]["resolution"] == [9, 64, 64]
    _check_metrics(result["metrics"])
    _check_metrics(result["metrics_no_crf"])
    assert len(result["per_object"]) == result["num_objects"]
    assert all(0 <= o["J"] <= 1 and 0 <= o["J_no_crf"] <= 1 for o in result["per_object"])


def test_segmentation_validates_arguments(model, split_dir):
    with pytest.raises(ValueError, match="level=7 is out of range"):
        seg.evaluate_segmentation(model, split_dir, level=7)
    with pytest.raises(ValueError, match="threshold must be in \\(0, 1\\), got 1.5"):
        seg.evaluate_segmentation(model, split_dir, threshold=1.5)
    with pytest.raises(ValueError, match="max_videos must be a positive int"):
        seg.evaluate_segmentation(model, split_dir, max_videos=0)


def _chunk_mean(masks: np.ndarray, factor: int) -> torch.Tensor:
    """GT `(T, H, W)` → `(T', H / factor, W / factor)`: mean over each latent frame's input frames and pixels."""
    m = torch.from_numpy(masks).float()
    chunks = [m[:1]] + [m[4 * k - 3 : 4 * k + 1] for k in range(1, (m.shape[0] - 1) // 4 + 1)]
    latent = torch.stack([c.mean(0) for c in chunks])
    return F.avg_pool2d(latent[:, None], factor)[:, 0]


@pytest.mark.parametrize("size", [None, 128])
def test_perfect_similarity_gives_near_perfect_j(model, split_dir, monkeypatch, size):
    """Relevance = the ground truth pooled to the latent frames and a 2-pixel token grid.

    Upsampling it back must recover the masks of objects that stay put within a latent frame (J near 1): this checks
    the spatial and frame geometry. Fast movers are smeared by the 4-frame pooling itself, whatever the upsampling.
    """
    vis = load_vis_annotations(split_dir / "annotations_vis.json")
    lookup, steady = {}, {}
    for clip in ClipReader(split_dir, size=size):
        if clip.key in vis["videos_by_name"]:
            for inst in vis_instances(vis, clip.key):
                gt = clip.resize.apply_to_masks(inst["masks"])
                lookup[(round(float(clip.video.sum()), 2), inst["name"])] = _chunk_mean(gt, 2)
                steady[(clip.key, inst["name"])] = min(_iou(torch.from_numpy(a), torch.from_numpy(b))
                                                       for a, b in zip(gt[:-1], gt[1:]))

    def oracle(model, video, query, level=-1, condition_on_query=True):
        return lookup[(round(float(video.sum()), 2), query)][None] * 2 - 1  # cosine-like, in [-1, 1]

    monkeypatch.setattr(seg, "token_text_similarity", oracle)
    result = seg.evaluate_segmentation(model, split_dir, size=size)
    assert result["num_videos"] == len(vis["videos"]) and result["num_objects"] == len(lookup)
    per_object = {(o["video"], o["name"]): o for o in result["per_object"]}
    assert any(v > 0.9 for v in steady.values()), steady  # the fixture holds at least one steady object
    for key, consecutive_iou in steady.items():
        if consecutive_iou > 0.9:
            assert per_object[key]["J_no_crf"] > 0.95 and per_object[key]["J"] > 0.9, (key, per_object[key])
    assert result["metrics_no_crf"]["J"] > 0.6 and result["metrics"]["J"] > 0.6, result["per_object"]
    assert result["metrics_no_crf"]["mAP"] > 0
    # Linear interpolation between chunk centres beats giving each frame its own chunk's (smeared) mean.
    nearest = seg.evaluate_segmentation(model, split_dir, size=size, temporal="nearest", use_crf=False)
    assert nearest["metrics"]["J"] <= result["metrics_no_crf"]["J"] + 1e-6


def test_cli_arguments_reach_the_evaluator(model, split_dir, monkeypatch):
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--data")
    parser.add_argument("--max-clips", type=int)
    parser.add_argument("--num-frames", type=int)
    parser.add_argument("--size", type=int)
    seg.add_arguments(parser)
    args = parser.parse_args(["--data", str(split_dir), "--max-clips", "1", "--level", "0", "--no-crf",
                              "--threshold", "0.4", "--crf-w-smooth", "0.5"])
    seen = {}
    monkeypatch.setattr(seg, "evaluate_segmentation", lambda model, data, **kw: seen.update(kw) or {"ok": 1})
    assert seg.run(args, model=model) == {"ok": 1}
    assert seen["level"] == 0 and seen["use_crf"] is False and seen["threshold"] == 0.4 and seen["max_videos"] == 1
    assert seen["crf_params"]["w_smooth"] == 0.5 and seen["crf_params"]["backend"] == "torch"

"""Clip reading, the semantic space and every evaluator end to end on a tiny random model and a few generated clips."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch

from modeling_pyratok import PyraTokConfig, PyraTokModel
from pyratok.evaluation import cli
from pyratok.evaluation.clips import (
    ClipReader,
    ResizeInfo,
    iter_clips,
    load_localization_annotations,
    load_vis_annotations,
    vis_instances,
)
from pyratok.evaluation.localization import evaluate_localization
from pyratok.evaluation.reconstruction import evaluate_reconstruction, resolution_sweep
from pyratok.evaluation.retrieval import evaluate_retrieval
from pyratok.evaluation.semantic import (
    clip_embedding,
    encode_codes,
    frame_descriptors,
    text_embeddings,
    token_embeddings,
    token_text_similarity,
)
from pyratok.training.make_shards import make_shards
from pyratok.video_io import resize_and_crop

from .conftest import make_video

# Tiny convolutions on a shared CPU: extra threads only add contention (conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_shards")
    make_shards(out, seed=0, size=64, frames=9, num_train=2, num_val=2, num_test=4, shard_size=8)
    return out


@pytest.fixture(scope="module")
def model() -> PyraTokModel:
    torch.manual_seed(0)
    return PyraTokModel(PyraTokConfig.from_preset("tiny")).eval()


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("eval_model")
    model.save_pretrained(path)
    return path


# ------------------------------------------------------------------------------------------------------- clips


def test_clips_sorted_truncated_and_resized(shards):
    clips = list(iter_clips(shards / "test"))
    keys = [c.key for c in clips]
    assert keys == sorted(keys) and len(keys) == 4
    clip = clips[0]
    assert clip.video.shape == (3, 9, 64, 64) and clip.video.dtype == torch.float32
    assert -1.0 <= clip.video.min() and clip.video.max() <= 1.0
    assert clip.fps == 8.0 and clip.caption == clip.meta["caption"] and clip.resize.is_identity
    short = next(iter_clips(shards / "test", max_clips=1, num_frames=5, size=(128, 96)))
    assert short.video.shape == (3, 5, 128, 96) and short.num_source_frames == 9
    assert short.resize == ResizeInfo((64, 64), (128, 128), (0, 16), (128, 96))
    torch.testing.assert_close(short.video, resize_and_crop(clip.video[:, :5], 128, 96))
    with pytest.raises(ValueError, match="4k \\+ 1"):
        ClipReader(shards / "test", num_frames=6)


def test_resize_info_maps_masks_and_boxes():
    info = ResizeInfo.for_resize_and_crop(64, 64, 128, 96)
    mask = np.zeros((2, 64, 64), dtype=bool)
    mask[:, 10:20, 30:40] = True
    mapped = info.apply_to_masks(mask)
    assert mapped.shape == (2, 128, 96)
    rows, cols = np.nonzero(mapped[0])
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (20, 40, 60 - 16, 80 - 16)
    assert info.apply_to_box([30, 10, 40, 20]) == [44.0, 20.0, 64.0, 40.0]
    with pytest.raises(ValueError, match="masks must be"):
        info.apply_to_masks(np.zeros((2, 32, 32), dtype=bool))


def test_undecodable_samples_are_skipped_and_counted(tmp_path, shards, caplog):
    split = tmp_path / "split"
    split.mkdir()
    src = sorted((shards / "test").glob("*.tar"))[0]
    with tarfile.open(src) as tar_in, tarfile.open(split / "bad-00000.tar", "w") as tar_out:
        for member in tar_in.getmembers():
            data = tar_in.extractfile(member).read()
            if member.name == "proc-000000.mp4":
                data = b"not a video"
            if member.name == "proc-000001.json":
                continue  # a sample without its json
            member.size = len(data)
            tar_out.addfile(member, io.BytesIO(data))
    reader = ClipReader(split)
    keys = [c.key for c in reader]
    assert keys == ["pan-000000", "proc-000002"]
    assert reader.stats.read == 2 and reader.stats.skipped == 2
    assert set(reader.stats.skipped_keys) == {"proc-000000", "proc-000001"}
    assert "skipping sample proc-000000" in caplog.text


def test_missing_or_empty_split_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="data not found: .*nope"):
        list(iter_clips(tmp_path / "nope"))
    with pytest.raises(ValueError, match="no \\*.tar shards"):
        list(iter_clips(tmp_path))


def test_annotation_loaders(shards, tmp_path):
    vis = load_vis_annotations(shards / "test" / "annotations_vis.json")
    video = vis["videos"][0]
    instances = vis_instances(vis, video["name"])
    assert instances and instances[0]["masks"].shape == (9, 64, 64) and instances[0]["masks"].any()
    loc = load_localization_annotations(shards / "test" / "annotations_localization.json")
    assert set(loc["database"]) == {"pan-000000", "proc-000000", "proc-000001", "proc-000002"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"database": {"v": {"annotations": [{"segment": [2, 1], "label": "x"}]}}}))
    with pytest.raises(ValueError, match="start 2 > end 1"):
        load_localization_annotations(bad)
    bad.write_text(json.dumps({"videos": [], "annotations": {}}))
    with pytest.raises(ValueError, match="'annotations' must be a list"):
        load_vis_annotations(bad)
    thumos = tmp_path / "thumos"
    thumos.mkdir()
    (thumos / "BaseballPitch_test.txt").write_text("video_test_0000004 0.2 1.1\nvideo_test_0000004 2.0 3.5\n")
    (thumos / "Ambiguous_test.txt").write_text("video_test_0000004 5.0 6.0\n")
    db = load_localization_annotations(thumos)["database"]
    assert db["video_test_0000004"]["annotations"] == [
        {"segment": [0.2, 1.1], "label": "BaseballPitch"}, {"segment": [2.0, 3.5], "label": "BaseballPitch"}
    ]


# ---------------------------------------------------------------------------------------------------- semantic


def test_semantic_space_shapes_and_norms(model):
    x = make_video(batch=2, frames=5)
    codes = encode_codes(model, x, "a red square")
    grids = model.core.quantizer.level_grid((2, 8, 8))
    assert [tuple(c.shape) for c in codes] == [(2, 16, *g) for g in grids]
    assert set(codes[0].unique().tolist()) <= {-1.0, 1.0}
    d_s = model.config.semantic_dim
    tokens = token_embeddings(model, codes[0])
    assert tokens.shape == (2, d_s, *grids[0])
    torch.testing.assert_close(tokens.norm(dim=1), torch.ones(2, *grids[0]))
    text = text_embeddings(model, ["a red square", "a blue circle jumps"])
    assert text.shape == (2, d_s)
    torch.testing.assert_close(text.norm(dim=1), torch.ones(2))
    sim = token_text_similarity(model, x, "a red square", level=-1)
    assert sim.shape == (2, *grids[-1]) and sim.abs().max() <= 1.0
    # The map is the cosine of the query-conditioned level-(-1) tokens with the query embedding.
    expected = torch.einsum("bdthw,d->bthw", token_embeddings(model, encode_codes(model, x, "a red square")[-1]),
                            text[0])
    torch.testing.assert_close(sim, expected)
    frames = frame_descriptors(model, x)
    assert frames.shape == (2, 2, d_s)
    mean_code = encode_codes(model, x)[0].mean(dim=(3, 4))  # (B, d, T'): W_c is linear, so pool codes first
    ref = torch.nn.functional.normalize(model.core.quantizer.embed_codes(mean_code), dim=1).transpose(1, 2)
    torch.testing.assert_close(frames, ref)
    emb = clip_embedding(model, x)
    assert emb.shape == (2, d_s)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_semantic_space_rejects_residual_models_and_bad_input(model):
    config = PyraTokConfig.from_preset(
        "tiny", quantizer_mode="residual", codebook_dim=4, lora_rank=0, level_spatial_strides=[1, 1, 1, 1]
    )
    residual = PyraTokModel(config).eval()
    with pytest.raises(ValueError, match="quantizer_mode='residual'"):
        clip_embedding(residual, make_video(frames=5))
    with pytest.raises(ValueError, match="level=7"):
        frame_descriptors(model, make_video(frames=5), level=7)
    with pytest.raises(ValueError, match="texts\\[1\\]"):
        text_embeddings(model, ["ok", " "])
    with pytest.raises(ValueError, match="T=6"):
        encode_codes(model, torch.zeros(1, 3, 6, 64, 64))


# -------------------------------------------------------------------------------------------------- evaluators

CLIP_ROW = {"key", "num_frames", "height", "width", "psnr", "ssim", "lpips", "objects", "object_rows"}
USAGE_ROW = {"level", "tokens", "distinct_codes", "codebook_fraction", "perplexity"}


def test_reconstruction_report(model, shards):
    out = evaluate_reconstruction(model, shards / "test", max_clips=2, lpips_net="alex")
    assert out["task"] == "reconstruction" and out["num_clips"] == 2 and len(out["clips"]) == 2
    assert set(out["clips"][0]) == CLIP_ROW
    assert np.isfinite(out["psnr"]) and -1 <= out["ssim"] <= 1
    # LPIPS is a number, or null with the reason (AlexNet weights are not cached offline): never both, never neither.
    assert (out["lpips"] is None) == (out["lpips_unavailable_reason"] is not None)
    assert len(out["code_usage"]) == model.config.num_levels and set(out["code_usage"][0]) == USAGE_ROW
    assert out["code_usage"][0]["tokens"] == 2 * 3 * 8 * 8  # 2 clips x (T'=3, 8x8) level-1 tokens
    assert out["bits_per_pixel"] == pytest.approx(model.bits_per_pixel(64, 64, 9))
    assert out["tokens_per_clip"] == 3 * (64 + 16 + 4 + 1)
    assert out["codebook_size"] == 2**16
    # The test split carries object masks: object fidelity is reported (values: tests/test_eval_objects.py).
    assert out["objects"]["num_objects"] == sum(len(c["object_rows"]) for c in out["clips"])
    assert out["object_delta_e"] == out["objects"]["delta_e_2000"] >= 0
    json.dumps(out)


def test_resolution_sweep(model, shards):
    out = resolution_sweep(model, shards / "test", sizes=(64, 128), max_clips=1, num_frames=5)
    assert [r["size"] for r in out["results"]] == [64, 128]
    assert [r["code_usage"][0]["tokens"] for r in out["results"]] == [2 * 8 * 8, 2 * 16 * 16]
    with pytest.raises(ValueError, match="multiples of spatial_multiple=64"):
        resolution_sweep(model, shards / "test", sizes=(96,))


def test_localization_report(model, shards):
    out = evaluate_localization(model, shards / "test", window=3, max_segments=2)
    assert out["task"] == "localization" and out["num_videos"] == 4
    assert set(out["metrics"]) == {"mAP@0.3", "mAP@0.4", "mAP@0.5", "mAP@0.6", "mAP@0.7", "average_mAP"}
    assert all(0.0 <= v <= 1.0 for v in out["metrics"].values())
    # negatives: every label is queried on every video (at least one segment each with a relative threshold).
    assert out["num_predictions"] >= out["num_labels"] * out["num_videos"]
    pred = out["predictions"][0]
    assert set(pred) == {"video", "label", "segment", "frames", "score"}
    assert 0.0 <= pred["segment"][0] <= pred["segment"][1] <= 8 / 8.0
    assert out["settings"]["level"] == 0 and out["settings"]["effective_window"] == 3
    # The default 25-frame window is clipped to the 9-frame clips: one window, so each of a video's own labels gets
    # exactly one prediction, the whole clip.
    own = evaluate_localization(model, shards / "test", negatives=False)
    assert own["settings"]["effective_window"] == 9
    db = load_localization_annotations(shards / "test" / "annotations_localization.json")["database"]
    pairs = {(video, a["label"]) for video, entry in db.items() for a in entry["annotations"]}
    assert {(p["video"], p["label"]) for p in own["predictions"]} == pairs
    assert own["num_predictions"] == len(pairs) and all(p["frames"] == [0, 8] for p in own["predictions"])
    assert not evaluate_localization(model, shards / "test", keep_predictions=False)["predictions"]
    conditioned = evaluate_localization(model, shards / "test", max_clips=1, negatives=False, condition_on_query=True)
    assert conditioned["settings"]["condition_on_query"] and conditioned["num_videos"] == 1


def test_retrieval_report(model, shards):
    out = evaluate_retrieval(model, shards / "test", ks=(1, 5))
    assert out["task"] == "retrieval" and out["num_clips"] == 4
    assert out["ks"] == [1] and out["ks_skipped"] == [5]
    assert set(out["text_to_video"]) == set(out["video_to_text"]) == set(out["chance"]) == {"R@1"}
    assert out["chance"]["R@1"] == 0.25
    assert all(0.0 <= v <= 1.0 for v in out["text_to_video"].values())


# --------------------------------------------------------------------------------------------------------- CLI


def test_cli_writes_a_report(model_dir, shards, tmp_path, capsys):
    report = tmp_path / "report.json"
    argv = ["retrieval", "--model", str(model_dir), "--data", str(shards / "test"), "--out", str(report),
            "--threads", "1", "--ks", "1,2"]
    assert cli.main(argv) == 0
    data = json.loads(report.read_text())
    assert {"command", "task", "model", "data", "settings", "seconds", "results"} <= set(data)
    assert data["command"].startswith("pyratok-eval retrieval") and data["task"] == "retrieval"
    assert data["results"]["ks"] == [1, 2]
    assert '"task": "retrieval"' in capsys.readouterr().out


def test_cli_errors_exit_2(model_dir, shards, tmp_path, capsys, monkeypatch):
    assert cli.main(["reconstruction", "--model", str(tmp_path / "missing"), "--data", str(shards / "test")]) == 2
    assert "pyratok-eval: error: model folder not found" in capsys.readouterr().err
    assert cli.main(["reconstruction", "--model", str(model_dir), "--data", str(tmp_path / "nodata")]) == 2
    assert "pyratok-eval: error: data not found: " + str(tmp_path / "nodata") in capsys.readouterr().err
    assert cli.main(["nonsense"]) == 2
    assert "unknown task 'nonsense'" in capsys.readouterr().err
    monkeypatch.setattr(cli, "TASKS", cli.TASKS + ("no_such_task",))
    assert cli.main(["no_such_task", "--data", str(shards / "test")]) == 2
    assert "task no_such_task is not available" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["retrieval", "--model", str(model_dir), "--data", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyratok-eval: error: no *.tar shards") and "\n" not in err
    assert cli.main([]) == 2 and cli.main(["--help"]) == 0

"""pyratok.training.make_shards: deterministic shards, captions that match the truth, VIS/ActivityNet annotations."""

import hashlib
import json
import tarfile

import numpy as np
import pytest

from pyratok.rle import rle_decode, rle_encode
from pyratok.training.make_shards import (
    OBJECT_COLORS,
    SHAPES,
    _rng,
    main,
    make_shards,
    render_procedural,
)
from pyratok.video_io import read_video

SMALL = dict(seed=3, size=32, frames=9, fps=4.0, num_train=5, num_val=4, num_test=6, pan_fraction=0.34, shard_size=4)


def file_hashes(root) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def read_samples(root, split) -> dict[str, dict]:
    """key -> {"mp4": bytes, "json": dict, "shard": name}, in shard order."""
    samples = {}
    for shard in sorted((root / split).glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                data = tar.extractfile(member).read()
                entry = samples.setdefault(key, {"shard": shard.name})
                entry[ext] = json.loads(data) if ext == "json" else data
    return samples


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    manifest = make_shards(root, **SMALL)
    return root, manifest


def test_same_seed_gives_identical_files(shards, tmp_path):
    root, _ = shards
    make_shards(tmp_path / "again", **SMALL)
    assert file_hashes(tmp_path / "again") == file_hashes(root)
    make_shards(tmp_path / "other", **{**SMALL, "seed": 4})
    other = file_hashes(tmp_path / "other")
    assert other["train/train-00000.tar"] != file_hashes(root)["train/train-00000.tar"]


def test_layout_and_manifest(shards):
    root, manifest = shards
    assert json.loads((root / "manifest.json").read_text()) == manifest
    assert manifest["seed"] == SMALL["seed"]
    assert {s: c["total"] for s, c in manifest["counts"].items()} == {"train": 5, "val": 4, "test": 6}
    assert manifest["counts"]["test"]["pan"] == 2 and manifest["counts"]["test"]["procedural"] == 4
    names = [f["path"] for f in manifest["files"]]
    assert "train/train-00000.tar" in names and "train/train-00001.tar" in names  # 5 clips, 4 per shard
    assert "test/annotations_vis.json" in names and "val/annotations_localization.json" in names
    assert not (root / "train" / "annotations_vis.json").exists()
    for entry in manifest["files"]:
        assert hashlib.sha256((root / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    with tarfile.open(root / "train" / "train-00000.tar") as tar:
        members = tar.getmembers()
    assert [m.name.rsplit(".", 1)[1] for m in members] == ["mp4", "json"] * (len(members) // 2)
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members)


def test_samples_decode_and_captions_name_objects(shards):
    root, _ = shards
    samples = read_samples(root, "test")
    kinds = {s["json"]["kind"] for s in samples.values()}
    assert kinds == {"procedural", "pan"}
    for key, sample in samples.items():
        meta = sample["json"]
        frames, fps = read_video(sample["mp4"])
        assert frames.shape == (9, 32, 32, 3) and fps == pytest.approx(4.0)
        assert meta["key"] == key and key.startswith({"procedural": "proc-", "pan": "pan-"}[meta["kind"]])
        assert meta["caption"] and meta["class"]
        if meta["kind"] == "pan":
            assert meta["caption"].startswith("the camera ") and meta["objects"] == []
            assert meta["events"][0]["label"] in meta["caption"]
            continue
        assert 1 <= len(meta["objects"]) <= 3
        assert meta["class"] == meta["objects"][0]["name"]
        assert len({o["name"] for o in meta["objects"]}) == len(meta["objects"])  # one text query, one object
        for obj in meta["objects"]:
            assert obj["color"] in OBJECT_COLORS and obj["category"] in SHAPES
            assert obj["name"] == f"{obj['color']} {obj['category']}"
            assert obj["color"] in meta["caption"] and obj["category"] in meta["caption"]
            assert obj["motion"] in meta["caption"]
            assert len(obj["boxes"]) == 9
        labels = {e["label"] for e in meta["events"]}
        assert labels == {f"{o['name']} {o['motion']}" for o in meta["objects"] if o["motion"] != "stays still"}


def test_vis_annotations_match_boxes(shards):
    root, _ = shards
    for split in ("val", "test"):
        samples = read_samples(root, split)
        vis = json.loads((root / split / "annotations_vis.json").read_text())
        category_names = {c["id"]: c["name"] for c in vis["categories"]}
        videos = {v["id"]: v for v in vis["videos"]}
        procedural = {k for k, s in samples.items() if s["json"]["kind"] == "procedural"}
        assert {v["name"] for v in videos.values()} == procedural
        assert len(vis["annotations"]) == sum(len(samples[k]["json"]["objects"]) for k in procedural)
        for ann in vis["annotations"]:
            video = videos[ann["video_id"]]
            meta = samples[video["name"]]["json"]
            assert samples[video["name"]]["shard"] == video["shard"]
            obj = next(o for o in meta["objects"] if o["id"] == ann["object_id"])
            assert ann["name"] == obj["name"] and category_names[ann["category_id"]] == obj["category"]
            assert ann["iscrowd"] == 0 and len(ann["segmentations"]) == video["length"] == 9
            for seg, area, bbox, box in zip(ann["segmentations"], ann["areas"], ann["bboxes"], obj["boxes"]):
                assert seg is not None  # the generator keeps every object visible in every frame
                assert seg["size"] == [32, 32]
                mask = rle_decode(seg)
                ys, xs = np.nonzero(mask)
                assert area == mask.sum() > 0
                assert bbox == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                assert box == [bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]]


def test_masks_cover_the_drawn_object():
    # Visible masks are disjoint, and the pixels they cover differ from the typical background colour.
    rng = _rng(0, "test", "procedural", 0)
    frames, meta, masks = render_procedural(rng, 48, 9)
    assert masks.shape == (len(meta["objects"]), 9, 48, 48) and masks.dtype == bool
    assert not (masks.sum(axis=0) > 1).any()  # visible masks never overlap
    pixels = frames.astype(np.int16)
    for mask in masks:
        outside = ~masks.any(axis=0)
        inside_change = np.abs(pixels[mask] - np.median(pixels[outside], axis=0)).mean()
        assert inside_change > 5  # the object is distinguishable from the background where its mask says


def test_localization_annotations(shards):
    root, _ = shards
    for split in ("val", "test"):
        samples = read_samples(root, split)
        loc = json.loads((root / split / "annotations_localization.json").read_text())
        assert set(loc["database"]) == set(samples)
        for key, entry in loc["database"].items():
            assert entry["subset"] == split and entry["num_frames"] == 9 and entry["fps"] == 4.0
            assert entry["duration"] == pytest.approx(9 / 4.0)
            events = samples[key]["json"]["events"]
            assert [a["label"] for a in entry["annotations"]] == [e["label"] for e in events]
            for ann in entry["annotations"]:
                assert 0 <= ann["start_frame"] < ann["end_frame"] <= 8
                start, end = ann["segment"]
                assert (start, end) == pytest.approx((ann["start_frame"] / 4.0, ann["end_frame"] / 4.0))
                assert 0 <= start < end <= entry["duration"]


def test_some_events_cover_only_part_of_the_clip():
    spans = []
    for i in range(30):
        _, meta, _ = render_procedural(_rng(0, "train", "procedural", i), 32, 17)
        spans += [(e["start_frame"], e["end_frame"]) for e in meta["events"]]
    assert any(span != (0, 16) for span in spans) and any(span == (0, 16) for span in spans)


@pytest.mark.parametrize("seed", range(4))
def test_rle_round_trip(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 20, size=2))
    masks = [rng.random(shape) < 0.3, np.zeros(shape, bool), np.ones(shape, bool)]
    for mask in masks:
        rle = rle_encode(mask)
        assert rle["size"] == list(shape) and sum(rle["counts"]) == mask.size
        np.testing.assert_array_equal(rle_decode(rle), mask)
        json.dumps(rle)


def test_rle_is_coco_column_major():
    mask = np.array([[0, 1, 1], [1, 1, 0]], dtype=bool)
    # Column-major order: (0,0)=0 (1,0)=1 (0,1)=1 (1,1)=1 (0,2)=1 (1,2)=0 -> one 0, four 1s, one 0.
    assert rle_encode(mask) == {"counts": [1, 4, 1], "size": [2, 3]}
    assert rle_encode(np.array([[1, 0]], dtype=bool))["counts"] == [0, 1, 1]  # a leading zero-length run
    with pytest.raises(ValueError, match="sum"):
        rle_decode({"counts": [1, 2], "size": [2, 3]})
    with pytest.raises(ValueError, match="2-D"):
        rle_encode(np.zeros(4, bool))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"frames": 2}, "frames"), ({"pan_fraction": 1.5}, "pan_fraction"), ({"num_val": -1}, "val"),
     ({"size": 8}, "size"), ({"shard_size": 0}, "shard_size"), ({"fps": 0}, "fps")],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_shards(tmp_path, **{**SMALL, **kwargs})


def test_cli(tmp_path, capsys):
    main(["--out", str(tmp_path), "--size", "32", "--frames", "5", "--train", "2", "--val", "1", "--test", "1",
          "--pan-fraction", "0.5"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["train"] == {"total": 2, "procedural": 1, "pan": 1}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["args"]["frames"] == 5 and "--frames 5" in manifest["command"]

"""Operator and data faults in training (issue 24, reliability.md T-rows): bad data is skipped and counted, never
fatal; a checkpoint is complete or ignored; one run per output folder; logs and resumed settings stay truthful."""

import gzip
import json
import logging
import tarfile

import numpy as np
import pytest

from tests.test_data import clip_bytes, take
from tests.test_video_io import smooth_clip, ts_piece
from training.data import VideoDataConfig, build_stream
from training.make_shards import _tar_add
from training.tar_shards import iter_shard

CAPTION = json.dumps({"caption": "a fine clip"}).encode()


def write_members(path, members) -> None:
    """members: [(name, bytes)] in archive order (a sample may repeat a member, unlike `test_data.write_shard`)."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            _tar_add(tar, name, data)


def ok(key: str, seed: int = 0) -> list[tuple[str, bytes]]:
    return [(f"{key}.mp4", clip_bytes(seed=seed)), (f"{key}.json", CAPTION)]


def stream_of(files, **overrides):
    fields = dict(data_files=[str(f) for f in files], num_frames=[5], resolutions=[[32, 32]], batch_size=1,
                  shuffle_buffer=0)
    return build_stream(VideoDataConfig(**{**fields, **overrides}))


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    """a.tar: one sample of each bad kind between good ones; b.tar: random bytes; c.tar: cut inside ok-4's video."""
    root = tmp_path_factory.mktemp("bad_data")
    good = clip_bytes()
    write_members(root / "a.tar", [
        ("first-no-caption.mp4", good),  # the FIRST sample has no caption: datasets' loader could not infer columns
        ("caption-int.mp4", good), ("caption-int.json", json.dumps({"caption": 42}).encode()),
        *ok("ok-0"),
        ("bad-json.mp4", good), ("bad-json.json", b"{not json"),
        ("sizechange.mp4", ts_piece(smooth_clip(5, 32, 32)) + ts_piece(smooth_clip(4, 48, 64))),
        ("sizechange.json", CAPTION),
        ("twice.mp4", good), ("twice.mp4", good), ("twice.json", CAPTION),
        *ok("ok-1", seed=1),
    ])
    (root / "b.tar").write_bytes(np.random.default_rng(0).bytes(20_000))
    write_members(root / "c-full.tar", [*ok("ok-2", 2), *ok("ok-3", 3), *ok("ok-4", 4)])
    with tarfile.open(root / "c-full.tar") as tar:
        cut = tar.getmember("ok-4.mp4").offset_data + 100
    (root / "c.tar").write_bytes((root / "c-full.tar").read_bytes()[:cut])
    return root


def test_each_kind_of_bad_data_is_skipped_counted_and_logged_with_shard_and_key(bad_data, caplog):
    files = [bad_data / name for name in ("a.tar", "b.tar", "c.tar")]
    stream = stream_of(files)
    with caplog.at_level(logging.WARNING, logger="training.data"):
        assert [b["keys"][0] for b in take(stream, 4)] == ["ok-0", "ok-1", "ok-2", "ok-3"]
        # a: 7 samples (twice.mp4 twice is one sample), b: 1 error record, c: ok-2 and ok-3 before the cut
        assert {k: stream.stats[k] for k in ("pulled", "decoded", "skipped_no_caption", "skipped_corrupt",
                                             "skipped_bad_shard")} == {
            "pulled": 10, "decoded": 4, "skipped_no_caption": 3, "skipped_corrupt": 2, "skipped_bad_shard": 1,
        }
        assert take(stream, 1)[0]["keys"] == ["ok-0"]  # the cut shard ends epoch 0; epoch 1 starts over
    assert stream.stats["skipped_bad_shard"] == 2 and stream.stats["epochs_completed"] == 1
    log = caplog.text
    for key, shard, why in [
        ("first-no-caption", "a.tar", "no caption"),
        ("caption-int", "a.tar", "caption '42' is of type int, not a string"),
        ("bad-json", "a.tar", "JSONDecodeError"),
        ("sizechange", "a.tar", "frame 5 is 64x48, frame 0 is 32x32"),
        ("twice", "a.tar", "'twice.mp4' appears twice"),
        (None, "b.tar", "ReadError"),
        ("ok-4", "c.tar", "shard unreadable after 2 samples"),
    ]:
        line = next(line for line in log.splitlines() if f"{shard} (epoch 0" in line and why in line)
        assert key is None or f"sample {key!r} in " in line, line


def test_bad_data_keeps_exact_resume(bad_data):
    files = [bad_data / name for name in ("a.tar", "b.tar", "c.tar")]
    stream = stream_of(files, num_frames=[5, 9], batch_size=2, shuffle_buffer=4)
    take(stream, 1)
    state = json.loads(json.dumps(stream.state_dict()))
    expected = take(stream, 3)  # crosses the end of epoch 0 (4 good samples)
    restored = stream_of(files, num_frames=[5, 9], batch_size=2, shuffle_buffer=4)
    restored.load_state_dict(state)
    got = take(restored, 3)
    assert [b["keys"] for b in got] == [b["keys"] for b in expected]
    assert restored.stats == stream.stats and restored.stats["skipped_bad_shard"] >= 2


def test_a_truncated_shard_is_counted_at_every_kind_of_cut(bad_data, tmp_path):
    # tarfile in stream mode ends quietly at a cut header; only the missing end-of-archive marker tells.
    full = (bad_data / "c-full.tar").read_bytes()
    with tarfile.open(bad_data / "c-full.tar") as tar:
        ok4 = tar.getmember("ok-4.mp4")
    cuts = {  # cut position -> samples that come out whole
        ok4.offset: ["ok-2"],  # at a header boundary: ok-3 may have had more members, so it is dropped too
        ok4.offset + 100: ["ok-2"],  # inside a header
        ok4.offset_data + 100: ["ok-2", "ok-3"],  # inside a member's data: its sample was the next one
        len(full) // 2: None,
    }
    for cut, whole in cuts.items():
        path = tmp_path / f"cut-{cut}.tar"
        path.write_bytes(full[:cut])
        records = list(iter_shard(str(path)))
        errors = [r for r in records if "__shard_error__" in r]
        assert len(errors) == 1 and records[-1] is errors[0], (cut, records)
        if whole is not None:
            assert [r["__key__"] for r in records[:-1]] == whole, cut
    assert [r["__key__"] for r in iter_shard(str(bad_data / "c-full.tar"))] == ["ok-2", "ok-3", "ok-4"]
    gz = tmp_path / "c.tar.gz"
    gz.write_bytes(gzip.compress(full))
    assert [r["__key__"] for r in iter_shard(str(gz))] == ["ok-2", "ok-3", "ok-4"]
    gz.write_bytes(gzip.compress(full)[:-40])
    assert "__shard_error__" in list(iter_shard(str(gz)))[-1]


def test_nothing_usable_left_is_an_error_naming_the_shards(bad_data, tmp_path):
    (tmp_path / "empty.tar").write_bytes(b"")
    stream = stream_of([bad_data / "b.tar", tmp_path / "empty.tar"])
    message = r"all 2 examples .*unreadable shards: .*b\.tar.*invalid header.*empty\.tar"
    with pytest.raises(RuntimeError, match=message):
        next(stream)
    assert stream.stats["skipped_bad_shard"] == 2


def test_a_misspelt_column_is_still_named_before_training(bad_data):
    with pytest.raises(ValueError, match=r"columns \['webm'\] are in none of the first 5 samples of .*a\.tar"):
        stream_of([bad_data / "b.tar", bad_data / "a.tar"], video_column="webm")


def test_member_names_group_like_webdataset():
    from training.tar_shards import split_member_name

    assert split_member_name("dir.v1/proc-01.mp4") == ("dir.v1/proc-01", "mp4")
    assert split_member_name("a.b.json") == ("a", "b.json")
    assert split_member_name("README") == (None, None)

"""Operator and data faults in training (issue 24, reliability.md T-rows): bad data is skipped and counted, never
fatal; a checkpoint is complete or ignored; one run per output folder; logs and resumed settings stay truthful."""

import errno
import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

import pyratok.training.train as train_module
from pyratok.training.config import TrainConfig
from pyratok.training.data import VideoDataConfig, build_stream
from pyratok.training.make_shards import _tar_add, make_shards
from pyratok.training.run_guard import OutputDirLock
from pyratok.training.tar_shards import iter_shard
from pyratok.training.train import (
    check_resumed_optimizer,
    list_checkpoints,
    resolve_resume_path,
    save_checkpoint,
    train,
)
from tests.test_data import clip_bytes, take
from tests.test_train import read_log, tiny_run
from tests.test_video_io import smooth_clip, ts_piece

REPO_ROOT = str(Path(__file__).resolve().parents[1])

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
    with caplog.at_level(logging.WARNING, logger="pyratok.training.data"):
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
    from pyratok.training.tar_shards import split_member_name

    assert split_member_name("dir.v1/proc-01.mp4") == ("dir.v1/proc-01", "mp4")
    assert split_member_name("a.b.json") == ("a", "b.json")
    assert split_member_name("README") == (None, None)


# ---- checkpoints, resume, lock ------------------------------------------------------------------------------------
class Killed(BaseException):
    """A simulated SIGKILL: a BaseException, so no `except Exception` clean-up runs, as none would after a kill."""


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("small_shards")
    make_shards(root, seed=0, size=32, frames=5, num_train=8, num_val=0, num_test=0, shard_size=4)
    return root


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    yield
    AcceleratorState._reset_state(True)


def vae_run(shards, output_dir, **overrides) -> TrainConfig:
    """A backbone_vae run on 32x32 clips (the cheapest run of train.py), a checkpoint every step, none pruned."""
    data = {"data_files": [str(shards / "train" / "*.tar")], "num_frames": [5], "resolutions": [[32, 32]],
            "batch_size": 2, "shuffle_buffer": 4}
    fields = dict(task="backbone_vae", use_ar_loss=False, data=data, max_train_steps=3, checkpointing_steps=1,
                  checkpoints_total_limit=None)
    return tiny_run(shards, output_dir, **{**fields, **overrides})


class FakeStream:
    def state_dict(self) -> dict:
        return {"position": 7}


def prepared_accelerator():
    accelerator = Accelerator()
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    accelerator.prepare(model, optimizer)
    return accelerator


def kill_points(monkeypatch, point: int) -> None:
    """Make the save die at `point`: 0 before any file, 1 after accelerate's files, 2 after the data state, 3 after
    trainer_state.json (before the rename)."""
    original_save, original_dump = Accelerator.save_state, json.dump
    dumps = []

    def save_state(self, folder, *args, **kwargs):
        if point == 0:
            Path(folder).mkdir(parents=True)
            raise Killed
        out = original_save(self, folder, *args, **kwargs)
        if point == 1:
            raise Killed
        return out

    def dump(obj, f, *args, **kwargs):
        original_dump(obj, f, *args, **kwargs)
        dumps.append(f.name)
        if point == 2 and len(dumps) == 1 or point == 3 and len(dumps) == 2:
            raise Killed

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    monkeypatch.setattr(train_module.json, "dump", dump)


@pytest.mark.parametrize("point", [0, 1, 2, 3])
def test_a_save_killed_at_any_point_leaves_the_last_complete_checkpoint(small_shards, tmp_path, monkeypatch, point):
    config = vae_run(small_shards, tmp_path, checkpoints_total_limit=1)  # the recipes' limit: one checkpoint kept
    accelerator = prepared_accelerator()
    first = save_checkpoint(accelerator, config, 1, FakeStream())
    assert {"model.safetensors", "data_state_rank0.json", "trainer_state.json"} <= {p.name for p in first.iterdir()}
    kill_points(monkeypatch, point)
    with pytest.raises(Killed):
        save_checkpoint(accelerator, config, 2, FakeStream())
    monkeypatch.undo()
    assert (tmp_path / "checkpoint-2.tmp").is_dir() and not (tmp_path / "checkpoint-2").exists()
    assert list_checkpoints(str(tmp_path)) == [first]  # not pruned: the new one never completed
    assert resolve_resume_path(vae_run(small_shards, tmp_path, resume_from_checkpoint="latest")) == first
    # the next save of that step replaces the partial folder, then prunes checkpoint-1 (limit 1)
    save_checkpoint(accelerator, config, 2, FakeStream())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint")] == ["checkpoint-2"]


def test_a_full_disk_during_a_save_says_so_and_keeps_the_previous_checkpoint(small_shards, tmp_path, monkeypatch):
    config = vae_run(small_shards, tmp_path, checkpoints_total_limit=1)
    accelerator = prepared_accelerator()
    first = save_checkpoint(accelerator, config, 1, FakeStream())

    def full(self, folder, *args, **kwargs):  # what torch raised on a 5 MB tmpfs (reliability.md T24)
        Path(folder).mkdir(parents=True)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 689408 vs 689300")

    monkeypatch.setattr(Accelerator, "save_state", full)
    monkeypatch.setattr(train_module.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.raises(OSError, match=r"no space left on device while saving '.*checkpoint-2'") as err:
        save_checkpoint(accelerator, config, 2, FakeStream())
    assert err.value.errno == errno.ENOSPC
    assert list_checkpoints(str(tmp_path)) == [first] and not (tmp_path / "checkpoint-2.tmp").exists()
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="unexpected pos"):  # with free space the error is passed on as it is
        monkeypatch.setattr(Accelerator, "save_state", full)
        save_checkpoint(accelerator, config, 2, FakeStream())

    def safetensors_full(self, folder, *args, **kwargs):  # safetensors names the cause only in its message
        Path(folder).mkdir(parents=True)
        raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(Accelerator, "save_state", safetensors_full)
    with pytest.raises(OSError, match="no space left on device while saving"):
        save_checkpoint(accelerator, config, 2, FakeStream())
    assert list_checkpoints(str(tmp_path)) == [first]


def test_latest_skips_partial_checkpoints_and_the_resumed_run_equals_the_uninterrupted_one(small_shards, tmp_path,
                                                                                           caplog):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(vae_run(small_shards, straight))
    AcceleratorState._reset_state(True)
    # What a run killed inside the save of step 3 left: checkpoint-2, step 3 logged, a partial save of step 3 in the
    # new layout and one in the old (no trainer_state.json), and a log line cut by the kill.
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-2", resumed / "checkpoint-2")
    for partial in ("checkpoint-3", "checkpoint-3.tmp"):
        shutil.copytree(straight / "checkpoint-3", resumed / partial)
        (resumed / partial / "trainer_state.json").unlink()
    (resumed / "logs.jsonl").write_text((straight / "logs.jsonl").read_text() + '{"step": 4, "lo')
    with caplog.at_level(logging.WARNING):
        train(vae_run(small_shards, resumed, resume_from_checkpoint="latest"))
    assert "skipping partial checkpoints (interrupted saves) ['checkpoint-3', 'checkpoint-3.tmp']" in caplog.text
    assert "resumed from" in caplog.text and "checkpoint-2 at step 2" in caplog.text
    full, again = read_log(straight), read_log(resumed)
    assert [r["step"] for r in again] == [1, 2, 3]  # one record per step
    assert again[2]["loss"] == pytest.approx(full[2]["loss"], rel=1e-5, abs=1e-6)
    a, b = load_file(straight / "final" / "diffusion_pytorch_model.safetensors"), load_file(
        resumed / "final" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert list_checkpoints(str(resumed))[-1].name == "checkpoint-3" and not (resumed / "checkpoint-3.tmp").exists()


def test_a_changed_learning_rate_on_resume_is_refused_naming_both_values(small_shards, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    accelerator = prepared_accelerator()
    save_checkpoint(accelerator, vae_run(small_shards, run), 1, FakeStream())
    AcceleratorState._reset_state(True)
    changed = vae_run(small_shards, run, resume_from_checkpoint="latest", learning_rate=0.1, weight_decay=0.0)
    with pytest.raises(ValueError, match=r"learning_rate \(checkpoint 0.003, now 0.1\), weight_decay \(checkpoint "
                                         r"0.01, now 0.0\)"):
        train(changed)
    assert not (run / "train_config.json").exists()  # nothing recorded the refused values
    check_resumed_optimizer(run / "checkpoint-1", vae_run(small_shards, run, max_train_steps=9))  # may grow


def test_a_second_run_on_a_locked_output_dir_is_refused(small_shards, tmp_path):
    held = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pyratok.training.run_guard import OutputDirLock; "
         f"lock = OutputDirLock({str(tmp_path)!r}); print('locked', flush=True); time.sleep(60)"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert held.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match=rf"output_dir '{tmp_path}' is in use by another training run "
                                               rf"\(pid {held.pid}\)"):
            train(vae_run(small_shards, tmp_path))
    finally:
        held.kill()
        held.wait()
    lock = OutputDirLock(tmp_path)  # the kernel released the killed holder's lock
    assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    lock.release()


def test_the_training_child_stops_when_its_launcher_is_killed(tmp_path):
    # launcher -> child, as `accelerate launch` runs train.py; SIGKILL the launcher only (reliability.md T21).
    child_code = ("import time; from pyratok.training.run_guard import stop_with_parent; assert stop_with_parent(); "
                  "print('ready', flush=True); time.sleep(60)")
    launcher_code = (f"import subprocess, sys; c = subprocess.Popen([sys.executable, '-c', {child_code!r}]); "
                     "print(c.pid, flush=True); c.wait()")
    launcher = subprocess.Popen([sys.executable, "-c", launcher_code], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                text=True)
    child = int(launcher.stdout.readline())
    assert launcher.stdout.readline().strip() == "ready"  # the child shares the launcher's stdout; prctl is done
    launcher.kill()
    launcher.wait()
    deadline = time.time() + 10
    while time.time() < deadline and Path(f"/proc/{child}").exists() and "zombie" not in Path(
            f"/proc/{child}/status").read_text():
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text()

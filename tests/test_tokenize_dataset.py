"""pyratok.token_datasets and `pyratok tokenize-dataset`: rows equal direct encoding, decoding from the stored layout,
skips counted by reason, exact resume after a kill, two processes, layout / tokenizer checks, the CLI."""

import copy
import hashlib
import json
import tarfile
import threading

import datasets
import numpy as np
import pytest
import torch

from modeling_pyratok import AutoencoderPyraTok, PyraTokConfig, PyraTokModel, PyraTokTokenLayout
from pyratok import cli, token_datasets
from pyratok.cli import model_fingerprint
from pyratok.token_datasets import (
    TokenDatasetInfo,
    check_tokens_match,
    load_token_dataset,
    token_dataset_info,
    tokenize_dataset,
)
from pyratok.training.make_shards import _tar_add
from pyratok.video_io import encode_video, read_video
from tests.conftest import activate_text_attention, make_video

FRAMES, SIZE = 5, 64
GOOD = {  # key -> (caption, height, width, frames); a-1 is 64x96 (centre crop), b-0 has 9 frames (first 5 used)
    "a-0": ("a red square jumps", 64, 64, 5),
    "a-1": ("a blue circle drifts to the left", 64, 96, 5),
    "a-2": ("a green triangle spins", 64, 64, 5),
    "b-0": ("two yellow squares", 64, 64, 9),
    "b-1": ("a purple star falls slowly", 64, 64, 5),
    "b-2": ("nothing moves", 64, 64, 5),
    "c-0": ("the last good clip", 64, 64, 5),
}
SKIPPED = {
    "skipped_corrupt": 1, "skipped_too_short": 1, "skipped_no_caption": 2, "skipped_bad_shard": 0,
    "skipped_too_small": 1, "skipped_duplicate_key": 1,
}
KW = dict(num_frames=FRAMES, height=SIZE, width=SIZE, batch_size=2, rows_per_part=2, progress=False)


def frames_of(key: str, height: int, width: int, frames: int) -> np.ndarray:
    seed = sum(map(ord, key))
    clip = make_video(frames=frames, size=64, seed=seed)
    clip = torch.nn.functional.interpolate(clip, size=(frames, height, width), mode="trilinear")[0]
    return ((clip.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def write_shard(path, samples) -> None:
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for ext, data in members.items():
                _tar_add(tar, f"{key}.{ext}", data)


def sample(key: str, caption: str | None = None, text: bool = False, **size) -> tuple[str, dict]:
    cap, h, w, t = GOOD.get(key, ("", 64, 64, 5))
    video = encode_video(frames_of(key, size.get("height", h), size.get("width", w), size.get("frames", t)))
    caption = cap if caption is None else caption
    if text:
        return key, {"mp4": video, "txt": caption.encode()}
    return key, {"mp4": video, "json": json.dumps({"caption": caption}).encode()}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokdata")
    shards = root / "shards"
    shards.mkdir()
    write_shard(shards / "s0.tar", [sample(k) for k in ("a-0", "a-1", "a-2")])
    write_shard(shards / "s1.tar", [sample(k) for k in ("b-0", "b-1", "b-2")])
    write_shard(
        shards / "s2-bad.tar",
        [
            ("garbage", {"mp4": b"\x00not a video" * 40, "json": b'{"caption": "broken video"}'}),
            ("no-caption", {"mp4": sample("x")[1]["mp4"], "json": b'{"other": "x"}'}),
            sample("c-0"),
            ("blank", {"mp4": sample("y")[1]["mp4"], "json": b'{"caption": "   "}'}),
            sample("short", caption="too short", frames=3),
            sample("small", caption="too small", height=32, width=32),
            sample("a-1", caption="a later copy of a-1"),
        ],
    )
    torch.manual_seed(0)
    model = PyraTokModel(PyraTokConfig.from_preset("tiny")).eval()
    activate_text_attention(model)  # so that the captions change the ids
    model.save_pretrained(root / "model")
    return root


@pytest.fixture(scope="module")
def model(root, one_thread) -> PyraTokModel:
    return PyraTokModel.from_pretrained(root / "model").eval()


@pytest.fixture(scope="module")
def reference(root, model):
    """One uninterrupted single-process run over the three shards: (out dir, summary)."""
    out = root / "ref"
    return out, tokenize_dataset(str(root / "shards"), out, model, "tiny-test", **KW)


def rows_of(out) -> list[dict]:
    """All rows of a token dataset folder, read with `datasets`, sorted by key."""
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train",
                               cache_dir=str(out.parent / "hf-cache"))
    return sorted(ds.to_list(), key=lambda r: r["key"])


def direct_clip(root, key: str) -> torch.Tensor:
    """The clip of `key` cut by hand: its mp4 from the tar, first FRAMES frames, centre SIZE x SIZE, in [-1, 1]."""
    shard = root / "shards" / ("s0.tar" if key.startswith("a") else "s1.tar" if key.startswith("b") else "s2-bad.tar")
    with tarfile.open(shard) as tar:
        video = tar.extractfile(f"{key}.mp4").read()  # the first member of that name
    frames, _ = read_video(video)
    h, w = frames.shape[1:3]
    top, left = (h - SIZE) // 2, (w - SIZE) // 2
    crop = torch.from_numpy(frames[:FRAMES, top : top + SIZE, left : left + SIZE].copy())
    return crop.permute(3, 0, 1, 2).float() / 127.5 - 1


def test_rows_equal_direct_encoding(root, model, reference):
    out, summary = reference
    rows = rows_of(out)
    assert [r["key"] for r in rows] == sorted(GOOD)
    layout = model.token_layout(FRAMES, SIZE, SIZE)
    without_text_differs = False
    for row in rows:
        clip = direct_clip(root, row["key"])[None]
        ids, direct_layout = model.encode_to_sequence(clip, text=[GOOD[row["key"]][0]], order="frame_major")
        assert row["caption"] == GOOD[row["key"]][0]
        assert row["input_ids"] == ids[0].tolist()
        assert json.loads(row["layout"]) == direct_layout.to_dict() == layout.to_dict()
        assert row["tokenizer_name"] == "tiny-test" and row["tokenizer_fingerprint"] == model_fingerprint(model)
        if row["key"] == "a-1":
            without_text_differs = not torch.equal(model.encode_to_sequence(clip)[0], ids)
    assert without_text_differs  # the captions really were the prompts
    loaded = load_token_dataset(out, cache_dir=str(root / "hf-cache"))
    assert sorted(loaded.to_list(), key=lambda r: r["key"]) == rows
    info = token_dataset_info(loaded)
    assert info == TokenDatasetInfo(layout, "tiny-test", model_fingerprint(model), len(GOOD))
    assert summary["num_rows"] == len(GOOD) and summary["seq_len"] == layout.seq_len == len(rows[0]["input_ids"])
    assert sorted(p.name for p in (out / "data").iterdir()) == [f"train-r0-{i:05d}.parquet" for i in range(4)]


def test_layout_json_decodes_like_direct_ids(root, model, reference):
    rows = [r for r in rows_of(reference[0]) if r["key"] in ("a-1", "c-0")]
    layout = PyraTokTokenLayout.from_dict(json.loads(rows[0]["layout"]))
    video = model.decode_from_sequence(torch.tensor([r["input_ids"] for r in rows]), layout)
    clips = torch.stack([direct_clip(root, r["key"]) for r in rows])
    ids, direct_layout = model.encode_to_sequence(clips, text=[GOOD[r["key"]][0] for r in rows])
    expected = model.decode_from_sequence(ids, direct_layout)
    assert video.shape == (2, 3, FRAMES, SIZE, SIZE)
    assert torch.equal(video, expected)


def test_skips_are_counted_by_reason(reference):
    out, summary = reference
    assert summary["skipped"] == SKIPPED and summary["skipped_total"] == 6
    assert summary["written"] == len(GOOD) and summary["already_written"] == 0 and summary["pulled"] == 13
    assert json.loads((out / "pyratok_tokens.json").read_text()) == summary
    # The first of the two samples named a-1 is kept; the later copy is the duplicate.
    assert {r["key"]: r["caption"] for r in rows_of(out)}["a-1"] == GOOD["a-1"][0]


def test_resume_after_kill_reproduces_the_uninterrupted_run(root, model, reference, monkeypatch):
    out = root / "killed"
    real_write = token_datasets._write_part
    calls = []

    def dying_write(path, rows):
        calls.append(len(rows))
        if len(calls) == 3:  # killed while writing the third part: a half-written .tmp is left behind
            path.with_name(path.name + ".tmp").write_bytes(b"PAR1 half a part")
            raise KeyboardInterrupt("killed")
        real_write(path, rows)

    monkeypatch.setattr(token_datasets, "_write_part", dying_write)
    with pytest.raises(KeyboardInterrupt):
        tokenize_dataset(str(root / "shards"), out, model, "tiny-test", **KW)
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "train-r0-00000.parquet", "train-r0-00001.parquet", "train-r0-00002.parquet.tmp"
    ]
    monkeypatch.setattr(token_datasets, "_write_part", real_write)

    other = PyraTokModel(PyraTokConfig.from_preset("tiny")).eval()  # another tokenizer must not extend this dataset
    with pytest.raises(ValueError, match="tokenizer_fingerprint"):
        tokenize_dataset(str(root / "shards"), out, other, "other", **KW)

    summary = tokenize_dataset(str(root / "shards"), out, model, "tiny-test", **KW)
    assert summary["already_written"] == 4 and summary["written"] == 3 and summary["num_rows"] == len(GOOD)
    assert summary["skipped"] == SKIPPED
    resumed = rows_of(out)
    assert resumed == rows_of(reference[0])
    assert len({r["key"] for r in resumed}) == len(resumed)
    assert not list((out / "data").glob("*.tmp"))

    # resume=False starts over (and max_clips caps the dataset).
    summary = tokenize_dataset(str(root / "shards"), out, model, "tiny-test", **{**KW, "max_clips": 2}, resume=False)
    assert summary["num_rows"] == summary["written"] == 2 and [r["key"] for r in rows_of(out)] == ["a-0", "a-1"]


class FakeAccelerator:
    """The part of `accelerate.Accelerator` tokenize_dataset uses, for processes simulated by threads."""

    def __init__(self, rank: int, world: int, barrier: threading.Barrier) -> None:
        self.process_index, self.num_processes, self.barrier = rank, world, barrier

    def wait_for_everyone(self) -> None:
        self.barrier.wait(timeout=120)


def test_two_processes_share_the_clips(root, model, reference):
    out = root / "two"
    barrier = threading.Barrier(2)
    results, errors = {}, []

    def worker(rank: int) -> None:
        try:
            results[rank] = tokenize_dataset(
                str(root / "shards"), out, copy.deepcopy(model), "tiny-test", **KW,
                accelerator=FakeAccelerator(rank, 2, barrier),
            )
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results[0] == results[1] and results[0]["processes"] == 2
    assert results[0]["skipped"] == SKIPPED and results[0]["num_rows"] == len(GOOD)
    by_rank = {r: set(token_datasets.pq.read_table(p, columns=["key"])["key"].to_pylist())
               for r in range(2) for p in (out / "data").glob(f"train-r{r}-*.parquet")}
    assert by_rank[0] and by_rank[1] and not by_rank[0] & by_rank[1]
    # The source holds a-1 twice and the two copies went to different processes: one row is kept (either copy).
    rows, expected = rows_of(out), rows_of(reference[0])
    assert [r["key"] for r in rows] == sorted(GOOD) and results[0]["written"] == len(GOOD)
    assert [r for r in rows if r["key"] != "a-1"] == [r for r in expected if r["key"] != "a-1"]
    assert {r["caption"] for r in rows if r["key"] == "a-1"} <= {GOOD["a-1"][0], "a later copy of a-1"}


def test_txt_captions_and_a_dataset_folder(root, model, reference):
    write_shard(root / "txt.tar", [sample(k, text=True) for k in ("a-0", "b-1")])
    summary = tokenize_dataset(str(root / "txt.tar"), root / "txt-out", model, "tiny-test", **KW)
    assert summary["caption_column"] == "txt"
    assert [(r["key"], r["caption"]) for r in rows_of(root / "txt-out")] == [(k, GOOD[k][0]) for k in ("a-0", "b-1")]

    folder = root / "videofolder" / "train"  # a local `datasets` folder: the Hub code path, columns found
    folder.mkdir(parents=True)
    lines = []
    for key in ("a-2", "b-2"):
        (folder / f"{key}.mp4").write_bytes(sample(key)[1]["mp4"])
        lines.append(json.dumps({"file_name": f"{key}.mp4", "text": GOOD[key][0]}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    summary = tokenize_dataset(str(root / "videofolder"), root / "vf-out", model, "tiny-test", **KW)
    assert (summary["video_column"], summary["caption_column"]) == ("video", "text")
    rows = rows_of(root / "vf-out")
    assert [r["caption"] for r in rows] == [GOOD["a-2"][0], GOOD["b-2"][0]]
    reference_rows = {r["key"]: r for r in rows_of(reference[0])}
    assert [r["input_ids"] for r in rows] == [reference_rows[k]["input_ids"] for k in ("a-2", "b-2")]

    # A dataset of raw video bytes with no key column: rows are named by a hash of the bytes, not their position.
    videos = [sample(k)[1]["mp4"] for k in ("b-0", "c-0")]
    (root / "bytes-ds").mkdir()
    datasets.Dataset.from_dict({"video": videos, "caption": [GOOD["b-0"][0], GOOD["c-0"][0]]}).to_parquet(
        str(root / "bytes-ds" / "train.parquet"))
    tokenize_dataset(str(root / "bytes-ds"), root / "bytes-out", model, "tiny-test", **KW)
    rows = {r["key"]: r["input_ids"] for r in rows_of(root / "bytes-out")}
    assert rows == {"sha1-" + hashlib.sha1(v).hexdigest()[:20]: reference_rows[k]["input_ids"]
                    for v, k in zip(videos, ("b-0", "c-0"), strict=True)}


def _rows(**overrides) -> list[dict]:
    layout = json.dumps(PyraTokTokenLayout(((1, 2, 2),), (1,), 4).to_dict(), sort_keys=True)
    base = {"key": "k", "caption": "c", "input_ids": [1, 2, 3, 4], "layout": layout, "tokenizer_name": "t",
            "tokenizer_fingerprint": "f"}
    return [{**base, "key": "k0"}, {**base, "key": "k1", **overrides}]


def test_info_refuses_rows_that_disagree():
    info = token_dataset_info(datasets.Dataset.from_list(_rows()))
    assert info.num_rows == 2 and info.layout.seq_len == 4 and info.tokenizer_fingerprint == "f"
    other_layout = json.dumps(PyraTokTokenLayout(((1, 1, 4),), (1,), 4).to_dict(), sort_keys=True)
    with pytest.raises(ValueError, match="rows disagree on layout"):
        token_dataset_info(datasets.Dataset.from_list(_rows(layout=other_layout)))
    with pytest.raises(ValueError, match="rows disagree on tokenizer_fingerprint"):
        token_dataset_info(datasets.Dataset.from_list(_rows(tokenizer_fingerprint="g")))
    with pytest.raises(ValueError, match="seq_len 4"):
        token_dataset_info(datasets.Dataset.from_list(_rows(input_ids=[1, 2, 3])))
    with pytest.raises(ValueError, match="caption"):
        token_dataset_info(datasets.Dataset.from_list(_rows()).remove_columns("caption"))


def test_check_tokens_match(model, reference):
    info = token_dataset_info(load_token_dataset(reference[0], cache_dir=str(reference[0].parent / "hf-cache")))
    check_tokens_match(info, model, strict_fingerprint=True)
    vae = AutoencoderPyraTok(**model.config.to_init_kwargs()).eval()
    vae.load_state_dict(model.state_dict())
    check_tokens_match(info, vae, strict_fingerprint=True)  # the same weights in the diffusers class
    with pytest.raises(ValueError, match="codebook_dim: dataset 16, tokenizer 8"):
        check_tokens_match(info, PyraTokModel(PyraTokConfig.from_preset("tiny", codebook_dim=8)))
    with pytest.raises(ValueError, match=r"level_strides: dataset \(1, 2, 4, 8\), tokenizer \(1, 2, 4\)"):
        check_tokens_match(info, PyraTokModel(PyraTokConfig.from_preset(
            "tiny", num_levels=3, level_spatial_strides=[1, 2, 4])))
    torch.manual_seed(1)
    retrained = PyraTokModel(PyraTokConfig.from_preset("tiny"))
    with pytest.warns(UserWarning, match="fingerprint"):
        check_tokens_match(info, retrained)
    with pytest.raises(ValueError, match="fingerprint"):
        check_tokens_match(info, retrained, strict_fingerprint=True)


def test_cli_end_to_end(root, reference, capsys):
    out = root / "cli-out"
    code = cli.main(["tokenize-dataset", "--data", str(root / "shards" / "s0.tar"), str(root / "shards" / "s1.tar"),
                     "--out", str(out), "--model", str(root / "model"), "--frames", "5", "--size", "64",
                     "--batch-size", "2", "--no-progress"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "6 clips" in stdout and "6 new" in stdout
    rows = rows_of(out)
    reference_rows = [r for r in rows_of(reference[0]) if r["key"][0] in "ab"]
    assert [{**r, "tokenizer_name": "tiny-test"} for r in rows] == reference_rows
    assert {r["tokenizer_name"] for r in rows} == {"model"}  # the model folder's name
    assert datasets.load_dataset(str(out), split="train", cache_dir=str(root / "hf-cache")).num_rows == 6  # card


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--order", "zigzag"], "invalid choice: 'zigzag'"),
        (["--frames", "6"], "num_frames=6; PyraTok takes 4k + 1 frames"),
        (["--size", "32"], "height=32 is not a positive multiple of 64"),
        (["--size", "64x96"], "width=96 is not a positive multiple of 64"),
        (["--out", "{shards}"], "is the data"),
    ],
)
def test_cli_errors(root, capsys, args, message):
    shards = str(root / "shards")
    argv = ["tokenize-dataset", "--data", shards, "--out", str(root / "bad-out"), "--model", str(root / "model"),
            "--no-progress"]
    code = cli.main(argv + [a.format(shards=shards) for a in args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (root / "bad-out" / "data").exists() or not list((root / "bad-out" / "data").iterdir())


def test_no_prompt_encodes_without_text_and_keeps_the_captions(root, model, tmp_path):
    """A tokenizer trained without text guidance is run without prompts (`--no-prompt`); the captions stay."""
    out = tmp_path / "no-prompt"
    tokenize_dataset(str(root / "shards" / "s0.tar"), out, model, "tiny-test", prompts=False, **KW)
    rows = rows_of(out)
    assert [r["key"] for r in rows] == ["a-0", "a-1", "a-2"]
    for row in rows:
        clip = direct_clip(root, row["key"])[None]
        assert row["input_ids"] == model.encode_to_sequence(clip)[0][0].tolist()
        assert row["caption"] == GOOD[row["key"]][0]
    with_text = model.encode_to_sequence(direct_clip(root, "a-1")[None], text=[GOOD["a-1"][0]])[0][0].tolist()
    assert rows[1]["input_ids"] != with_text  # the captions would have changed the ids

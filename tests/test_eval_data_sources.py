"""Evaluation reads what training reads: a folder of shards, one .tar, or a glob, with .json or .txt captions."""

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch

from modeling_pyratok import PyraTokConfig, PyraTokModel
from pyratok.data_sources import resolve_data_files
from pyratok.evaluation import cli
from pyratok.evaluation.clips import ClipReader, split_folder, split_shards
from pyratok.training.data import VideoDataConfig, build_stream
from pyratok.training.make_shards import make_shards

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    """A test split of 4 clips (9 frames, 64x64) in two shards of 2."""
    out = tmp_path_factory.mktemp("sources")
    make_shards(out, seed=0, size=64, frames=9, num_train=2, num_val=2, num_test=4, shard_size=2)
    return out / "test"


def members(shard: Path) -> dict[str, bytes]:
    with tarfile.open(shard) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def keys_of(shard: Path) -> list[str]:
    return sorted({name.split(".", 1)[0] for name in members(shard)})


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in sorted(files.items()):  # WebDataset: a sample's members next to each other
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_folder_one_tar_and_a_glob_read_the_same_clips(split):
    shards = sorted(split.glob("*.tar"))
    assert len(shards) == 2
    first, second = keys_of(shards[0]), keys_of(shards[1])
    assert len(first) == len(second) == 2 and not set(first) & set(second)

    folder = {c.key: c for c in ClipReader(split)}
    assert sorted(folder) == sorted(first + second)
    one = {c.key: c for c in ClipReader(shards[1])}
    assert sorted(one) == second
    assert all(torch.equal(one[k].video, folder[k].video) and one[k].caption == folder[k].caption for k in one)
    assert sorted(c.key for c in ClipReader(str(split / "*.tar"))) == sorted(folder)
    assert [c.key for c in ClipReader(str(split / "*-00000.tar"))] == first
    # training resolves the same sources to the same files
    for source in (split, shards[0], str(split / "*.tar")):
        assert split_shards(source) == [Path(p) for p in resolve_data_files(str(source))]
    assert split_folder(shards[0]) == split_folder(str(split / "*.tar")) == split_folder(split) == split


def test_txt_captions_are_read_like_json_ones(split, tmp_path):
    shard = sorted(split.glob("*.tar"))[0]
    files = members(shard)
    keys = keys_of(shard)
    captions = {k: json.loads(files[f"{k}.json"])["caption"] for k in keys}
    assert all(captions.values())
    txt = {name: data for name, data in files.items() if not name.endswith(".json")}
    txt.update({f"{k}.txt": f"{captions[k]}\n".encode() for k in keys})
    txt_shard = write_tar(tmp_path / "txt-00000.tar", txt)

    by_json = {c.key: c for c in ClipReader(shard)}
    reader = ClipReader(txt_shard)
    by_txt = {c.key: c for c in reader}
    assert reader.stats.skipped == 0 and sorted(by_txt) == keys
    for k in keys:
        assert by_txt[k].caption == captions[k] and by_txt[k].meta == {}
        assert torch.equal(by_txt[k].video, by_json[k].video)
        assert by_txt[k].fps == pytest.approx(8.0)  # make_shards' rate, read from the container without a json

    # training reads the same .txt shard through its caption column
    stream = build_stream(VideoDataConfig(data_files=[str(txt_shard)], caption_column="txt", num_frames=[9],
                                          resolutions=[[64, 64]], batch_size=2, shuffle_buffer=0))
    batch = next(iter(stream))
    assert sorted(zip(batch["keys"], batch["captions"], strict=True)) == sorted(captions.items())


def test_a_sample_without_any_caption_is_skipped_and_named(split, tmp_path):
    shard = sorted(split.glob("*.tar"))[0]
    files = members(shard)
    first, kept = keys_of(shard)
    files.pop(f"{first}.json")
    reader = ClipReader(write_tar(tmp_path / "bare-00000.tar", files))
    assert [c.key for c in reader] == [kept]
    assert reader.stats.skipped_keys == {first: "missing field(s) ['json or txt']"}


def test_bad_sources_name_the_path(split, tmp_path):
    missing = tmp_path / "no-such-split"
    with pytest.raises(FileNotFoundError, match=f"data not found: {missing}"):
        ClipReader(missing)
    with pytest.raises(ValueError, match=r"'.*nothing-\*\.tar' matches no file"):
        ClipReader(str(tmp_path / "nothing-*.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=f"no \\*.tar shards in folder {tmp_path / 'empty'}"):
        ClipReader(tmp_path / "empty")
    with pytest.raises(ValueError, match="'hf://datasets/x/y.tar' is a URL"):
        split_shards("hf://datasets/x/y.tar")
    assert resolve_data_files("hf://datasets/x/y.tar") == ["hf://datasets/x/y.tar"]  # training streams URLs


def test_cli_reconstruction_takes_one_tar_and_a_glob(split, tmp_path, capsys):
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    PyraTokModel(PyraTokConfig.from_preset("tiny")).save_pretrained(model_dir)
    shard = sorted(split.glob("*.tar"))[1]
    for source, expected in ((str(shard), 2), (str(split / "*.tar"), 4)):
        out = tmp_path / "recon.json"
        code = cli.main(["reconstruction", "--model", str(model_dir), "--data", source, "--lpips-net", "none",
                         "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        assert json.loads(out.read_text())["results"]["num_clips"] == expected
    assert cli.main(["reconstruction", "--model", str(model_dir), "--data", str(tmp_path / "nowhere.tar")]) == 2
    assert f"pyratok-eval: error: data not found: {tmp_path / 'nowhere.tar'}" in capsys.readouterr().err

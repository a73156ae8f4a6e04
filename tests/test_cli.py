"""The `pyratok` command (pyratok/cli.py), run in-process on a tiny checkpoint and tiny mp4 clips."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from modeling_pyratok import PyraTokConfig, PyraTokModel
from pyratok import cli
from pyratok.video_io import read_video, video_to_tensor, write_video
from tests.conftest import activate_text_attention, make_video

PROMPT = "a red square drifts to the right"
LEVEL_SHAPES_64 = [(1, 3, 8, 8), (1, 3, 4, 4), (1, 3, 2, 2), (1, 3, 1, 1)]


def smooth_clip(frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Float `(3, T, H, W)` in [-1, 1], smooth so that H.264 keeps it nearly intact."""
    clip = make_video(frames=frames, size=64, seed=seed)
    return F.interpolate(clip, size=(frames, height, width), mode="trilinear").clamp(-1, 1)[0]


class Capture:
    """Records the uint8 frames `cli` hands to `write_video` (before mp4 compression), by file name."""

    def __init__(self) -> None:
        self.frames: dict[str, np.ndarray] = {}

    def __call__(self, path, frames, fps=8.0, crf=12):
        self.frames[str(path).rsplit("/", 1)[-1]] = np.array(frames)
        write_video(path, frames, fps=fps, crf=crf)


def run(argv, capsys) -> tuple[int, str, str, Capture]:
    capture = Capture()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "write_video", capture)
        code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err, capture


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = PyraTokModel(PyraTokConfig.from_preset("tiny")).eval()
    activate_text_attention(model)  # so that the prompt changes the tokens
    model.save_pretrained(root / "model")
    write_video(root / "clip.mp4", smooth_clip(9, 64, 64), fps=8)
    return root


@pytest.fixture(scope="module")
def model(workdir) -> PyraTokModel:
    return PyraTokModel.from_pretrained(workdir / "model").eval()


@pytest.fixture(scope="module")
def reconstructed(workdir):
    """`pyratok reconstruct` once for the module: (output dir, captured frames, stderr)."""
    out = workdir / "rec"
    capture = Capture()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "write_video", capture)
        code = cli.main(
            [
                "reconstruct",
                str(workdir / "clip.mp4"),
                "--prompt",
                PROMPT,
                "--model",
                str(workdir / "model"),
                "--out",
                str(out),
            ]
        )
    assert code == 0
    return out, capture


def test_reconstruct_writes_every_output(reconstructed):
    out, capture = reconstructed
    for name in ("reconstruction.mp4", "side_by_side.mp4", "tokens.safetensors", "metrics.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    recon, _ = read_video(out / "reconstruction.mp4")
    side, _ = read_video(out / "side_by_side.mp4")
    assert recon.shape == (9, 64, 64, 3) and side.shape == (9, 64, 128, 3)
    frames = capture.frames
    assert np.array_equal(frames["side_by_side.mp4"][:, :, 64:], frames["reconstruction.mp4"])


def test_metrics_are_sane(reconstructed, model, workdir):
    out, _ = reconstructed
    metrics = json.loads((out / "metrics.json").read_text())
    assert {
        "psnr",
        "ssim",
        "lpips",
        "lpips_unavailable_reason",
        "bits_per_pixel",
        "frames",
        "height",
        "width",
        "levels",
        "model",
        "prompt",
    } <= set(metrics)
    assert isinstance(metrics["psnr"], float) and math.isfinite(metrics["psnr"])
    assert -1 <= metrics["ssim"] <= 1
    assert metrics["bits_per_pixel"] == model.bits_per_pixel(64, 64, 9)
    # LPIPS is a float when its AlexNet weights are cached, else null with the reason.
    if metrics["lpips"] is None:
        assert isinstance(metrics["lpips_unavailable_reason"], str) and "LPIPS" in metrics["lpips_unavailable_reason"]
    else:
        assert metrics["lpips"] >= 0 and metrics["lpips_unavailable_reason"] is None
    assert (metrics["frames"], metrics["height"], metrics["width"]) == (9, 64, 64)
    assert metrics["prompt"] == PROMPT and metrics["model"] == str((workdir / "model").resolve())
    assert [lv["level"] for lv in metrics["levels"]] == [0, 1, 2, 3]
    for level, shape in zip(metrics["levels"], LEVEL_SHAPES_64, strict=True):
        assert level["tokens"] == math.prod(shape)
        assert 1 <= level["distinct_codes"] <= level["tokens"]
        assert 1 <= level["perplexity"] <= level["distinct_codes"] + 1e-9


def test_tokens_file_holds_the_whole_clip_tokens(reconstructed, model, workdir):
    out, _ = reconstructed
    with safe_open(out / "tokens.safetensors", framework="pt") as f:
        assert sorted(f.keys()) == ["level_0", "level_1", "level_2", "level_3"]
        ids = [f.get_tensor(f"level_{i}") for i in range(4)]
        meta = f.metadata()
    assert [tuple(t.shape) for t in ids] == LEVEL_SHAPES_64 and all(t.dtype == torch.int64 for t in ids)
    assert json.loads(meta["prompt"]) == PROMPT and meta["model"] == str((workdir / "model").resolve())
    assert json.loads(meta["latent_size"]) == [3, 8, 8] and json.loads(meta["input_size"]) == [9, 64, 64]
    assert meta["frames"] == "9" and json.loads(meta["fps"]) == 8.0
    # Streaming inside the CLI gives exactly the ids of tokenizing the decoded clip whole.
    frames, _ = read_video(workdir / "clip.mp4")
    whole = model.tokenize(video_to_tensor(frames).unsqueeze(0), text=PROMPT)
    assert all(torch.equal(a, b) for a, b in zip(ids, whole.ids, strict=True))


def test_detokenize_reproduces_the_reconstruction(reconstructed, workdir, capsys):
    out, rec_capture = reconstructed
    for k in (1, 2):
        target = workdir / f"detok_{k}.mp4"
        code, _, _, capture = run(
            ["detokenize", out / "tokens.safetensors", "--out", target, "--chunk-latent-frames", k], capsys
        )
        assert code == 0
        assert np.array_equal(capture.frames[target.name], rec_capture.frames["reconstruction.mp4"])
        # Same frames, single-threaded x264: the same mp4 bytes.
        assert target.read_bytes() == (out / "reconstruction.mp4").read_bytes()


def test_tokenize_gives_reconstructs_tokens(reconstructed, workdir, capsys):
    out, _ = reconstructed
    target = workdir / "tok" / "clip.safetensors"
    code, stdout, _, _ = run(
        [
            "tokenize",
            workdir / "clip.mp4",
            "--prompt",
            PROMPT,
            "--model",
            workdir / "model",
            "--out",
            target,
            "--chunk-latent-frames",
            2,
        ],
        capsys,
    )
    assert code == 0 and str(target) in stdout
    with safe_open(target, framework="pt") as a, safe_open(out / "tokens.safetensors", framework="pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())
    # Without the prompt the (text-conditioned) tokens differ.
    other = workdir / "tok" / "no_prompt.safetensors"
    assert run(["tokenize", workdir / "clip.mp4", "--model", workdir / "model", "--out", other], capsys)[0] == 0
    with safe_open(target, framework="pt") as a, safe_open(other, framework="pt") as b:
        assert not torch.equal(a.get_tensor("level_0"), b.get_tensor("level_0"))


def test_odd_frame_counts_and_sizes_are_fitted_with_a_note(workdir, capsys):
    clip = workdir / "odd.mp4"
    write_video(clip, smooth_clip(11, 72, 80, seed=1), fps=12)
    out = workdir / "odd"
    code, _, err, capture = run(["reconstruct", clip, "--model", workdir / "model", "--out", out], capsys)
    assert code == 0
    assert "first 9 of 11 frames (2 dropped)" in err
    assert "72x80 to 64x64" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["frames"], metrics["height"], metrics["width"]) == (9, 64, 64)
    assert metrics["prompt"] is None and metrics["fps"] == 12.0
    assert capture.frames["reconstruction.mp4"].shape == (9, 64, 64, 3)
    assert capture.frames["side_by_side.mp4"].shape == (9, 64, 128, 3)
    code, _, err, _ = run(["reconstruct", clip, "--model", workdir / "model", "--out", out, "--max-frames", 6], capsys)
    assert code == 0 and "first 5 of 6 frames" in err
    assert json.loads((out / "metrics.json").read_text())["frames"] == 5


# ---- errors ---------------------------------------------------------------------------------------------------------


def assert_clean_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("pyratok: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[-1]


def test_missing_input_file(workdir, capsys):
    missing = workdir / "nowhere" / "clip.mp4"
    code, _, err, _ = run(["reconstruct", missing, "--model", workdir / "model", "--out", workdir / "x"], capsys)
    assert_clean_error(code, err, str(missing), "not found")


def test_undecodable_video(workdir, capsys):
    garbage = workdir / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    code, _, err, _ = run(["reconstruct", garbage, "--model", workdir / "model", "--out", workdir / "x"], capsys)
    assert_clean_error(code, err, "cannot decode", str(garbage))


def test_video_smaller_than_one_multiple(workdir, capsys):
    small = workdir / "small.mp4"
    write_video(small, smooth_clip(5, 48, 96), fps=8)
    code, _, err, _ = run(["tokenize", small, "--model", workdir / "model", "--out", workdir / "x.st"], capsys)
    assert_clean_error(code, err, "48x96", "at least 64x64")


def test_folders_that_are_not_checkpoints(workdir, capsys, tmp_path):
    clip = workdir / "clip.mp4"
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err, _ = run(["reconstruct", clip, "--model", empty, "--out", tmp_path / "o"], capsys)
    assert_clean_error(code, err, str(empty), "no config.json")

    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    code, _, err, _ = run(["reconstruct", clip, "--model", bert, "--out", tmp_path / "o"], capsys)
    assert_clean_error(code, err, "model_type='bert'")

    # A PyraTok config whose weights belong to another configuration.
    mismatched = tmp_path / "mismatched"
    PyraTokModel(PyraTokConfig.from_preset("tiny")).save_pretrained(mismatched)
    config = json.loads((mismatched / "config.json").read_text())
    (mismatched / "config.json").write_text(json.dumps({**config, "hidden_size": config["hidden_size"] * 2}))
    code, _, err, _ = run(["reconstruct", clip, "--model", mismatched, "--out", tmp_path / "o"], capsys)
    assert_clean_error(code, err, "cannot load a PyraTok model", str(mismatched))

    code, _, err, _ = run(["reconstruct", clip, "--model", tmp_path / "absent", "--out", tmp_path / "o"], capsys)
    assert_clean_error(code, err, "model folder not found")


def test_missing_default_model_is_named(workdir, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "DEFAULT_MODEL", tmp_path / "model_cards" / "pyratok-small-procedural")
    code, _, err, _ = run(["reconstruct", workdir / "clip.mp4", "--out", tmp_path / "o"], capsys)
    assert_clean_error(code, err, "default model", "pyratok-small-procedural", "--model")


def test_bad_token_files(reconstructed, workdir, capsys, tmp_path):
    model = workdir / "model"
    missing = tmp_path / "none.safetensors"
    code, _, err, _ = run(["detokenize", missing, "--model", model, "--out", tmp_path / "v.mp4"], capsys)
    assert_clean_error(code, err, "token file not found", str(missing))

    no_levels = tmp_path / "no_levels.safetensors"
    save_file({"ids": torch.zeros(1, 3, 8, 8, dtype=torch.int64)}, str(no_levels))
    code, _, err, _ = run(["detokenize", no_levels, "--model", model, "--out", tmp_path / "v.mp4"], capsys)
    assert_clean_error(code, err, "no level_<i> tensors")

    not_safetensors = tmp_path / "junk.safetensors"
    not_safetensors.write_bytes(b"\x00" * 64)
    code, _, err, _ = run(["detokenize", not_safetensors, "--model", model, "--out", tmp_path / "v.mp4"], capsys)
    assert_clean_error(code, err, "cannot read")


def test_tokens_that_do_not_fit_the_model(reconstructed, workdir, capsys, tmp_path):
    out, _ = reconstructed
    with safe_open(out / "tokens.safetensors", framework="pt") as f:
        ids = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()

    def detok(tensors, metadata=meta, model=workdir / "model"):
        path = tmp_path / "t.safetensors"
        save_file(tensors, str(path), metadata=metadata)
        code, _, err, _ = run(["detokenize", path, "--model", model, "--out", tmp_path / "v.mp4"], capsys)
        return code, err

    three = {k: v for k, v in ids.items() if k != "level_3"}
    assert_clean_error(*detok(three), "3 levels", "the model has 4")
    wrong_shape = {**ids, "level_2": torch.zeros(1, 3, 4, 4, dtype=torch.int64)}
    assert_clean_error(*detok(wrong_shape), "level 2", "(1, 3, 4, 4)", "(1, 3, 2, 2)")
    assert_clean_error(*detok(ids, {**meta, "codebook_dim": "12"}), "codebook_dim 12", "16 in the model")
    too_big = {**ids, "level_0": torch.full((1, 3, 8, 8), 2**16)}
    assert_clean_error(*detok(too_big), "level_0", "[0, 65536)")

    # A model with another pyramid (3 levels) rejects 4-level tokens.
    other = tmp_path / "three_levels"
    PyraTokModel(PyraTokConfig.from_preset("tiny", num_levels=3, level_spatial_strides=[1, 2, 4])).save_pretrained(
        other
    )
    assert_clean_error(*detok(ids, model=other), "4 levels", "the model has 3")


def test_help_and_usage_errors(capsys):
    assert cli.main(["--help"]) == 0
    assert "reconstruct" in capsys.readouterr().out
    assert cli.main(["reconstruct", "--help"]) == 0
    assert "metrics.json" in capsys.readouterr().out
    assert cli.main([]) == 2
    assert cli.main(["reconstruct", "clip.mp4", "--out", "x", "--chunk-latent-frames", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err

"""User faults (issue 24, `research/reliability.md` §1, 2, 4, 5), one test per class:

1. an output that names an input is refused and the input stays byte-identical;
2. what used to be silently wrong is refused or noted (another model's tokens, NaN / integer weights, unknown config
   fields, frame rates an mp4 cannot hold, unordered or mistyped prompts, NaN latents, empty or mis-shaped inputs);
3. every error is one line that names its cause, and path errors come before any work.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers.testing_utils import CaptureLogger

from modeling_pyratok import AutoencoderPyraTok, PyraTokConfig, PyraTokModel, checkpoint_pyratok
from modeling_pyratok.convert_official import main as convert_main
from pyratok import cli
from pyratok.evaluation import cli as eval_cli
from pyratok.video_io import VideoDecodeError, encode_video, write_video
from tests.conftest import make_video
from tests.test_official_checkpoint import BACKBONE, official_state_dict, write_official_folder

REPO_ROOT = Path(__file__).resolve().parents[1]
# A quantizer weight of the tiny preset and a backbone one: both faces must name whichever is bad.
QUANTIZER_KEY = "core.quantizer.blocks.0.attn.in_proj_weight"
BACKBONE_KEY = "core.backbone.vae.decoder.conv_out.weight"


def run_cli(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()  # only this command's output
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, prog: str = "pyratok") -> str:
    """The stderr of a failed command: exactly one `prog: error: ...` line (notes aside); returns it."""
    errors = [line for line in err.splitlines() if not line.startswith(f"{prog}: note:")]
    assert len(errors) == 1 and errors[0].startswith(f"{prog}: error: "), err
    return errors[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Two tiny models of one layout but different weights (A, B), A's diffusers-layout copy, a clip."""
    root = tmp_path_factory.mktemp("faults")
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        PyraTokModel(PyraTokConfig.from_preset("tiny")).save_pretrained(root / name)
    vae = AutoencoderPyraTok.from_pretrained(root / "a")
    vae.save_pretrained(root / "a_diffusers")
    write_video(root / "clip.mp4", np.zeros((5, 64, 64, 3), dtype=np.uint8) + 100, fps=8)
    return {"root": root, "a": root / "a", "b": root / "b", "a_diffusers": root / "a_diffusers"}


@pytest.fixture(scope="module")
def model_a(folders) -> PyraTokModel:
    return PyraTokModel.from_pretrained(folders["a"]).eval()


def write_token_file(path: Path, model: PyraTokModel, model_id: str, fingerprint: bool = True, **meta) -> Path:
    """Tokens of a 1-frame clip as `pyratok tokenize` writes them (optionally without the fingerprint)."""
    ids = model.tokenize(make_video(frames=1)).ids
    video = cli.InputVideo(frames=np.zeros((1, 64, 64, 3), np.uint8), fps=8.0, source_size=(1, 64, 64))
    metadata = {**cli.token_metadata(model, model_id, None, video, 8.0), **meta}
    if not fingerprint:
        del metadata["model_fingerprint"]
    cli.write_tokens(path, [[level] for level in ids], metadata)
    return path


# ---- 1. never destroy an input ----------------------------------------------------------------------------------


def test_an_output_that_is_an_input_is_refused_and_the_input_kept(folders, model_a, tmp_path, capsys):
    video = tmp_path / "victim.mp4"
    video.write_bytes((folders["root"] / "clip.mp4").read_bytes())
    before = digest(video)
    # The same file under another spelling (and through a symlink) is still the input.
    (tmp_path / "link.mp4").symlink_to(video)
    for out in (video, tmp_path / "." / "victim.mp4", tmp_path / "link.mp4"):
        code, _, err = run_cli(["tokenize", video, "--model", folders["a"], "--out", out], capsys)
        assert code == 2 and "is the input video; refusing to overwrite it" in one_error_line(err)
    assert digest(video) == before

    tokens = write_token_file(tmp_path / "t.safetensors", model_a, str(folders["a"]))
    before = digest(tokens)
    code, _, err = run_cli(["detokenize", tokens, "--out", tokens], capsys)
    assert code == 2 and "is the token file; refusing to overwrite it" in one_error_line(err)
    assert digest(tokens) == before

    # reconstruct writes four files into its folder: none may be the input video.
    inside = tmp_path / "rec" / "reconstruction.mp4"
    inside.parent.mkdir()
    inside.write_bytes(video.read_bytes())
    code, _, err = run_cli(["reconstruct", inside, "--model", folders["a"], "--out", inside.parent], capsys)
    assert code == 2 and "is the input video" in one_error_line(err) and digest(inside) == digest(video)


def test_convert_official_refuses_an_output_inside_its_source(tmp_path, capsys):
    torch.manual_seed(0)
    from diffusers import AutoencoderKLWan

    src = write_official_folder(tmp_path / "official", official_state_dict(AutoencoderKLWan(**BACKBONE).eval()))
    (src / "README.md").write_text("---\nlicense: apache-2.0\n---\n")
    before = {p.name: digest(p) for p in src.iterdir()}
    for out in (src, src / "native", tmp_path / "official" / ".." / "official"):
        with pytest.raises(SystemExit) as exit_:
            convert_main([str(src), str(out)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and "inside the source folder" in err
    assert {p.name: digest(p) for p in src.iterdir()} == before and not (src / "native").exists()
    # Next to the source is fine, and leaves it as it was.
    assert convert_main([str(src), str(tmp_path / "native")]) == 0
    assert json.loads((tmp_path / "native" / "config.json").read_text())["quantizer_mode"] == "residual"
    assert {p.name: digest(p) for p in src.iterdir()} == before


# ---- 2. silently wrong → refused or noted --------------------------------------------------------------------------


def test_tokens_of_another_model_are_refused_unless_forced(folders, model_a, tmp_path, capsys):
    tokens = write_token_file(tmp_path / "t.safetensors", model_a, str(folders["a"]))
    # The fingerprint is a property of the weights: A reloaded matches, B (same layout, other seed) does not, and
    # changing one sampled weight value of A changes it.
    fp_a = cli.model_fingerprint(model_a)
    assert fp_a == cli.model_fingerprint(PyraTokModel.from_pretrained(folders["a"]))
    assert fp_a != cli.model_fingerprint(PyraTokModel.from_pretrained(folders["b"]))
    edited = PyraTokModel.from_pretrained(folders["a"])
    with torch.no_grad():
        edited.core.quantizer.blocks[0].attn.in_proj_weight.view(-1)[0] += 1.0
    assert cli.model_fingerprint(edited) != fp_a

    out = tmp_path / "v.mp4"
    code, _, err = run_cli(["detokenize", tokens, "--model", folders["b"], "--out", out], capsys)
    line = one_error_line(err)
    assert code == 2 and fp_a in line and "--force" in line and not out.exists()
    code, _, err = run_cli(["detokenize", tokens, "--model", folders["b"], "--out", out, "--force"], capsys)
    assert code == 0 and "decoding anyway (--force)" in err and out.is_file()
    # The recorded model (no --model) decodes silently; an old file without a fingerprint decodes with a note.
    code, _, err = run_cli(["detokenize", tokens, "--out", out], capsys)
    assert code == 0 and "fingerprint" not in err
    old = write_token_file(tmp_path / "old.safetensors", model_a, str(folders["a"]), fingerprint=False)
    code, _, err = run_cli(["detokenize", old, "--model", folders["b"], "--out", out], capsys)
    assert code == 0 and "records no model fingerprint" in err


def _corrupt_copy(src: Path, dst: Path, weights: str, key: str, value: torch.Tensor) -> Path:
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    state = load_file(str(src / weights))
    state[key] = value(state[key])
    save_file(state, str(dst / weights), metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize("layout", ["a", "a_diffusers"])
@pytest.mark.parametrize("cls", [PyraTokModel, AutoencoderPyraTok])
@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        (QUANTIZER_KEY, lambda t: torch.full_like(t, float("nan")), "NaN or Inf"),
        (BACKBONE_KEY, lambda t: t.clone().index_fill_(0, torch.tensor([0]), float("inf")), "NaN or Inf"),
        (QUANTIZER_KEY, lambda t: (t * 100).to(torch.int32), "non-float"),
    ],
)
def test_bad_weight_values_fail_naming_the_tensor(folders, tmp_path, layout, cls, key, value, named):
    weights = "model.safetensors" if layout == "a" else "diffusion_pytorch_model.safetensors"
    bad = _corrupt_copy(folders[layout], tmp_path / "bad", weights, key, value)
    with pytest.raises(ValueError, match=named) as info:
        cls.from_pretrained(bad)
    assert key in str(info.value)


def test_unknown_config_fields_are_named_in_a_warning(folders, tmp_path):
    for layout, cls in (("a", PyraTokModel), ("a_diffusers", AutoencoderPyraTok)):
        folder = tmp_path / layout
        folder.mkdir()
        for f in folders[layout].iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        raw = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**raw, "text_max_lenght": 7, "zz_extra": 1}))
        for load in (PyraTokModel, AutoencoderPyraTok):
            with CaptureLogger(checkpoint_pyratok.logger) as captured:
                load.from_pretrained(folder)
            assert "['text_max_lenght', 'zz_extra']" in captured.out, (layout, load)
        # A folder as saved raises no warning.
        with CaptureLogger(checkpoint_pyratok.logger) as captured:
            cls.from_pretrained(folders[layout])
        assert "does not know" not in captured.out


@pytest.mark.parametrize("fps", ["1e308", "0.0001", "0", "-8", "nan", "inf", "2e6"])
def test_frame_rates_an_mp4_cannot_hold_are_usage_errors(fps, capsys):
    code, _, err = run_cli(["detokenize", "t.safetensors", "--out", "v.mp4", "--fps", fps], capsys)
    assert code == 2 and f"argument --fps: frame rate {fps} is outside [0.001, 1e+06]" in err


def test_the_frame_rate_range_is_what_write_video_stores(folders, model_a, tmp_path, capsys):
    # The bounds the parser takes are stored exactly (read back independently with PyAV).
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    for fps in (cli.MIN_FPS, cli.MAX_FPS, 23.976):
        with av.open(io.BytesIO(encode_video(frames, fps=fps))) as container:
            assert float(container.streams.video[0].average_rate) == pytest.approx(fps, rel=1e-4)
    # A token file recording an absurd rate decodes at the default, with a note.
    tokens = write_token_file(tmp_path / "t.safetensors", model_a, str(folders["a"]), fps="1e308")
    code, out, err = run_cli(["detokenize", tokens, "--out", tmp_path / "v.mp4"], capsys)
    assert code == 0 and "ignoring the frame rate 1e+308" in err and f"at {cli.DEFAULT_FPS:g} fps" in out


def test_mistyped_prompts_fail_naming_the_type(model_a):
    vae = AutoencoderPyraTok(**model_a.config.to_init_kwargs()).eval()
    vae.enable_slicing()
    two = make_video(batch=2, frames=1)
    for text, kind in (({"a", "b"}, "set"), (5, "int"), (b"ab", "bytes"), ({"a": 1, "b": 2}, "dict")):
        with pytest.raises(ValueError, match=f"text is a {kind};"):
            model_a.tokenize(two, text=text)
        with pytest.raises(ValueError, match=f"text is a {kind};"):
            vae.encode(two, text=text)
    # An ordered sequence of one prompt per item works.
    assert len(model_a.tokenize(two, text=("a red square", None)).ids) == model_a.config.num_levels


def test_nan_latents_and_empty_or_misshaped_inputs_are_value_errors(model_a):
    vae = AutoencoderPyraTok(**model_a.config.to_init_kwargs()).eval()
    z = torch.zeros(1, model_a.config.z_dim, 2, 8, 8)
    assert vae.decode(z[:, :, :1]).sample.shape == (1, 3, 1, 64, 64)
    for bad in (float("nan"), float("inf")):
        z[0, 0, 1, 3, 3] = bad  # one value in the second latent frame
        with pytest.raises(ValueError, match="latent contains NaN or Inf"):
            vae.decode(z)
    for shape in ((1, 3, 5, 0, 64), (1, 3, 5, 64, 0), (1, 3, 0, 64, 64)):
        with pytest.raises(ValueError, match=r"T, H and W must all be >= 1"):
            model_a.tokenize(torch.zeros(shape))
    ids = model_a.tokenize(make_video(frames=1)).ids
    levels = model_a.config.num_levels
    for wrong in (ids[:3], [*ids, ids[-1]]):
        with pytest.raises(ValueError, match=f"expected {levels} id tensors \\(one per level\\), got {len(wrong)}"):
            model_a.detokenize(wrong)
        with pytest.raises(ValueError, match=f"got {len(wrong)}"):
            vae.decode_from_ids(wrong)
    with pytest.raises(ValueError, match=r"level 0 must be a \(B, T', H_l, W_l\) tensor, got \(1, 8, 8\)"):
        model_a.detokenize([i[0] for i in ids])
    with pytest.raises(ValueError, match="level 0 must be a .* tensor, got list"):
        vae.decode_from_ids([i.tolist() for i in ids])


# ---- 3. every error one line, naming its cause --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("num_levels", "4", "num_levels='4' is a str; expected int"),
        ("codebook_dim", 16.0, "codebook_dim=16.0 is a float; expected int"),
        ("level_spatial_strides", "1,2,4,8", "level_spatial_strides='1,2,4,8' is a str"),
        ("level_spatial_strides", [1, 2, 4.0, 8], "level_spatial_strides=[1, 2, 4.0, 8] must be a list of ints"),
        ("hidden_size", None, "hidden_size=None is a null; expected int"),
        ("num_levels", True, "num_levels=True is a bool; expected int"),
        ("scaling_factor", "1.0", "scaling_factor='1.0' is a str; expected float"),
        ("text_max_length", 0, "{'text_max_length': 0} must be >= 1"),
        ("num_attention_heads", 0, "{'num_attention_heads': 0} must be >= 1"),
    ],
)
def test_config_fields_of_the_wrong_type_name_the_field(folders, tmp_path, capsys, field, value, named):
    with pytest.raises(ValueError) as info:
        PyraTokConfig.from_preset("tiny", **{field: value})
    assert named in str(info.value)
    # The same through a checkpoint folder, both faces, and the CLI (one line, exit 2).
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((folders["a"] / "model.safetensors").read_bytes())
    raw = json.loads((folders["a"] / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, field: value}))
    for cls in (PyraTokModel, AutoencoderPyraTok):
        with pytest.raises(ValueError, match=field):
            cls.from_pretrained(folder)
    code, _, err = run_cli(["tokenize", folders["root"] / "clip.mp4", "--model", folder, "--out", tmp_path / "t"],
                           capsys)
    assert code == 2 and named in one_error_line(err)


def test_a_config_that_is_not_a_json_object_is_named(folders, tmp_path, capsys):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((folders["a"] / "model.safetensors").read_bytes())
    (folder / "config.json").write_text("[1, 2, 3]")
    for cls in (PyraTokModel, AutoencoderPyraTok):
        with pytest.raises(ValueError, match="holds a JSON list, not an object"):
            cls.from_pretrained(folder)
    code, _, err = run_cli(["tokenize", folders["root"] / "clip.mp4", "--model", folder, "--out", tmp_path / "t"],
                           capsys)
    assert code == 2 and "holds a JSON list" in one_error_line(err)


def test_a_mistyped_model_path_is_not_found_locally_without_the_hub(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip = tmp_path / "clip.mp4"
    write_video(clip, np.zeros((1, 64, 64, 3), np.uint8))
    typo = "model_cards/pyratok-small-procedurall"
    code, _, err = run_cli(["tokenize", clip, "--model", typo, "--out", tmp_path / "t"], capsys)
    line = one_error_line(err)
    assert code == 2 and f"model folder not found locally: {typo}" in line
    assert "did you mean model_cards/pyratok-small-procedural?" in line
    for local in ("./nope", "../nope/x", "a/b/c"):
        code, _, err = run_cli(["tokenize", clip, "--model", local, "--out", tmp_path / "t"], capsys)
        assert code == 2 and f"model folder not found locally: {local}" in one_error_line(err)
    # A Hub id: a note that no local folder exists, then the Hub cache only (offline), never the network.
    calls = []
    real = __import__("huggingface_hub").hf_hub_download

    def spy(*args, **kwargs):
        calls.append(kwargs.get("local_files_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", spy)
    code, _, err = run_cli(["tokenize", clip, "--model", "nobody-x/nothing-y", "--out", tmp_path / "t"], capsys)
    assert code == 2 and calls == [True]
    assert "no local folder nobody-x/nothing-y" in err
    assert "HF_HUB_OFFLINE=1 with no cached copy of Hub repo nobody-x/nothing-y" in one_error_line(err)


def test_output_paths_that_cannot_be_written_fail_before_any_work(folders, tmp_path, capsys, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    clip = folders["root"] / "clip.mp4"
    # --model names no folder: an error about --out proves the path was checked before loading anything.
    for out in (afile / "t.safetensors", afile / "sub" / "t.safetensors"):
        code, _, err = run_cli(["tokenize", clip, "--model", tmp_path / "none", "--out", out], capsys)
        assert code == 2 and f"cannot write {out}: {afile} is a file, not a folder" in one_error_line(err)
    code, _, err = run_cli(["tokenize", clip, "--model", tmp_path / "none", "--out", tmp_path], capsys)
    assert code == 2 and "is a folder; give a file name" in one_error_line(err)

    code = eval_cli.main(["reconstruction", "--data", str(tmp_path / "no-data"), "--out", str(afile / "r.json")])
    line = one_error_line(capsys.readouterr().err, prog="pyratok-eval")
    assert code == 2 and f"cannot write the report {afile / 'r.json'}: {afile} is a file" in line

    # A failure inside safetensors names the path asked for, not its temporary file.
    def failing_save(tensors, path, metadata=None):
        raise OSError(f'No such file or directory (os error 2) at path "{Path(path).parent}/.tmpAbC123"')

    monkeypatch.setattr(cli, "save_file", failing_save)
    with pytest.raises(cli.CliError) as info:
        cli.write_tokens(tmp_path / "t.safetensors", [[torch.zeros(1, 1, 2, 2, dtype=torch.long)]], {})
    assert str(info.value) == f"cannot write {tmp_path / 't.safetensors'}: No such file or directory (os error 2)"


def test_device_and_decode_errors_are_one_line(folders, tmp_path, capsys, monkeypatch):
    clip = folders["root"] / "clip.mp4"
    code, _, err = run_cli(["tokenize", clip, "--model", folders["a"], "--device", "meta", "--out", tmp_path / "t"],
                           capsys)
    assert code == 2 and "--device meta" in one_error_line(err)

    def size_change(path, max_frames=None):
        raise VideoDecodeError(f"{path}: frame 5 is 128x96, earlier frames are 64x64")

    monkeypatch.setattr(cli, "read_video", size_change)
    code, _, err = run_cli(["tokenize", clip, "--model", folders["a"], "--out", tmp_path / "t"], capsys)
    assert code == 2 and "frame 5 is 128x96, earlier frames are 64x64" in one_error_line(err)
    assert not os.path.exists(tmp_path / "t")

"""The two priors shipped as package data: they load, fit the shipped tokenizer, stay small, and `pyratok generate`
turns a held-out prompt into a decodable clip of the asked length with each of them, offline."""

import json
from pathlib import Path

import pytest

from modeling_pyratok import PyraTokARPrior, PyraTokMaskedPrior, PyraTokModel, prior_from_pretrained
from pyratok import cli
from pyratok.cli import DEFAULT_MODEL, model_fingerprint
from pyratok.generate_cli import SHIPPED_PRIORS
from pyratok.video_io import read_video

PROMPT = "a red checkered circle moves left on a black background"


@pytest.fixture(scope="module")
def tokenizer(one_thread) -> PyraTokModel:
    return PyraTokModel.from_pretrained(DEFAULT_MODEL).eval()


@pytest.mark.parametrize(("name", "cls"), [("masked", PyraTokMaskedPrior), ("ar", PyraTokARPrior)])
def test_shipped_prior_fits_the_shipped_tokenizer(name, cls, tokenizer):
    folder = SHIPPED_PRIORS[name]
    prior = prior_from_pretrained(folder)
    assert isinstance(prior, cls)
    prior.check_tokenizer(tokenizer, strict_fingerprint=True)
    assert prior.config.tokenizer_fingerprint == model_fingerprint(tokenizer)
    assert prior.config.layout == tokenizer.token_layout(17, 64, 64)
    assert (folder / "model.safetensors").stat().st_size < 20 * 2**20
    card = (folder / "README.md").read_text()
    assert "training/train_prior.py" in card and "min wall" in card
    config = json.loads((folder / "config.json").read_text())
    assert config["tokenizer_name"] == "pyratok-small-procedural"


@pytest.mark.parametrize(("name", "extra"), [("masked", ["--steps", "6"]), ("ar", ["--top-k", "32"])])
def test_generate_writes_the_asked_clip_with_each_shipped_prior(name, extra, tmp_path, capsys):
    out = tmp_path / f"{name}.mp4"
    assert cli.main(["generate", PROMPT, "--out", str(out), "--prior", name, "--seed", "0", *extra]) == 0
    frames, fps = read_video(str(out))
    assert frames.shape == (17, 64, 64, 3) and fps == pytest.approx(8.0)
    assert frames.std() > 5  # a picture, not a constant frame
    assert "17 frames 64x64" in capsys.readouterr().out


def test_shipped_priors_are_package_data():
    assert all(Path(p).parent == Path(DEFAULT_MODEL).parent for p in SHIPPED_PRIORS.values())

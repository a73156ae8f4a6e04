"""The checkpoint shipped in model_cards/ loads in both classes, is what the CLI uses by default, and tokenizes."""

from pathlib import Path

import pytest
import torch

from modeling_pyratok import AutoencoderPyraTok, PyraTokModel
from pyratok.cli import DEFAULT_MODEL

SHIPPED = Path(__file__).resolve().parents[1] / "model_cards" / "pyratok-small-procedural"
SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "procedural_jump.mp4"


def test_cli_default_is_the_shipped_folder():
    assert DEFAULT_MODEL == SHIPPED
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in SHIPPED.iterdir()}
    assert SHIPPED.joinpath("model.safetensors").stat().st_size < 40 * 2**20


def test_shipped_checkpoint_loads_in_both_classes_with_the_same_weights():
    model = PyraTokModel.from_pretrained(SHIPPED)
    vae = AutoencoderPyraTok.from_pretrained(SHIPPED)
    assert model.config.quantizer_mode == "pyramid" and model.config.num_levels == 4
    assert model.config.backbone_name_or_path is None  # no path of the training machine; the model card has it
    a, b = model.state_dict(), vae.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("text", [None, "an orange checkered diamond jumps on a beige background"])
def test_shipped_checkpoint_tokenizes_the_sample_clip(text):
    from pyratok.video_io import read_video, video_to_tensor

    model = PyraTokModel.from_pretrained(SHIPPED).eval()
    frames, _ = read_video(SAMPLE, max_frames=9)
    video = video_to_tensor(frames)[None]  # (1, 3, 9, 64, 64)
    tokens = model.tokenize(video, text=text)
    assert [tuple(t.shape) for t in tokens.ids] == [(1, 3, 8, 8), (1, 3, 4, 4), (1, 3, 2, 2), (1, 3, 1, 1)]
    recon = model.detokenize(tokens)
    assert recon.shape == video.shape and torch.isfinite(recon).all()
    # Trained, not random: a freshly initialised model of this size is off by ~0.52 (L1 in [-1, 1] units) here.
    assert (recon - video).abs().mean() < 0.3

"""The latent colour / brightness probe (`pyratok-eval probe`): targets, R², and a run on a tiny model."""

import json

import pytest
import torch
from diffusers import AutoencoderKLWan

from modeling_pyratok import PyraTokConfig, PyraTokModel
from pyratok.evaluation import cli
from pyratok.evaluation.probe import (
    block_targets,
    collect_encoder_features,
    linear_probe_r2,
    probe_features,
    probe_wan_encoder,
)
from pyratok.training.make_shards import make_shards

pytestmark = pytest.mark.usefixtures("one_thread")


def test_block_targets_split_luminance_and_chroma():
    frames = torch.zeros(1, 3, 4, 4)
    frames[0, :, :, :2] = torch.tensor([0.6, 0.0, -0.3]).view(3, 1, 1)  # left half: a reddish colour
    frames[0, :, :, 2:] = 0.5  # right half: grey
    luminance, chroma = block_targets(frames, (1, 2))
    torch.testing.assert_close(luminance, torch.tensor([[0.1], [0.5]]))
    torch.testing.assert_close(chroma, torch.tensor([[0.5, -0.1, -0.4], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="not divisible"):
        block_targets(frames, (3, 3))


def test_probe_r2_is_one_for_a_linear_function_and_near_zero_for_noise():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(400, 5, generator=g)
    targets = features @ torch.randn(5, 3, generator=g) + 0.7
    assert linear_probe_r2(features, targets) == pytest.approx(1.0, abs=1e-9)
    unrelated = torch.randn(400, 3, generator=g)
    assert linear_probe_r2(features, unrelated) < 0.05
    with pytest.raises(ValueError, match="no variance"):
        linear_probe_r2(features, torch.ones(400, 1))
    with pytest.raises(ValueError, match="must agree"):
        linear_probe_r2(features, targets[:10])


def _flat_colour_clips(num: int, seed: int = 0) -> torch.Tensor:
    """`(num, 3, 1, 32, 32)` clips, each 2x2 blocks of random flat colours."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.rand(num, 3, 1, 2, 2, generator=g) * 1.6 - 0.8
    return colours.repeat_interleave(16, dim=-2).repeat_interleave(16, dim=-1)


def test_wan_encoder_probe_reads_colour_from_its_input_conv_and_not_from_a_desaturated_input():
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, attn_scales=[],
                           temperal_downsample=[False]).eval()
    clips = _flat_colour_clips(24)
    rows = {row["layer"]: row for row in probe_wan_encoder(vae, clips)}
    assert list(rows)[0] == "conv_in" and list(rows)[-1] == "latent_mean"
    assert rows["latent_mean"]["grid"] == [16, 16] and rows["latent_mean"]["channels"] == 4
    # Inside a flat block the input conv is an affine map of the RGB value: both probes are (near) exact there;
    # cells on block edges see two colours, so the R² is high but not 1.
    assert rows["conv_in"]["chroma_r2"] > 0.8 and rows["conv_in"]["luminance_r2"] > 0.8
    # The same clips desaturated: the encoder only ever sees their brightness, so their colour is unpredictable.
    grey = clips.mean(dim=1, keepdim=True).expand_as(clips).contiguous()
    with pytest.raises(ValueError, match="no variance"):  # a grey clip has no chroma of its own to predict
        probe_wan_encoder(vae, grey)
    blind = probe_features(collect_encoder_features(vae, grey), clips[:, :, 0])
    assert all(row["chroma_r2"] < 0.2 for row in blind)
    assert blind[0]["luminance_r2"] > 0.9


def test_probe_cli_reports_backbone_and_adapted_layers(tmp_path):
    data = tmp_path / "shards"
    make_shards(data, seed=0, size=64, frames=5, num_train=1, num_val=1, num_test=8, shard_size=8)
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    PyraTokModel(PyraTokConfig.from_preset("tiny")).save_pretrained(model_dir)
    out = tmp_path / "probe.json"
    assert cli.main(["probe", "--model", str(model_dir), "--data", str(data / "test"), "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert results["num_clips"] == 8 and results["num_frames"] == 1
    for label in ("backbone", "adapted"):
        layers = [row["layer"] for row in results[label]]
        assert layers[0] == "conv_in" and layers[-1] == "latent_mean"
        for row in results[label]:
            assert row["luminance_r2"] <= 1.0 and row["chroma_r2"] <= 1.0
    # A fresh model's LoRA adapters start at zero: the adapted encoder equals the pretrained one.
    assert results["adapted"] == results["backbone"]
    assert cli.main(["probe", "--model", str(model_dir), "--data", str(data / "test"), "--max-clips", "2"]) == 2

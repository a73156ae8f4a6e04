"""`pyratok-eval backbone`: the continuous VAE under a tokenizer, from a diffusers folder or a PyraTok checkpoint."""

import json

import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderKLWan

from modeling_pyratok import PyraTokConfig, PyraTokModel
from pyratok.evaluation import cli
from pyratok.evaluation.backbone import evaluate_backbone, load_backbone
from pyratok.evaluation.clips import ClipReader
from pyratok.quality import chroma
from pyratok.training.make_shards import make_shards

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    make_shards(out, seed=0, size=64, frames=9, num_train=1, num_val=1, num_test=3, shard_size=8)
    return out / "test"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A PyraTok checkpoint with non-zero LoRA adapters, and its frozen backbone as a plain diffusers folder."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    model = PyraTokModel(PyraTokConfig.from_preset("tiny"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)  # adapters that change the encoder: the backbone task must leave them out
    model.save_pretrained(root / "pyratok")
    vae = AutoencoderKLWan(**model.config.backbone_config)
    vae.load_state_dict(model.core.backbone.wan_state_dict())
    vae.save_pretrained(root / "vae")
    return root


def test_report_per_chunk_and_chroma(folders, split):
    results = evaluate_backbone(load_backbone(folders / "vae"), split)
    assert results["num_clips"] == 3 and results["skipped"] == {}
    assert {"psnr_frames_0", "psnr_frames_1-4", "psnr_frames_5-8"} <= results.keys()
    assert 0 < results["psnr"] < 60 and -1 <= results["ssim"] <= 1
    clips = [clip.video[None] for clip in ClipReader(split)]  # (1, 3, T, H, W)
    assert results["data_chroma"] == pytest.approx(sum(chroma(c) for c in clips) / len(clips), rel=1e-5)
    assert results["chroma"] >= 0


def test_pyratok_folder_is_scored_on_its_frozen_backbone(folders, split, tmp_path):
    reports = {}
    for kind in ("vae", "pyratok"):
        out = tmp_path / f"{kind}.json"
        argv = ["--model", str(folders / kind), "--data", str(split), "--num-frames", "5", "--out", str(out)]
        assert cli.main(["backbone", *argv]) == 0
        reports[kind] = json.loads(out.read_text())["results"]
    assert reports["pyratok"] == reports["vae"]
    assert set(reports["vae"]) >= {"psnr_frames_0", "psnr_frames_1-4"} and "psnr_frames_5-8" not in reports["vae"]


def test_wrong_folders_are_clear_errors(folders, split, tmp_path, capsys):
    AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=2).save_pretrained(tmp_path / "kl")
    assert cli.main(["backbone", "--model", str(tmp_path / "kl"), "--data", str(split)]) == 2
    assert "holds a AutoencoderKL, not an AutoencoderKLWan" in capsys.readouterr().err
    assert cli.main(["backbone", "--model", str(tmp_path / "nothing"), "--data", str(split)]) == 2
    assert "no config.json" in capsys.readouterr().err

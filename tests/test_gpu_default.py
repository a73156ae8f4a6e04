"""training/gpu_default.py: step sizing from a trainer log, and the ship-only-if-better rule."""

import json

import pytest

from pyratok.training.config import TrainConfig
from pyratok.training.gpu_default import (
    BACKBONE_RECIPE,
    PYRATOK_RECIPE,
    REPO,
    is_better,
    seconds_per_step,
    steps_for_budget,
)


def test_seconds_per_step_is_the_slope_after_the_first_logged_step(tmp_path):
    log = tmp_path / "logs.jsonl"
    rows = [{"step": 10, "elapsed_s": 25.0}, {"step": 20, "elapsed_s": 30.0}, {"step": 20, "val/psnr": 1.0},
            {"step": 40, "elapsed_s": 40.0}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert seconds_per_step(log) == pytest.approx((40 - 25) / (40 - 10))
    log.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(ValueError, match="two logged steps"):
        seconds_per_step(log)


def test_steps_for_budget():
    assert steps_for_budget(300.0, 30.0, 0.25) == 1080  # (300 - 30) / 0.25
    assert steps_for_budget(10.0, 30.0, 0.25, minimum=5) == 5
    with pytest.raises(ValueError, match="step_s"):
        steps_for_budget(10.0, 1.0, 0.0)


def test_is_better_needs_lower_delta_e_and_higher_psnr():
    current = {"object_delta_e": 20.0, "psnr": 20.3}
    assert is_better({"object_delta_e": 9.0, "psnr": 20.4}, current)
    assert not is_better({"object_delta_e": 9.0, "psnr": 20.2}, current)
    assert is_better({"object_delta_e": 9.0, "psnr": 20.2}, current, psnr_tolerance=0.2)
    assert not is_better({"object_delta_e": 20.0, "psnr": 25.0}, current)


def test_gpu_recipes_resolve_with_matching_z16_backbones():
    backbone = TrainConfig.from_yaml(REPO / BACKBONE_RECIPE)
    pyratok = TrainConfig.from_yaml(REPO / PYRATOK_RECIPE)
    assert backbone.task == "backbone_vae" and pyratok.task == "pyratok"
    assert backbone.model_overrides["backbone_config"] == pyratok.model_overrides["backbone_config"]
    assert backbone.model_overrides["backbone_config"]["z_dim"] == 16
    assert len(pyratok.model_overrides["backbone_config"]["latents_mean"]) == 16
    assert pyratok.model_overrides["lateral_pooling"] == "strided_conv"  # tiny-cpu.yaml's stage 2 underneath
    assert backbone.recon_salient_weight == pyratok.recon_salient_weight == 1.0
    assert pyratok.validation_data is None

"""PyraTokConfig: presets, overrides, derived backbone attributes and validation."""

import pytest

from modeling_pyratok import PyraTokConfig
from modeling_pyratok.configuration_pyratok import config_field_names


def test_presets_resolve_backbone_attributes():
    tiny = PyraTokConfig.from_preset("tiny")
    assert (tiny.z_dim, tiny.scale_factor_spatial, tiny.scale_factor_temporal) == (4, 8, 4)
    assert tiny.spatial_multiple == 64 and tiny.level_spatial_strides == [1, 2, 4, 8]
    wan21 = PyraTokConfig.from_preset("wan2.1")
    assert (wan21.z_dim, wan21.scale_factor_spatial, len(wan21.latents_mean)) == (16, 8, 16)
    wan22 = PyraTokConfig.from_preset("wan2.2")
    assert (wan22.z_dim, wan22.scale_factor_spatial, wan22.spatial_multiple) == (48, 16, 128)
    assert wan22.backbone_config["is_residual"] and wan22.backbone_config["patch_size"] == 2


def test_preset_overrides_and_unknown_fields():
    cfg = PyraTokConfig.from_preset("tiny", num_levels=2, level_spatial_strides=[1, 4], entropy_mode="grouped")
    assert cfg.num_levels == 2 and cfg.level_spatial_strides == [1, 4] and cfg.entropy_mode == "grouped"
    with pytest.raises(ValueError, match="hiden_size"):
        PyraTokConfig.from_preset("tiny", hiden_size=3)
    with pytest.raises(ValueError, match="unknown preset 'wan3'"):
        PyraTokConfig.from_preset("wan3")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"z_dim": 16}, "z_dim=16 disagrees"),
        ({"num_levels": 5, "level_spatial_strides": [1, 2, 4, 8, 16]}, "num_levels=5"),
        ({"level_spatial_strides": [1, 3, 4, 8]}, "each must divide the next"),
        ({"level_spatial_strides": [1, 2]}, "one stride per level"),
        ({"quantizer_mode": "vq"}, "quantizer_mode='vq'"),
        ({"entropy_mode": "approx"}, "entropy_mode='approx'"),
        ({"lateral_pooling": "max"}, "lateral_pooling='max'; expected one of"),
        ({"hidden_size": 30, "num_attention_heads": 4}, "not divisible"),
        ({"backbone_config": {"base_dimm": 8}}, "base_dimm"),
        ({"text_dropout": 1.5}, "text_dropout=1.5"),
    ],
)
def test_invalid_configs_raise_value_error(overrides, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        PyraTokConfig.from_preset("tiny", **overrides)


def test_save_load_roundtrip_keeps_every_field(tmp_path):
    cfg = PyraTokConfig.from_preset("tiny", codebook_dim=12, text_dropout=0.2)
    cfg.save_pretrained(tmp_path)
    assert PyraTokConfig.from_pretrained(tmp_path).to_init_kwargs() == cfg.to_init_kwargs()
    assert set(cfg.to_init_kwargs()) == set(config_field_names())

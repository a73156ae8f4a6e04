"""Backbone: stage taps, causal chunking, and LoRA through peft with the custom WanCausalConv3d layer."""

import pytest
import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d
from peft import LoraConfig, inject_adapter_in_model

from modeling_pyratok.backbone_pyratok import PyraTokBackbone, PyraTokLoraCausalConv3d, encoder_stage_taps
from tests.conftest import make_video, tiny_config


@pytest.fixture
def backbones():
    config = tiny_config().backbone_config
    torch.manual_seed(0)
    with_lora = PyraTokBackbone(config, lora_rank=16, lora_alpha=32)
    plain = PyraTokBackbone(config, lora_rank=0)
    plain.load_wan_state_dict(with_lora.wan_state_dict(), "with_lora")
    return with_lora.eval(), plain.eval()


def test_taps_have_the_documented_grids(backbones):
    feats = backbones[0].encode_features(make_video(frames=9))
    shapes = [tuple(f.shape) for f in feats.features]
    # F1 (T, H/2), F2 (T/2 + 1, H/4), F3 (T', H/8), F4 = encoder output (T', H/8, 2 * z_dim).
    assert shapes == [(1, 8, 9, 32, 32), (1, 16, 5, 16, 16), (1, 16, 3, 8, 8), (1, 8, 3, 8, 8)]
    assert backbones[0].feature_channels() == [8, 16, 16, 8]
    assert feats.moments.shape == (1, 8, 3, 8, 8)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        # Wan 2.2 style: residual blocks behind a 2x2 patchify, here with the temporal halving in other stages.
        {
            "is_residual": True,
            "patch_size": 2,
            "in_channels": 12,
            "out_channels": 12,
            "temperal_downsample": [True, True, False],
            "scale_factor_spatial": 16,
        },
    ],
    ids=["wan2.1-style", "wan2.2-style"],
)
@torch.no_grad()
def test_feature_strides_predict_every_tap_shape(overrides):
    """The strided-conv lateral is sized from `feature_strides()` at build time; it must match the real taps."""
    backbone = PyraTokBackbone(tiny_config().backbone_config | overrides, lora_rank=0).eval()
    frames, size = 9, 64
    features = backbone.encode_features(make_video(frames=frames, size=size)).features
    strides = backbone.feature_strides()
    assert len(strides) == len(features)
    for feature, (temporal, spatial) in zip(features, strides, strict=True):
        assert tuple(feature.shape[2:]) == (1 + (frames - 1) // temporal, size // spatial, size // spatial)


@torch.no_grad()
def test_chunked_taps_equal_an_unchunked_reference_where_they_must(backbones):
    """Before the first temporal downsample (F1), and on frame 0 everywhere, chunked == unchunked encoding."""
    _, plain = backbones
    clip = make_video(frames=9)
    chunked = plain.encode_features(clip).features
    taps = encoder_stage_taps(plain.vae.encoder)
    reference = []
    handles = [t.register_forward_hook(lambda m, i, o: reference.append(o)) for t in taps]
    plain.vae.encoder(clip)  # one pass, no cache: causal padding only, no temporal downsampling
    for h in handles:
        h.remove()
    assert torch.allclose(chunked[0], reference[0], atol=1e-6)
    for c, r in zip(chunked[1:3], reference[1:3], strict=True):
        assert torch.allclose(c[:, :, 0], r[:, :, 0], atol=1e-6)


@torch.no_grad()
def test_backbone_moments_equal_diffusers_encode(backbones):
    _, plain = backbones
    clip = make_video(frames=5)
    expected = plain.vae.encode(clip).latent_dist
    got = plain.encode_features(clip).moments
    assert torch.equal(got[:, :4], expected.mean)


@torch.no_grad()
def test_zero_init_lora_is_bit_identical_to_the_frozen_encoder(backbones):
    with_lora, plain = backbones
    clip = make_video(frames=9, seed=3)
    a, b = with_lora.encode_features(clip), plain.encode_features(clip)
    assert all(torch.equal(x, y) for x, y in zip(a.features, b.features))
    assert torch.equal(a.moments, b.moments)


def test_lora_covers_every_encoder_conv_and_is_the_only_trainable_part(backbones):
    with_lora, _ = backbones
    encoder = with_lora.vae.encoder
    causal = [m for m in encoder.modules() if isinstance(m, PyraTokLoraCausalConv3d)]
    bare = [n for n, m in encoder.named_modules() if type(m) is WanCausalConv3d and not n.endswith("base_layer")]
    bare = [n for n in bare if ".lora_A." not in n]
    assert causal and not bare
    assert all(layer.r["default"] == 16 and layer.scaling["default"] == 2.0 for layer in causal)
    trainable = [n for n, p in with_lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and n.startswith("vae.encoder.") for n in trainable)


def test_nonzero_lora_changes_features_and_can_be_bypassed(backbones):
    with_lora, plain = backbones
    with torch.no_grad():
        for n, p in with_lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
        clip = make_video(frames=5)
        adapted = with_lora.encode_features(clip).moments
        with with_lora.lora_disabled():
            bypassed = with_lora.encode_features(clip).moments
        frozen = plain.encode_features(clip).moments
    assert not torch.equal(adapted, frozen)
    assert torch.equal(bypassed, frozen)


def test_frozen_wan_vae_is_the_pretrained_vae_without_adapters_on_the_same_dtype(backbones):
    with_lora, plain = backbones
    with torch.no_grad():
        for n, p in with_lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)  # adapters that change the encoder: the standalone VAE must not carry them
        clip = make_video(frames=5)
        standalone = with_lora.frozen_wan_vae()
        assert torch.equal(standalone.encode(clip).latent_dist.parameters, plain.encode_features(clip).moments)
        assert with_lora.double().frozen_wan_vae().dtype == torch.float64


def test_lora_gradients_flow_through_the_causal_cache(backbones):
    with_lora, _ = backbones
    with torch.no_grad():
        for n, p in with_lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    with_lora.encode_features(make_video(frames=9)).moments.pow(2).mean().backward()
    grads = [p.grad for n, p in with_lora.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_peft_builtin_conv3d_lora_fails_on_wan_convs_and_ours_does_not():
    """Why the custom layer exists: peft re-instantiates the conv subclass with `bias=`."""
    conv = torch.nn.Sequential(WanCausalConv3d(4, 4, 3, padding=1))
    with pytest.raises(TypeError, match="bias"):
        inject_adapter_in_model(LoraConfig(r=2, target_modules=["0"]), conv)
    conv = torch.nn.Sequential(WanCausalConv3d(4, 4, 3, padding=1))
    config = LoraConfig(r=2, target_modules=["0"])
    config._register_custom_module({WanCausalConv3d: PyraTokLoraCausalConv3d})
    inject_adapter_in_model(config, conv)
    assert isinstance(conv[0], PyraTokLoraCausalConv3d)


@torch.no_grad()
def test_merged_lora_matches_the_adapter_branch_and_restores_weights_exactly(backbones):
    with_lora, _ = backbones
    for n, p in with_lora.named_parameters():
        if "lora_B" in n:
            p.normal_(0, 0.05)
    before = {k: v.clone() for k, v in with_lora.state_dict().items()}
    clip = make_video(frames=9, seed=2)
    unmerged = with_lora.encode_features(clip).moments
    with with_lora.merged_lora():
        merged = with_lora.encode_features(clip).moments
    assert torch.allclose(merged, unmerged, atol=1e-4, rtol=1e-4)
    after = with_lora.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(with_lora.encode_features(clip).moments, unmerged)

"""AutoencoderPyraTok: the AutoencoderKL/AutoencoderKLWan surface, tiling, slicing, ids, and a pipeline swap."""

import re

import pytest
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
from diffusers.pipelines.wan.pipeline_wan_i2v import retrieve_latents
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from modeling_pyratok import AutoencoderPyraTok
from tests.conftest import make_video


def test_latent_dist_is_deterministic_and_pipeline_readable(tiny_vae, video):
    dist = tiny_vae.encode(video).latent_dist
    g = torch.Generator().manual_seed(0)
    assert torch.equal(dist.sample(generator=g), dist.mode())
    assert torch.equal(dist.mode(), dist.mean) and dist.mean.shape == (1, 4, 3, 8, 8)
    assert torch.equal(retrieve_latents(tiny_vae.encode(video), sample_mode="argmax"), dist.mode())
    (posterior,) = tiny_vae.encode(video, return_dict=False)
    assert torch.equal(posterior.mode(), dist.mode())
    for name in ("scaling_factor", "shift_factor", "latents_mean", "latents_std", "z_dim"):
        assert name in tiny_vae.config
    assert tiny_vae.config.scale_factor_temporal == 4 and tiny_vae.config.scale_factor_spatial == 8
    assert 2 ** sum(tiny_vae.temperal_downsample) == tiny_vae.config.scale_factor_temporal


def test_decode_and_forward_match_the_pyratok_model(tiny_vae, video):
    from modeling_pyratok import PyraTokModel

    model = PyraTokModel(tiny_vae.pyratok_config).eval()
    model.load_state_dict(tiny_vae.state_dict())
    z = tiny_vae.encode(video).latent_dist.mode()
    assert torch.equal(z, model.encode(video))
    decoded = tiny_vae.decode(z).sample
    assert decoded.shape == video.shape and torch.equal(decoded, model.decode(z))
    assert torch.equal(tiny_vae(video).sample, decoded)
    assert torch.equal(tiny_vae.decode(z, return_dict=False)[0], decoded)


def test_images_are_one_frame_videos(tiny_vae):
    images = make_video(batch=2, frames=1)[:, :, 0]
    z = tiny_vae.encode(images).latent_dist.mode()
    assert z.shape == (2, 4, 8, 8)
    assert tiny_vae.decode(z).sample.shape == images.shape


def test_ids_roundtrip_equals_encode_decode(tiny_vae, video):
    ids = tiny_vae.encode_to_ids(video, text="a cat")
    assert [tuple(i.shape) for i in ids] == [(1, 3, 8, 8), (1, 3, 4, 4), (1, 3, 2, 2), (1, 3, 1, 1)]
    assert all(i.dtype == torch.int64 and i.min() >= 0 and i.max() < 2**16 for i in ids)
    via_ids = tiny_vae.decode_from_ids(ids)
    via_latent = tiny_vae.decode(tiny_vae.encode(video, text="a cat").latent_dist.mode()).sample
    assert torch.allclose(via_ids, via_latent, atol=1e-6)


def test_slicing_gives_the_same_result(tiny_vae):
    clips = make_video(batch=3, seed=4)
    z = tiny_vae.encode(clips, text=["a", None, "c"]).latent_dist.mode()
    out = tiny_vae.decode(z).sample
    tiny_vae.enable_slicing()
    assert torch.allclose(tiny_vae.encode(clips, text=["a", None, "c"]).latent_dist.mode(), z, atol=1e-5)
    assert torch.allclose(tiny_vae.decode(z).sample, out, atol=1e-5)
    tiny_vae.disable_slicing()


# Tiles see less spatial context than the whole frame, so the encoder's taps differ near seams and, with random
# weights, bits sitting near zero flip. Stated tolerance (tiny preset, random weights, 192x192, tiles 128 / stride 64):
# mean absolute difference below 20% of the untiled output's mean absolute value, for latents and for decoded pixels
# (measured: 14% latent, 8.5% pixels).
TILING_RELATIVE_TOLERANCE = 0.20


def test_tiling_really_tiles_and_stays_close_to_untiled(tiny_vae):
    clip = make_video(frames=5, size=192, seed=5)
    z_full = tiny_vae.encode(clip).latent_dist.mode()
    x_full = tiny_vae.decode(z_full).sample
    encoder_inputs, quantizer_grids = [], []
    backbone = tiny_vae.core.backbone.vae.encoder
    hooks = [
        backbone.register_forward_hook(lambda m, i, o: encoder_inputs.append(tuple(i[0].shape[-2:]))),
        tiny_vae.core.quantizer.register_forward_hook(lambda m, i, o: quantizer_grids.append(tuple(i[1]))),
    ]
    tiny_vae.enable_tiling(128, 128, 64, 64)
    z_tiled = tiny_vae.encode(clip).latent_dist.mode()
    x_tiled = tiny_vae.decode(z_full).sample
    for h in hooks:
        h.remove()
    tiny_vae.disable_tiling()
    # 3 x 3 tiles, each encoded in 2 causal chunks, none larger than a tile; LaPQ runs once on the whole grid.
    assert len(encoder_inputs) == 18 and max(max(s) for s in encoder_inputs) <= 128
    assert quantizer_grids == [(2, 24, 24)]
    assert z_tiled.shape == z_full.shape and x_tiled.shape == x_full.shape
    assert not torch.equal(z_tiled, z_full)
    z_err = (z_tiled - z_full).abs().mean() / z_full.abs().mean()
    x_err = (x_tiled - x_full).abs().mean() / x_full.abs().mean()
    assert z_err < TILING_RELATIVE_TOLERANCE, z_err
    assert x_err < TILING_RELATIVE_TOLERANCE, x_err


def test_tiling_rejects_sizes_that_break_the_token_grid(tiny_vae):
    with pytest.raises(ValueError, match="multiples of 64"):
        tiny_vae.enable_tiling(100, 100, 64, 64)
    with pytest.raises(ValueError, match="must not exceed"):
        tiny_vae.enable_tiling(64, 64, 128, 128)


def test_bad_input_names_the_problem(tiny_vae, video):
    with pytest.raises(ValueError, match=re.escape("T=6")):
        tiny_vae.encode(video[:, :, :6])
    with pytest.raises(ValueError, match="z_dim=4"):
        tiny_vae.decode(torch.zeros(1, 16, 3, 8, 8))


def test_registered_config_is_the_pyratok_vocabulary(tiny_vae):
    from modeling_pyratok.configuration_pyratok import config_field_names

    registered = {k for k in tiny_vae.config if not k.startswith("_")}
    assert registered == set(config_field_names())
    rebuilt = AutoencoderPyraTok.from_config(tiny_vae.config)
    assert dict(rebuilt.config) == dict(tiny_vae.config)


def _tiny_wan_text_stack():
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    vocab.update({w: i + 3 for i, w in enumerate("a cat dog runs on grass red square".split())})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    encoder = UMT5EncoderModel(
        UMT5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    ).eval()
    return tokenizer, encoder


def test_swaps_into_a_diffusers_wan_pipeline(tiny_vae):
    """The VAE of an existing pipeline replaced by AutoencoderPyraTok: the pipeline runs and decodes through it."""
    tokenizer, text_encoder = _tiny_wan_text_stack()
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=tiny_vae.config.z_dim,
        out_channels=tiny_vae.config.z_dim,
        text_dim=32,
        freq_dim=32,
        ffn_dim=32,
        num_layers=1,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        transformer=transformer,
        vae=tiny_vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )
    kwargs = dict(prompt="a cat runs on grass", height=64, width=64, num_frames=9, num_inference_steps=2)
    kwargs.update(guidance_scale=1.0, max_sequence_length=16)
    video = pipe(**kwargs, output_type="pt", generator=torch.Generator().manual_seed(0)).frames
    latents = pipe(**kwargs, output_type="latent", generator=torch.Generator().manual_seed(0)).frames
    assert latents.shape == (1, 4, 3, 8, 8)
    assert video.shape == (1, 9, 3, 64, 64)
    mean = torch.tensor(tiny_vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(tiny_vae.config.latents_std).view(1, -1, 1, 1, 1)
    ours = tiny_vae.decode(latents * std + mean).sample  # the pipeline's own de-normalisation
    expected = ((ours + 1) / 2).clamp(0, 1).permute(0, 2, 1, 3, 4)
    # Float noise only: the pipeline divides by 1/std where we multiply by std.
    assert torch.allclose(video, expected, atol=1e-4)


def test_wan_vae_and_pyratok_share_the_latent_space(tiny_vae, video):
    """The backbone is a plain AutoencoderKLWan: its latents decode through PyraTok to the same pixels."""
    wan = AutoencoderKLWan(**tiny_vae.pyratok_config.backbone_config).eval()
    wan.load_state_dict(tiny_vae.core.backbone.wan_state_dict())
    z = wan.encode(video).latent_dist.mode()
    assert torch.allclose(wan.decode(z).sample, tiny_vae.decode(z).sample, atol=1e-6)

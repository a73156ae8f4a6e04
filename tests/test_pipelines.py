"""AutoencoderPyraTok inside diffusers' CogVideoX (MotionAura's released code), Wan and OmniGen pipelines:
construction, one training step as diffusers examples do, 2-step sampling, and a save/reload round trip."""

import torch
import torch.nn.functional as F
from diffusers import (
    CogVideoXDDIMScheduler,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
    FlowMatchEulerDiscreteScheduler,
    OmniGenPipeline,
    OmniGenTransformer2DModel,
    WanPipeline,
    WanTransformer3DModel,
)
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from modeling_pyratok import AutoencoderPyraTok
from tests.conftest import tiny_config


def make_vae(**overrides) -> AutoencoderPyraTok:
    torch.manual_seed(0)
    return AutoencoderPyraTok(**tiny_config(**overrides).to_init_kwargs()).eval().requires_grad_(False)


def clip(frames: int = 9, height: int = 64, width: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, frames, height, width, generator=g) * 2 - 1


def public_config(config) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}  # `_name_or_path` records the folder


def assert_reloads_our_vae(pipe, cls, tmp_path, **load_kwargs) -> None:
    pipe.save_pretrained(tmp_path)
    reloaded = cls.from_pretrained(tmp_path, **load_kwargs)
    assert type(reloaded.vae) is AutoencoderPyraTok
    a, b = pipe.vae.state_dict(), reloaded.vae.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert public_config(reloaded.vae.config) == public_config(pipe.vae.config)


def test_cogvideox_pipeline_trains_samples_and_reloads(tmp_path):
    vae = make_vae()
    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=4,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=32,
        num_layers=1,
        sample_width=8,
        sample_height=8,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=8,
    )
    scheduler = CogVideoXDDIMScheduler(prediction_type="v_prediction")
    pipe = CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=scheduler)
    # CogVideoX derives its factors from block_out_channels / temporal_compression_ratio: PyraTok's 4 x 8 x 8.
    assert (pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal) == (8, 4)
    prompt_embeds = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(1))

    # One training step of diffusers' examples/cogvideo: encode, scale, permute, noise, v-prediction loss.
    video = clip()
    latents = vae.encode(video).latent_dist.sample() * vae.config.scaling_factor
    latents = latents.permute(0, 2, 1, 3, 4)  # (B, F', C, H', W')
    assert latents.shape == (1, 3, 4, 8, 8)
    noise = torch.randn_like(latents)
    timesteps = torch.tensor([500])
    noisy = scheduler.add_noise(latents, noise, timesteps)
    out = transformer(hidden_states=noisy, encoder_hidden_states=prompt_embeds, timestep=timesteps, return_dict=False)
    loss = F.mse_loss(scheduler.get_velocity(out[0], noisy, timesteps), latents)
    loss.backward()
    assert torch.isfinite(loss) and transformer.proj_out.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in vae.parameters())

    kwargs = dict(prompt_embeds=prompt_embeds, num_frames=9, height=64, width=64, num_inference_steps=2)
    kwargs.update(guidance_scale=1.0, use_dynamic_cfg=False)
    frames = pipe(**kwargs, output_type="pt", generator=torch.Generator().manual_seed(0)).frames
    sampled = pipe(**kwargs, output_type="latent", generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (1, 9, 3, 64, 64) and sampled.shape == (1, 3, 4, 8, 8)
    # The pipeline decodes through our VAE: latents / scaling_factor, then [-1, 1] -> [0, 1].
    ours = vae.decode(sampled.permute(0, 2, 1, 3, 4) / vae.config.scaling_factor).sample
    assert torch.allclose(frames, (ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4), atol=1e-5)
    assert_reloads_our_vae(pipe, CogVideoXPipeline, tmp_path, tokenizer=None, text_encoder=None)


def test_wan_pipeline_with_per_channel_normalised_latents(tmp_path):
    mean, std = [0.5, -1.0, 0.25, 2.0], [2.0, 0.5, 1.5, 4.0]
    backbone = {**tiny_config().backbone_config, "latents_mean": mean, "latents_std": std}
    vae = make_vae(backbone_config=backbone, latent_normalization="per_channel")
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        text_dim=32,
        freq_dim=32,
        ffn_dim=32,
        num_layers=1,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=scheduler)
    prompt_embeds = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(1))

    # Flow-matching step: the pipeline's own (latents - mean) / std is the identity (the VAE already normalised).
    mean_t, std_t = torch.tensor(mean).view(1, 4, 1, 1, 1), torch.tensor(std).view(1, 4, 1, 1, 1)
    raw = vae.core.quantize(clip())[0].latent  # the un-normalised fused latent
    latents = vae.encode(clip()).latent_dist.sample()
    assert torch.allclose(latents, (raw - mean_t) / std_t, atol=1e-6)
    latents = (latents - torch.tensor(vae.config.latents_mean).view(1, 4, 1, 1, 1)) / torch.tensor(
        vae.config.latents_std
    ).view(1, 4, 1, 1, 1)
    noise = torch.randn_like(latents)
    sigma = torch.tensor(0.3)
    noisy = (1 - sigma) * latents + sigma * noise
    pred = transformer(noisy, timestep=torch.tensor([300]), encoder_hidden_states=prompt_embeds).sample
    loss = F.mse_loss(pred, noise - latents)
    loss.backward()
    assert torch.isfinite(loss) and transformer.proj_out.weight.grad.abs().sum() > 0

    kwargs = dict(prompt_embeds=prompt_embeds, num_frames=9, height=64, width=64, num_inference_steps=2)
    kwargs.update(guidance_scale=1.0)
    frames = pipe(**kwargs, output_type="pt", generator=torch.Generator().manual_seed(0)).frames
    sampled = pipe(**kwargs, output_type="latent", generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (1, 9, 3, 64, 64) and sampled.shape == (1, 4, 3, 8, 8)
    # Decoded once through the backbone with Wan's statistics applied exactly once.
    expected = vae.core.backbone.decode(sampled * std_t + mean_t)
    assert torch.allclose(frames, (expected / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4), atol=1e-4)
    assert_reloads_our_vae(pipe, WanPipeline, tmp_path, tokenizer=None, text_encoder=None)


def _word_tokenizer() -> PreTrainedTokenizerFast:
    words = "a cat red make it <|user|> <|assistant|> <|diffusion|> <|end|> <img> </img> generate an image".split()
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "<pad>", *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>")


def test_omnigen_pipeline_edits_an_80x48_image_trains_and_reloads(tmp_path):
    vae = make_vae()
    torch.manual_seed(0)
    transformer = OmniGenTransformer2DModel(
        hidden_size=16,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=32,
        num_layers=1,
        in_channels=4,
        time_step_dim=4,
        vocab_size=32,
        pad_token_id=2,
        rope_scaling={"long_factor": list(range(1, 3)), "short_factor": list(range(1, 3))},
    )
    scheduler = FlowMatchEulerDiscreteScheduler(invert_sigmas=True, num_train_timesteps=1)
    pipe = OmniGenPipeline(transformer=transformer, scheduler=scheduler, vae=vae, tokenizer=_word_tokenizer())
    assert pipe.vae_scale_factor == 8  # 2 ** (len(block_out_channels) - 1)

    # OmniGen feeds multiples of 16: 80 x 48 is padded to 128 x 64 inside encode, the latent cropped to 10 x 6.
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 80, 48, generator=g) * 2 - 1
    latents = vae.encode(image).latent_dist.sample() * vae.config.scaling_factor
    assert latents.shape == (1, 4, 10, 6)
    # The text-to-image inputs the pipeline builds (conditional and unconditional rows), one flow-matching step.
    processed = pipe.multimodal_processor(
        ["a cat"], None, height=80, width=48, use_img_cfg=False, use_input_image_size_as_output=False
    )
    rows = processed["input_ids"].shape[0]
    latents = latents.expand(rows, -1, -1, -1)
    noise = torch.randn_like(latents)
    t = torch.full((rows,), 0.4)
    noisy = t.view(-1, 1, 1, 1) * latents + (1 - t.view(-1, 1, 1, 1)) * noise  # noise (t=0) -> image (t=1)
    pred = transformer(
        hidden_states=noisy,
        timestep=t,
        input_ids=processed["input_ids"],
        input_img_latents=[],
        input_image_sizes=processed["input_image_sizes"],
        attention_mask=processed["attention_mask"],
        position_ids=processed["position_ids"],
        return_dict=False,
    )[0]
    loss = F.mse_loss(pred, latents - noise)
    loss.backward()
    assert torch.isfinite(loss) and pred.shape == latents.shape

    pil = Image.fromarray(((image[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy())
    kwargs = dict(num_inference_steps=2, guidance_scale=2.0, img_guidance_scale=1.5, output_type="pt")
    edited = pipe(
        prompt="make it red <img><|image_1|></img>",
        input_images=[pil],
        use_input_image_size_as_output=True,
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    ).images
    assert edited.shape == (1, 3, 80, 48)
    generated = pipe(prompt="a cat", height=64, width=64, generator=torch.Generator().manual_seed(0), **kwargs).images
    assert generated.shape == (1, 3, 64, 64)
    assert_reloads_our_vae(pipe, OmniGenPipeline, tmp_path)

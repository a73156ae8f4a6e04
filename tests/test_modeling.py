"""PyraTokModel: shapes, DESIGN §6 invariants, text conditioning and input validation (tiny preset, CPU)."""

import re

import pytest
import torch

from modeling_pyratok import PyraTokModel, PyraTokTokens
from tests.conftest import activate_text_attention, make_video, tiny_config

LEVEL_GRIDS_64 = [(3, 8, 8), (3, 4, 4), (3, 2, 2), (3, 1, 1)]


def test_forward_shapes_for_every_level(tiny_model, video):
    out = tiny_model(pixel_values=video, text=["a dog runs on grass"])
    assert [tuple(i.shape) for i in out.ids] == [(1, *g) for g in LEVEL_GRIDS_64]
    assert [tuple(c.shape) for c in out.codes] == [(1, 16, *g) for g in LEVEL_GRIDS_64]
    for ids, codes in zip(out.ids, out.codes, strict=True):
        assert ids.dtype == torch.int64
        assert 0 <= ids.min() and ids.max() < 2**16
        assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert out.latent.shape == (1, 4, 3, 8, 8)
    assert out.reconstruction.shape == video.shape
    assert out.reconstruction.abs().max() <= 1.0
    assert torch.isfinite(out.loss)
    assert {"commitment", "entropy", "hierarchical", "latent"} <= set(out.losses)


def test_image_batch_is_a_one_frame_video(tiny_model):
    images = make_video(batch=2, frames=1)[:, :, 0]
    tokens = tiny_model.tokenize(images)
    assert tokens.is_image and [tuple(i.shape) for i in tokens.ids][0] == (2, 1, 8, 8)
    assert tiny_model.detokenize(tokens).shape == images.shape
    assert tiny_model.encode(images).shape == (2, 4, 8, 8)
    assert tiny_model(pixel_values=images).reconstruction.shape == images.shape


def test_causal_prefix_tokens_equal_whole_clip_tokens(tiny_model):
    clip = make_video(frames=13)
    whole = tiny_model.tokenize(clip).ids
    for frames, latent_frames in ((1, 1), (5, 2), (9, 3)):
        prefix = tiny_model.tokenize(clip[:, :, :frames]).ids
        for p, w in zip(prefix, whole, strict=True):
            assert torch.equal(p, w[:, :latent_frames])


def test_strided_lateral_model_is_causal_and_saves_its_choice(tmp_path):
    torch.manual_seed(0)
    model = PyraTokModel(tiny_config(lateral_pooling="strided_conv")).eval()
    activate_text_attention(model)
    clip = make_video(frames=13)
    whole = model.tokenize(clip, text="a red square").ids
    for frames, latent_frames in ((1, 1), (5, 2), (9, 3)):
        prefix = model.tokenize(clip[:, :, :frames], text="a red square").ids
        for p, w in zip(prefix, whole, strict=True):
            assert torch.equal(p, w[:, :latent_frames])
    model.save_pretrained(tmp_path)
    loaded = PyraTokModel.from_pretrained(tmp_path).eval()
    assert loaded.config.lateral_pooling == "strided_conv"
    assert loaded.core.quantizer.blocks[0].lateral.weight.shape[2:] == (4, 4, 4)  # F1: 4 frames x 4 x 4 cells
    for a, b in zip(loaded.tokenize(clip, text="a red square").ids, whole, strict=True):
        assert torch.equal(a, b)


def test_tokenize_detokenize_equals_encode_decode(tiny_model, video):
    tokens = tiny_model.tokenize(video, text="a red square")
    via_ids = tiny_model.detokenize(tokens)
    via_latent = tiny_model.decode(tiny_model.encode(video, text="a red square"))
    assert torch.allclose(via_ids, via_latent, atol=1e-6)
    assert torch.equal(tiny_model.detokenize(tokens.ids), via_ids)


def test_batch_items_never_see_each_other(tiny_model):
    activate_text_attention(tiny_model)
    a, b = make_video(seed=1), make_video(seed=2)
    alone = tiny_model.tokenize(a, text=["a cat"]).ids
    batched = tiny_model.tokenize(torch.cat([a, b]), text=["a cat", "a completely different long prompt"]).ids
    for x, y in zip(alone, batched, strict=True):
        assert torch.equal(x[0], y[0])


def test_text_changes_tokens_once_cross_attention_is_nonzero(tiny_model, video):
    # Zero-initialised attention output: the quantizer starts text-agnostic.
    assert all(
        torch.equal(a, b) for a, b in zip(tiny_model.tokenize(video).ids, tiny_model.tokenize(video, "a cat").ids)
    )
    activate_text_attention(tiny_model)
    no_text = tiny_model.tokenize(video).ids
    cat = tiny_model.tokenize(video, text="a cat").ids
    dog = tiny_model.tokenize(video, text="a dog sleeping").ids
    assert any(not torch.equal(a, b) for a, b in zip(no_text, cat))
    assert any(not torch.equal(a, b) for a, b in zip(cat, dog))
    # `None` in a prompt list means "no text" for that item, exactly like text=None.
    mixed = tiny_model.tokenize(torch.cat([video, video]), text=[None, "a cat"]).ids
    assert all(torch.equal(m[0], n[0]) and torch.equal(m[1], c[0]) for m, n, c in zip(mixed, no_text, cat))


def test_text_embeds_path_matches_prompt_path(tiny_model, video):
    activate_text_attention(tiny_model)
    embeds, mask = tiny_model.get_text_encoder()(["a cat"], video.device)
    by_embeds = tiny_model.tokenize(video, text_embeds=embeds, text_attention_mask=mask).ids
    by_prompt = tiny_model.tokenize(video, text="a cat").ids
    assert all(torch.equal(a, b) for a, b in zip(by_embeds, by_prompt))


def test_text_encoder_is_never_saved(tiny_model, video, tmp_path):
    tiny_model.tokenize(video, text="load the text encoder")
    assert tiny_model.core.text_encoder is not None
    assert not any("text_encoder" in k or "embeddings.word" in k for k in tiny_model.state_dict())


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda v: v[:, :, :8], "T=8"),
        (lambda v: v[..., :44, :], "44 x 64"),  # 48 x 64 is padded; sizes off the factor 8 raise
        (lambda v: v[0, 0], "expected (B, C, T, H, W)"),
        (lambda v: v[0], "9 channels"),
        (lambda v: ((v + 1) * 127.5).to(torch.uint8), "dtype torch.uint8"),
        (lambda v: (v + 1) * 127.5, "[-1, 1]"),
        (lambda v: v.index_fill(2, torch.tensor([3]), float("nan")), "NaN"),
        (lambda v: torch.cat([v, v[:, :1]], dim=1), "4 channels"),
        (lambda v: v.numpy(), "torch.Tensor"),
    ],
)
def test_bad_video_raises_value_error_naming_the_problem(tiny_model, video, bad, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        tiny_model.tokenize(bad(video))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"text": ""}, "text[0] is empty"),
        ({"text": ["a", "b"]}, "2 prompts for a batch of 1"),
        ({"text": [3]}, "text[0] is int"),
        ({"text_embeds": torch.zeros(1, 4, 7)}, "expected (1, L, 32)"),
        ({"text_embeds": torch.full((1, 4, 32), float("nan"))}, "NaN"),
        ({"text_embeds": torch.zeros(1, 4, 32), "text_attention_mask": torch.zeros(1, 4)}, "masks every token"),
    ],
)
def test_bad_text_raises_value_error(tiny_model, video, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        tiny_model.tokenize(video, **kwargs)


def test_bad_ids_and_latents_raise(tiny_model, video):
    tokens = tiny_model.tokenize(video)
    with pytest.raises(ValueError, match="4 id tensors"):
        tiny_model.detokenize(tokens.ids[:3])
    too_big = [i.clone() for i in tokens.ids]
    too_big[1][0, 0, 0, 0] = 2**16
    with pytest.raises(ValueError):
        tiny_model.detokenize(too_big)
    with pytest.raises(ValueError, match="z_dim=4"):
        tiny_model.decode(torch.zeros(1, 5, 3, 8, 8))


def test_text_dropout_only_in_training(video):
    torch.manual_seed(0)
    model = PyraTokModel(tiny_config(text_dropout=1.0))
    activate_text_attention(model)
    model.train()
    dropped = model(pixel_values=video, text="a cat")
    nothing = model(pixel_values=video)
    assert all(torch.equal(a, b) for a, b in zip(dropped.ids, nothing.ids))
    model.eval()
    kept = model(pixel_values=video, text="a cat")
    assert any(not torch.equal(a, b) for a, b in zip(kept.ids, nothing.ids))


def test_loss_backpropagates_to_lora_and_quantizer_only(video):
    torch.manual_seed(0)
    model = PyraTokModel(tiny_config())
    out = model(pixel_values=video, text=["a cat"])
    (out.loss + out.reconstruction.mean()).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    encoder_trainable = {n for n in trainable if ".encoder." in n}
    assert encoder_trainable and all("lora_" in n for n in encoder_trainable)
    assert not any(".decoder." in n or "quant_conv" in n for n in trainable)
    assert any(n.startswith("core.quantizer.") for n in trainable)
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_B" in n)


def test_bits_per_pixel_counts_all_levels(tiny_model):
    # 64x64x9 clip: 3 latent frames x (64 + 16 + 4 + 1) tokens x 16 bits.
    assert tiny_model.bits_per_pixel(64, 64, 9) == pytest.approx(3 * 85 * 16 / (9 * 64 * 64))


def test_tokens_dataclass_roundtrip_keeps_latent_size(tiny_model, video):
    tokens = tiny_model.tokenize(video)
    assert isinstance(tokens, PyraTokTokens) and tokens.latent_size == (3, 8, 8)


def test_merged_lora_inference_gives_the_same_tokens(video):
    torch.manual_seed(0)
    model = PyraTokModel(tiny_config()).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    before = model.tokenize(video)
    with model.merged_lora():
        merged = model.tokenize(video)
    assert sum((a != b).sum().item() for a, b in zip(before.ids, merged.ids)) <= 2  # float noise may flip a bit
    assert all(torch.equal(a, b) for a, b in zip(before.ids, model.tokenize(video).ids))

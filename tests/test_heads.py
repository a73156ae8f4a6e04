"""Tests for training/heads.py: the AR (global alignment) head and the drift head, with tiny random models."""

import math

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from pyratok.training.heads import (
    PyraTokARHead,
    PyraTokDriftHead,
    build_language_model,
    build_reference_encoder,
    softmax_kl,
)

TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 64,
    "max_position_embeddings": 512,
}
TINY_DINO = {
    "model_type": "dinov3_vit",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "patch_size": 8,
    "image_size": 32,
    "num_register_tokens": 2,
}
CODEBOOK_DIM, TEXT_DIM, NUM_LEVELS = 16, 8, 3
LEVEL_SIZES = (4, 2, 1)  # H_l = W_l per level
LATENT_FRAMES = 2
TOKENS_PER_LEVEL = [LATENT_FRAMES * s * s for s in LEVEL_SIZES]  # 32, 8, 2


def random_codes(batch: int = 2, seed: int = 0, requires_grad: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    codes = [torch.randn(batch, CODEBOOK_DIM, LATENT_FRAMES, s, s, generator=g).sign() for s in LEVEL_SIZES]
    return [c.requires_grad_(requires_grad) for c in codes]


def random_text(batch: int = 2, length: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, length, TEXT_DIM, generator=torch.Generator().manual_seed(seed))


def ar_head(max_ar_tokens: int = 1024, train_language_model: bool = False, seed: int = 0) -> PyraTokARHead:
    torch.manual_seed(seed)
    lm = build_language_model(config=TINY_LLAMA)
    return PyraTokARHead(lm, CODEBOOK_DIM, TEXT_DIM, NUM_LEVELS, max_ar_tokens, train_language_model)


@pytest.fixture
def head() -> PyraTokARHead:
    return ar_head()


# ---- AR head --------------------------------------------------------------------------------------------------------


def test_ar_loss_is_finite_and_positive(head):
    loss = head(random_codes(), random_text())
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    assert abs(loss.item() - math.log(2)) < 0.5  # random head: near chance


def test_ar_gradients_reach_head_and_codes_not_the_frozen_lm(head):
    codes = random_codes(requires_grad=True)
    head(codes, random_text()).backward()
    for name in ("code_to_hidden", "bit_head", "text_to_hidden"):
        grad = getattr(head, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert head.soi.grad.abs().sum() > 0 and head.level_sep.grad.abs().sum() > 0
    for level_codes in codes:  # the tokenizer gets a gradient through the straight-through codes
        assert level_codes.grad is not None and level_codes.grad.abs().sum() > 0
    lm = head.language_model
    assert all(not p.requires_grad and p.grad is None for p in lm.parameters())


def test_text_projection_stays_in_the_graph_without_text(head):
    # DDP needs a gradient (here zero) for every trainable parameter even when a batch has no text.
    head(random_codes(), None).backward()
    assert head.text_to_hidden.weight.grad is not None and not head.text_to_hidden.weight.grad.any()


def test_frozen_lm_stays_out_of_state_dict_and_eval(head):
    assert not any(k.startswith("language_model") for k in head.state_dict())
    assert sum(p.numel() for p in head.parameters()) < sum(p.numel() for p in head.language_model.parameters())
    head.train()
    assert not head.language_model.training
    head.double()
    assert next(head.language_model.parameters()).dtype == torch.float64
    assert torch.isfinite(head([c.double() for c in random_codes()], random_text().double()))


def test_trainable_lm_gets_gradients_and_is_saved():
    head = ar_head(train_language_model=True)
    head(random_codes(), random_text()).backward()
    assert any(k.startswith("language_model.") for k in head.state_dict())
    grads = [p.grad for n, p in head.language_model.named_parameters() if "layers.0." in n]
    assert grads and all(g is not None for g in grads)


def test_ar_is_causal_across_levels(head):
    codes, text = random_codes(), random_text()
    before = head(codes, text, reduction="none")  # (B, N)
    assert before.shape == (2, sum(TOKENS_PER_LEVEL))
    changed = [c.clone() for c in codes]
    changed[2] = -changed[2]  # flip every bit of the last level
    after = head(changed, text, reduction="none")
    earlier = sum(TOKENS_PER_LEVEL[:2])
    assert torch.allclose(before[:, :earlier], after[:, :earlier], atol=1e-6)
    assert not torch.allclose(before[:, earlier:], after[:, earlier:])


def test_ar_is_causal_within_a_level(head):
    codes, text = random_codes(), random_text()
    before = head(codes, text, reduction="none")
    changed = [c.clone() for c in codes]
    changed[0][:, :, 1] = -changed[0][:, :, 1]  # the second latent frame of level 1: tokens 16..31
    after = head(changed, text, reduction="none")
    assert torch.allclose(before[:, :16], after[:, :16], atol=1e-6)
    assert not torch.allclose(before[:, 16:], after[:, 16:])


def test_ar_sees_the_text(head):
    codes = random_codes()
    assert not torch.allclose(head(codes, random_text(seed=1)), head(codes, random_text(seed=2)))


def test_ar_crop_to_max_tokens():
    head = ar_head(max_ar_tokens=10)
    codes, text = random_codes(), random_text()
    # At most 9 predictions in a 10-position window; the text prefix is kept on top of it.
    losses = head(codes, text, generator=torch.Generator().manual_seed(0), reduction="none")
    assert losses.shape[0] == 2 and 1 <= losses.shape[1] <= 9 and torch.isfinite(losses).all()
    a = head(codes, text, generator=torch.Generator().manual_seed(3))
    b = head(codes, text, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    crops = {round(head(codes, text, generator=torch.Generator().manual_seed(s)).item(), 6) for s in range(6)}
    assert len(crops) > 1  # the window moves


def test_ar_no_text_item_equals_running_it_alone(head):
    codes, text = random_codes(), random_text()
    present = torch.tensor([True, False])
    batched = head(codes, text, text_present=present, reduction="none")
    alone = head([c[1:] for c in codes], None, reduction="none")
    assert torch.allclose(batched[1], alone[0], atol=1e-5)
    with_text = head([c[:1] for c in codes], text[:1], reduction="none")
    assert torch.allclose(batched[0], with_text[0], atol=1e-5)


def test_ar_padded_text_equals_unpadded_text(head):
    codes, text = random_codes(), random_text(length=6)
    mask = torch.tensor([[True, True, True, False, False, False], [True] * 6])
    batched = head(codes, text, text_mask=mask, reduction="none")
    short = head([c[:1] for c in codes], text[:1, :3], reduction="none")
    full = head([c[1:] for c in codes], text[1:], reduction="none")
    assert torch.allclose(batched[0], short[0], atol=1e-5)
    assert torch.allclose(batched[1], full[0], atol=1e-5)
    assert torch.isfinite(batched).all()


def test_ar_head_runs_a_bare_base_model_like_the_causal_lm():
    torch.manual_seed(0)
    lm = build_language_model(config=TINY_LLAMA)
    with_lm_head = PyraTokARHead(lm, CODEBOOK_DIM, TEXT_DIM, NUM_LEVELS)
    base = AutoModel.from_config(AutoConfig.for_model(**TINY_LLAMA))
    base.load_state_dict(lm.model.state_dict())
    bare = PyraTokARHead(base, CODEBOOK_DIM, TEXT_DIM, NUM_LEVELS)
    bare.load_state_dict(with_lm_head.state_dict())
    codes, text = random_codes(), random_text()
    assert torch.allclose(with_lm_head(codes, text), bare(codes, text), atol=1e-6)


def test_vlm_folder_keeps_only_its_language_model(tmp_path):
    # The default recipe's LM is a VLM (Qwen2.5-VL): the builder keeps its text decoder and drops the vision tower.
    text_config = dict(TINY_LLAMA, rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]})
    del text_config["model_type"]
    vision_config = {"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "out_hidden_size": 32}
    config = AutoConfig.for_model("qwen2_5_vl", text_config=text_config, vision_config=vision_config)
    AutoModelForImageTextToText.from_config(config).save_pretrained(tmp_path)
    lm = build_language_model(str(tmp_path))
    assert type(lm).__name__ == "Qwen2_5_VLTextModel"
    assert not any("visual" in name for name, _ in lm.named_parameters())
    head = PyraTokARHead(lm, CODEBOOK_DIM, TEXT_DIM, NUM_LEVELS)
    assert torch.isfinite(head(random_codes(), random_text(), text_present=torch.tensor([True, False])))


def test_ar_loss_drops_on_a_learnable_pattern(head):
    # Constant codes: every next token has the same bits, which the bit head learns in a few steps.
    pattern = torch.tensor([1.0, -1.0] * (CODEBOOK_DIM // 2)).view(1, CODEBOOK_DIM, 1, 1, 1)
    codes = [pattern.expand(2, -1, LATENT_FRAMES, s, s).contiguous() for s in LEVEL_SIZES]
    optimizer = torch.optim.Adam([p for p in head.parameters() if p.requires_grad], lr=3e-2)
    first = None
    for _ in range(15):
        loss = head(codes, None)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert head(codes, None).item() < 0.5 * first


@pytest.mark.parametrize(
    "codes, text, message",
    [
        (random_codes()[:2], None, "levels"),
        ([c[:, :8] for c in random_codes()], None, "codebook_dim|B, 16"),
        ([random_codes()[0][:1], *random_codes()[1:]], None, "batch"),
        (random_codes(), torch.zeros(2, 5, TEXT_DIM + 1), "text_embeds"),
        (random_codes(), torch.zeros(3, 5, TEXT_DIM), "text_embeds"),
    ],
)
def test_ar_validates_inputs(head, codes, text, message):
    with pytest.raises(ValueError, match=message):
        head(codes, text)


def test_ar_validates_construction_and_builder():
    lm = build_language_model(config=TINY_LLAMA)
    with pytest.raises(ValueError, match="max_ar_tokens"):
        PyraTokARHead(lm, CODEBOOK_DIM, TEXT_DIM, NUM_LEVELS, max_ar_tokens=2)
    with pytest.raises(ValueError, match="exactly one"):
        build_language_model()
    with pytest.raises(ValueError, match="exactly one"):
        build_language_model("some/model", config=TINY_LLAMA)
    with pytest.raises(ValueError, match="model_type"):
        build_language_model(config={"hidden_size": 32})


# ---- drift head -----------------------------------------------------------------------------------------------------


@pytest.fixture
def drift() -> PyraTokDriftHead:
    torch.manual_seed(0)
    return PyraTokDriftHead(build_reference_encoder(config=TINY_DINO), feature_channels=6)


def clip(batch: int = 2, frames: int = 9, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size, generator=g) * 2 - 1


def taps(batch: int = 2, frames: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 6, frames, 4, 4, generator=torch.Generator().manual_seed(seed))


def test_softmax_kl_is_zero_for_equal_logits_and_positive_otherwise():
    a = torch.randn(4, 10)
    assert torch.allclose(softmax_kl(a, a), torch.zeros(4), atol=1e-6)
    assert torch.allclose(softmax_kl(a, a + 3.0), torch.zeros(4), atol=1e-5)  # shift-invariant like softmax
    assert (softmax_kl(a, torch.randn(4, 10), temperature=0.5) > 0).all()


def test_drift_loss_is_nonnegative_and_reaches_head_and_features(drift):
    features = taps().requires_grad_(True)
    loss = drift(features, clip(), num_latent_frames=3)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() >= 0
    loss.backward()
    assert drift.head.weight.grad.abs().sum() > 0
    assert features.grad is not None and features.grad.abs().sum() > 0
    reference = drift.reference_encoder
    assert all(not p.requires_grad and p.grad is None for p in reference.parameters())


def test_drift_reference_stays_frozen_out_of_state_dict(drift):
    assert set(drift.state_dict()) == {"head.weight", "head.bias"}
    drift.train()
    assert not drift.reference_encoder.training


def test_drift_loss_is_zero_when_the_head_matches_the_reference(drift):
    video = clip()
    reference = drift.reference_features(video, 3)  # (B, T', D)
    assert reference.shape == (2, 3, TINY_DINO["hidden_size"])
    # Features whose pooled value is one-hot per (item, latent frame) and a head that reads the reference rows off.
    features = torch.zeros(2, 6, 3, 4, 4)
    for b in range(2):
        for t in range(3):
            features[b, b * 3 + t, t] = 1.0
    with torch.no_grad():
        drift.head.weight.copy_(reference.reshape(6, -1).T)
        drift.head.bias.zero_()
    assert abs(drift(features, video, 3).item()) < 1e-6


def test_drift_loss_drops_when_the_head_trains(drift):
    features, video = taps(), clip()
    optimizer = torch.optim.Adam(drift.parameters(), lr=5e-2)
    first = drift(features, video, 3).item()
    for _ in range(20):
        loss = drift(features, video, 3)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert drift(features, video, 3).item() < 0.5 * first


def test_drift_reference_grouping_is_causal(drift):
    video = clip()
    changed = video.clone()
    changed[:, :, -1] = -changed[:, :, -1]  # the last frame belongs to the last latent frame only
    before, after = drift.reference_features(video, 3), drift.reference_features(changed, 3)
    assert torch.allclose(before[:, :2], after[:, :2], atol=1e-6)
    assert not torch.allclose(before[:, 2], after[:, 2])


def test_drift_mean_pooling_and_explicit_image_size():
    torch.manual_seed(0)
    head = PyraTokDriftHead(
        build_reference_encoder(config=TINY_DINO),
        6,
        temperature=0.5,
        reference_image_size=16,
        reference_pooling="mean",
    )
    assert head.num_patches == 4
    assert torch.isfinite(head(taps(), clip(), 3))


@pytest.mark.parametrize(
    "features, video, frames",
    [
        (torch.zeros(2, 5, 3, 4, 4), clip(), 3),  # wrong channels
        (torch.zeros(2, 6, 3, 4), clip(), 3),  # not 5-D
        (taps(), clip()[:, :, 0], 3),  # video not 5-D
        (taps(batch=1), clip(), 3),  # batch mismatch
        (taps(), clip(frames=8), 3),  # 8 frames do not group causally into 3
        (taps(frames=4), clip(), 3),  # 4 tap frames do not group into 3
    ],
)
def test_drift_validates_shapes(drift, features, video, frames):
    with pytest.raises(ValueError):
        drift(features, video, frames)


def test_drift_validates_construction():
    reference = build_reference_encoder(config=TINY_DINO)
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())
    with pytest.raises(ValueError, match="temperature"):
        PyraTokDriftHead(reference, 6, temperature=0.0)
    with pytest.raises(ValueError, match="feature_channels"):
        PyraTokDriftHead(reference, 0)
    with pytest.raises(ValueError, match="both"):
        build_reference_encoder("facebook/dinov3-vits16-pretrain-lvd1689m", config=TINY_DINO)

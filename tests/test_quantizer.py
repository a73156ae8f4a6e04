"""LaPQ quantizer: shapes, code <-> index, entropy maths against brute force, losses, causality, independence."""

import itertools

import pytest
import torch

from modeling_pyratok.quantizer_pyratok import (
    PyraTokLaPQ,
    PyraTokQuantizationBlock,
    batch_code_entropy,
    bernoulli_kl,
    bits_to_ids,
    ids_to_bits,
    per_token_entropy,
    spatial_avg_pool,
    temporal_group_pool,
)
from tests.conftest import activate_text_attention

LATENT = (3, 8, 8)
CHANNELS = [8, 16, 16, 8]
TEXT_DIM = 12
# Frame counts and sizes of Wan-style taps for a 9-frame 64x64 clip: F1 (T, H/2), F2 (T/2+, H/4), F3/F4 (T', H/8).
TAP_SHAPES = [(8, 9, 32, 32), (16, 5, 16, 16), (16, 3, 8, 8), (8, 3, 8, 8)]
# First input frame of each tap that only latent frame 2 may see (chunks: F1 groups of 4, F2 of 2, F3/F4 of 1).
LAST_CHUNK_START = [5, 3, 2, 2]
# (frame group g, spatial factor f) from each tap above to its level grid (3, 8/s, 8/s), s = 1, 2, 4, 8.
TAP_REDUCTIONS = [(4, 4), (2, 4), (1, 4), (1, 8)]


def make_quantizer(**overrides) -> PyraTokLaPQ:
    torch.manual_seed(0)
    kwargs = dict(
        feature_channels=CHANNELS,
        z_dim=4,
        text_embed_dim=TEXT_DIM,
        hidden_size=32,
        num_heads=2,
        mlp_ratio=2.0,
        codebook_dim=8,
        semantic_dim=16,
        fusion_hidden_size=16,
    )
    if overrides.get("lateral_pooling") == "strided_conv":
        kwargs["feature_reductions"] = TAP_REDUCTIONS
    kwargs.update(overrides)
    return PyraTokLaPQ(**kwargs)


def make_features(batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, *shape, generator=g) for shape in TAP_SHAPES]


def make_text(batch: int = 2, length: int = 5, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    embeds = torch.randn(batch, length, TEXT_DIM, generator=g)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, -2:] = False  # padding on item 0
    return embeds, mask


@pytest.fixture(params=["average", "strided_conv"])
def quantizer(request) -> PyraTokLaPQ:
    """Every invariant below holds for both lateral paths (DESIGN §3: average pooling or a strided conv)."""
    return make_quantizer(lateral_pooling=request.param).eval()


# ---------------------------------------------------------------------------------------------------------------------
# Shapes and codes
# ---------------------------------------------------------------------------------------------------------------------


def test_output_shapes_codes_and_ids(quantizer):
    embeds, mask = make_text()
    out = quantizer(make_features(), LATENT, text_embeds=embeds, text_attention_mask=mask)
    assert out.latent.shape == (2, 4, *LATENT)
    assert quantizer.level_grid(LATENT) == [(3, 8, 8), (3, 4, 4), (3, 2, 2), (3, 1, 1)]
    for level, (t, h, w) in enumerate(quantizer.level_grid(LATENT)):
        codes, ids, logits = out.codes[level], out.ids[level], out.bit_logits[level]
        assert codes.shape == logits.shape == (2, 8, t, h, w)
        assert ids.shape == (2, t, h, w)
        assert ids.dtype == torch.int64
        assert 0 <= int(ids.min()) and int(ids.max()) < 2**8
        assert logits.dtype == torch.float32
        assert torch.equal(codes.abs(), torch.ones_like(codes))  # exactly ±1, no round-off from straight-through
        assert torch.equal(codes, torch.where(logits >= 0, 1.0, -1.0))
        assert torch.equal(ids, bits_to_ids(codes))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)


@pytest.mark.parametrize("codebook_dim", [4, 8, 16])
def test_bits_ids_round_trip(codebook_dim):
    g = torch.Generator().manual_seed(codebook_dim)
    ids = torch.randint(0, 2**codebook_dim, (2, 3, 4, 5), generator=g)
    ids[0, 0, 0, :2] = torch.tensor([0, 2**codebook_dim - 1])  # both ends of the range
    codes = ids_to_bits(ids, codebook_dim)
    assert codes.shape == (2, codebook_dim, 3, 4, 5) and codes.dtype == torch.float32
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(bits_to_ids(codes), ids)
    assert torch.equal(ids_to_bits(bits_to_ids(codes), codebook_dim), codes)


def test_bits_msb_is_channel_zero():
    codes = torch.tensor([[1.0, -1.0, -1.0, 1.0], [-1.0, -1.0, 1.0, 1.0]])  # (2, d=4), bits along dim 1
    assert bits_to_ids(codes, dim=1).tolist() == [0b1001, 0b0011]
    assert ids_to_bits(torch.tensor([0b1001]), 4, dim=1).tolist() == [[1.0, -1.0, -1.0, 1.0]]


def test_ids_to_bits_rejects_bad_ids():
    with pytest.raises(ValueError, match="max 16"):
        ids_to_bits(torch.tensor([0, 16]), 4)
    with pytest.raises(ValueError, match="min -1"):
        ids_to_bits(torch.tensor([-1, 3]), 4)
    with pytest.raises(ValueError, match="integer"):
        ids_to_bits(torch.tensor([1.0]), 4)


def test_temporal_group_pool_follows_causal_chunks():
    x = torch.arange(9.0).reshape(1, 1, 9, 1, 1)
    assert temporal_group_pool(x, 3).flatten().tolist() == [0.0, 2.5, 6.5]
    with pytest.raises(ValueError, match="8 frames"):
        temporal_group_pool(torch.zeros(1, 1, 8, 1, 1), 3)
    # A later streamed piece (frames 1..8 of the same clip) pools into the whole clip's later latent frames.
    assert temporal_group_pool(x[:, :, 1:], 2, first_frame=False).flatten().tolist() == [2.5, 6.5]
    with pytest.raises(ValueError, match="7 frames of a piece after frame 0"):
        temporal_group_pool(torch.zeros(1, 1, 7, 1, 1), 2, first_frame=False)


# ---------------------------------------------------------------------------------------------------------------------
# Entropy maths against brute force over all 2^d codes
# ---------------------------------------------------------------------------------------------------------------------


def brute_code_distributions(p: torch.Tensor) -> torch.Tensor:
    """(N, d) bit probabilities -> (N, 2^d) code distributions, float64, index MSB = bit 0."""
    d = p.shape[1]
    bits = torch.tensor(list(itertools.product([0, 1], repeat=d)), dtype=torch.float64)  # (2^d, d), MSB first
    p = p.double()[:, None, :]
    return torch.where(bits.bool(), p, 1 - p).prod(-1)


def entropy64(prob: torch.Tensor) -> torch.Tensor:
    return -(prob * prob.log()).sum(-1)


@pytest.mark.parametrize("d", [5, 6])
def test_entropies_match_brute_force(d):
    g = torch.Generator().manual_seed(d)
    p = torch.rand(37, d, generator=g) * 0.96 + 0.02
    dists = brute_code_distributions(p)
    torch.testing.assert_close(per_token_entropy(p).double(), entropy64(dists).mean(), atol=1e-5, rtol=0)
    exact = batch_code_entropy(p, mode="exact")
    torch.testing.assert_close(exact.double(), entropy64(dists.mean(0)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_groups", [2, 3])
def test_grouped_entropy_matches_its_definition_and_bounds_exact(num_groups):
    g = torch.Generator().manual_seed(num_groups)
    p = torch.sigmoid(3 * torch.randn(40, 6, generator=g))
    grouped = batch_code_entropy(p, mode="grouped", num_groups=num_groups)
    reference = sum(entropy64(brute_code_distributions(part).mean(0)) for part in p.chunk(num_groups, dim=1))
    torch.testing.assert_close(grouped.double(), reference, atol=1e-5, rtol=0)
    assert grouped >= batch_code_entropy(p, mode="exact") - 1e-6
    # With correlated bits the bound is strict: factorising loses the dependence between groups.
    correlated = torch.sigmoid(4 * torch.randn(40, 1, generator=g)).repeat(1, 6)
    assert batch_code_entropy(correlated, "grouped", num_groups) > batch_code_entropy(correlated, "exact") + 0.1


@pytest.mark.parametrize("mode", ["exact", "grouped"])
def test_chunked_entropy_equals_unchunked(mode):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(50, 8, generator=g)
    results = []
    for chunk_size in (7, 8192):
        z = logits.clone().requires_grad_(True)
        value = batch_code_entropy(torch.sigmoid(z), mode=mode, chunk_size=chunk_size)
        value.backward()
        results.append((value.detach(), z.grad))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-6, rtol=1e-5)
    assert results[0][1].abs().sum() > 0


def test_bernoulli_kl_closed_form():
    p, q = torch.tensor([0.3, 0.5, 0.9]), torch.tensor([0.6, 0.5, 0.2])
    expected = p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()
    torch.testing.assert_close(bernoulli_kl(p, q), expected)
    assert bernoulli_kl(p, p).abs().max() < 1e-6


# ---------------------------------------------------------------------------------------------------------------------
# Losses and gradients
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lateral_pooling", ["average", "strided_conv"])
def test_loss_backward_reaches_every_part(lateral_pooling):
    model = make_quantizer(lateral_pooling=lateral_pooling).train()
    embeds, mask = make_text()
    out = model(make_features(), LATENT, text_embeds=embeds, text_attention_mask=mask)
    assert set(out.losses) == {
        "commitment",
        "entropy",
        "hierarchical",
        "text_alignment",
        "text_codebook",
        "per_token_entropy",
        "batch_entropy",
    }
    (out.loss + out.latent.square().mean()).backward()
    for name in [
        "blocks.0.lateral.weight",
        "blocks.3.lateral.weight",
        "blocks.2.pyramid_link.weight",
        "blocks.1.attn.out_proj.weight",  # zero at init, but its gradient is not
        "blocks.0.mlp.2.weight",
        "blocks.3.lfq_proj.weight",
        "fusion.conv_out.weight",
        "fusion.level_proj.3.weight",
        "code_embedding.weight",
        "text_semantic_proj.weight",
        "logit_scale",
    ]:
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    # With the attention output live, gradients reach the shared text projection and the null embedding too.
    model.zero_grad()
    activate_text_attention(model)
    present = torch.tensor([True, False])
    model(make_features(), LATENT, text_embeds=embeds, text_attention_mask=mask, text_present=present).loss.backward()
    assert model.text_proj.weight.grad.abs().sum() > 0
    assert model.null_text_embedding.grad.abs().sum() > 0


def test_straight_through_gradient_reaches_bit_projection():
    model = make_quantizer(entropy_weight=0.0, commitment_weight=0.0, hierarchical_weight=0.0)
    out = model(make_features(), LATENT, compute_losses=False)
    assert out.loss is None and out.losses is None
    out.latent.square().mean().backward()  # depends on the codes only through the sign
    for block in model.blocks:
        assert block.lfq_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "name",
    ["commitment_weight", "entropy_weight", "hierarchical_weight", "text_alignment_weight", "text_codebook_weight"],
)
def test_zero_weight_removes_term(name):
    term = name.removesuffix("_weight")
    embeds, mask = make_text()
    model = make_quantizer(**{name: 0.0})
    out = model(make_features(), LATENT, text_embeds=embeds, text_attention_mask=mask)
    assert term not in out.losses
    expected = sum(w * out.losses[n] for n, w in model.loss_weights.items() if n in out.losses)
    torch.testing.assert_close(out.loss, expected)
    if term == "entropy":
        assert "per_token_entropy" not in out.losses and "batch_entropy" not in out.losses


def test_text_terms_need_text(quantizer):
    assert not {"text_alignment", "text_codebook"} & set(quantizer(make_features(), LATENT).losses)
    embeds, mask = make_text()
    one = quantizer(
        make_features(), LATENT, text_embeds=embeds, text_attention_mask=mask, text_present=torch.tensor([1, 0])
    )
    assert "text_alignment" in one.losses and "text_codebook" not in one.losses


# ---------------------------------------------------------------------------------------------------------------------
# Text conditioning, independence, causality
# ---------------------------------------------------------------------------------------------------------------------


def test_text_is_identity_at_init_and_matters_once_trained(quantizer):
    features = make_features()
    embeds, mask = make_text()
    plain = quantizer(features, LATENT, compute_losses=False)
    with_text = quantizer(features, LATENT, text_embeds=embeds, text_attention_mask=mask, compute_losses=False)
    for a, b in zip(plain.ids, with_text.ids, strict=True):
        assert torch.equal(a, b)
    activate_text_attention(quantizer)
    other, _ = make_text(seed=7)
    first = quantizer(features, LATENT, text_embeds=embeds, compute_losses=False)
    second = quantizer(features, LATENT, text_embeds=other, compute_losses=False)
    assert any(not torch.equal(a, b) for a, b in zip(first.ids, second.ids, strict=True))


def test_batch_items_are_independent(quantizer):
    activate_text_attention(quantizer)
    features = make_features()
    embeds, mask = make_text()
    alone = quantizer(
        [f[:1] for f in features], LATENT, text_embeds=embeds[:1], text_attention_mask=mask[:1], compute_losses=False
    )
    batched = quantizer(features, LATENT, text_embeds=embeds, text_attention_mask=mask, compute_losses=False)
    other_text = embeds.clone()
    other_text[1] = torch.randn(5, TEXT_DIM)
    swapped = quantizer(features, LATENT, text_embeds=other_text, text_attention_mask=mask, compute_losses=False)
    for out in (batched, swapped):
        for a, b in zip(alone.ids, out.ids, strict=True):
            assert torch.equal(a[0], b[0])
        torch.testing.assert_close(alone.latent[0], out.latent[0], atol=1e-6, rtol=1e-5)
    assert any(not torch.equal(a[1], b[1]) for a, b in zip(batched.ids, swapped.ids, strict=True))


def test_quantizer_is_causal_in_time(quantizer):
    activate_text_attention(quantizer)
    features = make_features()
    embeds, mask = make_text()
    perturbed = [f.clone() for f in features]
    for f, start in zip(perturbed, LAST_CHUNK_START, strict=True):
        f[:, :, start:] += 3 * torch.randn_like(f[:, :, start:])
    kwargs = dict(text_embeds=embeds, text_attention_mask=mask, compute_losses=False)
    base = quantizer(features, LATENT, **kwargs)
    moved = quantizer(perturbed, LATENT, **kwargs)
    for a, b in zip(base.ids, moved.ids, strict=True):
        assert torch.equal(a[:, :2], b[:, :2])
    torch.testing.assert_close(base.latent[:, :, :2], moved.latent[:, :, :2], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(base.latent[:, :, 2], moved.latent[:, :, 2])  # the perturbation did reach frame 2


def test_ids_decode_to_the_same_latent(quantizer):
    out = quantizer(make_features(), LATENT, compute_losses=False)
    codes = quantizer.ids_to_codes(list(out.ids))
    for a, b in zip(codes, out.codes, strict=True):
        assert torch.equal(a, b)
    torch.testing.assert_close(quantizer.codes_to_latent(codes, LATENT), out.latent, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(quantizer.codes_to_latent(codes), out.latent, atol=1e-6, rtol=1e-5)
    assert quantizer.embed_codes(codes[1]).shape == (2, 16, 3, 4, 4)


# ---------------------------------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------------------------------


def test_invalid_inputs_raise(quantizer):
    features = make_features()
    with pytest.raises(ValueError, match="4 feature tensors, got 3"):
        quantizer(features[:3], LATENT)
    with pytest.raises(ValueError, match="level 1: expected 16 channels"):
        quantizer([features[0], features[1][:, :8], *features[2:]], LATENT)
    with pytest.raises(ValueError, match="largest level stride 8"):
        quantizer(features, (3, 12, 12))
    with pytest.raises(ValueError, match="level 0: 8 frames"):
        quantizer([features[0][:, :, :8], *features[1:]], LATENT)
    with pytest.raises(ValueError, match=f"text_embeds must be \\(B=2, L, {TEXT_DIM}\\)"):
        quantizer(features, LATENT, text_embeds=torch.randn(2, 5, TEXT_DIM + 1))
    nan_features = [f.clone() for f in features]
    nan_features[2][0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="level 2: features contain NaN"):
        quantizer(nan_features, LATENT)
    ids = [torch.zeros(2, *grid, dtype=torch.long) for grid in quantizer.level_grid(LATENT)]
    with pytest.raises(ValueError, match="level 2: ids shape"):
        quantizer.ids_to_codes([ids[0], ids[1], ids[1], ids[3]])
    ids[3][0, 0, 0, 0] = 2**8
    with pytest.raises(ValueError, match="level 3: .*max 256"):
        quantizer.ids_to_codes(ids)


# ---------------------------------------------------------------------------------------------------------------------
# Strided-conv lateral
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", range(4))
def test_strided_lateral_starts_as_average_pooling_then_a_1x1_conv(level):
    torch.manual_seed(level)
    strided = PyraTokQuantizationBlock(
        CHANNELS[level], 32, 8, num_heads=2, lateral_pooling="strided_conv", reduction=TAP_REDUCTIONS[level]
    )
    features = make_features()[level]
    grid = (3, 8 // 2**level, 8 // 2**level)
    weight = strided.lateral.weight.sum(dim=(2, 3, 4), keepdim=True)  # the equivalent 1x1x1 conv
    averaged = torch.nn.functional.conv3d(
        spatial_avg_pool(temporal_group_pool(features, 3), grid[1:]), weight, strided.lateral.bias
    )
    lateral = strided._strided_lateral(features, grid, first_frame=True)
    torch.testing.assert_close(lateral, averaged, atol=1e-5, rtol=1e-5)


def test_strided_lateral_learns_a_weight_per_window_position():
    model = make_quantizer(lateral_pooling="strided_conv").train()
    model(make_features(), LATENT, compute_losses=False).latent.square().mean().backward()
    for block, (group, factor) in zip(model.blocks, TAP_REDUCTIONS, strict=True):
        assert block.lateral.weight.shape[2:] == (group, factor, factor)
        grad = block.lateral.weight.grad
        # Different window positions see different inputs, so they get different gradients: the conv can learn
        # which positions matter, which average pooling cannot.
        assert not torch.allclose(grad[..., :1, :1, :1].expand_as(grad), grad)


def test_strided_lateral_needs_its_reductions_and_matching_taps():
    with pytest.raises(ValueError, match="one \\(g, f\\) reduction per level \\(4\\)"):
        make_quantizer(lateral_pooling="strided_conv", feature_reductions=TAP_REDUCTIONS[:3])
    with pytest.raises(ValueError, match="lateral_pooling='max'"):
        make_quantizer(lateral_pooling="max")
    model = make_quantizer(lateral_pooling="strided_conv", feature_reductions=[(4, 4), (2, 4), (1, 4), (1, 4)])
    with pytest.raises(ValueError, match="spatial factor 4.*needs 3 frames of 4x4"):
        model(make_features(), LATENT)

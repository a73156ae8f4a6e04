"""The quantizer's promises pinned to values computed independently (float64 by hand, brute force over all codes).

Each test here is aimed at a plausible bug that left the rest of the suite green (issue 26): sign(0), batch entropy
pooled over the batch, config weights reaching the quantizer, the InfoNCE's two directions, the direction of the
hierarchical KL, and every term of the loss breakdown.
"""

import itertools
import math

import pytest
import torch

from modeling_pyratok import PyraTokModel
from modeling_pyratok.quantizer_pyratok import (
    LOSS_NAMES,
    PyraTokLaPQ,
    PyraTokResidualQuantizer,
    batch_code_entropy,
    per_token_entropy,
)
from tests.conftest import activate_text_attention, make_video, tiny_config

TEXT_DIM = 6
BITS = 4
WEIGHTS = {"commitment": 0.3, "entropy": 0.7, "hierarchical": 1.3, "text_alignment": 1.9, "text_codebook": 2.3}


def small_lapq(**overrides) -> PyraTokLaPQ:
    """Two levels (strides 1 and 2) on a (1, 4, 4) latent: 16 + 4 tokens per item, 4 bits each."""
    torch.manual_seed(0)
    kwargs = dict(
        feature_channels=[3, 5], z_dim=2, text_embed_dim=TEXT_DIM, level_spatial_strides=(1, 2), hidden_size=8,
        num_heads=2, mlp_ratio=1.0, codebook_dim=BITS, semantic_dim=5, fusion_hidden_size=4,
        bit_inverse_temperature=0.8, **{f"{k}_weight": v for k, v in WEIGHTS.items()},
    )
    kwargs.update(overrides)
    return PyraTokLaPQ(**kwargs)


def small_inputs(batch: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    features = [torch.randn(batch, 3, 1, 4, 4, generator=g), torch.randn(batch, 5, 1, 4, 4, generator=g)]
    text = torch.randn(batch, 3, TEXT_DIM, generator=g)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]][:batch], dtype=torch.bool)
    return features, text, mask


# ------------------------------------------------------------------------------------------------ independent maths


def bern_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(Bern(p) || Bern(q)) elementwise, float64, no clamping (inputs are well inside (0, 1))."""
    p, q = p.double(), q.double()
    return p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()


def brute_force_entropies(p: torch.Tensor) -> tuple[float, float]:
    """(mean per-token entropy, entropy of the average code distribution) of `(N, d)` bit probabilities, by
    enumerating all 2**d codes in float64."""
    p = p.double()
    codes = torch.tensor(list(itertools.product([0, 1], repeat=p.shape[1])), dtype=torch.float64)  # (2**d, d)
    # P_n(c) = prod_i p_ni^c_i (1 - p_ni)^(1 - c_i)
    probs = (codes[None] * p[:, None] + (1 - codes[None]) * (1 - p[:, None])).prod(-1)  # (N, 2**d)
    token = -(probs * probs.log()).sum(1).mean().item()
    average = probs.mean(0)
    return token, -(average * average.log()).sum().item()


def infonce_directions(logits: torch.Tensor) -> tuple[float, float]:
    """InfoNCE with the diagonal as positives, each direction: (video → text over rows, text → video over columns)."""
    logits = logits.double()
    k = logits.shape[0]
    rows = [-(logits[i, i] - torch.logsumexp(logits[i], 0)) for i in range(k)]
    cols = [-(logits[j, j] - torch.logsumexp(logits[:, j], 0)) for j in range(k)]
    return (sum(rows) / k).item(), (sum(cols) / k).item()


def expected_breakdown(quantizer: PyraTokLaPQ, out, text: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Every LaPQ loss term recomputed in float64 from the output's bit logits and codes (DESIGN §4)."""
    tau = quantizer.bit_inverse_temperature
    z = [b.double() for b in out.bit_logits]  # (B, d, 1, H_l, W_l)
    p = [torch.sigmoid(2 * tau * level) for level in z]
    sign = [torch.where(level >= 0, 1.0, -1.0).double() for level in z]
    terms = {"commitment": sum(((a - b) ** 2).mean() for a, b in zip(z, sign, strict=True)).item() / len(z)}
    pooled = torch.cat([level.permute(0, 2, 3, 4, 1).reshape(-1, BITS) for level in p])
    token, batch = brute_force_entropies(pooled)
    terms["entropy"], terms["per_token_entropy"], terms["batch_entropy"] = token - batch, token, batch
    # KL(Bern(p^(l)) || Bern(pool(p^(l-1)))): the coarse level against the 2x2 average of the finer one.
    target = torch.nn.functional.avg_pool3d(p[0], kernel_size=(1, 2, 2))
    terms["hierarchical"] = bern_kl(p[1], target).sum(1).mean().item()
    # Semantic space: the masked mean of the text tokens, projected; W_c maps the bits.
    weight = mask.double()[..., None]
    mean_text = (text.double() * weight).sum(1) / weight.sum(1)
    proj = quantizer.text_semantic_proj
    u = mean_text @ proj.weight.double().t() + proj.bias.double()  # (B, d_s)
    w_c = quantizer.code_embedding.weight.double()  # (d_s, d)
    prior = torch.sigmoid(2 * u @ w_c)[:, :, None, None, None]  # (B, d, 1, 1, 1)
    terms["text_alignment"] = sum(bern_kl(level, prior).sum(1).mean() for level in p).item() / len(p)
    codes = [c.detach().double() for c in out.codes]
    mean_code = torch.cat([c.flatten(2) for c in codes], dim=2).mean(2)  # (B, d) over all levels' tokens
    visual = torch.nn.functional.normalize(mean_code @ w_c.t(), dim=-1)
    text_unit = torch.nn.functional.normalize(u, dim=-1)
    scale = quantizer.logit_scale.double().exp()
    rows, cols = infonce_directions(scale * visual @ text_unit.t())
    terms["text_codebook"], terms["infonce_rows"], terms["infonce_cols"] = (rows + cols) / 2, rows, cols
    return terms


# ------------------------------------------------------------------------------------------------ sign(0) = +1


def test_exact_zero_logits_quantize_to_plus_one():
    quantizer = small_lapq()
    with torch.no_grad():
        for block in quantizer.blocks:
            block.lfq_proj.weight.zero_()
            block.lfq_proj.bias.zero_()
    features, _, _ = small_inputs()
    out = quantizer(features, (1, 4, 4))
    for codes, ids, logits in zip(out.codes, out.ids, out.bit_logits, strict=True):
        assert torch.equal(logits, torch.zeros_like(logits))  # the case under test: exact zeros
        assert torch.equal(codes, torch.ones_like(codes))
        assert torch.equal(ids, torch.full_like(ids, 2**BITS - 1))  # every bit set
    # ||z - sg(sign z)||² = (0 - 1)² = 1 per bit
    assert out.losses["commitment"].item() == 1.0


def test_residual_quantizer_reads_a_zero_residual_as_plus_one():
    # A zero posterior mean: stage 1 sees 0 → +1 (all bits set); stage 2 sees 0 - 1 = -1 → all bits clear;
    # stage 3 sees -1 + 1/2 = -1/2 → clear; the latent is 1 - 1/2 - 1/4 = 1/4.
    quantizer = PyraTokResidualQuantizer(num_stages=3, codebook_dim=BITS)
    mean = torch.zeros(1, BITS, 1, 2, 2)
    out = quantizer(mean, (1, 2, 2))
    assert [int(i.unique()) for i in out.ids] == [2**BITS - 1, 0, 0]
    assert torch.equal(out.latent, torch.full_like(mean, 0.25))
    # commitment: stage residuals 0, -1, -1/2 against ±1 → (1 + 0 + 1/4) / 3
    assert out.losses["commitment"].item() == pytest.approx((1 + 0 + 0.25) / 3, abs=1e-7)


# ------------------------------------------------------------------------------------------------ entropy


def test_batch_entropy_is_pooled_over_the_batch_not_averaged_per_sample():
    # Two tokens, certain of opposite codes: each alone has entropy 0, pooled they are two equally likely codes.
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert batch_code_entropy(p).item() == pytest.approx(math.log(2), abs=1e-6)
    g = torch.Generator().manual_seed(3)
    p = torch.rand(7, 6, generator=g)
    token, batch = brute_force_entropies(p)
    assert per_token_entropy(p).item() == pytest.approx(token, rel=1e-5)
    for mode in ("exact", "grouped"):  # one group of all bits is exact
        assert batch_code_entropy(p, mode=mode, num_groups=1, chunk_size=3).item() == pytest.approx(batch, rel=1e-5)
    per_sample = sum(brute_force_entropies(p[i : i + 1])[1] for i in range(7)) / 7
    assert abs(per_sample - batch) > 0.1  # the two readings really differ on this case


def test_grouped_batch_entropy_sums_the_exact_entropy_of_each_group():
    g = torch.Generator().manual_seed(4)
    p = torch.rand(9, 6, generator=g)
    by_group = sum(brute_force_entropies(p[:, 2 * k : 2 * k + 2])[1] for k in range(3))
    assert batch_code_entropy(p, mode="grouped", num_groups=3).item() == pytest.approx(by_group, rel=1e-5)


# ------------------------------------------------------------------------------------------------ loss breakdown


def test_every_lapq_loss_term_and_the_weighted_total_match_a_float64_recomputation():
    quantizer = small_lapq()
    activate_text_attention(quantizer)
    features, text, mask = small_inputs()
    out = quantizer(features, (1, 4, 4), text_embeds=text, text_attention_mask=mask)
    expected = expected_breakdown(quantizer, out, text, mask)
    del expected["infonce_rows"], expected["infonce_cols"]
    assert set(out.losses) == set(expected)
    for name, value in expected.items():
        assert out.losses[name].item() == pytest.approx(value, rel=1e-4, abs=1e-6), name
    total = sum(WEIGHTS[name] * expected[name] for name in LOSS_NAMES)
    assert out.loss.item() == pytest.approx(total, rel=1e-4)


def test_hierarchical_kl_runs_from_the_coarse_level_to_the_pooled_finer_one():
    # Hand case, one bit: level 1 (2x2 grid) has p = [.9, .9, .1, .3] (pooled .55), level 2 (1 token) has p = .2.
    # KL(Bern(.2) || Bern(.55)) ≈ 0.2580 but KL(Bern(.55) || Bern(.2)) ≈ 0.2975.
    quantizer = small_lapq(codebook_dim=1, entropy_weight=0.0, text_alignment_weight=0.0, text_codebook_weight=0.0)
    fine = torch.tensor([0.9, 0.9, 0.1, 0.3]).view(1, 1, 1, 2, 2)
    coarse = torch.tensor([0.2]).view(1, 1, 1, 1, 1)
    tau = quantizer.bit_inverse_temperature
    logits = [torch.logit(p) / (2 * tau) for p in (fine, coarse)]  # so that sigmoid(2 τ z) = p
    loss, losses = quantizer._compute_losses(list(logits), logits, None, None, torch.zeros(1, dtype=torch.bool))
    forward = 0.2 * math.log(0.2 / 0.55) + 0.8 * math.log(0.8 / 0.45)
    backward = 0.55 * math.log(0.55 / 0.2) + 0.45 * math.log(0.45 / 0.8)
    assert abs(forward - backward) > 0.03
    assert losses["hierarchical"].item() == pytest.approx(forward, rel=1e-5)


def test_text_codebook_infonce_is_the_mean_of_both_directions():
    quantizer = small_lapq(commitment_weight=0.0, entropy_weight=0.0, hierarchical_weight=0.0,
                           text_alignment_weight=0.0)
    with torch.no_grad():
        quantizer.logit_scale.fill_(math.log(3.0))
    features, text, mask = small_inputs()
    out = quantizer(features, (1, 4, 4), text_embeds=text, text_attention_mask=mask)
    terms = expected_breakdown(quantizer, out, text, mask)
    assert set(out.losses) == {"text_codebook"}
    assert out.losses["text_codebook"].item() == pytest.approx(terms["text_codebook"], rel=1e-5)
    assert out.loss.item() == pytest.approx(WEIGHTS["text_codebook"] * terms["text_codebook"], rel=1e-5)
    # The case is not symmetric by accident: either direction alone gives another value.
    assert abs(terms["infonce_rows"] - terms["infonce_cols"]) > 1e-3


def test_text_terms_skip_items_without_text():
    # Item 1 has no text: the alignment averages over items 0 and 2 only, the InfoNCE runs over those two.
    quantizer = small_lapq()
    features, text, mask = small_inputs()
    present = torch.tensor([True, False, True])
    out = quantizer(features, (1, 4, 4), text_embeds=text, text_attention_mask=mask, text_present=present)
    keep = present.nonzero().flatten()
    sub = type(out)(codes=tuple(c[keep] for c in out.codes), bit_logits=tuple(b[keep] for b in out.bit_logits))
    expected = expected_breakdown(quantizer, sub, text[keep], mask[keep])
    for name in ("text_alignment", "text_codebook"):
        assert out.losses[name].item() == pytest.approx(expected[name], rel=1e-4), name


# ------------------------------------------------------------------------------------------------ config → quantizer


@pytest.mark.parametrize("mode", ["pyramid", "residual"])
def test_config_loss_weights_reach_the_quantizer_and_the_model_loss(mode, one_thread):
    weights = {"commitment_weight": 0.7, "entropy_weight": 0.3}
    if mode == "pyramid":
        weights.update(hierarchical_weight=0.2, text_alignment_weight=0.6, text_codebook_weight=0.9)
    # residual stages quantize the z_dim = 4 posterior mean, with no LoRA
    extra = {"codebook_dim": 4, "lora_rank": 0} if mode == "residual" else {}
    config = tiny_config(quantizer_mode=mode, codebook_weight=1.7, latent_loss_weight=1.3, **weights, **extra)
    torch.manual_seed(0)
    model = PyraTokModel(config).eval()
    batch = 2
    text = torch.randn(batch, 3, config.text_embed_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(make_video(batch=batch, frames=5, size=64), text_embeds=text if mode == "pyramid" else None)
    terms = {name: out.losses[name].item() for name in LOSS_NAMES if name in out.losses}
    assert set(terms) == {name[: -len("_weight")] for name in weights}
    quantizer_loss = sum(weights[f"{name}_weight"] * value for name, value in terms.items())
    assert out.loss.item() == pytest.approx(1.7 * quantizer_loss + 1.3 * out.losses["latent"].item(), rel=1e-5)
    # the weighted commitment moves the total by exactly its weight
    scaled = dict(weights, commitment_weight=2 * weights["commitment_weight"])
    torch.manual_seed(0)
    model2 = PyraTokModel(
        tiny_config(quantizer_mode=mode, codebook_weight=1.7, latent_loss_weight=1.3, **scaled, **extra)
    )
    model2.load_state_dict(model.state_dict())
    with torch.no_grad():
        out2 = model2.eval()(make_video(batch=batch, frames=5, size=64),
                             text_embeds=text if mode == "pyramid" else None)
    delta = 1.7 * weights["commitment_weight"] * terms["commitment"]
    assert out2.loss.item() - out.loss.item() == pytest.approx(delta, rel=1e-4)

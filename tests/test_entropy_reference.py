"""Our entropy term against `vector_quantize_pytorch.LFQ`'s own numbers (and a brute force over all 2^d codes).

tests/test_quantizer.py already checks the entropy maths against a brute force at d = 5, 6; the point here is that
our closed forms reproduce what the reference implementation computes with its full softmax over every code.

Temperature mapping. LFQ scores code `c ∈ {±1}^d` by `-distance = 2·<x, c>` and takes
`softmax_c(2·β·<x, c>)`, with `β` its `inv_temperature`. Since `<x, c> = Σ_i x_i c_i`, that softmax is a product of
per-bit Bernoullis with `P(c_i = +1) = e^{2βx_i} / (e^{2βx_i} + e^{-2βx_i}) = sigmoid(4·β·x_i)`. Ours is
`sigmoid(2·τ·z_i)`, so the two are the same distribution for `β = τ / 2`.

LFQ clamps probabilities at 1e-5 inside its logs, which lowers its entropies slightly (more so as d grows); the
brute force here has no clamp, so we are compared tightly to the brute force and within 1% to LFQ.
"""

import itertools

import pytest
import torch

from modeling_pyratok.quantizer_pyratok import (
    batch_code_entropy,
    bit_probabilities,
    bits_to_ids,
    per_token_entropy,
)

vqp = pytest.importorskip("vector_quantize_pytorch")

LFQ_REL_TOL = 1e-2


def lfq_inverse_temperature(bit_inverse_temperature: float) -> float:
    """LFQ's `inv_temperature` β giving the same code distribution as our `τ`: `β = τ / 2` (module docstring)."""
    return bit_inverse_temperature / 2


def brute_force_entropies(z: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """fp64 (mean per-token entropy, batch entropy) of `softmax_c(τ·<z, c>)` over all 2^d codes `c ∈ {±1}^d`.

    Written from the definition (a softmax over the enumerated codebook, as LFQ does), not from the Bernoulli
    factorisation our library uses.
    """
    d = z.shape[1]
    tokens = z.double().movedim(1, -1).reshape(-1, d)  # (N, d), same token order as LFQ's `b d ... -> b (...) d`
    codebook = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=torch.float64)  # (2^d, d)
    log_prob = (tau * tokens @ codebook.T).log_softmax(-1)  # (N, 2^d)
    prob = log_prob.exp()
    per_token = -(prob * log_prob).sum(-1).mean()
    average = prob.mean(0)
    return per_token, -(average * average.log()).sum()


def run_lfq(z: torch.Tensor, tau: float):
    d = z.shape[1]
    lfq = vqp.LFQ(dim=d, codebook_size=2**d, entropy_loss_weight=0.1).train()
    beta = lfq_inverse_temperature(tau)
    (quantized, indices, aux_loss), breakdown = lfq(z, inv_temperature=beta, return_loss_breakdown=True)
    return quantized, indices, aux_loss, breakdown


def make_input(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, d, 5, 8, 8, generator=g)  # (B, d, T, H, W), 640 tokens


def rel_diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return abs(float(ours) - float(theirs)) / abs(float(theirs))


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("d", [8, 10])
def test_entropies_match_lfq_and_brute_force(d, tau):
    z = make_input(d, seed=d)
    _, indices, _, breakdown = run_lfq(z, tau)
    p = bit_probabilities(z, tau).movedim(1, -1).reshape(-1, d)
    ours_token, ours_batch = per_token_entropy(p), batch_code_entropy(p, mode="exact", chunk_size=100)
    ref_token, ref_batch = brute_force_entropies(z, tau)

    # The definition (2τ in `softmax(τ<z, c>)` is the same as LFQ's 2β<x, c> at β = τ/2) against our closed forms.
    torch.testing.assert_close(ours_token.double(), ref_token, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(ours_batch.double(), ref_batch, atol=2e-5, rtol=1e-5)
    # LFQ's own numbers, from its full softmax over 2^d codes.
    assert rel_diff(ours_token, breakdown.per_sample_entropy) < LFQ_REL_TOL
    assert rel_diff(ours_batch, breakdown.batch_entropy) < LFQ_REL_TOL
    # Same code index convention: bit i of the index is channel i, most significant first.
    assert torch.equal(bits_to_ids(torch.where(z >= 0, 1.0, -1.0), dim=1), indices)


@pytest.mark.parametrize("d", [8, 10])
def test_brute_force_reproduces_lfq_up_to_its_log_clamp(d):
    """Pins the τ mapping itself: the brute-force softmax at τ = 2β is LFQ's distribution (LFQ's eps clamp aside)."""
    z = make_input(d, seed=100 + d)
    _, _, _, breakdown = run_lfq(z, 1.0)
    ref_token, ref_batch = brute_force_entropies(z, 1.0)
    assert rel_diff(ref_token, breakdown.per_sample_entropy) < 1e-3
    assert rel_diff(ref_batch, breakdown.batch_entropy) < 1e-3
    # A wrong mapping (β = τ) gives clearly different values.
    wrong_token, _ = brute_force_entropies(z, 2.0)
    assert rel_diff(wrong_token, breakdown.per_sample_entropy) > 0.05


@pytest.mark.parametrize(("d", "num_groups"), [(8, 2), (8, 4), (10, 2), (10, 5)])
def test_grouped_batch_entropy_bounds_lfq_and_brute_force(d, num_groups):
    z = make_input(d, seed=200 + d)
    _, _, _, breakdown = run_lfq(z, 1.0)
    p = bit_probabilities(z, 1.0).movedim(1, -1).reshape(-1, d)
    grouped = batch_code_entropy(p, mode="grouped", num_groups=num_groups, chunk_size=100)
    _, ref_batch = brute_force_entropies(z, 1.0)
    # An upper bound of the exact batch entropy (LFQ's clamp only lowers its value); tight for independent bits.
    assert grouped.double() >= ref_batch - 1e-5
    assert grouped >= breakdown.batch_entropy - 1e-5
    assert rel_diff(grouped, breakdown.batch_entropy) < LFQ_REL_TOL


@pytest.mark.parametrize("d", [8, 10])
def test_entropy_gradient_matches_lfq(d):
    """The gradient of (per-token − batch entropy) w.r.t. the pre-sign values equals LFQ's entropy-loss gradient."""
    tau = 1.0
    base = make_input(d, seed=300 + d)

    z_lfq = base.clone().requires_grad_(True)
    _, _, aux_loss, _ = run_lfq(z_lfq, tau)
    (aux_loss / 0.1).backward()  # LFQ's aux loss is 0.1 · (per-sample − batch entropy); no commitment by default

    z_ours = base.clone().requires_grad_(True)
    p = bit_probabilities(z_ours, tau).movedim(1, -1).reshape(-1, d)
    (per_token_entropy(p) - batch_code_entropy(p, mode="exact", chunk_size=100)).backward()

    ours, theirs = z_ours.grad.flatten(), z_lfq.grad.flatten()
    assert theirs.abs().sum() > 0
    assert float((ours - theirs).norm() / theirs.norm()) < LFQ_REL_TOL
    assert float(torch.nn.functional.cosine_similarity(ours, theirs, dim=0)) > 0.9999

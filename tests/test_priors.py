"""Token priors (issue 23 §2): masked discrete diffusion and autoregressive, on a tiny hand-built layout.

Layout: two levels `(2, 4, 4)` + `(2, 2, 2)` (strides 1, 2), 6-bit ids, factorised `(3, 3)`: N = 40 ids per clip,
20 per latent frame. Every expected value is computed independently (by hand, brute force or a second path).
"""

import json
import math
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torch.nn.functional as F

from modeling_pyratok import (
    AutoencoderPyraTok,
    PyraTokARPrior,
    PyraTokARPriorConfig,
    PyraTokConfig,
    PyraTokMaskedPrior,
    PyraTokMaskedPriorConfig,
    PyraTokModel,
    PyraTokTokenLayout,
    prior_from_pretrained,
)
from modeling_pyratok.prior_layers import (
    PyraTokSpectralMixing,
    classifier_free_guidance,
    factorized_cross_entropy,
    filter_logits,
)

pytestmark = pytest.mark.usefixtures("one_thread")

LAYOUT = PyraTokTokenLayout(level_shapes=((2, 4, 4), (2, 2, 2)), level_strides=(1, 2), codebook_dim=6)
N = LAYOUT.seq_len  # 40
TEXT_DIM = 8
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "text_embed_dim": TEXT_DIM}


def make_prior(kind: str, seed: int = 0, layout: PyraTokTokenLayout = LAYOUT, **overrides):
    fields = {**SMALL, "factorized_bits": (3, 3), "cond_dropout_prob": 0.0, **overrides}
    torch.manual_seed(seed)
    if kind == "masked":
        return PyraTokMaskedPrior(PyraTokMaskedPriorConfig(token_layout=layout.to_dict(), **fields)).eval()
    return PyraTokARPrior(PyraTokARPriorConfig(token_layout=layout.to_dict(), **fields)).eval()


def random_ids(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 64, (batch, N), generator=torch.Generator().manual_seed(seed))


def random_text(batch: int, length: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, length, TEXT_DIM, generator=torch.Generator().manual_seed(seed))


def train(prior, ids, text, steps: int, lr: float = 1e-2) -> list[float]:
    prior.train()
    opt = torch.optim.Adam(prior.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        loss = prior.training_loss(ids, text, generator=g).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    prior.eval()
    return losses


# ---------------------------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------------------------


def test_config_refuses_inconsistent_layouts():
    with pytest.raises(ValueError, match="factorized_bits"):
        PyraTokMaskedPriorConfig(token_layout=LAYOUT.to_dict(), factorized_bits=(8, 8))
    level_major = PyraTokTokenLayout(LAYOUT.level_shapes, LAYOUT.level_strides, 6, order="level_major")
    with pytest.raises(ValueError, match="frame_major"):
        PyraTokARPriorConfig(token_layout=level_major.to_dict(), factorized_bits=(3, 3))
    PyraTokMaskedPriorConfig(token_layout=level_major.to_dict(), factorized_bits=(3, 3))  # masked: any order
    square = PyraTokTokenLayout(LAYOUT.level_shapes, LAYOUT.level_strides, 6, pad_to_square=True)
    with pytest.raises(ValueError, match="pad_to_square"):
        PyraTokMaskedPriorConfig(token_layout=square.to_dict(), factorized_bits=(3, 3))
    with pytest.raises(ValueError, match="no token_layout"):
        PyraTokARPrior(PyraTokARPriorConfig())


def test_sizes_and_shipped_scale_stays_light():
    prior = make_prior("masked")
    assert (prior.seq_len, prior.codebook_size, prior.mask_token_id) == (40, 64, 64)
    # Default size on the shipped tokenizer's 17x64x64 layout with 2^16 codes: no 65536-row table, far below 20 MB.
    tokenizer_layout = PyraTokTokenLayout(((5, 8, 8), (5, 4, 4), (5, 2, 2), (5, 1, 1)), (1, 2, 4, 8), 16)
    for cls, config_cls in ((PyraTokMaskedPrior, PyraTokMaskedPriorConfig), (PyraTokARPrior, PyraTokARPriorConfig)):
        model = cls(
            config_cls(token_layout=tokenizer_layout.to_dict(), spectral_mixing=True)
            if cls is PyraTokMaskedPrior
            else config_cls(token_layout=tokenizer_layout.to_dict())
        )
        assert max(max(p.shape) for p in model.parameters()) < 2**16
        assert sum(p.numel() for p in model.parameters()) * 4 < 20 * 2**20


# ---------------------------------------------------------------------------------------------------------------------
# Masked prior
# ---------------------------------------------------------------------------------------------------------------------


def test_cosine_schedule_masks_the_hand_computed_count():
    prior = make_prior("masked")
    batch = 6
    mask = prior.sample_training_mask(batch, torch.Generator().manual_seed(3), torch.device("cpu"))
    g = torch.Generator().manual_seed(3)
    u = torch.rand(batch, generator=g)
    scores = torch.rand(batch, N, generator=g)
    for b in range(batch):
        count = max(1, min(N, math.ceil(math.cos(math.pi / 2 * float(u[b])) * N)))
        assert int(mask[b].sum()) == count
        expected = set(sorted(range(N), key=lambda i: float(scores[b, i]))[:count])
        assert set(torch.nonzero(mask[b]).flatten().tolist()) == expected


def test_masked_loss_counts_masked_positions_only():
    prior = make_prior("masked")
    ids, text = random_ids(3), random_text(3)
    out = prior.training_loss(ids, text, generator=torch.Generator().manual_seed(5))
    assert out.mask.any() and not out.mask.all()
    # Hand CE over the masked positions, with the inputs the model saw.
    pre, post = ids >> 3, ids & 7
    logp_pre, logp_post = out.logits_pre.log_softmax(-1), out.logits_post.log_softmax(-1)
    ce_pre, ce_post = -logp_pre.gather(-1, pre[..., None])[..., 0], -logp_post.gather(-1, post[..., None])[..., 0]
    assert torch.allclose(out.loss_pre, ce_pre[out.mask].mean(), atol=1e-6)
    assert torch.allclose(out.loss_post, ce_post[out.mask].mean(), atol=1e-6)
    assert torch.allclose(out.loss, (ce_pre + ce_post)[out.mask].mean(), atol=1e-6)
    # The masked inputs really were [MASK]: rerunning forward on them reproduces the logits.
    again = prior(ids.masked_fill(out.mask, prior.mask_token_id), text)
    assert torch.allclose(again.logits_pre, out.logits_pre, atol=1e-6)
    # Changing a target at an unmasked position leaves the loss as it is; at a masked position it changes it.
    unmasked = torch.nonzero(~out.mask)[0].tolist()
    masked = torch.nonzero(out.mask)[0].tolist()
    other = ids.clone()
    other[tuple(unmasked)] = (other[tuple(unmasked)] + 9) % 64
    same = sum(factorized_cross_entropy(out.logits_pre, out.logits_post, other, (3, 3), weight=out.mask))
    assert torch.equal(same, out.loss)
    other = ids.clone()
    other[tuple(masked)] = (other[tuple(masked)] + 9) % 64
    assert not torch.allclose(
        sum(factorized_cross_entropy(out.logits_pre, out.logits_post, other, (3, 3), out.mask)), out.loss
    )


def test_masked_prior_learns_a_deterministic_text_to_clip_map():
    # Two clips, each named by its own prompt: the conditional entropy is 0, so the loss must approach 0.
    prior = make_prior("masked", spectral_mixing=True)
    ids, text = random_ids(2, seed=4), random_text(2, seed=6)
    losses = train(prior, ids, text, steps=60)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5  # falls within the first 30 steps too
    assert min(losses[:30]) < losses[0] - 0.5
    assert sum(losses[-5:]) / 5 < 0.15
    sample = prior.generate(text, num_inference_steps=4, generator=torch.Generator().manual_seed(0), temperature=0.5)
    assert (sample == ids).float().mean() > 0.95


def test_masked_generation_fills_every_position_and_keeps_the_prefix():
    prior = make_prior("masked")
    prefix = random_ids(2, seed=8)[:, :20]  # one whole latent frame
    steps = []
    out = prior.generate(
        random_text(2),
        prefix_ids=prefix,
        num_inference_steps=5,
        guidance_scale=2.0,
        generator=torch.Generator().manual_seed(0),
        callback=lambda s, t: steps.append((s, t)),
    )
    assert out.shape == (2, N) and int(out.min()) >= 0 and int(out.max()) < 64
    assert torch.equal(out[:, :20], prefix)
    assert steps == [(s, 5) for s in range(1, 6)]


def test_masked_generation_edge_steps():
    prior = make_prior("masked")
    for steps in (1, 3 * N):  # one step keeps every sample; more steps than ids still fills everything
        out = prior.generate(batch_size=2, num_inference_steps=steps, generator=torch.Generator().manual_seed(0))
        assert out.shape == (2, N) and 0 <= int(out.min()) and int(out.max()) < 64
    full = random_ids(1)
    assert torch.equal(prior.generate(prefix_ids=full, num_inference_steps=2), full)


def test_masked_decoding_schedule_follows_maskgit():
    prior = make_prior("masked")
    record = []
    prior._sample(
        None,
        None,
        batch_size=2,
        guidance_scale=1.0,
        temperature=1.0,
        generator=torch.Generator().manual_seed(0),
        prefix_ids=None,
        callback=None,
        num_inference_steps=4,
        choice_temperature=4.5,
        record=record,
    )
    # Masked ids entering each step: N, then floor(N·cos(π/2·r)) for r = 1/4, 2/4, 3/4.
    expected = [N] + [math.floor(N * math.cos(math.pi / 2 * s / 4)) for s in (1, 2, 3)]
    assert [int((ids[0] == prior.mask_token_id).sum()) for ids, *_ in record] == expected
    # Once unmasked, an id stays.
    for (before, *_), (after, *_) in zip(record, record[1:]):
        known = before != prior.mask_token_id
        assert torch.equal(after[known], before[known])


def test_masked_decoding_keeps_the_most_confident_samples():
    # Without Gumbel noise (choice_temperature=0) the ids kept after a step are the sampled ids with the highest
    # log p(pre) + log p(post); the re-masked ones have the lowest.
    prior = make_prior("masked", seed=4)
    record = []
    prior._sample(
        random_text(2),
        None,
        batch_size=None,
        guidance_scale=1.0,
        temperature=1.0,
        prefix_ids=None,
        callback=None,
        generator=torch.Generator().manual_seed(0),
        num_inference_steps=3,
        choice_temperature=0.0,
        record=record,
    )
    for (ids, pre, post, sampled), (after, *_) in zip(record, record[1:]):
        conf = pre.log_softmax(-1).gather(-1, (sampled >> 3)[..., None])[..., 0]
        conf = conf + post.log_softmax(-1).gather(-1, (sampled & 7)[..., None])[..., 0]
        was_unknown = ids == prior.mask_token_id
        kept = was_unknown & (after != prior.mask_token_id)
        remasked = was_unknown & (after == prior.mask_token_id)
        assert torch.equal(after[kept], sampled[kept]) and kept.any() and remasked.any()
        for b in range(2):
            assert float(conf[b][kept[b]].min()) >= float(conf[b][remasked[b]].max())


def test_position_and_level_embeddings_follow_the_layout():
    prior = make_prior("ar")
    levels = LAYOUT.level_index()
    assert levels.tolist() == ([1] * 4 + [0] * 16) * 2  # frame-major, coarse level first within a frame
    expected = prior.pos_embed + prior.level_embed.weight[levels]
    assert torch.equal(prior._position_embed(0, N, torch.device("cpu")), expected)
    assert torch.equal(prior._position_embed(7, 9, torch.device("cpu")), expected[7:9])


def test_masked_guidance_is_the_cfg_formula_and_scale_one_is_unguided():
    prior = make_prior("masked", seed=2)
    text = random_text(2)
    kwargs = {
        "batch_size": None,
        "temperature": 1.0,
        "prefix_ids": None,
        "callback": None,
        "num_inference_steps": 3,
        "choice_temperature": 4.5,
    }
    record = []
    prior._sample(text, None, guidance_scale=3.0, generator=torch.Generator().manual_seed(0), record=record, **kwargs)
    for ids, pre, post, _ in record:
        cond, uncond = prior(ids, text), prior(ids)
        assert torch.allclose(pre, uncond.logits_pre + 3.0 * (cond.logits_pre - uncond.logits_pre), atol=1e-5)
        assert torch.allclose(post, uncond.logits_post + 3.0 * (cond.logits_post - uncond.logits_post), atol=1e-5)
    # Scale 1: the conditional pass only (batch B through the trunk), bitwise equal to the plain call.
    batches = []
    hook = prior.blocks[0].register_forward_hook(lambda m, a, o: batches.append(a[0].shape[0]))
    one = prior.generate(text, guidance_scale=1.0, generator=torch.Generator().manual_seed(1))
    hook.remove()
    plain = prior.generate(text, generator=torch.Generator().manual_seed(1))
    assert torch.equal(one, plain) and set(batches) == {2}


# ---------------------------------------------------------------------------------------------------------------------
# AR prior
# ---------------------------------------------------------------------------------------------------------------------


def test_ar_loss_is_the_hand_computed_next_id_cross_entropy():
    prior = make_prior("ar", num_hidden_layers=1)
    ids, text = random_ids(2), random_text(2)
    loss = prior.training_loss(ids, text).loss.detach()
    g = torch.Generator().manual_seed(3)
    total = 0.0
    for i in range(N):
        # What position i may see: ids before i, and the pre bits of id i for the post head. Scramble everything else
        # (the post bits of id i and every later id); the logits at i must be those of the true sequence.
        probe = ids.clone()
        probe[:, i + 1 :] = torch.randint(0, 64, (2, N - i - 1), generator=g)
        probe[:, i] = (ids[:, i] >> 3 << 3) | ((ids[:, i] + torch.randint(1, 8, (2,), generator=g)) & 7)
        with torch.no_grad():
            out = prior(probe, text)
        logp_pre = out.logits_pre[:, i].log_softmax(-1)
        logp_post = out.logits_post[:, i].log_softmax(-1)
        for b in range(2):
            total -= float(logp_pre[b, int(ids[b, i]) >> 3]) + float(logp_post[b, int(ids[b, i]) & 7])
    assert loss.item() == pytest.approx(total / (2 * N), abs=1e-5)


def test_ar_prior_reaches_the_brute_force_entropy_bound():
    # Four clips that differ only in their first id and continue deterministically from it: the per-id entropy is
    # Σ_i H(x_i | x_<i) / N, computed by brute force over the empirical distribution.
    base = random_ids(1, seed=11)[0]
    firsts = [3, 17, 40, 60]
    ids = torch.stack([torch.cat([torch.tensor([f]), (base[1:] + 7 * k) % 64]) for k, f in enumerate(firsts)])
    entropy = 0.0
    for i in range(N):
        groups = {}
        for row in ids.tolist():
            groups.setdefault(tuple(row[:i]), []).append(row[i])
        for values in groups.values():
            p_ctx = len(values) / len(ids)
            for v in set(values):
                p = values.count(v) / len(values)
                entropy -= p_ctx * p * math.log(p)
    bound = entropy / N
    assert bound == pytest.approx(math.log(4) / N)
    prior = make_prior("ar")
    losses = train(prior, ids, None, steps=80)
    assert min(losses[:30]) < losses[0] - 0.5
    # Cross-entropy on the training set can approach but never beat the entropy of that set.
    assert bound - 1e-3 < sum(losses[-5:]) / 5 < bound + 0.02


def test_ar_kv_cache_equals_recomputation():
    prior = make_prior("ar", seed=3)
    text = random_text(2)
    prefix = random_ids(2, seed=9)[:, :20]
    results = {}
    for use_cache in (True, False):
        record = []
        ids = prior._sample(
            text,
            None,
            batch_size=None,
            guidance_scale=2.5,
            temperature=1.0,
            generator=torch.Generator().manual_seed(4),
            prefix_ids=prefix,
            callback=None,
            top_k=None,
            top_p=0.9,
            use_cache=use_cache,
            record=record,
        )
        results[use_cache] = (ids, record)
    assert torch.equal(results[True][0], results[False][0])
    assert torch.equal(results[True][0][:, :20], prefix)
    for (pre_a, post_a), (pre_b, post_b) in zip(results[True][1], results[False][1], strict=True):
        assert torch.allclose(pre_a, pre_b, atol=1e-5) and torch.allclose(post_a, post_b, atol=1e-5)


def test_ar_top_k_one_is_greedy_decoding():
    prior = make_prior("ar", seed=5)
    text = random_text(1)
    out = prior.generate(text, top_k=1, generator=torch.Generator().manual_seed(0))
    ids = torch.zeros(1, N, dtype=torch.long)
    for i in range(N):  # greedy by teacher-forced forwards: pre first, then post given that pre
        ids[0, i] = int(prior(ids[:, : i + 1], text).logits_pre[0, i].argmax()) << 3
        ids[0, i] += int(prior(ids[:, : i + 1], text).logits_post[0, i].argmax())
    assert torch.equal(out, ids)


def test_ar_guidance_is_the_cfg_formula_and_scale_one_is_unguided():
    prior = make_prior("ar", seed=6)
    text = random_text(2)
    record = []
    out = prior._sample(
        text,
        None,
        batch_size=None,
        guidance_scale=3.0,
        temperature=1.0,
        generator=torch.Generator().manual_seed(0),
        prefix_ids=None,
        callback=None,
        top_k=None,
        top_p=None,
        use_cache=True,
        record=record,
    )
    cond, uncond = prior(out[:, :2], text), prior(out[:, :2])
    for i in range(2):
        pre, post = record[i]
        assert torch.allclose(
            pre, uncond.logits_pre[:, i] + 3 * (cond.logits_pre[:, i] - uncond.logits_pre[:, i]), atol=1e-5
        )
        assert torch.allclose(
            post, uncond.logits_post[:, i] + 3 * (cond.logits_post[:, i] - uncond.logits_post[:, i]), atol=1e-5
        )
    batches = []
    hook = prior.blocks[0].register_forward_hook(lambda m, a, o: batches.append(a[0].shape[0]))
    one = prior.generate(text, guidance_scale=1.0, generator=torch.Generator().manual_seed(1))
    hook.remove()
    assert torch.equal(one, prior.generate(text, generator=torch.Generator().manual_seed(1))) and set(batches) == {2}


# ---------------------------------------------------------------------------------------------------------------------
# Sampling helpers
# ---------------------------------------------------------------------------------------------------------------------


def test_cfg_formula():
    cond, uncond = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 0.5])
    assert torch.equal(classifier_free_guidance(cond, uncond, 2.0), torch.tensor([2.0, -5.0, 0.5]))


def test_top_k_and_top_p_match_brute_force():
    logits = torch.randn(20, 16, generator=torch.Generator().manual_seed(0)) * 2
    for top_p in (0.05, 0.3, 0.75, 0.99):
        kept = torch.isfinite(filter_logits(logits, top_p=top_p))
        for row, keep in zip(logits, kept):
            probs = row.softmax(-1).tolist()
            order = sorted(range(16), key=lambda j: -probs[j])
            expected, mass = set(), 0.0
            for j in order:  # smallest most-probable set reaching top_p
                if mass >= top_p:
                    break
                expected.add(j)
                mass += probs[j]
            assert set(torch.nonzero(keep).flatten().tolist()) == expected
    for top_k in (1, 3, 16):
        kept = torch.isfinite(filter_logits(logits, top_k=top_k))
        for row, keep in zip(logits, kept):
            expected = set(sorted(range(16), key=lambda j: -float(row[j]))[:top_k])
            assert set(torch.nonzero(keep).flatten().tolist()) == expected
    assert torch.equal(filter_logits(logits, top_p=1.0), logits)


def test_spectral_mixing_is_a_circular_convolution_and_changes_the_prior():
    layer = PyraTokSpectralMixing(12, 4)
    x = torch.randn(2, 12, 4, generator=torch.Generator().manual_seed(0))
    # Circular convolution along the sequence: linear and equivariant to circular shifts.
    assert torch.allclose(layer(x.roll(3, dims=1)), layer(x).roll(3, dims=1), atol=1e-6)
    assert torch.allclose(layer(2 * x + x.flip(0)), 2 * layer(x) + layer(x.flip(0)), atol=1e-5)
    # Its kernel is irfft of the filter: compare with a direct circular convolution.
    kernel = torch.fft.irfft(torch.view_as_complex(layer.filter.detach()), n=12, dim=0)  # (12, 4)
    direct = torch.stack([sum(kernel[m] * x[:, (n - m) % 12] for m in range(12)) for n in range(12)], dim=1)
    assert torch.allclose(layer(x), direct, atol=1e-5)
    plain, spectral = make_prior("masked", seed=0), make_prior("masked", seed=0, spectral_mixing=True)
    missing, unexpected = spectral.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all("spectral" in k for k in missing) and missing
    ids = random_ids(1)
    assert not torch.allclose(plain(ids).logits_pre, spectral(ids).logits_pre, atol=1e-4)
    spectral.training_loss(ids, generator=torch.Generator().manual_seed(0)).loss.backward()
    assert spectral.blocks[0].spectral.filter.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------------
# Save / load, checks, bad input
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["masked", "ar"])
def test_save_load_round_trip(tmp_path, kind):
    from transformers import AutoModel

    prior = make_prior(kind, spectral_mixing=True) if kind == "masked" else make_prior(kind)
    prior.save_pretrained(tmp_path)
    module = "prior_masked" if kind == "masked" else "prior_ar"
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"] == {
        "AutoConfig": f"configuration_prior.{type(prior.config).__name__}",
        "AutoModel": f"{module}.{type(prior).__name__}",
    }
    remote_code = {"configuration_prior.py", "prior_layers.py", f"{module}.py", "tokens_pyratok.py"}
    assert remote_code | {"model.safetensors", "README.md"} <= set(os.listdir(tmp_path))
    card = (tmp_path / "README.md").read_text()
    assert f"{N} ids per clip" in card and "2^6 = 64" in card
    assert "pyratok-train-prior --config" in str(prior.model_card(details="`pyratok-train-prior --config x.yaml`"))
    ids, text = random_ids(2), random_text(2)
    expected = prior(ids, text)
    for loaded in (
        type(prior).from_pretrained(tmp_path),
        AutoModel.from_pretrained(tmp_path),
        prior_from_pretrained(tmp_path),
    ):
        assert type(loaded) is type(prior)
        got = loaded.eval()(ids, text)
        assert torch.equal(got.logits_pre, expected.logits_pre) and torch.equal(got.logits_post, expected.logits_post)


@pytest.mark.slow
def test_remote_code_folder_loads_with_automodel(tmp_path):
    """`AutoModel.from_pretrained(folder, trust_remote_code=True)` in a fresh process that never imports us
    (slow: a fresh interpreter imports transformers; the folder's contents are checked in the round-trip test)."""
    ids, text = random_ids(1), random_text(1)
    expected = {}
    for kind in ("masked", "ar"):
        prior = make_prior(kind)
        prior.save_pretrained(tmp_path / kind)
        config = json.loads((tmp_path / kind / "config.json").read_text())
        module = "prior_masked" if kind == "masked" else "prior_ar"
        assert config["auto_map"]["AutoModel"] == f"{module}.{type(prior).__name__}"
        expected[kind] = prior(ids, text).logits_pre
    torch.save({"ids": ids, "text": text, **expected}, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModel
        torch.set_num_threads(1)
        ref = torch.load({str(tmp_path / "expected.pt")!r})
        for kind in ("masked", "ar"):
            model = AutoModel.from_pretrained({str(tmp_path)!r} + "/" + kind, trust_remote_code=True)
            assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
            assert torch.allclose(model(ref["ids"], ref["text"]).logits_pre, ref[kind], atol=1e-6), kind
        assert "modeling_pyratok" not in sys.modules
        print("OK")
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


def test_prior_from_pretrained_refuses_a_tokenizer_folder(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "pyratok"}')
    with pytest.raises(ValueError, match="not a PyraTok prior"):
        prior_from_pretrained(tmp_path)


def test_check_tokenizer_and_layout_name_what_differs():
    tokenizer = PyraTokModel(PyraTokConfig.from_preset("tiny"))
    layout = tokenizer.token_layout(5, 16, 16)
    prior = make_prior("ar", layout=layout, factorized_bits=(8, 8))
    prior.check_tokenizer(tokenizer)
    prior.check_layout(layout.to_dict())
    with pytest.raises(ValueError, match="codebook_dim"):
        make_prior("ar").check_tokenizer(tokenizer)
    wrong_grids = PyraTokTokenLayout(
        ((2, 4, 4), (2, 2, 2), (2, 1, 1), (2, 1, 1)), (1, 2, 4, 4), 16, frame_size=(32, 32)
    )
    with pytest.raises(ValueError, match="level_strides"):
        make_prior("masked", layout=wrong_grids, factorized_bits=(8, 8)).check_tokenizer(tokenizer)
    bigger = tokenizer.token_layout(5, 128, 128)  # tiny pads frames to multiples of 64: 16x16 → 64x64
    shifted = PyraTokTokenLayout(bigger.level_shapes, bigger.level_strides, 16, frame_size=(16, 16))
    with pytest.raises(ValueError, match="level_shapes"):
        make_prior("masked", layout=shifted, factorized_bits=(8, 8)).check_tokenizer(tokenizer)
    with pytest.raises(ValueError, match=r"\['frame_size', 'level_shapes'\]"):
        prior.check_layout(bigger)
    with pytest.raises(ValueError, match="order"):
        prior.check_layout(tokenizer.token_layout(5, 16, 16, order="planes"))


def test_config_from_tokenizer_and_fingerprint_check(tmp_path):
    from pyratok.cli import model_fingerprint

    tokenizer = PyraTokModel(PyraTokConfig.from_preset("tiny"))
    config = PyraTokMaskedPriorConfig.from_tokenizer(tokenizer, 5, 16, 16, tokenizer_name="tiny", hidden_size=32)
    assert config.layout == tokenizer.token_layout(5, 16, 16)
    assert config.tokenizer_fingerprint == model_fingerprint(tokenizer) and config.tokenizer_name == "tiny"
    assert (config.text_embed_dim, config.max_text_length) == (
        tokenizer.config.text_embed_dim,
        tokenizer.config.text_max_length,
    )
    assert tuple(config.factorized_bits) == (8, 8) and config.hidden_size == 32
    with pytest.raises(ValueError, match="frame_major"):
        PyraTokARPriorConfig.from_tokenizer(tokenizer, 5, 16, 16, order="planes")
    prior = PyraTokMaskedPrior(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prior.check_tokenizer(tokenizer, strict_fingerprint=True)
    # The same weights as a diffusers AutoencoderPyraTok have the same fingerprint; other weights do not.
    tokenizer.save_pretrained(tmp_path)
    prior.check_tokenizer(AutoencoderPyraTok.from_pretrained(tmp_path), strict_fingerprint=True)
    with torch.no_grad():
        next(tokenizer.parameters()).add_(1.0)
    with pytest.warns(UserWarning, match="fingerprint .* differs"):
        prior.check_tokenizer(tokenizer)
    with pytest.raises(ValueError, match="fingerprint .* differs"):
        prior.check_tokenizer(tokenizer, strict_fingerprint=True)


@pytest.mark.parametrize("kind", ["masked", "ar"])
def test_bad_input_raises_value_error_naming_it(kind):
    prior = make_prior(kind)
    ids, text = random_ids(2), random_text(2)
    cases = [
        (lambda: prior.training_loss(ids + 64, text), "must lie in"),
        (lambda: prior.training_loss(ids[:, :30], text), "seq_len is 40"),
        (lambda: prior.training_loss(ids[:0], None), "empty batch"),
        (lambda: prior.training_loss(ids.float(), text), "integer tensor"),
        (lambda: prior.training_loss(ids, torch.randn(2, 5, 7)), "text_embed_dim"),
        (lambda: prior.training_loss(ids, random_text(3)), "batch 3"),
        (lambda: prior.training_loss(ids, random_text(2, length=33)), "max_text_length"),
        (lambda: prior.training_loss(ids, text, torch.zeros(2, 5, dtype=torch.bool)), "no token in rows"),
        (lambda: prior.generate(text, guidance_scale=-1.0), "guidance_scale"),
        (lambda: prior.generate(text, temperature=0.0), "temperature"),
        (lambda: prior.generate(text, prefix_ids=torch.zeros(2, 41, dtype=torch.long)), "seq_len is 40"),
        (
            lambda: prior.generate(text, prefix_ids=torch.zeros(2, 25, dtype=torch.long)),
            r"allowed lengths: \[20, 40\]",
        ),
        (lambda: prior.generate(text, prefix_ids=torch.zeros(3, 20, dtype=torch.long)), "batch 3"),
        (lambda: prior.generate(batch_size=0), "batch_size"),
    ]
    if kind == "masked":
        cases.append((lambda: prior.generate(text, num_inference_steps=0), "num_inference_steps"))
    else:
        cases += [
            (lambda: prior.generate(text, top_p=0.0), "top_p"),
            (lambda: prior.generate(text, top_p=1.5), "top_p"),
            (lambda: prior.generate(text, top_k=0), "top_k"),
        ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_prompt_dropout_uses_the_null_prompt():
    # In train mode with p = 0.5, rows whose draw (after the mask draws) is < p see the null prompt.
    prior = make_prior("masked", cond_dropout_prob=0.5)
    ids, text = random_ids(6), random_text(6)
    prior.train()
    out = prior.training_loss(ids, text, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    torch.rand(6, generator=g), torch.rand(6, N, generator=g)
    drop = torch.rand(6, generator=g) < 0.5
    assert drop.any() and not drop.all()
    prior.eval()
    inputs = ids.masked_fill(out.mask, prior.mask_token_id)
    cond, uncond = prior(inputs, text).logits_pre, prior(inputs).logits_pre
    expected = torch.where(drop[:, None, None], uncond, cond)
    assert torch.allclose(out.logits_pre, expected, atol=1e-5)
    assert F.mse_loss(cond, uncond) > 0

"""The trainer's promises pinned to values computed independently (issue 26): the learning-rate schedule across a
resume, gradient accumulation, the unmasked reconstruction target, and every loss term of both objectives by hand."""

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from safetensors.torch import load_file
from skimage.metrics import structural_similarity

from pyratok.training.losses import ReconstructionLoss, mask_video
from pyratok.training.objective import BackboneVAEObjective, PyraTokObjective
from pyratok.training.train import build_objective, train
from tests.conftest import make_video
from tests.test_train import read_log, shards, tiny_run  # noqa: F401  (shards is a module fixture)


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    yield
    AcceleratorState._reset_state(True)


def ssim_by_skimage(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean SSIM over the frames of two `(B, 3, T, H, W)` clips in [-1, 1], scored as the [0, 2] images they encode."""
    frames_x = (x + 1).transpose(1, 2).flatten(0, 1).double().numpy()  # (N, 3, H, W)
    frames_y = (y + 1).transpose(1, 2).flatten(0, 1).double().numpy()
    values = [
        structural_similarity(a, b, data_range=2.0, channel_axis=0, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False)
        for a, b in zip(frames_x, frames_y, strict=True)
    ]
    return float(np.mean(values))


# ------------------------------------------------------------------------------------------------ losses by hand


def test_reconstruction_loss_terms_by_hand():
    g = torch.Generator().manual_seed(0)
    target = make_video(batch=2, frames=3, size=24, seed=1)
    recon = (target + 0.3 * torch.randn(target.shape, generator=g)).clamp(-1, 1)
    loss = ReconstructionLoss(l1_weight=0.7, ssim_weight=1.9, lpips_weight=0.0, chroma_weight=3.1)
    terms = loss(recon, target)
    diff = (recon - target).double()
    l1 = diff.abs().mean().item()
    ssim_term = 1 - ssim_by_skimage(recon, target)
    chroma = (diff - diff.mean(dim=1, keepdim=True)).abs().mean().item()
    assert set(terms) == {"l1", "ssim", "chroma", "total"}
    assert terms["l1"].item() == pytest.approx(l1, rel=1e-5)
    assert terms["ssim"].item() == pytest.approx(ssim_term, rel=1e-4)
    assert terms["chroma"].item() == pytest.approx(chroma, rel=1e-5)
    assert terms["total"].item() == pytest.approx(0.7 * l1 + 1.9 * ssim_term + 3.1 * chroma, rel=1e-4)


def test_training_mask_hides_patches_of_later_frames_only():
    x = torch.ones(2, 3, 5, 16, 16)
    masked, mask = mask_video(x, 0.5, 4, torch.Generator().manual_seed(0))
    assert mask.shape == (2, 1, 5, 16, 16)
    assert not mask[:, :, 0].any()  # frame 0, the causal anchor, is never masked
    frames_hit = mask.flatten(3).any(-1)[:, 0]  # (B, T)
    assert frames_hit.sum(1).tolist() == [2, 2]  # round(0.5 · (5 - 1)) frames per item
    # whole 4x4 patches, set to 0 on every channel; the rest untouched
    patches = mask.float().view(2, 1, 5, 4, 4, 4, 4).mean(dim=(4, 6))
    assert set(patches.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(masked, torch.where(mask, 0.0, x))


def test_vae_objective_terms_by_hand(shards, tmp_path):  # noqa: F811
    config = tiny_run(shards, tmp_path, task="backbone_vae", use_ar_loss=False, vae_kl_weight=0.37,
                      recon_ssim_weight=0.5, vae_sample_posterior=False)
    objective, vae = build_objective(config)
    assert isinstance(objective, BackboneVAEObjective)
    video = make_video(batch=2, frames=5, size=32)
    with torch.no_grad():
        out = objective(video)
        posterior = vae.encode(video).latent_dist
        recon = vae.decode(posterior.mean).sample
    mean, logvar = posterior.mean.double(), posterior.logvar.double()
    kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).mean().item()
    l1 = (recon - video).abs().mean().item()
    ssim_term = 1 - ssim_by_skimage(recon, video)
    assert out.logs["kl"] == pytest.approx(kl, rel=1e-5)
    assert out.logs["recon/l1"] == pytest.approx(l1, rel=1e-5)
    assert out.logs["recon/ssim"] == pytest.approx(ssim_term, rel=1e-4)
    assert out.loss.item() == pytest.approx(l1 + 0.5 * ssim_term + 0.37 * kl, rel=1e-5)
    assert torch.allclose(out.reconstruction, recon, atol=1e-6)


def test_pyratok_objective_reconstructs_the_unmasked_clip_and_weights_every_term(tmp_path):
    overrides = {"mask_frame_ratio": 1.0, "recon_weight": 1.3, "codebook_weight": 0.7, "latent_loss_weight": 2.9,
                 "text_dropout": 0.0}
    config = tiny_run(Path("unused"), tmp_path, use_ar_loss=False, recon_ssim_weight=0.5, recon_chroma_weight=1.1,
                      model_overrides=overrides)
    objective, model = build_objective(config)
    assert isinstance(objective, PyraTokObjective)
    objective.train()
    video = make_video(batch=1, frames=5, size=64)
    with torch.no_grad():
        out = objective(video, None, torch.Generator().manual_seed(0))
    # The case under test: the mask really hides part of the clip.
    masked, mask = mask_video(video, 1.0, model.config.scale_factor_spatial, torch.Generator().manual_seed(0))
    assert mask.float().mean() > 0.1
    recon = out.reconstruction.double()
    l1_clean = (recon - video).abs().mean().item()
    assert abs(l1_clean - (recon - masked).abs().mean().item()) > 1e-3
    diff = recon - video
    chroma = (diff - diff.mean(dim=1, keepdim=True)).abs().mean().item()
    ssim_term = 1 - ssim_by_skimage(out.reconstruction, video)
    assert out.logs["recon/l1"] == pytest.approx(l1_clean, rel=1e-5)
    assert out.logs["recon/ssim"] == pytest.approx(ssim_term, rel=1e-4)
    assert out.logs["recon/chroma"] == pytest.approx(chroma, rel=1e-5)
    recon_total = l1_clean + 0.5 * ssim_term + 1.1 * chroma
    assert out.logs["recon/total"] == pytest.approx(recon_total, rel=1e-4)
    # The encoder sees the masked clip; the latent term's target is the frozen encoder's mean of the unmasked one.
    core = model.core
    with torch.no_grad():
        embeds, text_mask, present = core.text_condition(1, video.device, text=None)
        q = core.quantize_features(core.backbone.encode_features(masked), embeds, text_mask, present, False)
        with core.backbone.lora_disabled():
            target = core.backbone.encode_features(video).moments[:, : model.config.z_dim]
            masked_target = core.backbone.encode_features(masked).moments[:, : model.config.z_dim]
    latent = (q.latent.double() - target.double()).square().mean().item()
    assert abs(latent - (q.latent.double() - masked_target.double()).square().mean().item()) > 1e-4 * latent
    assert out.logs["latent"] == pytest.approx(latent, rel=1e-4)
    expected = 1.3 * recon_total + 0.7 * out.logs["codebook/total"] + 2.9 * out.logs["latent"]
    assert out.logs["loss"] == pytest.approx(expected, rel=1e-5)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    weighted = sum(
        getattr(model.config, f"{name}_weight") * out.logs[f"codebook/{name}"]
        for name in ("commitment", "entropy", "hierarchical", "text_alignment", "text_codebook")
        if f"codebook/{name}" in out.logs
    )
    assert out.logs["codebook/total"] == pytest.approx(weighted, rel=1e-5)


# ------------------------------------------------------------------------------------------------ the trainer


def cosine_with_warmup(step: int, base: float, warmup: int, total: int) -> float:
    """transformers' `cosine` schedule after `step` scheduler steps (half a cosine period after a linear warm-up)."""
    if step < warmup:
        return base * step / warmup
    progress = (step - warmup) / (total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * progress))


def test_lr_schedule_is_exact_and_survives_a_resume(shards, tmp_path):  # noqa: F811
    run = dict(task="backbone_vae", use_ar_loss=False, lr_scheduler="cosine", lr_warmup_steps=2, max_train_steps=5,
               checkpointing_steps=2, data={**tiny_run(shards, tmp_path).data, "resolutions": [[32, 32]]})
    straight = tmp_path / "straight"
    train(tiny_run(shards, straight, **run))
    AcceleratorState._reset_state(True)
    # Resume from a copy of the uninterrupted run's step-2 checkpoint: same config, so the same schedule. (A restarted
    # schedule would give step 3 the rate of step 1, 1.5e-3, not 2.25e-3.)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-2", resumed / "checkpoint-2")
    train(tiny_run(shards, resumed, **run, resume_from_checkpoint="latest"))
    full = {r["step"]: r for r in read_log(straight) if "lr" in r}
    again = {r["step"]: r for r in read_log(resumed) if "lr" in r}
    assert sorted(full) == list(range(1, 6)) and sorted(again) == [3, 4, 5]
    for step in range(1, 6):
        assert full[step]["lr"] == pytest.approx(cosine_with_warmup(step, 3e-3, 2, 5), rel=1e-6, abs=1e-12), step
    for step in (3, 4, 5):
        assert again[step]["lr"] == pytest.approx(full[step]["lr"], rel=1e-6, abs=1e-12), step
        assert again[step]["loss"] == pytest.approx(full[step]["loss"], rel=1e-5), step
    a = load_file(straight / "final" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "final" / "diffusion_pytorch_model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_two_accumulated_steps_of_one_clip_equal_one_step_of_two(shards, tmp_path):  # noqa: F811
    # Adam's first step is lr·g/(|g| + eps): with eps = 1 >> |g| it is linear in the gradient, so a gradient scaled by
    # the wrong factor moves the weights by a different amount (with a tiny eps every scale moves them by ±lr).
    data = {**tiny_run(shards, tmp_path).data, "resolutions": [[32, 32]], "shuffle_buffer": 0}
    run = dict(task="backbone_vae", use_ar_loss=False, max_train_steps=1, adam_epsilon=1.0, max_grad_norm=0.0,
               weight_decay=0.0, learning_rate=1.0, vae_sample_posterior=False)
    config = tiny_run(shards, tmp_path / "init", **run, data=data)
    set_seed(config.seed)  # train() seeds the same way before building the model
    _, vae = build_objective(config)
    initial = {k: v.clone() for k, v in vae.state_dict().items()}
    AcceleratorState._reset_state(True)
    one = tmp_path / "one"
    train(tiny_run(shards, one, **run, data={**data, "batch_size": 2}))
    AcceleratorState._reset_state(True)
    two = tmp_path / "two"
    train(tiny_run(shards, two, **run, data={**data, "batch_size": 1}, gradient_accumulation_steps=2))
    a = load_file(one / "final" / "diffusion_pytorch_model.safetensors")
    b = load_file(two / "final" / "diffusion_pytorch_model.safetensors")
    moved = [k for k in a if not torch.equal(a[k], initial[k])]
    assert moved
    delta_a = torch.cat([(a[k] - initial[k]).flatten() for k in moved])
    delta_b = torch.cat([(b[k] - initial[k]).flatten() for k in moved])
    assert torch.allclose(delta_b, delta_a, rtol=1e-3, atol=1e-3 * delta_a.abs().max().item())
    # the logged loss of the accumulated step is the mean of its two micro-batches: the batch-of-two loss
    assert read_log(two)[0]["loss"] == pytest.approx(read_log(one)[0]["loss"], rel=1e-5)

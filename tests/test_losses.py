"""pyratok/quality.py (SSIM/PSNR, offline LPIPS) and training/losses.py (reconstruction loss, training mask)."""

import math
import os
import urllib.request

import pytest
import torch

from pyratok import quality
from pyratok.quality import LPIPSWeightsUnavailable, build_lpips, lpips_or_reason, lpips_weights_path, psnr, ssim
from pyratok.training.losses import ReconstructionLoss, even_frame_indices, mask_video, saliency_weights


def smooth_images(n: int = 2, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random images `(N, C, S, S)` in [-1, 1] (SSIM of white noise says little)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, size // 4, size // 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def noisy(x: torch.Tensor, std: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + std * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def video(batch: int = 2, frames: int = 5, size: int = 32, seed: int = 0) -> torch.Tensor:
    images = smooth_images(batch * frames, 3, size, seed)
    return images.view(batch, frames, 3, size, size).transpose(1, 2).contiguous()  # (B, 3, T, H, W)


# ---- SSIM / PSNR ----------------------------------------------------------------------------------------------------


def test_ssim_of_identical_images_is_one():
    x = smooth_images()
    assert abs(ssim(x, x).item() - 1) < 1e-6
    assert torch.allclose(ssim(x, x, reduction="none"), torch.ones(2), atol=1e-6)


def test_ssim_decreases_with_noise_and_is_symmetric():
    x = smooth_images()
    values = [ssim(x, noisy(x, std)).item() for std in (0.02, 0.1, 0.3)]
    assert values[0] > values[1] > values[2]
    y = noisy(x, 0.1)
    assert torch.allclose(ssim(x, y, reduction="none"), ssim(y, x, reduction="none"), atol=1e-6)


def test_ssim_matches_skimage():
    metrics = pytest.importorskip("skimage.metrics")
    x = smooth_images(n=2, size=40, seed=3)
    y = noisy(x, 0.15, seed=4)
    ours = ssim(x, y, reduction="none")
    for i in range(2):
        # skimage scores intensities as given: the [0, 1] images our [-1, 1] frames encode.
        reference = metrics.structural_similarity(
            (x[i].double().numpy() + 1) / 2,
            (y[i].double().numpy() + 1) / 2,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=0,
        )
        assert abs(ours[i].item() - reference) < 1e-3
    assert torch.allclose(ssim((x + 1) / 2, (y + 1) / 2, data_range=1.0, value_min=0.0, reduction="none"), ours,
                          atol=1e-5)


def test_ssim_scores_intensities_not_signed_values():
    """[-1, 1] frames are scored as the intensities they encode: an offset of 0.1 costs about the same at mid-grey as
    at bright values, and means on both sides of mid-grey do not make SSIM negative (on signed values the first
    scores 0.61 against 0.99 and the second -0.85)."""

    def flat(value: float) -> torch.Tensor:
        return torch.full((1, 3, 16, 16), value)

    near_grey, bright = ssim(flat(0.15), flat(0.05)).item(), ssim(flat(0.65), flat(0.55)).item()
    assert near_grey > 0.99 and bright > 0.99 and abs(near_grey - bright) < 0.01
    assert ssim(flat(0.05), flat(-0.05)).item() > 0.99


def test_ssim_is_differentiable():
    x = smooth_images()
    y = noisy(x, 0.1).requires_grad_(True)
    ssim(x, y).backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "x, y",
    [
        (torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 15)),  # shape mismatch
        (torch.zeros(3, 16, 16), torch.zeros(3, 16, 16)),  # not 4-D
        (torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)),  # smaller than the window
    ],
)
def test_ssim_rejects_bad_inputs(x, y):
    with pytest.raises(ValueError):
        ssim(x, y)


@pytest.mark.parametrize("offset", [0.1, 0.5])
def test_psnr_of_constant_offset(offset):
    x = smooth_images().clamp(-0.4, 0.4)
    expected = 10 * math.log10(4 / offset**2)
    per_item = psnr(x, x + offset, reduction="none")
    assert per_item.shape == (2,)
    assert torch.allclose(per_item, torch.full((2,), expected), atol=1e-3)
    assert psnr(x, x + offset).item() == pytest.approx(expected, abs=1e-3)


def test_psnr_of_identical_items_is_inf():
    x = smooth_images()
    assert torch.isinf(psnr(x, x, reduction="none")).all()
    with pytest.raises(ValueError):
        psnr(x, x[:1])


# ---- LPIPS offline -------------------------------------------------------------------------------------------------


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache, and any network access fails the test."""
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError("LPIPS tried to reach the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return tmp_path


def test_lpips_weights_path_is_torchvisions_cache_file(empty_hub):
    path = lpips_weights_path("alex")
    assert path == os.path.join(str(empty_hub), "hub", "checkpoints", "alexnet-owt-7be5be79.pth")


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_missing_lpips_weights_raise_without_download(empty_hub, net):
    with pytest.raises(LPIPSWeightsUnavailable, match="never downloads") as info:
        build_lpips(net, pretrained_backbone=True)
    assert lpips_weights_path(net) in str(info.value)
    metric, reason = lpips_or_reason(net)
    assert metric is None and lpips_weights_path(net) in reason


def test_lpips_download_is_refused_even_if_the_check_is_fooled(empty_hub, monkeypatch):
    # Pretend the weights are cached: torchvision then finds no file and would download; the guard must stop it.
    monkeypatch.setattr(quality, "lpips_weights_path", lambda net: __file__)
    with pytest.raises(LPIPSWeightsUnavailable, match="downloads are disabled"):
        build_lpips("alex", pretrained_backbone=True)


def test_random_backbone_lpips_builds_offline_and_frozen(empty_hub):
    metric = build_lpips("alex", pretrained_backbone=False)
    assert not metric.training
    assert not any(p.requires_grad for p in metric.parameters())


# ---- ReconstructionLoss ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recon_loss() -> ReconstructionLoss:
    torch.manual_seed(0)
    return ReconstructionLoss(lpips_pretrained_backbone=False)


def test_reconstruction_loss_is_zero_for_identical_videos(recon_loss):
    x = video()
    terms = recon_loss(x, x)
    assert set(terms) == {"l1", "ssim", "lpips", "total"}
    assert terms["l1"].item() == 0
    assert abs(terms["ssim"].item()) < 1e-6
    assert abs(terms["lpips"].item()) < 1e-6
    assert abs(terms["total"].item()) < 1e-5


def test_reconstruction_loss_is_positive_and_reaches_the_reconstruction(recon_loss):
    target = video()
    reconstruction = noisy(target, 0.2).requires_grad_(True)
    terms = recon_loss(reconstruction, target)
    for name in ("l1", "ssim", "lpips", "total"):
        assert terms[name].item() > 0, name
    assert torch.allclose(terms["total"], terms["l1"] + terms["ssim"] + terms["lpips"])
    terms["total"].backward()
    assert torch.isfinite(reconstruction.grad).all() and reconstruction.grad.abs().sum() > 0


def test_reconstruction_loss_weights_and_disabled_terms():
    target = video()
    reconstruction = noisy(target, 0.2)
    loss = ReconstructionLoss(l1_weight=2.0, ssim_weight=0.0, lpips_weight=0.0)
    assert loss.lpips is None  # not even built
    terms = loss(reconstruction, target)
    assert set(terms) == {"l1", "total"}
    assert torch.allclose(terms["total"], 2 * terms["l1"])
    with pytest.raises(ValueError):
        ReconstructionLoss(l1_weight=-1.0, lpips_weight=0.0)
    with pytest.raises(ValueError, match="at least one"):
        ReconstructionLoss(l1_weight=0.0, ssim_weight=0.0, lpips_weight=0.0)


def test_chroma_term_scores_only_colour_errors():
    loss = ReconstructionLoss(l1_weight=0.0, ssim_weight=0.0, lpips_weight=0.0, chroma_weight=3.0)
    target = video()
    assert set(loss(target, target)) == {"chroma", "total"}
    assert loss(target, target)["chroma"].item() == 0
    # The same shift on R, G and B (brighter or darker, colour kept) costs nothing; greying the video costs its chroma.
    assert loss(target + 0.3, target)["chroma"].item() < 1e-6
    grey = target.mean(1, keepdim=True).expand_as(target).clone().requires_grad_(True)
    terms = loss(grey, target)
    expected = (target - target.mean(1, keepdim=True)).abs().mean()
    assert torch.allclose(terms["chroma"], expected) and expected > 0.1
    assert torch.allclose(terms["total"], 3 * expected)
    terms["total"].backward()
    assert grey.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        ReconstructionLoss(lpips_weight=0.0, chroma_weight=-1.0)
    grey_video = target[:, :1]  # one channel: no colour to score, so the term must refuse rather than return 0
    with pytest.raises(ValueError, match="chroma term needs colour"):
        loss(grey_video, grey_video)


def _object_on_flat_background() -> torch.Tensor:
    """(1, 3, 2, 4, 4): frame 0 is -0.5 everywhere but two object pixels at +0.5; frame 1 is flat (0.1)."""
    target = torch.full((1, 3, 2, 4, 4), -0.5)
    target[0, :, 0, 1, 1] = 0.5
    target[0, :, 0, 2, 3] = 0.5
    target[0, :, 1] = 0.1
    return target


def test_saliency_weights_on_a_hand_made_frame():
    w = saliency_weights(_object_on_flat_background())
    # Frame 0: median colour is the background; distance sqrt(3) on the 2 object pixels, 0 elsewhere; mean
    # 2 sqrt(3) / 16, so the objects weigh 8 and the background 0. Frame 1 is flat: weight 1 everywhere.
    expected = torch.zeros(1, 1, 2, 4, 4)
    expected[0, 0, 0, 1, 1] = expected[0, 0, 0, 2, 3] = 8.0
    expected[0, 0, 1] = 1.0
    assert torch.allclose(w, expected, atol=1e-5)
    with pytest.raises(ValueError, match="expects"):
        saliency_weights(torch.zeros(3, 4, 4))


def test_salient_term_is_not_outvoted_by_the_background():
    target = _object_on_flat_background()
    recon = target.clone().requires_grad_(True)
    error = torch.zeros_like(target)
    error[0, 0, 0, 1, 1] = error[0, 0, 0, 2, 3] = 0.3  # object pixels: 0.3 on red only → 0.1 per pixel
    error[0, :, 0] += torch.where(target[0, :, 0] < 0, 0.2, 0.0)  # background of frame 0: 0.2 on every channel
    error[0, :, 1] = 0.2  # the flat frame: 0.2 everywhere
    loss = ReconstructionLoss(l1_weight=1.0, ssim_weight=0.0, lpips_weight=0.0, salient_weight=2.0)
    terms = loss(recon + error, target)
    # By hand: frame 0 (8·0.1·2 + 0·0.2·14) / 16 = 0.1, frame 1 0.2 → 0.15; plain L1 (0.2 + 2.8) / 32 + 0.2 / 2.
    assert terms["salient"].item() == pytest.approx(0.15, abs=1e-6)
    assert terms["l1"].item() == pytest.approx((2 * 0.1 + 14 * 0.2) / 32 + 0.1, abs=1e-6)
    assert terms["total"].item() == pytest.approx(terms["l1"].item() + 2 * 0.15, abs=1e-6)
    assert loss(target, target)["salient"].item() == 0
    with pytest.raises(ValueError, match="salient"):
        ReconstructionLoss(lpips_weight=0.0, salient_weight=-1.0)


def test_salient_weight_reaches_the_objectives_loss():
    from pyratok.training.config import TrainConfig
    from pyratok.training.objective import build_reconstruction_loss

    data = {"data_files": "x.tar"}
    fields = {"recon_lpips_weight": 0.0, "recon_salient_weight": 0.5, "data": data}
    loss = build_reconstruction_loss(TrainConfig(**fields))
    assert loss.weights == {"l1": 1.0, "ssim": 1.0, "salient": 0.5}
    assert "salient" not in build_reconstruction_loss(TrainConfig(recon_lpips_weight=0.0, data=data)).weights


def test_lpips_never_trainable_nor_in_state_dict(recon_loss):
    assert len(list(recon_loss.parameters())) == 0
    assert recon_loss.state_dict() == {}
    recon_loss.train()
    assert not recon_loss.lpips.training  # its dropout stays off
    assert not any(p.requires_grad for p in recon_loss.lpips.parameters())
    container = torch.nn.ModuleDict({"loss": recon_loss})
    assert not any(k.startswith("loss.lpips") for k in container.state_dict())


def test_lpips_follows_dtype_moves():
    loss = ReconstructionLoss(l1_weight=0.0, ssim_weight=0.0, lpips_pretrained_backbone=False)
    loss.double()
    assert next(loss.lpips.parameters()).dtype == torch.float64
    x = video().double()
    assert torch.isfinite(loss(x, noisy(x, 0.1))["lpips"])


def test_lpips_scores_only_evenly_spread_frames(recon_loss):
    assert even_frame_indices(9, 4).tolist() == [0, 3, 5, 8]
    assert even_frame_indices(3, 4).tolist() == [0, 1, 2]
    assert even_frame_indices(5, None).tolist() == [0, 1, 2, 3, 4]
    target = video(frames=9)
    reconstruction = target.clone()
    reconstruction[:, :, 4] = noisy(target[:, :, 4], 0.3)  # a frame LPIPS (4 of 9 frames) does not look at
    terms = recon_loss(reconstruction, target)
    assert terms["l1"].item() > 0 and terms["ssim"].item() > 0
    assert abs(terms["lpips"].item()) < 1e-6


def test_reconstruction_loss_validates_shapes(recon_loss):
    x = video()
    with pytest.raises(ValueError):
        recon_loss(x, x[:, :, :-1])
    with pytest.raises(ValueError):
        recon_loss(x[:, :, 0], x[:, :, 0])
    small = video(size=16)
    with pytest.raises(ValueError, match="LPIPS"):
        recon_loss(small, small)


# ---- mask_video ----------------------------------------------------------------------------------------------------


def test_mask_video_masks_the_right_frames_with_zeros():
    x = video(batch=3, frames=9, size=16) * 0.5 + 0.5  # in [0, 1], so no pixel is 0 by chance
    masked, mask = mask_video(x, frame_ratio=0.3, patch_size=4, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (3, 1, 9, 16, 16) and mask.dtype == torch.bool
    frame_masked = mask.flatten(3).any(-1).squeeze(1)  # (B, T)
    assert not frame_masked[:, 0].any()  # frame 0 is never masked
    assert frame_masked.sum(1).tolist() == [round(0.3 * 8)] * 3
    full = mask.expand_as(x)
    assert (masked[full] == 0).all()
    assert torch.equal(masked[~full], x[~full])
    # Patch-aligned: every 4x4 patch is all masked or all kept.
    patches = mask.view(3, 1, 9, 4, 4, 4, 4).float()
    assert torch.equal(patches.amax(dim=(4, 6)), patches.amin(dim=(4, 6)))


def test_mask_video_ratio_zero_is_identity():
    x = video()
    masked, mask = mask_video(x, frame_ratio=0.0, patch_size=8)
    assert masked is x
    assert not mask.any()


def test_mask_video_ratio_one_masks_every_later_frame():
    x = video(frames=5)
    _, mask = mask_video(x, frame_ratio=1.0, patch_size=8, generator=torch.Generator().manual_seed(1))
    frame_masked = mask.flatten(3).any(-1).squeeze(1)
    assert frame_masked[:, 1:].all() and not frame_masked[:, 0].any()


def test_mask_video_is_deterministic_with_a_generator():
    x = video(batch=2, frames=9, size=16)
    a = mask_video(x, 0.5, 4, torch.Generator().manual_seed(7))
    b = mask_video(x, 0.5, 4, torch.Generator().manual_seed(7))
    c = mask_video(x, 0.5, 4, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_mask_video_follows_the_cosine_schedule():
    # One masked frame per item; E[cos(π/2 · u)] = 2/π of its patches on average.
    x = torch.zeros(400, 1, 2, 32, 32)
    _, mask = mask_video(x, 1.0, 4, torch.Generator().manual_seed(0))
    fraction = mask[:, 0, 1].float().mean(dim=(1, 2))
    assert (fraction > 0).all()
    assert abs(fraction.mean().item() - 2 / math.pi) < 0.05


@pytest.mark.parametrize("kwargs", [{"patch_size": 5}, {"frame_ratio": 1.5}, {"patch_size": 0}])
def test_mask_video_rejects_bad_arguments(kwargs):
    args = {"frame_ratio": 0.3, "patch_size": 4} | kwargs
    with pytest.raises(ValueError):
        mask_video(video(size=16), **args)

"""Quality metrics shared by the CLI, training (validation and losses) and evaluation.

- `ssim` / `psnr`: per-image metrics on `(N, C, H, W)` in [-1, 1].
- `build_lpips` / `lpips_or_reason`: the `lpips` package's perceptual metric, built strictly offline. Its linear heads
  ship inside the package, but its AlexNet/VGG/SqueezeNet trunk comes from torchvision's weights in the torch hub
  cache; when that file is missing we raise `LPIPSWeightsUnavailable` instead of downloading.
- `clip_scores` / `code_usage` / `chroma`: per-clip PSNR / SSIM / LPIPS, codebook usage and colourfulness, as the
  reports (`metrics.json`, validation logs, `pyratok-eval`) give them.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from unittest import mock

import lpips
import torch
import torch.nn.functional as F

# Wang et al. 2004, "Image quality assessment: from error visibility to structural similarity".
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_REDUCTIONS = ("mean", "none")
LPIPS_NETS = ("alex", "vgg", "squeeze")
# Smallest H and W each LPIPS trunk accepts (its pooling stack needs at least one pixel per stage; measured).
LPIPS_MIN_SIZE = {"alex": 31, "vgg": 16, "squeeze": 17}


def _check_pair(x: torch.Tensor, y: torch.Tensor, name: str, ndim: int | None = None) -> None:
    if x.shape != y.shape:
        raise ValueError(f"{name}: inputs must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim}-D inputs, got shape {tuple(x.shape)}")


def _gaussian_window(window_size: int, sigma: float, device: torch.device) -> torch.Tensor:
    coords = torch.arange(window_size, dtype=torch.float32, device=device) - (window_size - 1) / 2
    window = torch.exp(-(coords**2) / (2 * sigma**2))
    return window / window.sum()  # (window_size,)


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
    data_range: float = 2.0,
    reduction: str = "mean",
    value_min: float = -1.0,
) -> torch.Tensor:
    """Structural similarity with a Gaussian window (Wang et al. 2004; K1 = 0.01, K2 = 0.03), differentiable.

    SSIM's luminance term `(2 μx μy + C1) / (μx² + μy² + C1)` assumes non-negative intensities, so the inputs are
    shifted by `value_min` to start at 0 first (a [-1, 1] frame is scored as the [0, 2] frame it encodes). On signed
    values the term goes negative when the local means differ in sign and overweights small errors near mid-grey
    (a 0.1 offset there scores 0.61, at bright values 0.99).

    Local statistics use population (not sample) covariance and a separable Gaussian window of `window_size` taps,
    normalised to sum 1. Only 'valid' windows count (no padding): the SSIM map is `(H - window_size + 1) x
    (W - window_size + 1)`, the same pixels `skimage.metrics.structural_similarity` averages (it filters with reflect
    padding, then crops the border), so the two agree with `gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False`. Computed in float32 with autocast off.

    Args:
        x, y (`torch.Tensor` of shape `(N, C, H, W)`): images, values in `[-1, 1]` for the default `data_range`.
        window_size (`int`): odd number of Gaussian taps; `H, W >= window_size`.
        sigma (`float`): Gaussian standard deviation in pixels, > 0.
        data_range (`float`): max - min of the value range (2 for [-1, 1]).
        reduction (`str`): `"mean"` → scalar; `"none"` → `(N,)`, one value per image (mean over channels and pixels).
        value_min (`float`): the lowest value of the range (-1 for [-1, 1]); 0 for images already in [0, 1].

    Returns:
        `torch.Tensor` (float32), scalar or `(N,)`, in `[-1, 1]`; exactly 1 for identical inputs.
    """
    _check_pair(x, y, "ssim", ndim=4)
    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"ssim: window_size must be a positive odd integer, got {window_size}")
    if sigma <= 0 or data_range <= 0:
        raise ValueError(f"ssim: sigma and data_range must be > 0, got sigma={sigma}, data_range={data_range}")
    if reduction not in SSIM_REDUCTIONS:
        raise ValueError(f"ssim: reduction must be one of {SSIM_REDUCTIONS}, got {reduction!r}")
    batch, channels, height, width = x.shape
    if height < window_size or width < window_size:
        raise ValueError(f"ssim: images of size {(height, width)} are smaller than window_size={window_size}")

    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y = x.float() - value_min, y.float() - value_min
        window = _gaussian_window(window_size, sigma, x.device)
        stack = torch.cat([x, y, x * x, y * y, x * y], dim=1).reshape(batch * 5 * channels, 1, height, width)
        stack = F.conv2d(stack, window.view(1, 1, 1, -1))  # separable: along W, then along H
        stack = F.conv2d(stack, window.view(1, 1, -1, 1))
        stack = stack.view(batch, 5, channels, height - window_size + 1, width - window_size + 1)
        mu_x, mu_y, xx, yy, xy = stack.unbind(dim=1)
        var_x, var_y, cov = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
        c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
        ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        per_image = ssim_map.flatten(1).mean(dim=1)  # (N,)
    return per_image.mean() if reduction == "mean" else per_image


def colour_deviation(x: torch.Tensor) -> torch.Tensor:
    """Each pixel's colour around its mean over the channels, `x - mean_c x`, for `(B, C, ...)` tensors: 0 where the
    pixel is grey. The chroma term of [`ReconstructionLoss`] and [`chroma`] both measure its size."""
    return x - x.mean(dim=1, keepdim=True)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, reduction: str = "mean") -> torch.Tensor:
    """Peak signal-to-noise ratio per item, `10 log10(data_range² / MSE)`, in dB.

    Args:
        x, y (`torch.Tensor` of shape `(N, ...)`): items along dim 0 (images or videos), values in `[-1, 1]` for the
            default `data_range`.
        data_range (`float`): max - min of the value range.
        reduction (`str`): `"mean"` → scalar mean of the per-item values; `"none"` → `(N,)`.

    Returns:
        `torch.Tensor` (float32), scalar or `(N,)`; `inf` for identical items (and a mean containing one).
    """
    _check_pair(x, y, "psnr")
    if x.ndim < 2:
        raise ValueError(f"psnr: expected (N, ...) inputs with at least 2 dims, got shape {tuple(x.shape)}")
    if data_range <= 0:
        raise ValueError(f"psnr: data_range must be > 0, got {data_range}")
    if reduction not in SSIM_REDUCTIONS:
        raise ValueError(f"psnr: reduction must be one of {SSIM_REDUCTIONS}, got {reduction!r}")
    mse = (x.float() - y.float()).square().flatten(1).mean(dim=1)  # (N,)
    per_item = 10 * torch.log10(data_range**2 / mse)
    return per_item.mean() if reduction == "mean" else per_item


# ---------------------------------------------------------------------------------------------------------------------
# LPIPS, offline
# ---------------------------------------------------------------------------------------------------------------------


class LPIPSWeightsUnavailable(RuntimeError):
    """LPIPS needs torchvision's ImageNet trunk weights and they are not in the torch hub cache."""


def _torchvision_weights(net: str):
    from torchvision.models import AlexNet_Weights, SqueezeNet1_1_Weights, VGG16_Weights

    return {
        "alex": AlexNet_Weights.IMAGENET1K_V1,
        "vgg": VGG16_Weights.IMAGENET1K_V1,
        "squeeze": SqueezeNet1_1_Weights.IMAGENET1K_V1,
    }[net]


def lpips_weights_path(net: str = "alex") -> str:
    """Where torchvision looks for the LPIPS trunk weights: `torch.hub.get_dir()/checkpoints/<file of the URL>`."""
    if net not in LPIPS_NETS:
        raise ValueError(f"net must be one of {LPIPS_NETS}, got {net!r}")
    url = _torchvision_weights(net).url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def build_lpips(net: str = "alex", pretrained_backbone: bool = True) -> lpips.LPIPS:
    """Build the LPIPS metric (v0.1 linear heads from the `lpips` package), frozen and in eval mode, never downloading.

    Args:
        net (`str`): trunk, one of `"alex"`, `"vgg"`, `"squeeze"`.
        pretrained_backbone (`bool`): `True` loads torchvision's ImageNet trunk from the torch hub cache and raises
            [`LPIPSWeightsUnavailable`] when the file is not there; `False` uses a random trunk with the real linear
            heads (tests and smoke runs only: not a valid perceptual metric).

    Returns:
        `lpips.LPIPS`, taking two `(N, 3, H, W)` images in `[-1, 1]` and returning `(N, 1, 1, 1)` distances >= 0.
    """
    if net not in LPIPS_NETS:
        raise ValueError(f"net must be one of {LPIPS_NETS}, got {net!r}")
    if pretrained_backbone:
        path = lpips_weights_path(net)
        if not os.path.isfile(path):
            url = _torchvision_weights(net).url
            raise LPIPSWeightsUnavailable(
                f"LPIPS ({net}) needs torchvision's ImageNet trunk weights at {path}, which does not exist; this "
                f"code never downloads. On a machine with network access, download {url} and copy it to that path "
                f"(or set TORCH_HOME to a cache whose hub/checkpoints/ holds {os.path.basename(url)}). "
                "For tests only, pretrained_backbone=False builds a random trunk."
            )

    def refuse_download(url: str, dst: str, *args, **kwargs) -> None:
        raise LPIPSWeightsUnavailable(f"LPIPS tried to download {url} to {dst}; downloads are disabled")

    with warnings.catch_warnings(), mock.patch.object(torch.hub, "download_url_to_file", refuse_download):
        # lpips still calls torchvision's deprecated `pretrained=` argument.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.")
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=not pretrained_backbone, verbose=False)
    model.requires_grad_(False)
    return model.eval()


def lpips_or_reason(net: str = "alex") -> tuple[lpips.LPIPS | None, str | None]:
    """`(metric, None)` with the pretrained trunk, or `(None, reason)` when its weights are not cached (metrics code
    then reports `null` with the reason)."""
    try:
        return build_lpips(net, pretrained_backbone=True), None
    except LPIPSWeightsUnavailable as err:
        return None, str(err)


# ---------------------------------------------------------------------------------------------------------------------
# Clip-level scores
# ---------------------------------------------------------------------------------------------------------------------


def frames_as_images(video: torch.Tensor) -> torch.Tensor:
    """`(B, C, T, H, W)` → `(B·T, C, H, W)`."""
    return video.transpose(1, 2).flatten(0, 1)


def clip_scores(
    reconstruction: torch.Tensor, target: torch.Tensor, lpips_module: torch.nn.Module | None = None
) -> dict[str, list[float | None]]:
    """Per-clip PSNR / SSIM / LPIPS, each the mean of that clip's per-frame values.

    Args:
        reconstruction, target: float `(B, 3, T, H, W)` in [-1, 1] (H, W >= 11 for SSIM's window).
        lpips_module: an `lpips.LPIPS` (inputs in [-1, 1]) or None.

    Returns:
        `{"psnr": [B floats, dB, inf for identical clips], "ssim": [B floats in [-1, 1]], "lpips": [B floats >= 0 or
        None]}`.
    """
    if reconstruction.shape != target.shape or reconstruction.ndim != 5:
        raise ValueError(
            f"reconstruction and target must both be (B, 3, T, H, W), got {tuple(reconstruction.shape)} and "
            f"{tuple(target.shape)}"
        )
    batch, _, frames = target.shape[:3]
    x, y = frames_as_images(reconstruction.float()), frames_as_images(target.float())  # (B*T, 3, H, W)
    out: dict[str, list[float | None]] = {
        "psnr": psnr(x, y, reduction="none").view(batch, frames).mean(1).tolist(),
        "ssim": ssim(x, y, reduction="none").view(batch, frames).mean(1).tolist(),
        "lpips": [None] * batch,
    }
    if lpips_module is not None:
        module_device = next(lpips_module.parameters()).device
        dist = lpips_module(x.to(module_device), y.to(module_device)).flatten()  # (B*T,)
        out["lpips"] = dist.view(batch, frames).mean(1).tolist()
    return out


def chroma(video: torch.Tensor) -> float:
    """Mean |pixel - its mean over RGB| of `(B, 3, ...)` frames in [-1, 1]: the colour a grey image lacks (0)."""
    return colour_deviation(video.float()).abs().mean().item()


def code_usage(ids: list[torch.Tensor], codebook_size: int) -> dict[str, float]:
    """Usage of one level's codes over many tokens: distinct codes, their share of the codebook and perplexity."""
    counts: Counter[int] = Counter()
    for level_ids in ids:
        counts.update(level_ids.flatten().tolist())
    total = sum(counts.values())
    entropy = -sum(c / total * math.log(c / total) for c in counts.values())
    return {
        "tokens": total,
        "distinct_codes": len(counts),
        "codebook_fraction": len(counts) / codebook_size,
        "perplexity": math.exp(entropy),
    }

"""Reconstruction losses and the training mask (DESIGN.md §1, §4).

The metrics they build on (SSIM, PSNR, offline LPIPS) live in `pyratok.quality`, shared with the CLI and evaluation.

- `ReconstructionLoss`: L1 + (1 - SSIM) + LPIPS on videos, each term switchable and returned separately.
- `mask_video`: 30% of the frames after the first get a cosine-scheduled fraction of their spatial patches masked.

Frozen networks used by training modules (LPIPS here, the LM and the reference encoder in `heads.py`) are held outside
the module registry by `FrozenCompanionModule`, so they never reach a state dict, an optimizer or `train()`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import lpips
import torch
from torch import nn

from pyratok.quality import LPIPS_MIN_SIZE, LPIPS_NETS, _check_pair, build_lpips, colour_deviation, ssim

# ---------------------------------------------------------------------------------------------------------------------
# Frozen companions
# ---------------------------------------------------------------------------------------------------------------------


class FrozenCompanionModule(nn.Module):
    """A module that uses frozen networks it does not own (LPIPS, a frozen LM, a reference vision encoder).

    A companion set with `_set_companion` lives in the instance `__dict__`, outside the module registry: it is absent
    from `parameters()`, `state_dict()` and `named_modules()`, `train()` never switches it out of eval mode (LPIPS has
    dropout), and its `requires_grad` is False. It still follows `.to()`, `.cuda()`, `.half()` through `_apply`, so
    `accelerate.prepare` moves it with its owner. Gradients still flow *through* a companion to its inputs.
    """

    def __init__(self) -> None:
        super().__init__()
        self._companion_names: list[str] = []

    def _set_companion(self, name: str, module: nn.Module) -> None:
        module.requires_grad_(False)
        module.eval()
        # Bypass nn.Module.__setattr__, which would register the module as a child.
        object.__setattr__(self, name, module)
        if name not in self._companion_names:
            self._companion_names.append(name)

    def _apply(self, fn: Callable, recurse: bool = True) -> FrozenCompanionModule:
        super()._apply(fn, recurse)
        if recurse:
            for name in self._companion_names:
                getattr(self, name)._apply(fn)
        return self


# ---------------------------------------------------------------------------------------------------------------------
# Saliency
# ---------------------------------------------------------------------------------------------------------------------


def saliency_weights(target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-pixel weights that single out what differs from a frame's dominant colour, mean 1 per frame.

    Each pixel's weight is the Euclidean distance of its colour from the frame's per-channel median colour, divided
    by that distance's mean over the frame: a large flat background gets weight ~0, small objects (and edges,
    textures) share the frame's whole weight. A frame of one colour gets weight 1 everywhere. Needs no mask, so it
    applies to any video, not only procedural clips.

    Args:
        target (`torch.Tensor` of shape `(B, C, T, H, W)`): the clip the weights are computed from.
        eps (`float`): below this mean distance a frame counts as flat.

    Returns:
        `torch.Tensor` of shape `(B, 1, T, H, W)`, float32, >= 0, no gradient.
    """
    if target.ndim != 5:
        raise ValueError(f"saliency_weights expects (B, C, T, H, W), got shape {tuple(target.shape)}")
    x = target.detach().float()
    median = x.flatten(3).median(dim=-1).values[..., None, None]  # (B, C, T, 1, 1)
    distance = (x - median).square().sum(dim=1, keepdim=True).sqrt()  # (B, 1, T, H, W)
    mean = distance.mean(dim=(3, 4), keepdim=True)
    flat = mean < eps
    return torch.where(flat, torch.ones_like(distance), distance / mean.clamp_min(eps))


# ---------------------------------------------------------------------------------------------------------------------
# Reconstruction loss
# ---------------------------------------------------------------------------------------------------------------------


def _frames(x: torch.Tensor) -> torch.Tensor:
    batch, channels, frames, height, width = x.shape
    return x.transpose(1, 2).reshape(batch * frames, channels, height, width)  # (B*T, C, H, W)


def even_frame_indices(num_frames: int, max_frames: int | None) -> torch.Tensor:
    """`min(num_frames, max_frames)` distinct frame indices spread evenly over `[0, num_frames)`, first and last
    included (just frame 0 when one is asked); all frames when `max_frames` is None."""
    if max_frames is None or max_frames >= num_frames:
        return torch.arange(num_frames)
    # Rounded steps of >= 1 stay distinct.
    return torch.linspace(0, num_frames - 1, max_frames).round().long()


class ReconstructionLoss(FrozenCompanionModule):
    """L1 + (1 - SSIM) + LPIPS between a reconstructed video and its (unmasked) target (DESIGN §4), plus an optional
    chroma term.

    The chroma term is the L1 error of each pixel's colour once its mean over RGB is removed,
    `|(r - mean_c r) - (t - mean_c t)|`: an extra pull towards the right hue. Small video VAEs trained from scratch on
    L1 + SSIM settle on grey output (evaluation/RESULTS.md: the encoder drops colour layer by layer); this term is
    how the tiny-cpu backbone recipes get colour back. Not in the paper, whose backbone is pretrained Wan.

    The salient term is an L1 error weighted per pixel by [`saliency_weights`] of the target (distance of each
    pixel's colour from its frame's median colour, mean 1 per frame), `mean(w · mean_c |r - t|)`: a large flat
    background cannot outvote small objects, whose colour plain L1 and SSIM let a small tokenizer grey out
    (issue 25). Not in the paper.

    Every term with weight 0 is off: not computed and absent from the output. LPIPS (built only when its weight is
    > 0) is a frozen companion: never trainable, never in `state_dict()`.

    Args:
        l1_weight, ssim_weight, lpips_weight, chroma_weight, salient_weight (`float`): weights (>= 0) of the terms
            in `"total"`.
        lpips_net (`str`): LPIPS trunk, `"alex"` | `"vgg"` | `"squeeze"`.
        lpips_pretrained_backbone (`bool`): see [`build_lpips`]; `False` only for tests.
        lpips_max_frames (`int` or `None`): LPIPS scores at most this many frames per clip, spread evenly (it is the
            expensive term); `None` scores every frame.
    """

    def __init__(
        self,
        l1_weight: float = 1.0,
        ssim_weight: float = 1.0,
        lpips_weight: float = 1.0,
        lpips_net: str = "alex",
        lpips_pretrained_backbone: bool = True,
        lpips_max_frames: int | None = 4,
        chroma_weight: float = 0.0,
        salient_weight: float = 0.0,
    ) -> None:
        super().__init__()
        weights = {"l1": l1_weight, "ssim": ssim_weight, "lpips": lpips_weight, "chroma": chroma_weight,
                   "salient": salient_weight}
        negative = {k: v for k, v in weights.items() if not v >= 0}
        if negative:
            raise ValueError(f"ReconstructionLoss weights must be >= 0, got {negative}")
        if lpips_max_frames is not None and lpips_max_frames < 1:
            raise ValueError(f"lpips_max_frames must be >= 1 or None, got {lpips_max_frames}")
        if lpips_net not in LPIPS_NETS:
            raise ValueError(f"lpips_net must be one of {LPIPS_NETS}, got {lpips_net!r}")
        self.weights = {k: float(v) for k, v in weights.items() if v > 0}
        if not self.weights:
            raise ValueError(f"ReconstructionLoss needs at least one weight > 0, got {weights}")
        self.lpips_net = lpips_net
        self.lpips_max_frames = lpips_max_frames
        self.lpips: lpips.LPIPS | None = None
        if "lpips" in self.weights:
            self._set_companion("lpips", build_lpips(lpips_net, pretrained_backbone=lpips_pretrained_backbone))

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            reconstruction (`torch.Tensor` of shape `(B, 3, T, H, W)`): decoded video, range [-1, 1].
            target (`torch.Tensor` of shape `(B, 3, T, H, W)`): the unmasked input video, range [-1, 1].

        Returns:
            `dict[str, torch.Tensor]` of float32 scalars: the enabled terms, unweighted — `"l1"` (mean absolute error),
            `"ssim"` (1 - SSIM over all frames, in [0, 2]), `"lpips"` (mean LPIPS over <= `lpips_max_frames` frames
            per clip, >= 0), `"chroma"` (mean absolute error of the colour around each pixel's RGB mean),
            `"salient"` (saliency-weighted mean absolute error) — and `"total"`, their weighted sum. All zero for
            identical inputs.
        """
        _check_pair(reconstruction, target, "ReconstructionLoss", ndim=5)
        channels, height, width = reconstruction.shape[1], reconstruction.shape[3], reconstruction.shape[4]
        if self.lpips is not None:
            min_size = LPIPS_MIN_SIZE[self.lpips_net]
            if channels != 3 or min(height, width) < min_size:
                raise ValueError(
                    f"LPIPS ({self.lpips_net}) needs 3 channels and H, W >= {min_size}; "
                    f"got shape {tuple(reconstruction.shape)}"
                )
        if "chroma" in self.weights and channels < 2:
            raise ValueError(f"the chroma term needs colour video (C >= 2); got shape {tuple(reconstruction.shape)}")
        terms: dict[str, torch.Tensor] = {}
        if "l1" in self.weights:
            terms["l1"] = (reconstruction.float() - target.float()).abs().mean()
        if "ssim" in self.weights:
            terms["ssim"] = 1 - ssim(_frames(reconstruction), _frames(target))
        if self.lpips is not None:
            index = even_frame_indices(reconstruction.shape[2], self.lpips_max_frames).to(reconstruction.device)
            dtype = next(self.lpips.parameters()).dtype
            rec = _frames(reconstruction.index_select(2, index)).to(dtype)
            tgt = _frames(target.index_select(2, index)).to(dtype)
            terms["lpips"] = self.lpips(rec, tgt).float().mean()
        if "chroma" in self.weights:
            # (r - mean_c r) - (t - mean_c t) is the colour deviation of the error itself
            terms["chroma"] = colour_deviation(reconstruction.float() - target.float()).abs().mean()
        if "salient" in self.weights:
            error = (reconstruction.float() - target.float()).abs().mean(dim=1, keepdim=True)
            terms["salient"] = (saliency_weights(target) * error).mean()
        terms["total"] = sum(self.weights[k] * v for k, v in terms.items())
        return terms


# ---------------------------------------------------------------------------------------------------------------------
# Training mask
# ---------------------------------------------------------------------------------------------------------------------


def mask_video(
    x: torch.Tensor, frame_ratio: float, patch_size: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask spatial patches of a random subset of frames after the first (DESIGN §1 training mask).

    Per item, `round(frame_ratio * (T - 1))` distinct frames among `1..T-1` are chosen (frame 0, the causal anchor, is
    never masked). Each chosen frame draws `u ~ U(0, 1)` and masks `max(1, round(cos(π/2 · u) · P))` of its `P`
    non-overlapping `patch_size`×`patch_size` patches, chosen at random (MaskGIT's cosine schedule). Masked pixels
    are set to 0 (mid-grey in [-1, 1]).

    Args:
        x (`torch.Tensor` of shape `(B, C, T, H, W)`): video, range [-1, 1]; `H` and `W` divisible by `patch_size`.
        frame_ratio (`float`): fraction of the frames after the first to mask, in `[0, 1]`.
        patch_size (`int`): side of the square masking patch, >= 1.
        generator (`torch.Generator` or `None`): source of randomness (CPU or `x`'s device); same seed → same mask.

    Returns:
        `masked_x` (`(B, C, T, H, W)`, `x`'s dtype; `x` itself when nothing is masked) and `mask`
        (`(B, 1, T, H, W)` bool, True = masked).
    """
    if x.ndim != 5:
        raise ValueError(f"mask_video expects (B, C, T, H, W), got shape {tuple(x.shape)}")
    if not 0.0 <= frame_ratio <= 1.0:
        raise ValueError(f"frame_ratio must lie in [0, 1], got {frame_ratio}")
    batch, _, frames, height, width = x.shape
    if patch_size < 1 or height % patch_size != 0 or width % patch_size != 0:
        raise ValueError(f"H, W = {(height, width)} must be divisible by patch_size={patch_size} (>= 1)")
    num_masked_frames = round(frame_ratio * (frames - 1))
    if num_masked_frames == 0:
        return x, torch.zeros(batch, 1, frames, height, width, dtype=torch.bool, device=x.device)

    device = generator.device if generator is not None else torch.device("cpu")
    grid_h, grid_w = height // patch_size, width // patch_size
    num_patches = grid_h * grid_w
    # Frames: the `num_masked_frames` lowest random scores among frames 1..T-1.
    frame_rank = torch.rand(batch, frames - 1, generator=generator, device=device).argsort(dim=1).argsort(dim=1)
    frame_chosen = torch.cat(
        [torch.zeros(batch, 1, dtype=torch.bool, device=device), frame_rank < num_masked_frames], dim=1
    )  # (B, T)
    # Patches: per frame, the `k` lowest random scores, k from the cosine schedule.
    ratio = torch.cos(math.pi / 2 * torch.rand(batch, frames, generator=generator, device=device))
    count = (ratio * num_patches).round().clamp(min=1)  # (B, T)
    patch_rank = torch.rand(batch, frames, num_patches, generator=generator, device=device).argsort(-1).argsort(-1)
    patch_mask = (patch_rank < count.unsqueeze(-1)) & frame_chosen.unsqueeze(-1)  # (B, T, P)
    mask = patch_mask.view(batch, 1, frames, grid_h, 1, grid_w, 1)
    mask = mask.expand(-1, -1, -1, -1, patch_size, -1, patch_size).reshape(batch, 1, frames, height, width)
    mask = mask.to(x.device)
    return x.masked_fill(mask, 0.0), mask


__all__ = [
    "FrozenCompanionModule",
    "ReconstructionLoss",
    "even_frame_indices",
    "mask_video",
    "saliency_weights",
]

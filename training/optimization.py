"""How trained parameters start and how fast each one moves: per-layer learning rates and the backbone's init.

Both exist for pretraining a Wan-architecture VAE from scratch (`task: backbone_vae`). With one AdamW learning rate
for every weight, its first steps move each weight by about that rate in the sign of its gradient; in a layer of
fan-in ~900 fed by SiLU outputs (mostly positive) those moves are coherent and add a constant of order 1 to every
pre-activation, the same for every input, and Wan's RMS norms (no mean subtraction) then scale the input-dependent
part down until the decoder's output no longer depends on its input (`benchmarks/backbone_trainability.py`,
evaluation/RESULTS.md). Scaling each weight's rate by 1/fan-in, as muP prescribes for Adam (Yang et al., *Tensor
Programs V*, 2022), keeps every layer's update of the same size whatever its width; starting every residual branch
as the identity and every bias at zero keeps the input's share of the activations near 1 at initialisation.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

LR_SCALINGS = ("none", "fan_in")
BACKBONE_INITS = ("default", "zero_bias_residual")


def fan_in(param: torch.Tensor) -> int:
    """Inputs per output of a weight `(out, in, *kernel)` (`in × prod(kernel)`); 0 for biases and gains (1-D)."""
    return param[0].numel() if param.dim() > 1 else 0


def optimizer_param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]], learning_rate: float, lr_scaling: str = "none",
    fan_in_lr: float = 0.03,
) -> list[dict]:
    """AdamW parameter groups for the trainable parameters.

    Args:
        named_params: `(name, parameter)` pairs; frozen ones (`requires_grad=False`) are left out.
        learning_rate: the rate of every parameter (`"none"`), or of biases and gains (`"fan_in"`).
        lr_scaling: `"none"` (one group) or `"fan_in"`: every weight of 2 or more dims gets `fan_in_lr / fan_in`.
        fan_in_lr: numerator of the fan-in rule (0.03: a 3×3×3 conv over 32 channels, fan-in 864, moves at 3.5e-5).

    Returns:
        A list of `{"params": [...], "lr": float}`, one per distinct rate, in first-seen order (deterministic, so a
        resumed run's optimizer state lines up with its groups). Learning-rate schedulers scale every group alike.
    """
    if lr_scaling not in LR_SCALINGS:
        raise ValueError(f"lr_scaling={lr_scaling!r}; expected one of {LR_SCALINGS}")
    if learning_rate <= 0 or fan_in_lr <= 0:
        raise ValueError(f"learning_rate={learning_rate} and fan_in_lr={fan_in_lr} must be > 0")
    groups: dict[float, list[nn.Parameter]] = {}
    for _name, param in named_params:
        if not param.requires_grad:
            continue
        size = fan_in(param) if lr_scaling == "fan_in" else 0
        groups.setdefault(fan_in_lr / size if size else learning_rate, []).append(param)
    return [{"params": params, "lr": lr} for lr, params in groups.items()]


@torch.no_grad()
def zero_bias_residual_init_(vae: nn.Module) -> nn.Module:
    """Re-initialise a diffusers `AutoencoderKLWan` in place so each block starts as the identity.

    Zeroes the last conv of every residual block, the output projection of every attention block, and every bias
    (convs and RMS norms). Weights of the other layers keep PyTorch's default initialisation. Returns `vae`.
    """
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanAttentionBlock, WanResidualBlock

    blocks = 0
    for module in vae.modules():
        if isinstance(module, WanResidualBlock):
            nn.init.zeros_(module.conv2.weight)
            blocks += 1
        elif isinstance(module, WanAttentionBlock):
            nn.init.zeros_(module.proj.weight)
            blocks += 1
    if blocks == 0:
        raise ValueError(f"{type(vae).__name__} has no Wan residual or attention blocks: not an AutoencoderKLWan")
    for name, param in vae.named_parameters():
        if name.endswith("bias"):
            nn.init.zeros_(param)
    return vae


__all__ = ["BACKBONE_INITS", "LR_SCALINGS", "fan_in", "optimizer_param_groups", "zero_bias_residual_init_"]

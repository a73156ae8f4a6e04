"""Per-layer learning rates and the identity-start backbone init used to pretrain a Wan VAE from scratch."""

import pytest
import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanAttentionBlock, WanResidualBlock
from torch import nn

from modeling_pyratok.configuration_pyratok import PRESETS
from pyratok.training.optimization import optimizer_param_groups, zero_bias_residual_init_


def _net() -> nn.Module:
    net = nn.Sequential(nn.Conv3d(4, 8, 3), nn.Flatten(), nn.Linear(8, 2), nn.LayerNorm(2))
    net[3].weight.requires_grad_(False)  # a frozen gain
    return net


def test_fan_in_scaling_gives_each_weight_its_rate_and_vectors_the_base_rate():
    net = _net()
    groups = optimizer_param_groups(net.named_parameters(), 1e-3, "fan_in", fan_in_lr=0.03)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert rate[id(net[0].weight)] == pytest.approx(0.03 / (4 * 27))
    assert rate[id(net[2].weight)] == pytest.approx(0.03 / 8)
    assert rate[id(net[0].bias)] == rate[id(net[2].bias)] == rate[id(net[3].bias)] == 1e-3
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert len(rate) == len(trainable) == sum(len(g["params"]) for g in groups)  # each once, frozen left out
    assert id(net[3].weight) not in rate
    assert len(groups) == 3  # one group per distinct rate


def test_no_scaling_is_one_group_at_the_base_rate():
    net = _net()
    (group,) = optimizer_param_groups(net.named_parameters(), 2e-4)
    assert group["lr"] == 2e-4 and len(group["params"]) == 5


def test_bad_scaling_arguments_are_rejected():
    with pytest.raises(ValueError, match="lr_scaling"):
        optimizer_param_groups(_net().named_parameters(), 1e-3, "sqrt")
    with pytest.raises(ValueError, match="fan_in_lr"):
        optimizer_param_groups(_net().named_parameters(), 1e-3, "fan_in", fan_in_lr=0.0)


def test_zero_bias_residual_init_starts_every_block_as_the_identity():
    torch.manual_seed(0)
    vae = zero_bias_residual_init_(AutoencoderKLWan(**PRESETS["tiny"]["backbone_config"]))
    assert all(not p.any() for n, p in vae.named_parameters() if n.endswith("bias"))
    residual = [m for m in vae.modules() if isinstance(m, WanResidualBlock)]
    attention = [m for m in vae.modules() if isinstance(m, WanAttentionBlock)]
    assert residual and attention
    same_width = next(m for m in residual if m.in_dim == m.out_dim)
    x = torch.randn(1, same_width.in_dim, 1, 8, 8)
    assert torch.equal(same_width(x), x)
    x = torch.randn(1, attention[0].dim, 1, 8, 8)
    assert torch.equal(attention[0](x), x)
    # The rest keeps its random weights: the autoencoder is not degenerate.
    video = torch.rand(1, 3, 1, 32, 32) * 2 - 1
    out = vae(video).sample
    assert out.shape == video.shape and out.std() > 0


def test_zero_bias_residual_init_rejects_other_models():
    with pytest.raises(ValueError, match="not an AutoencoderKLWan"):
        zero_bias_residual_init_(nn.Conv2d(3, 3, 3))

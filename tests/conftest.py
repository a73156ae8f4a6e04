"""Shared fixtures: a tiny seeded PyraTok and clips that are valid inputs for it."""

import pytest
import torch
import torch.nn as nn

from modeling_pyratok import AutoencoderPyraTok, PyraTokConfig, PyraTokModel


def tiny_config(**overrides) -> PyraTokConfig:
    return PyraTokConfig.from_preset("tiny", **overrides)


def make_video(batch: int = 1, frames: int = 9, size: int = 64, seed: int = 0) -> torch.Tensor:
    """A smooth random clip `(B, 3, T, H, W)` in [-1, 1] (smooth so features are not pure noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, frames, size // 8, size // 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(frames, size, size), mode="trilinear").clamp(-1, 1)


def activate_text_attention(model: nn.Module, seed: int = 0, std: float = 0.5) -> None:
    """Give every (zero-initialised) text cross-attention output projection non-zero weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.MultiheadAttention):
                module.out_proj.weight.copy_(torch.randn(module.out_proj.weight.shape, generator=g) * std)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (restored after): tiny convolutions only pay for threads on a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_model() -> PyraTokModel:
    torch.manual_seed(0)
    return PyraTokModel(tiny_config()).eval()


@pytest.fixture
def tiny_vae() -> AutoencoderPyraTok:
    torch.manual_seed(0)
    return AutoencoderPyraTok(**tiny_config().to_init_kwargs()).eval()


@pytest.fixture
def video() -> torch.Tensor:
    return make_video()

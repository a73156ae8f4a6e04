"""The full-size presets build and run on a small clip (random weights: nothing is downloaded)."""

import pytest
import torch

from modeling_pyratok import PyraTokConfig, PyraTokModel


def _clip(size: int, frames: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, frames, size, size, generator=g) * 2 - 1


def test_wan21_preset_forward_on_a_small_clip():
    torch.manual_seed(0)
    model = PyraTokModel(PyraTokConfig.from_preset("wan2.1")).eval()
    with torch.no_grad():
        out = model(pixel_values=_clip(64), return_loss=True)
    assert [tuple(i.shape) for i in out.ids] == [(1, 2, 8, 8), (1, 2, 4, 4), (1, 2, 2, 2), (1, 2, 1, 1)]
    assert out.latent.shape == (1, 16, 2, 8, 8)
    assert out.reconstruction.shape == (1, 3, 5, 64, 64)
    assert torch.isfinite(out.loss)


def test_wan22_preset_tokenizes_a_small_clip():
    torch.manual_seed(0)
    model = PyraTokModel(PyraTokConfig.from_preset("wan2.2")).eval()
    tokens = model.tokenize(_clip(128))
    # Wan 2.2: 2x2 patchify + 8x encoder = 16x spatial; level grids 8, 4, 2, 1.
    assert [tuple(i.shape) for i in tokens.ids] == [(1, 2, 8, 8), (1, 2, 4, 4), (1, 2, 2, 2), (1, 2, 1, 1)]
    assert tokens.latent_size == (2, 8, 8)


@pytest.mark.slow
def test_wan22_preset_full_forward():
    torch.manual_seed(0)
    model = PyraTokModel(PyraTokConfig.from_preset("wan2.2")).eval()
    with torch.no_grad():
        out = model(pixel_values=_clip(128), return_loss=True)
    assert out.latent.shape == (1, 48, 2, 8, 8)
    assert out.reconstruction.shape == (1, 3, 5, 128, 128)
    assert torch.isfinite(out.loss)

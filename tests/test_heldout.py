"""Held-out validation of the trainer: PSNR per causal chunk, so losses in chunks a model never trained on show."""

import math
from types import SimpleNamespace

import datasets
import pytest
import torch
from diffusers import AutoencoderKLWan
from torch import nn

from modeling_pyratok.configuration_pyratok import PRESETS
from pyratok.quality import chroma
from pyratok.training.data import VideoClipStream, VideoDataConfig
from pyratok.training.heldout import evaluate_reconstruction, psnr_by_chunk, temporal_factor


def test_psnr_by_chunk_pools_each_chunk():
    error = torch.tensor([0.04] + [0.01] * 4 + [0.16] * 4, dtype=torch.float64)  # one clip of 9 frames
    out = psnr_by_chunk(error, torch.ones(9, dtype=torch.float64), chunk=4)
    assert list(out) == ["psnr_frames_0", "psnr_frames_1-4", "psnr_frames_5-8"]
    assert out["psnr_frames_0"] == pytest.approx(20.0)
    assert out["psnr_frames_1-4"] == pytest.approx(10 * math.log10(400))
    assert out["psnr_frames_5-8"] == pytest.approx(10 * math.log10(25))


class LaterChunksOff(nn.Module):
    """A stand-in VAE: exact on frames 0-4, off by 0.2 everywhere on the frames after."""

    config = SimpleNamespace(temperal_downsample=[False, True, True])

    def forward(self, x, sample_posterior=False):
        y = x.clone()
        y[:, :, 5:] += 0.2
        return SimpleNamespace(sample=y)


def test_validation_reports_the_chunks_apart():
    generator = torch.Generator().manual_seed(0)
    batches = iter([{"pixel_values": torch.rand(2, 3, 9, 16, 16, generator=generator) * 1.6 - 0.8}] * 2)
    metrics = evaluate_reconstruction(LaterChunksOff(), batches, num_batches=2, device=torch.device("cpu"))
    assert metrics["clips"] == 4
    assert metrics["psnr_frames_0"] == metrics["psnr_frames_1-4"] == float("inf")
    assert metrics["psnr_frames_5-8"] == pytest.approx(10 * math.log10(4 / 0.04), abs=1e-3)
    # An offset shared by R, G and B changes no colour: the output's chroma is the data's.
    assert metrics["chroma"] == pytest.approx(metrics["data_chroma"], rel=1e-5) and metrics["data_chroma"] > 0.1
    rest = iter([{"pixel_values": torch.zeros(1, 3, 5, 16, 16)}] * 3)
    assert evaluate_reconstruction(LaterChunksOff(), rest, num_batches=None, device=torch.device("cpu"))["clips"] == 3
    with pytest.raises(ValueError, match="no batches"):
        evaluate_reconstruction(LaterChunksOff(), iter([]), num_batches=None, device=torch.device("cpu"))
    # The trainer's stream never ends: without a batch count the pass would hang, so it is refused up front.
    endless = VideoClipStream(
        VideoDataConfig(data_files=["unused/*.tar"], num_frames=[5], resolutions=[[16, 16]], batch_size=1),
        dataset=datasets.IterableDataset.from_generator(lambda: iter([])),
    )
    with pytest.raises(ValueError, match="repeats its data forever"):
        evaluate_reconstruction(LaterChunksOff(), endless, num_batches=None, device=torch.device("cpu"))


def test_chroma_is_zero_for_grey_and_the_mean_colour_distance_otherwise():
    grey = torch.rand(2, 1, 3, 8, 8).expand(2, 3, 3, 8, 8)
    assert chroma(grey) == pytest.approx(0.0, abs=1e-7)
    red = torch.tensor([0.6, 0.0, -0.3]).view(1, 3, 1, 1, 1).expand(1, 3, 2, 4, 4)  # channel mean 0.1
    assert chroma(red) == pytest.approx((0.5 + 0.1 + 0.4) / 3)


def test_temporal_factor_reads_the_model():
    assert temporal_factor(AutoencoderKLWan(**PRESETS["tiny"]["backbone_config"])) == 4
    assert temporal_factor(nn.Linear(2, 2)) is None

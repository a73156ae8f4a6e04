"""Invariants found by the mutation run over `pyratok/` and `training/` (benchmarks/MUTATION.md): each test fails on
one surviving mutant and asserts a value computed independently."""

import types

import pytest
import torch

from modeling_pyratok import PyraTokConfig, PyraTokModel
from pyratok.cli import model_fingerprint
from pyratok.quality import ssim
from pyratok.training.heads import DEFAULT_EMBED_STD, _embed_std
from pyratok.video_io import resize_and_crop


def test_fingerprint_ignores_loss_weights_and_training_only_fields_but_not_the_architecture():
    torch.manual_seed(0)
    model = PyraTokModel(PyraTokConfig.from_preset("tiny")).eval()
    base = model_fingerprint(model)

    def with_config(**changes):
        config = PyraTokConfig.from_preset("tiny", **{**model.config.to_init_kwargs(), **changes})
        return model_fingerprint(types.SimpleNamespace(config=config, state_dict=model.state_dict))

    # A loss weight and a training-only field do not change what the tokens mean (cli.py: `and`, not `or`).
    assert with_config(recon_weight=model.config.recon_weight + 1.0) == base
    assert with_config(text_dropout=0.5) == base
    assert with_config(bit_inverse_temperature=2.0) != base  # decides the codes: part of the fingerprint


def test_ssim_matches_skimage_on_low_contrast_images_where_the_constants_dominate():
    """Dark (near -1, i.e. near 0 once shifted) and flat images: local means² and variances are comparable to C1 =
    (0.01 · 2)² and C2 = (0.03 · 2)², so a wrong power of either constant (pyratok/quality.py) moves SSIM far from
    skimage's."""
    metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(0)
    x = -0.99 + 0.01 * torch.rand(1, 3, 24, 24, generator=g)
    y = x + 0.01 * torch.rand(1, 3, 24, 24, generator=g)
    reference = metrics.structural_similarity(
        (x[0].double().numpy() + 1) / 2, (y[0].double().numpy() + 1) / 2, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=1.0, channel_axis=0,
    )
    assert 0.5 < reference < 0.999  # the constants matter here
    assert abs(ssim(x, y).item() - reference) < 1e-4


def test_resize_and_crop_scales_the_short_side_exactly_then_centre_crops():
    """A 128 x 192 frame to 64 x 64: scaled by 1/2 to 64 x 96 (not 64 x 95), then columns 16..80."""
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(3, 2, 128, 192, generator=g) * 2 - 1
    scaled = torch.nn.functional.interpolate(frames.transpose(0, 1), size=(64, 96), mode="bilinear",
                                             align_corners=False, antialias=True).transpose(0, 1)
    torch.testing.assert_close(resize_and_crop(frames, 64, 64), scaled[..., 16:80], atol=1e-6, rtol=0)
    tall = frames.transpose(-1, -2).contiguous()  # 192 x 128: the height is the long side now
    scaled = torch.nn.functional.interpolate(tall.transpose(0, 1), size=(96, 64), mode="bilinear",
                                             align_corners=False, antialias=True).transpose(0, 1)
    torch.testing.assert_close(resize_and_crop(tall, 64, 64), scaled[..., 16:80, :], atol=1e-6, rtol=0)


def test_embed_std_falls_back_when_the_model_has_no_input_embeddings():
    class NoEmbeddings(torch.nn.Module):
        def get_input_embeddings(self):
            return None

    assert _embed_std(NoEmbeddings()) == DEFAULT_EMBED_STD
    assert _embed_std(torch.nn.Linear(2, 2)) == DEFAULT_EMBED_STD  # no get_input_embeddings at all

    class WeightlessEmbeddings(torch.nn.Module):
        def get_input_embeddings(self):
            return torch.nn.Identity()  # an embedding module without a weight table

    assert _embed_std(WeightlessEmbeddings()) == DEFAULT_EMBED_STD

    class WithEmbeddings(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(5000, 4)

        def get_input_embeddings(self):
            return self.embed

    model = WithEmbeddings()
    assert _embed_std(model) == pytest.approx(float(model.embed.weight[:4096].std()))


def test_vgg_lpips_takes_the_smallest_frames_its_pooling_allows():
    """VGG's four 2x poolings leave one pixel of a 16 x 16 frame (measured: LPIPS_MIN_SIZE["vgg"] = 16)."""
    from pyratok.training.losses import ReconstructionLoss

    loss = ReconstructionLoss(ssim_weight=0.0, lpips_net="vgg", lpips_pretrained_backbone=False).eval()
    x = torch.rand(1, 3, 2, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.isfinite(loss(x, x.flip(-1))["lpips"])
    with pytest.raises(ValueError, match="H, W >= 16"):
        loss(x[..., :15, :15], x[..., :15, :15])


def test_training_card_states_the_bits_per_pixel_of_its_training_clips(tmp_path):
    """The card's bits / pixel for the recipe's first clip size equals `PyraTokModel.bits_per_pixel` (a second
    implementation, through the backbone's own latent size)."""
    from pyratok.training.config import TrainConfig
    from pyratok.training.model_card import write_training_model_card

    model_config = PyraTokConfig.from_preset("tiny")
    config = TrainConfig(data={"data_files": ["x.tar"], "num_frames": [5], "resolutions": [[64, 64]]})
    write_training_model_card(tmp_path / "README.md", model_config, config, {"steps": 1, "wall_time_s": 1.0})
    expected = PyraTokModel(model_config).bits_per_pixel(64, 64, 5)
    assert f"{expected:.4f} (5x64x64 clips)" in (tmp_path / "README.md").read_text()

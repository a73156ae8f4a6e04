"""Values pinned for the survivors of the issue 26 mutation run: the Wan 2.2 latent statistics, the AR head's crop
range, the CRF's cache-free appearance weights on two frames, the streamed decode's clamp, pyratok-eval --size."""

import math
import sys
from decimal import Decimal

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import pyratok.evaluation.crf as crf
from modeling_pyratok import PyraTokConfig
from modeling_pyratok.backbone_pyratok import PyraTokBackbone
from modeling_pyratok.configuration_pyratok import WAN22_BACKBONE_CONFIG
from pyratok.evaluation.cli import build_parser, main
from pyratok.training.heads import PyraTokARHead

# ---- Wan 2.2 latent statistics -----------

# Read off the official Wan 2.2 code, github.com/Wan-Video/Wan2.2, wan/modules/vae2_2.py, `Wan2_2_VAE.__init__`
# (commit bf69229, Apache-2.0): the 48 per-channel `mean` and `std` tensors. The sums and the position-weighted sums
# (sum of (i + 1) * x_i) were computed from that listing with exact decimals; the weighted sum changes when a value
# moves to another channel, the plain sum when one value changes.
WAN22_OFFICIAL = {
    "latents_mean": {"sum": "-0.5589", "weighted": "-7.6248", 0: "-0.2289", 4: "-0.2799", 19: "0.5109", 47: "-0.0667"},
    "latents_std": {"sum": "32.5360", "weighted": "790.8891", 0: "0.4765", 21: "1.4146", 39: "1.6887", 47: "0.7744"},
}


def test_wan22_latent_statistics_match_the_official_vae():
    config = PyraTokConfig.from_preset("wan2.2")
    assert config.z_dim == 48
    for name, pinned in WAN22_OFFICIAL.items():
        values = [Decimal(repr(v)) for v in WAN22_BACKBONE_CONFIG[name]]
        assert len(values) == 48, name
        assert sum(values) == Decimal(pinned["sum"]), name
        assert sum((i + 1) * v for i, v in enumerate(values)) == Decimal(pinned["weighted"]), name
        for index in (k for k in pinned if isinstance(k, int)):
            assert values[index] == Decimal(pinned[index]), (name, index)
    assert config.latents_mean == WAN22_BACKBONE_CONFIG["latents_mean"]
    assert config.latents_std == WAN22_BACKBONE_CONFIG["latents_std"]


# ---- AR head: the random crop's range -----------

# Levels of (T', H, W) = (1, 2, 2), (1, 1, 1), (1, 1, 1): the visual sequence is
#   0 <SOI> | 1-4 level-1 tokens | 5 <Q-SEP> | 6 level-2 token | 7 <Q-SEP> | 8 level-3 token   (V = 9 positions).
CROP_LEVELS = ((1, 2, 2), (1, 1, 1), (1, 1, 1))
CROP_IS_TOKEN = [False, True, True, True, True, False, True, False, True]
CROP_MAX = 5  # so the window starts at 0 .. V - 5 = 4: five starts


def _tiny_ar_head(max_ar_tokens: int) -> PyraTokARHead:
    torch.manual_seed(0)
    lm = LlamaForCausalLM(
        LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                    num_key_value_heads=1, vocab_size=8, max_position_embeddings=64)
    )
    return PyraTokARHead(lm, codebook_dim=4, text_embed_dim=4, num_levels=3, max_ar_tokens=max_ar_tokens)


def test_ar_crop_reaches_every_start_and_none_beyond(monkeypatch):
    head = _tiny_ar_head(CROP_MAX)
    g = torch.Generator().manual_seed(0)
    codes = [torch.randn(1, 4, *shape, generator=g).sign() for shape in CROP_LEVELS]
    draws: list[tuple[int, int]] = []
    real_randint = torch.randint

    def recording_randint(high, size, **kwargs):
        start = real_randint(high, size, **kwargs)
        draws.append((high, int(start)))
        return start

    monkeypatch.setattr(torch, "randint", recording_randint)
    seen = set()
    for seed in range(40):
        draws.clear()
        losses = head(codes, generator=torch.Generator().manual_seed(seed), reduction="none")
        (high, start), = draws
        assert high == len(CROP_IS_TOKEN) - CROP_MAX + 1 == 5
        # Scored: the window's visual tokens after its first position (each predicted from the one before).
        window = CROP_IS_TOKEN[start : start + CROP_MAX]
        assert len(window) == CROP_MAX
        assert losses.shape == (1, sum(window[1:]))
        seen.add(start)
    assert seen == {0, 1, 2, 3, 4}
    # A sequence of exactly max_ar_tokens positions is not cropped: no draw, every token after the first scored
    # (the LM's hidden size, 16, exceeds the cap, so a test on the wrong dimension would crop).
    draws.clear()
    whole = _tiny_ar_head(len(CROP_IS_TOKEN))(codes, generator=torch.Generator().manual_seed(0), reduction="none")
    assert draws == [] and whole.shape == (1, sum(CROP_IS_TOKEN[1:])) == (1, 6)


# ---- CRF: the cache-free appearance message on two frames -----------


def test_crf_two_frames_by_hand_with_and_without_the_weight_cache(monkeypatch):
    # One pixel per frame, window 0: each frame's only appearance neighbour is the other frame, at |Δt| = 1.
    probs = torch.tensor([0.3, 0.9]).view(2, 1, 1)
    video = torch.zeros(3, 2, 1, 1)
    video[:, 1] = 0.1
    kwargs = dict(n_iters=1, window=0, temporal_window=1, theta_time=1.0, theta_beta=20.0, w_appearance=4.0)
    # Colours in 8-bit units over θβ: a 0.1 step in [-1, 1] is 12.75 levels, 0.6375 θβ per channel, 3 channels.
    colour = math.exp(-0.5 * 3 * (0.1 * 127.5 / 20.0) ** 2)
    k = math.exp(-1 / 2) * colour  # temporal Gaussian at Δt = 1 times the colour Gaussian, both directions
    z = 2 * math.exp(-1 / 2)  # the kernel's sum over the full window: the frames before and after, self excluded
    p = [0.3, 0.9]
    expected = [
        1 / (1 + math.exp(-(math.log(p[t] / (1 - p[t])) + 4.0 * k * (2 * p[1 - t] - 1) / z))) for t in range(2)
    ]
    cached = crf.dense_crf_3d(probs, video, **kwargs)
    torch.testing.assert_close(cached.flatten(), torch.tensor(expected), rtol=0, atol=1e-6)
    monkeypatch.setattr(crf, "WEIGHT_CACHE_BYTES", 0)  # the path large videos take: weights recomputed per pair
    torch.testing.assert_close(crf.dense_crf_3d(probs, video, **kwargs).flatten(), torch.tensor(expected),
                               rtol=0, atol=1e-6)


# ---- Backbone: streamed decode clamps like decode -----------

@torch.no_grad()
def test_streamed_decode_of_overshooting_latents_is_clamped_like_decode():
    torch.manual_seed(0)
    backbone = PyraTokBackbone(PyraTokConfig.from_preset("tiny").backbone_config, lora_rank=0).eval()
    # The decoder ends in a normalisation and a conv: a 100x larger output conv drives it far past [-1, 1], so the
    # clamp is what bounds the frames.
    backbone.vae.decoder.conv_out.weight.mul_(100.0)
    backbone.vae.decoder.conv_out.bias.mul_(100.0)
    latent = torch.randn(1, backbone.z_dim, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    reference = backbone.vae.decode(latent).sample  # diffusers' AutoencoderKLWan decode, which clamps to [-1, 1]
    streamed = torch.cat(list(backbone.iter_decode(latent.split(1, dim=2))), dim=2)
    assert streamed.max() == 1.0 and streamed.min() == -1.0  # both bounds reached, none exceeded
    torch.testing.assert_close(streamed, reference, rtol=0, atol=1e-5)


# ---- pyratok-eval --size -----------

def test_eval_size_option_reads_size_and_height_by_width(capsys):
    parser = build_parser("reconstruction", lambda group: None)

    def size(text: str):
        return parser.parse_args(["--data", "d", "--size", text]).size

    assert size("64") == 64
    assert size("48x80") == (48, 80) and size("48X80") == (48, 80) and size("48,80") == (48, 80)
    for bad in ("48x80x3", "wide"):
        with pytest.raises(SystemExit):
            size(bad)
        assert f"expected SIZE or HxW, got {bad!r}" in capsys.readouterr().err


def test_eval_main_reads_the_command_line_after_the_program_name(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["pyratok-eval", "--help"])
    assert main() == 0 and "reconstruction" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["pyratok-eval", "nosuchtask"])
    assert main() == 2 and "unknown task 'nosuchtask'" in capsys.readouterr().err


# ---- CRF input range -----------

def test_crf_accepts_video_within_rounding_of_the_range_and_rejects_beyond():
    probs = torch.full((1, 2, 2), 0.5)
    for value in (1.0005, -1.0005):  # within the 1e-3 tolerance for float rounding: clamped, accepted
        assert crf.dense_crf_3d(probs, torch.full((3, 1, 2, 2), value), n_iters=1).shape == (1, 2, 2)
    for value in (1.01, -1.01, 1.5, -1.5):
        with pytest.raises(ValueError, match=r"video must be finite and in \[-1, 1\]"):
            crf.dense_crf_3d(probs, torch.full((3, 1, 2, 2), value))

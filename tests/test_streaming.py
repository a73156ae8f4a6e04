"""Streaming (causal-chunk) encode/decode: piece by piece equals whole-clip results (DESIGN §6, tiny presets, CPU)."""

import itertools

import pytest
import torch

from modeling_pyratok import AutoencoderPyraTok, PyraTokModel, PyraTokTokens
from modeling_pyratok.backbone_pyratok import PyraTokBackbone, encoder_stage_taps
from modeling_pyratok.text_encoder_pyratok import PyraTokTextEncoder
from tests.conftest import activate_text_attention, make_video, tiny_config

FRAME_COUNTS = (1, 5, 13, 17)


def randomize_lora(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-zero LoRA B weights, so the adapters' causal cache path is exercised too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.1)


def cat_ids(pieces: list[PyraTokTokens]) -> list[torch.Tensor]:
    return [torch.cat(level, dim=1) for level in zip(*(p.ids for p in pieces), strict=True)]


@pytest.fixture(scope="module")
def backbone() -> PyraTokBackbone:
    torch.manual_seed(0)
    bb = PyraTokBackbone(tiny_config().backbone_config).eval()
    randomize_lora(bb)
    return bb


@pytest.fixture(scope="module")
def patchified_backbone() -> PyraTokBackbone:
    """A tiny Wan 2.2-style backbone: 2x2 patchify, residual blocks, 16x spatial compression."""
    config = dict(
        tiny_config().backbone_config,
        is_residual=True,
        patch_size=2,
        in_channels=12,
        out_channels=12,
        decoder_base_dim=8,
        scale_factor_spatial=16,
    )
    torch.manual_seed(0)
    bb = PyraTokBackbone(config).eval()
    randomize_lora(bb)
    return bb


@pytest.fixture(scope="module")
def model() -> PyraTokModel:
    torch.manual_seed(0)
    m = PyraTokModel(tiny_config()).eval()
    activate_text_attention(m)
    randomize_lora(m)
    return m


# ---- backbone -----------------------------------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("frames", FRAME_COUNTS)
@pytest.mark.parametrize("chunks_per_step", [1, 2])
def test_streamed_features_concatenate_to_encode_features(backbone, frames, chunks_per_step):
    clip = make_video(batch=2, frames=frames, seed=frames)
    whole = backbone.encode_features(clip)
    pieces = list(backbone.iter_encode_features(clip, chunks_per_step=chunks_per_step))
    latent_frames = (frames - 1) // 4 + 1
    assert [p.moments.shape[2] for p in pieces] == [1] + [
        min(chunks_per_step, latent_frames - 1 - i) for i in range(0, latent_frames - 1, chunks_per_step)
    ]
    for i, feature in enumerate(whole.features):
        assert torch.allclose(torch.cat([p.features[i] for p in pieces], dim=2), feature, atol=1e-5)
    assert torch.allclose(torch.cat([p.moments for p in pieces], dim=2), whole.moments, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("frames", FRAME_COUNTS)
def test_streamed_decode_concatenates_to_decode(backbone, frames):
    latent = torch.randn(2, 4, (frames - 1) // 4 + 1, 8, 8, generator=torch.Generator().manual_seed(frames))
    whole = backbone.decode(latent)
    pieces = list(backbone.iter_decode(latent.split(1, dim=2)))
    assert [p.shape[2] for p in pieces] == [1] + [4] * (latent.shape[2] - 1)
    streamed = torch.cat(pieces, dim=2)
    assert streamed.shape == whole.shape and streamed.abs().max() <= 1
    assert torch.allclose(streamed, whole, atol=1e-5)
    # Pieces of several latent frames (the first one included) decode the same.
    assert torch.allclose(torch.cat(list(backbone.iter_decode(latent.split(2, dim=2))), dim=2), whole, atol=1e-5)


@torch.no_grad()
def test_streaming_works_with_a_patchified_residual_backbone(patchified_backbone):
    bb = patchified_backbone
    clip = make_video(frames=9, size=64)
    whole = bb.encode_features(clip)
    pieces = list(bb.iter_encode_features(clip))
    for i, feature in enumerate(whole.features):
        assert torch.allclose(torch.cat([p.features[i] for p in pieces], dim=2), feature, atol=1e-5)
    latent = whole.moments[:, : bb.z_dim]
    decoded = torch.cat(list(bb.iter_decode(latent.split(1, dim=2))), dim=2)
    assert decoded.shape == clip.shape  # unpatchified back to (B, 3, T, H, W)
    assert torch.allclose(decoded, bb.decode(latent), atol=1e-5)


@torch.no_grad()
def test_streams_hold_no_hooks_or_shared_cache_between_pieces(backbone):
    """An encoder stream, a decoder stream and whole-clip calls can interleave without disturbing one another."""
    clip = make_video(frames=13, seed=5)
    expected = backbone.encode_features(clip)
    latent = expected.moments[:, :4]
    expected_video = backbone.decode(latent)
    taps = encoder_stage_taps(backbone.vae.encoder)
    enc_pieces, dec_pieces = [], []
    decoder = backbone.iter_decode(latent.split(1, dim=2))
    for piece in backbone.iter_encode_features(clip):
        assert all(not tap._forward_hooks for tap in taps)
        enc_pieces.append(piece)
        dec_pieces.append(next(decoder))
        backbone.encode_features(make_video(frames=5, seed=9))  # clears the vae's own caches in between
        backbone.decode(latent[:, :, :2])
    assert next(decoder, None) is None
    assert torch.allclose(torch.cat([p.moments for p in enc_pieces], dim=2), expected.moments, atol=1e-5)
    assert torch.allclose(torch.cat(dec_pieces, dim=2), expected_video, atol=1e-5)


def test_bad_stream_pieces_raise(backbone):
    clip = make_video(frames=9)
    with pytest.raises(ValueError, match="frame 0 alone"):
        list(backbone.encode_feature_stream([clip[:, :, :5]]))
    with pytest.raises(ValueError, match="multiple of 4"):
        list(backbone.encode_feature_stream([clip[:, :, :1], clip[:, :, 1:4]]))
    with pytest.raises(ValueError, match="chunks_per_step"):
        backbone.iter_encode_features(clip, chunks_per_step=0)
    with pytest.raises(ValueError, match="z_dim=4"):
        list(backbone.iter_decode([torch.zeros(1, 3, 1, 8, 8)]))
    with pytest.raises(ValueError, match="earlier pieces"):
        list(backbone.iter_decode([torch.zeros(1, 4, 1, 8, 8), torch.zeros(1, 4, 1, 16, 16)]))


# ---- model --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", FRAME_COUNTS)
@pytest.mark.parametrize("text", [None, "a red square jumps over a blue line"])
def test_iter_tokenize_ids_equal_tokenize_ids(model, frames, text):
    clip = make_video(frames=frames, seed=frames)
    whole = model.tokenize(clip, text=text)
    for k in (1, 2):
        pieces = list(model.iter_tokenize(clip, text=text, chunk_latent_frames=k))
        assert pieces[0].latent_size == (1, 8, 8)
        assert all(p.ids[0].shape[1] <= k for p in pieces[1:])
        assert all(torch.equal(a, b) for a, b in zip(cat_ids(pieces), whole.ids, strict=True))


@pytest.mark.parametrize("frames", (5, 13))
def test_strided_lateral_streams_exactly(frames):
    """The strided-conv lateral sees a later piece as whole frame groups; its ids equal the whole clip's."""
    torch.manual_seed(0)
    model = PyraTokModel(tiny_config(lateral_pooling="strided_conv")).eval()
    activate_text_attention(model)
    clip = make_video(frames=frames, seed=frames)
    whole = model.tokenize(clip, text="a red square jumps")
    for k in (1, 2):
        pieces = list(model.iter_tokenize(clip, text="a red square jumps", chunk_latent_frames=k))
        assert len(pieces) > 1
        assert all(torch.equal(a, b) for a, b in zip(cat_ids(pieces), whole.ids, strict=True))


def test_text_matters_and_per_item_prompts_stream_exactly(model):
    clip = make_video(batch=2, frames=9, seed=4)
    text = ["a cat sleeps", None]
    whole = model.tokenize(clip, text=text)
    assert not torch.equal(whole.ids[0][0], model.tokenize(clip, text=None).ids[0][0])  # the prompt changes tokens
    streamed = cat_ids(list(model.iter_tokenize(clip, text=text)))
    assert all(torch.equal(a, b) for a, b in zip(streamed, whole.ids, strict=True))


def test_text_is_encoded_once_per_stream(model, monkeypatch):
    calls = []
    original = PyraTokTextEncoder.__call__

    def counting(self, texts, device):
        calls.append(list(texts))
        return original(self, texts, device)

    monkeypatch.setattr(PyraTokTextEncoder, "__call__", counting)
    pieces = list(model.iter_tokenize(make_video(frames=17), text="a prompt"))
    assert len(pieces) == 5 and calls == [["a prompt"]]


def test_iter_tokenize_accepts_runs_of_frames(model):
    clip = make_video(frames=17, seed=2)
    whole = model.tokenize(clip, text="waves")
    for sizes in ([17], [1] * 17, [3, 7, 2, 5], [1, 4, 4, 4, 4]):
        runs = iter(clip.split(sizes, dim=2))
        pieces = list(model.iter_tokenize(runs, text="waves", chunk_latent_frames=2))
        assert [p.ids[0].shape[1] for p in pieces] == [1, 2, 2]
        assert all(torch.equal(a, b) for a, b in zip(cat_ids(pieces), whole.ids, strict=True))


def test_residual_mode_streams_exactly():
    torch.manual_seed(0)
    m = PyraTokModel(tiny_config(quantizer_mode="residual", codebook_dim=4, lora_rank=0)).eval()
    clip = make_video(frames=13, seed=7)
    whole = m.tokenize(clip)
    streamed = cat_ids(list(m.iter_tokenize(clip, chunk_latent_frames=2)))
    assert all(torch.equal(a, b) for a, b in zip(streamed, whole.ids, strict=True))
    video = torch.cat(list(m.iter_detokenize(whole)), dim=2)
    assert torch.allclose(video, m.detokenize(whole), atol=1e-5)


@pytest.mark.parametrize("frames", [1, 13])
def test_iter_detokenize_matches_detokenize_and_ignores_the_cut(model, frames):
    clip = make_video(frames=frames, seed=3)
    tokens = model.tokenize(clip, text="a dog")
    whole = model.detokenize(tokens)
    by_frame = list(model.iter_detokenize(tokens))
    assert [v.shape[2] for v in by_frame] == [1] + [4] * (tokens.ids[0].shape[1] - 1)
    streamed = torch.cat(by_frame, dim=2)
    assert torch.allclose(streamed, whole, atol=1e-5)
    # Every cut of the tokens decodes to bit-identical frames (the fusion runs per latent frame).
    assert torch.equal(torch.cat(list(model.iter_detokenize(tokens, chunk_latent_frames=3)), dim=2), streamed)
    assert torch.equal(torch.cat(list(model.iter_detokenize(tokens.ids)), dim=2), streamed)
    pieces = model.iter_tokenize(clip, text="a dog", chunk_latent_frames=2)
    assert torch.equal(torch.cat(list(model.iter_detokenize(pieces)), dim=2), streamed)
    # Pieces given as plain lists of level ids.
    pieces = [p.ids for p in model.iter_tokenize(clip, text="a dog")]
    assert torch.equal(torch.cat(list(model.iter_detokenize(iter(pieces))), dim=2), streamed)


def test_images_stream_as_one_frame(model):
    images = make_video(batch=2, frames=1, seed=6)[:, :, 0]
    pieces = list(model.iter_tokenize(images))
    assert len(pieces) == 1 and pieces[0].is_image
    assert all(torch.equal(a, b) for a, b in zip(pieces[0].ids, model.tokenize(images).ids, strict=True))
    (decoded,) = list(model.iter_detokenize(iter(pieces)))
    assert decoded.shape == images.shape
    assert torch.allclose(decoded, model.detokenize(pieces[0]), atol=1e-5)


def test_streaming_runs_without_gradients(model):
    clip = make_video(frames=5).requires_grad_(True)
    (first, *_) = list(model.iter_detokenize(model.iter_tokenize(clip)))
    assert not first.requires_grad


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.iter_tokenize(make_video(frames=6)), "T=6"),
        (lambda m: m.iter_tokenize(make_video(frames=5) * 3), r"\[-1, 1\]"),
        (lambda m: m.iter_tokenize(make_video(frames=5, size=72)), "multiples of 64"),
        (lambda m: m.iter_tokenize(make_video(frames=5), chunk_latent_frames=0), "chunk_latent_frames"),
        (lambda m: m.iter_tokenize(make_video(frames=5), text=""), "empty"),
        (lambda m: m.iter_tokenize(iter([])), "no frames"),
        (lambda m: m.iter_detokenize([torch.zeros(1, 1, 8, 8, dtype=torch.long)]), "4 id tensors"),
    ],
)
def test_bad_input_raises_before_streaming(model, call, message):
    with pytest.raises(ValueError, match=message):
        call(model)


def test_bad_runs_raise_when_reached(model):
    clip = make_video(frames=9)
    with pytest.raises(ValueError, match="T=8"):
        list(model.iter_tokenize(iter([clip[:, :, :5], clip[:, :, 5:8]])))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        list(model.iter_tokenize(iter([clip[:, :, :5], make_video(frames=4, size=128)])))
    with pytest.raises(ValueError, match=r"pixel_values\[1\]"):
        list(model.iter_tokenize(iter([clip[:, :, :5], clip[:, :, 5:] * 2])))
    tokens = model.tokenize(clip)
    bad = [itertools.islice(tokens.ids, 4)]  # a piece that is neither PyraTokTokens nor a list of tensors
    with pytest.raises(ValueError, match="token piece"):
        list(model.iter_detokenize(bad))


# ---- diffusers class ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vae(model) -> AutoencoderPyraTok:
    """The `model` fixture's weights (text attention active, random LoRA) as the diffusers class."""
    vae = AutoencoderPyraTok(**model.config.to_init_kwargs()).eval()
    vae.load_state_dict(model.state_dict())
    return vae


@pytest.mark.parametrize("frames", (1, 13))
def test_autoencoder_streams_ids_and_frames_exactly(vae, frames):
    clip = make_video(frames=frames, seed=frames)
    whole = vae.encode_to_ids(clip, text="a red square jumps")
    for k in (1, 2):
        pieces = list(vae.iter_encode_to_ids(clip, text="a red square jumps", chunk_latent_frames=k))
        assert all(isinstance(p, list) and len(p) == len(whole) for p in pieces)
        assert all(torch.equal(torch.cat(level, dim=1), w) for level, w in zip(zip(*pieces), whole, strict=True))
    decoded = vae.decode_from_ids(whole)
    streamed = list(vae.iter_decode_from_ids(whole))
    assert [v.shape[2] for v in streamed] == [1] + [4] * (whole[0].shape[1] - 1)
    assert torch.allclose(torch.cat(streamed, dim=2), decoded, atol=1e-5)
    # A stream of pieces, decoded as it is produced, from runs of frames as a file reader yields them.
    runs = iter(clip.split([1] * frames, dim=2))
    pieces = vae.iter_encode_to_ids(runs, text="a red square jumps", chunk_latent_frames=2)
    assert torch.allclose(torch.cat(list(vae.iter_decode_from_ids(pieces)), dim=2), decoded, atol=1e-5)


def test_autoencoder_stream_errors_name_its_input(vae):
    with pytest.raises(ValueError, match=r"x has T=6"):
        vae.iter_encode_to_ids(make_video(frames=6))
    with pytest.raises(ValueError, match=r"x\[1\]"):
        list(vae.iter_encode_to_ids(iter([make_video(frames=1), make_video(frames=4) * 2])))
    with pytest.raises(ValueError, match="4 id tensors"):
        vae.iter_decode_from_ids([torch.zeros(1, 1, 8, 8, dtype=torch.long)])

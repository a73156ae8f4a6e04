"""Token sequences: `PyraTokTokenLayout` invariants, bit converters, and the sequence API of both model classes."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from einops import rearrange

from modeling_pyratok import AutoencoderPyraTok, PyraTokModel
from modeling_pyratok.tokens_pyratok import (
    ORDERS,
    PyraTokLevelIds,
    PyraTokTokenLayout,
    bits_to_ids,
    factorized_to_ids,
    ids_to_bits,
    ids_to_factorized,
)
from tests.conftest import make_video, tiny_config

K = 2**16
# Layouts of the tiny preset for a 9-frame 64x64 clip (T' = 3) or an image (T' = 1): pyramid strides [1, 2, 4, 8] on
# an 8x8 latent grid, and the released-weights residual mode (4 stages of z_dim = 4 bits on the latent grid).
MODES = {
    "pyramid": dict(strides=(1, 2, 4, 8), codebook_dim=16, per_frame=64 + 16 + 4 + 1),
    "residual": dict(strides=(1, 1, 1, 1), codebook_dim=4, per_frame=4 * 64),
}


def layout_for(mode: str, frames: int, order: str = "frame_major", **kwargs) -> PyraTokTokenLayout:
    strides = MODES[mode]["strides"]
    return PyraTokTokenLayout(
        level_shapes=tuple((frames, 8 // s, 8 // s) for s in strides),
        level_strides=strides,
        codebook_dim=MODES[mode]["codebook_dim"],
        order=order,
        **kwargs,
    )


def random_ids(layout: PyraTokTokenLayout, batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, layout.codebook_size, (batch, *shape), generator=g) for shape in layout.level_shapes]


def same_ids(a, b) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b, strict=True))


# ---- layout invariants ----
@pytest.mark.parametrize("pad_to_square", [False, True])
@pytest.mark.parametrize("frames", [1, 3], ids=["image", "video"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("order", ORDERS)
def test_round_trip_length_and_padding(order, mode, frames, pad_to_square):
    layout = layout_for(mode, frames, order, pad_to_square=pad_to_square, is_image=frames == 1)
    ids = random_ids(layout)
    seq = layout.flatten(ids)
    tokens = frames * MODES[mode]["per_frame"]  # N = T' * sum_l (H'/s_l)(W'/s_l), by hand
    side = {85: 10, 255: 16, 256: 16, 768: 28}[tokens]  # smallest square holding N
    assert layout.num_tokens == tokens and layout.square_side == side
    assert seq.shape == (2, side**2 if pad_to_square else tokens) and seq.dtype == torch.int64
    assert same_ids(layout.unflatten(seq), ids)
    # Every id appears exactly once: the sequence is a permutation of the concatenated levels, plus pads.
    joined = torch.cat([i.flatten(1) for i in ids], dim=1)
    assert torch.equal(seq[:, :tokens].sort(dim=1).values, joined.sort(dim=1).values)
    if pad_to_square:
        assert (seq[:, tokens:] == 0).all()
        scribbled = seq.clone()
        scribbled[:, tokens:] = layout.mask_token_id + 3  # whatever a prior wrote there, pads are dropped
        assert same_ids(layout.unflatten(scribbled), ids)


def hand_layout(order: str, **kwargs) -> PyraTokTokenLayout:
    """Two levels, strides (1, 2), one latent frame: level 0 is 4x4, level 1 is 2x2."""
    return PyraTokTokenLayout(((1, 4, 4), (1, 2, 2)), (1, 2), codebook_dim=8, order=order, **kwargs)


HAND_IDS = [torch.arange(100, 116).view(1, 1, 4, 4), torch.arange(200, 204).view(1, 1, 2, 2)]
HAND_SEQUENCES = {
    # coarse level first within the frame, raster within a level
    "frame_major": [200, 201, 202, 203, *range(100, 116)],
    # the model's level order (shallow first), as training/heads.py
    "level_major": [*range(100, 116), 200, 201, 202, 203],
    # level 1 is plane 0; level 0 gives planes (r1, r2) = level0[r1::2, r2::2], each raster on the 2x2 grid
    "planes": [200, 201, 202, 203, 100, 102, 108, 110, 101, 103, 109, 111, 104, 106, 112, 114, 105, 107, 113, 115],
}


@pytest.mark.parametrize("order", ORDERS)
def test_orders_on_hand_computed_ids(order):
    layout = hand_layout(order)
    assert layout.flatten(HAND_IDS).tolist() == [HAND_SEQUENCES[order]]
    assert layout.grid_shape == (5, 2, 2) and layout.num_planes == 5


def test_level_major_separators_and_position_indices():
    layout = hand_layout("level_major", separators=True)
    soi, sep = layout.soi_token_id, layout.sep_token_id
    assert layout.flatten(HAND_IDS).tolist() == [[soi, *range(100, 116), sep, 200, 201, 202, 203]]
    assert layout.num_tokens == 22
    assert layout.level_index().tolist() == [-1] + [0] * 16 + [-1] + [1] * 4
    assert layout.frame_index().tolist() == [-1] + [0] * 16 + [-1] + [0] * 4
    assert same_ids(layout.unflatten(layout.flatten(HAND_IDS)), HAND_IDS)
    bad = layout.flatten(HAND_IDS)
    bad[0, 17] = soi  # a <SOI> where the <Q-SEP> belongs
    with pytest.raises(ValueError, match=r"slots must hold \[258, 259\], got \[258\]"):
        layout.unflatten(bad)


def test_position_indices_of_a_video_layout():
    layout = layout_for("pyramid", frames=3, pad_to_square=True)  # 255 tokens padded to 256
    frame, level = layout.frame_index(), layout.level_index()
    per_frame = [3] * 1 + [2] * 4 + [1] * 16 + [0] * 64  # coarse first within a frame
    assert level.tolist() == per_frame * 3 + [-1]
    assert frame.tolist() == [0] * 85 + [1] * 85 + [2] * 85 + [-1]
    planes = layout_for("pyramid", frames=3, order="planes")
    # Planes per latent frame: level 3 once, level 2 four times, level 1 16 times, level 0 64 times (1x1 grid).
    assert planes.level_index().tolist() == per_frame * 3


def test_planes_equal_the_einops_space_to_depth():
    # Second implementation: consumers.md §1.5's einops core, (B, T', P, H'/S, W'/S), coarse level first.
    layout = layout_for("pyramid", frames=3, order="planes")
    ids = random_ids(layout, seed=3)
    strides = layout.level_strides
    planes = torch.cat(
        [
            rearrange(level, "b t (h r1) (w r2) -> b t (r1 r2) h w", r1=8 // s, r2=8 // s)
            for level, s in zip(ids, strides, strict=True)
        ][::-1],
        dim=2,
    )
    assert planes.shape[2] == layout.num_planes == 85
    assert torch.equal(layout.flatten(ids), planes.flatten(1))
    assert layout.grid_shape == (3 * 85, 1, 1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("order", ["frame_major", "planes"])
def test_first_latent_frames_are_a_prefix(order, mode):
    whole = layout_for(mode, frames=3, order=order)
    ids = random_ids(whole, seed=5)
    seq = whole.flatten(ids)
    for k in (1, 2):
        prefix = layout_for(mode, frames=k, order=order)
        assert torch.equal(prefix.flatten([i[:, :k] for i in ids]), seq[:, : prefix.num_tokens])


def test_special_ids_sit_outside_the_codebook():
    layout = layout_for("pyramid", frames=1)
    special = [layout.mask_token_id, layout.pad_token_id, layout.soi_token_id, layout.sep_token_id]
    assert layout.codebook_size == K and special == [K, K + 1, K + 2, K + 3] and layout.vocab_size == K + 4
    residual = layout_for("residual", frames=1)
    assert residual.codebook_size == 16 and residual.mask_token_id == 16


def test_layout_survives_json():
    layout = layout_for("pyramid", frames=3, order="planes", pad_to_square=True, frame_size=(64, 64))
    data = json.loads(json.dumps(layout.to_dict()))
    again = PyraTokTokenLayout.from_dict(data)
    assert again == layout and again.frame_size == (64, 64) and again.level_shapes[3] == (3, 1, 1)
    ids = random_ids(layout)
    assert torch.equal(again.flatten(ids), layout.flatten(ids))
    with pytest.raises(ValueError, match=r"unknown PyraTokTokenLayout fields \['strides'\]"):
        PyraTokTokenLayout.from_dict({**data, "strides": [1]})


def test_bad_sequences_and_ids_raise():
    layout = layout_for("pyramid", frames=3)
    ids = random_ids(layout)
    seq = layout.flatten(ids)
    masked = seq.clone()
    masked[1, 7] = layout.mask_token_id
    with pytest.raises(ValueError, match=r"\[0, 65536\), got min \d+, max 65536 \(the mask id"):
        layout.unflatten(masked)
    with pytest.raises(ValueError, match=r"seq must be \(B, 255\).*got \(2, 254\)"):
        layout.unflatten(seq[:, :-1])
    # A sequence of a 9-frame clip read with the layout of a 5-frame clip (and the other way round).
    with pytest.raises(ValueError, match=r"seq must be \(B, 170\).*got \(2, 255\)"):
        layout_for("pyramid", frames=2).unflatten(seq)
    with pytest.raises(ValueError, match=r"level 0: expected ids of shape \(B, 2, 8, 8\).*got \(2, 3, 8, 8\)"):
        layout_for("pyramid", frames=2).flatten(ids)
    with pytest.raises(ValueError, match=r"seq must be an integer tensor, got torch.float32"):
        layout.unflatten(seq.float())
    too_big = [i.clone() for i in ids]
    too_big[2][0, 0, 0, 0] = K
    with pytest.raises(ValueError, match=r"level 2: ids must lie in \[0, 65536\), got min \d+, max 65536"):
        layout.flatten(too_big)
    with pytest.raises(ValueError, match="expected 4 id tensors"):
        layout.flatten(ids[:3])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(order="rows"), "order must be one of"),
        (dict(order="planes", separators=True), "separators=True needs order='level_major'"),
        (dict(level_strides=(1,)), r"level_strides must be a sequence of 2 positive ints, got \(1,\)"),
        (dict(level_shapes=((1, 8, 8), (1, 8, 8)), level_strides=(1, 2)), "do not share one latent grid"),
        (dict(level_shapes=((1, 6, 6), (1, 2, 2)), level_strides=(1, 3)), None),
        (dict(level_shapes=((1, 6, 6), (1, 4, 4)), level_strides=(2, 3)), "must each divide the largest"),
        (dict(codebook_dim=63), "codebook_dim must be an int in 1..62"),
        (dict(is_image=True, level_shapes=((2, 8, 8),), level_strides=(1,)), "an image layout has T' = 1"),
    ],
)
def test_bad_layouts_raise(kwargs, message):
    fields = dict(level_shapes=((1, 8, 8), (1, 4, 4)), level_strides=(1, 2), codebook_dim=16)
    fields.update(kwargs)
    if message is None:  # strides 1 and 3 are valid: 3 is a multiple of 1
        assert PyraTokTokenLayout(**fields).num_planes == 10
        return
    with pytest.raises(ValueError, match=message):
        PyraTokTokenLayout(**fields)


# ---- bit converters ----
def test_bits_are_msb_first_as_vector_quantize_pytorch_lfq():
    from vector_quantize_pytorch import LFQ

    ids = torch.randint(0, K, (3, 50), generator=torch.Generator().manual_seed(1))
    ids[0, :3] = torch.tensor([0, K - 1, 0b1000_0000_0000_0001])
    bits = ids_to_bits(ids, 16)
    assert bits.shape == (3, 50, 16)
    assert bits[0, 2].tolist() == [1.0] + [-1.0] * 14 + [1.0]  # by hand
    assert bits[0, 0].tolist() == [-1.0] * 16 and bits[0, 1].tolist() == [1.0] * 16
    lfq = LFQ(codebook_size=K, dim=16)
    assert torch.equal(bits, lfq.indices_to_codes(ids, project_out=False).float())
    assert torch.equal(bits_to_ids(bits), ids)
    every = torch.arange(2**8)
    assert torch.equal(bits_to_ids(ids_to_bits(every, 8)), every)


def test_factorized_groups_are_lsb_first_within_each_group():
    # Channels (MSB first): c0 = c1 = 1, c15 = 1, the rest 0. pre = c0 + 2 c1 = 3; post = c15 * 2**9 = 512.
    ids = torch.tensor([[2**15 + 2**14 + 1, 0, K - 1]])
    pre, post = ids_to_factorized(ids, (6, 10))
    assert pre.tolist() == [[3, 0, 63]] and post.tolist() == [[512, 0, 1023]]
    assert torch.equal(factorized_to_ids(pre, post, (6, 10)), ids)
    every = torch.arange(2**8)
    pre, post = ids_to_factorized(every, (3, 5))
    assert pre.max() == 7 and post.max() == 31
    assert torch.equal(factorized_to_ids(pre, post, (3, 5)), every)
    with pytest.raises(ValueError, match=r"pre must lie in \[0, 8\).*max 8"):
        factorized_to_ids(pre + 1, post, (3, 5))
    with pytest.raises(ValueError, match="factorized_bits must be two positive ints"):
        ids_to_factorized(every, (8,))


def test_factorized_groups_match_open_magvit2():
    lfq_module = pytest.importorskip("open_magvit2.taming.modules.vqvae.lookup_free_quantize")
    lfq = lfq_module.LFQ(dim=16, codebook_size=K, token_factorization=True, factorized_bits=[6, 10])
    ids = torch.randint(0, K, (2, 4 * 4), generator=torch.Generator().manual_seed(2))
    pre, post = ids_to_factorized(ids, (6, 10))
    # Open-MAGVIT2's decode path: each group's codes, concatenated on channels, are the first stage's ±1 code.
    codes = torch.cat(
        [lfq.get_codebook_entry(pre, (2, 4, 4, 6), "pre"), lfq.get_codebook_entry(post, (2, 4, 4, 10), "post")], 1
    )
    assert torch.equal(codes, rearrange(ids_to_bits(ids, 16), "b (h w) c -> b c h w", h=4))


# ---- both model classes ----
@pytest.fixture(scope="module")
def vae(one_thread) -> AutoencoderPyraTok:
    torch.manual_seed(0)
    return AutoencoderPyraTok(**tiny_config().to_init_kwargs()).eval()


@pytest.fixture(scope="module")
def residual_model(one_thread) -> PyraTokModel:
    torch.manual_seed(0)
    return PyraTokModel(tiny_config(quantizer_mode="residual", codebook_dim=4, lora_rank=0)).eval()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("frames", [1, 9], ids=["image", "video"])
def test_model_layout_matches_the_hand_layout(vae, residual_model, mode, frames):
    model = vae if mode == "pyramid" else residual_model
    assert model.codebook_size == 2 ** MODES[mode]["codebook_dim"] and model.mask_token_id == model.codebook_size
    for order in ORDERS:
        layout = model.token_layout(frames, 64, 64, order=order, is_image=frames == 1)
        expected = layout_for(mode, (frames - 1) // 4 + 1, order, frame_size=(64, 64), is_image=frames == 1)
        assert layout == expected
    with pytest.raises(ValueError, match=r"num_frames=8; PyraTok needs T = 4k \+ 1"):
        model.token_layout(8, 64, 64)
    with pytest.raises(ValueError, match=r"H x W = 64 x 60; both must be multiples of (64|8)"):
        model.token_layout(9, 64, 60)


def test_sequence_api_equals_the_ids_api_on_video(vae):
    clip = make_video(frames=9, seed=11)
    ids = vae.encode_to_ids(clip, text="a cat")
    seq, layout = vae.encode_to_sequence(clip, text="a cat", order="planes", pad_to_square=True)
    assert layout == vae.token_layout(9, 64, 64, order="planes", pad_to_square=True)
    assert torch.equal(seq, layout.flatten(ids))
    decoded = vae.decode_from_sequence(seq, layout)
    assert decoded.shape == clip.shape and torch.equal(decoded, vae.decode_from_ids(ids))
    # Frame-major: the ids of each streamed piece, flattened with its own layout, concatenate to the clip's sequence.
    whole = vae.token_layout(9, 64, 64).flatten(ids)
    pieces = list(vae.iter_encode_to_ids(clip, text="a cat"))
    assert [p[0].shape[1] for p in pieces] == [1, 1, 1]
    streamed = torch.cat([vae.token_layout(1, 64, 64).flatten(p) for p in pieces], dim=1)
    assert torch.equal(streamed, whole)
    with pytest.raises(
        ValueError, match=r"layout is for another tokenizer: expected \{'level_strides': \(1, 2, 4, 8\)"
    ):
        vae.decode_from_sequence(seq, layout_for("residual", frames=3))


def test_images_stay_images_on_the_ids_and_sequence_paths(vae):
    images = make_video(batch=2, frames=1, seed=12)[:, :, 0]
    ids = vae.encode_to_ids(images)
    assert isinstance(ids, PyraTokLevelIds) and ids.is_image and ids[0].shape == (2, 1, 8, 8)
    decoded = vae.decode_from_ids(ids)
    assert decoded.shape == images.shape  # 4-D in, 4-D out
    as_video = vae.decode_from_ids(list(ids))  # plain lists decode to video, as before
    assert as_video.shape == (2, 3, 1, 64, 64) and torch.equal(as_video[:, :, 0], decoded)
    assert torch.equal(vae.decode_from_ids(list(ids), is_image=True), decoded)
    seq, layout = vae.encode_to_sequence(images, order="level_major", separators=True)
    assert layout.is_image and seq.shape == (2, 85 + 4) and seq[0, 0] == layout.soi_token_id
    assert torch.equal(vae.decode_from_sequence(seq, layout), decoded)
    assert torch.equal(vae.decode_from_ids(layout.unflatten(seq)), decoded)
    (streamed,) = list(vae.iter_decode_from_ids(vae.iter_encode_to_ids(images)))
    assert streamed.shape == images.shape
    video_ids = [torch.zeros(1, 2, 8 // s, 8 // s, dtype=torch.long) for s in (1, 2, 4, 8)]
    with pytest.raises(ValueError, match="is_image=True needs ids of one latent frame, got T'=2"):
        vae.decode_from_ids(video_ids, is_image=True)


def test_residual_mode_sequence_api_on_the_transformers_class(residual_model):
    clip = make_video(frames=5, seed=13)
    tokens = residual_model.tokenize(clip)
    seq, layout = residual_model.encode_to_sequence(clip, order="frame_major")
    assert seq.shape == (1, 2 * 256) and torch.equal(seq, layout.flatten(tokens.ids))
    # Within a latent frame the stages come in their order (all strides are 1): stage 0 first.
    assert torch.equal(seq[0, :64], tokens.ids[0][0, 0].flatten())
    assert torch.equal(residual_model.decode_from_sequence(seq, layout), residual_model.detokenize(tokens))
    assert seq.max() < 16 and residual_model.mask_token_id == 16


def test_embed_ids(vae, residual_model):
    ids = torch.tensor([[0, 5, K - 1]])
    bits = vae.embed_ids(ids)
    hand = torch.tensor([[-1.0] * 16, [-1.0] * 13 + [1.0, -1.0, 1.0], [1.0] * 16])  # 5 = 0b101
    assert bits.shape == (1, 3, 16) and torch.equal(bits[0], hand)
    semantic = vae.embed_ids(ids, space="semantic")
    weight = vae.core.quantizer.code_embedding.weight  # W_c: (semantic_dim, codebook_dim), no bias
    assert semantic.shape == (1, 3, 32)
    assert torch.allclose(semantic[0], hand @ weight.T, atol=1e-6)
    assert torch.equal(residual_model.embed_ids(torch.tensor([3])), torch.tensor([[-1.0, -1.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="quantizer_mode='residual' does not have"):
        residual_model.embed_ids(torch.tensor([3]), space="semantic")
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 65536\).*max 65536"):
        vae.embed_ids(torch.tensor([vae.mask_token_id]))
    with pytest.raises(ValueError, match="space must be 'bits' or 'semantic'"):
        vae.embed_ids(ids, space="codebook")


@pytest.mark.slow  # a fresh Python process importing transformers: ~30 s of CPU
def test_remote_code_folder_has_the_sequence_api(tmp_path):
    """`save_pretrained` ships `tokens_pyratok.py`; a fresh process that never imports us gets the same sequences."""
    torch.manual_seed(0)
    model = PyraTokModel(tiny_config()).eval()
    export = tmp_path / "export"
    model.save_pretrained(export)
    assert "tokens_pyratok.py" in os.listdir(export)
    clip = make_video(frames=5, seed=14)
    seq, layout = model.encode_to_sequence(clip, order="planes", pad_to_square=True)
    reference = {
        "video": clip,
        "seq": seq,
        "layout": layout.to_dict(),
        "decoded": model.decode_from_sequence(seq, layout),
    }
    torch.save(reference, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModel
        ref = torch.load({str(tmp_path / "expected.pt")!r})
        model = AutoModel.from_pretrained({str(export)!r}, trust_remote_code=True)
        assert "modeling_pyratok" not in sys.modules
        seq, layout = model.encode_to_sequence(ref["video"], order="planes", pad_to_square=True)
        assert torch.equal(seq, ref["seq"]) and layout.to_dict() == ref["layout"], "sequences differ"
        assert torch.equal(model.decode_from_sequence(seq, layout), ref["decoded"]), "decodes differ"
        print("OK")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")

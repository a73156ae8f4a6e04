"""The real token consumers on PyraTok through `modeling_pyratok.integrations` (issue 21 §4-5), tiny sizes, CPU.

Each consumer package is optional (`pip install pyratok[consumers]`, CI installs it); a test that needs one imports
it with `pytest.importorskip`, so collection works without them. Expected ids are built here independently of
`tokens_pyratok` (space-to-depth with einops, bit arithmetic on ints), and every decode is compared with PyraTok's own
`decode_from_ids` of the same ids, exactly.
"""

import importlib
import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from modeling_pyratok import AutoencoderPyraTok, PyraTokModel
from modeling_pyratok.integrations import (
    as_magvit2_video_tokenizer,
    as_muse_maskgit_vae,
    as_open_magvit2_first_stage,
    as_phenaki_cvivit,
)
from tests.conftest import activate_text_attention, make_video, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 64
STRIDES = (1, 2, 4, 8)
# A 64² frame: an 8x8 latent grid, levels 8x8, 4x4, 2x2, 1x1, all folded onto the 1x1 coarsest grid.
PLANES = 64 + 16 + 4 + 1
SIDE = math.isqrt(PLANES - 1) + 1  # 10: the square grid holding 85 ids
BITS = 16
T5_DIM = 32


@pytest.fixture(scope="module")
def vae() -> AutoencoderPyraTok:
    torch.manual_seed(0)
    return AutoencoderPyraTok(**tiny_config().to_init_kwargs()).eval()


@pytest.fixture
def t5_offline(monkeypatch):
    """muse and Phenaki read a T5 config at construction (a Hub download): seed their caches with a small one."""
    from transformers import T5Config

    for name in ("muse_maskgit_pytorch.t5", "phenaki_pytorch.t5"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue  # that consumer's tests skip on their own
        monkeypatch.setitem(module.T5_CONFIGS, module.DEFAULT_T5_NAME, {"config": T5Config(d_model=T5_DIM)})


def planes_by_hand(levels: list[torch.Tensor]) -> torch.Tensor:
    """Per-level ids `(B, T', H_l, W_l)` → `(B, T', P, h, w)`: each level space-to-depth onto the coarsest grid,
    coarse level first (consumers.md §1.5)."""
    top = max(STRIDES)
    folded = [
        rearrange(ids, "b t (h r1) (w r2) -> b t (r1 r2) h w", r1=top // s, r2=top // s)
        for ids, s in zip(levels, STRIDES, strict=True)
    ]
    return torch.cat(folded[::-1], dim=2)


def to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """PyraTok's [-1, 1] → [0, 1], the formula of the adapters with `pixel_range=(0, 1)`."""
    return (pixels + 1.0) * 0.5


def msb_bit(ids: torch.Tensor, channel: int) -> torch.Tensor:
    """Bit `channel` of 16-bit ids, channel 0 the most significant."""
    return (ids >> (BITS - 1 - channel)) & 1


def factorize_by_hand(ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Open-MAGVIT2's split: channels [:k] and [k:] of the code, each group read least significant bit first."""
    pre = sum(msb_bit(ids, c) << c for c in range(k))
    post = sum(msb_bit(ids, k + c) << c for c in range(BITS - k))
    return pre, post


# ---- muse-maskgit-pytorch -------------------------------------------------------------------------------------------
def test_muse_adapter_ids_are_the_padded_planes_grid_and_decode_exactly(vae):
    pytest.importorskip("muse_maskgit_pytorch")
    adapter = as_muse_maskgit_vae(vae, SIZE)
    images = to_unit(make_video(batch=2, frames=1)[:, :, 0])
    fmap, ids, loss = adapter.encode(images)
    levels = vae.encode_to_ids(images * 2.0 - 1.0)
    expected = F.pad(planes_by_hand(levels).flatten(1), (0, SIDE**2 - PLANES)).view(2, SIDE, SIDE)
    assert torch.equal(ids, expected) and loss.item() == 0.0
    assert fmap.shape == (2, BITS, SIDE, SIDE) and fmap.abs().eq(1).all()
    assert torch.equal(sum((fmap[:, c] > 0).long() << (BITS - 1 - c) for c in range(BITS)), ids)  # MSB first

    decoded = adapter.decode_from_ids(ids)
    assert decoded.shape == (2, 3, SIZE, SIZE)
    assert torch.equal(decoded, to_unit(vae.decode_from_ids(list(levels), is_image=True)))
    assert torch.equal(adapter.decode(fmap), decoded)
    noisy = ids.flatten(1).clone()
    noisy[:, PLANES:] = torch.randint(0, 2**BITS, (2, SIDE**2 - PLANES))  # MaskGit samples the pads too
    assert torch.equal(adapter.decode_from_ids(noisy), decoded)

    masked = ids.flatten(1).clone()
    masked[0, 3] = 2**BITS  # MaskGit's mask id at a code position
    with pytest.raises(ValueError, match="65536"):
        adapter.decode_from_ids(masked)
    with pytest.raises(ValueError, match="32, 32"):
        adapter.encode(images[..., :32, :32])


def test_muse_maskgit_trains_two_steps_and_generates_images(vae, t5_offline, monkeypatch):
    muse = pytest.importorskip("muse_maskgit_pytorch")
    adapter = as_muse_maskgit_vae(vae, SIZE)
    assert isinstance(adapter, muse.VQGanVAE)  # MaskGit's beartype check
    assert adapter.codebook_size == 2**BITS and adapter.get_encoded_fmap_size(SIZE) == SIDE
    torch.manual_seed(0)
    transformer = muse.MaskGitTransformer(num_tokens=2**BITS, seq_len=SIDE**2, dim=32, depth=1, dim_head=8, heads=2)
    maskgit = muse.MaskGit(image_size=SIZE, vae=adapter, transformer=transformer)
    assert maskgit.vae is adapter  # copy_for_eval shares the frozen tokenizer (and its prompts)

    images = to_unit(make_video(batch=1, frames=1, seed=1)[:, :, 0])
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=1e-3)
    before = transformer.to_logits.weight.detach().clone()
    for _ in range(2):
        loss = maskgit(images, text_embeds=torch.randn(1, 4, T5_DIM))
        # Random init: cross-entropy over 2^16 codes starts near ln(65536) = 11.09.
        assert abs(loss.item() - math.log(2**BITS)) < 1.0
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert not torch.equal(before, transformer.to_logits.weight)

    decode, seen = adapter.decode_from_ids, []
    monkeypatch.setattr(adapter, "decode_from_ids", lambda ids: seen.append(ids) or decode(ids))
    monkeypatch.setattr(transformer, "encode_text", lambda texts: torch.randn(len(texts), 4, T5_DIM))
    out = maskgit.generate(texts=["a red square"], timesteps=2, cond_scale=1)
    assert out.shape == (1, 3, SIZE, SIZE) and seen[0].shape == (1, SIDE, SIDE)
    assert torch.equal(out, decode(seen[0]))


# ---- phenaki-pytorch ------------------------------------------------------------------------------------------------
def test_phenaki_adapter_ids_are_frame_major_planes_and_decode_exactly(vae):
    phenaki_pytorch = pytest.importorskip("phenaki_pytorch")
    adapter = as_phenaki_cvivit(vae, SIZE)
    assert isinstance(adapter, phenaki_pytorch.CViViT)
    # 9 frames → 3 latent frames of 85 ids; Phenaki counts continuation frames without the first one.
    assert adapter.num_tokens_per_frames(9) == 3 * PLANES
    assert adapter.num_tokens_per_frames(4, include_first_frame=False) == PLANES
    assert adapter.get_video_patch_shape(9) == (3 * PLANES, 1, 1)

    video = to_unit(make_video(frames=5))
    ids = adapter(video, return_only_codebook_ids=True)
    levels = vae.encode_to_ids(video * 2.0 - 1.0)
    assert torch.equal(ids, planes_by_hand(levels).flatten(1, 2))  # (1, 2·85, 1, 1)
    decoded = adapter.decode_from_codebook_indices(ids.flatten(1))
    assert torch.equal(decoded, to_unit(vae.decode_from_ids(list(levels))))
    assert torch.equal(adapter(video, return_recons_only=True), decoded)

    only_first = torch.tensor([[True, False, False, False, False]])
    expected_mask = torch.tensor([[True] * PLANES + [False] * PLANES])
    assert torch.equal(adapter.calculate_video_token_mask(video, only_first), expected_mask)
    with pytest.raises(ValueError, match="multiple of 85"):
        adapter.decode_from_codebook_indices(ids.flatten(1)[:, :50])


def test_phenaki_trains_two_steps_samples_and_continues_a_primed_clip(vae, t5_offline, monkeypatch):
    phenaki_pytorch = pytest.importorskip("phenaki_pytorch")
    adapter = as_phenaki_cvivit(vae, SIZE)
    torch.manual_seed(0)
    maskgit = phenaki_pytorch.MaskGit(
        num_tokens=2**BITS, max_seq_len=3 * PLANES, dim=32, dim_context=T5_DIM, depth=1, heads=2, dim_head=8
    )
    phenaki = phenaki_pytorch.Phenaki(cvivit=adapter, maskgit=maskgit, text_embed_dim=T5_DIM, steps=2)
    assert phenaki.cvivit is adapter

    prime = to_unit(make_video(frames=5, seed=2))
    optimizer = torch.optim.AdamW(maskgit.parameters(), lr=1e-3)
    before = maskgit.to_logits.weight.detach().clone()
    for _ in range(2):
        loss = phenaki(prime, text_embeds=torch.randn(1, 3, T5_DIM))
        assert abs(loss.item() - math.log(2**BITS)) < 1.0
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert not torch.equal(before, maskgit.to_logits.weight)

    decode, seen = adapter.decode_from_codebook_indices, []
    monkeypatch.setattr(
        adapter, "decode_from_codebook_indices", lambda ids: seen.append((ids, decode(ids))) or seen[-1][1]
    )
    monkeypatch.setattr(phenaki, "encode_texts", lambda texts, output_device=None: torch.randn(len(texts), 3, T5_DIM))
    assert phenaki.sample(texts=["a ball rolls"], num_frames=5, cond_scale=1.0).shape == (1, 3, 5, SIZE, SIZE)

    continued = phenaki.sample(texts=["it keeps rolling"], num_frames=4, prime_frames=prime, cond_scale=1.0)
    assert continued.shape == (1, 3, 4, SIZE, SIZE)
    ids, whole = seen[-1]  # Phenaki decodes prime + new ids together, then drops the prime frames
    prime_ids = adapter(prime, return_only_codebook_ids=True).flatten(1)
    assert ids.shape == (1, 3 * PLANES) and torch.equal(ids[:, : 2 * PLANES], prime_ids)
    assert torch.equal(continued, whole[:, :, 5:])
    # Causal decoder: the continued clip starts with the prime's own decode (float noise only).
    torch.testing.assert_close(whole[:, :, :5], decode(prime_ids), rtol=0, atol=1e-5)


# ---- open-magvit2 ---------------------------------------------------------------------------------------------------
def net2net(first_stage_config: dict, grid: int, factorized_bits: tuple[int, int]):
    cond_transformer = pytest.importorskip("open_magvit2.taming.models.cond_transformer_gpt")
    gpt = dict(
        vocab_size=2**BITS,
        block_size=grid**2,
        spatial_n_layer=1,
        factorized_n_layer=1,
        n_head=2,
        dim=32,
        cond_dim=32,
        token_factorization=True,
        factorized_bits=list(factorized_bits),
        class_num=10,
    )
    return cond_transformer.Net2NetTransformer(
        transformer_config={"target": "open_magvit2.taming.modules.transformer.gpt.GPT", "params": gpt},
        first_stage_config=first_stage_config,
        cond_stage_config={"target": "open_magvit2.taming.modules.util.Labelator", "params": {"n_classes": 10}},
        permuter_config={"target": "open_magvit2.taming.modules.transformer.permuter.Identity"},
        first_stage_key="image",
        cond_stage_key="class_label",
        token_factorization=True,
    )


def test_open_magvit2_prior_trains_and_samples_class_conditionally(vae, tmp_path):
    pytest.importorskip("open_magvit2")
    sample = pytest.importorskip("open_magvit2.sample")
    vae.save_pretrained(tmp_path)
    target = "modeling_pyratok.integrations.open_magvit2_adapter.open_magvit2_first_stage_from_pretrained"
    torch.manual_seed(0)
    params = {"pretrained_model_name_or_path": str(tmp_path), "image_size": SIZE, "factorized_bits": [6, 10]}
    model = net2net({"target": target, "params": params}, SIDE, (6, 10))
    first_stage = model.first_stage_model
    assert first_stage.grid_size == SIDE and first_stage.embed_dim == BITS

    images = make_video(batch=2, frames=1)[:, :, 0]  # Open-MAGVIT2 feeds [-1, 1]
    _, (pre, post) = model.encode_to_z(images)
    ids = F.pad(planes_by_hand(vae.encode_to_ids(images)).flatten(1), (0, SIDE**2 - PLANES))
    assert [t.tolist() for t in (pre, post)] == [t.tolist() for t in factorize_by_hand(ids, 6)]

    batch = {"image": images.permute(0, 2, 3, 1), "class_label": torch.tensor([1, 7])}
    optimizer = torch.optim.AdamW(model.transformer.parameters(), lr=1e-3)
    losses = []
    for _ in range(2):
        loss, (loss_pre, loss_post) = model.shared_step(batch, 0)
        losses.append((loss_pre.item(), loss_post.item()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # The GPT's heads start at zero: uniform over 2^6 pre and 2^10 post codes.
    assert losses[0] == pytest.approx((math.log(2**6), math.log(2**10)), rel=1e-5)
    assert all(math.isfinite(v) for v in losses[1])

    model.eval()
    log = sample.sample_classconditional(
        model,
        2,
        3,
        steps=SIDE**2,
        temperature=[1.0, 1.0],
        top_k=[0, 0],
        top_p=[1.0, 1.0],
        dim_z=first_stage.embed_dim,
        h=SIDE,
        w=SIDE,
        token_factorization=True,
        cfg_scale=[2.0, 2.0],
    )
    assert log["samples"].shape == (2, 3, SIZE, SIZE)


def test_open_magvit2_codebook_entries_decode_like_pyratok(vae):
    pytest.importorskip("open_magvit2")
    model = net2net({"target": "open_magvit2.taming.modules.util.Labelator", "params": {"n_classes": 1}}, SIDE, (8, 8))
    model.first_stage_model = as_open_magvit2_first_stage(vae, SIZE, factorized_bits=(8, 8))
    ids = torch.randint(0, 2**BITS, (2, SIDE**2), generator=torch.Generator().manual_seed(0))
    pre, post = factorize_by_hand(ids, 8)
    # Net2NetTransformer.decode_to_img: get_codebook_entry for pre and post, concatenated, then decode.
    images = model.decode_to_img((pre, post), [2, BITS, SIDE, SIDE])
    layout = vae.token_layout(1, SIZE, SIZE, order="planes", pad_to_square=True, is_image=True)
    assert torch.equal(images, vae.decode_from_sequence(ids, layout))

    x = make_video(batch=2, frames=1, seed=3)[:, :, 0]
    quant, loss, (pre, post), _ = model.first_stage_model.encode(x)
    assert quant.shape == (2, BITS, SIDE, SIDE) and loss.item() == 0.0 and pre.shape == (2 * SIDE**2,)
    assert torch.equal(model.first_stage_model.decode(quant), vae.decode_from_ids(vae.encode_to_ids(x)))
    with pytest.raises(ValueError, match="order"):
        model.first_stage_model.quantize.get_codebook_entry(pre, (2, SIDE, SIDE, 8), order="middle")


# ---- magvit2-pytorch ------------------------------------------------------------------------------------------------
def test_magvit2_facade_matches_a_real_video_tokenizer(vae):
    magvit2 = pytest.importorskip("magvit2_pytorch")
    torch.manual_seed(0)
    real = magvit2.VideoTokenizer(
        image_size=SIZE,
        init_dim=8,
        codebook_size=2**BITS,
        layers=("residual", "compress_space", "compress_time", "compress_space", "compress_time"),
        perceptual_loss_weight=0.0,  # the default downloads VGG16
        use_gan=False,
        flash_attn=False,
    )
    facade = as_magvit2_video_tokenizer(vae, SIZE)
    assert (facade.time_downsample_factor, facade.time_padding) == (real.time_downsample_factor, real.time_padding)
    assert (facade.quantizers.codebook_size, facade.quantizers.codebook_dim) == (
        real.quantizers.codebook_size,
        real.quantizers.codebook_dim,
    )
    video = to_unit(make_video(frames=9))
    for x in (video, video[:, :, 0]):
        ours, theirs = facade.tokenize(x), real.tokenize(x)
        assert ours.dtype == theirs.dtype == torch.int64
        assert ours.shape == (*theirs.shape[:2], facade.fmap_size, facade.fmap_size)
        assert theirs.shape[2:] == (real.fmap_size, real.fmap_size)
        for ours_in, theirs_in in ((ours, theirs), (ours.flatten(1), theirs.flatten(1))):
            out, ref = facade.decode_from_code_indices(ours_in), real.decode_from_code_indices(theirs_in)
            assert out.shape == ref.shape and out.dtype == ref.dtype

    ids = torch.randint(0, 2**BITS, (2, 3, SIDE, SIDE), generator=torch.Generator().manual_seed(0))
    for grid in (ids, ids.flatten(1)):
        assert torch.equal(
            facade.quantizers.indices_to_codes(grid), real.quantizers.indices_to_codes(grid, project_out=False)
        )


def test_magvit2_facade_ids_are_per_frame_padded_planes_and_decode_exactly(vae):
    facade = as_magvit2_video_tokenizer(vae, SIZE)
    assert facade.fmap_size == SIDE
    video = to_unit(make_video(frames=5, seed=4))
    codes = facade.tokenize(video)
    levels = vae.encode_to_ids(video * 2.0 - 1.0)
    expected = F.pad(planes_by_hand(levels).flatten(2), (0, SIDE**2 - PLANES)).view(1, 2, SIDE, SIDE)
    assert torch.equal(codes, expected)
    decoded = to_unit(vae.decode_from_ids(list(levels)))
    assert torch.equal(facade.decode_from_code_indices(codes), decoded)
    assert torch.equal(facade.decode_from_code_indices(codes.flatten(1)), decoded)
    with pytest.raises(ValueError, match="cond"):
        facade.decode_from_code_indices(codes, cond=torch.zeros(1, 4))


# ---- prompts --------------------------------------------------------------------------------------------------------
def test_prompts_switch_the_adapters_to_the_language_aligned_path():
    torch.manual_seed(0)
    text_vae = AutoencoderPyraTok(**tiny_config().to_init_kwargs()).eval()
    activate_text_attention(text_vae)  # zero-initialised cross-attention would make text a no-op
    adapter = as_open_magvit2_first_stage(text_vae, SIZE)
    images = make_video(batch=2, frames=1, seed=5)[:, :, 0]
    prompts = ["a red car on a road", None]

    null = adapter.encode_to_ids(images)
    with adapter.using_prompts(prompts):
        texted = adapter.encode_to_ids(images)
    assert adapter.prompts is None
    expected = F.pad(planes_by_hand(text_vae.encode_to_ids(images, text=prompts)).flatten(1), (0, SIDE**2 - PLANES))
    assert torch.equal(texted.flatten(1), expected)
    assert not torch.equal(texted[0], null[0])  # the captioned item changes
    assert torch.equal(texted[1], null[1])  # the item without a caption is the null-text path

    adapter.set_prompts(["only one caption"])
    with pytest.raises(ValueError, match="1 prompts for a batch of 2"):
        adapter.encode_to_ids(images)


def test_adapters_take_a_pyratok_model_too(vae):
    model = PyraTokModel(tiny_config()).eval()
    model.core.load_state_dict(vae.core.state_dict())  # one weight layout for both classes
    images = make_video(batch=1, frames=1, seed=6)[:, :, 0]
    ours, theirs = as_open_magvit2_first_stage(model, SIZE), as_open_magvit2_first_stage(vae, SIZE)
    assert torch.equal(ours.encode_to_ids(images), theirs.encode_to_ids(images))
    facade = as_magvit2_video_tokenizer(model, SIZE)
    assert (facade.fmap_size, facade.time_downsample_factor) == (SIDE, 4)
    with pytest.raises(ValueError, match="AutoencoderPyraTok or a PyraTokModel"):
        as_magvit2_video_tokenizer(torch.nn.Linear(2, 2), SIZE)

"""The diffusers VAE contract (issue 21 §2-§3): derived config fields, pad-and-crop, per-channel latent
normalisation, reduced precision, and the loading cases R1-R6 that diffusers' and transformers' generic tests hit."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoModel

from modeling_pyratok import AutoencoderPyraTok, PyraTokConfig, PyraTokModel
from tests.conftest import make_video, tiny_config
from tests.test_official_checkpoint import BACKBONE, official_state_dict, write_official_folder


def uniform_clip(frames: int = 5, height: int = 64, width: int = 64, seed: int = 0) -> torch.Tensor:
    """diffusers' generic-test input, in PyraTok's range: uniform [-1, 1] noise `(1, 3, T, H, W)`."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, height, width, generator=g) * 2 - 1


def make_vae(**overrides) -> AutoencoderPyraTok:
    torch.manual_seed(0)
    return AutoencoderPyraTok(**tiny_config(**overrides).to_init_kwargs()).eval()


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k].float(), sb[k].float()) for k in sa)


# ---- derived config fields ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        # base_dim x dim_mult, one entry per halving plus one: 8x -> 4 entries, 16x (patchify 2) -> 5.
        ("tiny", [8, 16, 16, 16]),
        ("wan2.1", [96, 192, 384, 384]),
        ("wan2.2", [160, 160, 320, 640, 640]),
    ],
)
def test_derived_fields_are_what_pipelines_compute_their_factors_from(preset, expected):
    config = PyraTokConfig.from_preset(preset)
    assert config.block_out_channels == expected
    # CogVideoX / OmniGen: vae_scale_factor_spatial = 2 ** (len(block_out_channels) - 1).
    assert 2 ** (len(config.block_out_channels) - 1) == config.scale_factor_spatial
    assert len(config.block_out_channels) == math.log2(config.scale_factor_spatial) + 1
    assert config.latent_channels == config.z_dim == config.backbone_config["z_dim"]
    assert config.temporal_compression_ratio == 4 == 2 ** sum(config.backbone_config["temperal_downsample"])
    assert config.invert_scale_latents is False and config.latent_normalization == "none"


def test_derived_fields_survive_save_and_load_in_both_classes(tmp_path):
    vae = make_vae(latent_normalization="per_channel")
    names = ("block_out_channels", "latent_channels", "temporal_compression_ratio", "invert_scale_latents")
    names += ("latent_normalization", "latents_mean", "latents_std")
    vae.save_pretrained(tmp_path / "vae")
    on_disk = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert {n: on_disk[n] for n in names} == {n: vae.config[n] for n in names}
    model = PyraTokModel.from_pretrained(tmp_path / "vae")
    assert {n: getattr(model.config, n) for n in names} == {n: vae.config[n] for n in names}
    model.save_pretrained(tmp_path / "model")
    back = AutoencoderPyraTok.from_pretrained(tmp_path / "model")
    assert {n: back.config[n] for n in names} == {n: vae.config[n] for n in names}
    assert_same_weights(vae, back)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("block_out_channels", [8, 16, 16]),
        ("latent_channels", 8),
        ("temporal_compression_ratio", 8),
        ("latent_normalization", "global"),
        ("invert_scale_latents", True),
        # per-channel mode reports the statistics of its own (normalised) latent: 0 / 1.
        ("latents_std", [2.0] * 4),
    ],
)
def test_a_disagreeing_field_is_a_value_error_naming_it(field, value, tmp_path):
    overrides = {field: value}
    if field == "latents_std":
        overrides["latent_normalization"] = "per_channel"
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)
    make_vae().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(overrides)
    (tmp_path / "config.json").write_text(json.dumps(config))
    for cls in (AutoencoderPyraTok, PyraTokModel):
        with pytest.raises(ValueError, match=field):
            cls.from_pretrained(tmp_path)


# ---- pad and crop ---------------------------------------------------------------------------------------------------
def pad_by_hand(x: torch.Tensor, multiple: int = 64) -> torch.Tensor:
    """Repeat the last row and the last column until H and W are multiples of `multiple`."""
    while x.shape[-2] % multiple:
        x = torch.cat([x, x[..., -1:, :]], dim=-2)
    while x.shape[-1] % multiple:
        x = torch.cat([x, x[..., -1:]], dim=-1)
    return x


def test_sizes_that_are_multiples_of_the_backbone_factor_encode_to_the_cropped_latent():
    vae = make_vae()
    x = uniform_clip(height=80, width=48)
    padded = pad_by_hand(x)
    assert padded.shape[-2:] == (128, 64)
    z = vae.encode(x).latent_dist.mode()
    assert z.shape == (1, 4, 2, 10, 6)
    assert torch.equal(z, vae.encode(padded).latent_dist.mode()[..., :10, :6])
    assert vae.decode(z).sample.shape == (1, 3, 5, 80, 48)
    assert vae(x).sample.shape == x.shape
    # Images: 4-D in, 4-D out.
    image = x[:, :, 0]
    assert vae.encode(image).latent_dist.mode().shape == (1, 4, 10, 6)
    assert vae.decode(vae.encode(image).latent_dist.mode()).sample.shape == image.shape


def test_ids_keep_the_padded_grid_and_decode_crops_back():
    vae = make_vae()
    x = uniform_clip(height=80, width=48)
    ids = vae.encode_to_ids(x)
    by_hand = vae.encode_to_ids(pad_by_hand(x))
    assert [tuple(i.shape) for i in ids] == [(1, 2, 16, 8), (1, 2, 8, 4), (1, 2, 4, 2), (1, 2, 2, 1)]
    assert all(torch.equal(a, b) for a, b in zip(ids, by_hand, strict=True))
    full = vae.decode_from_ids(ids)
    assert full.shape == (1, 3, 5, 128, 64)
    assert torch.equal(vae.decode_from_ids(ids, frame_size=(80, 48)), full[..., :80, :48])
    with pytest.raises(ValueError, match="frame_size"):
        vae.decode_from_ids(ids, frame_size=(136, 48))

    model = PyraTokModel(vae.pyratok_config).eval()
    model.load_state_dict(vae.state_dict())
    tokens = model.tokenize(x)
    assert tokens.frame_size == (80, 48) and tokens.latent_size == (2, 16, 8)
    assert all(torch.equal(a, b) for a, b in zip(tokens.ids, ids, strict=True))
    assert torch.equal(model.detokenize(tokens), full[..., :80, :48])
    assert torch.equal(model.encode(x), vae.encode(x).latent_dist.mode())
    out = model(x)
    assert out.reconstruction.shape == x.shape and out.latent.shape == (1, 4, 2, 10, 6)
    assert model.tokenize(uniform_clip()).frame_size is None


def test_sizes_off_the_backbone_factor_still_raise():
    vae = make_vae()
    with pytest.raises(ValueError, match="84 x 48; both must be multiples of 8"):
        vae.encode(uniform_clip(height=84, width=48))
    with pytest.raises(ValueError, match="multiples of 8"):
        vae.encode_to_ids(uniform_clip(height=64, width=60))


# ---- per-channel latent normalisation -------------------------------------------------------------------------------
def test_per_channel_normalisation_is_wans_mean_and_std():
    mean, std = [0.5, -1.0, 0.25, 2.0], [2.0, 0.5, 1.5, 4.0]
    backbone = {**tiny_config().backbone_config, "latents_mean": mean, "latents_std": std}
    plain = make_vae(backbone_config=backbone)
    normed = make_vae(backbone_config=backbone, latent_normalization="per_channel")
    normed.load_state_dict(plain.state_dict())
    assert plain.config.latents_mean == mean and plain.config.latents_std == std
    # What a Wan pipeline would re-apply is the identity: the latent is already normalised.
    assert normed.config.latents_mean == [0.0] * 4 and normed.config.latents_std == [1.0] * 4
    x = uniform_clip()
    z = plain.encode(x).latent_dist.mode()
    zn = normed.encode(x).latent_dist.mode()
    for c in range(4):
        assert torch.allclose(zn[:, c], (z[:, c] - mean[c]) / std[c], atol=1e-6)
    assert torch.allclose(normed.decode(zn).sample, plain.decode(z).sample, atol=1e-5)
    model = PyraTokModel(normed.pyratok_config).eval()
    model.load_state_dict(plain.state_dict())
    assert torch.allclose(model.encode(x), zn, atol=1e-6)
    assert torch.allclose(model.decode(zn), plain.decode(z).sample, atol=1e-5)


# ---- reduced precision --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_encode_and_decode_on_cpu(dtype):
    reference = make_vae()
    half = make_vae().to(dtype)
    x = uniform_clip()
    ids32 = reference.encode_to_ids(x)
    ids16 = half.encode_to_ids(x.to(dtype))
    # Rounding flips only tokens whose bit logits sit next to 0.
    agree = sum((a == b).sum().item() for a, b in zip(ids32, ids16, strict=True))
    assert agree / sum(i.numel() for i in ids32) > 0.9
    z = half.encode(x.to(dtype)).latent_dist.mode()
    assert z.dtype == dtype and z.shape == (1, 4, 2, 8, 8)
    z32 = reference.encode(x).latent_dist.mode()
    video = half.decode(z32.to(dtype)).sample
    assert video.dtype == dtype
    assert (video.float() - reference.decode(z32).sample).abs().max() < 0.05


def test_layerwise_casting_stores_the_backbone_in_fp16_and_computes_in_fp32():
    """R2: equal to an fp32 model whose cast layers hold the fp16-rounded weights (a second implementation)."""
    vae = make_vae()
    rounded = make_vae()
    vae.enable_layerwise_casting(storage_dtype=torch.float16, compute_dtype=torch.float32)
    cast = {name for name, m in vae.named_modules() if getattr(m, "_diffusers_hook", None) is not None}
    cast = {n for n in cast if vae.get_submodule(n)._diffusers_hook.get_hook("layerwise_casting") is not None}
    assert any(n.startswith("core.backbone") for n in cast)
    assert not any(n.startswith("core.quantizer") for n in cast)
    with torch.no_grad():
        for name in cast:
            for p in rounded.get_submodule(name).parameters(recurse=False):
                p.copy_(p.half().float())
    x = uniform_clip()
    z = vae.encode(x).latent_dist.mode()
    assert z.dtype == torch.float32
    assert torch.equal(z, rounded.encode(x).latent_dist.mode())
    assert torch.equal(vae.decode(z).sample, rounded.decode(z).sample)


# ---- loading: R1 (native folders), R3 (device maps), R4 (dtype), R5 (AutoModel), R6 (no checkpoint) ----------------
@pytest.mark.parametrize(
    "save_kwargs",
    [{"variant": "fp16"}, {"max_shard_size": "200KB"}, {"safe_serialization": False}],
    ids=["variant", "sharded", "bin"],
)
def test_r1_native_folders_load_through_the_base_class(save_kwargs, tmp_path):
    vae = make_vae()
    vae.save_pretrained(tmp_path, **save_kwargs)
    load_kwargs = {"variant": save_kwargs["variant"]} if "variant" in save_kwargs else {}
    back = AutoencoderPyraTok.from_pretrained(tmp_path, **load_kwargs)
    assert_same_weights(vae, back)
    if "max_shard_size" in save_kwargs:
        assert (tmp_path / "diffusion_pytorch_model.safetensors.index.json").is_file()
    if "variant" in save_kwargs:  # diffusers' own message for a folder holding only a variant
        with pytest.raises(OSError, match="no file named diffusion_pytorch_model.bin"):
            AutoencoderPyraTok.from_pretrained(tmp_path)


@pytest.mark.parametrize("save_kwargs", [{"variant": "fp16"}, {"max_shard_size": "200KB"}], ids=["variant", "sharded"])
def test_r1_transformers_native_folders(save_kwargs, tmp_path):
    torch.manual_seed(0)
    model = PyraTokModel(tiny_config()).eval()
    model.save_pretrained(tmp_path, **save_kwargs)
    load_kwargs = {"variant": save_kwargs["variant"]} if "variant" in save_kwargs else {}
    assert_same_weights(model, PyraTokModel.from_pretrained(tmp_path, **load_kwargs))


def test_r3_device_maps_that_offload_are_refused(tmp_path):
    vae = make_vae()
    vae.save_pretrained(tmp_path / "vae")
    PyraTokModel(vae.pyratok_config).save_pretrained(tmp_path / "model")
    offloading = [
        {"core.backbone": "disk", "core.quantizer": "cpu"},
        {"core.backbone": "cpu", "core.quantizer": "disk"},
    ]
    for folder in ("vae", "model"):
        for cls in (AutoencoderPyraTok, PyraTokModel):
            for device_map in offloading:
                with pytest.raises(ValueError, match="loads onto one device"):
                    cls.from_pretrained(tmp_path / folder, device_map=device_map, offload_folder=tmp_path / "off")
    # diffusers refuses "auto" for a model without `_no_split_modules`, as for AutoencoderKLWan.
    with pytest.raises(ValueError, match="auto"):
        AutoencoderPyraTok.from_pretrained(tmp_path / "vae", device_map="auto")
    x = uniform_clip()
    expected = vae.encode(x).latent_dist.mode()
    for device_map in ("cpu", {"": "cpu"}):
        loaded = AutoencoderPyraTok.from_pretrained(tmp_path / "vae", device_map=device_map)
        assert torch.equal(loaded.encode(x).latent_dist.mode(), expected)


@pytest.mark.parametrize("key", ["dtype", "torch_dtype"])
def test_r4_dtype_is_honoured_on_every_path(key, tmp_path):
    make_vae().save_pretrained(tmp_path / "vae")
    PyraTokModel(tiny_config()).save_pretrained(tmp_path / "model")
    official = write_official_folder(tmp_path / "official", official_state_dict(_official_wan()))
    for cls in (AutoencoderPyraTok, PyraTokModel):
        for folder in (tmp_path / "vae", tmp_path / "model", official):
            loaded = cls.from_pretrained(folder, **{key: torch.float16})
            assert {p.dtype for p in loaded.parameters()} == {torch.float16}, (cls.__name__, folder.name)


def _official_wan():
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    return AutoencoderKLWan(**BACKBONE).eval()


def test_r5_diffusers_automodel_loads_a_saved_vae_with_remote_code(tmp_path):
    vae = make_vae()
    vae.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {"AutoModel": "autoencoder_pyratok.AutoencoderPyraTok"}
    assert (tmp_path / "quantizer_pyratok.py").is_file()
    loaded = AutoModel.from_pretrained(str(tmp_path), trust_remote_code=True)
    assert type(loaded).__name__ == "AutoencoderPyraTok" and type(loaded) is not AutoencoderPyraTok
    assert_same_weights(vae, loaded)
    x = uniform_clip()
    assert torch.equal(loaded.encode(x).latent_dist.mode(), vae.encode(x).latent_dist.mode())
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModel.from_pretrained(str(tmp_path))
    # The auto_map entry is loading metadata: the native class reloads the folder unchanged.
    assert_same_weights(vae, AutoencoderPyraTok.from_pretrained(tmp_path))


def test_r6_from_pretrained_without_a_checkpoint():
    torch.manual_seed(0)
    model = PyraTokModel(tiny_config()).eval()
    loaded = PyraTokModel.from_pretrained(None, config=model.config, state_dict=model.state_dict())
    assert_same_weights(model, loaded)
    video = make_video(frames=5)
    assert all(torch.equal(a, b) for a, b in zip(loaded.tokenize(video).ids, model.tokenize(video).ids, strict=True))


def test_pad_helper_pads_like_replicate_padding():
    x = uniform_clip(height=72, width=56)
    assert torch.equal(pad_by_hand(x), F.pad(x, (0, 8, 0, 56, 0, 0), mode="replicate"))

"""The official release (`AutoencoderKLPyraTok`, Hub `onkarsus13/PyraTok`, `vae/`) loads, converts and reproduces
an independent reference of DESIGN §3b on a synthesized folder with the official field and key names (no network)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLWan
from safetensors.torch import load_file, save_file
from torch import nn

from modeling_pyratok import AutoencoderPyraTok, PyraTokConfig, PyraTokModel
from modeling_pyratok.convert_official import convert_official, main
from modeling_pyratok.quantizer_pyratok import PyraTokResidualQuantizer

REPO_ROOT = str(Path(__file__).resolve().parents[1])
NUM_STAGES = 4
Z_DIM = 16  # the release's z_dim and bits per stage
# A tiny Wan backbone spelled with every field the official config carries.
BACKBONE = {
    "base_dim": 8,
    "decoder_base_dim": None,
    "z_dim": Z_DIM,
    "dim_mult": [1, 2, 2, 2],
    "num_res_blocks": 1,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "latents_mean": [0.1 * i for i in range(Z_DIM)],
    "latents_std": [1.0 + 0.1 * i for i in range(Z_DIM)],
    "is_residual": False,
    "in_channels": 3,
    "out_channels": 3,
    "patch_size": None,
    "scale_factor_temporal": 4,
    "scale_factor_spatial": 8,
}
# The official quantizer fields with the values of the release's `infer.py` (text dims scaled down).
LAPQ_FIELDS = {
    "use_lapq_quantizer": True,
    "lapq_num_codes": 2**16,
    "lapq_num_quantizers": NUM_STAGES,
    "lapq_codebook_dim": 16,
    "lapq_commitment_weight": 0.8,
    "lapq_entropy_weight": 1.0,
    "lapq_inv_temperature": 100.0,
    "lapq_quantize_dropout": False,
    "lapq_quantize_dropout_cutoff_index": 0,
    "lapq_quantize_dropout_multiple_of": 1,
    "lapq_text_input_dim": 40,
    "lapq_text_embed_dim": 24,
    "lapq_text_mlp_hidden_dim": 32,
    "lapq_text_condition_heads": 2,
    "lapq_text_condition_scale": 0.7,
}
REVISION = "fedcba9876543210fedcba9876543210fedcba98"


def official_state_dict(wan: AutoencoderKLWan) -> dict[str, torch.Tensor]:
    """Backbone keys as `AutoencoderKLWan` names them + the official LaPQ buffers and (inert) text weights."""
    torch.manual_seed(1)
    state = {k: v.clone() for k, v in wan.state_dict().items()}
    d, text_in, text_embed = 16, LAPQ_FIELDS["lapq_text_input_dim"], LAPQ_FIELDS["lapq_text_embed_dim"]
    bitmask = 2 ** torch.arange(d - 1, -1, -1, dtype=torch.long)
    codebook = ((torch.arange(2**d)[:, None] & bitmask) > 0).float() * 2 - 1
    for i in range(NUM_STAGES):
        layer = nn.ModuleDict(
            {
                "cross_attn": nn.MultiheadAttention(d, LAPQ_FIELDS["lapq_text_condition_heads"], batch_first=True),
                "query_norm": nn.LayerNorm(d),
                "text_context_norm": nn.LayerNorm(d),
                "text_proj": nn.Linear(text_embed, d),
            }
        )
        state.update({f"lapq_quantizer.layers.{i}.{k}": v for k, v in layer.state_dict().items()})
        state[f"lapq_quantizer.layers.{i}.bitmask"] = bitmask.clone()
        state[f"lapq_quantizer.layers.{i}.codebook"] = codebook.clone()
    mlp = nn.Sequential(
        nn.Linear(text_in, LAPQ_FIELDS["lapq_text_mlp_hidden_dim"]),
        nn.SiLU(),
        nn.Linear(LAPQ_FIELDS["lapq_text_mlp_hidden_dim"], text_embed),
    )
    state.update({f"lapq_text_mlp.{k}": v for k, v in mlp.state_dict().items()})
    return state


def write_official_folder(folder: Path, state: dict[str, torch.Tensor], config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = config or {
        "_class_name": "AutoencoderKLPyraTok",
        "_diffusers_version": "0.36.0",
        **BACKBONE,
        **LAPQ_FIELDS,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file(
        {k: v.clone().contiguous() for k, v in state.items()}, str(folder / "diffusion_pytorch_model.safetensors")
    )
    return folder


@pytest.fixture(scope="module")
def wan() -> AutoencoderKLWan:
    torch.manual_seed(0)
    return AutoencoderKLWan(**BACKBONE).eval()


@pytest.fixture(scope="module")
def official_state(wan) -> dict[str, torch.Tensor]:
    return official_state_dict(wan)


@pytest.fixture(scope="module")
def official_repo(tmp_path_factory, official_state) -> Path:
    """A local copy of the Hub repo: `<repo>/vae/{config.json, diffusion_pytorch_model.safetensors}`."""
    root = tmp_path_factory.mktemp("official") / "PyraTok"
    write_official_folder(root / "vae", official_state)
    return root


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    coarse = torch.rand(2, 3, 5, 4, 4, generator=g) * 2 - 1
    return nn.functional.interpolate(coarse, size=(5, 32, 32), mode="trilinear").clamp(-1, 1)


def reference_residual_stages(mean: torch.Tensor, num_stages: int = NUM_STAGES) -> list[torch.Tensor]:
    """DESIGN §3b written out: stage i emits sign(r_i) (r_i >= 0 → +1) and subtracts 2**-i of it from the residual."""
    residual, stages = mean.clone(), []
    for i in range(num_stages):
        sign = torch.where(residual >= 0, torch.ones_like(residual), -torch.ones_like(residual))
        stages.append(sign)
        residual = residual - sign * 2.0**-i
    return stages


def reference_ids(sign: torch.Tensor) -> torch.Tensor:
    """Bits MSB-first from channel 0: id = sum_c [sign_c > 0] * 2**(C - 1 - c)."""
    channels = sign.shape[1]
    return sum((sign[:, c] > 0).long() * 2 ** (channels - 1 - c) for c in range(channels))


@pytest.fixture(scope="module")
def reference(wan, clip) -> dict:
    """A plain `AutoencoderKLWan` with the same backbone weights: mean → 4 sign stages → post_quant_conv/decoder."""
    with torch.no_grad():
        mean = wan.encode(clip).latent_dist.mean
        stages = reference_residual_stages(mean)
        latent = sum(s * 2.0**-i for i, s in enumerate(stages))
        video = wan.decode(latent).sample
    return {"ids": [reference_ids(s) for s in stages], "latent": latent, "video": video}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_official_folder_loads_in_both_classes_and_matches_the_reference(official_repo, clip, reference):
    vae = AutoencoderPyraTok.from_pretrained(official_repo, subfolder="vae")
    model = PyraTokModel.from_pretrained(official_repo, subfolder="vae")
    for m in (vae, model):
        assert m.config.quantizer_mode == "residual" and m.config.lora_rank == 0
        assert m.config.num_levels == NUM_STAGES and m.config.codebook_dim == Z_DIM
        assert m.config.latents_mean == BACKBONE["latents_mean"]
        assert not any(k.startswith("core.quantizer") for k in m.state_dict())

    ids = vae.encode_to_ids(clip)
    assert len(ids) == NUM_STAGES and all(i.shape == (2, 2, 4, 4) for i in ids)
    assert all(torch.equal(a, b) for a, b in zip(ids, reference["ids"], strict=True))
    tokens = model.tokenize(clip)
    assert all(torch.equal(a, b) for a, b in zip(tokens.ids, reference["ids"], strict=True))

    latent = vae.encode(clip).latent_dist.mode()
    assert _max_diff(latent, reference["latent"]) == 0.0
    for recon in (vae(clip).sample, vae.decode_from_ids(ids), model.detokenize(tokens), model(clip).reconstruction):
        assert _max_diff(recon, reference["video"]) <= 1e-6


def test_four_sign_stages_are_the_nearest_of_16_uniform_levels():
    """sum_i 2**-i sign(r_i) = nearest level in {-1.875, -1.625, ..., 1.875} (step 0.25), saturating at ±1.875."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat(
        [
            torch.randn(20000, generator=g) * 1.5,
            torch.linspace(-3, 3, 97),  # includes the level boundaries k/4 (ties round up, as sign(0) = +1)
            torch.tensor([0.0, -0.0, 2.5, -2.5, 1e6, -1e6]),
        ]
    )
    quantizer = PyraTokResidualQuantizer(num_stages=NUM_STAGES, codebook_dim=1)
    latent = quantizer(x.view(1, 1, -1, 1, 1), (x.numel(), 1, 1), compute_losses=False).latent.flatten()
    nearest = (torch.floor(x / 0.25) * 0.25 + 0.125).clamp(-1.875, 1.875)
    assert torch.equal(latent, nearest)
    assert torch.equal(latent, sum(s * 2.0**-i for i, s in enumerate(reference_residual_stages(x))))
    assert latent.unique().numel() == 16


def test_ids_read_bits_msb_first_from_channel_zero():
    mean = -torch.ones(1, Z_DIM, 1, 1, 2)
    mean[0, 0, 0, 0, 0] = 0.5  # channel 0 set → 2**15
    mean[0, Z_DIM - 1, 0, 0, 1] = 0.0  # last channel set (value 0 counts as +1) → 1
    quantizer = PyraTokResidualQuantizer(num_stages=NUM_STAGES, codebook_dim=Z_DIM)
    out = quantizer([mean], (1, 1, 2), compute_losses=False)
    assert out.ids[0].tolist() == [[[[2**15, 1]]]]
    # Stage 1 sees mean - sign(mean): +0.5 - 1 < 0 and -1 + 1 = 0 → +1 everywhere but the two stage-0 positives.
    assert out.ids[1].tolist() == [[[[2**16 - 1 - 2**15, 2**16 - 1 - 1]]]]
    codes = quantizer.ids_to_codes(list(out.ids))
    assert torch.equal(quantizer.codes_to_latent(codes), out.latent)


def test_conversion_round_trip_is_exact(official_repo, clip, reference, tmp_path):
    out = tmp_path / "native"
    main([str(official_repo), str(out), "--subfolder", "vae"])
    config = json.loads((out / "config.json").read_text())
    assert config["quantizer_mode"] == "residual" and config["model_type"] == "pyratok"
    assert not any(k.startswith(("lapq", "core.quantizer")) for k in load_file(out / "model.safetensors"))
    card = (out / "README.md").read_text()
    assert "onkarsus13/PyraTok" in card and "PLAN-Lab/PyraTok" in card and "icence" in card

    official = AutoencoderPyraTok.from_pretrained(official_repo, subfolder="vae")
    for cls in (PyraTokModel, AutoencoderPyraTok):
        converted = cls.from_pretrained(out)
        assert converted.config.quantizer_mode == "residual"
        state, ref_state = converted.state_dict(), official.state_dict()
        assert state.keys() == ref_state.keys() and all(torch.equal(state[k], ref_state[k]) for k in state)
    vae = AutoencoderPyraTok.from_pretrained(out)
    ids = vae.encode_to_ids(clip)
    assert all(torch.equal(a, b) for a, b in zip(ids, reference["ids"], strict=True))
    assert torch.equal(vae.decode_from_ids(ids), official.decode_from_ids(official.encode_to_ids(clip)))


def test_converter_rejects_a_native_folder(tmp_path):
    from tests.conftest import tiny_config

    PyraTokModel(tiny_config()).save_pretrained(tmp_path / "native")
    with pytest.raises(ValueError, match="not an official AutoencoderKLPyraTok"):
        convert_official(tmp_path / "native", tmp_path / "out")


def _renamed(state, old, new):
    state = dict(state)
    state[new] = state.pop(old)
    return state


@pytest.mark.parametrize(
    "corrupt, named",
    [
        (lambda s: _renamed(s, "decoder.conv_out.weight", "decoder.conv_final.weight"), "decoder.conv_final.weight"),
        (lambda s: {k: v for k, v in s.items() if k != "encoder.conv_in.bias"}, "encoder.conv_in.bias"),
        (lambda s: {**s, "lapq_extra_head.weight": torch.zeros(2)}, "lapq_extra_head.weight"),
        (lambda s: {**s, "lapq_quantizer.layers.4.bitmask": s["lapq_quantizer.layers.0.bitmask"]}, "layers.4.bitmask"),
        (lambda s: {k: v for k, v in s.items() if k != "lapq_quantizer.layers.2.codebook"}, "layers.2.codebook"),
        (lambda s: {**s, "lapq_quantizer.layers.1.bitmask": torch.arange(16)}, "layers.1.bitmask"),
        (lambda s: {**s, "decoder.conv_out.bias": torch.zeros(5)}, "decoder.conv_out.bias"),
    ],
    ids=["renamed", "missing", "unknown", "extra-stage", "missing-buffer", "wrong-buffer", "wrong-shape"],
)
@pytest.mark.parametrize("cls", [AutoencoderPyraTok, PyraTokModel])
def test_a_corrupted_key_set_fails_naming_the_key(cls, corrupt, named, official_state, tmp_path):
    folder = write_official_folder(tmp_path / "vae", corrupt(official_state))
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        cls.from_pretrained(folder)


@pytest.mark.parametrize(
    "change, named",
    [
        ({"lapq_fancy_option": 3}, "lapq_fancy_option"),
        ({"use_lapq_quantizer": False}, "use_lapq_quantizer"),
        ({"lapq_codebook_dim": 8, "lapq_num_codes": 256}, "lapq_codebook_dim=8"),
        ({"lapq_num_codes": 1000}, "lapq_num_codes=1000"),
    ],
)
def test_an_official_config_we_cannot_honour_fails_naming_the_field(change, named, official_state, tmp_path):
    config = {"_class_name": "AutoencoderKLPyraTok", **BACKBONE, **LAPQ_FIELDS, **change}
    folder = write_official_folder(tmp_path / "vae", official_state, config)
    with pytest.raises(ValueError, match=named):
        AutoencoderPyraTok.from_pretrained(folder)


def test_text_is_inert_and_loads_no_text_encoder(official_repo, clip, reference):
    vae = AutoencoderPyraTok.from_pretrained(official_repo, subfolder="vae")
    ids = vae.encode_to_ids(clip, text="a dog runs on the beach")
    assert all(torch.equal(a, b) for a, b in zip(ids, reference["ids"], strict=True))
    assert vae.core.text_encoder is None


def test_residual_mode_config_validation():
    backbone = {k: v for k, v in BACKBONE.items() if v is not None}
    base = {"backbone_config": backbone, "quantizer_mode": "residual", "lora_rank": 0}
    assert PyraTokConfig(**base).level_spatial_strides == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="lora_rank=16"):
        PyraTokConfig(**{**base, "lora_rank": 16})
    with pytest.raises(ValueError, match="codebook_dim=8"):
        PyraTokConfig(**{**base, "codebook_dim": 8})
    with pytest.raises(ValueError, match="level_spatial_strides"):
        PyraTokConfig(**{**base, "level_spatial_strides": [1, 2, 4, 8]})


def test_hub_id_resolves_through_an_offline_hf_cache(official_repo, clip, reference, tmp_path):
    """The literal `from_pretrained("onkarsus13/PyraTok", subfolder="vae")` a user types, from a laid-out cache."""
    repo = tmp_path / "hub" / "models--onkarsus13--PyraTok"
    snapshot = repo / "snapshots" / REVISION / "vae"
    snapshot.mkdir(parents=True)
    for f in (official_repo / "vae").iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    torch.save({"clip": clip, "ids": reference["ids"], "video": reference["video"]}, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import torch
        from modeling_pyratok import AutoencoderPyraTok, PyraTokModel
        torch.set_num_threads({torch.get_num_threads()})  # the reference's thread count: same conv kernels
        ref = torch.load({str(tmp_path / "expected.pt")!r})
        vae = AutoencoderPyraTok.from_pretrained("onkarsus13/PyraTok", subfolder="vae")
        ids = vae.encode_to_ids(ref["clip"])
        assert all(torch.equal(a, b) for a, b in zip(ids, ref["ids"])), "ids differ"
        assert (vae.decode_from_ids(ids) - ref["video"]).abs().max() <= 1e-6
        model = PyraTokModel.from_pretrained("onkarsus13/PyraTok", subfolder="vae")
        assert all(torch.equal(a, b) for a, b in zip(model.tokenize(ref["clip"]).ids, ref["ids"]))
        print("OK")
        """
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": REPO_ROOT}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")

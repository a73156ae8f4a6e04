"""`AutoencoderPyraTok`: PyraTok's diffusers face, call-compatible with `AutoencoderKL` / `AutoencoderKLWan`."""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import AutoencoderMixin, DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.accelerate_utils import apply_forward_hook

from .backbone_pyratok import PyraTokBackboneFeatures
from .checkpoint_pyratok import (
    check_loaded_weights,
    check_single_device,
    checkpoint_mismatch_message,
    load_state_dict_strict,
    place_loaded_model,
    read_foreign_pretrained,
    write_remote_code,
)
from .configuration_pyratok import PyraTokConfig, config_field_names
from .modeling_pyratok import PyraTokCore, TextInput, check_prompt_sequence

# diffusers' remote-code loader (`AutoModel.from_pretrained(folder, trust_remote_code=True)`) copies only the files
# this module imports directly, so every package file the class needs is named here.
from .quantizer_pyratok import PyraTokLaPQ  # noqa: F401, E402
from .text_encoder_pyratok import PyraTokTextEncoder  # noqa: F401, E402
from .tokens_pyratok import PyraTokLevelIds, PyraTokTokenLayout

# diffusers' AutoencoderKLWan tiling defaults, in pixels.
DEFAULT_TILE_SAMPLE_SIZE = 256
DEFAULT_TILE_SAMPLE_STRIDE = 192


def _config_signature() -> inspect.Signature:
    """`__init__(self, *, <every PyraTokConfig field>=<its default>)`: diffusers registers exactly this vocabulary."""
    defaults = {f.name: f.default for f in dataclasses.fields(PyraTokConfig)}
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults[name])
        for name in config_field_names()
    ]
    return inspect.Signature(params)


def _blend(a: torch.Tensor, b: torch.Tensor, extent: int, dim: int) -> torch.Tensor:
    """Linearly cross-fade the last `extent` slices of `a` into the first `extent` slices of `b` along `dim`."""
    extent = min(a.shape[dim], b.shape[dim], extent)
    if extent == 0:
        return b
    ramp_shape = [1] * b.ndim
    ramp_shape[dim] = extent
    ramp = torch.arange(extent, device=b.device, dtype=b.dtype).div(extent).view(ramp_shape)
    b = b.clone()
    head = b.narrow(dim, 0, extent)
    head.copy_(a.narrow(dim, a.shape[dim] - extent, extent) * (1 - ramp) + head * ramp)
    return b


def _split_text(text: TextInput, batch_size: int) -> list[TextInput]:
    """Per-item text for batch slicing (a single prompt or None applies to every item)."""
    if text is None or isinstance(text, str):
        return [text] * batch_size
    text = check_prompt_sequence(text)
    if len(text) != batch_size:
        raise ValueError(f"got {len(text)} prompts for a batch of {batch_size} videos")
    return [[t] for t in text]


class AutoencoderPyraTok(ModelMixin, AutoencoderMixin, ConfigMixin):
    r"""PyraTok as a diffusers VAE: drop-in for `AutoencoderKLWan` in a pipeline, plus a discrete-token API.

    `encode(x).latent_dist` is deterministic (`sample() == mode() == ẑ`, the fused quantized latent, in the backbone's
    latent space, so `latents_mean` / `latents_std` normalisation works as for Wan); `decode(z)` runs the frozen Wan
    decoder. `encode_to_ids` / `decode_from_ids` give the per-level token ids for autoregressive or discrete-diffusion
    priors. Images `(B, C, H, W)` are 1-frame videos (4-D in, 4-D out). Registered config = `PyraTokConfig` fields,
    so a folder saved by `PyraTokModel` loads here and vice versa.
    """

    _supports_gradient_checkpointing = False
    # No `_no_split_modules` (as `AutoencoderKLWan`): `device_map="auto"` is refused, and `from_pretrained` refuses any
    # map that splits or offloads the model (`check_single_device`).
    # Layerwise casting (fp8/fp16 storage) stays out of the quantizer: it is small, its LFQ math is fp32, and
    # `nn.MultiheadAttention` reads its output projection's weight without that module's casting hook.
    _skip_layerwise_casting_patterns = ["quantizer"]

    def __init__(self, **kwargs: Any):
        super().__init__()
        self.pyratok_config = PyraTokConfig(**kwargs)
        # Register the resolved values (backbone defaults, z_dim, latents_mean, ...) that pipelines read from config.
        self.register_to_config(**self.pyratok_config.to_init_kwargs())
        self.core = PyraTokCore(self.pyratok_config)
        self.temperal_downsample = list(self.pyratok_config.backbone_config["temperal_downsample"])
        self.spatial_compression_ratio = self.pyratok_config.scale_factor_spatial
        self.temporal_compression_ratio = self.pyratok_config.scale_factor_temporal
        self.use_slicing = False
        self.use_tiling = False
        self.tile_sample_min_height = self.tile_sample_min_width = DEFAULT_TILE_SAMPLE_SIZE
        self.tile_sample_stride_height = self.tile_sample_stride_width = DEFAULT_TILE_SAMPLE_STRIDE

    # Set before `register_to_config` wraps `__init__`, which reads the signature to decide what to register.
    __init__.__signature__ = _config_signature()
    __init__ = register_to_config(__init__)

    # ---- loading ------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, subfolder: str | None = None, **kwargs: Any
    ) -> AutoencoderPyraTok:
        """Load a PyraTok checkpoint written by either class; a weight that does not fit raises `ValueError`.

        Folders in diffusers' own layout (variants, shards with an index, `.bin`) load through `ModelMixin`. A folder
        saved by `PyraTokModel`, and the official release (`"onkarsus13/PyraTok"`, `subfolder="vae"`, an
        `AutoencoderKLPyraTok` folder, converted on the fly to `quantizer_mode="residual"`, DESIGN §3b), are read
        here; `dtype` / `torch_dtype` and a one-device `device_map` apply to both. A `device_map` that splits or
        offloads the model raises `ValueError`.
        """
        check_single_device(kwargs.get("device_map"))
        source = str(pretrained_model_name_or_path)
        foreign = read_foreign_pretrained(source, subfolder, "diffusers", **kwargs)
        if foreign is not None:
            fields, state = foreign
            model = cls(**fields)
            load_state_dict_strict(model, state, source)
            return place_loaded_model(model, kwargs).eval()
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, subfolder=subfolder, output_loading_info=True, **kwargs
        )
        bad = [info.get(k) or [] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")]
        if any(bad):
            raise ValueError(checkpoint_mismatch_message(str(pretrained_model_name_or_path), *bad))
        check_loaded_weights(model, source, subfolder)
        return (model, info) if want_info else model

    @classmethod
    def extract_init_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        # `auto_map` (written by `save_pretrained` for diffusers' `AutoModel`) is loading metadata, not an init arg.
        return super().extract_init_dict({k: v for k, v in config_dict.items() if k != "auto_map"}, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """`ModelMixin.save_pretrained`, plus this package's code files and an `auto_map` entry in `config.json`, so
        that `diffusers.AutoModel.from_pretrained(folder, trust_remote_code=True)` resolves the class (diffusers'
        `AutoModel` otherwise looks `_class_name` up in `diffusers` itself)."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_remote_code(save_directory, __file__, "autoencoder_pyratok.AutoencoderPyraTok")

    # ---- tiling -----------------------------------------------------------------------------------------------------
    def enable_tiling(
        self,
        tile_sample_min_height: int | None = None,
        tile_sample_min_width: int | None = None,
        tile_sample_stride_height: int | None = None,
        tile_sample_stride_width: int | None = None,
    ) -> None:
        """Encode and decode in overlapping spatial tiles (pixels), blended linearly, to bound memory.

        Tile sizes and strides must be multiples of `spatial_multiple` (backbone factor x deepest level stride) so
        that every tile is a valid PyraTok input. Encoding tiles the backbone encoder (where the memory goes),
        blends every tap, and runs LaPQ once on the whole grid. Tiles see less context than the whole frame, so the
        result is close to, not equal to, untiled output: the tests hold the mean absolute difference under 20% of
        the mean absolute value (tiny preset, random weights, 50% overlap; measured 14% latent, 8.5% pixels). Token ids
        (`encode_to_ids`) are always computed untiled.
        """
        sizes = {
            "tile_sample_min_height": tile_sample_min_height or self.tile_sample_min_height,
            "tile_sample_min_width": tile_sample_min_width or self.tile_sample_min_width,
            "tile_sample_stride_height": tile_sample_stride_height or self.tile_sample_stride_height,
            "tile_sample_stride_width": tile_sample_stride_width or self.tile_sample_stride_width,
        }
        m = self.pyratok_config.spatial_multiple
        bad = {k: v for k, v in sizes.items() if v % m or v <= 0}
        if bad:
            raise ValueError(f"tile sizes and strides must be positive multiples of {m}; got {bad}")
        if sizes["tile_sample_stride_height"] > sizes["tile_sample_min_height"] or (
            sizes["tile_sample_stride_width"] > sizes["tile_sample_min_width"]
        ):
            raise ValueError(f"tile strides must not exceed tile sizes (tiles would leave gaps); got {sizes}")
        for k, v in sizes.items():
            setattr(self, k, v)
        self.use_tiling = True
        self.core.backbone.vae.enable_tiling(**sizes)

    def disable_tiling(self) -> None:
        self.use_tiling = False
        self.core.backbone.vae.disable_tiling()

    # ---- encode -----------------------------------------------------------------------------------------------------
    def _encode_latent(self, x: torch.Tensor, text: TextInput) -> torch.Tensor:
        return self.core.quantize(x, text=text)[0].latent

    def _tiled_encode_latent(self, x: torch.Tensor, text: TextInput) -> torch.Tensor:
        """Run the backbone encoder on overlapping pixel tiles, blend every tap, then run LaPQ on the whole grid.

        The encoder is where memory goes (full-resolution activations); LaPQ works on pooled tokens and is cheap, and
        running it once on the blended taps lets the deep levels see the whole frame, as they do untiled.
        """
        th, tw = self.tile_sample_min_height, self.tile_sample_min_width
        sh, sw = self.tile_sample_stride_height, self.tile_sample_stride_width
        height, width = x.shape[-2:]
        tiles = [
            [
                self.core.backbone.encode_features(x[..., top : top + th, left : left + tw])
                for left in range(0, width, sw)
            ]
            for top in range(0, height, sh)
        ]
        num_maps = len(tiles[0][0].features) + 1  # every tap, then the posterior moments

        def tile_map(tile, k: int) -> torch.Tensor:
            return tile.features[k] if k < num_maps - 1 else tile.moments

        blended = []
        for k in range(num_maps):
            # A map at 1/f of the pixel resolution: strides, overlaps and the final size scale by f.
            f = min(th, height) // tile_map(tiles[0][0], k).shape[-2]
            rows = []
            for i, row in enumerate(tiles):
                pieces = []
                for j, tile in enumerate(row):
                    piece = tile_map(tile, k)
                    if i > 0:
                        piece = _blend(tile_map(tiles[i - 1][j], k), piece, (th - sh) // f, dim=-2)
                    if j > 0:
                        piece = _blend(tile_map(row[j - 1], k), piece, (tw - sw) // f, dim=-1)
                    pieces.append(piece[..., : sh // f, : sw // f])
                rows.append(torch.cat(pieces, dim=-1))
            blended.append(torch.cat(rows, dim=-2)[..., : height // f, : width // f])
        feats = PyraTokBackboneFeatures(features=tuple(blended[:-1]), moments=blended[-1])
        embeds, mask, present = self.core.text_condition(x.shape[0], x.device, text)
        return self.core.quantize_features(feats, embeds, mask, present, compute_losses=False).latent

    def _encode(self, x: torch.Tensor, text: TextInput) -> torch.Tensor:
        height, width = x.shape[-2:]
        if self.use_tiling and (height > self.tile_sample_min_height or width > self.tile_sample_min_width):
            self._check_tileable(height, width)
            return self._tiled_encode_latent(x, text)
        return self._encode_latent(x, text)

    def _check_tileable(self, height: int, width: int) -> None:
        # Edge tiles are cut at the border; each must still be a valid PyraTok input.
        m = self.pyratok_config.spatial_multiple
        for size, stride, name in (
            (height, self.tile_sample_stride_height, "H"),
            (width, self.tile_sample_stride_width, "W"),
        ):
            if any((size - start) % m for start in range(0, size, stride)):
                raise ValueError(f"{name}={size} cannot be tiled with stride {stride} into multiples of {m}")

    @apply_forward_hook
    def encode(
        self, x: torch.Tensor, return_dict: bool = True, text: TextInput = None
    ) -> AutoencoderKLOutput | tuple[DiagonalGaussianDistribution]:
        """Encode videos `(B, C, T, H, W)` or images `(B, C, H, W)` in [-1, 1].

        Args:
            x: Input pixels; `T = 4k + 1`, H and W multiples of the backbone factor `f = config.scale_factor_spatial`
                (replicate-padded to `pyratok_config.spatial_multiple` for the token grid, the latent then cropped).
            return_dict: Return an `AutoencoderKLOutput` (else a 1-tuple).
            text: Optional prompt(s) steering the quantization (`str`, one per item, or None).

        Returns:
            `latent_dist`: a deterministic `DiagonalGaussianDistribution` over `ẑ (B, z_dim, T', H / f, W / f)`,
            per-channel normalised when `config.latent_normalization="per_channel"`.
        """
        x5, is_image = self.core.check_video(x, name="x", pad=True)
        x5, frame_size = self.core.pad_frames(x5)
        if self.use_slicing and x5.shape[0] > 1:
            texts = _split_text(text, x5.shape[0])
            z = torch.cat([self._encode(xi, ti) for xi, ti in zip(x5.split(1), texts, strict=True)])
        else:
            z = self._encode(x5, text)
        z = self.core.normalize_latent(self.core.crop_latent(z, frame_size))
        if is_image:
            z = z[:, :, 0]
        posterior = DiagonalGaussianDistribution(torch.cat([z, torch.zeros_like(z)], dim=1), deterministic=True)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    # ---- decode -----------------------------------------------------------------------------------------------------
    @apply_forward_hook
    def decode(
        self, z: torch.Tensor, return_dict: bool = True, generator: torch.Generator | None = None
    ) -> DecoderOutput | tuple[torch.Tensor]:
        """Decode latents `(B, z_dim, T', H', W')` (or `(B, z_dim, H', W')`) to pixels in [-1, 1].

        Any `H', W'` decode (to `f·H' x f·W'`); a per-channel normalised latent is de-normalised first. `generator` is
        accepted for `AutoencoderKL` call compatibility; decoding is deterministic.
        """
        z5, is_image = self.core.check_latent(z)
        z5 = self.core.denormalize_latent(z5)
        if self.use_slicing and z5.shape[0] > 1:
            video = torch.cat([self.core.decode_latent(zi) for zi in z5.split(1)])
        else:
            video = self.core.decode_latent(z5)
        if is_image:
            video = video[:, :, 0]
        return DecoderOutput(sample=video) if return_dict else (video,)

    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
        text: TextInput = None,
    ) -> DecoderOutput | tuple[torch.Tensor]:
        """Encode then decode (`sample_posterior` is accepted for compatibility: the posterior is deterministic)."""
        posterior = self.encode(sample, text=text).latent_dist
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        return self.decode(z, return_dict=return_dict)

    # ---- discrete tokens ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_to_ids(self, x: torch.Tensor, text: TextInput = None) -> PyraTokLevelIds:
        """Pixels → one int64 id tensor per level `(B, T', H_l, W_l)` in `[0, 2**codebook_dim)`, shallow to deep.

        H and W need only be multiples of the backbone factor: the frames are replicate-padded to
        `pyratok_config.spatial_multiple` and the ids cover the padded frame (pass `frame_size=(H, W)` to
        `decode_from_ids` to crop the video back). Runs untiled: token grids are not blended across tiles. The list
        remembers an image input (`is_image`), so `decode_from_ids` returns images for it.
        """
        x5, is_image = self.core.check_video(x, name="x", pad=True)
        x5, _ = self.core.pad_frames(x5)
        return PyraTokLevelIds(self.core.quantize(x5, text=text)[0].ids, is_image=is_image)

    @torch.no_grad()
    def decode_from_ids(
        self,
        ids: Sequence[torch.Tensor],
        is_image: bool | None = None,
        frame_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Per-level ids (as `encode_to_ids` returns) → video `(B, C, T, H, W)` in [-1, 1].

        Args:
            ids: one `(B, T', H_l, W_l)` tensor per level.
            is_image: return images `(B, C, H, W)` (needs `T' = 1`). `None` (default): `ids.is_image` when `ids` came
                from `encode_to_ids` (4-D in → 4-D out), else video.
            frame_size: `(H, W)` of the frames that were encoded, when they were padded: the video is cropped to it.
        """
        is_image = bool(getattr(ids, "is_image", False)) if is_image is None else is_image
        if not isinstance(is_image, bool):
            raise ValueError(f"is_image must be a bool or None, got {is_image!r}")
        video = self.core.crop_frames(self.core.decode_latent(self.core.ids_to_latent(list(ids))), frame_size)
        if is_image and video.shape[2] != 1:
            raise ValueError(f"is_image=True needs ids of one latent frame, got T'={ids[0].shape[1]}")
        return video[:, :, 0] if is_image else video

    def iter_encode_to_ids(
        self, x: torch.Tensor | Iterable[torch.Tensor], text: TextInput = None, chunk_latent_frames: int = 1
    ) -> Iterator[list[torch.Tensor]]:
        """Streaming `encode_to_ids`: one causal piece at a time, with flat memory in the clip length.

        Args:
            x: a whole clip `(B, C, T, H, W)` (or images `(B, C, H, W)`) in [-1, 1], or an iterable of consecutive runs
                of its frames `(B, C, t_i, H, W)`, consumed lazily (e.g. decoded from a file run by run).
            text: optional prompt(s), encoded once for the whole stream.
            chunk_latent_frames: latent frames per piece after the first.

        Returns:
            An iterator of per-level id lists `(B, t', H_l, W_l)`: latent frame 0 first, then pieces of
            `chunk_latent_frames` latent frames; concatenated along `t'` they equal `encode_to_ids(whole clip)`.
        """
        pieces = self.core.iter_tokenize(x, text=text, chunk_latent_frames=chunk_latent_frames, name="x")
        return (PyraTokLevelIds(piece.ids, is_image=piece.is_image) for piece in pieces)

    def iter_decode_from_ids(
        self, ids: Sequence[torch.Tensor] | Iterable[Sequence[torch.Tensor]], chunk_latent_frames: int = 1
    ) -> Iterator[torch.Tensor]:
        """Streaming `decode_from_ids`: the decoder keeps its causal cache between pieces.

        Args:
            ids: a whole clip's per-level ids (cut here into latent frame 0, then pieces of `chunk_latent_frames`
                latent frames), or an iterable of consecutive pieces' id lists, e.g. `iter_encode_to_ids`'s output.
            chunk_latent_frames: latent frames per piece when cutting a whole clip's ids.

        Returns:
            An iterator over each piece's frames `(B, C, n, H, W)` in [-1, 1]; concatenated along time they equal
            `decode_from_ids(whole ids)`.
        """
        return self.core.iter_detokenize(ids, chunk_latent_frames)

    # ---- token sequences (for priors; see tokens_pyratok.py) --------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        """Code ids per level token: `2**codebook_dim`."""
        return self.core.codebook_size

    @property
    def mask_token_id(self) -> int:
        """The `[MASK]` id of masked / discrete-diffusion priors: `codebook_size` (outside the code ids)."""
        return self.core.mask_token_id

    def token_layout(
        self,
        num_frames: int,
        height: int,
        width: int,
        order: str = "frame_major",
        pad_to_square: bool = False,
        is_image: bool = False,
        separators: bool = False,
    ) -> PyraTokTokenLayout:
        """The `PyraTokTokenLayout` of a clip `(T, H, W)` (`num_frames=1, is_image=True` for images); `order` is
        `"frame_major"`, `"level_major"` or `"planes"`, `separators` adds `<SOI>` / `<Q-SEP>` to `"level_major"`."""
        return self.core.token_layout(num_frames, height, width, order, pad_to_square, is_image, separators)

    @torch.no_grad()
    def encode_to_sequence(
        self,
        x: torch.Tensor,
        text: TextInput = None,
        order: str = "frame_major",
        pad_to_square: bool = False,
        separators: bool = False,
    ) -> tuple[torch.Tensor, PyraTokTokenLayout]:
        """Video `(B, C, T, H, W)` or images `(B, C, H, W)` in [-1, 1] (+ optional text) → one id sequence per clip.

        Returns:
            `(seq, layout)`: `seq` int64 `(B, layout.seq_len)`, `layout` the `PyraTokTokenLayout` that undoes it.
        """
        ids = self.encode_to_ids(x, text=text)
        layout = self.core.input_token_layout(x, order, pad_to_square, separators)
        return layout.flatten(ids), layout

    @torch.no_grad()
    def decode_from_sequence(self, seq: torch.Tensor, layout: PyraTokTokenLayout) -> torch.Tensor:
        """Id sequences `(B, layout.seq_len)` → video `(B, C, T, H, W)` in [-1, 1] (`(B, C, H, W)` for an image
        layout); equals `decode_from_ids` of the unflattened ids."""
        return self.core.decode_sequence(seq, layout)

    def embed_ids(self, ids: torch.Tensor, space: str = "bits") -> torch.Tensor:
        """Code vectors of ids `(...)` for a prior: `"bits"` → ±1 `(..., codebook_dim)`, `"semantic"` → `W_c` code
        embedding `(..., semantic_dim)` (pyramid mode only)."""
        return self.core.embed_ids(ids, space)


__all__ = ["AutoencoderPyraTok"]

"""Frozen Wan VAE backbone with encoder stage taps and LoRA on every encoder conv (DESIGN.md §2)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import (
    WanCausalConv3d,
    WanResample,
    WanResidualDownBlock,
    patchify,
    unpatchify,
)
from diffusers.utils import BaseOutput
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora.layer import Conv3d as PeftLoraConv3d
from peft.tuners.lora.layer import LoraLayer

from .checkpoint_pyratok import checkpoint_mismatch_message

LORA_ADAPTER_NAME = "default"


@dataclass
class PyraTokBackboneFeatures(BaseOutput):
    """Encoder taps of one clip.

    Args:
        features: Stage outputs `F1..F_S` shallow to deep, each `(B, C_s, T_s, H_s, W_s)`; the last one is the
            encoder output (`2 * z_dim` channels on the latent grid).
        moments: Posterior parameters `(B, 2 * z_dim, T', H', W')` after `quant_conv` (mean, then log-variance).
    """

    features: tuple[torch.Tensor, ...] = ()
    moments: torch.Tensor | None = None


def _causal_conv_padding(conv: WanCausalConv3d) -> tuple[int, int, int]:
    # WanCausalConv3d zeroes `padding` and keeps (w, w, h, h, 2*t, 0) in `_padding`; recover the (t, h, w) it had.
    pad = conv._padding
    return (pad[4] // 2, pad[2], pad[0])


class PyraTokLoraCausalConv3d(PeftLoraConv3d):
    """LoRA for `WanCausalConv3d`, registered with peft's custom-module API.

    peft's own Conv3d LoRA rebuilds `lora_A` as `type(base_layer)(..., bias=False)`, which `WanCausalConv3d` rejects,
    and it would call `lora_A(x)` without the causal cache. Here `lora_A` is a causal conv with the base conv's kernel,
    stride and padding that receives the same `cache_x`, and `lora_B` is a zero-initialised 1x1x1 conv, so a fresh
    adapter leaves the encoder's output bit-identical.
    """

    def update_layer(self, adapter_name: str, r: int, lora_alpha: int, config: LoraConfig, **kwargs: Any) -> None:
        if r <= 0:
            raise ValueError(f"LoRA rank must be positive, got r={r}")
        base = self.get_base_layer()
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = lora_alpha
        self.lora_dropout[adapter_name] = nn.Dropout(config.lora_dropout) if config.lora_dropout > 0 else nn.Identity()
        self.lora_A[adapter_name] = WanCausalConv3d(
            self.in_features, r, base.kernel_size, stride=base.stride, padding=_causal_conv_padding(base)
        )
        # lora_A inherits a bias from nn.Conv3d; LoRA's down-projection has none.
        self.lora_A[adapter_name].bias = None
        self.lora_B[adapter_name] = nn.Conv3d(r, self.out_features, 1, bias=False)
        self.lora_bias[adapter_name] = False
        self.use_rslora[adapter_name] = config.use_rslora
        self.use_dora[adapter_name] = False
        self.scaling[adapter_name] = lora_alpha / (math.sqrt(r) if config.use_rslora else r)
        self.reset_lora_parameters(adapter_name, config.init_lora_weights)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        # lora_B is 1x1x1, so the composed kernel is a plain channel mix of lora_A's kernel (exact for every kernel
        # shape; peft's generic conv path special-cases 2-D 1x1 kernels and mis-shapes 3-D ones).
        a, b = self.lora_A[adapter].weight, self.lora_B[adapter].weight
        return torch.einsum("or,rikhw->oikhw", b.flatten(1).float(), a.float()).to(a.dtype) * self.scaling[adapter]

    def forward(self, x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
        result = self.base_layer(x, cache_x)
        if self.disable_adapters or self.merged:
            return result
        for name in self.active_adapters:
            if name not in self.lora_A:
                continue
            lora_x = self._cast_input_dtype(x, self.lora_A[name].weight.dtype)
            lora_cache = None if cache_x is None else cache_x.to(lora_x.dtype)
            # Dropout on the current chunk only: the cached frames were already seen (and dropped) last chunk.
            down = self.lora_A[name](self.lora_dropout[name](lora_x), lora_cache)
            result = result + (self.lora_B[name](down) * self.scaling[name]).to(result.dtype)
        return result


def causal_conv_cache(module: nn.Module) -> list[torch.Tensor | None]:
    """A fresh feature cache for streaming through Wan's encoder or decoder: one slot per causal conv.

    Wan's blocks index the cache by call order (`feat_idx`), so slots for LoRA's own causal convs (which receive their
    base conv's cache instead) simply stay unused. A local cache, unlike `AutoencoderKLWan._enc_feat_map` /
    `_feat_map`, lets an encoder and a decoder stream interleave without clearing each other's state.
    """
    return [None] * sum(isinstance(m, WanCausalConv3d) for m in module.modules())


def encoder_conv_names(encoder: nn.Module) -> list[str]:
    """Names of every conv in the Wan encoder (causal 3D convs, resample and attention 2D convs)."""
    return [name for name, m in encoder.named_modules() if isinstance(m, WanCausalConv3d | nn.Conv2d)]


def encoder_stage_taps(encoder: nn.Module) -> list[nn.Module]:
    """The last module of each spatially downsampling encoder stage (`F1..F_{S-1}`), shallow to deep."""
    taps = []
    for block in encoder.down_blocks:
        if isinstance(block, WanResample) and block.mode.startswith("downsample"):
            taps.append(block)
        elif isinstance(block, WanResidualDownBlock) and block.downsampler is not None:
            taps.append(block)
    return taps


class PyraTokBackbone(nn.Module):
    """A frozen diffusers `AutoencoderKLWan` whose encoder exposes its stage features and carries LoRA adapters.

    Args:
        backbone_config: `AutoencoderKLWan` init args.
        lora_rank: LoRA rank on every encoder conv (0: no LoRA).
        lora_alpha: LoRA alpha (scaling = alpha / rank).
        lora_dropout: Dropout on the LoRA branch input.
    """

    def __init__(
        self, backbone_config: dict[str, Any], lora_rank: int = 16, lora_alpha: int = 32, lora_dropout: float = 0.0
    ):
        super().__init__()
        self.vae = AutoencoderKLWan(**backbone_config)
        self.lora_rank = lora_rank
        if lora_rank > 0:
            lora_config = LoraConfig(
                r=lora_rank,
                lora_alpha=lora_alpha,
                lora_dropout=lora_dropout,
                target_modules=encoder_conv_names(self.vae.encoder),
                init_lora_weights=True,
            )
            lora_config._register_custom_module({WanCausalConv3d: PyraTokLoraCausalConv3d})
            inject_adapter_in_model(lora_config, self.vae.encoder, adapter_name=LORA_ADAPTER_NAME)
        self.freeze_pretrained()

    def freeze_pretrained(self) -> None:
        """`requires_grad=False` on every pretrained Wan weight, `True` on the LoRA adapters.

        Called at construction, and again by `PyraTokModel.from_pretrained`: transformers materialises loaded weights
        as new parameters (default `requires_grad=True`), which would otherwise fine-tune the backbone the paper keeps
        frozen whenever training starts from a saved checkpoint.
        """
        for name, param in self.vae.named_parameters():
            param.requires_grad_("lora_" in name)

    @property
    def z_dim(self) -> int:
        return self.vae.config.z_dim

    @property
    def temporal_chunk(self) -> int:
        """Frames per causal encoder chunk after the first frame (the temporal compression factor)."""
        return 2 ** sum(self.vae.config.temperal_downsample)

    def feature_channels(self) -> list[int]:
        """Channels of `F1..F_S` (stage outputs, then the encoder output)."""
        dims = [self.vae.config.base_dim * m for m in self.vae.config.dim_mult]
        return dims[: len(encoder_stage_taps(self.vae.encoder))] + [2 * self.z_dim]

    def feature_strides(self) -> list[tuple[int, int]]:
        """`(temporal, spatial)` compression of `F1..F_S` and the encoder output against the input video.

        Tap `F_i` follows the i-th downsampling stage (spatial 2^i, times the patch size; temporal 2 for each earlier
        stage that also halves time); the encoder output sits at the latent's `(scale_factor_temporal,
        scale_factor_spatial)`.
        """
        config = self.vae.config
        patch = config.patch_size or 1
        halvings = list(config.temperal_downsample)
        num_taps = len(encoder_stage_taps(self.vae.encoder))
        strides = [(2 ** sum(halvings[:i]), patch * 2**i) for i in range(1, num_taps + 1)]
        return strides + [(2 ** sum(halvings), patch * 2 ** len(halvings))]

    def lora_parameters(self) -> Iterator[nn.Parameter]:
        for name, param in self.vae.encoder.named_parameters():
            if "lora_" in name:
                yield param

    def wan_state_dict(self) -> dict[str, torch.Tensor]:
        """The frozen backbone's weights under plain `AutoencoderKLWan` key names (LoRA wrappers and adapters out)."""
        # LoRA wraps encoder convs: their frozen weights live under `.base_layer`.
        return {k.replace(".base_layer", ""): v for k, v in self.vae.state_dict().items() if "lora_" not in k}

    def frozen_wan_vae(self) -> AutoencoderKLWan:
        """A standalone diffusers `AutoencoderKLWan` holding the frozen backbone's weights (LoRA adapters left out),
        on the backbone's device and dtype: the pretrained VAE this backbone was loaded from."""
        reference = next(self.vae.parameters())
        vae = AutoencoderKLWan.from_config(self.vae.config)
        vae.load_state_dict(self.wan_state_dict())
        return vae.to(device=reference.device, dtype=reference.dtype)

    def load_wan_state_dict(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load plain `AutoencoderKLWan` weights into the frozen backbone; any key mismatch raises `ValueError`."""
        own = {k.replace(".base_layer", ""): k for k in self.vae.state_dict() if "lora_" not in k}
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(checkpoint_mismatch_message(source, missing, unexpected, []))
        self.vae.load_state_dict({own[k]: v for k, v in state.items()}, strict=False)

    @contextlib.contextmanager
    def lora_disabled(self) -> Iterator[None]:
        """Run the encoder as the frozen pretrained one (adapters bypassed) inside this block."""
        layers = [m for m in self.vae.encoder.modules() if isinstance(m, LoraLayer)]
        for layer in layers:
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(True)

    @contextlib.contextmanager
    def merged_lora(self) -> Iterator[None]:
        """Fold the adapters into the frozen conv weights inside this block (inference speed: no LoRA branch).

        The original weights are restored exactly on exit (copied back, not un-merged by subtraction).
        """
        layers = [m for m in self.vae.encoder.modules() if isinstance(m, LoraLayer) and not m.merged]
        saved = [m.get_base_layer().weight.detach().clone() for m in layers]
        try:
            with torch.no_grad():
                for layer in layers:
                    layer.merge()
            yield
        finally:
            with torch.no_grad():
                for layer, weight in zip(layers, saved, strict=True):
                    layer.get_base_layer().weight.copy_(weight)
                    layer.merged_adapters.clear()

    def encode_features(self, x: torch.Tensor) -> PyraTokBackboneFeatures:
        """Encode a clip in Wan's causal chunks (first frame, then `temporal_chunk` frames) and collect stage taps.

        Args:
            x: `(B, C, T, H, W)` in [-1, 1] with `T = temporal_chunk * k + 1` (validated by the callers).

        Returns:
            `PyraTokBackboneFeatures` with per-chunk tap outputs concatenated along time.
        """
        vae = self.vae
        if vae.config.patch_size is not None:
            x = patchify(x, patch_size=vae.config.patch_size)
        taps = encoder_stage_taps(vae.encoder)
        collected: list[list[torch.Tensor]] = [[] for _ in taps]
        # Hooks live only for this call: no state survives on the module (deepcopy, pickling and FSDP stay simple).
        handles = [
            tap.register_forward_hook(lambda _m, _inp, out, i=i: collected[i].append(out))
            for i, tap in enumerate(taps)
        ]
        vae.clear_cache()
        try:
            chunk = self.temporal_chunk
            starts = [0] + list(range(1, x.shape[2], chunk))
            outs = []
            for start in starts:
                vae._enc_conv_idx = [0]
                stop = 1 if start == 0 else start + chunk
                outs.append(vae.encoder(x[:, :, start:stop], feat_cache=vae._enc_feat_map, feat_idx=vae._enc_conv_idx))
        finally:
            for handle in handles:
                handle.remove()
            vae.clear_cache()
        enc = torch.cat(outs, dim=2)
        features = tuple(torch.cat(parts, dim=2) for parts in collected) + (enc,)
        return PyraTokBackboneFeatures(features=features, moments=vae.quant_conv(enc))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decode a latent `(B, z_dim, T', H', W')` to a video `(B, C, T, H, W)` clamped to [-1, 1].

        Uses the backbone's own tiling when `self.vae.use_tiling` is on.
        """
        return self.vae._decode(z).sample

    # ---- streaming (causal chunks, flat memory) ------------------------------------------------------------------
    def iter_encode_features(self, x: torch.Tensor, chunks_per_step: int = 1) -> Iterator[PyraTokBackboneFeatures]:
        """`encode_features` in pieces: latent frame 0 first, then `chunks_per_step` latent frames per step.

        The encoder's causal cache persists between yields, so concatenating the yielded features along time gives
        `encode_features(x)`; only one piece's activations are alive at a time.

        Args:
            x: `(B, C, T, H, W)` in [-1, 1] with `T = temporal_chunk * k + 1` (validated by the callers).
            chunks_per_step: latent frames (causal chunks of `temporal_chunk` input frames) per yield after the first.

        Yields:
            `PyraTokBackboneFeatures` of input frame 0, then of input frames
            `[1 + i * temporal_chunk * chunks_per_step, ...)`; taps `(B, C_s, T_s, H_s, W_s)` with the piece's frames.
        """
        if not isinstance(chunks_per_step, int) or chunks_per_step < 1:
            raise ValueError(f"chunks_per_step must be a positive int, got {chunks_per_step!r}")
        step = self.temporal_chunk * chunks_per_step
        pieces = [x[:, :, :1]] + [x[:, :, start : start + step] for start in range(1, x.shape[2], step)]
        return self.encode_feature_stream(pieces)

    def encode_feature_stream(self, pieces: Iterable[torch.Tensor]) -> Iterator[PyraTokBackboneFeatures]:
        """Encode a clip given as consecutive pieces of frames, one yield per piece, with a persistent causal cache.

        Args:
            pieces: `(B, C, t_i, H, W)` in [-1, 1]: the first piece is frame 0 alone (`t_0 = 1`), every later one a
                positive multiple of `temporal_chunk` frames. Consumed lazily: frames need not all be in memory.

        Yields:
            `PyraTokBackboneFeatures` of each piece (`t_0 = 1` → 1 latent frame, later `t_i / temporal_chunk`).
        """
        vae = self.vae
        taps = encoder_stage_taps(vae.encoder)
        chunk = self.temporal_chunk
        cache = causal_conv_cache(vae.encoder)
        try:
            for index, piece in enumerate(pieces):
                frames = piece.shape[2] if isinstance(piece, torch.Tensor) and piece.ndim == 5 else None
                if frames is None or (index == 0 and frames != 1) or (index > 0 and (frames < 1 or frames % chunk)):
                    shape = tuple(piece.shape) if isinstance(piece, torch.Tensor) else type(piece).__name__
                    rule = "frame 0 alone (t = 1)" if index == 0 else f"a positive multiple of {chunk} frames"
                    raise ValueError(f"piece {index} of the encoder stream has shape {shape}; it must be {rule}")
                if vae.config.patch_size is not None:
                    piece = patchify(piece, patch_size=vae.config.patch_size)
                collected: list[list[torch.Tensor]] = [[] for _ in taps]
                # Hooks live for one piece only: nothing is registered while the generator is suspended, so other
                # encoder calls in between are not collected.
                handles = [
                    tap.register_forward_hook(lambda _m, _inp, out, store=store: store.append(out))
                    for tap, store in zip(taps, collected, strict=True)
                ]
                span = 1 if index == 0 else chunk
                try:
                    outs = [
                        vae.encoder(piece[:, :, start : start + span], feat_cache=cache, feat_idx=[0])
                        for start in range(0, frames, span)
                    ]
                finally:
                    for handle in handles:
                        handle.remove()
                enc = torch.cat(outs, dim=2)
                features = tuple(torch.cat(parts, dim=2) for parts in collected) + (enc,)
                yield PyraTokBackboneFeatures(features=features, moments=vae.quant_conv(enc))
        finally:
            cache.clear()

    def iter_decode(self, latents: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Decode a latent clip piece by piece with a persistent causal cache (flat memory for long clips).

        Latent frame 0 goes through the decoder with `first_chunk=True` (it becomes one video frame), every later
        latent frame becomes `temporal_chunk` frames, as in `AutoencoderKLWan._decode`; concatenating the yields
        along time gives `decode(z)`. Tiling (`vae.use_tiling`) is not applied here.

        Args:
            latents: consecutive pieces `(B, z_dim, t_i, H', W')`, `t_i >= 1`, of one latent clip; consumed lazily.

        Yields:
            Per piece, its video frames `(B, C, n_i, H, W)` clamped to [-1, 1] (`n_i = temporal_chunk * t_i`, minus
            `temporal_chunk - 1` for the first piece), unpatchified when the backbone has a `patch_size`.
        """
        vae = self.vae
        cache = causal_conv_cache(vae.decoder)
        expected: tuple[int, ...] | None = None
        try:
            first = True
            for index, z in enumerate(latents):
                if not isinstance(z, torch.Tensor) or z.ndim != 5 or z.shape[1] != self.z_dim or z.shape[2] < 1:
                    shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
                    raise ValueError(
                        f"latent piece {index} has shape {shape}; expected (B, z_dim={self.z_dim}, t >= 1, H', W')"
                    )
                layout = (z.shape[0], z.shape[3], z.shape[4])
                if expected is None:
                    expected = layout
                elif layout != expected:
                    raise ValueError(f"latent piece {index} has (B, H', W') = {layout}; earlier pieces had {expected}")
                x = vae.post_quant_conv(z.to(vae.dtype))  # a 1x1x1 conv: per frame, no cache needed
                outs = []
                for t in range(x.shape[2]):
                    outs.append(vae.decoder(x[:, :, t : t + 1], feat_cache=cache, feat_idx=[0], first_chunk=first))
                    first = False
                out = torch.cat(outs, dim=2)
                if vae.config.patch_size is not None:
                    out = unpatchify(out, patch_size=vae.config.patch_size)
                yield out.clamp(-1.0, 1.0)
        finally:
            cache.clear()


__all__ = [
    "PyraTokBackbone",
    "PyraTokBackboneFeatures",
    "PyraTokLoraCausalConv3d",
    "causal_conv_cache",
    "encoder_conv_names",
    "encoder_stage_taps",
]

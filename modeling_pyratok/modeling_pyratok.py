"""PyraTok: language-aligned pyramidal video tokenizer, `transformers` face (`PyraTokModel`) and the shared core."""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from huggingface_hub import HfApi, ModelCard, ModelCardData
from transformers import PreTrainedModel
from transformers.utils import ModelOutput, logging

from .backbone_pyratok import PyraTokBackbone, PyraTokBackboneFeatures
from .checkpoint_pyratok import (
    check_loaded_weights,
    check_single_device,
    checkpoint_mismatch_message,
    load_state_dict_strict,
    place_loaded_model,
    read_foreign_pretrained,
)
from .configuration_pyratok import PyraTokConfig, backbone_config_differences
from .quantizer_pyratok import (
    PyraTokLaPQ,
    PyraTokQuantizerOutput,
    PyraTokResidualQuantizer,
)
from .text_encoder_pyratok import PyraTokTextEncoder
from .tokens_pyratok import PyraTokTokenLayout, ids_to_bits

logger = logging.get_logger(__name__)

# Values more than this outside [-1, 1] mean the caller passed [0, 1] or [0, 255] pixels, not a rounding slip.
_RANGE_TOLERANCE = 1e-3

TextInput = str | Sequence[str | None] | None


def check_prompt_sequence(text: Any) -> list:
    """A per-item prompt sequence (list / tuple) as a list; `ValueError` naming the type for anything else: a set has
    no order to match prompts to items, bytes or an int are no prompts."""
    if not isinstance(text, list | tuple):
        raise ValueError(
            f"text is a {type(text).__name__}; pass a str, a list / tuple of str (or None) with one per item, or None"
        )
    return list(text)

MODEL_CARD_TEMPLATE = """# PyraTok

A language-aligned pyramidal video tokenizer (CVPR 2026, *PyraTok: Language-Aligned Pyramidal Tokenizer for Video
Understanding and Generation*), packaged with the `pyratok` library.

- Backbone: {backbone}, frozen, LoRA on the encoder.
- LaPQ: {levels} levels (strides {strides} over the latent grid), text cross-attention per level, a shared
  lookup-free codebook of {bits} bits ({codes} codes).
- Text encoder (frozen, not stored here): `{text_encoder}`.

## Use

```python
from modeling_pyratok import AutoencoderPyraTok, PyraTokModel

model = PyraTokModel.from_pretrained("<this repo>")   # or AutoModel.from_pretrained(..., trust_remote_code=True)
tokens = model.tokenize(video, text="a prompt")  # (B, 3, 4k+1, H, W) in [-1, 1]; H, W multiples of {multiple}
video_hat = model.detokenize(tokens)
vae = AutoencoderPyraTok.from_pretrained("<this repo>")  # the same weights as a diffusers VAE
```

Training data, procedure and evaluation: not recorded by `save_pretrained`; add them before publishing.
"""


@dataclass
class PyraTokOutput(ModelOutput):
    """Output of `PyraTokModel.forward`.

    Args:
        loss: `codebook_weight * quantizer loss + latent_loss_weight * latent loss` (scalar); reconstruction, AR and
            drift terms are added by `training/`.
        losses: Unweighted named breakdown (quantizer terms and `"latent"`).
        reconstruction: `(B, 3, T, H, W)` in [-1, 1] (`(B, 3, H, W)` for image input).
        latent: Fused decoder latent `(B, z_dim, T', H', W')`.
        codes: Per level `(B, codebook_dim, T', H_l, W_l)` in {-1, +1}.
        ids: Per level `(B, T', H_l, W_l)` int64 in `[0, 2**codebook_dim)`.
    """

    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None
    reconstruction: torch.Tensor | None = None
    latent: torch.Tensor | None = None
    codes: tuple[torch.Tensor, ...] | None = None
    ids: tuple[torch.Tensor, ...] | None = None


@dataclass
class PyraTokTokens:
    """Discrete tokens of a batch of clips: what `tokenize` returns and `detokenize` takes.

    Args:
        ids: One int64 tensor per pyramid level (shallow to deep), `(B, T', H_l, W_l)`, in `[0, 2**codebook_dim)`.
        latent_size: `(T', H', W')`, the decoder latent grid (of the padded frame, see `frame_size`).
        is_image: Whether the input was `(B, 3, H, W)` images (then `detokenize` returns images).
        frame_size: `(H, W)` of the input frames when they were padded to `config.spatial_multiple` before encoding
            (the ids cover the padded frame; `detokenize` crops back to this size); None when nothing was padded.
    """

    ids: list[torch.Tensor]
    latent_size: tuple[int, int, int]
    is_image: bool = False
    frame_size: tuple[int, int] | None = None


class PyraTokCore(nn.Module):
    """Backbone + LaPQ + validation, shared by `PyraTokModel` and `AutoencoderPyraTok` (one weight layout).

    Args:
        config: A `PyraTokConfig`.
    """

    def __init__(self, config: PyraTokConfig):
        super().__init__()
        self.config = config
        self.backbone = PyraTokBackbone(
            config.backbone_config,
            lora_rank=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
        )
        self.quantizer = self._build_quantizer(config)
        # A plain attribute, not a submodule: the frozen text encoder never enters the state dict.
        self.text_encoder: PyraTokTextEncoder | None = None

    def _build_quantizer(self, config: PyraTokConfig) -> PyraTokLaPQ | PyraTokResidualQuantizer:
        if config.quantizer_mode == "residual":
            return PyraTokResidualQuantizer(
                num_stages=config.num_levels,
                codebook_dim=config.codebook_dim,
                bit_inverse_temperature=config.bit_inverse_temperature,
                entropy_mode=config.entropy_mode,
                entropy_num_groups=config.entropy_num_groups,
                commitment_weight=config.commitment_weight,
                entropy_weight=config.entropy_weight,
            )
        channels = self.backbone.feature_channels()[-config.num_levels :]
        taps = self.backbone.feature_strides()[-config.num_levels :]
        # (g, f) from each level's tap to its grid: the latent's compression times the level stride, over the tap's.
        reductions = [
            (config.scale_factor_temporal // t, config.scale_factor_spatial * level_stride // s)
            for (t, s), level_stride in zip(taps, config.level_spatial_strides, strict=True)
        ]
        return PyraTokLaPQ(
            feature_channels=channels,
            lateral_pooling=config.lateral_pooling,
            feature_reductions=reductions,
            z_dim=config.z_dim,
            text_embed_dim=config.text_embed_dim,
            level_spatial_strides=config.level_spatial_strides,
            hidden_size=config.hidden_size,
            num_heads=config.num_attention_heads,
            mlp_ratio=config.mlp_ratio,
            codebook_dim=config.codebook_dim,
            semantic_dim=config.semantic_dim,
            fusion_hidden_size=config.fusion_hidden_size,
            bit_inverse_temperature=config.bit_inverse_temperature,
            entropy_mode=config.entropy_mode,
            entropy_num_groups=config.entropy_num_groups,
            commitment_weight=config.commitment_weight,
            entropy_weight=config.entropy_weight,
            hierarchical_weight=config.hierarchical_weight,
            text_alignment_weight=config.text_alignment_weight,
            text_codebook_weight=config.text_codebook_weight,
        )

    # ---- input validation -------------------------------------------------------------------------------------
    @property
    def video_channels(self) -> int:
        bb = self.config.backbone_config
        return bb["in_channels"] // (bb.get("patch_size") or 1) ** 2

    def check_video(
        self, pixel_values: Any, name: str = "pixel_values", pad: bool = False
    ) -> tuple[torch.Tensor, bool]:
        """Validate a video `(B, C, T, H, W)` or image batch `(B, C, H, W)` in [-1, 1].

        `pad=False`: H and W must be multiples of `config.spatial_multiple`. `pad=True`: multiples of the backbone
        factor `config.scale_factor_spatial` suffice (the caller pads with `pad_frames`).

        Returns:
            The input as a 5-D tensor in the model's dtype, and whether it was a 4-D image batch.
        """
        if not isinstance(pixel_values, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(pixel_values).__name__}")
        if not pixel_values.is_floating_point():
            raise ValueError(
                f"{name} has dtype {pixel_values.dtype}; pass float pixels in [-1, 1] (e.g. uint8 / 127.5 - 1)"
            )
        if pixel_values.ndim not in (4, 5):
            raise ValueError(
                f"{name} has shape {tuple(pixel_values.shape)}; expected (B, C, T, H, W) videos or (B, C, H, W) images"
            )
        is_image = pixel_values.ndim == 4
        x = pixel_values.unsqueeze(2) if is_image else pixel_values
        b, c, t, h, w = x.shape
        if b == 0:
            raise ValueError(f"{name} has an empty batch: shape {tuple(pixel_values.shape)}")
        if c != self.video_channels:
            raise ValueError(f"{name} has {c} channels; this model takes {self.video_channels}")
        if 0 in (t, h, w):
            raise ValueError(f"{name} has shape {tuple(pixel_values.shape)}: T, H and W must all be >= 1")
        chunk = self.backbone.temporal_chunk
        if (t - 1) % chunk:
            lo = (t - 1) // chunk * chunk + 1
            raise ValueError(
                f"{name} has T={t} frames; PyraTok needs T = {chunk}k + 1 (e.g. {lo} or {lo + chunk}): the backbone "
                f"encodes the first frame alone, then chunks of {chunk}"
            )
        m = self.config.scale_factor_spatial if pad else self.config.spatial_multiple
        if h % m or w % m:
            why = (
                f"the backbone factor; they are then padded to multiples of {self.config.spatial_multiple}"
                if pad
                else f"backbone factor {self.config.scale_factor_spatial} x deepest level stride "
                f"{max(self.config.level_spatial_strides)}"
            )
            raise ValueError(f"{name} has H x W = {h} x {w}; both must be multiples of {m} ({why})")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or Inf values")
        lo, hi = x.min().item(), x.max().item()
        if lo < -1 - _RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
            raise ValueError(f"{name} values span [{lo:.3g}, {hi:.3g}]; PyraTok takes pixels in [-1, 1]")
        return x.to(self.backbone.vae.dtype), is_image

    def pad_frames(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int] | None]:
        """Replicate-pad a validated clip `(B, C, T, H, W)` at the bottom and right to multiples of
        `config.spatial_multiple`, so every pyramid level gets a whole token grid.

        Returns:
            The padded clip and the original `(H, W)`, or the clip itself and None when no padding was needed.
        """
        height, width = x.shape[-2:]
        m = self.config.spatial_multiple
        pad_h, pad_w = -height % m, -width % m
        if not pad_h and not pad_w:
            return x, None
        # replicate padding on CPU lacks some reduced-precision kernels: pad in fp32.
        padded = F.pad(x.float(), (0, pad_w, 0, pad_h, 0, 0), mode="replicate").to(x.dtype)
        return padded, (height, width)

    def crop_latent(self, latent: torch.Tensor, frame_size: tuple[int, int] | None) -> torch.Tensor:
        """Crop a latent `(B, z_dim, T', H'_pad, W'_pad)` of a padded clip to the frame's `(H / f, W / f)` grid."""
        if frame_size is None:
            return latent
        f = self.config.scale_factor_spatial
        return latent[..., : -(-frame_size[0] // f), : -(-frame_size[1] // f)]

    @staticmethod
    def crop_frames(video: torch.Tensor, frame_size: tuple[int, int] | None) -> torch.Tensor:
        """Crop decoded frames `(..., H_pad, W_pad)` back to `frame_size = (H, W)` (None: unchanged)."""
        if frame_size is None:
            return video
        height, width = (int(s) for s in frame_size)
        if height < 1 or width < 1 or height > video.shape[-2] or width > video.shape[-1]:
            raise ValueError(
                f"frame_size={tuple(frame_size)} does not fit the decoded frames {tuple(video.shape[-2:])}"
            )
        return video[..., :height, :width]

    def normalize_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """`latent_normalization="per_channel"`: `(z - mean) / std` with the backbone's statistics; else unchanged."""
        if self.config.latent_normalization == "none":
            return latent
        mean, std = self._latent_stats(latent)
        return (latent - mean) / std

    def denormalize_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Inverse of `normalize_latent`: `z * std + mean` in per-channel mode; else unchanged."""
        if self.config.latent_normalization == "none":
            return latent
        mean, std = self._latent_stats(latent)
        return latent * std + mean

    def _latent_stats(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Channel axis 1 of a 5-D latent; the backbone's own statistics (the top-level ones read 0 / 1 here).
        shape = (1, -1) + (1,) * (latent.ndim - 2)
        bb = self.config.backbone_config
        mean = torch.tensor(bb["latents_mean"], device=latent.device, dtype=latent.dtype).view(shape)
        std = torch.tensor(bb["latents_std"], device=latent.device, dtype=latent.dtype).view(shape)
        return mean, std

    def latent_size(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        s = self.config.scale_factor_spatial
        return ((num_frames - 1) // self.backbone.temporal_chunk + 1, height // s, width // s)

    # ---- text ---------------------------------------------------------------------------------------------------
    def get_text_encoder(self) -> PyraTokTextEncoder:
        """The frozen text encoder, loaded on first use from `config.text_encoder_name_or_path`."""
        if self.text_encoder is None:
            encoder = PyraTokTextEncoder.from_name_or_path(
                self.config.text_encoder_name_or_path, max_length=self.config.text_max_length
            )
            self.set_text_encoder(encoder)
        return self.text_encoder

    def set_text_encoder(self, encoder: PyraTokTextEncoder) -> None:
        if encoder.embed_dim != self.config.text_embed_dim:
            raise ValueError(
                f"text encoder hidden size {encoder.embed_dim} != config.text_embed_dim={self.config.text_embed_dim}"
            )
        self.text_encoder = encoder

    def text_condition(
        self,
        batch_size: int,
        device: torch.device,
        text: TextInput = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """Turn one of (prompts | token ids | embeddings | nothing) into text embeddings for the quantizer.

        Returns:
            `text_embeds (B, L, D)` float32 or None, `mask (B, L)` bool or None, `present (B,)` bool (False → the
            learned null-text embedding stands in for that item).
        """
        given = [
            n for n, v in (("text", text), ("input_ids", input_ids), ("text_embeds", text_embeds)) if v is not None
        ]
        if len(given) > 1:
            raise ValueError(f"pass at most one of text, input_ids, text_embeds; got {given}")
        if self.config.quantizer_mode == "residual":
            # The released checkpoint's text path is inert (DESIGN §3b): never load a text encoder for it.
            if given:
                logger.warning_once(
                    "quantizer_mode='residual' ignores text: the released PyraTok weights are not text-conditioned"
                )
            return None, None, torch.zeros(batch_size, dtype=torch.bool, device=device)
        present = torch.ones(batch_size, dtype=torch.bool, device=device)
        embeds = mask = None
        if text is not None:
            prompts = [text] * batch_size if isinstance(text, str) else check_prompt_sequence(text)
            if len(prompts) != batch_size:
                raise ValueError(f"got {len(prompts)} prompts for a batch of {batch_size} videos")
            for i, p in enumerate(prompts):
                if p is not None and not isinstance(p, str):
                    raise ValueError(f"text[{i}] is {type(p).__name__}; prompts are str or None")
                if p is not None and not p.strip():
                    raise ValueError(f"text[{i}] is empty; pass None (not '') to encode that item without text")
            present = torch.tensor([p is not None for p in prompts], dtype=torch.bool, device=device)
            if present.any():
                # Items without text get a placeholder prompt whose embedding the null embedding then replaces.
                embeds, mask = self.get_text_encoder()([p if p is not None else " " for p in prompts], device)
        elif input_ids is not None:
            if input_ids.ndim != 2 or input_ids.shape[0] != batch_size:
                raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}; expected ({batch_size}, L)")
            embeds, mask = self.get_text_encoder().embed_ids(input_ids, attention_mask, device)
        elif text_embeds is not None:
            embeds, mask = self._check_text_embeds(text_embeds, text_attention_mask, batch_size, device)
        else:
            present = torch.zeros(batch_size, dtype=torch.bool, device=device)
        if embeds is not None and self.training and self.config.text_dropout > 0:
            present = present & (torch.rand(batch_size, device=device) >= self.config.text_dropout)
        return embeds, mask, present

    def _check_text_embeds(
        self, text_embeds: torch.Tensor, mask: torch.Tensor | None, batch_size: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.config.text_embed_dim
        if text_embeds.ndim != 3 or text_embeds.shape[0] != batch_size or text_embeds.shape[2] != d:
            raise ValueError(f"text_embeds has shape {tuple(text_embeds.shape)}; expected ({batch_size}, L, {d})")
        if text_embeds.shape[1] == 0:
            raise ValueError("text_embeds has no tokens (L=0); pass None to encode without text")
        if not torch.isfinite(text_embeds).all():
            raise ValueError("text_embeds contains NaN or Inf values")
        if mask is None:
            mask = torch.ones(text_embeds.shape[:2], dtype=torch.bool, device=device)
        elif tuple(mask.shape) != tuple(text_embeds.shape[:2]):
            raise ValueError(
                f"text_attention_mask has shape {tuple(mask.shape)}; expected {tuple(text_embeds.shape[:2])}"
            )
        mask = mask.to(device).bool()
        if not mask.any(dim=1).all():
            empty = torch.nonzero(~mask.any(dim=1)).flatten().tolist()
            raise ValueError(f"text_attention_mask masks every token of items {empty}; pass None for no text")
        return text_embeds.to(device=device, dtype=torch.float32), mask

    # ---- encode / decode ----------------------------------------------------------------------------------------
    def quantize(
        self,
        x: torch.Tensor,
        compute_losses: bool = False,
        text: TextInput = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
    ) -> tuple[PyraTokQuantizerOutput, torch.Tensor]:
        """Text conditioning + backbone + quantizer on a validated 5-D clip (text arguments as `text_condition`).

        Returns:
            The quantizer output and the posterior moments `(B, 2 * z_dim, T', H', W')`.
        """
        embeds, mask, present = self.text_condition(
            x.shape[0], x.device, text, input_ids, attention_mask, text_embeds, text_attention_mask
        )
        feats = self.backbone.encode_features(x)
        return self.quantize_features(feats, embeds, mask, present, compute_losses), feats.moments

    def quantize_features(
        self,
        feats: PyraTokBackboneFeatures,
        text_embeds,
        text_mask,
        present,
        compute_losses: bool,
        first_frame: bool = True,
    ) -> PyraTokQuantizerOutput:
        """Run LaPQ on backbone taps (the deepest `num_levels` of them) on the latent grid of `feats.moments`.

        In residual mode the quantizer reads the posterior mean instead (DESIGN §3b). `first_frame=False`: the
        features are a later piece of a streamed clip (no frame 0).
        """
        if self.config.quantizer_mode == "residual":
            mean = feats.moments[:, : self.config.z_dim]
            return self.quantizer([mean], tuple(mean.shape[2:]), text_embeds=None, compute_losses=compute_losses)
        taps = feats.features[len(feats.features) - self.config.num_levels :]
        return self.quantizer(
            list(taps),
            tuple(feats.moments.shape[2:]),
            text_embeds=text_embeds,
            text_attention_mask=text_mask,
            text_present=present,
            compute_losses=compute_losses,
            first_frame=first_frame,
        )

    def frozen_posterior_mean(self, x: torch.Tensor, moments: torch.Tensor) -> torch.Tensor:
        """The pretrained (LoRA-free) encoder's posterior mean: the target of the auxiliary latent loss."""
        if self.config.lora_rank == 0:
            return moments[:, : self.config.z_dim].detach()
        with torch.no_grad(), self.backbone.lora_disabled():
            return self.backbone.encode_features(x).moments[:, : self.config.z_dim]

    def check_latent(self, latent: Any) -> tuple[torch.Tensor, bool]:
        if not isinstance(latent, torch.Tensor) or latent.ndim not in (4, 5):
            shape = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
            raise ValueError(f"latent must be a (B, z_dim, T', H', W') or (B, z_dim, H', W') tensor, got {shape}")
        if latent.shape[1] != self.config.z_dim:
            raise ValueError(f"latent has {latent.shape[1]} channels; z_dim={self.config.z_dim}")
        if not torch.isfinite(latent).all():
            raise ValueError("latent contains NaN or Inf values")
        is_image = latent.ndim == 4
        return (latent.unsqueeze(2) if is_image else latent), is_image

    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """`(B, z_dim, T', H', W')` → `(B, C, T, H, W)` in [-1, 1]."""
        return self.backbone.decode(latent.to(self.backbone.vae.dtype))

    def ids_to_latent(self, ids: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-level ids → the fused decoder latent `(B, z_dim, T', H', W')` (layout checked by `check_ids_layout`,
        values by the quantizer)."""
        ids = self.check_ids_layout(ids)
        t, h, w = ids[0].shape[1:]
        s0 = self.config.level_spatial_strides[0]
        codes = self.quantizer.ids_to_codes(list(ids))
        return self.quantizer.codes_to_latent(codes, (t, h * s0, w * s0))

    # ---- streaming (causal chunks, flat memory) ------------------------------------------------------------------
    def check_chunk_latent_frames(self, chunk_latent_frames: Any) -> int:
        if type(chunk_latent_frames) is not int or chunk_latent_frames < 1:  # bool is no count
            raise ValueError(f"chunk_latent_frames must be a positive int, got {chunk_latent_frames!r}")
        return chunk_latent_frames

    def check_frames(self, frames: Any, name: str = "pixel_values") -> torch.Tensor:
        """Validate a run of `t >= 1` consecutive frames `(B, C, t, H, W)` of a longer clip.

        Every frame must pass `check_video` as a 1-frame clip (float, channels, H and W multiples, finite, [-1, 1]);
        the `T = 4k + 1` rule applies to the whole stream, not to one run of it.

        Returns:
            The frames in the model's dtype.
        """
        if not isinstance(frames, torch.Tensor) or frames.ndim != 5 or frames.shape[2] < 1:
            shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise ValueError(f"{name} must be a (B, C, t, H, W) tensor of t >= 1 frames, got {shape}")
        for t in range(frames.shape[2]):
            self.check_video(frames[:, :, t : t + 1], name)
        return frames.to(self.backbone.vae.dtype)

    def causal_pieces(
        self, runs: Iterable[torch.Tensor], chunk_latent_frames: int = 1, name: str = "pixel_values"
    ) -> Iterator[torch.Tensor]:
        """Validate a clip arriving as runs of frames and re-cut it into the encoder's causal pieces.

        Args:
            runs: consecutive runs `(B, C, t_i, H, W)` in [-1, 1] of one clip, any `t_i >= 1`, with
                `sum_i t_i = temporal_chunk * k + 1`; consumed lazily.
            chunk_latent_frames: latent frames per piece after the first.

        Yields:
            Frame 0 `(B, C, 1, H, W)`, then runs of `temporal_chunk * chunk_latent_frames` frames (the last one may be
            shorter, a multiple of `temporal_chunk`), in the model's dtype. A total frame count that is not
            `temporal_chunk * k + 1` raises `ValueError` once the runs are exhausted.
        """
        chunk = self.backbone.temporal_chunk
        step = chunk * self.check_chunk_latent_frames(chunk_latent_frames)
        buffer: list[torch.Tensor] = []
        buffered = total = 0
        need = 1  # frame 0 is a piece of its own
        layout = None
        for index, run in enumerate(runs):
            run = self.check_frames(run, f"{name}[{index}]")
            this = (run.shape[0], run.shape[3], run.shape[4])
            if layout is None:
                layout = this
            elif this != layout:
                raise ValueError(f"{name}[{index}] has (B, H, W) = {this}; the runs before it had {layout}")
            buffer.append(run)
            buffered += run.shape[2]
            total += run.shape[2]
            while buffered >= need:
                joined = torch.cat(buffer, dim=2) if len(buffer) > 1 else buffer[0]
                yield joined[:, :, :need]
                buffer = [joined[:, :, need:]] if buffered > need else []
                buffered -= need
                need = step
        if total == 0:
            raise ValueError(f"{name} holds no frames")
        if buffered % chunk:
            lo = (total - 1) // chunk * chunk + 1
            raise ValueError(
                f"{name} has T={total} frames; PyraTok needs T = {chunk}k + 1 (e.g. {lo} or {lo + chunk}): the "
                f"backbone encodes the first frame alone, then chunks of {chunk}"
            )
        if buffered:
            yield torch.cat(buffer, dim=2)

    def quantize_stream(
        self,
        features: Iterable[PyraTokBackboneFeatures],
        text_embeds: torch.Tensor | None,
        text_mask: torch.Tensor | None,
        present: torch.Tensor,
    ) -> Iterator[tuple[PyraTokQuantizerOutput, torch.Tensor]]:
        """Quantize a clip piece by piece from streamed backbone features (`backbone.encode_feature_stream`).

        LaPQ works per latent frame (laterals within causal chunks, per-token text attention, spatial-only fusion),
        so each piece's ids equal the whole clip's ids for those latent frames.

        Args:
            features: the pieces' features: frame 0's first, then later pieces of `t'` latent frames each.
            text_embeds, text_mask, present: from `text_condition` (computed once for the whole stream).

        Yields:
            `(quantizer output without losses, moments (B, 2 * z_dim, t', H', W'))` per piece.
        """
        for index, feats in enumerate(features):
            out = self.quantize_features(
                feats, text_embeds, text_mask, present, compute_losses=False, first_frame=index == 0
            )
            yield out, feats.moments

    def check_ids_layout(self, ids: Any, name: str = "ids") -> list[torch.Tensor]:
        """Cheap shape check of a whole clip's per-level ids (count, 4-D, one T', the pyramid's grids).

        Values are checked piece by piece when decoding. Returns the ids as a list.
        """
        if not isinstance(ids, list | tuple) or len(ids) != self.config.num_levels:
            found = len(ids) if isinstance(ids, list | tuple) else type(ids).__name__
            raise ValueError(f"{name}: expected {self.config.num_levels} id tensors (one per level), got {found}")
        for level, level_ids in enumerate(ids):
            if not isinstance(level_ids, torch.Tensor) or level_ids.ndim != 4:
                shape = tuple(level_ids.shape) if isinstance(level_ids, torch.Tensor) else type(level_ids).__name__
                raise ValueError(f"{name}: level {level} must be a (B, T', H_l, W_l) tensor, got {shape}")
            if level_ids.shape[:2] != ids[0].shape[:2] or level_ids.shape[1] < 1:
                raise ValueError(
                    f"{name}: level {level} has (B, T') = {tuple(level_ids.shape[:2])}, level 0 has "
                    f"{tuple(ids[0].shape[:2])}; every level needs the same B and T' >= 1"
                )
        batch, frames, height, width = ids[0].shape
        s0 = self.config.level_spatial_strides[0]
        grids = self.quantizer.level_grid((frames, height * s0, width * s0))
        for level, (level_ids, grid) in enumerate(zip(ids, grids, strict=True)):
            if tuple(level_ids.shape) != (batch, *grid):
                raise ValueError(
                    f"{name}: level {level} has shape {tuple(level_ids.shape)}; the pyramid expects {(batch, *grid)} "
                    f"given level 0's {tuple(ids[0].shape)} and strides {list(self.quantizer.level_spatial_strides)}"
                )
        return list(ids)

    # ---- streaming (shared by PyraTokModel.iter_tokenize and AutoencoderPyraTok.iter_encode_to_ids) ----------------
    def iter_tokenize(
        self,
        pixel_values: torch.Tensor | Iterable[torch.Tensor],
        text: TextInput = None,
        chunk_latent_frames: int = 1,
        text_embeds: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        name: str = "pixel_values",
    ) -> Iterator[PyraTokTokens]:
        """Video (or runs of its frames) → `PyraTokTokens` one causal piece at a time.

        Arguments and results as `PyraTokModel.iter_tokenize`; inputs are validated before this returns (a stream's
        later runs as they arrive), and errors call the input `name`.
        """
        chunk_latent_frames = self.check_chunk_latent_frames(chunk_latent_frames)
        if isinstance(pixel_values, torch.Tensor):
            x, is_image = self.check_video(pixel_values, name)
            features = self.backbone.iter_encode_features(x, chunk_latent_frames)
        else:
            runs = iter(pixel_values)
            first = next(runs, None)
            if first is None:
                raise ValueError(f"{name} holds no frames")
            x, is_image = self.check_frames(first, f"{name}[0]"), False
            pieces = self.causal_pieces(itertools.chain([first], runs), chunk_latent_frames, name)
            features = self.backbone.encode_feature_stream(pieces)
        with torch.no_grad():
            embeds, mask, present = self.text_condition(
                x.shape[0], x.device, text, text_embeds=text_embeds, text_attention_mask=text_attention_mask
            )
        return self._stream_tokens(features, embeds, mask, present, is_image)

    @torch.no_grad()
    def _stream_tokens(self, features, embeds, mask, present, is_image: bool) -> Iterator[PyraTokTokens]:
        for q, moments in self.quantize_stream(features, embeds, mask, present):
            yield PyraTokTokens(ids=list(q.ids), latent_size=tuple(moments.shape[2:]), is_image=is_image)

    def iter_detokenize(
        self,
        tokens: PyraTokTokens | Sequence[torch.Tensor] | Iterable[PyraTokTokens | Sequence[torch.Tensor]],
        chunk_latent_frames: int = 1,
    ) -> Iterator[torch.Tensor]:
        """Tokens (a whole clip's, or a stream of pieces) → frames one piece at a time, the decoder keeping its cache.

        Arguments and results as `PyraTokModel.iter_detokenize`.
        """
        chunk_latent_frames = self.check_chunk_latent_frames(chunk_latent_frames)
        whole = isinstance(tokens, PyraTokTokens) or (
            isinstance(tokens, list | tuple) and len(tokens) > 0 and all(isinstance(t, torch.Tensor) for t in tokens)
        )
        if whole:
            ids = self.check_ids_layout(tokens.ids if isinstance(tokens, PyraTokTokens) else tokens)
            is_image = bool(getattr(tokens, "is_image", False))  # PyraTokTokens or PyraTokLevelIds
            tokens = self._split_tokens(ids, is_image, chunk_latent_frames)
        return self._stream_frames(tokens)

    def _split_tokens(
        self, ids: list[torch.Tensor], is_image: bool, chunk_latent_frames: int
    ) -> Iterator[PyraTokTokens]:
        frames, height, width = ids[0].shape[1:]
        s0 = self.config.level_spatial_strides[0]
        starts = [0] + list(range(1, frames, chunk_latent_frames))
        for start, stop in zip(starts, starts[1:] + [frames], strict=True):
            yield PyraTokTokens(
                ids=[level_ids[:, start:stop] for level_ids in ids],
                latent_size=(stop - start, height * s0, width * s0),
                is_image=is_image,
            )

    @torch.no_grad()
    def _stream_frames(self, pieces: Iterable[PyraTokTokens | Sequence[torch.Tensor]]) -> Iterator[torch.Tensor]:
        is_image: list[bool] = []

        def latents() -> Iterator[torch.Tensor]:
            for piece in pieces:
                is_image.append(bool(getattr(piece, "is_image", False)))  # PyraTokTokens or PyraTokLevelIds
                ids = piece.ids if isinstance(piece, PyraTokTokens) else piece
                if not isinstance(ids, list | tuple) or not ids or not all(isinstance(i, torch.Tensor) for i in ids):
                    raise ValueError(f"a token piece must be PyraTokTokens or a list of id tensors, got {type(ids)}")
                # Fuse one latent frame at a time: the fusion convs then see the same shapes however the tokens were
                # cut, so every piece schedule decodes to bit-identical frames.
                frames = [self.ids_to_latent([i[:, t : t + 1] for i in ids]) for t in range(ids[0].shape[1])]
                yield torch.cat(frames, dim=2)

        # iter_decode pulls one latent piece, then yields its frames: is_image[-1] is that piece's flag.
        for video in self.backbone.iter_decode(latents()):
            yield video[:, :, 0] if is_image[-1] else video

    # ---- token sequences (shared by PyraTokModel and AutoencoderPyraTok; layout in tokens_pyratok.py) -------------
    @property
    def codebook_size(self) -> int:
        return 2**self.config.codebook_dim

    @property
    def mask_token_id(self) -> int:
        return self.codebook_size

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
        """The token layout of a clip of `num_frames` frames of `height x width` pixels (see `PyraTokTokenLayout`)."""
        sizes = {"num_frames": num_frames, "height": height, "width": width}
        bad = {k: v for k, v in sizes.items() if type(v) is not int or v < 1}
        if bad:
            raise ValueError(f"token_layout needs positive int sizes, got {bad}")
        chunk = self.backbone.temporal_chunk
        if (num_frames - 1) % chunk:
            raise ValueError(f"num_frames={num_frames}; PyraTok needs T = {chunk}k + 1 frames")
        if is_image and num_frames != 1:
            raise ValueError(f"an image layout has num_frames=1, got {num_frames}")
        factor, m = self.config.scale_factor_spatial, self.config.spatial_multiple
        if height % factor or width % factor:
            raise ValueError(f"H x W = {height} x {width}; both must be multiples of {factor}")
        # The encoder pads frames to multiples of `spatial_multiple` (`pad_frames`): the ids cover the padded frame,
        # and `frame_size` records the size decoding crops back to.
        padded_height, padded_width = height + (-height % m), width + (-width % m)
        grids = self.quantizer.level_grid(self.latent_size(num_frames, padded_height, padded_width))
        return PyraTokTokenLayout(
            level_shapes=tuple(grids),
            level_strides=tuple(self.quantizer.level_spatial_strides),
            codebook_dim=self.config.codebook_dim,
            order=order,
            pad_to_square=pad_to_square,
            frame_size=(height, width),
            is_image=is_image,
            separators=separators,
        )

    def input_token_layout(
        self, x: torch.Tensor, order: str, pad_to_square: bool, separators: bool = False
    ) -> PyraTokTokenLayout:
        """`token_layout` of an input `(B, C, T, H, W)` or images `(B, C, H, W)` (already validated by the encoder)."""
        is_image = x.ndim == 4
        frames = 1 if is_image else x.shape[2]
        return self.token_layout(
            frames, x.shape[-2], x.shape[-1], order, pad_to_square, is_image=is_image, separators=separators
        )

    def check_token_layout(self, layout: Any) -> PyraTokTokenLayout:
        """A layout this model can decode: its strides, codebook and grids are the model's (`ValueError` if not)."""
        if not isinstance(layout, PyraTokTokenLayout):
            raise ValueError(f"layout must be a PyraTokTokenLayout, got {type(layout).__name__}")
        ours = {
            "level_strides": tuple(self.quantizer.level_spatial_strides),
            "codebook_dim": self.config.codebook_dim,
        }
        theirs = {"level_strides": layout.level_strides, "codebook_dim": layout.codebook_dim}
        if ours != theirs:
            raise ValueError(f"layout is for another tokenizer: expected {ours}, got {theirs}")
        expected = tuple(self.quantizer.level_grid(layout.latent_size))
        if layout.level_shapes != expected:
            raise ValueError(f"layout level_shapes {list(layout.level_shapes)} != the model's {list(expected)}")
        return layout

    def decode_sequence(self, seq: torch.Tensor, layout: PyraTokTokenLayout) -> torch.Tensor:
        """Sequence → pixels: unflatten, decode the ids, return images for an image layout, crop to `frame_size`."""
        ids = self.check_token_layout(layout).unflatten(seq)
        video = self.decode_latent(self.ids_to_latent(ids))
        if layout.frame_size is not None:
            height, width = layout.frame_size
            video = video[..., :height, :width]
        return video[:, :, 0] if layout.is_image else video

    def embed_ids(self, ids: torch.Tensor, space: str = "bits") -> torch.Tensor:
        """Code vectors of ids for a prior's input embedding.

        Args:
            ids: integer tensor of any shape (>= 1 dim), values in `[0, codebook_size)`.
            space: `"bits"`: the ±1 code (fp32, channel 0 = most significant bit); `"semantic"`: the semantic code
                embedding `W_c · code` (pyramid mode only; gradients reach `W_c` unless run under `torch.no_grad()`).

        Returns:
            `(*ids.shape, codebook_dim)` for `"bits"`, `(*ids.shape, semantic_dim)` for `"semantic"`.
        """
        if space not in ("bits", "semantic"):
            raise ValueError(f"space must be 'bits' or 'semantic', got {space!r}")
        if not isinstance(ids, torch.Tensor) or ids.ndim == 0:
            raise ValueError(f"ids must be a tensor with at least one dim, got {getattr(ids, 'shape', type(ids))}")
        bits = ids_to_bits(ids, self.config.codebook_dim, dim=-1)
        if space == "bits":
            return bits
        embedding = getattr(self.quantizer, "code_embedding", None)
        if embedding is None:
            raise ValueError(
                f"space='semantic' needs the semantic code embedding W_c, which quantizer_mode="
                f"{self.config.quantizer_mode!r} does not have; use space='bits'"
            )
        return embedding(bits.to(embedding.weight.dtype))


def _is_pyratok_folder(name_or_path: str | os.PathLike, subfolder: str | None) -> bool:
    """Whether `name_or_path[/subfolder]` is a local folder holding a PyraTok (not a diffusers VAE) config."""
    config_file = os.path.join(name_or_path, subfolder or "", "config.json")
    if not os.path.isfile(config_file):
        return False
    with open(config_file, encoding="utf-8") as handle:
        raw = json.load(handle)
    return isinstance(raw, dict) and raw.get("model_type") == PyraTokConfig.model_type


class PyraTokPreTrainedModel(PreTrainedModel):
    config_class = PyraTokConfig
    base_model_prefix = "core"
    main_input_name = "pixel_values"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = False
    _no_split_modules = ["PyraTokBackbone", "PyraTokLaPQ", "PyraTokResidualQuantizer"]

    def _init_weights(self, module: nn.Module) -> None:
        # Every PyraTok block initialises itself in its constructor (zero-init LoRA B, zero-init attention output,
        # Wan's own conv init); a generic re-init here would silently break "fresh LoRA == frozen encoder".
        return


class PyraTokModel(PyraTokPreTrainedModel):
    """PyraTok tokenizer: video (+ optional text) → per-level discrete tokens → video.

    Example:
        ```python
        >>> cfg = PyraTokConfig.from_preset("tiny")
        >>> model = PyraTokModel(cfg)
        >>> video = torch.rand(1, 3, 9, 64, 64) * 2 - 1
        >>> tokens = model.tokenize(video, text="a red square moves right")
        >>> [t.shape for t in tokens.ids]   # (B, T', H_l, W_l) per level
        >>> video_hat = model.detokenize(tokens)
        ```
    """

    def __init__(self, config: PyraTokConfig):
        super().__init__(config)
        self.core = PyraTokCore(config)
        self.post_init()

    # ---- loading ------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args, **kwargs) -> PyraTokModel:
        """Load a PyraTok checkpoint (Hub id or folder) written by `PyraTokModel` or `AutoencoderPyraTok`.

        Any missing, unexpected or wrongly shaped weight raises `ValueError` naming it, rather than leaving part of
        the tokenizer randomly initialised. Folders in transformers' own layout (variants, shards with an index,
        `.bin`) and `from_pretrained(None, config=..., state_dict=...)` go to `PreTrainedModel`. A folder saved by
        `AutoencoderPyraTok`, and the official release (`"onkarsus13/PyraTok"`, `subfolder="vae"`, an
        `AutoencoderKLPyraTok` folder, converted on the fly to `quantizer_mode="residual"`), are read here, honouring
        `dtype` / `torch_dtype` and a one-device `device_map`. A device map that splits or offloads the model raises
        `ValueError`.
        """
        if pretrained_model_name_or_path is None:  # `config=` + `state_dict=`: nothing on disk to intercept
            return super().from_pretrained(None, *model_args, **kwargs)
        check_single_device(kwargs.get("device_map"))
        subfolder = kwargs.get("subfolder") or None
        hub_kwargs = {k: v for k, v in kwargs.items() if k != "subfolder"}
        source = str(pretrained_model_name_or_path)
        foreign = read_foreign_pretrained(source, subfolder, "transformers", **hub_kwargs)
        if foreign is not None:
            fields, state = foreign
            model = cls(PyraTokConfig(**fields))
            load_state_dict_strict(model, state, source)
            return place_loaded_model(model, kwargs).eval()
        want_info = kwargs.pop("output_loading_info", False)
        # Let transformers report size mismatches instead of raising its generic RuntimeError; we raise below.
        kwargs.setdefault("ignore_mismatched_sizes", True)
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
        )
        bad = {k: sorted(map(str, info.get(k) or [])) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        if any(bad.values()):
            raise ValueError(
                checkpoint_mismatch_message(
                    str(pretrained_model_name_or_path),
                    bad["missing_keys"],
                    bad["unexpected_keys"],
                    bad["mismatched_keys"],
                )
            )
        # `device_map="auto"` may have split or offloaded the model: refuse rather than run it wrongly.
        check_single_device(getattr(model, "hf_device_map", None), "the device_map resolved from device_map")
        check_loaded_weights(model, source, subfolder)
        model.core.backbone.freeze_pretrained()
        return (model, info) if want_info else model

    def load_pretrained_backbone(
        self, name_or_path: str | None = None, subfolder: str | None = None, **kwargs
    ) -> None:
        """Copy pretrained `AutoencoderKLWan` weights into the frozen backbone (training starts here).

        Args:
            name_or_path: Hub id or folder of a diffusers `AutoencoderKLWan`, or a local PyraTok checkpoint folder
                (its frozen backbone is copied, its LoRA and LaPQ are not); default `config.backbone_name_or_path`.
            subfolder: default `config.backbone_subfolder` (`"vae"` for the Wan diffusers repos).
        """
        from diffusers import AutoencoderKLWan

        name_or_path = name_or_path or self.config.backbone_name_or_path
        if name_or_path is None:
            raise ValueError("no backbone to load: pass name_or_path or set config.backbone_name_or_path")
        subfolder = subfolder if subfolder is not None else self.config.backbone_subfolder
        if _is_pyratok_folder(name_or_path, subfolder):
            donor = type(self).from_pretrained(os.path.join(name_or_path, subfolder or ""))
            pretrained_config, state = donor.config.backbone_config, donor.core.backbone.wan_state_dict()
        else:
            pretrained = AutoencoderKLWan.from_pretrained(name_or_path, subfolder=subfolder or None, **kwargs)
            pretrained_config, state = pretrained.config, pretrained.state_dict()
        differing = backbone_config_differences(self.config.backbone_config, pretrained_config)
        if differing:
            raise ValueError(f"backbone {name_or_path!r} differs from config.backbone_config in {differing}")
        self.core.backbone.load_wan_state_dict(state, str(name_or_path))

    # ---- Hub ------------------------------------------------------------------------------------------------------
    def model_card(self) -> ModelCard:
        """A Hub model card describing this configuration (written by `save_pretrained`, uploaded by `push_to_hub`)."""
        c = self.config
        data = ModelCardData(library_name="transformers", license="apache-2.0", tags=["pyratok", "video-tokenizer"])
        body = MODEL_CARD_TEMPLATE.format(
            backbone=f"Wan VAE, z_dim {c.z_dim}, {c.scale_factor_temporal}x{c.scale_factor_spatial}x"
            f"{c.scale_factor_spatial} compression",
            levels=c.num_levels,
            strides=c.level_spatial_strides,
            bits=c.codebook_dim,
            codes=2**c.codebook_dim,
            text_encoder=c.text_encoder_name_or_path,
            multiple=c.spatial_multiple,
        )
        return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, plus a `README.md` model card unless the folder already has one."""
        super().save_pretrained(save_directory, *args, **kwargs)
        card = os.path.join(save_directory, "README.md")
        if not os.path.exists(card):
            self.model_card().save(card)

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, private: bool | None = None, **kwargs):
        """Upload config, safetensors weights, remote code and the model card to the Hub repo `repo_id`."""
        api = HfApi(token=kwargs.pop("token", None))
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, **kwargs)
            return api.upload_folder(
                repo_id=repo_id, folder_path=folder, commit_message=commit_message or "Upload PyraTok"
            )

    def merged_lora(self):
        """Context manager: LoRA folded into the encoder convs for faster inference; exact weights restored after."""
        return self.core.backbone.merged_lora()

    # ---- text -----------------------------------------------------------------------------------------------------
    def get_text_encoder(self) -> PyraTokTextEncoder:
        return self.core.get_text_encoder()

    def set_text_encoder(self, encoder: PyraTokTextEncoder) -> None:
        """Use an already loaded text encoder (its hidden size must equal `config.text_embed_dim`)."""
        self.core.set_text_encoder(encoder)

    # ---- main API ---------------------------------------------------------------------------------------------------
    def forward(
        self,
        pixel_values: torch.Tensor,
        text: TextInput = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        return_loss: bool = True,
        return_dict: bool = True,
    ) -> PyraTokOutput | tuple:
        """Tokenize and reconstruct a batch of clips.

        Args:
            pixel_values: `(B, 3, T, H, W)` (or `(B, 3, H, W)` images) in [-1, 1]; `T = 4k + 1`, H and W multiples of
                `config.spatial_multiple`.
            text: A prompt for every item (`str`), one per item (`list[str | None]`, None = no text) or None.
            input_ids, attention_mask: Prompts already tokenized with the text encoder's tokenizer `(B, L)`.
            text_embeds, text_attention_mask: Precomputed text encoder states `(B, L, text_embed_dim)` and `(B, L)`.
            return_loss: Compute the quantizer breakdown and the auxiliary latent loss.

        Returns:
            `PyraTokOutput`.
        """
        x, is_image = self.core.check_video(pixel_values, pad=True)
        x, frame_size = self.core.pad_frames(x)
        q, moments = self.core.quantize(
            x, return_loss, text, input_ids, attention_mask, text_embeds, text_attention_mask
        )
        reconstruction = self.core.crop_frames(self.core.decode_latent(q.latent), frame_size)
        loss = losses = None
        if return_loss:
            losses = dict(q.losses)
            loss = self.config.codebook_weight * q.loss
            if self.config.latent_loss_weight > 0:
                target = self.core.frozen_posterior_mean(x, moments)
                losses["latent"] = F.mse_loss(q.latent.float(), target.float())
                loss = loss + self.config.latent_loss_weight * losses["latent"]
        if is_image:
            reconstruction = reconstruction[:, :, 0]
        latent = self.core.crop_latent(q.latent, frame_size)
        out = PyraTokOutput(
            loss=loss, losses=losses, reconstruction=reconstruction, latent=latent, codes=q.codes, ids=q.ids
        )
        return out if return_dict else out.to_tuple()

    @torch.no_grad()
    def tokenize(
        self,
        pixel_values: torch.Tensor,
        text: TextInput = None,
        text_embeds: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
    ) -> PyraTokTokens:
        """Video (+ optional text) → per-level token ids. See `forward` for the argument layouts.

        H and W need only be multiples of the backbone factor: the frames are replicate-padded to
        `config.spatial_multiple`, the ids cover the padded frame and `frame_size` records the original size.
        """
        x, is_image = self.core.check_video(pixel_values, pad=True)
        x, frame_size = self.core.pad_frames(x)
        q, moments = self.core.quantize(x, text=text, text_embeds=text_embeds, text_attention_mask=text_attention_mask)
        return PyraTokTokens(
            ids=list(q.ids), latent_size=tuple(moments.shape[2:]), is_image=is_image, frame_size=frame_size
        )

    @torch.no_grad()
    def detokenize(self, tokens: PyraTokTokens | Sequence[torch.Tensor]) -> torch.Tensor:
        """Token ids → video `(B, 3, T, H, W)` in [-1, 1] (images `(B, 3, H, W)` if they came from images)."""
        ids = tokens.ids if isinstance(tokens, PyraTokTokens) else tokens
        video = self.core.decode_latent(self.core.ids_to_latent(ids))
        if isinstance(tokens, PyraTokTokens):
            video = self.core.crop_frames(video, tokens.frame_size)
        return video[:, :, 0] if isinstance(tokens, PyraTokTokens) and tokens.is_image else video

    @torch.no_grad()
    def encode(
        self,
        pixel_values: torch.Tensor,
        text: TextInput = None,
        text_embeds: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Video → fused (quantized) decoder latent `(B, z_dim, T', H / f, W / f)` (4-D for image input).

        H and W need only be multiples of the backbone factor `f` (padded, then the latent cropped); the latent is
        per-channel normalised when `config.latent_normalization="per_channel"`.
        """
        x, is_image = self.core.check_video(pixel_values, pad=True)
        x, frame_size = self.core.pad_frames(x)
        latent = self.core.quantize(x, text=text, text_embeds=text_embeds, text_attention_mask=text_attention_mask)[
            0
        ].latent
        latent = self.core.normalize_latent(self.core.crop_latent(latent, frame_size))
        return latent[:, :, 0] if is_image else latent

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Decoder latent `(B, z_dim, T', H', W')` → video `(B, 3, T, H, W)` in [-1, 1] (4-D in → 4-D out)."""
        z, is_image = self.core.check_latent(latent)
        video = self.core.decode_latent(self.core.denormalize_latent(z))
        return video[:, :, 0] if is_image else video

    def iter_tokenize(
        self,
        pixel_values: torch.Tensor | Iterable[torch.Tensor],
        text: TextInput = None,
        chunk_latent_frames: int = 1,
        text_embeds: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
    ) -> Iterator[PyraTokTokens]:
        """Streaming `tokenize`: one causal piece at a time, with flat memory in the clip length.

        The encoder keeps its causal cache between pieces and LaPQ is per latent frame, so concatenating the pieces'
        ids along T' gives exactly `tokenize(whole clip)`'s ids.

        Args:
            pixel_values: a whole clip `(B, 3, T, H, W)` or images `(B, 3, H, W)` in [-1, 1] (validated like
                `tokenize`, before this returns), or an iterable of consecutive runs of frames `(B, 3, t_i, H, W)`
                whose concatenation is the clip (consumed lazily, e.g. decoded from a file run by run; the first run is
                validated before this returns, later ones as they arrive, the `T = 4k + 1` rule at the end).
            text, text_embeds, text_attention_mask: as `tokenize`; the text is encoded once for the whole stream.
            chunk_latent_frames: latent frames per piece after the first.

        Returns:
            An iterator of `PyraTokTokens`: latent frame 0 (input frame 0) first, then pieces of `chunk_latent_frames`
            latent frames (`temporal_chunk * chunk_latent_frames` input frames; the last may be shorter), each with
            ids `(B, t', H_l, W_l)` and `latent_size = (t', H', W')`.
        """
        return self.core.iter_tokenize(pixel_values, text, chunk_latent_frames, text_embeds, text_attention_mask)

    def iter_detokenize(
        self,
        tokens: PyraTokTokens | Sequence[torch.Tensor] | Iterable[PyraTokTokens | Sequence[torch.Tensor]],
        chunk_latent_frames: int = 1,
    ) -> Iterator[torch.Tensor]:
        """Streaming `detokenize`: the decoder keeps its causal cache between pieces (flat memory in the length).

        Args:
            tokens: a whole clip's tokens (`PyraTokTokens` or a list of per-level ids `(B, T', H_l, W_l)`), cut here
                into latent frame 0 and then pieces of `chunk_latent_frames` latent frames; or an iterable of
                consecutive pieces (each `PyraTokTokens` or a list of per-level ids), e.g. `iter_tokenize`'s output,
                each decoded as it arrives.
            chunk_latent_frames: latent frames per piece when cutting a whole clip's tokens.

        Returns:
            An iterator over each piece's frames `(B, 3, n, H, W)` in [-1, 1] (latent frame 0 → 1 frame, each later
            latent frame → `temporal_chunk` frames; `(B, 3, H, W)` for image tokens); concatenated along time they
            equal `detokenize(whole tokens)`.
        """
        return self.core.iter_detokenize(tokens, chunk_latent_frames)

    def bits_per_pixel(self, height: int, width: int, num_frames: int) -> float:
        """Token bits per input pixel of a clip of this size (all levels)."""
        t, h, w = self.core.latent_size(num_frames, height, width)
        tokens = sum(t * (h // s) * (w // s) for s in self.config.level_spatial_strides)
        return tokens * self.config.codebook_dim / (num_frames * height * width)

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
        pixel_values: torch.Tensor,
        text: TextInput = None,
        order: str = "frame_major",
        pad_to_square: bool = False,
        separators: bool = False,
    ) -> tuple[torch.Tensor, PyraTokTokenLayout]:
        """Video `(B, 3, T, H, W)` or images `(B, 3, H, W)` in [-1, 1] (+ optional text) → one id sequence per clip.

        Returns:
            `(seq, layout)`: `seq` int64 `(B, layout.seq_len)`, `layout` the `PyraTokTokenLayout` that undoes it.
        """
        tokens = self.tokenize(pixel_values, text=text)  # validates the input first
        layout = self.core.input_token_layout(pixel_values, order, pad_to_square, separators)
        return layout.flatten(tokens.ids), layout

    @torch.no_grad()
    def decode_from_sequence(self, seq: torch.Tensor, layout: PyraTokTokenLayout) -> torch.Tensor:
        """Id sequences `(B, layout.seq_len)` → video `(B, 3, T, H, W)` in [-1, 1] (`(B, 3, H, W)` for an image
        layout); equals `detokenize` of the unflattened ids."""
        return self.core.decode_sequence(seq, layout)

    def embed_ids(self, ids: torch.Tensor, space: str = "bits") -> torch.Tensor:
        """Code vectors of ids `(...)` for a prior: `"bits"` → ±1 `(..., codebook_dim)`, `"semantic"` → `W_c` code
        embedding `(..., semantic_dim)` (pyramid mode only)."""
        return self.core.embed_ids(ids, space)


PyraTokConfig.register_for_auto_class()
PyraTokModel.register_for_auto_class("AutoModel")

__all__ = ["PyraTokCore", "PyraTokModel", "PyraTokOutput", "PyraTokPreTrainedModel", "PyraTokTokens"]

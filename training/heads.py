"""Training-only heads of PyraTok's loss (DESIGN.md §4): the AR (global alignment) head and the drift head.

Their trainable weights are saved with the training state, never with the model's `save_pretrained`. The frozen
networks they use (the causal LM, the reference vision encoder) are frozen companions (see
`training.losses.FrozenCompanionModule`): outside `parameters()` and `state_dict()`, always in eval mode, rebuilt from
their Hub id or config rather than checkpointed. Gradients still flow through them to their inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
)

from modeling_pyratok.quantizer_pyratok import temporal_group_pool

from .losses import FrozenCompanionModule

DEFAULT_REFERENCE_ENCODER = "facebook/dinov3-vits16-pretrain-lvd1689m"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AR_REDUCTIONS = ("mean", "none")
REFERENCE_POOLINGS = ("cls", "mean")
# A crop of 3 positions always holds a scored prediction (separators are never adjacent); 2 may not ([token, SEP]).
MIN_AR_TOKENS = 3
# Fallback scale of the LM's input embeddings when it exposes none (GPT-2/Llama initialiser range).
DEFAULT_EMBED_STD = 0.02


# ---------------------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------------------


def _config_from_dict(config: dict[str, Any], name: str) -> PretrainedConfig:
    if "model_type" not in config:
        raise ValueError(f"{name} config dict needs a 'model_type' key, got keys {sorted(config)}")
    return AutoConfig.for_model(**dict(config))


def _check_one_source(name_or_path: str | None, config: dict[str, Any] | None, what: str) -> None:
    if (name_or_path is None) == (config is None):
        raise ValueError(
            f"{what}: pass exactly one of name_or_path and config, got name_or_path={name_or_path!r}, "
            f"config={'a dict' if config is not None else None}"
        )


def build_language_model(
    name_or_path: str | None = None, config: dict[str, Any] | None = None, dtype: torch.dtype | None = None
) -> PreTrainedModel:
    """Build the AR loss's causal LM, in eval mode (the head freezes it).

    Args:
        name_or_path (`str`): Hub id or local folder. A causal LM loads with `AutoModelForCausalLM`; a VLM (e.g.
            `"Qwen/Qwen2.5-VL-3B-Instruct"`, which transformers 5 maps to `AutoModelForImageTextToText`) loads whole
            and only its language model (`get_decoder()`, e.g. `Qwen2_5_VLTextModel`, no LM head) is kept.
        config (`dict`): a config for a random LM, e.g. `{"model_type": "llama", "hidden_size": 32, ...}`
            (`AutoConfig.for_model` + `AutoModelForCausalLM.from_config`): tests and the CPU recipe.
        dtype (`torch.dtype`, optional): parameter dtype (e.g. `torch.bfloat16` for a large LM).

    Exactly one of `name_or_path` and `config`.

    Returns:
        `PreTrainedModel` taking `inputs_embeds` (a causal LM, or a bare decoder for a VLM).
    """
    _check_one_source(name_or_path, config, "build_language_model")
    if config is not None:
        model = AutoModelForCausalLM.from_config(_config_from_dict(config, "language model"))
        if dtype is not None:
            model = model.to(dtype)
        return model.eval()
    kwargs = {} if dtype is None else {"dtype": dtype}
    model_type = AutoConfig.from_pretrained(name_or_path).model_type
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs).eval()
    if model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        # The vision tower is dropped with the wrapper: only the text decoder stays referenced.
        return AutoModelForImageTextToText.from_pretrained(name_or_path, **kwargs).get_decoder().eval()
    raise ValueError(f"{name_or_path!r} has model_type {model_type!r}, which is neither a causal LM nor a VLM")


def build_reference_encoder(
    name_or_path: str | None = None, config: dict[str, Any] | None = None, dtype: torch.dtype | None = None
) -> PreTrainedModel:
    """Build the drift loss's frozen reference vision encoder (requires_grad False, eval mode).

    Args:
        name_or_path (`str`, optional): Hub id or local folder for `AutoModel.from_pretrained`; when neither argument
            is given, `DEFAULT_REFERENCE_ENCODER` (`"facebook/dinov3-vits16-pretrain-lvd1689m"`).
        config (`dict`, optional): a config for a random encoder, e.g. `{"model_type": "dinov3_vit", ...}`
            (`AutoConfig.for_model` + `AutoModel.from_config`): tests.
        dtype (`torch.dtype`, optional): parameter dtype.

    Returns:
        `PreTrainedModel` whose forward takes `pixel_values (N, 3, S, S)` and returns `last_hidden_state` (and
        `pooler_output`), e.g. `DINOv3ViTModel`.
    """
    if name_or_path is not None and config is not None:
        raise ValueError(f"build_reference_encoder: pass name_or_path ({name_or_path!r}) or config, not both")
    if config is not None:
        model = AutoModel.from_config(_config_from_dict(config, "reference encoder"))
        if dtype is not None:
            model = model.to(dtype)
    else:
        kwargs = {} if dtype is None else {"dtype": dtype}
        model = AutoModel.from_pretrained(name_or_path or DEFAULT_REFERENCE_ENCODER, **kwargs)
    model.requires_grad_(False)
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------------
# AR head
# ---------------------------------------------------------------------------------------------------------------------


def _hidden_size(model: PreTrainedModel) -> int:
    size = getattr(model.config, "hidden_size", None)
    if size is None:
        size = model.get_input_embeddings().embedding_dim
    return int(size)


def _embed_std(model: PreTrainedModel) -> float:
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is None or not hasattr(embeddings, "weight"):
        return DEFAULT_EMBED_STD
    # A slice is enough for the scale and avoids an fp32 copy of a 150k-row table.
    return float(embeddings.weight[:4096].detach().float().std())


class PyraTokARHead(FrozenCompanionModule):
    """AR (global alignment) loss: a causal LM predicts every visual token's bits from everything before it.

    The LM reads `[text tokens] <SOI> q^(1) <Q-SEP> q^(2) <Q-SEP> … q^(L)`. Text tokens (the frozen text encoder's
    token embeddings) enter through `text_to_hidden`; visual tokens through `code_to_hidden` applied to their
    straight-through ±1 codes (plus a learned per-level embedding), so the loss's gradient reaches the tokenizer; `soi`
    and `level_sep` are learned embeddings. `bit_head` predicts the next token's `codebook_dim` bits as independent
    binary logits (the factorised softmax over `2**codebook_dim` codes). Each level is flattened in `(t, h, w)` order.

    The input projections are initialised so ±1 codes land at the scale of the LM's own input embeddings.

    Args:
        language_model (`PreTrainedModel`): causal LM (`AutoModelForCausalLM`) or bare decoder taking
            `inputs_embeds`; its decoder (`get_decoder()`) is run, so no vocabulary logits are computed.
        codebook_dim (`int`): bits per visual token (`d`).
        text_embed_dim (`int`): width `D` of the text embeddings.
        num_levels (`int`): pyramid levels `L`.
        max_ar_tokens (`int`): cap on the visual part of the sequence (SOI, tokens and separators); longer sequences
            are randomly cropped to a contiguous window (the text prefix is kept). >= 3.
        train_language_model (`bool`): train the LM too (a registered, trainable submodule). By default it is a
            frozen companion: requires_grad False, eval mode, not in `state_dict()`.
    """

    def __init__(
        self,
        language_model: PreTrainedModel,
        codebook_dim: int,
        text_embed_dim: int,
        num_levels: int,
        max_ar_tokens: int = 1024,
        train_language_model: bool = False,
    ) -> None:
        super().__init__()
        sizes = {"codebook_dim": codebook_dim, "text_embed_dim": text_embed_dim, "num_levels": num_levels}
        bad = {k: v for k, v in sizes.items() if not (isinstance(v, int) and v >= 1)}
        if bad:
            raise ValueError(f"PyraTokARHead sizes must be positive integers, got {bad}")
        if max_ar_tokens < MIN_AR_TOKENS:
            raise ValueError(f"max_ar_tokens must be >= {MIN_AR_TOKENS}, got {max_ar_tokens}")
        self.codebook_dim = codebook_dim
        self.text_embed_dim = text_embed_dim
        self.num_levels = num_levels
        self.max_ar_tokens = max_ar_tokens
        self.train_language_model = train_language_model
        hidden = _hidden_size(language_model)
        self.hidden_size = hidden
        std = _embed_std(language_model)
        if train_language_model:
            self.language_model = language_model.requires_grad_(True)
        else:
            self._set_companion("language_model", language_model)

        self.text_to_hidden = nn.Linear(text_embed_dim, hidden)
        self.code_to_hidden = nn.Linear(codebook_dim, hidden)
        self.soi = nn.Parameter(torch.randn(hidden) * std)
        self.level_sep = nn.Parameter(torch.randn(hidden) * std)
        self.level_embed = nn.Parameter(torch.zeros(num_levels, hidden))
        self.bit_head = nn.Linear(hidden, codebook_dim)
        for linear, fan_in in ((self.text_to_hidden, text_embed_dim), (self.code_to_hidden, codebook_dim)):
            nn.init.normal_(linear.weight, std=std / math.sqrt(fan_in))
            nn.init.zeros_(linear.bias)

    # ---- inputs ----------------------------------------------------------------------------------------------------
    def _check_codes(self, codes: Sequence[torch.Tensor]) -> int:
        if len(codes) != self.num_levels:
            raise ValueError(f"expected codes for {self.num_levels} levels, got {len(codes)}")
        shapes = [tuple(c.shape) for c in codes]
        if any(c.ndim != 5 or c.shape[1] != self.codebook_dim or c.shape[0] != codes[0].shape[0] for c in codes):
            raise ValueError(
                f"codes must be (B, {self.codebook_dim}, T', H_l, W_l) per level with one batch size, got {shapes}"
            )
        if any(c.numel() == 0 for c in codes):
            raise ValueError(f"codes must not be empty, got {shapes}")
        return codes[0].shape[0]

    def _visual_sequence(self, codes: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`<SOI> q1 <SEP> q2 … qL` as embeddings `(B, V, hidden)`, target bits `(B, V, d)` in {0, 1} and a
        `(V,)` bool flag on the CPU (indexing with it then needs no device sync) marking visual-token positions."""
        batch, device = codes[0].shape[0], codes[0].device
        dtype = self.code_to_hidden.weight.dtype
        embeds, targets, flags = [], [], []

        def marker(embedding: torch.Tensor) -> None:
            embeds.append(embedding.to(dtype).expand(batch, 1, -1))
            targets.append(torch.zeros(batch, 1, self.codebook_dim, device=device))
            flags.append(torch.zeros(1, dtype=torch.bool))

        marker(self.soi)
        for level, level_codes in enumerate(codes):
            if level > 0:
                marker(self.level_sep)
            tokens = level_codes.flatten(2).transpose(1, 2)  # (B, T'*H_l*W_l, d), (t, h, w) order
            embeds.append(self.code_to_hidden(tokens.to(dtype)) + self.level_embed[level])
            targets.append((tokens.detach() > 0).float())
            flags.append(torch.ones(tokens.shape[1], dtype=torch.bool))
        return torch.cat(embeds, dim=1), torch.cat(targets, dim=1), torch.cat(flags)

    def _text_prefix(
        self,
        text_embeds: torch.Tensor | None,
        text_mask: torch.Tensor | None,
        text_present: torch.Tensor | None,
        batch: int,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Left-padded text prefix `(B, P, hidden)` and its mask `(B, P)` bool, or `(None, None)` when no item has
        text. Each item's valid tokens keep their order and end right before `<SOI>`."""
        if text_embeds is None:
            return None, None
        if text_embeds.ndim != 3 or text_embeds.shape[0] != batch or text_embeds.shape[2] != self.text_embed_dim:
            raise ValueError(
                f"text_embeds has shape {tuple(text_embeds.shape)}; expected ({batch}, L, {self.text_embed_dim})"
            )
        length = text_embeds.shape[1]
        if text_mask is None:
            mask = torch.ones(batch, length, dtype=torch.bool, device=text_embeds.device)
        elif tuple(text_mask.shape) != (batch, length):
            raise ValueError(f"text_mask has shape {tuple(text_mask.shape)}; expected {(batch, length)}")
        else:
            mask = text_mask.to(text_embeds.device).bool()
        if text_present is not None:
            if tuple(text_present.shape) != (batch,):
                raise ValueError(f"text_present has shape {tuple(text_present.shape)}; expected ({batch},)")
            mask = mask & text_present.to(mask.device).bool().unsqueeze(1)
        longest = int(mask.sum(dim=1).max()) if length > 0 else 0
        if longest == 0:
            return None, None
        # A stable sort of the 0/1 mask moves pads to the front and keeps the valid tokens in order: left padding.
        order = torch.sort(mask.long(), dim=1, stable=True).indices[:, length - longest :]
        mask = mask.gather(1, order)
        embeds = text_embeds.gather(1, order.unsqueeze(-1).expand(-1, -1, self.text_embed_dim))
        embeds = self.text_to_hidden(embeds.to(self.text_to_hidden.weight.dtype))
        return embeds, mask

    def _hidden_states(
        self, embeds: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor
    ) -> torch.Tensor:
        model = self.language_model
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
        dtype = next(decoder.parameters()).dtype
        kwargs = {"inputs_embeds": embeds.to(dtype), "attention_mask": attention_mask, "position_ids": position_ids}
        out = decoder(**kwargs, use_cache=False)
        hidden = getattr(out, "last_hidden_state", None)
        if hidden is None:  # a model with no separate decoder: read its final hidden states
            hidden = model(**kwargs, use_cache=False, output_hidden_states=True).hidden_states[-1]
        return hidden

    # ---- loss ------------------------------------------------------------------------------------------------------
    def forward(
        self,
        codes: Sequence[torch.Tensor],
        text_embeds: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        text_present: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """
        Args:
            codes (`Sequence[torch.Tensor]`, one per level, each `(B, d, T', H_l, W_l)`): quantized codes, ±1 forward
                values with straight-through gradients. Targets are their detached bits (`code > 0` → 1).
            text_embeds (`torch.Tensor` of shape `(B, L, D)`, optional): frozen text-encoder token embeddings.
            text_mask (`torch.Tensor` of shape `(B, L)` bool, optional): True = real token (default: all True).
            text_present (`torch.Tensor` of shape `(B,)` bool, optional): False drops that item's text prefix.
            generator (`torch.Generator`, optional): randomness of the `max_ar_tokens` crop.
            reduction (`str`): `"mean"` → scalar; `"none"` → `(B, N)`, one value per scored visual token (its
                bits' mean BCE) in sequence order (level 1 first), `N` = number of visual tokens in the crop that
                have a predecessor in it (all of them when nothing is cropped).

        Returns:
            `torch.Tensor` (float32): mean binary cross-entropy (nats per bit, >= 0; log 2 is chance) of every visual
            token's bits predicted from all earlier positions. The first token of each level is predicted from
            `<SOI>` / `<Q-SEP>`; predictions *of* text, `<SOI>` and separators are not scored.
        """
        if reduction not in AR_REDUCTIONS:
            raise ValueError(f"reduction must be one of {AR_REDUCTIONS}, got {reduction!r}")
        batch = self._check_codes(codes)
        visual, targets, scored = self._visual_sequence(codes)  # (B, V, hidden), (B, V, d), (V,)
        if visual.shape[1] > self.max_ar_tokens:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            start = int(
                torch.randint(visual.shape[1] - self.max_ar_tokens + 1, (1,), generator=generator, device=gen_device)
            )
            window = slice(start, start + self.max_ar_tokens)
            visual, targets, scored = visual[:, window], targets[:, window], scored[window]

        prefix, prefix_mask = self._text_prefix(text_embeds, text_mask, text_present, batch)
        if prefix is None:
            embeds, attention_mask = visual, None
            position_ids = torch.arange(visual.shape[1], device=visual.device).expand(batch, -1)
        else:
            embeds = torch.cat([prefix.to(visual.dtype), visual], dim=1)
            visual_mask = torch.ones(batch, visual.shape[1], dtype=torch.bool, device=visual.device)
            attention_mask = torch.cat([prefix_mask.to(visual.device), visual_mask], dim=1).long()
            # Left padding: positions count real tokens only, so a text-less item's <SOI> sits at position 0.
            position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        hidden = self._hidden_states(embeds, attention_mask, position_ids)[:, embeds.shape[1] - visual.shape[1] :]

        predicted = scored[1:]  # hidden state j predicts position j + 1
        assert predicted.any(), "a crop of >= MIN_AR_TOKENS positions always holds a visual token"
        index = predicted.nonzero().squeeze(1).to(hidden.device)
        logits = self.bit_head(hidden[:, :-1].index_select(1, index).to(self.bit_head.weight.dtype)).float()
        bits = targets[:, 1:].index_select(1, index)  # (B, N, d)
        losses = F.binary_cross_entropy_with_logits(logits, bits, reduction="none").mean(-1)  # (B, N)
        if prefix is None:
            # DDP wants every trainable parameter in the graph each step, also in a batch without any text.
            losses = losses + 0.0 * sum(p.sum() for p in self.text_to_hidden.parameters())
        return losses.mean() if reduction == "mean" else losses


# ---------------------------------------------------------------------------------------------------------------------
# Drift head
# ---------------------------------------------------------------------------------------------------------------------


def softmax_kl(target_logits: torch.Tensor, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """`KL(softmax(target_logits / τ) ‖ softmax(logits / τ))` over the last dim, in float32.

    Args:
        target_logits, logits (`torch.Tensor` of shape `(..., D)`): unnormalised scores, any range.
        temperature (`float`): τ > 0.

    Returns:
        `torch.Tensor` of shape `(...)`, >= 0, zero where the two softmaxes agree.
    """
    if target_logits.shape != logits.shape:
        raise ValueError(f"softmax_kl: shapes differ, {tuple(target_logits.shape)} vs {tuple(logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"softmax_kl: temperature must be > 0, got {temperature}")
    log_p = F.log_softmax(target_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(logits.float() / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def _image_size(value: Any) -> tuple[int, int]:
    size = (value, value) if isinstance(value, int) else tuple(value)
    if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
        raise ValueError(f"reference_image_size must be a positive int or (H, W), got {value!r}")
    return size


class PyraTokDriftHead(FrozenCompanionModule):
    """Drift loss: keep the LoRA-adapted encoder's per-frame semantics close to a frozen reference vision encoder.

    Per latent frame: the adapted tap, spatially mean-pooled and mapped by `head` to the reference width, against
    the reference encoder's pooled features of the video frames. Both sides are grouped to the latent frames causally
    as Wan does (frame 0 alone, then groups of `g = (T - 1) / (T' - 1)`, [`temporal_group_pool`]). Loss =
    `KL(softmax(ref / τ) ‖ softmax(adapted / τ))` over the feature dim, averaged over `(B, T')`.

    The reference sees every frame, resized (bilinear, antialiased) to `reference_image_size` and normalised with
    `reference_mean`/`reference_std` after mapping [-1, 1] to [0, 1]; it runs under `no_grad`. Pooling:
    `"cls"` takes `pooler_output` (DINOv2/v3: the layer-normed CLS token, their global descriptor; CLS of
    `last_hidden_state` when absent); `"mean"` averages the patch tokens (the last `(S / patch_size)²` tokens, after
    CLS and register tokens).

    Args:
        reference_encoder (`PreTrainedModel`): frozen vision model (see [`build_reference_encoder`]); a frozen
            companion, not in `state_dict()`.
        feature_channels (`int`): channels `C` of the adapted encoder tap.
        temperature (`float`): softmax temperature τ > 0.
        reference_image_size (`int` or `(H, W)`, optional): reference input size; default `config.image_size`.
        reference_mean, reference_std (`Sequence[float]` of 3): per-channel normalisation (default ImageNet).
        reference_pooling (`str`): `"cls"` or `"mean"`.
    """

    def __init__(
        self,
        reference_encoder: PreTrainedModel,
        feature_channels: int,
        temperature: float = 1.0,
        reference_image_size: int | Sequence[int] | None = None,
        reference_mean: Sequence[float] = IMAGENET_MEAN,
        reference_std: Sequence[float] = IMAGENET_STD,
        reference_pooling: str = "cls",
    ) -> None:
        super().__init__()
        if not (isinstance(feature_channels, int) and feature_channels >= 1):
            raise ValueError(f"feature_channels must be a positive integer, got {feature_channels!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if reference_pooling not in REFERENCE_POOLINGS:
            raise ValueError(f"reference_pooling must be one of {REFERENCE_POOLINGS}, got {reference_pooling!r}")
        if len(reference_mean) != 3 or len(reference_std) != 3 or min(reference_std) <= 0:
            raise ValueError(f"reference_mean/std need 3 values (std > 0), got {reference_mean}, {reference_std}")
        ref_config = reference_encoder.config
        if reference_image_size is None:
            reference_image_size = getattr(ref_config, "image_size", None)
            if reference_image_size is None:
                raise ValueError("the reference config has no image_size; pass reference_image_size")
        self.reference_image_size = _image_size(reference_image_size)
        self.feature_channels = feature_channels
        self.temperature = float(temperature)
        self.reference_pooling = reference_pooling
        self.reference_hidden_size = int(ref_config.hidden_size)
        if reference_pooling == "mean":
            patch = getattr(ref_config, "patch_size", None)
            if patch is None or any(s % patch for s in self.reference_image_size):
                raise ValueError(
                    f"'mean' pooling needs a patch_size dividing the reference image size, got patch_size={patch}, "
                    f"image size {self.reference_image_size}"
                )
            self.num_patches = (self.reference_image_size[0] // patch) * (self.reference_image_size[1] // patch)
        self._set_companion("reference_encoder", reference_encoder)
        self.register_buffer("reference_mean", torch.tensor(reference_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("reference_std", torch.tensor(reference_std).view(1, 3, 1, 1), persistent=False)
        self.head = nn.Linear(feature_channels, self.reference_hidden_size)

    @torch.no_grad()
    def reference_features(self, video: torch.Tensor, num_latent_frames: int) -> torch.Tensor:
        """Pooled reference features per latent frame.

        Args:
            video (`torch.Tensor` of shape `(B, 3, T, H, W)`): range [-1, 1], `T = 1 + g (T' - 1)`.
            num_latent_frames (`int`): `T'`.

        Returns:
            `torch.Tensor` of shape `(B, T', D_ref)`, float32, no gradient.
        """
        batch, _, frames, height, width = video.shape
        images = video.transpose(1, 2).reshape(batch * frames, 3, height, width).float()  # (B*T, 3, H, W)
        images = F.interpolate((images + 1) / 2, size=self.reference_image_size, mode="bilinear", antialias=True)
        images = (images - self.reference_mean) / self.reference_std
        encoder = self.reference_encoder
        out = encoder(pixel_values=images.to(next(encoder.parameters()).dtype))
        if self.reference_pooling == "cls":
            pooled = getattr(out, "pooler_output", None)
            pooled = out.last_hidden_state[:, 0] if pooled is None else pooled
        else:
            pooled = out.last_hidden_state[:, -self.num_patches :].mean(dim=1)
        pooled = pooled.float().view(batch, frames, -1).transpose(1, 2)[..., None, None]  # (B, D, T, 1, 1)
        return temporal_group_pool(pooled, num_latent_frames).flatten(2).transpose(1, 2)  # (B, T', D)

    def forward(self, features: torch.Tensor, video: torch.Tensor, num_latent_frames: int) -> torch.Tensor:
        """
        Args:
            features (`torch.Tensor` of shape `(B, C, T_f, H_f, W_f)`): the adapted encoder tap, any range,
                `T_f = 1 + g_f (T' - 1)`.
            video (`torch.Tensor` of shape `(B, 3, T, H, W)`): the input clip, range [-1, 1], `T = 1 + g (T' - 1)`.
            num_latent_frames (`int`): `T'`, the latent frame count.

        Returns:
            `torch.Tensor` (float32 scalar, >= 0): the KL averaged over batch and latent frames.
        """
        if features.ndim != 5 or features.shape[1] != self.feature_channels:
            raise ValueError(
                f"features must be (B, {self.feature_channels}, T_f, H, W), got shape {tuple(features.shape)}"
            )
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be (B, 3, T, H, W), got shape {tuple(video.shape)}")
        if features.shape[0] != video.shape[0]:
            raise ValueError(f"batch sizes differ: features {features.shape[0]}, video {video.shape[0]}")
        if not (isinstance(num_latent_frames, int) and num_latent_frames >= 1):
            raise ValueError(f"num_latent_frames must be a positive integer, got {num_latent_frames!r}")
        adapted = temporal_group_pool(features.mean(dim=(3, 4), keepdim=True), num_latent_frames)
        adapted = adapted.flatten(2).transpose(1, 2)  # (B, T', C)
        logits = self.head(adapted.to(self.head.weight.dtype))  # (B, T', D_ref)
        reference = self.reference_features(video, num_latent_frames)
        return softmax_kl(reference, logits, self.temperature).mean()


__all__ = [
    "DEFAULT_REFERENCE_ENCODER",
    "PyraTokARHead",
    "PyraTokDriftHead",
    "build_language_model",
    "build_reference_encoder",
    "softmax_kl",
]

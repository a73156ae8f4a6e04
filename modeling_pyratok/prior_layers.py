"""Blocks shared by the token priors (`prior_masked.py`, `prior_ar.py`): attention with a small KV cache, the
MotionAura-style spectral token mixing, text conditioning with a learned null prompt, factorised output heads and
their loss, sampling filters, and the common `PreTrainedModel` base (checks against a tokenizer, model card).

A prior never builds a `2**codebook_dim`-row table: ids enter as their ±1 bits through a linear map and leave through
two softmax heads over `pre = id >> b2` (`2**b1` classes) and `post = id & (2**b2 - 1)` (`2**b2` classes), so the
shipped 16-bit codebook costs two 256-way heads (DESIGN.md §7).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import HfApi, ModelCard, ModelCardData
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_prior import PyraTokPriorConfigBase
from .tokens_pyratok import PyraTokTokenLayout, ids_to_bits

# ---------------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class PyraTokPriorOutput(ModelOutput):
    """Output of a prior's `forward` / `training_loss`.

    Args:
        loss (`torch.FloatTensor`, *optional*): scalar, nats per predicted id (`loss_pre + loss_post`).
        loss_pre, loss_post (`torch.FloatTensor`, *optional*): the mean `CE(pre)` and `CE(post)` terms.
        logits_pre (`torch.FloatTensor`): `(B, N, 2**b1)` over `pre = id >> b2`.
        logits_post (`torch.FloatTensor`): `(B, N, 2**b2)` over `post = id & (2**b2 - 1)` (AR: given the true `pre`).
        mask (`torch.BoolTensor`, *optional*): `(B, N)`, masked prior's `training_loss` only: the positions that were
            replaced by `[MASK]` (the only ones in the loss).
    """

    loss: torch.Tensor | None = None
    loss_pre: torch.Tensor | None = None
    loss_post: torch.Tensor | None = None
    logits_pre: torch.Tensor | None = None
    logits_post: torch.Tensor | None = None
    mask: torch.Tensor | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------------


def split_ids(ids: torch.Tensor, factorized_bits: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids → `(pre, post) = (id >> b2, id & (2**b2 - 1))` (the most / least significant bits)."""
    b2 = factorized_bits[1]
    return ids >> b2, ids & (2**b2 - 1)


def join_ids(pre: torch.Tensor, post: torch.Tensor, factorized_bits: tuple[int, int]) -> torch.Tensor:
    """Inverse of [`split_ids`]: `(pre << b2) | post`."""
    return (pre << factorized_bits[1]) | post


def factorized_cross_entropy(
    logits_pre: torch.Tensor,
    logits_post: torch.Tensor,
    ids: torch.Tensor,
    factorized_bits: tuple[int, int],
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of `CE(pre)` and of `CE(post)` over the positions where `weight` is True (all when `None`); their sum
    is the loss in nats per id.

    Args:
        logits_pre (`torch.FloatTensor`): `(B, N, 2**b1)`.
        logits_post (`torch.FloatTensor`): `(B, N, 2**b2)`.
        ids (`torch.LongTensor`): `(B, N)` targets in `[0, 2**(b1 + b2))`.
        weight (`torch.BoolTensor`, *optional*): `(B, N)` positions in the loss.

    Returns:
        `(loss_pre, loss_post)`: two scalar `torch.FloatTensor`s.
    """
    pre, post = split_ids(ids, factorized_bits)
    ce_pre = F.cross_entropy(logits_pre.float().flatten(0, 1), pre.flatten(), reduction="none")
    ce_post = F.cross_entropy(logits_post.float().flatten(0, 1), post.flatten(), reduction="none")
    if weight is None:
        return ce_pre.mean(), ce_post.mean()
    weight = weight.flatten().to(ce_pre.dtype)
    count = weight.sum().clamp_min(1.0)
    return (ce_pre * weight).sum() / count, (ce_post * weight).sum() / count


def cosine_mask_ratio(t: torch.Tensor) -> torch.Tensor:
    """MaskGIT's cosine schedule: the fraction of masked tokens at time `t` in `[0, 1]`, `cos(π/2 · t)`."""
    return torch.cos(0.5 * math.pi * t)


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """`uncond + scale · (cond - uncond)` (Ho & Salimans, 2022) on logits."""
    return uncond + scale * (cond - uncond)


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Top-k then nucleus (top-p) filtering on the last dimension: removed entries become `-inf`.

    Top-k keeps the `k` largest logits (ties with the k-th kept). Top-p keeps the smallest set of most probable
    entries whose probability reaches `top_p` (an entry is kept when the mass strictly before it, in descending
    order, is below `top_p`), as Holtzman et al. (2020); `top_p=1` keeps everything.
    """
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.float().softmax(-1)
        before = probs.cumsum(-1) - probs
        remove_sorted = before >= top_p
        remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def sample_categorical(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row of `softmax(logits)` over the last dimension: `(..., K)` → `(...)` LongTensor."""
    probs = logits.float().softmax(-1)
    flat = probs.reshape(-1, probs.shape[-1])
    draws = torch.multinomial(flat.to(_generator_device(generator, flat)), 1, generator=generator).to(flat.device)
    return draws.reshape(probs.shape[:-1])


def _generator_device(generator: torch.Generator | None, tensor: torch.Tensor) -> torch.device:
    return generator.device if generator is not None else tensor.device


def rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """`torch.rand` on the generator's device (so a CPU generator reproduces on any device), moved to `device`."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where).to(device)


def check_int_ids(ids: Any, name: str, seq_len: int, high: int, *, allow_shorter: bool = False) -> torch.Tensor:
    """`ValueError` unless `ids` is an integer `(B, seq_len)` tensor (`(B, n <= seq_len)` with `allow_shorter`),
    `B >= 1`, values in `[0, high)`."""
    if (
        not isinstance(ids, torch.Tensor)
        or ids.dtype.is_floating_point
        or ids.dtype.is_complex
        or ids.dtype == torch.bool
    ):
        raise ValueError(f"{name} must be an integer tensor, got {getattr(ids, 'dtype', type(ids).__name__)}")
    if ids.ndim != 2:
        raise ValueError(f"{name} must be (B, N) with N = seq_len = {seq_len}, got shape {tuple(ids.shape)}")
    if ids.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(ids.shape)})")
    n = ids.shape[1]
    if (allow_shorter and not 1 <= n <= seq_len) or (not allow_shorter and n != seq_len):
        want = f"1..{seq_len}" if allow_shorter else str(seq_len)
        raise ValueError(f"{name} has {n} positions; this prior's seq_len is {seq_len} (expected {want})")
    low, top = int(ids.min()), int(ids.max())
    if low < 0 or top >= high:
        raise ValueError(f"{name} must lie in [0, {high}), got min {low}, max {top}")
    return ids.long()


# ---------------------------------------------------------------------------------------------------------------------
# KV cache
# ---------------------------------------------------------------------------------------------------------------------


class PyraTokKVCache:
    """Per-layer keys and values of the causal self-attention (grown one step at a time) and of the text
    cross-attention (computed once). Tensors are `(B, heads, length, head_dim)`."""

    def __init__(self) -> None:
        self.self_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.cross_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def length(self) -> int:
        """Positions already cached (0 before the first step)."""
        return next(iter(self.self_kv.values()))[0].shape[2] if self.self_kv else 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if layer in self.self_kv:
            k = torch.cat([self.self_kv[layer][0], k], dim=2)
            v = torch.cat([self.self_kv[layer][1], v], dim=2)
        self.self_kv[layer] = (k, v)
        return k, v


# ---------------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------------


class PyraTokPriorAttention(nn.Module):
    """Multi-head attention: self (optionally causal, with a KV cache) or cross to a padded text context."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float, cross: bool = False) -> None:
        super().__init__()
        self.num_heads, self.cross, self.dropout = num_heads, cross, dropout
        self.q = nn.Linear(hidden_size, hidden_size)
        self.kv = nn.Linear(hidden_size, 2 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, H) -> (B, heads, L, H / heads)
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: PyraTokKVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        """`x (B, q, H)`; `context (B, L, H)` + `context_mask (B, L)` (True = attend) for cross-attention."""
        q = self._heads(self.q(x))
        attn_mask = None
        if self.cross:
            if cache is not None and layer in cache.cross_kv:
                k, v = cache.cross_kv[layer]
            else:
                k, v = (self._heads(t) for t in self.kv(context).chunk(2, dim=-1))
                if cache is not None:
                    cache.cross_kv[layer] = (k, v)
            attn_mask = context_mask[:, None, None, :]
        else:
            k, v = (self._heads(t) for t in self.kv(x).chunk(2, dim=-1))
            past = cache.length if cache is not None else 0
            if cache is not None:
                k, v = cache.append(layer, k, v)
            if causal and x.shape[1] > 1:  # one query attends to every cached key: no mask needed
                rows = torch.arange(x.shape[1], device=x.device)[:, None] + past
                attn_mask = torch.arange(k.shape[2], device=x.device)[None, :] <= rows
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
        return self.out(y.transpose(1, 2).flatten(2))


class PyraTokSpectralMixing(nn.Module):
    """Token mixing by a learned global filter in the Fourier domain along the sequence.

    `y = irfft(rfft(x, dim=seq) · W, n=N)` with a learned complex `W` of shape `(N // 2 + 1, H)`: a circular
    convolution over the whole sequence in `O(N log N)`, one kernel per channel. MotionAura's spectral transformer
    denoiser (Susladkar et al., ICLR 2025, arXiv:2410.07659) mixes video tokens with 2-D FFT layers; here the
    pyramid sequence has no single 2-D grid, so the transform runs along the 1-D sequence, and the filter takes
    GFNet's global-filter form (Rao et al., NeurIPS 2021, https://github.com/raoyongming/GFNet `gfnet.py`
    `GlobalFilter`, MIT licence) rather than FNet's parameter-free `Re(FFT2(x))` (Lee-Thorp et al., NAACL 2022), so
    the mixing can learn which sequence frequencies (such as the latent-frame period) matter.
    """

    def __init__(self, seq_len: int, hidden_size: int) -> None:
        super().__init__()
        self.seq_len = seq_len
        # (N // 2 + 1, H, 2): real and imaginary parts; GFNet's init (normal, std 0.02).
        self.filter = nn.Parameter(torch.randn(seq_len // 2 + 1, hidden_size, 2) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x (B, N, H)` → `(B, N, H)`; `N` must be the `seq_len` the filter was built for."""
        n = x.shape[1]
        spectrum = torch.fft.rfft(x.float(), n=self.seq_len, dim=1)  # (B, N // 2 + 1, H), zero-padded past n
        y = torch.fft.irfft(spectrum * torch.view_as_complex(self.filter.float()), n=self.seq_len, dim=1)
        return y[:, :n].to(x.dtype)


class PyraTokPriorBlock(nn.Module):
    """Pre-norm transformer block: self-attention → [spectral mixing] → text cross-attention → MLP."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float,
        dropout: float,
        causal: bool,
        spectral_seq_len: int | None = None,
    ) -> None:
        super().__init__()
        self.causal = causal
        self.norm_self = nn.LayerNorm(hidden_size)
        self.self_attn = PyraTokPriorAttention(hidden_size, num_heads, dropout)
        if spectral_seq_len is not None:
            self.norm_spectral = nn.LayerNorm(hidden_size)
            self.spectral = PyraTokSpectralMixing(spectral_seq_len, hidden_size)
        else:
            self.spectral = None
        self.norm_cross = nn.LayerNorm(hidden_size)
        self.cross_attn = PyraTokPriorAttention(hidden_size, num_heads, dropout, cross=True)
        self.norm_mlp = nn.LayerNorm(hidden_size)
        inner = int(round(hidden_size * mlp_ratio))
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, inner), nn.GELU(), nn.Linear(inner, hidden_size), nn.Dropout(dropout)
        )

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        cache: PyraTokKVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.norm_self(x), causal=self.causal, cache=cache, layer=layer)
        if self.spectral is not None:
            x = x + self.spectral(self.norm_spectral(x))
        x = x + self.cross_attn(self.norm_cross(x), context, context_mask, cache=cache, layer=layer)
        return x + self.mlp(self.norm_mlp(x))


class PyraTokTextConditioner(nn.Module):
    """Text embeddings `(B, L, D)` → context `(B, L, H)` for cross-attention, with a learned null prompt.

    The null prompt is one learned `D`-vector (a one-token prompt): it stands for "no text" (`text_embeds=None`),
    replaces dropped prompts in training (classifier-free guidance) and is the unconditional branch of CFG.
    """

    def __init__(self, text_embed_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.null_embed = nn.Parameter(torch.randn(1, text_embed_dim) * 0.02)
        self.norm = nn.LayerNorm(text_embed_dim)
        self.proj = nn.Linear(text_embed_dim, hidden_size)

    def null(self, batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B, L, D)` embeddings and `(B, L)` mask of the null prompt padded to `length`."""
        embeds = self.null_embed.new_zeros(batch, length, self.null_embed.shape[1])
        embeds[:, 0] = self.null_embed[0]
        mask = torch.zeros(batch, length, dtype=torch.bool, device=embeds.device)
        mask[:, 0] = True
        return embeds, mask

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.proj(self.norm(embeds)), mask


def _init_prior_weights(module: nn.Module) -> None:
    """GPT-2-style init: linear weights and embeddings N(0, 0.02), zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# ---------------------------------------------------------------------------------------------------------------------
# Model base
# ---------------------------------------------------------------------------------------------------------------------

MODEL_CARD_TEMPLATE = """
# PyraTok {kind} prior

A text-conditioned {description} over token sequences of the PyraTok video tokenizer
(`{tokenizer}`, fingerprint `{fingerprint}`).

- Sequence: {seq_len} ids per clip, order `{order}`, {num_levels} levels with grids {level_shapes}
  (strides {level_strides}), latent frames {latent_frames}, clip size {frame_size}.
- Codebook: 2^{codebook_dim} = {codebook_size} ids; output = two softmax heads over the {b1} most significant
  (`pre`) and {b2} least significant (`post`) bits.
- Transformer: {layers} layers, hidden {hidden}, {heads} heads, text cross-attention to {text_dim}-d embeddings
  (at most {max_text} tokens); {params:,} parameters.{extra}

## Usage

```python
from modeling_pyratok import PyraTokModel, prior_from_pretrained

prior = prior_from_pretrained("<this repo>")
tokenizer = PyraTokModel.from_pretrained("{tokenizer}")
prior.check_tokenizer(tokenizer)
text_embeds, text_mask = tokenizer.get_text_encoder()(["a red circle moves right"], device="cpu")  # (B, L, {text_dim})
ids = prior.generate(text_embeds, text_mask, guidance_scale=3.0)  # (B, {seq_len})
video = tokenizer.decode_from_sequence(ids, prior.config.layout)
```
"""


class PyraTokPriorPreTrainedModel(PreTrainedModel):
    """Shared parts of both priors: bit input embedding, position + level embeddings, text conditioning, the
    transformer trunk, the `pre` head, checks against tokenizers and layouts, and the model card."""

    config_class = PyraTokPriorConfigBase
    base_model_prefix = "prior"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _no_split_modules = ["PyraTokPriorBlock"]
    _causal = False
    _kind = "token"
    _description = "prior"

    def __init__(self, config: PyraTokPriorConfigBase) -> None:
        super().__init__(config)
        layout = config.layout  # ValueError when the config has no layout
        config._check_layout_fields(layout)
        self._layout = layout
        with torch.device("cpu"):  # from_pretrained builds the model on the meta device; these are index tables
            self._level_index = layout.level_index()  # (N,); a plain tensor, not a buffer: nothing to save or load
            self._frame_index = layout.frame_index()
        h, spectral = config.hidden_size, getattr(config, "spectral_mixing", False)
        self.bits_embed = nn.Linear(layout.codebook_dim, h)
        self.pos_embed = nn.Parameter(torch.randn(layout.seq_len, h) * 0.02)
        self.level_embed = nn.Embedding(layout.num_levels, h)
        self.text = PyraTokTextConditioner(config.text_embed_dim, h)
        self.blocks = nn.ModuleList(
            PyraTokPriorBlock(
                h,
                config.num_attention_heads,
                config.mlp_ratio,
                config.dropout,
                causal=self._causal,
                spectral_seq_len=layout.seq_len if spectral else None,
            )
            for _ in range(config.num_hidden_layers)
        )
        self.norm = nn.LayerNorm(h)
        self.head_pre = nn.Linear(h, 2 ** config.factorized_bits[0])

    def _init_weights(self, module: nn.Module) -> None:
        # Blocks initialise themselves in the constructors (`_init_prior_weights`); a second generic pass on load
        # would only redo the same.
        return

    # ---- sizes ---------------------------------------------------------------------------------------------------
    @property
    def layout(self) -> PyraTokTokenLayout:
        return self._layout

    @property
    def seq_len(self) -> int:
        """Ids per clip `N`."""
        return self._layout.seq_len

    @property
    def codebook_size(self) -> int:
        return self._layout.codebook_size

    @property
    def mask_token_id(self) -> int:
        return self._layout.mask_token_id

    @property
    def factorized_bits(self) -> tuple[int, int]:
        return tuple(self.config.factorized_bits)

    # ---- embedding -----------------------------------------------------------------------------------------------
    def _embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids `(B, n)` in `[0, codebook_size)` → `(B, n, H)` through their ±1 bits."""
        bits = ids_to_bits(ids, self._layout.codebook_dim).to(self.bits_embed.weight.dtype)
        return self.bits_embed(bits)

    def _position_embed(self, start: int, stop: int, device: torch.device) -> torch.Tensor:
        """Position + level embedding of sequence positions `[start, stop)`: `(stop - start, H)`."""
        levels = self._level_index[start:stop].to(device)
        return self.pos_embed[start:stop] + self.level_embed(levels)

    def _trunk(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        cache: PyraTokKVCache | None = None,
    ) -> torch.Tensor:
        """`(B, n, H)` inputs → `(B, n, H)` normalised hidden states."""
        for layer, block in enumerate(self.blocks):
            x = block(x, context, context_mask, cache=cache, layer=layer)
        return self.norm(x)

    # ---- text ----------------------------------------------------------------------------------------------------
    def _check_text(
        self, text_embeds: Any, text_attention_mask: Any, batch: int | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if text_embeds is None:
            if text_attention_mask is not None:
                raise ValueError("text_attention_mask given without text_embeds")
            return None, None
        if not isinstance(text_embeds, torch.Tensor) or not text_embeds.dtype.is_floating_point:
            raise ValueError(
                f"text_embeds must be a float tensor (B, L, D), got {getattr(text_embeds, 'dtype', type(text_embeds))}"
            )
        c = self.config
        if text_embeds.ndim != 3 or text_embeds.shape[2] != c.text_embed_dim:
            raise ValueError(
                f"text_embeds must be (B, L, {c.text_embed_dim}) (config.text_embed_dim), "
                f"got {tuple(text_embeds.shape)}"
            )
        b, length = text_embeds.shape[:2]
        if b == 0:
            raise ValueError(f"text_embeds is an empty batch (shape {tuple(text_embeds.shape)})")
        if batch is not None and b != batch:
            raise ValueError(f"text_embeds has batch {b}, but the ids / batch_size give {batch}")
        if not 1 <= length <= c.max_text_length:
            raise ValueError(f"text_embeds has {length} tokens; config.max_text_length allows 1..{c.max_text_length}")
        if text_attention_mask is None:
            text_attention_mask = torch.ones(b, length, dtype=torch.bool, device=text_embeds.device)
        if not isinstance(text_attention_mask, torch.Tensor) or tuple(text_attention_mask.shape) != (b, length):
            got = tuple(text_attention_mask.shape) if isinstance(text_attention_mask, torch.Tensor) else None
            raise ValueError(f"text_attention_mask must be a tensor of shape {(b, length)}, got {got}")
        text_attention_mask = text_attention_mask.bool().to(text_embeds.device)
        empty = (~text_attention_mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"text_attention_mask has no token in rows {empty} (use text_embeds=None for no text)")
        return text_embeds, text_attention_mask

    def _context(
        self,
        text_embeds: torch.Tensor | None,
        text_attention_mask: torch.Tensor | None,
        batch: int,
        drop: torch.Tensor | None = None,
        with_null: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked text → `(context (B', L, H), mask (B', L))`. `None` → the null prompt; `drop (B,)` True rows get
        the null prompt; `with_null` appends B null-prompt rows (the unconditional half of batched CFG)."""
        if text_embeds is None:
            embeds, mask = self.text.null(batch * (2 if with_null else 1), 1)
            return self.text(embeds, mask)
        embeds = text_embeds.to(self.text.null_embed.dtype)
        mask = text_attention_mask
        if drop is not None and bool(drop.any()):
            null_embeds, null_mask = self.text.null(batch, embeds.shape[1])
            embeds = torch.where(drop[:, None, None], null_embeds, embeds)
            mask = torch.where(drop[:, None], null_mask, mask)
        if with_null:
            null_embeds, null_mask = self.text.null(batch, embeds.shape[1])
            embeds, mask = torch.cat([embeds, null_embeds]), torch.cat([mask, null_mask])
        return self.text(embeds, mask)

    def _cond_drop(self, batch: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor | None:
        """`(B,)` True where the prompt is replaced by the null prompt (`model.train()` mode only)."""
        p = self.config.cond_dropout_prob
        if not self.training or p <= 0:
            return None
        return rand((batch,), generator, device) < p

    # ---- generation arguments --------------------------------------------------------------------------------------
    def _generation_batch(
        self,
        text_embeds: Any,
        text_attention_mask: Any,
        batch_size: int | None,
        prefix_ids: Any,
        guidance_scale: float,
        temperature: float,
    ) -> tuple[int, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Checks the common `generate` arguments; returns `(B, text_embeds, text_mask, prefix_ids)`."""
        if not isinstance(guidance_scale, (int, float)) or not guidance_scale >= 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale!r}")
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if batch_size is not None and (type(batch_size) is not int or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        batch = batch_size
        if text_embeds is not None and isinstance(text_embeds, torch.Tensor) and text_embeds.ndim == 3:
            if batch is not None and text_embeds.shape[0] != batch:
                raise ValueError(f"batch_size={batch} but text_embeds has batch {text_embeds.shape[0]}")
            batch = text_embeds.shape[0] if text_embeds.shape[0] else batch
        if prefix_ids is not None:
            prefix_ids = check_int_ids(prefix_ids, "prefix_ids", self.seq_len, self.codebook_size, allow_shorter=True)
            self._check_prefix_length(prefix_ids.shape[1])
            if batch is not None and prefix_ids.shape[0] != batch:
                raise ValueError(
                    f"prefix_ids has batch {prefix_ids.shape[0]}, but text_embeds / batch_size give {batch}"
                )
            batch = prefix_ids.shape[0]
        batch = 1 if batch is None else batch
        text_embeds, text_attention_mask = self._check_text(text_embeds, text_attention_mask, batch)
        return batch, text_embeds, text_attention_mask, prefix_ids

    def _check_prefix_length(self, length: int) -> None:
        """A prefix must be whole latent frames: the positions before it hold frames `< k`, those after `>= k`."""
        frames = self._frame_index
        if length == self.seq_len or int(frames[:length].max()) < int(frames[length:].min()):
            return
        counts = [int((frames < k).sum()) for k in range(1, self._layout.num_latent_frames + 1)]
        allowed = [n for n in counts if n == self.seq_len or int(frames[:n].max()) < int(frames[n:].min())]
        raise ValueError(
            f"prefix_ids has {length} positions, not a whole number of latent frames for this layout "
            f"(order={self._layout.order!r}); allowed lengths: {allowed}"
        )

    # ---- checks against tokenizers and layouts ---------------------------------------------------------------------
    def check_layout(self, layout: PyraTokTokenLayout | Mapping[str, Any]) -> None:
        """`ValueError` naming every field in which `layout` (e.g. a token dataset's) differs from this prior's."""
        if isinstance(layout, Mapping):
            layout = PyraTokTokenLayout.from_dict(layout)
        if not isinstance(layout, PyraTokTokenLayout):
            raise ValueError(f"layout must be a PyraTokTokenLayout or its dict, got {type(layout).__name__}")
        ours, theirs = self._layout.to_dict(), layout.to_dict()
        differing = {k: (theirs[k], ours[k]) for k in ours if ours[k] != theirs[k]}
        if differing:
            detail = "; ".join(f"{k}: got {a!r}, prior has {b!r}" for k, (a, b) in differing.items())
            raise ValueError(f"token layout differs from this prior's in {sorted(differing)}: {detail}")

    def check_tokenizer(self, tokenizer: Any, *, strict_fingerprint: bool = False) -> None:
        """`ValueError` naming what differs when `tokenizer` (a `PyraTokModel` or `AutoencoderPyraTok`) cannot have
        made this prior's tokens: codebook_dim, level strides or level grids (for the layout's clip size). A
        different `tokenizer_fingerprint` (same shapes, other weights) warns, or raises with `strict_fingerprint`."""
        core = getattr(tokenizer, "core", None)
        if core is None or not hasattr(core, "quantizer"):
            raise ValueError(f"tokenizer must be a PyraTokModel or AutoencoderPyraTok, got {type(tokenizer).__name__}")
        layout = self._layout
        differing = {}
        codebook_dim = core.config.codebook_dim
        if codebook_dim != layout.codebook_dim:
            differing["codebook_dim"] = (codebook_dim, layout.codebook_dim)
        strides = tuple(core.quantizer.level_spatial_strides)
        if strides != layout.level_strides:
            differing["level_strides"] = (strides, layout.level_strides)
        else:
            try:
                if layout.frame_size is not None:
                    frames = (layout.num_latent_frames - 1) * core.backbone.temporal_chunk + 1
                    grids = core.token_layout(frames, *layout.frame_size, is_image=layout.is_image).level_shapes
                else:
                    grids = tuple(core.quantizer.level_grid(layout.latent_size))
            except ValueError as err:
                grids = f"none ({err})"
            if grids != layout.level_shapes:
                differing["level_shapes"] = (grids, layout.level_shapes)
        if differing:
            detail = "; ".join(f"{k}: tokenizer has {a}, prior expects {b}" for k, (a, b) in differing.items())
            raise ValueError(
                f"this prior was trained on another tokenizer's tokens ({sorted(differing)} differ): {detail}"
            )
        recorded = self.config.tokenizer_fingerprint
        if recorded is None:
            return
        found = tokenizer_fingerprint(tokenizer)
        if found is not None and found != recorded:
            message = (
                f"tokenizer fingerprint {found} differs from the one this prior was trained on ({recorded}, "
                f"{self.config.tokenizer_name}): same shapes, other weights, so its codes mean something else"
            )
            if strict_fingerprint:
                raise ValueError(message)
            warnings.warn(message, stacklevel=2)

    # ---- Hub -----------------------------------------------------------------------------------------------------
    def _card_extra(self) -> str:
        return ""

    def model_card(self, details: str | None = None) -> ModelCard:
        """A Hub model card describing this prior (written by `save_pretrained`); `details` (markdown: training
        command, wall time, metrics) is appended as a "Training and evaluation" section."""
        c, layout = self.config, self._layout
        data = ModelCardData(
            library_name="transformers", license="apache-2.0", tags=["pyratok", "text-to-video", f"{self._kind}-prior"]
        )
        body = MODEL_CARD_TEMPLATE.format(
            kind=self._kind,
            description=self._description,
            tokenizer=c.tokenizer_name or "<tokenizer>",
            fingerprint=c.tokenizer_fingerprint or "not recorded",
            seq_len=layout.seq_len,
            order=layout.order,
            num_levels=layout.num_levels,
            level_shapes=[list(s) for s in layout.level_shapes],
            level_strides=list(layout.level_strides),
            latent_frames=layout.num_latent_frames,
            frame_size="x".join(map(str, layout.frame_size)) if layout.frame_size else "unknown",
            codebook_dim=layout.codebook_dim,
            codebook_size=layout.codebook_size,
            b1=c.factorized_bits[0],
            b2=c.factorized_bits[1],
            layers=c.num_hidden_layers,
            hidden=c.hidden_size,
            heads=c.num_attention_heads,
            text_dim=c.text_embed_dim,
            max_text=c.max_text_length,
            params=sum(p.numel() for p in self.parameters()),
            extra=self._card_extra(),
        )
        if details:
            body += f"\n## Training and evaluation\n\n{details.strip()}\n"
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
            message = commit_message or f"Upload PyraTok {self._kind} prior"
            return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=message)


def tokenizer_fingerprint(tokenizer: Any) -> str | None:
    """`pyratok.cli.model_fingerprint` of a `PyraTokModel` or `AutoencoderPyraTok` (same weights → same value);
    `None` with a warning where `pyratok` is not installed (remote code on the Hub)."""
    try:
        from pyratok.cli import model_fingerprint
    except ImportError:
        warnings.warn("pyratok is not installed: cannot compare the tokenizer fingerprint", stacklevel=3)
        return None
    return model_fingerprint(tokenizer)


def prior_from_pretrained(path: str | os.PathLike, **kwargs) -> PyraTokPriorPreTrainedModel:
    """Load a masked or AR prior from a folder or Hub id, picking the class from `model_type` in its config.json."""
    from transformers.utils import cached_file

    from .prior_ar import PyraTokARPrior
    from .prior_masked import PyraTokMaskedPrior

    hub = {k: kwargs[k] for k in ("subfolder", "revision", "token", "cache_dir", "local_files_only") if k in kwargs}
    config_file = cached_file(str(path), "config.json", **hub)
    with open(config_file, encoding="utf-8") as handle:
        model_type = json.load(handle).get("model_type")
    classes = {cls.config_class.model_type: cls for cls in (PyraTokMaskedPrior, PyraTokARPrior)}
    if model_type not in classes:
        raise ValueError(
            f"{path} is not a PyraTok prior: model_type {model_type!r}, expected one of {sorted(classes)}"
        )
    return classes[model_type].from_pretrained(path, **kwargs)


__all__ = [
    "PyraTokKVCache",
    "PyraTokPriorAttention",
    "PyraTokPriorBlock",
    "PyraTokPriorOutput",
    "PyraTokPriorPreTrainedModel",
    "PyraTokSpectralMixing",
    "PyraTokTextConditioner",
    "classifier_free_guidance",
    "cosine_mask_ratio",
    "factorized_cross_entropy",
    "filter_logits",
    "join_ids",
    "prior_from_pretrained",
    "sample_categorical",
    "split_ids",
    "tokenizer_fingerprint",
]

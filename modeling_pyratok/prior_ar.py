"""Autoregressive prior over frame-major PyraTok token sequences (Open-MAGVIT2 style, issue 23 §2).

A causal transformer predicts id `i` from the ids before it (a learned start token stands before the first id), with
Open-MAGVIT2's asymmetric token factorisation (Luo et al., 2024, arXiv:2409.04410,
https://github.com/TencentARC/SEED-Voken `src/Open_MAGVIT2/models/lfqgpt.py`, Apache-2.0): the id's `pre` part
(its `b1` most significant bits here) is predicted from the hidden state, the `post` part from the hidden state plus
an embedding of the `pre` part, so a 2^16 vocabulary costs two small heads. Text conditions every block through
cross-attention (rather than a text prefix), so sequence positions, the position embedding and the KV cache cover
code ids only and a primed clip continues at the same positions it was trained on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel  # noqa: F401 - PreTrainedModel: see below

# PreTrainedModel is imported for diffusers' pipeline loader, which finds a component's load method by looking its
# base class up in the component's own module.
from .configuration_prior import PyraTokARPriorConfig
from .prior_layers import (
    PyraTokKVCache,
    PyraTokPriorOutput,
    PyraTokPriorPreTrainedModel,
    _init_prior_weights,
    check_int_ids,
    classifier_free_guidance,
    factorized_cross_entropy,
    filter_logits,
    join_ids,
    sample_categorical,
    split_ids,
)


class PyraTokARPrior(PyraTokPriorPreTrainedModel):
    """Text-conditioned autoregressive prior over one frame-major layout's token sequences.

    Position `i`'s input is the start token (`i = 0`) or `W_bits · bits(id[i-1])`, plus the position and level
    embeddings of position `i` (so the model knows which level it predicts). Outputs at position `i`: `logits_pre`
    over `pre = id[i] >> b2` and, given `pre`, `logits_post` over `post = id[i] & (2**b2 - 1)`.

    Example:
        ```python
        >>> layout = tokenizer.token_layout(17, 64, 64)  # frame_major
        >>> prior = PyraTokARPrior(PyraTokARPriorConfig(token_layout=layout.to_dict()))
        >>> loss = prior.training_loss(ids, text_embeds, text_mask).loss
        >>> ids = prior.generate(text_embeds, text_mask, guidance_scale=3.0, top_k=64)
        ```
    """

    config_class = PyraTokARPriorConfig
    _causal = True
    _kind = "autoregressive"
    _description = "autoregressive (Open-MAGVIT2-style) prior"

    def __init__(self, config: PyraTokARPriorConfig) -> None:
        super().__init__(config)
        h = config.hidden_size
        b1, b2 = config.factorized_bits
        self.start_embed = nn.Parameter(torch.randn(h) * 0.02)
        self.pre_embed = nn.Embedding(2**b1, h)
        self.head_post = nn.Sequential(nn.LayerNorm(h), nn.Linear(h, h), nn.GELU(), nn.Linear(h, 2**b2))
        self.apply(_init_prior_weights)
        self.post_init()

    def _card_extra(self) -> str:
        return "\n- Order: frame-major; text by cross-attention; `post` head conditioned on the sampled `pre`."

    # ---- forward -------------------------------------------------------------------------------------------------
    def _input_embeds(self, ids: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Inputs of positions `[start, stop)`: `(B, stop - start, H)` from the start token and `ids[:, :stop-1]`."""
        parts = []
        if start == 0:
            parts.append(self.start_embed.expand(ids.shape[0], 1, -1))
        first = max(start, 1)
        if stop > first:
            parts.append(self._embed_ids(ids[:, first - 1 : stop - 1]))
        return torch.cat(parts, dim=1) + self._position_embed(start, stop, ids.device)

    def _post_logits(self, hidden: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        """`post` logits `(..., 2**b2)` from hidden states `(..., H)` and the `pre` parts `(...)`."""
        return self.head_post(hidden + self.pre_embed(pre))

    def forward(
        self,
        input_ids: torch.LongTensor,
        text_embeds: torch.FloatTensor | None = None,
        text_attention_mask: torch.BoolTensor | None = None,
        return_dict: bool = True,
    ) -> PyraTokPriorOutput | tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced logits: position `i` predicts `input_ids[:, i]` from `input_ids[:, :i]`.

        Args:
            input_ids (`torch.LongTensor`): `(B, n)` ids in `[0, codebook_size)`, `1 <= n <= seq_len` (a prefix of
                the sequence).
            text_embeds (`torch.FloatTensor`, *optional*): `(B, L, text_embed_dim)`; `None` → the null prompt.
            text_attention_mask (`torch.BoolTensor`, *optional*): `(B, L)`, True at real text tokens.

        Returns:
            [`PyraTokPriorOutput`] with `logits_pre (B, n, 2**b1)` and `logits_post (B, n, 2**b2)` (the latter given
            the true `pre` of `input_ids[:, i]`).
        """
        ids = check_int_ids(input_ids, "input_ids", self.seq_len, self.codebook_size, allow_shorter=True)
        text_embeds, text_attention_mask = self._check_text(text_embeds, text_attention_mask, ids.shape[0])
        context, context_mask = self._context(text_embeds, text_attention_mask, ids.shape[0])
        logits_pre, logits_post = self._teacher_forced(ids, context, context_mask)
        if not return_dict:
            return logits_pre, logits_post
        return PyraTokPriorOutput(logits_pre=logits_pre, logits_post=logits_post)

    def _teacher_forced(
        self, ids: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self._trunk(self._input_embeds(ids, 0, ids.shape[1]), context, context_mask)
        pre, _ = split_ids(ids, self.factorized_bits)
        return self.head_pre(h), self._post_logits(h, pre)

    # ---- training ------------------------------------------------------------------------------------------------
    def training_loss(
        self,
        ids: torch.LongTensor,
        text_embeds: torch.FloatTensor | None = None,
        text_attention_mask: torch.BoolTensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PyraTokPriorOutput:
        """Next-id loss `CE(pre) + CE(post | true pre)` averaged over all positions (teacher forcing).

        Args:
            ids (`torch.LongTensor`): `(B, N)` ids in `[0, codebook_size)`.
            text_embeds, text_attention_mask: as in `forward`; in `model.train()` mode each prompt is replaced by
                the null prompt with probability `config.cond_dropout_prob`.
            generator (`torch.Generator`, *optional*): makes the prompt dropout reproducible.

        Returns:
            [`PyraTokPriorOutput`]: `loss` (nats per id) and the logits.
        """
        ids = check_int_ids(ids, "ids", self.seq_len, self.codebook_size)
        batch = ids.shape[0]
        text_embeds, text_attention_mask = self._check_text(text_embeds, text_attention_mask, batch)
        drop = self._cond_drop(batch, generator, ids.device)
        context, context_mask = self._context(text_embeds, text_attention_mask, batch, drop=drop)
        logits_pre, logits_post = self._teacher_forced(ids, context, context_mask)
        loss_pre, loss_post = factorized_cross_entropy(logits_pre, logits_post, ids, self.factorized_bits)
        return PyraTokPriorOutput(
            loss=loss_pre + loss_post,
            loss_pre=loss_pre,
            loss_post=loss_post,
            logits_pre=logits_pre,
            logits_post=logits_post,
        )

    # ---- sampling ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        text_embeds: torch.FloatTensor | None = None,
        text_attention_mask: torch.BoolTensor | None = None,
        *,
        batch_size: int | None = None,
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        prefix_ids: torch.LongTensor | None = None,
        callback: Callable[[int, int], None] | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
    ) -> torch.LongTensor:
        """Sample ids one position at a time: `pre` from the hidden state, then `post` given the sampled `pre`.

        Each of the two draws uses `softmax(filter(guided_logits / temperature))`, `filter` = top-k then top-p.

        Args:
            text_embeds (`torch.FloatTensor`, *optional*): `(B, L, text_embed_dim)`; `None` → unconditional.
            text_attention_mask (`torch.BoolTensor`, *optional*): `(B, L)`.
            batch_size (`int`, *optional*): `B` when neither text nor prefix gives it (default 1).
            guidance_scale (`float`): classifier-free guidance `s >= 0` (conditional and null-prompt rows in one
                batch): `logits = u + s·(c - u)`; `1.0` runs only the conditional rows (as does `text_embeds=None`).
            temperature (`float`): `> 0`.
            generator (`torch.Generator`, *optional*): makes sampling reproducible.
            prefix_ids (`torch.LongTensor`, *optional*): `(B, P)` ids of the first `P` positions (whole latent frames
                of a primed clip); sampling continues after them.
            callback (`Callable[[int, int], None]`, *optional*): called `(step, N - P)` after each sampled position.
            top_k (`int`, *optional*): keep the `k >= 1` most likely `pre` / `post` values.
            top_p (`float`, *optional*): nucleus sampling, `0 < top_p <= 1`.
            use_cache (`bool`): reuse keys and values of past positions (same result, faster).

        Returns:
            `torch.LongTensor` `(B, N)` ids in `[0, codebook_size)` (the prefix, then the sampled ids).
        """
        return self._sample(
            text_embeds,
            text_attention_mask,
            batch_size=batch_size,
            guidance_scale=guidance_scale,
            temperature=temperature,
            generator=generator,
            prefix_ids=prefix_ids,
            callback=callback,
            top_k=top_k,
            top_p=top_p,
            use_cache=use_cache,
        )

    @torch.no_grad()
    def _sample(
        self,
        text_embeds: torch.Tensor | None,
        text_attention_mask: torch.Tensor | None,
        *,
        batch_size: int | None,
        guidance_scale: float,
        temperature: float,
        generator: torch.Generator | None,
        prefix_ids: torch.Tensor | None,
        callback: Callable[[int, int], None] | None,
        top_k: int | None,
        top_p: float | None,
        use_cache: bool,
        record: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """`generate`; `record` (tests) receives the guided `(pre, post)` logits of every step."""
        if top_k is not None and (type(top_k) is not int or top_k < 1):
            raise ValueError(f"top_k must be an int >= 1 or None, got {top_k!r}")
        if top_p is not None and (not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
            raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}")
        if not isinstance(use_cache, bool):
            raise ValueError(f"use_cache must be a bool, got {use_cache!r}")
        batch, text_embeds, text_attention_mask, prefix_ids = self._generation_batch(
            text_embeds, text_attention_mask, batch_size, prefix_ids, guidance_scale, temperature
        )
        device = self.pos_embed.device
        cfg = text_embeds is not None and guidance_scale != 1.0
        context, context_mask = self._context(text_embeds, text_attention_mask, batch, with_null=cfg)
        ids = torch.zeros(batch, self.seq_len, dtype=torch.long, device=device)
        first = 0 if prefix_ids is None else prefix_ids.shape[1]
        if prefix_ids is not None:
            ids[:, :first] = prefix_ids.to(device)
        cache = PyraTokKVCache() if use_cache else None

        def draw(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if cfg:
                logits = classifier_free_guidance(*logits.chunk(2), guidance_scale)
            return logits, sample_categorical(filter_logits(logits.float() / temperature, top_k, top_p), generator)

        for i in range(first, self.seq_len):
            rows = torch.cat([ids, ids]) if cfg else ids
            # Without a cache every step reruns positions 0..i; with one, the first step fills it with the start
            # token and the whole prefix, later steps feed only position i.
            start = i if use_cache and i > first else 0
            h = self._trunk(self._input_embeds(rows, start, i + 1), context, context_mask, cache=cache)[:, -1]
            logits_pre, pre = draw(self.head_pre(h))
            logits_post, post = draw(self._post_logits(h, torch.cat([pre, pre]) if cfg else pre))
            ids[:, i] = join_ids(pre, post, self.factorized_bits)
            if record is not None:
                record.append((logits_pre, logits_post))
            if callback is not None:
                callback(i - first + 1, self.seq_len - first)
        return ids


PyraTokARPriorConfig.register_for_auto_class()
PyraTokARPrior.register_for_auto_class("AutoModel")
AutoConfig.register(PyraTokARPriorConfig.model_type, PyraTokARPriorConfig, exist_ok=True)
AutoModel.register(PyraTokARPriorConfig, PyraTokARPrior, exist_ok=True)

__all__ = ["PyraTokARPrior"]

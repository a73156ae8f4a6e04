"""Masked discrete-diffusion prior over PyraTok token sequences (MaskGIT / MotionAura, issue 23 §2).

Absorbing-state diffusion in MaskGIT's form (Chang et al., CVPR 2022, https://github.com/google-research/maskgit,
Apache-2.0): training masks a cosine-scheduled fraction of a clip's ids with `[MASK]` and predicts them with a
bidirectional transformer (text by cross-attention); sampling starts from all `[MASK]` (or a primed prefix of whole
latent frames) and, over `num_inference_steps`, samples every masked id in parallel, keeps the most confident and
re-masks the rest (`maskgit/libml/parallel_decode.py` `decode`, `mask_schedule.py`), with MotionAura's optional
spectral token mixing (`prior_layers.PyraTokSpectralMixing`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel  # noqa: F401 - PreTrainedModel: see below

# PreTrainedModel is imported for diffusers' pipeline loader, which finds a component's load method by looking its
# base class up in the component's own module.
from .configuration_prior import PyraTokMaskedPriorConfig
from .prior_layers import (
    PyraTokPriorOutput,
    PyraTokPriorPreTrainedModel,
    _init_prior_weights,
    check_int_ids,
    classifier_free_guidance,
    cosine_mask_ratio,
    factorized_cross_entropy,
    join_ids,
    rand,
    sample_categorical,
)


class PyraTokMaskedPrior(PyraTokPriorPreTrainedModel):
    """Text-conditioned masked (absorbing-`[MASK]`) discrete-diffusion prior over one layout's token sequences.

    Inputs: ids `(B, N)` in `[0, codebook_size]` (`codebook_size` = `mask_token_id`), embedded as
    `W_bits · bits(id)` (a learned `[MASK]` vector at masked positions) + position + level embeddings.
    Outputs: independent softmax heads over `pre = id >> b2` and `post = id & (2**b2 - 1)` at every position.

    Example:
        ```python
        >>> layout = tokenizer.token_layout(17, 64, 64)
        >>> prior = PyraTokMaskedPrior(PyraTokMaskedPriorConfig(token_layout=layout.to_dict()))
        >>> loss = prior.training_loss(ids, text_embeds, text_mask).loss
        >>> ids = prior.generate(text_embeds, text_mask, guidance_scale=3.0, num_inference_steps=12)
        ```
    """

    config_class = PyraTokMaskedPriorConfig
    _causal = False
    _kind = "masked"
    _description = "masked discrete-diffusion (MaskGIT / MotionAura) prior"

    def __init__(self, config: PyraTokMaskedPriorConfig) -> None:
        super().__init__(config)
        self.mask_embed = nn.Parameter(torch.randn(config.hidden_size) * 0.02)
        self.head_post = nn.Linear(config.hidden_size, 2 ** config.factorized_bits[1])
        self.apply(_init_prior_weights)
        self.post_init()

    def _card_extra(self) -> str:
        spectral = "; spectral (FFT) token mixing in every block" if self.config.spectral_mixing else ""
        return f"\n- Masking schedule: {self.config.mask_schedule}{spectral}."

    # ---- forward -------------------------------------------------------------------------------------------------
    def _logits(
        self, ids: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        masked = ids == self.mask_token_id
        x = self._embed_ids(ids.masked_fill(masked, 0))
        x = torch.where(masked[..., None], self.mask_embed.to(x.dtype), x)
        x = x + self._position_embed(0, ids.shape[1], ids.device)
        h = self._trunk(x, context, context_mask)
        return self.head_pre(h), self.head_post(h)

    def forward(
        self,
        input_ids: torch.LongTensor,
        text_embeds: torch.FloatTensor | None = None,
        text_attention_mask: torch.BoolTensor | None = None,
        return_dict: bool = True,
    ) -> PyraTokPriorOutput | tuple[torch.Tensor, torch.Tensor]:
        """Logits at every position of partly masked sequences.

        Args:
            input_ids (`torch.LongTensor`): `(B, N)` in `[0, codebook_size]`; `mask_token_id` marks unknown ids.
            text_embeds (`torch.FloatTensor`, *optional*): `(B, L, text_embed_dim)`; `None` → the null prompt.
            text_attention_mask (`torch.BoolTensor`, *optional*): `(B, L)`, True at real text tokens.

        Returns:
            [`PyraTokPriorOutput`] with `logits_pre (B, N, 2**b1)` and `logits_post (B, N, 2**b2)`.
        """
        ids = check_int_ids(input_ids, "input_ids", self.seq_len, self.mask_token_id + 1)
        text_embeds, text_attention_mask = self._check_text(text_embeds, text_attention_mask, ids.shape[0])
        context, context_mask = self._context(text_embeds, text_attention_mask, ids.shape[0])
        logits_pre, logits_post = self._logits(ids, context, context_mask)
        if not return_dict:
            return logits_pre, logits_post
        return PyraTokPriorOutput(logits_pre=logits_pre, logits_post=logits_post)

    # ---- training ------------------------------------------------------------------------------------------------
    def sample_training_mask(
        self, batch: int, generator: torch.Generator | None, device: torch.device
    ) -> torch.Tensor:
        """`(B, N)` BoolTensor of positions to mask: per clip `u ~ U(0, 1)`, `ceil(cos(π/2 · u) · N)` positions
        (at least 1), the ones with the smallest of `N` uniform scores.

        Draws, in order, from `generator`: `rand(B)` for `u`, then `rand(B, N)` for the scores.
        """
        u = rand((batch,), generator, device)
        count = torch.ceil(cosine_mask_ratio(u) * self.seq_len).long().clamp(1, self.seq_len)
        scores = rand((batch, self.seq_len), generator, device)
        rank = scores.argsort(dim=1).argsort(dim=1)  # rank of each position's score within its clip
        return rank < count[:, None]

    def training_loss(
        self,
        ids: torch.LongTensor,
        text_embeds: torch.FloatTensor | None = None,
        text_attention_mask: torch.BoolTensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PyraTokPriorOutput:
        """Masked-token loss: `CE(pre) + CE(post)` averaged over the masked positions of the batch.

        Args:
            ids (`torch.LongTensor`): `(B, N)` clean ids in `[0, codebook_size)`.
            text_embeds, text_attention_mask: as in `forward`; in `model.train()` mode each prompt is replaced by
                the null prompt with probability `config.cond_dropout_prob` (drawn after the mask).
            generator (`torch.Generator`, *optional*): makes the mask (and prompt dropout) reproducible.

        Returns:
            [`PyraTokPriorOutput`]: `loss` (nats per masked id), the logits and `mask (B, N)`.
        """
        ids = check_int_ids(ids, "ids", self.seq_len, self.codebook_size)
        batch = ids.shape[0]
        text_embeds, text_attention_mask = self._check_text(text_embeds, text_attention_mask, batch)
        mask = self.sample_training_mask(batch, generator, ids.device)
        drop = self._cond_drop(batch, generator, ids.device)
        context, context_mask = self._context(text_embeds, text_attention_mask, batch, drop=drop)
        logits_pre, logits_post = self._logits(ids.masked_fill(mask, self.mask_token_id), context, context_mask)
        loss_pre, loss_post = factorized_cross_entropy(logits_pre, logits_post, ids, self.factorized_bits, weight=mask)
        return PyraTokPriorOutput(
            loss=loss_pre + loss_post,
            loss_pre=loss_pre,
            loss_post=loss_post,
            logits_pre=logits_pre,
            logits_post=logits_post,
            mask=mask,
        )

    # ---- sampling ------------------------------------------------------------------------------------------------
    def _guided_logits(
        self, ids: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor, guidance_scale: float, cfg: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not cfg:
            return self._logits(ids, context, context_mask)
        pre, post = self._logits(torch.cat([ids, ids]), context, context_mask)
        (pre_c, pre_u), (post_c, post_u) = pre.chunk(2), post.chunk(2)
        return (
            classifier_free_guidance(pre_c, pre_u, guidance_scale),
            classifier_free_guidance(post_c, post_u, guidance_scale),
        )

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
        num_inference_steps: int = 12,
        choice_temperature: float = 4.5,
    ) -> torch.LongTensor:
        """Iterative parallel decoding (MaskGIT) from all-`[MASK]` (or a primed prefix) to a full id sequence.

        Each step samples every masked id (`pre` and `post` from `softmax(logits / temperature)`), scores it by its
        log-probability `log p(pre) + log p(post)` plus Gumbel noise scaled by `choice_temperature · (1 - r)`
        (`r` = fraction of steps done, MaskGIT's annealing), keeps the most confident and re-masks
        `floor(U · cos(π/2 · r))` of them (`U` = ids unknown at the start; at least 1 and at most all but one
        while steps remain); the last step keeps everything.

        Args:
            text_embeds (`torch.FloatTensor`, *optional*): `(B, L, text_embed_dim)`; `None` → unconditional.
            text_attention_mask (`torch.BoolTensor`, *optional*): `(B, L)`.
            batch_size (`int`, *optional*): `B` when neither text nor prefix gives it (default 1).
            guidance_scale (`float`): classifier-free guidance `s >= 0`: `logits = u + s·(c - u)` with the null prompt
                as `u`; `1.0` runs only the conditional pass (as does `text_embeds=None`).
            temperature (`float`): sampling temperature `> 0`.
            generator (`torch.Generator`, *optional*): makes sampling reproducible.
            prefix_ids (`torch.LongTensor`, *optional*): `(B, P)` ids of whole latent frames kept as given.
            callback (`Callable[[int, int], None]`, *optional*): called `(step, num_inference_steps)` after a step.
            num_inference_steps (`int`): decoding steps `>= 1`.
            choice_temperature (`float`): scale of the Gumbel noise on confidences (MaskGIT's 4.5), `>= 0`.

        Returns:
            `torch.LongTensor` `(B, N)` ids in `[0, codebook_size)`.
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
            num_inference_steps=num_inference_steps,
            choice_temperature=choice_temperature,
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
        num_inference_steps: int,
        choice_temperature: float,
        record: list[tuple[torch.Tensor, ...]] | None = None,
    ) -> torch.Tensor:
        """`generate`; `record` (tests) receives `(input ids, guided pre logits, guided post logits, sampled ids)`
        of every step."""
        if type(num_inference_steps) is not int or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be an int >= 1, got {num_inference_steps!r}")
        if not isinstance(choice_temperature, (int, float)) or not choice_temperature >= 0:
            raise ValueError(f"choice_temperature must be >= 0, got {choice_temperature!r}")
        batch, text_embeds, text_attention_mask, prefix_ids = self._generation_batch(
            text_embeds, text_attention_mask, batch_size, prefix_ids, guidance_scale, temperature
        )
        device = self.pos_embed.device
        cfg = text_embeds is not None and guidance_scale != 1.0
        context, context_mask = self._context(text_embeds, text_attention_mask, batch, with_null=cfg)
        ids = torch.full((batch, self.seq_len), self.mask_token_id, dtype=torch.long, device=device)
        if prefix_ids is not None:
            ids[:, : prefix_ids.shape[1]] = prefix_ids.to(device)
        unknown_at_start = int((ids[0] == self.mask_token_id).sum())
        for step in range(num_inference_steps):
            unknown = ids == self.mask_token_id
            logits_pre, logits_post = self._guided_logits(ids, context, context_mask, guidance_scale, cfg)
            logp_pre = (logits_pre.float() / temperature).log_softmax(-1)
            logp_post = (logits_post.float() / temperature).log_softmax(-1)
            pre = sample_categorical(logp_pre, generator)
            post = sample_categorical(logp_post, generator)
            confidence = logp_pre.gather(-1, pre[..., None])[..., 0] + logp_post.gather(-1, post[..., None])[..., 0]
            sampled = torch.where(unknown, join_ids(pre, post, self.factorized_bits), ids)
            if record is not None:
                record.append((ids, logits_pre, logits_post, sampled))
            ratio = (step + 1) / num_inference_steps
            num_unknown = int(unknown[0].sum())
            if step == num_inference_steps - 1 or num_unknown == 0:
                remask_count = 0
            else:
                remask_count = math.floor(unknown_at_start * math.cos(0.5 * math.pi * ratio))
                remask_count = max(0, min(num_unknown - 1, max(1, remask_count)))
            if remask_count:
                noise = -torch.log(-torch.log(rand(tuple(ids.shape), generator, device).clamp(1e-20, 1.0 - 1e-7)))
                score = confidence + choice_temperature * (1.0 - ratio) * noise
                score = score.masked_fill(~unknown, float("inf"))  # known ids are never re-masked
                lowest = score.topk(remask_count, dim=1, largest=False).indices
                sampled = sampled.scatter(1, lowest, self.mask_token_id)
            ids = sampled
            if callback is not None:
                callback(step + 1, num_inference_steps)
        return ids


PyraTokMaskedPriorConfig.register_for_auto_class()
PyraTokMaskedPrior.register_for_auto_class("AutoModel")
AutoConfig.register(PyraTokMaskedPriorConfig.model_type, PyraTokMaskedPriorConfig, exist_ok=True)
AutoModel.register(PyraTokMaskedPriorConfig, PyraTokMaskedPrior, exist_ok=True)

__all__ = ["PyraTokMaskedPrior"]

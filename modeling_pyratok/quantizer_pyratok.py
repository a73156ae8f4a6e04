"""LaPQ: language-aligned pyramidal quantization with a shared lookup-free binary codebook (DESIGN.md §3–4).

Conventions (fixed by published checkpoints, do not change): a code is `codebook_dim` values in {-1, +1}; its id is
the bits (value > 0) read as a binary number with the most significant bit in channel 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from transformers.utils import ModelOutput

# Probabilities are clamped away from 0 and 1 before logs so KLs and entropies stay finite.
_EPS = 1e-6
ENTROPY_MODES = ("exact", "grouped")


@dataclass
class PyraTokQuantizerOutput(ModelOutput):
    """Output of `PyraTokLaPQ.forward`.

    Args:
        latent: Fused decoder latent `(B, z_dim, T', H', W')`.
        codes: Per level `(B, codebook_dim, T', H_l, W_l)`, values exactly ±1 (straight-through gradients).
        ids: Per level int64 `(B, T', H_l, W_l)` in `[0, 2**codebook_dim)`.
        bit_logits: Per level pre-sign values `(B, codebook_dim, T', H_l, W_l)`, float32.
        loss: Weighted sum of the computed terms (scalar), or None without losses.
        losses: Unweighted named terms (`commitment`, `entropy`, `hierarchical`, `text_alignment`, `text_codebook`)
            plus detached `per_token_entropy` / `batch_entropy` for logging.
    """

    latent: torch.Tensor | None = None
    codes: tuple[torch.Tensor, ...] | None = None
    ids: tuple[torch.Tensor, ...] | None = None
    bit_logits: tuple[torch.Tensor, ...] | None = None
    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None


# ---- code <-> id ----------------------------------------------------------------------------------------------------
def _bit_weights(codebook_dim: int, device: torch.device) -> torch.Tensor:
    return 2 ** torch.arange(codebook_dim - 1, -1, -1, device=device, dtype=torch.int64)


def bits_to_ids(codes: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Codes (any real values; bit = value > 0) along `dim` → int64 ids, MSB = first channel."""
    bits = (codes > 0).to(torch.int64).movedim(dim, -1)
    return (bits * _bit_weights(bits.shape[-1], bits.device)).sum(-1)


def ids_to_bits(ids: torch.Tensor, codebook_dim: int, dim: int = 1) -> torch.Tensor:
    """Int ids → float32 codes in {-1, +1} with the code channel inserted at `dim` (inverse of `bits_to_ids`)."""
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
        raise ValueError(f"ids must be an integer tensor, got {ids.dtype}")
    if ids.numel() and (ids.min() < 0 or ids.max() >= 2**codebook_dim):
        raise ValueError(
            f"ids span [{ids.min().item()}, {ids.max().item()}]; valid ids lie in [0, {2**codebook_dim})"
        )
    bits = (ids.to(torch.int64).unsqueeze(-1) & _bit_weights(codebook_dim, ids.device)) > 0
    return (bits.float() * 2 - 1).movedim(-1, dim)


# ---- pooling that respects Wan's causal chunks ------------------------------------------------------------------
def temporal_group_pool(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """`(B, C, T_f, H, W)` → `(B, C, num_frames, H, W)`: frame 0 alone, then means of consecutive equal groups.

    Mirrors Wan's causal chunking (first frame, then chunks), so output frame t' sees input frames ≤ g·t' only.
    """
    t_f = x.shape[2]
    if num_frames == 1 or t_f == num_frames:
        if t_f != num_frames:
            raise ValueError(f"cannot pool {t_f} frames to 1 latent frame")
        return x
    if num_frames < 1 or (t_f - 1) % (num_frames - 1):
        raise ValueError(f"cannot group {t_f} frames into 1 + {num_frames - 1} causal chunks")
    g = (t_f - 1) // (num_frames - 1)
    b, c, _, h, w = x.shape
    rest = x[:, :, 1:].reshape(b, c, num_frames - 1, g, h, w).mean(dim=3)
    return torch.cat([x[:, :, :1], rest], dim=2)


def spatial_pool(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Average-pool the last two dims of `(B, C, T, H, W)` down to `(height, width)` (integer factors only)."""
    h, w = x.shape[-2:]
    if h % height or w % width:
        raise ValueError(f"cannot pool a {h} x {w} grid to {height} x {width}: factors must be integers")
    if (h, w) == (height, width):
        return x
    return F.avg_pool3d(x, kernel_size=(1, h // height, w // width))


# ---- entropy and KL maths (float32, no 2^d softmax) --------------------------------------------------------------
def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(_EPS, 1 - _EPS)
    return -(p * p.log() + (1 - p) * (1 - p).log())


def bernoulli_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(Bern(p) ‖ Bern(q))."""
    p, q = p.clamp(_EPS, 1 - _EPS), q.clamp(_EPS, 1 - _EPS)
    return p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()


def per_token_entropy(p: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of the entropy of each token's code distribution, `p (N, d)` bit probabilities.

    A product of Bernoullis has entropy = the sum of its bits' binary entropies: exact over all 2^d codes.
    """
    return binary_entropy(p.float()).sum(-1).mean()


def _half_code_probs(p: torch.Tensor) -> torch.Tensor:
    """`(N, k)` bit probabilities → `(N, 2^k)` code probabilities, code index MSB = first bit."""
    n, k = p.shape
    bits = ((torch.arange(2**k, device=p.device).unsqueeze(-1) >> torch.arange(k - 1, -1, -1, device=p.device)) & 1)
    bits = bits.to(p.dtype)  # (2^k, k)
    # prod_i (b_i p_i + (1 - b_i)(1 - p_i)) via logs for stability on long products.
    logp, log1mp = p.clamp_min(_EPS).log(), (1 - p).clamp_min(_EPS).log()
    return (logp @ bits.T + log1mp @ (1 - bits).T).exp()


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    # Differentiable under DDP: plain dist.all_reduce would drop the gradient of the pooled distribution.
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(t)
    return t


def batch_code_entropy(
    p: torch.Tensor, mode: str = "exact", num_groups: int = 2, chunk_size: int = 8192
) -> torch.Tensor:
    """Entropy of the batch-average code distribution `P(c) = mean_n prod_i p_n(c_i)`, `p (N, d)`.

    `exact`: split the bits into halves A, B; `P = sum_n PA_n^T PB_n / N` is a 2^|A| x 2^|B| matrix (accumulated over
    chunks of tokens), so no per-token 2^d distribution is ever built. `grouped`: sum over `num_groups` bit groups of
    the entropy of each group's average distribution (exact within a group; an upper bound of the exact value).
    Under torch.distributed the sums are pooled across processes.
    """
    if mode not in ENTROPY_MODES:
        raise ValueError(f"entropy mode {mode!r}; expected one of {ENTROPY_MODES}")
    p = p.float()
    n, d = p.shape
    count = _all_reduce_sum(torch.tensor(float(n), device=p.device))
    if mode == "exact":
        a = d // 2
        total = None
        for chunk in p.split(chunk_size):
            part = _half_code_probs(chunk[:, :a]).T @ _half_code_probs(chunk[:, a:])
            total = part if total is None else total + part
        probs = (_all_reduce_sum(total) / count).flatten()
        return -(probs * probs.clamp_min(1e-12).log()).sum()
    if d % num_groups:
        raise ValueError(f"codebook_dim={d} is not divisible into {num_groups} entropy groups")
    entropy = p.new_zeros(())
    for group in p.split(d // num_groups, dim=1):
        total = sum(_half_code_probs(chunk).sum(0) for chunk in group.split(chunk_size))
        probs = _all_reduce_sum(total) / count
        entropy = entropy - (probs * probs.clamp_min(1e-12).log()).sum()
    return entropy


# ---- blocks ---------------------------------------------------------------------------------------------------------
class PyraTokQuantizationBlock(nn.Module):
    """One LaPQ level: lateral + pyramid link + text cross-attention + lookup-free quantization.

    Args:
        feature_channels: Channels of this level's encoder tap `F^(l)`.
        hidden_size: Token width.
        num_heads: Attention heads of the text cross-attention.
        mlp_ratio: MLP width / hidden_size.
        codebook_dim: Bits per token.
        has_parent: Whether a shallower level feeds this one (the pyramid link).
    """

    def __init__(
        self, feature_channels: int, hidden_size: int, num_heads: int, mlp_ratio: float, codebook_dim: int, has_parent: bool
    ):
        super().__init__()
        self.lateral = nn.Conv3d(feature_channels, hidden_size, kernel_size=1)
        self.parent_proj = nn.Conv3d(codebook_dim, hidden_size, kernel_size=1) if has_parent else None
        self.attn_norm = nn.LayerNorm(hidden_size)
        self.text_attn = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.mlp_norm = nn.LayerNorm(hidden_size)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, int(hidden_size * mlp_ratio)), nn.GELU(), nn.Linear(int(hidden_size * mlp_ratio), hidden_size)
        )
        self.to_bits = nn.Linear(hidden_size, codebook_dim)
        # Identity at init: the text path starts inert and the block passes the lateral features straight to LFQ.
        for layer in (self.text_attn.out_proj, self.mlp[-1]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self,
        feature: torch.Tensor,
        grid: tuple[int, int, int],
        parent_codes: torch.Tensor | None,
        context: torch.Tensor,
        context_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize one level.

        Args:
            feature: `F^(l)` `(B, C_l, T_l, H_l, W_l)`.
            grid: This level's token grid `(T', h, w)`.
            parent_codes: Codes of the level above `(B, d, T', h_p, w_p)` or None.
            context: Projected text tokens `(B, L, hidden)`; context_mask `(B, L)` bool, True = token.

        Returns:
            codes `(B, d, T', h, w)` ±1 with straight-through gradient, ids `(B, T', h, w)`, pre-sign z (fp32).
        """
        t, h, w = grid
        x = spatial_pool(temporal_group_pool(self.lateral(feature), t), h, w)
        if self.parent_proj is not None and parent_codes is not None:
            x = x + spatial_pool(self.parent_proj(parent_codes.to(x.dtype)), h, w)
        b, c = x.shape[:2]
        tokens = x.flatten(2).transpose(1, 2)  # (B, T'*h*w, hidden)
        q = self.attn_norm(tokens)
        # Queries are visual tokens, keys/values are text only: no token sees another token, frame or batch item.
        attended, _ = self.text_attn(q, context, context, key_padding_mask=~context_mask, need_weights=False)
        tokens = tokens + attended
        tokens = tokens + self.mlp(self.mlp_norm(tokens))
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            # LFQ in fp32: fp16 sign flips near 0 and bf16 index corruption are reported upstream.
            z = self.to_bits(tokens.float())  # (B, N, d)
            hard = torch.where(z > 0, 1.0, -1.0)
            codes = z + (hard - z).detach()
        z = z.transpose(1, 2).reshape(b, -1, t, h, w)
        codes = codes.transpose(1, 2).reshape(b, -1, t, h, w)
        return codes, bits_to_ids(z), z


class PyraTokFusion(nn.Module):
    """Sum of every level's code-space output, upsampled to the latent grid, then a small conv stack to `z_dim`.

    Kernels are spatial only (1x3x3), so the fused latent stays causal in time.
    """

    def __init__(self, num_levels: int, codebook_dim: int, hidden_size: int, z_dim: int):
        super().__init__()
        self.level_proj = nn.ModuleList(nn.Conv3d(codebook_dim, hidden_size, kernel_size=1) for _ in range(num_levels))
        self.out = nn.Sequential(
            nn.Conv3d(hidden_size, hidden_size, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.SiLU(),
            nn.Conv3d(hidden_size, z_dim, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
        )

    def forward(self, codes: Sequence[torch.Tensor], latent_size: tuple[int, int, int]) -> torch.Tensor:
        fused = 0
        for proj, c in zip(self.level_proj, codes, strict=True):
            y = proj(c.to(proj.weight.dtype))
            fused = fused + F.interpolate(y, size=latent_size, mode="nearest")
        return self.out(fused)


# ---- model ----------------------------------------------------------------------------------------------------------
class PyraTokLaPQ(nn.Module):
    """Language-aligned pyramidal quantizer over encoder taps, shallow → deep.

    Args:
        feature_channels: Channels of the taps fed to each level, shallow → deep.
        z_dim: Channels of the fused decoder latent.
        text_embed_dim: Hidden size of the text encoder.
        level_spatial_strides: Level grid = latent grid / stride (one per level, each divides the next).
        hidden_size, num_heads, mlp_ratio: Quantization block width and text attention.
        codebook_dim: Bits per token (shared codebook of `2**codebook_dim` codes).
        semantic_dim: Width of the shared code/text semantic space.
        fusion_hidden_size: Width of the fusion stack.
        bit_inverse_temperature: tau in soft bit probabilities `sigmoid(2 * tau * z)`.
        entropy_mode, entropy_num_groups, entropy_chunk_size: Batch-entropy computation (see `batch_code_entropy`).
        commitment_weight, entropy_weight, hierarchical_weight, text_alignment_weight, text_codebook_weight:
            Loss weights; 0 skips a term entirely.
    """

    def __init__(
        self,
        feature_channels: Sequence[int],
        z_dim: int,
        text_embed_dim: int,
        level_spatial_strides: Sequence[int] = (1, 2, 4, 8),
        hidden_size: int = 256,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        codebook_dim: int = 16,
        semantic_dim: int = 256,
        fusion_hidden_size: int = 256,
        bit_inverse_temperature: float = 1.0,
        entropy_mode: str = "exact",
        entropy_num_groups: int = 2,
        entropy_chunk_size: int = 8192,
        commitment_weight: float = 0.25,
        entropy_weight: float = 0.1,
        hierarchical_weight: float = 1.0,
        text_alignment_weight: float = 1.0,
        text_codebook_weight: float = 1.0,
    ):
        super().__init__()
        if len(feature_channels) != len(level_spatial_strides):
            raise ValueError(
                f"{len(feature_channels)} feature taps but {len(level_spatial_strides)} level strides"
            )
        if entropy_mode not in ENTROPY_MODES:
            raise ValueError(f"entropy_mode={entropy_mode!r}; expected one of {ENTROPY_MODES}")
        self.feature_channels = list(feature_channels)
        self.level_spatial_strides = list(level_spatial_strides)
        self.codebook_dim = codebook_dim
        self.text_embed_dim = text_embed_dim
        self.bit_inverse_temperature = bit_inverse_temperature
        self.entropy_mode, self.entropy_num_groups, self.entropy_chunk_size = entropy_mode, entropy_num_groups, entropy_chunk_size
        self.weights = {
            "commitment": commitment_weight,
            "entropy": entropy_weight,
            "hierarchical": hierarchical_weight,
            "text_alignment": text_alignment_weight,
            "text_codebook": text_codebook_weight,
        }
        self.text_proj = nn.Linear(text_embed_dim, hidden_size)
        self.null_text_embedding = nn.Parameter(torch.randn(1, 1, hidden_size) * 0.02)
        self.levels = nn.ModuleList(
            PyraTokQuantizationBlock(c, hidden_size, num_heads, mlp_ratio, codebook_dim, has_parent=i > 0)
            for i, c in enumerate(feature_channels)
        )
        self.fusion = PyraTokFusion(len(feature_channels), codebook_dim, fusion_hidden_size, z_dim)
        # Semantic codebook (W_c) and text projection P: token–text similarity in this space drives zero-shot tasks.
        self.code_embedding = nn.Linear(codebook_dim, semantic_dim, bias=False)
        self.text_semantic_proj = nn.Linear(text_embed_dim, semantic_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    def level_grid(self, latent_size: Sequence[int]) -> list[tuple[int, int, int]]:
        t, h, w = latent_size
        return [(t, h // s, w // s) for s in self.level_spatial_strides]

    # ---- validation ---------------------------------------------------------------------------------------------
    def _check_features(self, features: Sequence[torch.Tensor], latent_size: Sequence[int]) -> None:
        if len(features) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} feature maps (one per level), got {len(features)}")
        t, h, w = latent_size
        s = max(self.level_spatial_strides)
        if h % s or w % s:
            raise ValueError(f"latent grid {h} x {w} is not divisible by the deepest level stride {s}")
        batch = features[0].shape[0]
        for i, (f, c) in enumerate(zip(features, self.feature_channels, strict=True)):
            if f.ndim != 5 or f.shape[0] != batch or f.shape[1] != c:
                raise ValueError(f"level {i + 1} feature has shape {tuple(f.shape)}; expected ({batch}, {c}, T, H, W)")
            if not torch.isfinite(f).all():
                raise ValueError(f"level {i + 1} feature contains NaN or Inf values")

    def _context(
        self, batch: int, text_embeds, text_attention_mask, text_present, device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projected text tokens `(B, L, hidden)`, mask `(B, L)` and presence `(B,)`; null embedding where absent."""
        null = self.null_text_embedding.expand(batch, 1, -1)
        if text_embeds is None:
            present = torch.zeros(batch, dtype=torch.bool, device=device)
            return null, torch.ones(batch, 1, dtype=torch.bool, device=device), present
        if text_embeds.ndim != 3 or text_embeds.shape[0] != batch or text_embeds.shape[2] != self.text_embed_dim:
            raise ValueError(
                f"text_embeds has shape {tuple(text_embeds.shape)}; expected ({batch}, L, {self.text_embed_dim})"
            )
        if not torch.isfinite(text_embeds).all():
            raise ValueError("text_embeds contains NaN or Inf values")
        mask = (
            torch.ones(text_embeds.shape[:2], dtype=torch.bool, device=device)
            if text_attention_mask is None
            else text_attention_mask.to(device).bool()
        )
        present = torch.ones(batch, dtype=torch.bool, device=device) if text_present is None else text_present.to(device)
        # Keys = [null token, text tokens]: items with text mask the null token, items without mask every text token.
        context = torch.cat([null, self.text_proj(text_embeds.to(self.text_proj.weight.dtype))], dim=1)
        mask = torch.cat([~present[:, None], mask & present[:, None]], dim=1)
        return context, mask, present

    # ---- forward --------------------------------------------------------------------------------------------------
    def forward(
        self,
        features: Sequence[torch.Tensor],
        latent_size: Sequence[int],
        text_embeds: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        text_present: torch.Tensor | None = None,
        compute_losses: bool = True,
    ) -> PyraTokQuantizerOutput:
        """Quantize encoder taps into per-level tokens and the fused decoder latent.

        Args:
            features: One tap per level `(B, C_l, T_l, H_l, W_l)`, shallow → deep.
            latent_size: `(T', H', W')` of the decoder latent.
            text_embeds: `(B, L, text_embed_dim)` or None (then every item uses the null-text embedding).
            text_attention_mask: `(B, L)`, True / 1 = real token.
            text_present: `(B,)` bool; False items use the null-text embedding.
            compute_losses: Compute the quantizer's loss breakdown.
        """
        self._check_features(features, latent_size)
        batch = features[0].shape[0]
        context, mask, present = self._context(batch, text_embeds, text_attention_mask, text_present, features[0].device)
        codes, ids, logits = [], [], []
        parent = None
        for block, feature, grid in zip(self.levels, features, self.level_grid(latent_size), strict=True):
            c, i, z = block(feature, grid, parent, context, mask)
            codes.append(c)
            ids.append(i)
            logits.append(z)
            parent = c
        latent = self.fusion(codes, tuple(latent_size))
        loss = losses = None
        if compute_losses:
            loss, losses = self._losses(codes, logits, text_embeds, text_attention_mask, present)
        return PyraTokQuantizerOutput(
            latent=latent, codes=tuple(codes), ids=tuple(ids), bit_logits=tuple(logits), loss=loss, losses=losses
        )

    def _losses(self, codes, logits, text_embeds, text_mask, present) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.autocast(device_type=logits[0].device.type, enabled=False):
            w = self.weights
            probs = [torch.sigmoid(2 * self.bit_inverse_temperature * z.float()) for z in logits]
            flat = [p.flatten(2).transpose(1, 2) for p in probs]  # (B, N_l, d)
            losses: dict[str, torch.Tensor] = {}
            if w["commitment"]:
                losses["commitment"] = torch.stack(
                    [F.mse_loss(z.float(), torch.where(z > 0, 1.0, -1.0).detach()) for z in logits]
                ).mean()
            if w["entropy"]:
                pooled = torch.cat([f.reshape(-1, self.codebook_dim) for f in flat])
                token_h = per_token_entropy(pooled)
                batch_h = batch_code_entropy(pooled, self.entropy_mode, self.entropy_num_groups, self.entropy_chunk_size)
                losses["entropy"] = token_h - batch_h
                losses["per_token_entropy"], losses["batch_entropy"] = token_h.detach(), batch_h.detach()
            if w["hierarchical"] and len(probs) > 1:
                terms = []
                for parent, child in zip(probs[:-1], probs[1:]):
                    target = spatial_pool(parent, *child.shape[-2:])
                    terms.append(bernoulli_kl(child, target).sum(1).mean())
                losses["hierarchical"] = torch.stack(terms).mean()
            has_text = text_embeds is not None and bool(present.any())
            if has_text and (w["text_alignment"] or w["text_codebook"]):
                u = self.embed_text(text_embeds, text_mask)[present]  # (B_t, d_s)
                if w["text_alignment"]:
                    pi = torch.sigmoid(2 * u @ self.code_embedding.weight.float())  # (B_t, d)
                    # <W_c c, u> is linear in the bits, so the softmax over all 2^d codes is exactly a product of
                    # per-bit Bernoullis with these probabilities.
                    losses["text_alignment"] = torch.stack(
                        [bernoulli_kl(f[present], pi[:, None, :]).sum(-1).mean() for f in flat]
                    ).mean()
                if w["text_codebook"] and int(present.sum()) >= 2:
                    v = torch.cat([c.flatten(2) for c in codes], dim=2).float()  # (B, d, N)
                    v = self.code_embedding(v.transpose(1, 2).mean(1))[present]  # mean_i W_c q_i
                    logits_vt = self.logit_scale.exp() * F.normalize(v, dim=-1) @ F.normalize(u, dim=-1).T
                    target = torch.arange(len(v), device=v.device)
                    losses["text_codebook"] = (
                        F.cross_entropy(logits_vt, target) + F.cross_entropy(logits_vt.T, target)
                    ) / 2
            total = sum(w[k] * losses[k] for k in w if k in losses)
            total = total if isinstance(total, torch.Tensor) else logits[0].new_zeros(())
        return total, losses

    # ---- decoding and semantic space ---------------------------------------------------------------------------
    def ids_to_codes(self, ids: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Per-level ids `(B, T', H_l, W_l)` → codes `(B, d, T', H_l, W_l)` ±1, checking the pyramid's shapes."""
        if len(ids) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} id tensors (one per level), got {len(ids)}")
        first = ids[0]
        if first.ndim != 4:
            raise ValueError(f"level 1 ids have shape {tuple(first.shape)}; expected (B, T', H_1, W_1)")
        s0 = self.level_spatial_strides[0]
        grids = self.level_grid((first.shape[1], first.shape[2] * s0, first.shape[3] * s0))
        for i, (level_ids, grid) in enumerate(zip(ids, grids, strict=True)):
            if tuple(level_ids.shape) != (first.shape[0], *grid):
                raise ValueError(
                    f"level {i + 1} ids have shape {tuple(level_ids.shape)}; the pyramid needs {(first.shape[0], *grid)}"
                )
        return [ids_to_bits(level_ids, self.codebook_dim) for level_ids in ids]

    def codes_to_latent(self, codes: Sequence[torch.Tensor], latent_size: Sequence[int]) -> torch.Tensor:
        """Per-level codes → fused decoder latent `(B, z_dim, T', H', W')`."""
        return self.fusion(codes, tuple(latent_size))

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `(B, d, ...)` → semantic embeddings `(B, semantic_dim, ...)` (`W_c c`)."""
        return self.code_embedding(codes.movedim(1, -1).float()).movedim(-1, 1)

    def embed_text(self, text_embeds: torch.Tensor, text_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Text tokens `(B, L, text_embed_dim)` → `P(e_t)` `(B, semantic_dim)` (masked mean, then projection)."""
        mask = (
            torch.ones(text_embeds.shape[:2], device=text_embeds.device)
            if text_attention_mask is None
            else text_attention_mask.float()
        )
        pooled = (text_embeds.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        return self.text_semantic_proj(pooled.to(self.text_semantic_proj.weight.dtype)).float()


__all__ = [
    "PyraTokFusion",
    "PyraTokLaPQ",
    "PyraTokQuantizationBlock",
    "PyraTokQuantizerOutput",
    "batch_code_entropy",
    "bernoulli_kl",
    "bits_to_ids",
    "ids_to_bits",
    "per_token_entropy",
    "spatial_pool",
    "temporal_group_pool",
]

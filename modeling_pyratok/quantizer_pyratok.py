"""LaPQ: language-aligned pyramidal lookup-free quantization for PyraTok (DESIGN.md §3, §4).

Each level `l` turns a backbone feature tap `F^(l)` into a grid of `codebook_dim` sign bits (LFQ), conditioned on the
previous level's codes (pyramid link) and on text (per-token cross-attention). The codes of all levels are fused into
one decoder latent `ẑ`. The quantizer-intrinsic losses (commitment, entropy, hierarchical consistency and the two text
terms) come back as a named breakdown.

Everything is causal in time and batch items never see each other: temporal pooling follows the backbone's causal
chunks, attention runs per visual token over text only, and the fusion convolutions are spatial only.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.utils import ModelOutput

from .configuration_pyratok import ENTROPY_MODES, LATERAL_POOLINGS

# ids are int64; 2**62 keeps every index and the binary weights representable.
MAX_CODEBOOK_DIM = 62
# Weighted loss terms, in the order they are summed; anything else in `losses` is a detached log-only extra.
LOSS_NAMES = ("commitment", "entropy", "hierarchical", "text_alignment", "text_codebook")
# Clamp for probabilities inside logs of the Bernoulli KLs; fp32 represents 1 - 1e-6 well enough.
KL_EPS = 1e-6
# Clamp for `P log P` terms of entropies: small enough not to change the value, finite gradient at P = 0.
ENTROPY_EPS = 1e-12
# CLIP's init (temperature 0.07) and cap (scale 100) for the InfoNCE logit scale.
LOGIT_SCALE_INIT = math.log(1 / 0.07)
LOGIT_SCALE_MAX = math.log(100.0)


@dataclass
class PyraTokQuantizerOutput(ModelOutput):
    """Output of [`PyraTokLaPQ`].

    Args:
        latent (`torch.Tensor` of shape `(B, z_dim, T', H', W')`):
            Fused decoder latent `ẑ`, unbounded.
        codes (`tuple[torch.Tensor, ...]`, one per level, each `(B, codebook_dim, T', H_l, W_l)`):
            Quantized codes; forward values are exactly ±1, gradients are those of the pre-sign values
            (straight-through).
        ids (`tuple[torch.LongTensor, ...]`, one per level, each `(B, T', H_l, W_l)`):
            Code indices in `[0, 2**codebook_dim)`, bits read MSB-first from channel 0.
        bit_logits (`tuple[torch.Tensor, ...]`, one per level, each `(B, codebook_dim, T', H_l, W_l)`, fp32):
            Pre-sign values `z`.
        loss (`torch.Tensor`, scalar):
            Weighted sum of the computed loss terms; `None` when losses were not requested.
        losses (`dict[str, torch.Tensor]`):
            Unweighted scalar terms keyed by `LOSS_NAMES` (only those computed), plus the detached extras
            `per_token_entropy` and `batch_entropy` when the entropy term is on.
    """

    latent: torch.Tensor | None = None
    codes: tuple[torch.Tensor, ...] | None = None
    ids: tuple[torch.Tensor, ...] | None = None
    bit_logits: tuple[torch.Tensor, ...] | None = None
    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Helpers: code <-> index
# ---------------------------------------------------------------------------------------------------------------------


def bits_to_ids(codes: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Read the sign bits of `codes` along `dim` as a binary number, most significant bit first.

    Args:
        codes (`torch.Tensor`): any shape with `d = codes.shape[dim]` bits; bit `i` is `codes[..., i, ...] > 0`.
        dim (`int`): the bit dimension.

    Returns:
        `torch.LongTensor` of `codes.shape` without `dim`, values in `[0, 2**d)`:
        `sum_i bit_i * 2**(d - 1 - i)`.
    """
    if codes.ndim == 0:
        raise ValueError("bits_to_ids needs a tensor with a bit dimension, got a 0-dim tensor")
    if not -codes.ndim <= dim < codes.ndim:
        raise ValueError(f"dim={dim} is out of range for codes of shape {tuple(codes.shape)}")
    codebook_dim = codes.shape[dim]
    if not 1 <= codebook_dim <= MAX_CODEBOOK_DIM:
        raise ValueError(f"codes have {codebook_dim} bits along dim {dim}; need 1..{MAX_CODEBOOK_DIM}")
    bits = (codes > 0).movedim(dim, -1).long()  # (..., d)
    weights = torch.pow(2, torch.arange(codebook_dim - 1, -1, -1, device=codes.device, dtype=torch.long))
    return (bits * weights).sum(-1)


def ids_to_bits(ids: torch.Tensor, codebook_dim: int, dim: int = 1) -> torch.Tensor:
    """Inverse of [`bits_to_ids`]: expand indices into ±1 codes.

    Args:
        ids (`torch.Tensor`, integer dtype): any shape, values in `[0, 2**codebook_dim)`.
        codebook_dim (`int`): number of bits `d`.
        dim (`int`): where the new bit dimension goes in the output.

    Returns:
        `torch.FloatTensor` (fp32) of `ids.shape` with `d` inserted at `dim`, values in `{-1., +1.}`, channel 0 = MSB.
    """
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise ValueError(f"ids must have an integer dtype, got {ids.dtype}")
    if not 1 <= codebook_dim <= MAX_CODEBOOK_DIM:
        raise ValueError(f"codebook_dim={codebook_dim} must lie in 1..{MAX_CODEBOOK_DIM}")
    if not -(ids.ndim + 1) <= dim <= ids.ndim:
        raise ValueError(f"dim={dim} is out of range for a bit dimension added to ids of shape {tuple(ids.shape)}")
    ids = ids.long()
    if ids.numel() > 0:
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= 2**codebook_dim:
            raise ValueError(
                f"ids must lie in [0, {2**codebook_dim}) for codebook_dim={codebook_dim}; got min {low}, max {high}"
            )
    shifts = torch.arange(codebook_dim - 1, -1, -1, device=ids.device, dtype=torch.long)
    bits = (ids.unsqueeze(-1) >> shifts) & 1  # (..., d)
    return (bits.float() * 2 - 1).movedim(-1, dim)


# ---------------------------------------------------------------------------------------------------------------------
# Helpers: pooling
# ---------------------------------------------------------------------------------------------------------------------


def temporal_group_pool(x: torch.Tensor, num_frames: int, first_frame: bool = True) -> torch.Tensor:
    """Average frames in the backbone's causal chunks: frame 0 alone, then consecutive groups of `g` frames.

    With `g = (T_f - 1) / (num_frames - 1)`, output frame `t'` sees only input frames `<= g * t'`, as in Wan's
    causal encoder (first frame, then chunks of 4), so pooling never leaks the future.

    Args:
        x (`torch.Tensor` of shape `(B, C, T_f, H, W)`): features, any range.
        num_frames (`int`): output frame count `T'`; `T_f = 1 + g * (T' - 1)` for an integer `g >= 1`
            (`T_f = 1` when `T' = 1`).
        first_frame (`bool`): whether `x` starts with the clip's frame 0. False for a later piece of a streamed
            clip: `T_f = g * T'`, every output frame one whole group.

    Returns:
        `torch.Tensor` of shape `(B, C, num_frames, H, W)`.
    """
    if x.ndim != 5:
        raise ValueError(f"temporal_group_pool expects (B, C, T, H, W), got shape {tuple(x.shape)}")
    in_frames = x.shape[2]
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    batch, channels, _, height, width = x.shape
    if not first_frame:
        group, remainder = divmod(in_frames, num_frames)
        if remainder != 0 or group < 1:
            raise ValueError(
                f"cannot pool {in_frames} frames of a piece after frame 0 into {num_frames} causal frames: "
                f"need {in_frames} = g * {num_frames} for an integer g >= 1"
            )
        return x.reshape(batch, channels, num_frames, group, height, width).mean(dim=3)
    if num_frames == 1:
        if in_frames != 1:
            raise ValueError(f"cannot pool {in_frames} frames into 1 causal frame; need exactly 1 input frame")
        return x
    group, remainder = divmod(in_frames - 1, num_frames - 1)
    if remainder != 0 or group < 1:
        raise ValueError(
            f"cannot pool {in_frames} frames into {num_frames} causal frames: "
            f"need {in_frames} = 1 + g * {num_frames - 1} for an integer g >= 1"
        )
    if group == 1:
        return x
    rest = x[:, :, 1:].reshape(batch, channels, num_frames - 1, group, height, width).mean(dim=3)
    return torch.cat([x[:, :, :1], rest], dim=2)


def spatial_avg_pool(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Average-pool the last two dims of a video tensor by integer factors to `size`.

    Args:
        x (`torch.Tensor` of shape `(B, C, T, H, W)`).
        size (`tuple[int, int]`): target `(H_l, W_l)`; must divide `(H, W)`.

    Returns:
        `torch.Tensor` of shape `(B, C, T, H_l, W_l)`.
    """
    if x.ndim != 5:
        raise ValueError(f"spatial_avg_pool expects (B, C, T, H, W), got shape {tuple(x.shape)}")
    height, width = x.shape[-2:]
    target_h, target_w = size
    if target_h < 1 or target_w < 1 or height % target_h != 0 or width % target_w != 0:
        raise ValueError(
            f"cannot average-pool spatial size {(height, width)} to {(target_h, target_w)}: not divisible"
        )
    factor_h, factor_w = height // target_h, width // target_w
    if factor_h == 1 and factor_w == 1:
        return x
    # In fp32: CPU has no reduced-precision avg_pool3d kernel, and averaging is the quantizer's own math.
    return F.avg_pool3d(x.float(), kernel_size=(1, factor_h, factor_w)).to(x.dtype)


# ---------------------------------------------------------------------------------------------------------------------
# Helpers: entropy maths (fp32, autocast off: fp16 NaNs and bf16 index corruption are known LFQ failure modes)
# ---------------------------------------------------------------------------------------------------------------------


def _no_autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, enabled=False)


def _flatten_bits(p: torch.Tensor, name: str) -> torch.Tensor:
    if p.ndim < 1 or p.shape[-1] < 1:
        raise ValueError(f"{name} expects probabilities of shape (..., d) with d >= 1, got {tuple(p.shape)}")
    return p.float().reshape(-1, p.shape[-1])


def _distributed_world() -> bool:
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over processes, keeping the gradient (plain `dist.all_reduce` is in-place and drops it)."""
    if not _distributed_world():
        return x
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x)


def _global_token_count(num_tokens: int, device: torch.device) -> torch.Tensor:
    count = torch.tensor(float(num_tokens), device=device)
    if _distributed_world():
        torch.distributed.all_reduce(count)
    return count


def bit_probabilities(bit_logits: torch.Tensor, inverse_temperature: float = 1.0) -> torch.Tensor:
    """Soft bit probabilities `p = sigmoid(2·τ·z)`, i.e. `softmax([τz, -τz])[0]` over the two signs.

    Args:
        bit_logits (`torch.Tensor`): pre-sign values `z`, any shape.
        inverse_temperature (`float`): `τ > 0`.

    Returns:
        `torch.Tensor` (fp32) of the same shape, values in `(0, 1)`: probability that the bit is +1.
    """
    with _no_autocast(bit_logits.device):
        return torch.sigmoid(2.0 * inverse_temperature * bit_logits.float())


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    q = 1.0 - p
    return -(p * p.clamp_min(ENTROPY_EPS).log() + q * q.clamp_min(ENTROPY_EPS).log())


def _entropy(prob: torch.Tensor) -> torch.Tensor:
    return -(prob * prob.clamp_min(ENTROPY_EPS).log()).sum()


def per_token_entropy(p: torch.Tensor) -> torch.Tensor:
    """Mean per-token entropy (nats) of the product-of-Bernoullis code distribution.

    The entropy of a product of independent Bernoullis over all `2**d` codes is exactly the sum of the `d` binary
    entropies, so no `2**d` softmax is needed.

    Args:
        p (`torch.Tensor` of shape `(..., d)`): bit probabilities in `[0, 1]`.

    Returns:
        Scalar fp32 tensor in `[0, d·log 2]`.
    """
    with _no_autocast(p.device):
        flat = _flatten_bits(p, "per_token_entropy")
        return _binary_entropy(flat).sum(-1).mean()


def _half_code_distribution(p: torch.Tensor) -> torch.Tensor:
    """(N, k) bit probabilities -> (N, 2**k) code distribution, code index MSB = bit 0."""
    dist = p.new_ones(p.shape[0], 1)
    for bit in range(p.shape[1]):
        prob = p[:, bit : bit + 1]
        # Appending the new bit as least significant keeps earlier bits more significant.
        dist = torch.stack([dist * (1.0 - prob), dist * prob], dim=-1).reshape(p.shape[0], -1)
    return dist


def _exact_chunk_sum(p: torch.Tensor, num_first_bits: int) -> torch.Tensor:
    first = _half_code_distribution(p[:, :num_first_bits])  # (n, 2**|A|)
    second = _half_code_distribution(p[:, num_first_bits:])  # (n, 2**|B|)
    return first.transpose(0, 1) @ second  # (2**|A|, 2**|B|), sum over tokens of the joint code distributions


def _grouped_chunk_sum(p: torch.Tensor, num_groups: int) -> torch.Tensor:
    groups = p.reshape(p.shape[0], num_groups, -1).unbind(1)
    return torch.stack([_half_code_distribution(group).sum(0) for group in groups])  # (G, 2**(d/G))


def batch_code_entropy(
    p: torch.Tensor, mode: str = "exact", num_groups: int = 2, chunk_size: int = 8192
) -> torch.Tensor:
    """Entropy (nats) of the batch-average code distribution `P(c) = mean_n prod_i p_n(c_i)`.

    `"exact"` splits the bits into halves A (first `d // 2`) and B (rest): the joint code distribution of a token is
    the outer product of its two half-code distributions, so `sum_n P_n` is the matrix `sum_n PA_nᵀ PB_n` of size
    `2**|A| × 2**|B|` (256 × 256 at d = 16), accumulated over chunks of tokens. `"grouped"` splits the bits into
    `num_groups` equal groups and sums the exact entropy of each group's average distribution, an upper bound of the
    exact value that is cheaper for large `d`. Chunks are recomputed in backward, so activation memory stays
    `O(chunk_size · 2**(d/2))`. Under `torch.distributed` the sums and token counts are reduced across processes
    with differentiable collectives, because batch entropy is capped by log(number of tokens).

    Args:
        p (`torch.Tensor` of shape `(N, d)` or `(..., d)`): bit probabilities in `[0, 1]`.
        mode (`str`): `"exact"` or `"grouped"`.
        num_groups (`int`): number of equal bit groups for `"grouped"`; must divide `d`.
        chunk_size (`int`): tokens per chunk.

    Returns:
        Scalar fp32 tensor in `[0, d·log 2]`.
    """
    if mode not in ENTROPY_MODES:
        raise ValueError(f"mode={mode!r} must be one of {ENTROPY_MODES}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")
    with _no_autocast(p.device):
        flat = _flatten_bits(p, "batch_code_entropy")
        num_tokens, codebook_dim = flat.shape
        if num_tokens == 0:
            raise ValueError("batch_code_entropy needs at least one token, got N = 0")
        if mode == "grouped":
            if num_groups < 1 or codebook_dim % num_groups != 0:
                raise ValueError(f"num_groups={num_groups} must be >= 1 and divide the {codebook_dim} bits")
            chunk_fn, arg = _grouped_chunk_sum, num_groups
        else:
            chunk_fn, arg = _exact_chunk_sum, codebook_dim // 2
        needs_grad = torch.is_grad_enabled() and flat.requires_grad
        total = None
        for chunk in flat.split(chunk_size):
            if needs_grad:
                part = checkpoint(chunk_fn, chunk, arg, use_reentrant=False)
            else:
                part = chunk_fn(chunk, arg)
            total = part if total is None else total + part
        total = _all_reduce_sum(total)
        prob = total / _global_token_count(num_tokens, flat.device)
        if mode == "grouped":
            return -(prob * prob.clamp_min(ENTROPY_EPS).log()).sum()
        return _entropy(prob)


def bernoulli_kl(p: torch.Tensor, q: torch.Tensor, eps: float = KL_EPS) -> torch.Tensor:
    """Elementwise `KL(Bern(p) ‖ Bern(q))` in nats.

    Args:
        p, q (`torch.Tensor`, broadcastable): probabilities in `[0, 1]`, clamped to `[eps, 1 - eps]` inside the logs.
        eps (`float`): clamp.

    Returns:
        fp32 tensor of the broadcast shape, values `>= 0`.
    """
    with _no_autocast(p.device):
        p = p.float()
        p_c = p.clamp(eps, 1.0 - eps)
        q_c = q.float().clamp(eps, 1.0 - eps)
        return p * (p_c.log() - q_c.log()) + (1.0 - p) * ((1.0 - p_c).log() - (1.0 - q_c).log())


# ---------------------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------------------


class PyraTokQuantizationBlock(nn.Module):
    """One LaPQ level `Q_l(q^(l-1), F^(l), e_t)`: lateral projection, pyramid link, text cross-attention, LFQ.

    The attention's output projection and the MLP's last layer start at zero, so at init the text path is the
    identity and the codes depend on the visual features only.

    Args:
        feature_channels (`int`): channels `C_l` of the feature tap.
        hidden_size (`int`): token width.
        codebook_dim (`int`): bits per token `d`.
        num_heads (`int`): attention heads; must divide `hidden_size`.
        mlp_ratio (`float`): MLP expansion.
        use_pyramid_link (`bool`): whether this level receives the previous level's codes (False for level 1).
        lateral_pooling (`str`): how the tap reaches the level grid (DESIGN §3, lateral): `"average"` averages
            causal frame groups and spatial cells, then a 1×1×1 conv; `"strided_conv"` is one conv whose kernel equals
            its stride `reduction`, fed with the first frame repeated `g - 1` times in front (causal, like the
            backbone's own chunks). It starts as exactly the `"average"` path and learns which positions matter.
        reduction (`tuple[int, int]`, *optional*): `(g, f)`, the tap's frame group and spatial factor to this
            level's grid; required by `"strided_conv"` and checked against the features in `forward`.
    """

    def __init__(
        self,
        feature_channels: int,
        hidden_size: int,
        codebook_dim: int,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        use_pyramid_link: bool = True,
        lateral_pooling: str = "average",
        reduction: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if lateral_pooling not in LATERAL_POOLINGS:
            raise ValueError(f"lateral_pooling={lateral_pooling!r} must be one of {LATERAL_POOLINGS}")
        self.codebook_dim = codebook_dim
        self.lateral_pooling = lateral_pooling
        self.reduction = None
        if lateral_pooling == "strided_conv":
            if reduction is None or len(reduction) != 2 or any(int(r) < 1 for r in reduction):
                raise ValueError(f"lateral_pooling='strided_conv' needs reduction=(g, f), both >= 1; got {reduction}")
            group, factor = (int(r) for r in reduction)
            self.reduction = (group, factor)
            kernel = (group, factor, factor)
            self.lateral = nn.Conv3d(feature_channels, hidden_size, kernel_size=kernel, stride=kernel)
            self.init_lateral_as_average()
        else:
            self.lateral = nn.Conv3d(feature_channels, hidden_size, kernel_size=1)
        self.pyramid_link = nn.Conv3d(codebook_dim, hidden_size, kernel_size=1) if use_pyramid_link else None
        self.attn_norm = nn.LayerNorm(hidden_size)
        self.attn = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.mlp_norm = nn.LayerNorm(hidden_size)
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, hidden_size))
        # Non-affine normalisation before the bit projection: the residual stream of a pre-LN block is unnormalised,
        # and a normalised input keeps the bits near zero-mean, which helps codebook utilisation.
        self.lfq_norm = nn.LayerNorm(hidden_size, elementwise_affine=False)
        self.lfq_proj = nn.Linear(hidden_size, codebook_dim)
        self.zero_init_text_residuals()

    def init_lateral_as_average(self) -> None:
        """Make a strided-conv lateral compute exactly the `"average"` path: the mean over its kernel window, then a
        1×1×1 conv (every window position gets the conv's default-initialised weight divided by the window size)."""
        if self.lateral_pooling != "strided_conv":
            return
        with torch.no_grad():
            weight = self.lateral.weight  # (hidden, C_l, g, f, f)
            first = weight[:, :, :1, :1, :1].clone()
            weight.copy_(first.expand_as(weight) / weight[0, 0].numel())

    def zero_init_text_residuals(self) -> None:
        """Zero the residual branches (attention output and MLP output) so the text path starts as the identity."""
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(
        self,
        features: torch.Tensor,
        grid: tuple[int, int, int],
        text_context: torch.Tensor,
        text_mask: torch.Tensor,
        previous_codes: torch.Tensor | None = None,
        first_frame: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            features (`torch.Tensor` of shape `(B, C_l, T_f, H_f, W_f)`): feature tap, `T_f = 1 + g·(T' - 1)`, or
                `T_f = g·T'` when `first_frame` is False.
            grid (`tuple[int, int, int]`): this level's token grid `(T', H_l, W_l)`; divides the tap spatially.
            text_context (`torch.Tensor` of shape `(B, L, hidden_size)`): projected text (or null) tokens.
            text_mask (`torch.BoolTensor` of shape `(B, L)`): True where a text token is valid; >= 1 per item.
            previous_codes (`torch.Tensor` of shape `(B, d, T', H_{l-1}, W_{l-1})`, optional): previous level's codes.
            first_frame (`bool`): whether the features start with the clip's frame 0 (encoded alone). False for a
                later streamed piece, whose frames are whole groups of `g`.

        Returns:
            `(codes, ids, bit_logits)`: codes `(B, d, T', H_l, W_l)` exactly ±1 with straight-through gradients,
            ids `(B, T', H_l, W_l)` int64 in `[0, 2**d)`, bit_logits `(B, d, T', H_l, W_l)` fp32.
        """
        frames, height, width = grid
        if self.lateral_pooling == "strided_conv":
            x = self._strided_lateral(features, grid, first_frame)  # (B, hidden, T', H_l, W_l)
        else:
            # Pooling before the 1×1×1 conv is exact (both linear, pooling weights sum to one) and costs
            # hidden_size / C_l fewer FLOPs on the large shallow taps.
            x = spatial_avg_pool(temporal_group_pool(features.float(), frames, first_frame), (height, width))
            x = self.lateral(x.to(self.lateral.weight.dtype))  # (B, hidden, T', H_l, W_l)
        if previous_codes is not None:
            if self.pyramid_link is None:
                raise ValueError("this block was built with use_pyramid_link=False but got previous_codes")
            link_in = spatial_avg_pool(previous_codes, (height, width)).to(self.pyramid_link.weight.dtype)
            x = x + self.pyramid_link(link_in)

        batch = x.shape[0]
        tokens = x.flatten(2).transpose(1, 2)  # (B, T'·H_l·W_l, hidden)
        # Every visual token attends to its own item's text only: no attention across visual tokens or frames,
        # which keeps the quantizer causal in time and batch items independent.
        queries = self.attn_norm(tokens)
        attended = self.attn(queries, text_context, text_context, key_padding_mask=~text_mask, need_weights=False)[0]
        tokens = tokens + attended
        tokens = tokens + self.mlp(self.mlp_norm(tokens))

        with _no_autocast(tokens.device):
            normed = F.layer_norm(tokens.float(), (tokens.shape[-1],))
            z = F.linear(normed, self.lfq_proj.weight.float(), self.lfq_proj.bias.float())  # (B, N_l, d)
        z = z.transpose(1, 2).reshape(batch, self.codebook_dim, frames, height, width)
        hard = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)  # sign with sign(0) := +1
        # `hard + (z - sg(z))` is exactly ±1 in the forward pass; `z + sg(hard - z)` can round off ±1.
        codes = hard + (z - z.detach())
        return codes, bits_to_ids(hard, dim=1), z

    def _strided_lateral(self, features: torch.Tensor, grid: tuple[int, int, int], first_frame: bool) -> torch.Tensor:
        """`(B, C_l, T_f, H_f, W_f)` → `(B, hidden, T', H_l, W_l)`: output frame `t'` reads input frames
        `1 + g·(t' - 1) .. g·t'` (frame 0 alone at `t' = 0`), the groups `temporal_group_pool` averages; a later
        streamed piece (`first_frame=False`) is `T'` whole groups."""
        group, factor = self.reduction
        frames, height, width = grid
        in_frames, in_height, in_width = features.shape[2:]
        needed = 1 + group * (frames - 1) if first_frame else group * frames
        if in_frames != needed or (in_height, in_width) != (factor * height, factor * width):
            raise ValueError(
                f"the strided lateral (frame group {group}, spatial factor {factor}) cannot map features of shape "
                f"{tuple(features.shape)} to the level grid {tuple(grid)}: it needs {needed} frames of "
                f"{factor * height}x{factor * width}"
            )
        x = features.to(self.lateral.weight.dtype)
        if first_frame and group > 1:
            x = torch.cat([x[:, :, :1].expand(-1, -1, group - 1, -1, -1), x], dim=2)
        return self.lateral(x)


class PyraTokCodeFusion(nn.Module):
    """Fuse the per-level codes into the decoder latent `ẑ`.

    Each level is projected from code space, nearest-upsampled to the latent grid and summed; a small conv stack with
    spatial-only `(1, 3, 3)` kernels maps the sum to `z_dim`, keeping the fusion causal in time.

    Args:
        num_levels (`int`): number of pyramid levels.
        codebook_dim (`int`): bits per token `d`.
        fusion_hidden_size (`int`): width of the fused features.
        z_dim (`int`): decoder latent channels.
    """

    def __init__(self, num_levels: int, codebook_dim: int, fusion_hidden_size: int, z_dim: int) -> None:
        super().__init__()
        self.level_proj = nn.ModuleList(
            [nn.Conv3d(codebook_dim, fusion_hidden_size, kernel_size=1) for _ in range(num_levels)]
        )
        self.conv_in = nn.Conv3d(fusion_hidden_size, fusion_hidden_size, kernel_size=(1, 3, 3), padding=(0, 1, 1))
        self.act = nn.SiLU()
        self.conv_out = nn.Conv3d(fusion_hidden_size, z_dim, kernel_size=(1, 3, 3), padding=(0, 1, 1))

    def forward(self, codes: Sequence[torch.Tensor], latent_size: tuple[int, int, int]) -> torch.Tensor:
        """
        Args:
            codes (sequence of `torch.Tensor`, each `(B, d, T', H_l, W_l)`): per-level codes, values ±1;
                `(H_l, W_l)` divides the latent grid.
            latent_size (`tuple[int, int, int]`): `(T', H', W')`.

        Returns:
            `torch.Tensor` of shape `(B, z_dim, T', H', W')`.
        """
        assert len(codes) == len(self.level_proj), "one code tensor per level"
        fused = None
        for proj, level_codes in zip(self.level_proj, codes, strict=True):
            # A 1×1×1 conv commutes with nearest upsampling, so project on the coarse grid first.
            level = proj(level_codes.to(proj.weight.dtype))
            if tuple(level.shape[-3:]) != tuple(latent_size):
                level = F.interpolate(level, size=tuple(latent_size), mode="nearest")
            fused = level if fused is None else fused + level
        return self.conv_out(self.act(self.conv_in(fused)))


# ---------------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------------


class PyraTokLaPQ(nn.Module):
    """Language-aligned pyramidal quantizer (LaPQ) with lookup-free sign codes and a semantic codebook embedding.

    Args:
        feature_channels (`Sequence[int]`): channels of the tapped features, shallow → deep; one level each.
        z_dim (`int`): channels of the fused decoder latent.
        text_embed_dim (`int`): width of the (frozen) text encoder's token embeddings.
        level_spatial_strides (`Sequence[int]`): level grid = latent grid / stride; one per level, non-decreasing,
            each dividing the next.
        hidden_size (`int`): token width inside the blocks.
        num_heads (`int`): cross-attention heads.
        mlp_ratio (`float`): MLP expansion in the blocks.
        codebook_dim (`int`): bits per token; the shared codebook has `2**codebook_dim` codes.
        semantic_dim (`int`): width `d_s` of the code/text semantic space.
        fusion_hidden_size (`int`): width of the fusion conv stack.
        bit_inverse_temperature (`float`): `τ` in `p = sigmoid(2·τ·z)`.
        entropy_mode (`str`): `"exact"` or `"grouped"` batch entropy.
        entropy_num_groups (`int`): bit groups for `"grouped"`.
        entropy_chunk_size (`int`): tokens per chunk in the batch entropy.
        commitment_weight, entropy_weight, hierarchical_weight, text_alignment_weight, text_codebook_weight (`float`):
            loss weights; a weight of 0 switches its term off (not computed, absent from `losses`).
        lateral_pooling (`str`): `"average"` or `"strided_conv"` (see [`PyraTokQuantizationBlock`]).
        feature_reductions (`Sequence[tuple[int, int]]`, *optional*): per level, `(g, f)` from its tap to its grid;
            required by `"strided_conv"`.
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
        lateral_pooling: str = "average",
        feature_reductions: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__()
        feature_channels = [int(c) for c in feature_channels]
        if lateral_pooling == "strided_conv" and (
            feature_reductions is None or len(feature_reductions) != len(feature_channels)
        ):
            raise ValueError(
                f"lateral_pooling='strided_conv' needs one (g, f) reduction per level ({len(feature_channels)}), "
                f"got {feature_reductions}"
            )
        level_spatial_strides = [int(s) for s in level_spatial_strides]
        if len(feature_channels) == 0 or any(c < 1 for c in feature_channels):
            raise ValueError(f"feature_channels must be a non-empty list of positive ints, got {feature_channels}")
        if len(level_spatial_strides) != len(feature_channels):
            raise ValueError(
                f"level_spatial_strides {level_spatial_strides} must have one entry per level "
                f"({len(feature_channels)} feature_channels)"
            )
        if level_spatial_strides[0] < 1 or any(
            b < a or b % a != 0 for a, b in zip(level_spatial_strides, level_spatial_strides[1:], strict=False)
        ):
            raise ValueError(
                f"level_spatial_strides {level_spatial_strides} must be positive, non-decreasing, "
                "each dividing the next"
            )
        if not 1 <= codebook_dim <= MAX_CODEBOOK_DIM:
            raise ValueError(f"codebook_dim={codebook_dim} must lie in 1..{MAX_CODEBOOK_DIM}")
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
        if entropy_mode not in ENTROPY_MODES:
            raise ValueError(f"entropy_mode={entropy_mode!r} must be one of {ENTROPY_MODES}")
        if entropy_mode == "grouped" and (entropy_num_groups < 1 or codebook_dim % entropy_num_groups != 0):
            raise ValueError(f"entropy_num_groups={entropy_num_groups} must divide codebook_dim={codebook_dim}")
        if bit_inverse_temperature <= 0:
            raise ValueError(f"bit_inverse_temperature={bit_inverse_temperature} must be > 0")
        self.loss_weights = {
            "commitment": float(commitment_weight),
            "entropy": float(entropy_weight),
            "hierarchical": float(hierarchical_weight),
            "text_alignment": float(text_alignment_weight),
            "text_codebook": float(text_codebook_weight),
        }
        negative = {name: w for name, w in self.loss_weights.items() if w < 0}
        if negative:
            raise ValueError(f"loss weights must be >= 0, got {negative}")

        self.feature_channels = feature_channels
        self.level_spatial_strides = level_spatial_strides
        self.num_levels = len(feature_channels)
        self.z_dim = z_dim
        self.text_embed_dim = text_embed_dim
        self.hidden_size = hidden_size
        self.codebook_dim = codebook_dim
        self.semantic_dim = semantic_dim
        self.bit_inverse_temperature = float(bit_inverse_temperature)
        self.entropy_mode = entropy_mode
        self.entropy_num_groups = entropy_num_groups
        self.entropy_chunk_size = entropy_chunk_size

        self.blocks = nn.ModuleList(
            [
                PyraTokQuantizationBlock(
                    channels,
                    hidden_size,
                    codebook_dim,
                    num_heads,
                    mlp_ratio,
                    use_pyramid_link=level > 0,
                    lateral_pooling=lateral_pooling,
                    reduction=None if feature_reductions is None else tuple(feature_reductions[level]),
                )
                for level, channels in enumerate(feature_channels)
            ]
        )
        # One text projection shared by all levels, so every level reads the prompt in the same space.
        self.text_proj = nn.Linear(text_embed_dim, hidden_size)
        self.null_text_embedding = nn.Parameter(torch.empty(1, 1, hidden_size))
        self.fusion = PyraTokCodeFusion(self.num_levels, codebook_dim, fusion_hidden_size, z_dim)
        # Semantic codebook: W_c maps ±1 codes into the space of the projected text P(e_t).
        self.code_embedding = nn.Linear(codebook_dim, semantic_dim, bias=False)
        self.text_semantic_proj = nn.Linear(text_embed_dim, semantic_dim)
        self.logit_scale = nn.Parameter(torch.empty(()))
        self.reset_custom_parameters()

    def reset_custom_parameters(self) -> None:
        """Re-apply the non-default initialisations (null text embedding, logit scale, zeroed text residuals).

        Call this after a generic weight initialiser (e.g. a `PreTrainedModel._init_weights`) has run.
        """
        nn.init.normal_(self.null_text_embedding, std=0.02)
        with torch.no_grad():
            self.logit_scale.fill_(LOGIT_SCALE_INIT)
        for block in self.blocks:
            block.zero_init_text_residuals()

    # ------------------------------------------------------------------ shapes and validation

    def level_grid(self, latent_size: Sequence[int]) -> list[tuple[int, int, int]]:
        """Token grid of every level.

        Args:
            latent_size (`Sequence[int]`): `(T', H', W')`; `H'` and `W'` divisible by the largest stride.

        Returns:
            `list[tuple[int, int, int]]`: `(T', H'/s_l, W'/s_l)` per level, shallow → deep.
        """
        latent_size = tuple(int(s) for s in latent_size)
        if len(latent_size) != 3 or any(s < 1 for s in latent_size):
            raise ValueError(f"latent_size must be 3 positive ints (T', H', W'), got {latent_size}")
        frames, height, width = latent_size
        largest = self.level_spatial_strides[-1]
        if height % largest != 0 or width % largest != 0:
            raise ValueError(
                f"latent grid {(height, width)} must be divisible by the largest level stride {largest} "
                f"(level_spatial_strides={self.level_spatial_strides})"
            )
        return [(frames, height // s, width // s) for s in self.level_spatial_strides]

    def _check_features(
        self, features: Sequence[torch.Tensor], grids: list[tuple[int, int, int]], first_frame: bool = True
    ) -> int:
        if not isinstance(features, (list, tuple)) or len(features) != self.num_levels:
            count = len(features) if isinstance(features, (list, tuple)) else type(features).__name__
            raise ValueError(f"expected a list of {self.num_levels} feature tensors, got {count}")
        batch = None
        for level, (feature, channels, grid) in enumerate(zip(features, self.feature_channels, grids, strict=True)):
            if not isinstance(feature, torch.Tensor) or feature.ndim != 5:
                shape = tuple(feature.shape) if isinstance(feature, torch.Tensor) else type(feature).__name__
                raise ValueError(f"level {level}: features must be (B, C, T, H, W), got {shape}")
            shape = tuple(feature.shape)
            if shape[1] != channels:
                raise ValueError(f"level {level}: expected {channels} channels, got features of shape {shape}")
            if batch is None:
                batch = shape[0]
            elif shape[0] != batch:
                raise ValueError(f"level {level}: batch size {shape[0]} differs from level 0's {batch}")
            frames, height, width = grid
            in_frames = shape[2]
            if first_frame:
                frames_ok = in_frames == 1 if frames == 1 else in_frames > 1 and (in_frames - 1) % (frames - 1) == 0
                layout = f"1 + g·{frames - 1}"
            else:
                frames_ok, layout = in_frames % frames == 0, f"g·{frames} for a piece after frame 0"
            if not frames_ok:
                raise ValueError(
                    f"level {level}: {in_frames} frames cannot be grouped causally into {frames} latent frames "
                    f"(need {layout}); features shape {shape}"
                )
            if shape[3] % height != 0 or shape[4] % width != 0:
                raise ValueError(
                    f"level {level}: spatial size {shape[3:]} is not divisible by the level grid {(height, width)}"
                )
            if not torch.isfinite(feature).all():
                raise ValueError(f"level {level}: features contain NaN or Inf")
        return batch

    def _prepare_text(
        self,
        text_embeds: torch.Tensor | None,
        text_attention_mask: torch.Tensor | None,
        text_present: torch.Tensor | None,
        batch: int,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Return (context (B, L, hidden), context mask (B, L) bool, present (B,) bool, validated mask or None)."""
        if text_present is not None:
            if text_present.shape != (batch,):
                raise ValueError(f"text_present must have shape ({batch},), got {tuple(text_present.shape)}")
            if text_present.dtype != torch.bool:
                if text_present.is_floating_point() or not ((text_present == 0) | (text_present == 1)).all():
                    raise ValueError(f"text_present must be bool or 0/1 integers, got dtype {text_present.dtype}")
            text_present = text_present.to(device=device, dtype=torch.bool)

        if text_embeds is None:
            if text_attention_mask is not None:
                raise ValueError("text_attention_mask was given without text_embeds")
            if text_present is not None and bool(text_present.any()):
                raise ValueError("text_present marks items as having text but text_embeds is None")
            present = torch.zeros(batch, dtype=torch.bool, device=device)
            context = self.null_text_embedding.expand(batch, 1, -1)
            mask = torch.ones(batch, 1, dtype=torch.bool, device=device)
            return context, mask, present, None

        if text_embeds.ndim != 3 or text_embeds.shape[0] != batch or text_embeds.shape[2] != self.text_embed_dim:
            raise ValueError(
                f"text_embeds must be (B={batch}, L, {self.text_embed_dim}), got {tuple(text_embeds.shape)}"
            )
        length = text_embeds.shape[1]
        if length < 1:
            raise ValueError("text_embeds has no tokens (L = 0); pass text_embeds=None for no text")
        if not torch.isfinite(text_embeds).all():
            raise ValueError("text_embeds contain NaN or Inf")
        if text_attention_mask is None:
            text_mask = torch.ones(batch, length, dtype=torch.bool, device=device)
        else:
            if text_attention_mask.shape != (batch, length):
                raise ValueError(
                    f"text_attention_mask must have shape {(batch, length)}, got {tuple(text_attention_mask.shape)}"
                )
            if (
                text_attention_mask.dtype != torch.bool
                and not ((text_attention_mask == 0) | (text_attention_mask == 1)).all()
            ):
                raise ValueError("text_attention_mask must be bool or contain only 0 and 1")
            text_mask = text_attention_mask.to(device=device, dtype=torch.bool)
        present = torch.ones(batch, dtype=torch.bool, device=device) if text_present is None else text_present
        empty = present & ~text_mask.any(dim=1)
        if bool(empty.any()):
            raise ValueError(
                f"items {empty.nonzero().flatten().tolist()} are marked as having text but their "
                "text_attention_mask has no valid token"
            )
        projected = self.text_proj(text_embeds.to(self.text_proj.weight.dtype))
        null = self.null_text_embedding.to(projected.dtype).expand_as(projected)
        # Items without text see exactly one valid token: the learned null embedding in slot 0.
        context = torch.where(present[:, None, None], projected, null)
        first_only = torch.arange(length, device=device)[None] == 0
        mask = torch.where(present[:, None], text_mask, first_only)
        return context, mask, present, text_mask

    # ------------------------------------------------------------------ public API

    def forward(
        self,
        features: Sequence[torch.Tensor],
        latent_size: Sequence[int],
        text_embeds: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        text_present: torch.Tensor | None = None,
        compute_losses: bool = True,
        first_frame: bool = True,
    ) -> PyraTokQuantizerOutput:
        """Quantize the feature pyramid into per-level codes and fuse them into the decoder latent.

        Args:
            features (`Sequence[torch.Tensor]`): one tap per level, shallow → deep, `F^(l)` of shape
                `(B, C_l, T_l, H_l, W_l)` with `T_l = 1 + g_l·(T' - 1)` (`g_l·T'` when `first_frame` is False) and
                `(H_l, W_l)` divisible by the level grid.
            latent_size (`Sequence[int]`): `(T', H', W')` of the decoder latent.
            text_embeds (`torch.Tensor` of shape `(B, L, text_embed_dim)`, optional): frozen text encoder tokens.
            text_attention_mask (`torch.Tensor` of shape `(B, L)`, optional): bool or 0/1, True/1 = valid token;
                all valid when omitted.
            text_present (`torch.BoolTensor` of shape `(B,)`, optional): items that have text; the others use the
                learned null embedding. Defaults to all True when `text_embeds` is given, all False otherwise.
            compute_losses (`bool`): compute `loss` and `losses`.
            first_frame (`bool`): the taps start with the clip's frame 0, encoded alone (Wan's first causal chunk).
                False for a later piece of a streamed clip: its taps hold whole groups of `g_l` frames, and its
                ids equal the whole clip's for those latent frames.

        Returns:
            [`PyraTokQuantizerOutput`].
        """
        grids = self.level_grid(latent_size)
        latent_size = (
            grids[0][0],
            grids[0][1] * self.level_spatial_strides[0],
            grids[0][2] * self.level_spatial_strides[0],
        )
        batch = self._check_features(features, grids, first_frame)
        device = features[0].device
        context, context_mask, present, text_mask = self._prepare_text(
            text_embeds, text_attention_mask, text_present, batch, device
        )

        codes, ids, bit_logits = [], [], []
        previous = None
        for block, feature, grid in zip(self.blocks, features, grids, strict=True):
            level_codes, level_ids, level_logits = block(
                feature, grid, context, context_mask, previous, first_frame=first_frame
            )
            codes.append(level_codes)
            ids.append(level_ids)
            bit_logits.append(level_logits)
            previous = level_codes
        latent = self.fusion(codes, latent_size)

        loss, losses = None, None
        if compute_losses:
            loss, losses = self._compute_losses(codes, bit_logits, text_embeds, text_mask, present)
        return PyraTokQuantizerOutput(
            latent=latent, codes=tuple(codes), ids=tuple(ids), bit_logits=tuple(bit_logits), loss=loss, losses=losses
        )

    def _compute_losses(
        self,
        codes: list[torch.Tensor],
        bit_logits: list[torch.Tensor],
        text_embeds: torch.Tensor | None,
        text_mask: torch.Tensor | None,
        present: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        device = bit_logits[0].device
        weights = self.loss_weights
        losses: dict[str, torch.Tensor] = {}
        with _no_autocast(device):
            probs = [bit_probabilities(z, self.bit_inverse_temperature) for z in bit_logits]  # (B, d, T', H_l, W_l)

            if weights["commitment"] > 0:
                terms = [(z - torch.where(z >= 0, 1.0, -1.0)).square().mean() for z in bit_logits]
                losses["commitment"] = torch.stack(terms).mean()

            if weights["entropy"] > 0:
                # Batch entropy is capped by log(#tokens): pool the tokens of all levels.
                pooled = torch.cat([p.movedim(1, -1).reshape(-1, self.codebook_dim) for p in probs])  # (N, d)
                token_entropy = per_token_entropy(pooled)
                batch_entropy = batch_code_entropy(
                    pooled, self.entropy_mode, self.entropy_num_groups, self.entropy_chunk_size
                )
                losses["entropy"] = token_entropy - batch_entropy
                losses["per_token_entropy"] = token_entropy.detach()
                losses["batch_entropy"] = batch_entropy.detach()

            if weights["hierarchical"] > 0 and self.num_levels > 1:
                terms = []
                for coarse, fine in zip(probs[1:], probs[:-1], strict=True):
                    target = spatial_avg_pool(fine, tuple(coarse.shape[-2:]))
                    terms.append(bernoulli_kl(coarse, target).sum(1).mean())
                losses["hierarchical"] = torch.stack(terms).mean()

            num_text = int(present.sum())
            need_alignment = weights["text_alignment"] > 0 and num_text >= 1
            need_codebook = weights["text_codebook"] > 0 and num_text >= 2
            if need_alignment or need_codebook:
                text_semantic = self.embed_text(text_embeds[present], text_mask[present]).float()  # (K, d_s)
                code_weight = self.code_embedding.weight.float()  # (d_s, d)
            if need_alignment:
                # A code's score <W_c c, u> = sum_i c_i (W_cᵀu)_i is linear in its ±1 bits, so the softmax over all
                # 2**d codes factorises exactly into per-bit Bernoullis with P(c_i = +1) = sigmoid(2 (W_cᵀu)_i).
                prior = torch.sigmoid(2.0 * text_semantic @ code_weight)  # (K, d)
                prior = prior[:, :, None, None, None]
                terms = [bernoulli_kl(p[present], prior).sum(1).mean() for p in probs]
                losses["text_alignment"] = torch.stack(terms).mean()
            if need_codebook:
                # mean_i W_c q_i = W_c mean_i q_i: average the straight-through codes over all levels' tokens.
                code_sum = sum(c[present].float().flatten(2).sum(-1) for c in codes)  # (K, d)
                num_tokens = sum(c[0, 0].numel() for c in codes)
                visual = F.normalize((code_sum / num_tokens) @ code_weight.t(), dim=-1)  # (K, d_s)
                text = F.normalize(text_semantic, dim=-1)
                scale = self.logit_scale.float().clamp(max=LOGIT_SCALE_MAX).exp()
                logits = scale * visual @ text.t()  # (K, K)
                labels = torch.arange(num_text, device=device)
                losses["text_codebook"] = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))

            loss = torch.zeros((), device=device)
            for name in LOSS_NAMES:
                if name in losses:
                    loss = loss + weights[name] * losses[name]
        return loss, losses

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Map codes into the semantic space with `W_c` (for token–text similarity, e.g. zero-shot segmentation).

        Args:
            codes (`torch.Tensor` of shape `(B, codebook_dim, ...)`): codes, values ±1 (soft codes also work).

        Returns:
            `torch.Tensor` of shape `(B, semantic_dim, ...)`.
        """
        if codes.ndim < 2 or codes.shape[1] != self.codebook_dim:
            raise ValueError(f"codes must be (B, {self.codebook_dim}, ...), got {tuple(codes.shape)}")
        embedded = self.code_embedding(codes.movedim(1, -1).to(self.code_embedding.weight.dtype))
        return embedded.movedim(-1, 1)

    def embed_text(self, text_embeds: torch.Tensor, text_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Project the masked mean of the text tokens into the semantic space, `P(e_t)`.

        Args:
            text_embeds (`torch.Tensor` of shape `(B, L, text_embed_dim)`).
            text_attention_mask (`torch.Tensor` of shape `(B, L)`, optional): bool or 0/1, all valid when omitted.

        Returns:
            `torch.Tensor` of shape `(B, semantic_dim)`.
        """
        if text_embeds.ndim != 3 or text_embeds.shape[2] != self.text_embed_dim:
            raise ValueError(f"text_embeds must be (B, L, {self.text_embed_dim}), got {tuple(text_embeds.shape)}")
        if text_attention_mask is None:
            weight = text_embeds.new_ones(text_embeds.shape[:2])
        else:
            if text_attention_mask.shape != text_embeds.shape[:2]:
                raise ValueError(
                    f"text_attention_mask shape {tuple(text_attention_mask.shape)} does not match text_embeds "
                    f"{tuple(text_embeds.shape[:2])}"
                )
            weight = text_attention_mask.to(text_embeds.dtype)
        mean = (text_embeds * weight[..., None]).sum(1) / weight.sum(1, keepdim=True).clamp_min(1.0)
        return self.text_semantic_proj(mean.to(self.text_semantic_proj.weight.dtype))

    def ids_to_codes(self, ids: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Expand per-level ids into ±1 codes, checking the pyramid's shape relations.

        Args:
            ids (`Sequence[torch.LongTensor]`): one per level, `(B, T', H_l, W_l)`, values in `[0, 2**codebook_dim)`,
                with `(H_l, W_l) = (H', W') / s_l` for a latent grid `(H', W')` divisible by the largest stride.

        Returns:
            `tuple[torch.Tensor, ...]`: per level `(B, codebook_dim, T', H_l, W_l)` fp32 codes in `{-1, +1}`.
        """
        if not isinstance(ids, (list, tuple)) or len(ids) != self.num_levels:
            count = len(ids) if isinstance(ids, (list, tuple)) else type(ids).__name__
            raise ValueError(f"expected {self.num_levels} id tensors (one per level), got {count}")
        shapes = [tuple(level_ids.shape) for level_ids in ids]
        if len(shapes[0]) != 4:
            raise ValueError(f"level 0: ids must be (B, T', H, W), got {shapes[0]}")
        batch, frames, height, width = shapes[0]
        stride = self.level_spatial_strides[0]
        grids = self.level_grid((frames, height * stride, width * stride))
        codes = []
        for level, (level_ids, grid) in enumerate(zip(ids, grids, strict=True)):
            if shapes[level] != (batch, *grid):
                raise ValueError(
                    f"level {level}: ids shape {shapes[level]} does not fit the pyramid; expected {(batch, *grid)} "
                    f"given level 0 shape {shapes[0]} and strides {self.level_spatial_strides}"
                )
            try:
                codes.append(ids_to_bits(level_ids, self.codebook_dim, dim=1))
            except ValueError as error:
                raise ValueError(f"level {level}: {error}") from None
        return tuple(codes)

    def codes_to_latent(self, codes: Sequence[torch.Tensor], latent_size: Sequence[int] | None = None) -> torch.Tensor:
        """Fuse per-level codes into the decoder latent (the decoding path from ids).

        Args:
            codes (`Sequence[torch.Tensor]`): one per level, `(B, codebook_dim, T', H_l, W_l)`, values ±1.
            latent_size (`Sequence[int]`, optional): `(T', H', W')`; inferred from level 0 and its stride when omitted.

        Returns:
            `torch.Tensor` of shape `(B, z_dim, T', H', W')`.
        """
        if not isinstance(codes, (list, tuple)) or len(codes) != self.num_levels:
            count = len(codes) if isinstance(codes, (list, tuple)) else type(codes).__name__
            raise ValueError(f"expected {self.num_levels} code tensors (one per level), got {count}")
        if codes[0].ndim != 5:
            raise ValueError(f"level 0: codes must be (B, d, T', H, W), got {tuple(codes[0].shape)}")
        if latent_size is None:
            stride = self.level_spatial_strides[0]
            latent_size = (codes[0].shape[2], codes[0].shape[3] * stride, codes[0].shape[4] * stride)
        grids = self.level_grid(latent_size)
        batch = codes[0].shape[0]
        for level, (level_codes, grid) in enumerate(zip(codes, grids, strict=True)):
            expected = (batch, self.codebook_dim, *grid)
            if tuple(level_codes.shape) != expected:
                raise ValueError(f"level {level}: codes shape {tuple(level_codes.shape)}, expected {expected}")
        return self.fusion(codes, tuple(int(s) for s in latent_size))


class PyraTokResidualQuantizer(nn.Module):
    """Residual sign quantizer of the released PyraTok checkpoint (DESIGN.md §3b, `quantizer_mode="residual"`).

    Stage `i` (0-based) takes the running residual `r_i` of the posterior mean (`r_0 = mean`), emits
    `c_i = sign(r_i)` in {-1, +1} (`r_i >= 0` → +1) and subtracts `2**-i · c_i`; the decoder latent is
    `sum_i 2**-i · c_i`. Per channel this is the nearest of `2**num_stages` uniform levels with step
    `2**(1 - num_stages)`, saturating at `±(2 - 2**(1 - num_stages))`. Every stage's `codebook_dim = z_dim` bits
    are read MSB-first from channel 0 into one id per latent position. There is no projection and no text path: the
    official model's text cross-attention is multiplied by a scale it forces to 0, so text never changes the output.

    Arithmetic adapted from `ResidualLaPQunatizer3D` / `LaPQuantizer3D` in https://github.com/PLAN-Lab/PyraTok
    (`LaPQ.py`, commit 77741ee); written anew here.

    Args:
        num_stages (`int`): residual stages (the official `lapq_num_quantizers`).
        codebook_dim (`int`): bits per stage and token; must equal the latent channels `z_dim`.
        bit_inverse_temperature (`float`): `τ` in the entropy term's soft bits `sigmoid(2·τ·r)`.
        entropy_mode, entropy_num_groups, entropy_chunk_size: batch-entropy options, as in [`PyraTokLaPQ`].
        commitment_weight, entropy_weight (`float`): loss weights (0 switches a term off).
    """

    def __init__(
        self,
        num_stages: int,
        codebook_dim: int,
        bit_inverse_temperature: float = 1.0,
        entropy_mode: str = "exact",
        entropy_num_groups: int = 2,
        entropy_chunk_size: int = 8192,
        commitment_weight: float = 0.25,
        entropy_weight: float = 0.1,
    ) -> None:
        super().__init__()
        if num_stages < 1:
            raise ValueError(f"num_stages={num_stages} must be >= 1")
        if not 1 <= codebook_dim <= MAX_CODEBOOK_DIM:
            raise ValueError(f"codebook_dim={codebook_dim} must lie in 1..{MAX_CODEBOOK_DIM}")
        if entropy_mode not in ENTROPY_MODES:
            raise ValueError(f"entropy_mode={entropy_mode!r} must be one of {ENTROPY_MODES}")
        if commitment_weight < 0 or entropy_weight < 0:
            raise ValueError(f"loss weights must be >= 0, got {commitment_weight=}, {entropy_weight=}")
        self.num_levels = num_stages
        self.codebook_dim = codebook_dim
        self.z_dim = codebook_dim
        self.level_spatial_strides = [1] * num_stages
        self.bit_inverse_temperature = float(bit_inverse_temperature)
        self.entropy_mode = entropy_mode
        self.entropy_num_groups = entropy_num_groups
        self.entropy_chunk_size = entropy_chunk_size
        self.loss_weights = {"commitment": float(commitment_weight), "entropy": float(entropy_weight)}

    def stage_scales(self) -> list[float]:
        """`2**-i` for stage `i`: exact in every float dtype."""
        return [2.0**-i for i in range(self.num_levels)]

    def level_grid(self, latent_size: Sequence[int]) -> list[tuple[int, int, int]]:
        """Every stage's ids lie on the latent grid `(T', H', W')`."""
        latent_size = tuple(int(s) for s in latent_size)
        if len(latent_size) != 3 or any(s < 1 for s in latent_size):
            raise ValueError(f"latent_size must be 3 positive ints (T', H', W'), got {latent_size}")
        return [latent_size] * self.num_levels

    def forward(
        self,
        features: torch.Tensor | Sequence[torch.Tensor],
        latent_size: Sequence[int],
        text_embeds: torch.Tensor | None = None,
        text_attention_mask: torch.Tensor | None = None,
        text_present: torch.Tensor | None = None,
        compute_losses: bool = True,
    ) -> PyraTokQuantizerOutput:
        """Quantize the posterior mean in `num_stages` residual sign stages.

        Args:
            features: the posterior mean `(B, z_dim, T', H', W')` (or a one-element list holding it).
            latent_size: `(T', H', W')`, must match the mean's grid.
            text_embeds, text_attention_mask, text_present: accepted for interface parity and ignored (the released
                model's text path is inert).
            compute_losses: compute the commitment and entropy terms.

        Returns:
            [`PyraTokQuantizerOutput`]: `latent` in the mean's dtype; per stage `codes` (straight-through, values
            ±1), `ids` `(B, T', H', W')` and `bit_logits` (the fp32 residual the stage saw).
        """
        if isinstance(features, (list, tuple)):
            if len(features) != 1:
                raise ValueError(f"expected the posterior mean alone, got a list of {len(features)} tensors")
            features = features[0]
        if not isinstance(features, torch.Tensor) or features.ndim != 5 or features.shape[1] != self.codebook_dim:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(f"expected a posterior mean (B, {self.codebook_dim}, T', H', W'), got {shape}")
        grid = self.level_grid(latent_size)[0]
        if tuple(features.shape[2:]) != grid:
            raise ValueError(f"posterior mean grid {tuple(features.shape[2:])} != latent_size {grid}")
        if not torch.isfinite(features).all():
            raise ValueError("posterior mean contains NaN or Inf")
        with _no_autocast(features.device):
            mean = features.float()
            residual = mean
            latent = torch.zeros_like(mean)
            codes, ids, bit_logits = [], [], []
            for scale in self.stage_scales():
                hard = torch.where(residual >= 0, 1.0, -1.0)
                # Straight-through as in the official code: forward ±1, gradient of the stage's input residual.
                code = hard + (residual - residual.detach())
                latent = latent + scale * code
                bit_logits.append(residual)
                codes.append(code)
                ids.append(bits_to_ids(hard, dim=1))
                residual = residual - scale * code.detach()
        loss = losses = None
        if compute_losses:
            loss, losses = self._compute_losses(bit_logits)
        return PyraTokQuantizerOutput(
            latent=latent.to(features.dtype),
            codes=tuple(codes),
            ids=tuple(ids),
            bit_logits=tuple(bit_logits),
            loss=loss,
            losses=losses,
        )

    def _compute_losses(self, bit_logits: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        device = bit_logits[0].device
        losses: dict[str, torch.Tensor] = {}
        with _no_autocast(device):
            if self.loss_weights["commitment"] > 0:
                terms = [(r - torch.where(r >= 0, 1.0, -1.0)).square().mean() for r in bit_logits]
                losses["commitment"] = torch.stack(terms).mean()
            if self.loss_weights["entropy"] > 0:
                probs = [bit_probabilities(r, self.bit_inverse_temperature) for r in bit_logits]
                pooled = torch.cat([p.movedim(1, -1).reshape(-1, self.codebook_dim) for p in probs])  # (N, d)
                token_entropy = per_token_entropy(pooled)
                batch_entropy = batch_code_entropy(
                    pooled, self.entropy_mode, self.entropy_num_groups, self.entropy_chunk_size
                )
                losses["entropy"] = token_entropy - batch_entropy
                losses["per_token_entropy"] = token_entropy.detach()
                losses["batch_entropy"] = batch_entropy.detach()
            loss = torch.zeros((), device=device)
            for name, weight in self.loss_weights.items():
                if name in losses:
                    loss = loss + weight * losses[name]
        return loss, losses

    def ids_to_codes(self, ids: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Per-stage ids `(B, T', H', W')` (one shape for all) → per-stage ±1 codes `(B, codebook_dim, T', H', W')`."""
        if not isinstance(ids, (list, tuple)) or len(ids) != self.num_levels:
            count = len(ids) if isinstance(ids, (list, tuple)) else type(ids).__name__
            raise ValueError(f"expected {self.num_levels} id tensors (one per stage), got {count}")
        shapes = [tuple(stage_ids.shape) for stage_ids in ids]
        if len(shapes[0]) != 4 or any(s != shapes[0] for s in shapes):
            raise ValueError(f"every stage's ids must be (B, T', H', W') of one shape, got {shapes}")
        codes = []
        for stage, stage_ids in enumerate(ids):
            try:
                codes.append(ids_to_bits(stage_ids, self.codebook_dim, dim=1))
            except ValueError as error:
                raise ValueError(f"stage {stage}: {error}") from None
        return tuple(codes)

    def codes_to_latent(self, codes: Sequence[torch.Tensor], latent_size: Sequence[int] | None = None) -> torch.Tensor:
        """Per-stage ±1 codes → decoder latent `sum_i 2**-i · c_i`, `(B, z_dim, T', H', W')`."""
        if not isinstance(codes, (list, tuple)) or len(codes) != self.num_levels:
            count = len(codes) if isinstance(codes, (list, tuple)) else type(codes).__name__
            raise ValueError(f"expected {self.num_levels} code tensors (one per stage), got {count}")
        expected = tuple(codes[0].shape)
        if len(expected) != 5 or expected[1] != self.codebook_dim:
            raise ValueError(f"stage 0: codes must be (B, {self.codebook_dim}, T', H', W'), got {expected}")
        if latent_size is not None and tuple(int(s) for s in latent_size) != expected[2:]:
            raise ValueError(f"codes grid {expected[2:]} != latent_size {tuple(latent_size)}")
        for stage, stage_codes in enumerate(codes):
            if tuple(stage_codes.shape) != expected:
                raise ValueError(f"stage {stage}: codes shape {tuple(stage_codes.shape)}, expected {expected}")
        latent = sum(scale * c.float() for scale, c in zip(self.stage_scales(), codes, strict=True))
        # Codes expanded from ids are channels-last in memory; a contiguous latent takes the same conv kernels as
        # the encode path, so decoding ids reproduces decoding the encoder's latent bit for bit.
        return latent.contiguous()


__all__ = [
    "PyraTokCodeFusion",
    "PyraTokLaPQ",
    "PyraTokQuantizationBlock",
    "PyraTokQuantizerOutput",
    "PyraTokResidualQuantizer",
    "batch_code_entropy",
    "bernoulli_kl",
    "bit_probabilities",
    "bits_to_ids",
    "ids_to_bits",
    "per_token_entropy",
    "LATERAL_POOLINGS",
    "spatial_avg_pool",
    "temporal_group_pool",
]

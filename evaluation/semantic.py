"""The shared code/text semantic space of a LaPQ tokenizer (DESIGN §4), as used by the zero-shot tasks.

A token's ±1 code `c` (16 bits) maps to `W_c c ∈ R^{d_s}` (`PyraTokLaPQ.embed_codes`); a prompt's frozen text-encoder
states map to `P(e_t) ∈ R^{d_s}` (`PyraTokLaPQ.embed_text`, masked mean of the tokens, then a linear projection).
The text-codebook InfoNCE loss trains cosine similarity between the two, so all similarities here are cosines of
L2-normalised vectors, in [-1, 1].

Pooling follows the loss: a pooled visual embedding is `normalise(mean_i W_c q_i)` over the pooled tokens (which equals
`W_c` of the mean code, `W_c` being linear), not a mean of normalised token embeddings.

Only `quantizer_mode="pyramid"` models have this space; residual-mode models (the released checkpoint, DESIGN §3b)
raise a `ValueError`. Everything runs under `torch.no_grad()`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Prompts per text-encoder call: bounds memory for long label lists.
TEXT_BATCH_SIZE = 64

TextArg = str | Sequence[str | None] | None


def _core(model: torch.nn.Module):
    """`model.core` of a `PyraTokModel` / `AutoencoderPyraTok` (or a bare `PyraTokCore`), checked for LaPQ."""
    core = getattr(model, "core", model)
    config = getattr(core, "config", None)
    if config is None or not hasattr(core, "quantizer") or not hasattr(core, "check_video"):
        raise ValueError(f"expected a PyraTokModel or AutoencoderPyraTok, got {type(model).__name__}")
    mode = getattr(config, "quantizer_mode", "pyramid")
    if mode != "pyramid":
        raise ValueError(
            f"this model has quantizer_mode={mode!r}: it has no code/text semantic space (W_c, P(e_t)); "
            "semantic evaluation needs a quantizer_mode='pyramid' (LaPQ) model"
        )
    return core


def _level_index(core, level: int) -> int:
    num_levels = core.quantizer.num_levels
    if not isinstance(level, int) or not -num_levels <= level < num_levels:
        raise ValueError(f"level={level!r} is out of range for a {num_levels}-level pyramid (use 0..{num_levels - 1} "
                         "or negative indices)")
    return level % num_levels


@torch.no_grad()
def encode_codes(model: torch.nn.Module, video: torch.Tensor, text: TextArg = None) -> list[torch.Tensor]:
    """Quantize a batch of clips into per-level codes.

    Args:
        model: a `PyraTokModel` (or `AutoencoderPyraTok`) with `quantizer_mode="pyramid"`.
        video: float `(B, 3, T, H, W)` in [-1, 1], `T = 4k + 1`, H and W multiples of `config.spatial_multiple`
            (`(B, 3, H, W)` images are treated as 1-frame clips).
        text: conditioning prompt(s): one `str` for all items, one `str | None` per item, or None (null text).

    Returns:
        Per level (shallow → deep) float `(B, codebook_dim, T', H_l, W_l)` codes in {-1, +1}.
    """
    core = _core(model)
    x, _ = core.check_video(video, name="video")
    x = x.to(next(core.parameters()).device)
    q, _ = core.quantize(x, compute_losses=False, text=text)
    return [c.float() for c in q.codes]


@torch.no_grad()
def token_embeddings(model: torch.nn.Module, codes_level: torch.Tensor) -> torch.Tensor:
    """`W_c c` per token, L2-normalised.

    Args:
        codes_level: float `(B, codebook_dim, T', H_l, W_l)` codes in {-1, +1} (one level of `encode_codes`).

    Returns:
        float32 `(B, d_s, T', H_l, W_l)`, unit norm over `d_s`.
    """
    core = _core(model)
    if not isinstance(codes_level, torch.Tensor) or codes_level.ndim != 5:
        shape = tuple(codes_level.shape) if isinstance(codes_level, torch.Tensor) else type(codes_level).__name__
        raise ValueError(f"codes_level must be (B, codebook_dim, T', H_l, W_l), got {shape}")
    return F.normalize(core.quantizer.embed_codes(codes_level).float(), dim=1)


def _check_texts(texts: Sequence[str], name: str = "texts") -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence) or len(texts) == 0:
        raise ValueError(f"{name} must be a non-empty list of strings, got {texts!r:.200}")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(f"{name}[{bad[0]}]={texts[bad[0]]!r} is not a non-empty string ({len(bad)} bad entries)")
    return list(texts)


@torch.no_grad()
def text_embeddings(model: torch.nn.Module, texts: Sequence[str]) -> torch.Tensor:
    """`P(e_t)` of each prompt, L2-normalised.

    Args:
        texts: non-empty prompts.

    Returns:
        float32 `(N, d_s)`, unit norm.
    """
    core = _core(model)
    texts = _check_texts(texts)
    device = next(core.parameters()).device
    encoder = core.get_text_encoder()
    out = []
    for start in range(0, len(texts), TEXT_BATCH_SIZE):
        embeds, mask = encoder(texts[start : start + TEXT_BATCH_SIZE], device)
        out.append(core.quantizer.embed_text(embeds, mask).float())
    return F.normalize(torch.cat(out), dim=-1)


@torch.no_grad()
def token_text_similarity(
    model: torch.nn.Module, video: torch.Tensor, query: str, level: int = -1, condition_on_query: bool = True
) -> torch.Tensor:
    """Cosine similarity of every token of one level to a text query (zero-shot segmentation's relevance map).

    Args:
        video: float `(B, 3, T, H, W)` in [-1, 1].
        query: the text query.
        level: pyramid level (0 = shallowest, -1 = deepest, the paper's `q^(L)`).
        condition_on_query: encode the video with the query as its prompt (LaPQ's cross-attention sees it);
            False encodes without text (null embedding).

    Returns:
        float32 `(B, T', H_l, W_l)` in [-1, 1].
    """
    core = _core(model)
    index = _level_index(core, level)
    query = _check_texts([query], name="query")[0]
    codes = encode_codes(model, video, query if condition_on_query else None)[index]
    tokens = token_embeddings(model, codes)  # (B, d_s, T', H_l, W_l)
    text = text_embeddings(model, [query])[0].to(tokens.device)  # (d_s,)
    return torch.einsum("bdthw,d->bthw", tokens, text).clamp(-1.0, 1.0)


def _pooled_embedding(core, codes: Sequence[torch.Tensor], dims: tuple[int, ...]) -> torch.Tensor:
    # mean_i W_c q_i = W_c mean_i q_i, token-weighted over every tensor in `codes` (as the text-codebook loss).
    total = sum(c.sum(dim=dims) for c in codes)
    count = sum(math.prod(c.shape[d] for d in dims) for c in codes)
    mean_code = total / count  # (B, d, ...)
    return F.normalize(core.quantizer.embed_codes(mean_code).float(), dim=1)


@torch.no_grad()
def frame_descriptors(
    model: torch.nn.Module, video: torch.Tensor, level: int = 0, text: TextArg = None
) -> torch.Tensor:
    """One descriptor per latent frame: the spatial mean of a level's token embeddings (paper B.3, level 0 = q^(1)).

    Latent frame `t'` covers input frame 0 for `t' = 0` and frames `4t' - 3 .. 4t'` otherwise.

    Args:
        video: float `(B, 3, T, H, W)` in [-1, 1].
        level: pyramid level (0 = shallowest).
        text: conditioning prompt(s), as `encode_codes`.

    Returns:
        float32 `(B, T', d_s)`, unit norm.
    """
    core = _core(model)
    index = _level_index(core, level)
    codes = encode_codes(model, video, text)[index]  # (B, d, T', H_l, W_l)
    return _pooled_embedding(core, [codes], dims=(3, 4)).transpose(1, 2).contiguous()


@torch.no_grad()
def clip_embedding(model: torch.nn.Module, video: torch.Tensor, text: TextArg = None) -> torch.Tensor:
    """One embedding per clip: the mean of every level's token embeddings (the text-codebook loss's visual side).

    Args:
        video: float `(B, 3, T, H, W)` in [-1, 1].
        text: conditioning prompt(s), as `encode_codes` (None for retrieval: the video must not see the captions).

    Returns:
        float32 `(B, d_s)`, unit norm.
    """
    core = _core(model)
    codes = encode_codes(model, video, text)
    return _pooled_embedding(core, codes, dims=(2, 3, 4))


__all__ = [
    "clip_embedding",
    "encode_codes",
    "frame_descriptors",
    "text_embeddings",
    "token_embeddings",
    "token_text_similarity",
]

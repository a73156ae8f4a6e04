"""Zero-shot text↔video retrieval in the tokenizer's code/text semantic space.

Each clip is encoded without text (it must not see the captions it is ranked against) and embedded with
`evaluation.semantic.clip_embedding` (normalised mean of `W_c q` over every level's tokens, the visual side of the
text-codebook InfoNCE loss); each caption with `text_embeddings` (`P(e_t)`). Caption `i` belongs to clip `i`.
Recall@k counts ties against the query (`evaluation.metrics.recall_at_k`); `chance` is `k / N`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence

import torch

from .clips import ClipReader
from .metrics import recall_at_k
from .semantic import _core, clip_embedding, text_embeddings

DEFAULT_KS = (1, 5, 10)


@torch.no_grad()
def evaluate_retrieval(
    model: torch.nn.Module,
    split_dir: str | os.PathLike,
    max_clips: int | None = None,
    num_frames: int | None = None,
    size: int | tuple[int, int] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict:
    """Text→video and video→text recall@k on the captioned clips of a split.

    Args:
        model: a LaPQ (`quantizer_mode="pyramid"`) `PyraTokModel`.
        split_dir: folder of `*.tar` eval shards.
        max_clips, num_frames, size: clip selection and geometry (`ClipReader`).
        ks: cut-offs; those larger than the number of clips are left out (listed in `ks_skipped`).

    Returns:
        `{"task", "num_clips", "skipped", "duplicate_captions", "ks", "ks_skipped", "text_to_video": {"R@1", ...},
        "video_to_text": {"R@1", ...}, "chance": {"R@1", ...}, "keys"}`, recalls in [0, 1].
    """
    _core(model)
    ks = [int(k) for k in ks]
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive ints, got {ks}")
    model.eval()
    reader = ClipReader(split_dir, max_clips=max_clips, num_frames=num_frames, size=size)
    keys, captions, embeds = [], [], []
    uncaptioned = []
    for clip in reader:
        if not clip.caption.strip():
            uncaptioned.append(clip.key)
            continue
        keys.append(clip.key)
        captions.append(clip.caption)
        embeds.append(clip_embedding(model, clip.video[None]).cpu())  # (1, d_s)
    if len(keys) < 2:
        raise ValueError(f"retrieval needs at least 2 captioned clips in {split_dir}, got {len(keys)}")
    video = torch.cat(embeds)  # (N, d_s)
    text = text_embeddings(model, captions).cpu()  # (N, d_s)
    similarity = text @ video.t()  # (N_text, N_video)
    n = len(keys)
    used = sorted({k for k in ks if k <= n})
    duplicates = {c: m for c, m in Counter(captions).items() if m > 1}
    return {
        "task": "retrieval",
        "num_clips": n,
        "skipped": {**reader.stats.as_dict()["skipped_keys"], **{k: "no caption" for k in uncaptioned}},
        "duplicate_captions": len(duplicates),
        "ks": used,
        "ks_skipped": sorted({k for k in ks if k > n}),
        "text_to_video": {f"R@{k}": recall_at_k(similarity, k) for k in used},
        "video_to_text": {f"R@{k}": recall_at_k(similarity.t(), k) for k in used},
        "chance": {f"R@{k}": k / n for k in used},
        "keys": keys,
    }


__all__ = ["evaluate_retrieval"]

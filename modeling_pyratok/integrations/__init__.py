"""Adapters that put PyraTok inside other people's token-based generators (issue 21 §4).

Every consumer below expects one id grid or sequence from one codebook; PyraTok gives one id tensor per pyramid
level. The adapters re-lay the levels exactly (`tokens_pyratok.PyraTokTokenLayout`, mostly `order="planes"`: every
level space-to-depth onto the coarsest grid) and, where the consumer wants a square, zero-pad the grid; decoding
drops the pads. PyraTok stays frozen; only the consumer's prior trains.

- `as_muse_maskgit_vae(vae, image_size)`: muse-maskgit-pytorch `MaskGit`; a `VQGanVAE` subclass, one square grid.
- `as_phenaki_cvivit(vae, image_size)`: phenaki-pytorch `Phenaki`; a `CViViT` subclass, ids `(B, T'·P, h, w)`,
  frame-major, so a primed clip continues.
- `as_open_magvit2_first_stage(vae, image_size, factorized_bits)`: open-magvit2 `Net2NetTransformer`; `encode`,
  `decode`, `quantize.get_codebook_entry`, one square grid, Open-MAGVIT2's factorised `(pre, post)` ids.
- `as_magvit2_video_tokenizer(vae, image_size)`: code written for magvit2-pytorch's `VideoTokenizer`; `tokenize`,
  `decode_from_code_indices`, `quantizers`, `fmap_size`, `time_downsample_factor`, `time_padding`.

The consumer packages are optional (`pip install pyratok[consumers]`); each factory imports its consumer only when
called. Install lines (open-magvit2's own pins would downgrade transformers and break lightning, so `--no-deps`):

    pip install muse-maskgit-pytorch phenaki-pytorch magvit2-pytorch
    pip install --no-deps open-magvit2==1.1 && pip install omegaconf "lightning>=2.6,<2.7"

Prompts: consumers never pass text to their tokenizer, so by default ids come from PyraTok's null-text path. With
captions, `adapter.set_prompts(captions)` (or `with adapter.using_prompts(captions): ...`) makes the next encodes use
the language-aligned path; `MaskGit` / `Phenaki` hold the adapter itself (`copy_for_eval` returns it), so set the
prompts on the object you passed (or on `maskgit.vae` / `phenaki.cvivit`).

Pixel ranges: muse, Phenaki and magvit2-pytorch feed `ToTensor()` pixels in [0, 1], Open-MAGVIT2 [-1, 1]; each
adapter maps its consumer's range (`pixel_range=`) to PyraTok's [-1, 1] and back.

Offline notes:
- `MaskGitTransformer(...)` and `Phenaki(...)` read a T5 config at construction (`T5Config.from_pretrained(
  "google/t5-v1_1-base")`, a Hub download), even with `text_embed_dim` given. Seed the cache first, and pass
  `text_embeds=` to training (generation with `texts=` loads the T5 model itself):

      from transformers import T5Config
      import muse_maskgit_pytorch.t5, phenaki_pytorch.t5
      muse_maskgit_pytorch.t5.T5_CONFIGS["google/t5-v1_1-base"] = {"config": T5Config(d_model=768)}
      phenaki_pytorch.t5.T5_CONFIGS["google/t5-v1_1-base"] = {"config": T5Config(d_model=768)}

- magvit2-pytorch's `VideoTokenizer(perceptual_loss_weight=0.1)` (the default) downloads VGG16 weights.
- open-magvit2's pinned requirements downgrade transformers to 4.37.2: install it `--no-deps` (it never imports
  transformers) with omegaconf and lightning 2.6.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch.nn as nn

from .adapter_base import PyraTokAdapterMixin
from .magvit2_adapter import PyraTokLFQCodes, PyraTokMagvit2VideoTokenizer
from .open_magvit2_adapter import PyraTokOpenMagvit2FirstStage, open_magvit2_first_stage_from_pretrained

if TYPE_CHECKING:
    from .muse_maskgit_adapter import PyraTokMuseVQGanVAE
    from .phenaki_adapter import PyraTokPhenakiCViViT


def _import_consumer(module: str, pip_name: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"this adapter needs {pip_name}: `pip install {pip_name}` (or `pip install pyratok[consumers]`)"
        ) from err


def as_muse_maskgit_vae(
    vae: nn.Module, image_size: int, pixel_range: tuple[float, float] = (0.0, 1.0)
) -> PyraTokMuseVQGanVAE:
    """PyraTok as muse-maskgit-pytorch's `VQGanVAE`, for `MaskGit(image_size=image_size, vae=..., transformer=...)`.

    The `MaskGitTransformer` needs `num_tokens=adapter.codebook_size` (2^16) and
    `seq_len=adapter.get_encoded_fmap_size(image_size) ** 2`.
    """
    _import_consumer("muse_maskgit_pytorch", "muse-maskgit-pytorch")
    from .muse_maskgit_adapter import PyraTokMuseVQGanVAE

    return PyraTokMuseVQGanVAE(vae, image_size, pixel_range)


def as_phenaki_cvivit(
    vae: nn.Module, image_size: int | tuple[int, int], pixel_range: tuple[float, float] = (0.0, 1.0)
) -> PyraTokPhenakiCViViT:
    """PyraTok as phenaki-pytorch's `CViViT`, for `Phenaki(cvivit=..., maskgit=MaskGit(...))`.

    The Phenaki `MaskGit` needs `num_tokens=adapter.codebook_size` (2^16) and
    `max_seq_len >= adapter.num_tokens_per_frames(longest clip's frames)`.
    """
    _import_consumer("phenaki_pytorch", "phenaki-pytorch")
    from .phenaki_adapter import PyraTokPhenakiCViViT

    return PyraTokPhenakiCViViT(vae, image_size, pixel_range)


def as_open_magvit2_first_stage(
    vae: nn.Module,
    image_size: int | tuple[int, int],
    factorized_bits: Sequence[int] = (8, 8),
    pixel_range: tuple[float, float] = (-1.0, 1.0),
) -> PyraTokOpenMagvit2FirstStage:
    """PyraTok as the first stage of open-magvit2's `Net2NetTransformer` (`token_factorization=True`).

    Size its GPT with `block_size=adapter.grid_size ** 2` and `factorized_bits=list(factorized_bits)`; sample with
    `sample_classconditional(..., dim_z=adapter.embed_dim, h=adapter.grid_size, w=adapter.grid_size,
    cfg_scale=[c, c])` (upstream's cache sizing needs `c > 1`). Assign it: `model.first_stage_model = adapter`.
    """
    return PyraTokOpenMagvit2FirstStage(vae, image_size, factorized_bits, pixel_range)


def as_magvit2_video_tokenizer(
    vae: nn.Module, image_size: int, pixel_range: tuple[float, float] = (0.0, 1.0)
) -> PyraTokMagvit2VideoTokenizer:
    """PyraTok with magvit2-pytorch `VideoTokenizer`'s token calls (no magvit2-pytorch install needed)."""
    return PyraTokMagvit2VideoTokenizer(vae, image_size, pixel_range)


__all__ = [
    "PyraTokAdapterMixin",
    "PyraTokLFQCodes",
    "PyraTokMagvit2VideoTokenizer",
    "PyraTokOpenMagvit2FirstStage",
    "as_magvit2_video_tokenizer",
    "as_muse_maskgit_vae",
    "as_open_magvit2_first_stage",
    "as_phenaki_cvivit",
    "open_magvit2_first_stage_from_pretrained",
]

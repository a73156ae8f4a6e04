"""PyraTok as the first stage of Open-MAGVIT2's autoregressive prior (`Net2NetTransformer`, PyPI `open-magvit2`,
= https://github.com/TencentARC/SEED-Voken `src/Open_MAGVIT2`, Apache-2.0).

`Net2NetTransformer` with `token_factorization=True` calls its first stage as
`quant, _, (pre, post), _ = encode(x)`, then `quantize.get_codebook_entry(index, bhwc, order)` for `"pre"` and
`"post"` and `decode(concat(quant_pre, quant_post))`. Its GPT needs a square token grid (`block_size = s²`, 2-D RoPE),
so an image is the `"planes"` layout zero-padded to `s x s`. A 16-bit id is split `factorized_bits = (k, 16 - k)`
the Open-MAGVIT2 way: channels `[:k]` and `[k:]` of the ±1 code (channel 0 = PyraTok's most significant bit), each
group read least significant first (`tokens_pyratok.ids_to_factorized`). The released Open-MAGVIT2 priors use 18-bit
codes (`[6, 12]`, `[9, 9]`); on PyraTok's 16 bits the prior's `pre_emb` / `post_emb` / heads are sized `[8, 8]` or
`[6, 10]`, i.e. re-initialised.

No open-magvit2 import is needed here. Install open-magvit2 with `pip install --no-deps open-magvit2 omegaconf
"lightning>=2.6,<2.7"`: its pinned dependencies downgrade transformers (4.37.2) and huggingface_hub, and its pinned
lightning 2.2 no longer imports with current setuptools. Its default `permuter_config` target
(`taming.modules.transformer.permuter.Identity`) does not import from the wheel: pass
`{"target": "open_magvit2.taming.modules.transformer.permuter.Identity"}`.

Two ways to plug it in: `model.first_stage_model = as_open_magvit2_first_stage(vae, 256)` after building the
`Net2NetTransformer` (any small first stage in its config), or name
`modeling_pyratok.integrations.open_magvit2_adapter.open_magvit2_first_stage_from_pretrained` as the config's
`first_stage_config.target` with `params: {pretrained_model_name_or_path: ..., image_size: ...}`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from ..tokens_pyratok import bits_to_ids, factorized_to_ids, ids_to_bits, ids_to_factorized
from .adapter_base import PyraTokAdapterMixin, check_size

ORDERS = ("pre", "post")


class PyraTokFactorizedQuantize(nn.Module):
    """`first_stage_model.quantize`: Open-MAGVIT2's `LFQ.get_codebook_entry` for factorised ids (no parameters)."""

    def __init__(self, factorized_bits: tuple[int, int]):
        super().__init__()
        self.factorized_bits = factorized_bits

    def get_codebook_entry(self, index: torch.Tensor, bhwc: Sequence[int], order: str) -> torch.Tensor:
        """Group ids `(B, h·w)` → ±1 codes `(B, c, h, w)` of that group, bit `i` of the id on channel `i`.

        Args:
            index: `pre` ids in `[0, 2**k)` or `post` ids in `[0, 2**(d - k))`, `(B, h·w)`.
            bhwc: `(B, h, w, c)` with `c` the group's width.
            order: `"pre"` or `"post"`.
        """
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        width = self.factorized_bits[ORDERS.index(order)]
        b, h, w, c = bhwc
        if c != width or tuple(index.shape) not in ((b, h * w), (b * h * w,)):
            raise ValueError(
                f"{order}: expected index (B, h·w) = ({b}, {h * w}) and c = {width}, got {tuple(index.shape)}, c = {c}"
            )
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= 2**width):
            raise ValueError(f"{order} ids must lie in [0, {2**width}), got [{int(index.min())}, {int(index.max())}]")
        bits = (index.reshape(b, h, w, 1).long() >> torch.arange(width, device=index.device)) & 1  # LSB first
        return (bits * 2.0 - 1.0).permute(0, 3, 1, 2)


class PyraTokOpenMagvit2FirstStage(PyraTokAdapterMixin, nn.Module):
    """A frozen PyraTok behind the first-stage calls of Open-MAGVIT2's `Net2NetTransformer`.

    Args:
        vae: an `AutoencoderPyraTok` or `PyraTokModel` (kept frozen, in eval mode).
        image_size: an int or `(H, W)`, multiples of the model's `spatial_multiple`; the id grid is square anyway.
        factorized_bits: `(k, d - k)`, the GPT's `factorized_bits`; they must sum to the codebook's `d` bits.
        pixel_range: Open-MAGVIT2 feeds images in [-1, 1] (the default).
    """

    def __init__(
        self,
        vae: nn.Module,
        image_size: int | tuple[int, int],
        factorized_bits: Sequence[int] = (8, 8),
        pixel_range: tuple[float, float] = (-1.0, 1.0),
    ):
        super().__init__()
        self._setup_pyratok(vae, pixel_range)
        self.image_size = check_size(image_size, "image_size")
        self.layout = vae.token_layout(1, *self.image_size, order="planes", pad_to_square=True, is_image=True)
        bits = tuple(factorized_bits) if isinstance(factorized_bits, Sequence) else ()
        if len(bits) != 2 or any(type(b) is not int or b < 1 for b in bits) or sum(bits) != self.layout.codebook_dim:
            raise ValueError(
                f"factorized_bits must be two positive ints summing to codebook_dim={self.layout.codebook_dim}, "
                f"got {factorized_bits!r}"
            )
        self.factorized_bits = bits
        self.quantize = PyraTokFactorizedQuantize(bits)

    @property
    def grid_size(self) -> int:
        """Side `s` of the square id grid: the GPT's `block_size` is `s²`, sampling's `h = w = s`."""
        return self.layout.square_side

    @property
    def embed_dim(self) -> int:
        """Channels of `quant` (`dim_z` for `sample_classconditional`): the codebook's bits."""
        return self.layout.codebook_dim

    def encode_to_ids(self, x: torch.Tensor) -> torch.Tensor:
        """Images `(B, 3, H, W)` in `pixel_range` → ids `(B, s, s)` int64 (pads 0)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, *self.image_size):
            raise ValueError(f"x must be (B, 3, {self.image_size[0]}, {self.image_size[1]}), got {tuple(x.shape)}")
        seq, _ = self.encode_sequence(x, order="planes", pad_to_square=True)
        return seq.view(seq.shape[0], self.grid_size, self.grid_size)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor], None]:
        """Images → `(quant (B, d, s, s) ±1, loss 0, (pre, post), None)` as Open-MAGVIT2's first stage returns them.

        `pre` / `post` are flat over `B·s·s` (as its `LFQ` returns them; `Net2NetTransformer.encode_to_z` reshapes).
        """
        ids = self.encode_to_ids(x)
        pre, post = ids_to_factorized(ids, self.factorized_bits)
        quant = ids_to_bits(ids, self.layout.codebook_dim, dim=1)
        return quant, torch.zeros((), device=ids.device), (pre.flatten(), post.flatten()), None

    def decode_from_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids `(B, s, s)` or `(B, s²)` → images `(B, 3, H, W)` in `pixel_range` (pad positions ignored)."""
        if not isinstance(ids, torch.Tensor) or ids.ndim not in (2, 3):
            raise ValueError(f"ids must be (B, s, s) or (B, s²), got {getattr(ids, 'shape', type(ids))}")
        return self.decode_sequence(ids.reshape(ids.shape[0], -1), self.layout)

    def decode_from_factorized(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        """`(pre, post)` group ids `(B, s²)` → images (the inverse of `encode`'s split)."""
        return self.decode_from_ids(factorized_to_ids(pre, post, self.factorized_bits))

    def decode(self, quant: torch.Tensor) -> torch.Tensor:
        """±1 codes `(B, d, s, s)` (`encode`'s `quant`, or `get_codebook_entry`'s pre and post concatenated on
        channels) → images `(B, 3, H, W)` in `pixel_range`."""
        if quant.ndim != 4 or quant.shape[1] != self.layout.codebook_dim:
            raise ValueError(f"quant must be (B, {self.layout.codebook_dim}, s, s), got {tuple(quant.shape)}")
        return self.decode_from_ids(bits_to_ids(quant, dim=1))


def open_magvit2_first_stage_from_pretrained(
    pretrained_model_name_or_path: str | os.PathLike,
    image_size: int | Sequence[int],
    factorized_bits: Sequence[int] = (8, 8),
    subfolder: str | None = None,
    pixel_range: Sequence[float] = (-1.0, 1.0),
    **from_pretrained_kwargs: Any,
) -> PyraTokOpenMagvit2FirstStage:
    """Load an `AutoencoderPyraTok` folder or Hub id and wrap it: usable as an Open-MAGVIT2 config `target`."""
    from ..autoencoder_pyratok import AutoencoderPyraTok

    vae = AutoencoderPyraTok.from_pretrained(
        pretrained_model_name_or_path, subfolder=subfolder, **from_pretrained_kwargs
    )
    size = image_size if type(image_size) is int else tuple(image_size)
    return PyraTokOpenMagvit2FirstStage(vae, size, tuple(factorized_bits), tuple(pixel_range))


__all__ = ["PyraTokFactorizedQuantize", "PyraTokOpenMagvit2FirstStage", "open_magvit2_first_stage_from_pretrained"]

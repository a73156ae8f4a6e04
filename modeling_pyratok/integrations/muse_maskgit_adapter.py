"""PyraTok as the `VQGanVAE` of muse-maskgit-pytorch's `MaskGit` (https://github.com/lucidrains/muse-maskgit-pytorch).

`MaskGit(vae=...)` is `@beartype`-checked against `VQGanVAE`, so the adapter subclasses it (without running its
`__init__`, which would build a VQGAN of its own). An image `(B, 3, S, S)` becomes one square id grid: every PyraTok
level space-to-depth onto the coarsest grid (`order="planes"`), the sequence zero-padded to `s x s` (85 → 10 x 10 for
a 64² image on the 8x backbones; 1360 → 37 x 37 for 256²). `MaskGit` generates the pads too; decoding ignores them.

Import this module only with muse-maskgit-pytorch installed; `modeling_pyratok.integrations.as_muse_maskgit_vae`
imports it lazily.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from muse_maskgit_pytorch import VQGanVAE

from ..tokens_pyratok import bits_to_ids, ids_to_bits
from .adapter_base import PyraTokAdapterMixin, check_size


class PyraTokMuseVQGanVAE(PyraTokAdapterMixin, VQGanVAE):
    """A frozen PyraTok behind the `VQGanVAE` calls `MaskGit` makes.

    Args:
        vae: an `AutoencoderPyraTok` or `PyraTokModel` (kept frozen, in eval mode).
        image_size: the `MaskGit`'s square `image_size` (a multiple of the model's `spatial_multiple`).
        pixel_range: the consumer's pixel range; muse trains on `ToTensor()` images in [0, 1] (the default).
    """

    def __init__(self, vae: nn.Module, image_size: int, pixel_range: tuple[float, float] = (0.0, 1.0)):
        nn.Module.__init__(self)  # not VQGanVAE.__init__: PyraTok is the network
        self._setup_pyratok(vae, pixel_range)
        if type(image_size) is not int:
            raise ValueError(f"image_size must be an int (MaskGit images are square), got {image_size!r}")
        check_size(image_size, "image_size")
        self.image_size = image_size
        self.layout = vae.token_layout(1, image_size, image_size, order="planes", pad_to_square=True, is_image=True)
        self.channels = 3
        self.lookup_free_quantization = True
        self.use_vgg_and_gan = False  # read by the inherited copy / state-dict helpers

    @property
    def codebook_dim(self) -> int:
        return self.layout.codebook_dim

    def get_encoded_fmap_size(self, image_size: int) -> int:
        """Side `s` of the square id grid (`MaskGit.generate` samples `s * s` ids)."""
        if image_size != self.image_size:
            raise ValueError(f"this adapter was built for image_size={self.image_size}, got {image_size}")
        return self.layout.square_side

    def copy_for_eval(self) -> PyraTokMuseVQGanVAE:
        """The adapter itself in eval mode: the tokenizer is frozen, so `MaskGit` needs no private copy (and prompts
        set on this object reach the `MaskGit` that holds it)."""
        return self.eval()

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images `(B, 3, S, S)` in `pixel_range` → `(fmap, ids, loss)` as `VQGanVAE.encode` returns them.

        Returns:
            `fmap (B, codebook_dim, s, s)` the ±1 codes of the ids (channel 0 = most significant bit), `ids (B, s, s)`
            int64 in `[0, codebook_size)` (pads are 0), and a zero loss (PyraTok is not trained here).
        """
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, self.image_size, self.image_size):
            raise ValueError(f"images must be (B, 3, {self.image_size}, {self.image_size}), got {tuple(images.shape)}")
        seq, _ = self.encode_sequence(images, order="planes", pad_to_square=True)
        side = self.layout.square_side
        ids = seq.view(seq.shape[0], side, side)
        return ids_to_bits(ids, self.codebook_dim, dim=1), ids, torch.zeros((), device=ids.device)

    def decode_from_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids `(B, s, s)` or `(B, s * s)` → images `(B, 3, S, S)` in `pixel_range` (pad positions are ignored)."""
        if not isinstance(ids, torch.Tensor) or ids.ndim not in (2, 3):
            raise ValueError(f"ids must be (B, s, s) or (B, s * s), got {getattr(ids, 'shape', type(ids))}")
        return self.decode_sequence(ids.reshape(ids.shape[0], -1), self.layout)

    def decode(self, fmap: torch.Tensor) -> torch.Tensor:
        """±1 codes `(B, codebook_dim, s, s)` (as `encode` returns) → images `(B, 3, S, S)`."""
        return self.decode_from_ids(bits_to_ids(fmap, dim=1))

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError(
            "PyraTokMuseVQGanVAE only tokenizes for MaskGit; PyraTok is trained with `pyratok train`, "
            "not as a VQGanVAE"
        )


__all__ = ["PyraTokMuseVQGanVAE"]

"""What every consumer adapter shares: the wrapped PyraTok, the prompt hook and the pixel-range mapping.

No consumer package is imported here, so this module (and the package `__init__`) load without any of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn

from ..tokens_pyratok import PyraTokTokenLayout

PixelRange = tuple[float, float]
Prompts = str | Sequence[str | None] | None


def check_pyratok(vae: Any) -> nn.Module:
    """The adapters take `AutoencoderPyraTok` or `PyraTokModel` (both have the token-sequence API)."""
    needed = ("encode_to_sequence", "decode_from_sequence", "token_layout", "codebook_size")
    if not isinstance(vae, nn.Module) or not all(hasattr(vae, name) for name in needed):
        raise ValueError(f"vae must be an AutoencoderPyraTok or a PyraTokModel, got {type(vae).__name__}")
    return vae


def check_pixel_range(pixel_range: Any) -> PixelRange:
    ok = isinstance(pixel_range, Sequence) and len(pixel_range) == 2
    ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in pixel_range)
    if not ok or not pixel_range[0] < pixel_range[1]:
        raise ValueError(f"pixel_range must be two numbers (low, high) with low < high, got {pixel_range!r}")
    return float(pixel_range[0]), float(pixel_range[1])


def check_size(size: Any, name: str) -> tuple[int, int]:
    """An int (square) or `(H, W)` of positive ints → `(H, W)`."""
    pair = (size, size) if type(size) is int else tuple(size) if isinstance(size, Sequence) else ()
    if len(pair) != 2 or any(type(v) is not int or v < 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair (H, W) of them, got {size!r}")
    return pair


class PyraTokAdapterMixin:
    """Mixed into each adapter (before its `nn.Module` base): holds the frozen PyraTok and the caller's prompts.

    The wrapped PyraTok stays in eval mode whatever `train()` the consumer calls (it is a frozen tokenizer; training
    mode would switch on its text dropout). Consumers never pass text to their tokenizer, so ids come from PyraTok's
    null-text path unless prompts are set with `set_prompts` / `using_prompts`.
    """

    pyratok: nn.Module
    pixel_range: PixelRange
    _prompts: Prompts

    def _setup_pyratok(self, vae: Any, pixel_range: Any) -> None:
        self.pyratok = check_pyratok(vae).eval()
        self.pixel_range = check_pixel_range(pixel_range)
        self._prompts = None

    # ---- prompts ----------------------------------------------------------------------------------------------------
    def set_prompts(self, prompts: Prompts) -> None:
        """Captions for the next encodes: one `str` for every item, a list with one `str | None` per item, or None.

        With prompts, PyraTok quantizes with its language-aligned path (the consumer's batch must match the list);
        `None` (the default) is the null-text path. Note: consumers that copy their tokenizer (`copy_for_eval`) hold
        this same adapter object, so setting prompts here reaches them.
        """
        if prompts is not None and not isinstance(prompts, str):
            if not isinstance(prompts, Sequence) or not all(p is None or isinstance(p, str) for p in prompts):
                raise ValueError(f"prompts must be a str, a sequence of str | None, or None; got {prompts!r}")
            prompts = list(prompts)
        self._prompts = prompts

    @property
    def prompts(self) -> Prompts:
        return self._prompts

    @contextmanager
    def using_prompts(self, prompts: Prompts) -> Iterator[None]:
        """`with adapter.using_prompts(captions): consumer_step(...)`: prompts for the block, then restored."""
        before = self._prompts
        self.set_prompts(prompts)
        try:
            yield
        finally:
            self._prompts = before

    # ---- frozen tokenizer -------------------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        self.pyratok.eval()
        return self

    @property
    def codebook_size(self) -> int:
        """`2**codebook_dim` (65,536 for every preset): the consumer's token vocabulary without its mask id."""
        return self.pyratok.codebook_size

    # ---- pixels and sequences ---------------------------------------------------------------------------------------
    def to_pyratok_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Consumer pixels in `pixel_range` → PyraTok's [-1, 1]."""
        low, high = self.pixel_range
        if (low, high) == (-1.0, 1.0):
            return x
        return (x - low) * (2.0 / (high - low)) - 1.0

    def from_pyratok_pixels(self, y: torch.Tensor) -> torch.Tensor:
        """PyraTok's [-1, 1] → consumer pixels in `pixel_range`."""
        low, high = self.pixel_range
        if (low, high) == (-1.0, 1.0):
            return y
        return (y + 1.0) * ((high - low) / 2.0) + low

    def encode_sequence(
        self, x: torch.Tensor, order: str, pad_to_square: bool = False
    ) -> tuple[torch.Tensor, PyraTokTokenLayout]:
        """Consumer pixels → `(seq (B, N) int64, layout)`, with the prompts set on this adapter."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(f"expected float pixels in {self.pixel_range}, got {getattr(x, 'dtype', type(x))}")
        return self.pyratok.encode_to_sequence(
            self.to_pyratok_pixels(x), text=self._prompts, order=order, pad_to_square=pad_to_square
        )

    def decode_sequence(self, seq: torch.Tensor, layout: PyraTokTokenLayout) -> torch.Tensor:
        """`(B, layout.seq_len)` ids → consumer pixels (PyraTok's decode, mapped to `pixel_range`)."""
        return self.from_pyratok_pixels(self.pyratok.decode_from_sequence(seq, layout))


__all__ = ["PixelRange", "Prompts", "PyraTokAdapterMixin", "check_pixel_range", "check_pyratok", "check_size"]

"""PyraTok behind the calls code written against magvit2-pytorch's `VideoTokenizer` makes
(https://github.com/lucidrains/magvit2-pytorch, MIT): `tokenize`, `decode_from_code_indices`,
`quantizers.codebook_size / codebook_dim / indices_to_codes`, `fmap_size`, `time_downsample_factor`, `time_padding`.

`VideoTokenizer.tokenize` returns one square grid per latent frame, `(B, T', fmap, fmap)`. Here each latent frame's
ids in the `"planes"` layout (`P·h·w` of them: 85 for a 64² frame on the 8x backbones, 1360 for 256²) are zero-padded
to `fmap_size²` (`fmap_size = ceil(sqrt(P·h·w))`: 10, 37); decoding ignores the pads. What matches `VideoTokenizer`
as is: 2^16 codes, channel 0 = most significant bit in `indices_to_codes`, int64 ids, the causal first frame
(`T = 4k + 1`, `T' = (T - 1)/4 + 1`; images give `T' = 1`). The facade is a plain `nn.Module` (nothing type-checks a
`VideoTokenizer`), so magvit2-pytorch need not be installed. Note for the real `VideoTokenizer`: its default
`perceptual_loss_weight=0.1` downloads VGG16 weights at construction; offline, pass `perceptual_loss_weight=0` or
`vgg=`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..tokens_pyratok import PyraTokTokenLayout, ids_to_bits
from .adapter_base import PyraTokAdapterMixin


class PyraTokLFQCodes(nn.Module):
    """`tokenizer.quantizers`: the code side of vector-quantize-pytorch's `LFQ` for PyraTok's codebook."""

    def __init__(self, codebook_dim: int):
        super().__init__()
        self.codebook_dim = codebook_dim
        self.codebook_size = 2**codebook_dim
        self.num_codebooks = 1

    def indices_to_codes(self, indices: torch.Tensor, project_out: bool = True) -> torch.Tensor:
        """Ids → ±1 codes, channel 0 = most significant bit: `(B, d, ...)` for grids `(B, T', h, w)` / `(B, h, w)`,
        `(..., d)` for flat ids, as `LFQ.indices_to_codes` lays them out. PyraTok's codes have no output projection,
        so `project_out` changes nothing (it is accepted for call compatibility)."""
        if not isinstance(indices, torch.Tensor) or indices.dtype.is_floating_point or indices.ndim == 0:
            raise ValueError(f"indices must be an integer tensor, got {getattr(indices, 'dtype', type(indices))}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"indices must lie in [0, {self.codebook_size}), got [{int(indices.min())}, {int(indices.max())}]"
            )
        return ids_to_bits(indices, self.codebook_dim, dim=1 if indices.ndim >= 3 else -1)


class PyraTokMagvit2VideoTokenizer(PyraTokAdapterMixin, nn.Module):
    """A frozen PyraTok with magvit2-pytorch `VideoTokenizer`'s token calls.

    Args:
        vae: an `AutoencoderPyraTok` or `PyraTokModel` (kept frozen, in eval mode).
        image_size: the square frame side (`VideoTokenizer` is square), a multiple of the model's `spatial_multiple`.
        pixel_range: magvit2-pytorch's datasets give [0, 1] (the default).
    """

    def __init__(self, vae: nn.Module, image_size: int, pixel_range: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        self._setup_pyratok(vae, pixel_range)
        if type(image_size) is not int or image_size < 1:
            raise ValueError(
                f"image_size must be a positive int (VideoTokenizer frames are square), got {image_size!r}"
            )
        self.image_size = image_size
        self.channels = 3
        frame = vae.token_layout(1, image_size, image_size, order="planes")
        self.tokens_per_frame = frame.num_tokens
        self.fmap_size = frame.square_side
        self.time_downsample_factor = vae.core.backbone.temporal_chunk
        self.time_padding = self.time_downsample_factor - 1
        self.quantizers = PyraTokLFQCodes(frame.codebook_dim)

    def layout(self, latent_frames: int) -> PyraTokTokenLayout:
        """The planes layout of a clip of `latent_frames` latent frames at `image_size`."""
        frames = (latent_frames - 1) * self.time_downsample_factor + 1
        return self.pyratok.token_layout(frames, self.image_size, self.image_size, order="planes")

    @torch.no_grad()
    def tokenize(self, video: torch.Tensor) -> torch.Tensor:
        """Video `(B, 3, T, S, S)` (`T = 4k + 1`) or images `(B, 3, S, S)` in `pixel_range` → ids
        `(B, T', fmap_size, fmap_size)` int64 (images: `T' = 1`), each frame's pads 0."""
        if video.ndim not in (4, 5) or tuple(video.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"video must be (B, 3, T, {self.image_size}, {self.image_size}) or (B, 3, {self.image_size}, "
                f"{self.image_size}), got {tuple(video.shape)}"
            )
        video = video.unsqueeze(2) if video.ndim == 4 else video
        seq, layout = self.encode_sequence(video, order="planes")
        frames = seq.view(seq.shape[0], layout.num_latent_frames, self.tokens_per_frame)  # planes: frames outermost
        frames = F.pad(frames, (0, self.fmap_size**2 - self.tokens_per_frame))
        return frames.view(seq.shape[0], layout.num_latent_frames, self.fmap_size, self.fmap_size)

    @torch.no_grad()
    def decode_from_code_indices(
        self, codes: torch.Tensor, cond: torch.Tensor | None = None, video_contains_first_frame: bool = True
    ) -> torch.Tensor:
        """Ids `(B, T', fmap_size, fmap_size)` or flat `(B, T'·fmap_size²)` → video `(B, 3, 4(T' - 1) + 1, S, S)`
        in `pixel_range` (5-D for `T' = 1` too, as `VideoTokenizer`). `cond` and headless clips are not supported."""
        if cond is not None or not video_contains_first_frame:
            raise ValueError(
                f"PyraTok decodes whole clips without conditioning: got cond={cond is not None}, "
                f"video_contains_first_frame={video_contains_first_frame}"
            )
        if not isinstance(codes, torch.Tensor) or codes.dtype not in (torch.long, torch.int32):
            raise ValueError(f"codes must be an int64 / int32 tensor, got {getattr(codes, 'dtype', type(codes))}")
        side2 = self.fmap_size**2
        if codes.ndim == 4 and tuple(codes.shape[2:]) == (self.fmap_size, self.fmap_size):
            frames = codes.reshape(codes.shape[0], codes.shape[1], side2)
        elif codes.ndim == 2 and codes.shape[1] and codes.shape[1] % side2 == 0:
            frames = codes.reshape(codes.shape[0], -1, side2)
        else:
            raise ValueError(
                f"codes must be (B, T', {self.fmap_size}, {self.fmap_size}) or (B, T'·{side2}), "
                f"got {tuple(codes.shape)}"
            )
        seq = frames[..., : self.tokens_per_frame].reshape(codes.shape[0], -1)
        return self.decode_sequence(seq, self.layout(frames.shape[1]))


__all__ = ["PyraTokLFQCodes", "PyraTokMagvit2VideoTokenizer"]

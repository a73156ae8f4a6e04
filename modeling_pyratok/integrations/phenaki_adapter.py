"""PyraTok as the `CViViT` of phenaki-pytorch's `Phenaki` (https://github.com/lucidrains/phenaki-pytorch).

`Phenaki(cvivit=...)` is `@beartype`-checked against `CViViT`, so the adapter subclasses it (without running its
`__init__`). A clip `(B, 3, T, H, W)`, `T = 4k + 1`, becomes one `(t, h, w)` id grid, the `"planes"` layout: every
PyraTok level space-to-depth onto the coarsest grid, so `t = T'·P` (`P = Σ (S/s_l)²` planes per latent frame, 85 for
strides 1, 2, 4, 8) and `(h, w) = (H, W) / (backbone factor · S)`. The grid is frame-major: the ids of a clip's first
latent frames are a prefix of its ids, so `Phenaki.sample(prime_frames=...)` continues a clip, and PyraTok's causal
decoder reproduces the prime frames from the prefix. To `Phenaki`, a "patch" is `(4 frames, backbone factor · S
pixels)` holding `P` tokens (`image_num_tokens = P·h·w`).

Import this module only with phenaki-pytorch installed; `modeling_pyratok.integrations.as_phenaki_cvivit` imports it
lazily.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from phenaki_pytorch import CViViT

from ..tokens_pyratok import PyraTokTokenLayout
from .adapter_base import PyraTokAdapterMixin, check_size


class PyraTokPhenakiCViViT(PyraTokAdapterMixin, CViViT):
    """A frozen PyraTok behind the `CViViT` calls `Phenaki` makes.

    Args:
        vae: an `AutoencoderPyraTok` or `PyraTokModel` (kept frozen, in eval mode).
        image_size: frame size, an int or `(H, W)`, multiples of the model's `spatial_multiple`.
        pixel_range: the consumer's pixel range; phenaki-pytorch's video datasets give [0, 1] (the default).
    """

    def __init__(
        self, vae: nn.Module, image_size: int | tuple[int, int], pixel_range: tuple[float, float] = (0.0, 1.0)
    ):
        nn.Module.__init__(self)  # not CViViT.__init__: PyraTok is the network
        self._setup_pyratok(vae, pixel_range)
        height, width = check_size(image_size, "image_size")
        frame = vae.token_layout(1, height, width, order="planes")  # one latent frame
        planes, grid_h, grid_w = frame.grid_shape
        self.image_size = (height, width)
        self.patch_size = (height // grid_h, width // grid_w)
        self.temporal_patch_size = vae.core.backbone.temporal_chunk
        self.num_planes = planes
        self.lookup_free_quantization = True
        self.use_vgg_and_gan = False  # read by the inherited copy / state-dict helpers

    # ---- token counts and shapes (read by Phenaki) ------------------------------------------------------------------
    @property
    def image_num_tokens(self) -> int:
        """Ids per latent frame: `P·h·w`."""
        grid_h, grid_w = self.patch_height_width
        return self.num_planes * grid_h * grid_w

    def get_video_patch_shape(self, num_frames: int, include_first_frame: bool = True) -> tuple[int, int, int]:
        """`(T'·P, h, w)`: the id grid of `num_frames` frames (without the first frame: `num_frames = 4k`)."""
        latent_frames, grid_h, grid_w = super().get_video_patch_shape(num_frames, include_first_frame)
        return (latent_frames * self.num_planes, grid_h, grid_w)

    def calculate_video_token_mask(self, videos: torch.Tensor, video_frame_mask: torch.Tensor) -> torch.Tensor:
        """Frame mask `(B, T)` (a prefix of valid frames, `4k + 1` of them) → id mask `(B, T'·P·h·w)`."""
        first, rest = video_frame_mask[:, :1], video_frame_mask[:, 1:]
        chunk = self.temporal_patch_size
        if rest.shape[1] % chunk or ((video_frame_mask.sum(-1) - 1) % chunk).any():
            raise ValueError(
                f"video_frame_mask {tuple(video_frame_mask.shape)} must cover 4k + 1 frames with 4k + 1 valid ones "
                f"(valid: {video_frame_mask.sum(-1).tolist()})"
            )
        latent_mask = torch.cat([first, rest.reshape(rest.shape[0], -1, chunk).any(-1)], dim=1)  # (B, T')
        return latent_mask.repeat_interleave(self.image_num_tokens, dim=1)

    def copy_for_eval(self) -> PyraTokPhenakiCViViT:
        """The adapter itself in eval mode: the tokenizer is frozen, so `Phenaki` needs no private copy (and prompts
        set on this object reach the `Phenaki` that holds it)."""
        return self.eval()

    # ---- ids ----------------------------------------------------------------------------------------------------
    def layout(self, num_frames: int) -> PyraTokTokenLayout:
        """The planes layout of a `num_frames`-frame clip at `image_size`."""
        return self.pyratok.token_layout(num_frames, *self.image_size, order="planes")

    def forward(
        self, video: torch.Tensor, return_only_codebook_ids: bool = False, return_recons_only: bool = False
    ) -> torch.Tensor:
        """Video `(B, 3, T, H, W)` (or images `(B, 3, H, W)`) in `pixel_range` → ids `(B, T'·P, h, w)` int64, or,
        with `return_recons_only`, the reconstruction (same shape and range as `video`).

        CViViT's training losses are not available: PyraTok is trained with `pyratok train`.
        """
        if not (return_only_codebook_ids or return_recons_only):
            raise NotImplementedError(
                "PyraTokPhenakiCViViT only tokenizes (return_only_codebook_ids=True) or reconstructs "
                "(return_recons_only=True); PyraTok is trained with `pyratok train`, not as a CViViT"
            )
        is_image = video.ndim == 4
        video = video.unsqueeze(2) if is_image else video
        if video.ndim != 5 or tuple(video.shape[-2:]) != self.image_size:
            raise ValueError(
                f"video must be (B, 3, T, {self.image_size[0]}, {self.image_size[1]}), got {tuple(video.shape)}"
            )
        seq, layout = self.encode_sequence(video, order="planes")
        if return_recons_only:
            recon = self.decode_sequence(seq, layout)
            return recon[:, :, 0] if is_image else recon
        return seq.view(seq.shape[0], *layout.grid_shape)

    def decode_from_codebook_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Ids `(B, T'·P·h·w)` or `(B, T'·P, h, w)` → video `(B, 3, 4(T' - 1) + 1, H, W)` in `pixel_range`."""
        if not isinstance(indices, torch.Tensor) or indices.ndim not in (2, 4):
            raise ValueError(f"indices must be (B, N) or (B, t, h, w), got {getattr(indices, 'shape', type(indices))}")
        seq = indices.reshape(indices.shape[0], -1)
        per_frame = self.image_num_tokens
        if seq.shape[1] == 0 or seq.shape[1] % per_frame:
            raise ValueError(
                f"got {seq.shape[1]} ids; a clip has a multiple of {per_frame} (ids per latent frame at "
                f"{self.image_size[0]}x{self.image_size[1]})"
            )
        latent_frames = seq.shape[1] // per_frame
        return self.decode_sequence(seq, self.layout((latent_frames - 1) * self.temporal_patch_size + 1))

    def frames_per_num_tokens(self, num_tokens: int) -> int:
        """Frames `4(T' - 1) + 1` of a clip of `num_tokens` ids."""
        if num_tokens <= 0 or num_tokens % self.image_num_tokens:
            raise ValueError(f"num_tokens={num_tokens} is not a positive multiple of {self.image_num_tokens}")
        return (num_tokens // self.image_num_tokens - 1) * self.temporal_patch_size + 1

    def decode(self, tokens: Any) -> torch.Tensor:
        raise NotImplementedError("PyraTok decodes ids: use decode_from_codebook_indices")

    def encode(self, tokens: Any) -> torch.Tensor:
        raise NotImplementedError("PyraTok encodes pixels: call the adapter with return_only_codebook_ids=True")


__all__ = ["PyraTokPhenakiCViViT"]

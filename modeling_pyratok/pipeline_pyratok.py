"""`PyraTokTextToVideoPipeline`: text → token prior → ids → `AutoencoderPyraTok` → video, as a diffusers pipeline.

    pipe = PyraTokTextToVideoPipeline.from_pretrained("path/to/pipeline")  # or .from_components(prior, vae)
    frames = pipe("a red circle moves left on a black background", num_frames=17, height=64, width=64,
                  guidance_scale=3.0, num_inference_steps=12, generator=torch.Generator().manual_seed(0)).frames

Components: `prior` (a `PyraTokMaskedPrior` or `PyraTokARPrior`, a transformers model), `vae` (the tokenizer's
diffusers face), `text_encoder` + `tokenizer` (the tokenizer's frozen text model, MiniLM for the shipped default;
the prior conditions on its last hidden states, exactly as the prior was trained). `save_pretrained` writes the
standard diffusers folder (`model_index.json` + one folder per component); `from_pretrained` reads it back offline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.video_processor import VideoProcessor

from .autoencoder_pyratok import AutoencoderPyraTok
from .text_encoder_pyratok import PyraTokTextEncoder
from .tokens_pyratok import PyraTokTokenLayout

OUTPUT_TYPES = ("np", "pt", "pil", "latent")


@dataclass
class PyraTokPipelineOutput(BaseOutput):
    """`frames`: `np.ndarray (B, T, H, W, 3)` in [0, 1] (`"np"`), `torch.Tensor (B, T, 3, H, W)` in [0, 1]
    (`"pt"`), a list of `T` PIL images per video (`"pil"`), or the id sequences `(B, N)` (`"latent"`)."""

    frames: np.ndarray | torch.Tensor | list[list[PIL.Image.Image]]


class PyraTokTextToVideoPipeline(DiffusionPipeline):
    """Text-to-video generation with a PyraTok token prior (see the module docstring).

    Args:
        prior: `PyraTokMaskedPrior` or `PyraTokARPrior`, trained on this tokenizer's ids (checked at construction).
        vae: `AutoencoderPyraTok`, the tokenizer that decodes the generated ids.
        text_encoder, tokenizer: the text model and its tokenizer (`transformers`), shared with the VAE's text path.
    """

    model_cpu_offload_seq = "text_encoder->prior->vae"

    def __init__(self, prior: torch.nn.Module, vae: AutoencoderPyraTok, text_encoder: torch.nn.Module, tokenizer: Any):
        super().__init__()
        prior.check_tokenizer(vae)
        self.register_modules(prior=prior, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)
        self.video_processor = VideoProcessor(vae_scale_factor=vae.config.scale_factor_spatial)
        # The VAE's text path and the prior read the same encoder: loaded once, owned by this pipeline.
        vae.core.set_text_encoder(self.text_encoder_wrapper)

    @classmethod
    def from_components(cls, prior: torch.nn.Module, vae: AutoencoderPyraTok) -> PyraTokTextToVideoPipeline:
        """A pipeline from a prior and its tokenizer; the text model is the one the tokenizer's config names."""
        config = vae.config
        encoder = PyraTokTextEncoder.from_name_or_path(config.text_encoder_name_or_path, config.text_max_length)
        return cls(prior=prior, vae=vae, text_encoder=encoder.model, tokenizer=encoder.tokenizer)

    @property
    def text_encoder_wrapper(self) -> PyraTokTextEncoder:
        return PyraTokTextEncoder(self.text_encoder, self.tokenizer, max_length=self.vae.config.text_max_length)

    @property
    def layout(self) -> PyraTokTokenLayout:
        """The token layout the prior generates (fixes frames and size)."""
        return self.prior.config.layout

    # ---- checks ---------------------------------------------------------------------------------------------------
    def check_inputs(
        self, prompt: Any, num_frames: int | None, height: int | None, width: int | None, output_type: str
    ) -> list[str]:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list | tuple) or not prompts:
            raise ValueError(f"prompt must be a str or a non-empty list of str, got {prompt!r}")
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"prompt[{i}] is {p!r}: every prompt must be a non-empty string")
        layout = self.layout
        frames_expected = self._layout_frames()
        height_expected, width_expected = layout.frame_size
        asked = {"num_frames": num_frames, "height": height, "width": width}
        expected = {"num_frames": frames_expected, "height": height_expected, "width": width_expected}
        bad = {k: v for k, v in asked.items() if v is not None and v != expected[k]}
        if bad:
            chunk = self.vae.core.backbone.temporal_chunk
            hint = ""
            if num_frames is not None and (type(num_frames) is not int or (num_frames - 1) % chunk):
                hint = f" (PyraTok clips have T = {chunk}k + 1 frames)"
            raise ValueError(
                f"this prior generates clips of num_frames={frames_expected}, height={height_expected}, "
                f"width={width_expected} (its token layout); got {bad}{hint}"
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r}; expected one of {OUTPUT_TYPES}")
        return list(prompts)

    def _layout_frames(self) -> int:
        """Pixel frames of the prior's layout: T' latent frames ↔ (T' - 1) * chunk + 1 frames."""
        chunk = self.vae.core.backbone.temporal_chunk
        return (self.layout.num_latent_frames - 1) * chunk + 1

    # ---- steps ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompt(self, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts → `(B, L, D)` text embeddings and `(B, L)` bool mask (the prior's conditioning)."""
        return self.text_encoder_wrapper(prompts, device)

    @torch.no_grad()
    def prime_ids(self, video: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Ids of a priming clip `(B, 3, T0, H, W)` in [-1, 1]: the first `(T0 - 1) / chunk + 1` latent frames of the
        generated sequence (frame-major, so they are a prefix), tokenised with the prompts as text."""
        if not isinstance(video, torch.Tensor) or video.ndim != 5:
            raise ValueError(f"video must be a (B, 3, T0, H, W) tensor, got {getattr(video, 'shape', type(video))}")
        if video.shape[0] != len(prompts):
            raise ValueError(f"video has {video.shape[0]} clips for {len(prompts)} prompts")
        frames = video.shape[2]
        if frames >= self._layout_frames():
            raise ValueError(
                f"the priming video has {frames} frames; it must be shorter than the generated {self._layout_frames()}"
            )
        if (video.shape[-2], video.shape[-1]) != tuple(self.layout.frame_size):
            raise ValueError(f"the priming video is {tuple(video.shape[-2:])}, the prior generates "
                             f"{tuple(self.layout.frame_size)}")
        seq, short = self.vae.encode_to_sequence(video.to(self.device), text=prompts, order=self.layout.order)
        keep = int((self.layout.frame_index() < short.num_latent_frames).sum())
        return seq[:, :keep]

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        guidance_scale: float = 3.0,
        num_inference_steps: int = 12,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        num_videos_per_prompt: int = 1,
        video: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback: Callable[[int, int], None] | None = None,
    ) -> PyraTokPipelineOutput | tuple:
        """Generate clips for `prompt`.

        Args:
            prompt: one prompt or a list (each non-empty).
            num_frames, height, width: must equal the prior's layout (None: the prior's).
            guidance_scale: classifier-free guidance (1 = none).
            num_inference_steps: parallel decoding steps (masked prior; the AR prior takes one step per token).
            temperature, top_k, top_p: sampling (top_k/top_p: AR prior only).
            num_videos_per_prompt: samples per prompt.
            video: optional priming clip `(B, 3, T0, H, W)` in [-1, 1] to continue (B = number of prompts).
            generator: a `torch.Generator` for reproducible samples.
            output_type: `"np"`, `"pt"`, `"pil"` or `"latent"` (the id sequences).
            callback: `callback(step, total)` after each prior step (progress bars).

        Returns:
            `PyraTokPipelineOutput(frames=...)` (or a 1-tuple with `return_dict=False`).
        """
        prompts = self.check_inputs(prompt, num_frames, height, width, output_type)
        if type(num_videos_per_prompt) is not int or num_videos_per_prompt < 1:
            raise ValueError(f"num_videos_per_prompt={num_videos_per_prompt!r} must be a positive int")
        device = self.device
        prefix = self.prime_ids(video, prompts) if video is not None else None
        prompts = [p for p in prompts for _ in range(num_videos_per_prompt)]
        if prefix is not None:
            prefix = prefix.repeat_interleave(num_videos_per_prompt, dim=0)
        embeds, mask = self.encode_prompt(prompts, device)
        options: dict[str, Any] = {"temperature": temperature}
        if self.prior.config.model_type == "pyratok_ar_prior":
            options.update(top_k=top_k, top_p=top_p)
        else:
            if top_k is not None or top_p is not None:
                raise ValueError("top_k / top_p apply to the autoregressive prior; this pipeline holds a masked prior")
            options["num_inference_steps"] = num_inference_steps
        ids = self.prior.generate(
            embeds, mask, guidance_scale=guidance_scale, generator=generator, prefix_ids=prefix, callback=callback,
            **options,
        )
        if output_type == "latent":
            frames: Any = ids
        else:
            clips = self.vae.decode_from_sequence(ids, self.layout).clamp(-1, 1)
            frames = self.video_processor.postprocess_video(clips, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return PyraTokPipelineOutput(frames=frames)


__all__ = ["PyraTokPipelineOutput", "PyraTokTextToVideoPipeline"]

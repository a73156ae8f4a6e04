"""Training objectives: PyraTok's full loss (DESIGN §4) and the plain KL-VAE loss that pretrains a small backbone.

An objective is one `nn.Module` holding the trainable model and the training-only heads, so `accelerate.prepare`
wraps everything that has gradients in one DDP/FSDP/DeepSpeed module. Frozen networks (LPIPS, the AR language model,
the drift reference) sit outside the module registry (`FrozenCompanionModule`): they follow `.to()` but never land in
a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from modeling_pyratok import PyraTokConfig, PyraTokModel
from modeling_pyratok.backbone_pyratok import PyraTokBackboneFeatures

from .config import TrainConfig
from .heads import PyraTokARHead, PyraTokDriftHead, build_language_model, build_reference_encoder
from .losses import ReconstructionLoss, mask_video


@dataclass
class ObjectiveOutput:
    """One training step's result.

    Args:
        loss: Weighted total (scalar) that is back-propagated.
        logs: Unweighted named terms (floats, detached) for logging, e.g. `recon/l1`, `codebook/entropy`, `ar`.
        reconstruction: `(B, 3, T, H, W)` in [-1, 1].
    """

    loss: torch.Tensor
    logs: dict[str, float]
    reconstruction: torch.Tensor


def _checkpointed(fn, enabled: bool, *args):
    # Wan's encoder and decoder keep a per-call causal cache that they clear at start: re-running the whole call in
    # backward is exact, which is why checkpointing wraps whole encode/decode calls rather than inner blocks.
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def enabled_loss_weights(config: TrainConfig, model_config: PyraTokConfig) -> dict[str, float]:
    """The top-level terms a `task: pyratok` run optimises, name -> λ: switched on in `config` and λ > 0.

    Names: `"recon"`, `"codebook"`, `"latent"`, `"ar"`, `"drift"`. [`PyraTokObjective`] builds and adds exactly these;
    the training model card lists them.
    """
    terms = {
        "recon": (config.use_recon_loss, model_config.recon_weight),
        "codebook": (config.use_codebook_loss, model_config.codebook_weight),
        "latent": (config.use_latent_loss, model_config.latent_loss_weight),
        "ar": (config.use_ar_loss, model_config.ar_weight),
        "drift": (config.use_drift_loss, model_config.drift_weight),
    }
    return {name: weight for name, (on, weight) in terms.items() if on and weight > 0}


def build_reconstruction_loss(config: TrainConfig) -> ReconstructionLoss:
    return ReconstructionLoss(
        l1_weight=config.recon_l1_weight,
        ssim_weight=config.recon_ssim_weight,
        lpips_weight=config.recon_lpips_weight,
        lpips_net=config.lpips_net,
        lpips_pretrained_backbone=config.lpips_pretrained_backbone,
        lpips_max_frames=config.lpips_max_frames,
        chroma_weight=config.recon_chroma_weight,
        salient_weight=config.recon_salient_weight,
    )


class PyraTokObjective(nn.Module):
    """PyraTok (LoRA + LaPQ) with every DESIGN §4 loss, each switchable and logged separately.

    total = λ_recon·(L1 + (1−SSIM) + LPIPS) + λ_codebook·quantizer + λ_latent·latent MSE + λ_AR·AR + λ_drift·drift

    Args:
        model: The `PyraTokModel` being trained (frozen backbone, trainable LoRA and LaPQ).
        config: The run's `TrainConfig` (switches, inner weights, heads).
    """

    def __init__(self, model: PyraTokModel, config: TrainConfig):
        super().__init__()
        self.model = model
        mc = model.config
        enabled = enabled_loss_weights(config, mc)
        self.use_recon = "recon" in enabled
        self.use_codebook = "codebook" in enabled
        self.use_latent = "latent" in enabled
        self.gradient_checkpointing = config.gradient_checkpointing
        self.mask_frame_ratio = mc.mask_frame_ratio
        self.mask_patch_size = config.mask_patch_size or mc.scale_factor_spatial
        # A submodule so it follows `.to(device)`; it holds LPIPS outside the registry (no state, no parameters).
        self.reconstruction_loss = build_reconstruction_loss(config) if self.use_recon else None
        self.ar_head = None
        if "ar" in enabled:
            self.ar_head = PyraTokARHead(
                _language_model(config),
                codebook_dim=mc.codebook_dim,
                text_embed_dim=mc.text_embed_dim,
                num_levels=mc.num_levels,
                max_ar_tokens=config.max_ar_tokens,
                train_language_model=config.ar_train_language_model,
            )
        self.drift_head = None
        if "drift" in enabled:
            reference = _reference_encoder(config)
            channels = model.core.backbone.feature_channels()
            self.drift_feature_index = config.drift_feature_index
            self.drift_head = PyraTokDriftHead(
                reference, feature_channels=channels[config.drift_feature_index], temperature=config.drift_temperature
            )
        if mc.quantizer_mode != "pyramid":
            raise ValueError(f"training targets quantizer_mode='pyramid', got {mc.quantizer_mode!r}")

    def forward(
        self, pixel_values: torch.Tensor, captions: list[str | None] | None, generator: torch.Generator | None = None
    ) -> ObjectiveOutput:
        """
        Args:
            pixel_values: `(B, 3, T, H, W)` in [-1, 1] (validated like `PyraTokModel.forward`).
            captions: One prompt per clip (None entries train the no-text path), or None.
            generator: Randomness of the training mask (seeded per step by the trainer for exact resume).
        """
        core = self.model.core
        mc = self.model.config
        x, _ = core.check_video(pixel_values)
        masked = x
        if self.training and self.mask_frame_ratio > 0:
            masked, _ = mask_video(x, self.mask_frame_ratio, self.mask_patch_size, generator)
        embeds, text_mask, present = core.text_condition(x.shape[0], x.device, text=captions)

        def encode(clip):
            out = core.backbone.encode_features(clip)
            return (*out.features, out.moments)

        *features, moments = _checkpointed(encode, self.gradient_checkpointing, masked)
        feats = PyraTokBackboneFeatures(features=tuple(features), moments=moments)
        q = core.quantize_features(feats, embeds, text_mask, present, compute_losses=self.use_codebook)
        reconstruction = _checkpointed(core.decode_latent, self.gradient_checkpointing, q.latent)

        total = reconstruction.new_zeros((), dtype=torch.float32)
        logs: dict[str, float] = {}
        if self.use_recon:
            recon = self.reconstruction_loss(reconstruction.float(), x.float())
            total = total + mc.recon_weight * recon["total"]
            logs.update({f"recon/{k}": v.item() for k, v in recon.items()})
        if self.use_codebook:
            total = total + mc.codebook_weight * q.loss
            logs["codebook/total"] = q.loss.item()
            logs.update({f"codebook/{k}": v.item() for k, v in q.losses.items()})
        if self.use_latent:
            with torch.no_grad(), core.backbone.lora_disabled():
                target = core.backbone.encode_features(x).moments[:, : mc.z_dim]
            latent = F.mse_loss(q.latent.float(), target.float())
            total = total + mc.latent_loss_weight * latent
            logs["latent"] = latent.item()
        if self.ar_head is not None:
            ar = self.ar_head(q.codes, embeds, text_mask, present, generator=generator)
            total = total + mc.ar_weight * ar
            logs["ar"] = ar.item()
        if self.drift_head is not None:
            drift = self.drift_head(features[self.drift_feature_index], x, num_latent_frames=moments.shape[2])
            total = total + mc.drift_weight * drift
            logs["drift"] = drift.item()
        logs["loss"] = total.item()
        return ObjectiveOutput(loss=total, logs=logs, reconstruction=reconstruction.detach())


def _language_model(config: TrainConfig) -> nn.Module:
    if config.ar_language_model_config is not None:
        return build_language_model(config=config.ar_language_model_config)
    return build_language_model(name_or_path=config.ar_language_model)


def _reference_encoder(config: TrainConfig) -> nn.Module:
    if config.drift_reference_config is not None:
        return build_reference_encoder(config=config.drift_reference_config)
    return build_reference_encoder(name_or_path=config.drift_reference_encoder)


class BackboneVAEObjective(nn.Module):
    """Plain KL video VAE loss for pretraining the Wan backbone: L1 + (1−SSIM) + LPIPS + kl_weight·KL.

    Args:
        vae: A diffusers `AutoencoderKLWan` (all weights trainable).
        config: The run's `TrainConfig` (`recon_*` inner weights, `vae_kl_weight`, `vae_sample_posterior`,
            checkpointing).
    """

    def __init__(self, vae: nn.Module, config: TrainConfig):
        super().__init__()
        self.vae = vae
        self.kl_weight = config.vae_kl_weight
        self.sample_posterior = config.vae_sample_posterior
        self.gradient_checkpointing = config.gradient_checkpointing
        self.reconstruction_loss = build_reconstruction_loss(config)

    def forward(
        self, pixel_values: torch.Tensor, captions: list[str | None] | None = None, generator=None
    ) -> ObjectiveOutput:
        """`pixel_values (B, 3, T, H, W)` in [-1, 1]; captions are ignored (the VAE has no text path)."""
        if pixel_values.ndim != 5 or not torch.isfinite(pixel_values).all():
            raise ValueError(f"pixel_values must be a finite (B, 3, T, H, W) tensor, got {tuple(pixel_values.shape)}")
        moments = _checkpointed(
            lambda v: self.vae.encode(v).latent_dist.parameters, self.gradient_checkpointing, pixel_values
        )
        mean, logvar = moments.float().chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution clamp
        if self.sample_posterior:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z = mean + (0.5 * logvar).exp() * noise
        else:
            z = mean
        reconstruction = _checkpointed(lambda v: self.vae.decode(v).sample, self.gradient_checkpointing, z)
        recon = self.reconstruction_loss(reconstruction.float(), pixel_values.float())
        # KL(q(z|x) || N(0, I)) per latent element (a mean, so kl_weight does not depend on the clip size).
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()
        total = recon["total"] + self.kl_weight * kl
        logs = {f"recon/{k}": v.item() for k, v in recon.items()}
        logs.update({"kl": kl.item(), "loss": total.item()})
        return ObjectiveOutput(loss=total, logs=logs, reconstruction=reconstruction.detach())


__all__ = [
    "BackboneVAEObjective",
    "ObjectiveOutput",
    "PyraTokObjective",
    "build_reconstruction_loss",
    "enabled_loss_weights",
]

"""Model card for a checkpoint written by `training/train.py`: what was trained, on what, how, and how well."""

from __future__ import annotations

import json
import os

from huggingface_hub import ModelCard, ModelCardData

from modeling_pyratok import PyraTokConfig

from .config import TrainConfig
from .objective import enabled_loss_weights

TEMPLATE = """# PyraTok ({preset} preset, trained with `training/train.py`)

A language-aligned pyramidal video tokenizer (CVPR 2026, *PyraTok: Language-Aligned Pyramidal Tokenizer for Video
Understanding and Generation*), trained with the `pyratok` library.

- Backbone: Wan-architecture VAE, z_dim {z_dim}, {ct}x{cs}x{cs} compression, frozen; LoRA rank {lora_rank} on
  every encoder conv. Backbone weights: `{backbone}`.
- LaPQ: {levels} levels (strides {strides}), text cross-attention per level, shared lookup-free codebook of {bits} bits
  ({codes} codes). Bits per pixel at the training clip size: {bpp}.
- Text encoder (frozen, not stored here): `{text_encoder}`.

## Training

- Data: {data}
- Steps: {steps} x batch {batch} x {accum} accumulation on {procs} process(es); AdamW lr {lr} ({sched}, warm-up
  {warmup}); mixed precision `{mp}`; seed {seed}. Wall time: {wall}.
- Losses on: {losses}.

Recipe (as run):

```json
{recipe}
```

## Held-out results

{heldout}

## Use

```python
from modeling_pyratok import AutoencoderPyraTok, PyraTokModel

model = PyraTokModel.from_pretrained("<this folder or repo>")
tokens = model.tokenize(video, text="a prompt")  # (B, 3, 4k+1, H, W) in [-1, 1]; H, W multiples of {multiple}
video_hat = model.detokenize(tokens)
vae = AutoencoderPyraTok.from_pretrained("<this folder or repo>")  # the same weights as a diffusers VAE
```
"""


def losses_on(config: TrainConfig, model_config: PyraTokConfig) -> list[str]:
    """The loss terms a `task: pyratok` run optimises ([`enabled_loss_weights`]), each with its weights.

    E.g. `"reconstruction (1·L1 + 0.5·1-SSIM) ×2.5"`: inner weights in brackets (zero-weight terms omitted), the
    top-level λ after `×`. A codebook term whose inner weights are all 0 adds nothing and is left out too.
    """

    def weighted(terms: dict[str, float]) -> str:
        return " + ".join(f"{w:g}·{name}" for name, w in terms.items() if w > 0)

    recon_terms = weighted({
        "L1": config.recon_l1_weight,
        "1-SSIM": config.recon_ssim_weight,
        "LPIPS": config.recon_lpips_weight,
        "chroma": config.recon_chroma_weight,
    })
    codebook_terms = weighted({
        "commitment": model_config.commitment_weight,
        "entropy": model_config.entropy_weight,
        "hierarchical KL": model_config.hierarchical_weight,
        "text KL": model_config.text_alignment_weight,
        "text-codebook InfoNCE": model_config.text_codebook_weight,
    })
    names = {
        "recon": f"reconstruction ({recon_terms})",
        "codebook": f"codebook ({codebook_terms})",
        "latent": "latent matching",
        "ar": "AR global alignment",
        "drift": "drift",
    }
    enabled = enabled_loss_weights(config, model_config)
    if not codebook_terms:
        enabled.pop("codebook", None)
    return [f"{names[term]} ×{weight:g}" for term, weight in enabled.items()]


def format_heldout(metrics: dict | None) -> str:
    if not metrics:
        return "Not measured during training (no `validation_data`)."
    rows = ["| metric | value |", "| --- | --- |"]
    for key, value in metrics.items():
        rows.append(f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |")
    return "\n".join(rows)


def write_training_model_card(
    path: str | os.PathLike,
    model_config: PyraTokConfig,
    config: TrainConfig,
    summary: dict,
    backbone_source: str | None = None,
) -> None:
    """Write `README.md` for a trained checkpoint (overwrites the generic card `save_pretrained` wrote).

    `backbone_source` is where the frozen backbone's weights came from in this run (a local folder is fine here: the
    card is provenance, while `config.json` keeps only a portable Hub id); default `model_config`'s.
    """
    data = config.data
    source = data.get("dataset_name") or data.get("data_files")
    frames, res = data.get("num_frames"), data.get("resolutions")
    bpp = "n/a"
    if frames and res:
        t, (h, w) = frames[0], res[0]
        tt, hh, ww = (
            (t - 1) // model_config.scale_factor_temporal + 1,
            h // model_config.scale_factor_spatial,
            w // (model_config.scale_factor_spatial),
        )
        tokens = sum(tt * (hh // s) * (ww // s) for s in model_config.level_spatial_strides)
        bpp = f"{tokens * model_config.codebook_dim / (t * h * w):.4f} ({t}x{h}x{w} clips)"
    body = TEMPLATE.format(
        preset=config.model_preset,
        z_dim=model_config.z_dim,
        ct=model_config.scale_factor_temporal,
        cs=model_config.scale_factor_spatial,
        lora_rank=model_config.lora_rank,
        backbone=backbone_source or model_config.backbone_name_or_path or config.init_from or "none (random init)",
        levels=model_config.num_levels,
        strides=model_config.level_spatial_strides,
        bits=model_config.codebook_dim,
        codes=2**model_config.codebook_dim,
        bpp=bpp,
        text_encoder=model_config.text_encoder_name_or_path,
        data=f"`{source}`, clips of {frames} frames at {res} (H, W)",
        steps=summary.get("steps"),
        batch=data.get("batch_size"),
        accum=config.gradient_accumulation_steps,
        procs=summary.get("num_processes", 1),
        lr=(f"{config.learning_rate:g}" if config.lr_scaling == "none" else
            f"{config.fan_in_lr:g} / fan-in per weight, {config.learning_rate:g} for biases and gains"),
        sched=config.lr_scheduler,
        warmup=config.lr_warmup_steps,
        mp=config.mixed_precision,
        seed=config.seed,
        wall=f"{summary.get('wall_time_s', 0) / 60:.1f} min",
        losses=", ".join(losses_on(config, model_config)),
        recipe=json.dumps(config.to_dict(), indent=2),
        heldout=format_heldout(summary.get("heldout")),
        multiple=model_config.spatial_multiple,
    )
    card_data = ModelCardData(library_name="transformers", license="apache-2.0", tags=["pyratok", "video-tokenizer"])
    ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}").save(path)


__all__ = ["format_heldout", "losses_on", "write_training_model_card"]

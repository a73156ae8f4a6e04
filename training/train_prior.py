"""Train a text-to-video prior over PyraTok tokens with Accelerate (the paper's generation half, Table 2).

    pyratok tokenize-dataset --data data/procedural/train --out data/tokens/train
    accelerate launch training/train_prior.py --config training/configs/prior-masked-tiny-cpu.yaml [--key value ...]

Reads top to bottom: config → accelerator → token data and tokenizer checks → prior → optimizer → resume → the loop
shared with `train.py` (`run_steps`: exact resume, atomic checkpoints, jsonl logs) → save the prior and its card.
Captions are embedded on the fly by the tokenizer's frozen text encoder (the prior conditions on the same text
features the tokenizer was aligned with). Scale is the accelerate config's business, as for `train.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

if __package__ in (None, ""):
    # `accelerate launch training/train_prior.py` runs this file as a script: make the repo root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import yaml
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from modeling_pyratok import (
    PyraTokARPrior,
    PyraTokARPriorConfig,
    PyraTokMaskedPrior,
    PyraTokMaskedPriorConfig,
    PyraTokModel,
    prior_from_pretrained,
)
from modeling_pyratok.text_encoder_pyratok import PyraTokTextEncoder
from pyratok.token_datasets import load_token_dataset, token_dataset_info
from pyratok.training.prior_config import PriorTrainConfig
from pyratok.training.run_guard import OutputDirLock, stop_with_parent
from pyratok.training.token_stream import TokenBatchStream
from pyratok.training.train import (
    JsonlLog,
    build_lr_scheduler,
    check_resumed_optimizer,
    load_checkpoint,
    resolve_resume_path,
    run_steps,
)

logger = get_logger("pyratok.train_prior")

PRIOR_CLASSES = {
    "masked": (PyraTokMaskedPriorConfig, PyraTokMaskedPrior),
    "ar": (PyraTokARPriorConfig, PyraTokARPrior),
}
VALIDATION_SEED = 1234  # one masking draw / order for every validation pass, so val losses compare across steps


# ---- data and tokenizer ---------------------------------------------------------------------------------------------
def load_tokens(path: str) -> tuple[torch.Tensor, list[str], list[str], object]:
    """A `tokenize-dataset` folder → `(input_ids (R, N), captions, keys, TokenDatasetInfo)`."""
    dataset = load_token_dataset(path)
    info = token_dataset_info(dataset)
    if len(dataset) == 0:
        raise ValueError(f"token dataset {path!r} has no rows")
    ids = torch.tensor(dataset["input_ids"], dtype=torch.long)
    return ids, list(dataset["caption"]), list(dataset["key"]), info


def load_tokenizer_for(config: PriorTrainConfig, info) -> PyraTokModel:
    """The tokenizer the tokens came from; refuses one whose fingerprint is not the data's."""
    from pyratok.cli import model_fingerprint

    name = config.tokenizer or info.tokenizer_name
    if not name:
        raise ValueError("the token data names no tokenizer: set `tokenizer` in the recipe")
    tokenizer = PyraTokModel.from_pretrained(name)
    found = model_fingerprint(tokenizer)
    if info.tokenizer_fingerprint and found != info.tokenizer_fingerprint:
        raise ValueError(
            f"tokenizer {name!r} has fingerprint {found}, the token data {config.train_data!r} was written by "
            f"{info.tokenizer_name!r} with fingerprint {info.tokenizer_fingerprint}: a prior must train on one "
            "tokenizer's tokens"
        )
    return tokenizer


def build_prior(config: PriorTrainConfig, info, tokenizer: PyraTokModel, text_embed_dim: int):
    """A fresh prior for the data's layout, or `init_from`'s weights (which must model that layout)."""
    from pyratok.cli import model_fingerprint

    config_class, model_class = PRIOR_CLASSES[config.prior_type]
    if config.init_from:
        prior = prior_from_pretrained(config.init_from)
        if not isinstance(prior, model_class):
            raise ValueError(
                f"init_from={config.init_from!r} is a {type(prior).__name__}, the recipe trains a "
                f"{model_class.__name__} (prior_type={config.prior_type!r})"
            )
        prior.check_layout(info.layout)
    else:
        fields = {
            "token_layout": info.layout.to_dict(),
            "tokenizer_name": info.tokenizer_name,
            "tokenizer_fingerprint": model_fingerprint(tokenizer),
            "text_embed_dim": text_embed_dim,
            **config.prior_overrides,
        }
        prior = model_class(config_class(**fields))
    prior.check_tokenizer(tokenizer)
    if prior.config.text_embed_dim != text_embed_dim:
        raise ValueError(
            f"the prior reads text embeddings of dim {prior.config.text_embed_dim}, the text encoder gives "
            f"{text_embed_dim}"
        )
    return prior


class PriorObjective(torch.nn.Module):
    """The prior plus a frozen text encoder (held outside the module tree: never trained, never checkpointed)."""

    def __init__(self, prior: torch.nn.Module, text_encoder: PyraTokTextEncoder):
        super().__init__()
        self.prior = prior
        self.__dict__["text_encoder"] = text_encoder

    def forward(self, input_ids: torch.Tensor, captions: list[str], generator: torch.Generator) -> SimpleNamespace:
        device = input_ids.device
        embeds, mask = self.text_encoder(captions, device)
        out = self.prior.training_loss(input_ids, embeds, mask, generator=generator)
        return SimpleNamespace(loss=out.loss, logs={"loss": float(out.loss.detach())})


@torch.no_grad()
def validation_loss(objective: PriorObjective, ids: torch.Tensor, captions: list[str], config: PriorTrainConfig,
                    device: torch.device) -> dict[str, float]:
    """Mean prior loss over the first `num_validation_batches` batches of the validation rows, in eval mode (no
    text dropout) with a fixed generator."""
    was_training = objective.training
    objective.eval()
    generator = torch.Generator().manual_seed(VALIDATION_SEED)
    losses = []
    try:
        for i in range(config.num_validation_batches):
            rows = slice(i * config.batch_size, (i + 1) * config.batch_size)
            if rows.start >= ids.shape[0]:
                break
            out = objective(ids[rows].to(device), captions[rows], generator)
            losses.append(float(out.loss))
    finally:
        objective.train(was_training)
    return {"loss": sum(losses) / len(losses)}


# ---- main -----------------------------------------------------------------------------------------------------------
def train_prior(config: PriorTrainConfig) -> dict:
    """Run prior training; returns a summary (steps, wall time, last logged loss, validation loss)."""
    started = time.time()
    lock = OutputDirLock(config.output_dir) if int(os.environ.get("RANK", "0")) == 0 else None
    try:
        return _train_prior(config, started)
    finally:
        if lock is not None:
            lock.release()


def _train_prior(config: PriorTrainConfig, started: float) -> dict:
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps, mixed_precision=config.mixed_precision
    )
    set_seed(config.seed)
    ids, captions, keys, info = load_tokens(config.train_data)
    tokenizer = load_tokenizer_for(config, info)
    text_encoder = PyraTokTextEncoder.from_name_or_path(
        config.text_encoder or tokenizer.config.text_encoder_name_or_path, tokenizer.config.text_max_length
    )
    prior = build_prior(config, info, tokenizer, text_encoder.embed_dim)
    del tokenizer  # only its fingerprint, layout and text encoder were needed
    objective = PriorObjective(prior, text_encoder)
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        weight_decay=config.weight_decay,
    )
    lr_scheduler = build_lr_scheduler(config, optimizer, accelerator.num_processes)
    objective, optimizer, lr_scheduler = accelerator.prepare(objective, optimizer, lr_scheduler)
    stream = TokenBatchStream(
        ids, captions, keys, config.batch_size, config.seed, config.shuffle,
        accelerator.process_index, accelerator.num_processes,
    )
    val = None
    if config.validation_data:
        val_ids, val_captions, _, val_info = load_tokens(config.validation_data)
        accelerator.unwrap_model(objective).prior.check_layout(val_info.layout)
        if val_info.tokenizer_fingerprint != info.tokenizer_fingerprint:
            raise ValueError(
                f"validation_data {config.validation_data!r} was tokenised by another tokenizer (fingerprint "
                f"{val_info.tokenizer_fingerprint}) than train_data ({info.tokenizer_fingerprint})"
            )
        val = (val_ids, val_captions)

    def validate_fn() -> dict[str, float]:
        if not accelerator.is_main_process or val is None:
            return {}
        return validation_loss(accelerator.unwrap_model(objective), *val, config, accelerator.device)

    step = 0
    resume = resolve_resume_path(config)
    if resume is not None:
        check_resumed_optimizer(resume, config)
        step = load_checkpoint(accelerator, resume, stream)
        logger.warning(f"resumed from {resume} at step {step}")
    log = JsonlLog(Path(config.output_dir) / "logs.jsonl", accelerator.is_main_process, start_step=step)
    if accelerator.is_main_process:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(config.output_dir) / "train_config.json", "w") as f:
            json.dump(config.to_dict(), f, indent=2)
    progress = tqdm(
        total=config.max_train_steps, initial=step, desc=f"prior-{config.prior_type}",
        disable=not (config.progress_bar and accelerator.is_local_main_process),
    )
    step, last_logs = run_steps(
        accelerator, config, objective, optimizer, lr_scheduler, params, stream, step, started, log, progress,
        forward=lambda batch, generator: objective(batch["input_ids"].to(accelerator.device), batch["captions"],
                                                   generator),
        validate_fn=validate_fn,
    )
    progress.close()
    summary = {
        "prior_type": config.prior_type,
        "steps": step,
        "wall_time_s": round(time.time() - started, 1),
        "num_processes": accelerator.num_processes,
        "train_rows": int(ids.shape[0]),
        "seq_len": int(ids.shape[1]),
        "last_logged": last_logs,
    }
    if val is not None:
        summary["validation"] = validate_fn()
    final = Path(config.output_dir) / "final"
    if accelerator.is_main_process:
        prior = accelerator.unwrap_model(objective).prior
        prior.save_pretrained(final)
        prior.model_card(details=prior_training_details(config, summary)).save(final / "README.md")
        summary["final"] = str(final)
        with open(Path(config.output_dir) / "summary.json", "w") as f:
            json.dump(summary, f, indent=2)
    accelerator.end_training()
    return summary


def prior_training_details(config: PriorTrainConfig, summary: dict) -> str:
    """Markdown for the card's "Training and evaluation" section: recipe, steps, wall time, losses."""
    losses = {k: round(v, 4) for k, v in summary.get("last_logged", {}).items()}
    lines = [
        f"- Trained by `training/train_prior.py` ({summary['num_processes']} process(es)): {summary['steps']} steps, "
        f"{summary['wall_time_s'] / 60:.1f} min wall, on {summary['train_rows']} token sequences of "
        f"{summary['seq_len']} tokens (`{config.train_data}`).",
        f"- Last logged training loss: {losses.get('loss')}.",
    ]
    if "validation" in summary:
        lines.append(f"- Validation loss (`{config.validation_data}`): {summary['validation'].get('loss'):.4f}.")
    recipe = yaml.safe_dump(config.to_dict(), sort_keys=False).rstrip()
    lines += ["", "Resolved recipe:", "", "```yaml", recipe, "```"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> PriorTrainConfig:
    parser = argparse.ArgumentParser(
        description="Train a PyraTok token prior with Accelerate. Any PriorTrainConfig field can be overridden: "
        "--field value (dotted for nested mappings: --prior_overrides.hidden_size 256)."
    )
    parser.add_argument(
        "--config", required=True, help="recipe YAML, e.g. training/configs/prior-masked-tiny-cpu.yaml"
    )
    parser.add_argument("--print_config", action="store_true", help="print the resolved recipe as YAML and exit")
    args, overrides = parser.parse_known_args(argv)
    config = PriorTrainConfig.from_yaml(args.config, overrides)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        raise SystemExit(0)
    return config


def main(argv: list[str] | None = None) -> None:
    stop_with_parent()
    summary = train_prior(parse_args(argv))
    print(json.dumps({k: v for k, v in summary.items() if k != "last_logged"}, indent=2))


if __name__ == "__main__":
    main()

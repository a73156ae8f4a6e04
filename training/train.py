"""Train PyraTok (or pretrain its backbone) with Accelerate on streamed video data.

    accelerate launch training/train.py --config training/configs/tiny-cpu.yaml [--key value ...]

Reads top to bottom: config → accelerator → model and objective → optimizer → data → resume → one loop → save.
Scale is the accelerate config's business (`--config_file training/accelerate/<multi_gpu|deepspeed|fsdp>.yaml`);
nothing here is distributed by hand.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # `accelerate launch training/train.py` runs this file as a script: make the repo root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import yaml
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from modeling_pyratok import AutoencoderPyraTok, PyraTokConfig, PyraTokModel
from modeling_pyratok.configuration_pyratok import backbone_config_differences
from pyratok.training.config import TrainConfig
from pyratok.training.data import VideoDataConfig, build_stream
from pyratok.training.heldout import evaluate_reconstruction
from pyratok.training.model_card import write_training_model_card
from pyratok.training.objective import BackboneVAEObjective, PyraTokObjective
from pyratok.training.optimization import optimizer_param_groups, zero_bias_residual_init_
from pyratok.training.run_guard import OutputDirLock, stop_with_parent

logger = get_logger("pyratok.train")

CHECKPOINT_PREFIX = "checkpoint-"
PARTIAL_SUFFIX = ".tmp"  # a checkpoint being written; renamed to checkpoint-N once trainer_state.json is in it
COMPLETE_MARKER = "trainer_state.json"  # written last: a checkpoint folder without it is partial
# Restored by `accelerator.load_state` from the checkpoint whatever the config says: a resume must not change them.
OPTIMIZER_FIELDS = (
    "learning_rate", "adam_beta1", "adam_beta2", "adam_epsilon", "weight_decay", "lr_scheduler", "lr_warmup_steps",
    "lr_scaling", "fan_in_lr",
)
MAX_CONSECUTIVE_NONFINITE = 3


# ---- model ----------------------------------------------------------------------------------------------------------
def build_model_config(config: TrainConfig) -> PyraTokConfig:
    return PyraTokConfig.from_preset(config.model_preset, **config.model_overrides)


def build_pyratok_model(config: TrainConfig) -> PyraTokModel:
    """A fresh PyraTok (or `init_from`), with the pretrained backbone copied in unless `backbone_name_or_path` is
    `"none"`."""
    if config.init_from:
        # The checkpoint's own config with the recipe's model_overrides on top, as `from_pretrained(path, **kwargs)`
        # overrides config fields; one that changes the architecture fails to load, naming the weights it moves.
        return PyraTokModel.from_pretrained(config.init_from, **config.model_overrides).train()
    model_config = build_model_config(config)
    source = config.backbone_name_or_path or model_config.backbone_name_or_path
    if source and source != "none":
        model_config.backbone_name_or_path = source
    model = PyraTokModel(model_config)
    if source and source != "none":
        model.load_pretrained_backbone(source, subfolder=backbone_subfolder(config, model_config, source))
    return model.train()


# A Hub id: `name` or `org/name`, with no path of this machine in it.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def portable_backbone_source(name_or_path: str | None) -> str | None:
    """`name_or_path` if it is a Hub id another machine can load, else None: a saved config carries no path of the
    machine it was trained on (`train_config.json` and the model card record where the weights came from)."""
    if not name_or_path or name_or_path == "none" or os.path.exists(name_or_path):
        return None
    return name_or_path if HUB_ID.fullmatch(name_or_path) and not name_or_path.startswith(".") else None


def backbone_subfolder(config: TrainConfig, model_config: PyraTokConfig, source: str) -> str | None:
    """Where the `AutoencoderKLWan` sits inside `source`: `backbone_subfolder` if set, the root of a local folder
    holding a `config.json` (a plain diffusers VAE folder, e.g. the output of task=backbone_vae), else the model
    config's (`"vae"` for the Wan diffusers repos)."""
    if config.backbone_subfolder is not None:
        return config.backbone_subfolder
    if os.path.isfile(os.path.join(source, "config.json")):
        return ""
    return model_config.backbone_subfolder


def build_backbone_vae(config: TrainConfig) -> torch.nn.Module:
    from diffusers import AutoencoderKLWan

    model_config = build_model_config(config)
    vae = AutoencoderKLWan(**model_config.backbone_config)
    if config.init_from:
        subfolder = backbone_subfolder(config, model_config, config.init_from)
        pretrained = AutoencoderKLWan.from_pretrained(config.init_from, subfolder=subfolder or None)
        differing = backbone_config_differences(vae.config, pretrained.config)
        if differing:
            raise ValueError(
                f"init_from={config.init_from!r} is not the backbone of model_preset={config.model_preset!r} "
                f"(+ model_overrides): they differ in {differing}"
            )
        vae.load_state_dict(pretrained.state_dict())
    elif config.backbone_init == "zero_bias_residual":
        zero_bias_residual_init_(vae)
    return vae.train()


def build_objective(config: TrainConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The objective module that `accelerate.prepare` wraps, and the model inside it that gets saved."""
    if config.task == "backbone_vae":
        vae = build_backbone_vae(config)
        return BackboneVAEObjective(vae, config), vae
    model = build_pyratok_model(config)
    return PyraTokObjective(model, config), model


def data_config(raw: dict, seed: int) -> VideoDataConfig:
    fields = dict(raw)
    fields.setdefault("seed", seed)
    return VideoDataConfig(**fields)


def build_lr_scheduler(config, optimizer: torch.optim.Optimizer, num_processes: int):
    """`config.lr_scheduler` over `config.max_train_steps` with `config.lr_warmup_steps` of warm-up, for `train.py`
    and `train_prior.py`. The prepared scheduler steps once per process per optimizer step (diffusers' convention),
    so both lengths are multiplied by the number of processes."""
    return get_scheduler(
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=config.lr_warmup_steps * num_processes,
        num_training_steps=config.max_train_steps * num_processes,
    )


# ---- checkpoints ----------------------------------------------------------------------------------------------------
def list_checkpoints(output_dir: str, complete_only: bool = True) -> list[Path]:
    """`checkpoint-N` folders by step; with `complete_only`, those holding `trainer_state.json` (written last)."""
    found = [p for p in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*") if re.fullmatch(r"checkpoint-\d+", p.name)]
    if complete_only:
        found = [p for p in found if (p / COMPLETE_MARKER).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def resolve_resume_path(config: TrainConfig) -> Path | None:
    if not config.resume_from_checkpoint:
        return None
    if config.resume_from_checkpoint == "latest":
        complete = list_checkpoints(config.output_dir)
        partial = [p for p in Path(config.output_dir).glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir()]
        partial = [p for p in partial if p not in complete]
        if partial:
            # A save interrupted by a kill or a full disk: never resumed from, reported so it can be removed.
            logger.warning(f"skipping partial checkpoints (interrupted saves) {sorted(p.name for p in partial)}",
                           main_process_only=False)
        if not complete:
            logger.warning(f"resume_from_checkpoint=latest but {config.output_dir} has no complete checkpoint: "
                           "starting fresh", main_process_only=False)
            return None
        return complete[-1]
    path = Path(config.resume_from_checkpoint)
    if not (path / COMPLETE_MARKER).is_file():
        raise FileNotFoundError(f"resume_from_checkpoint={str(path)!r} is not a checkpoint folder of train.py")
    return path


def _disk_full(err: BaseException, folder: Path) -> bool:
    """Whether `err` came from a full disk. safetensors says so only in its message, and torch's zip writer reports it
    as `RuntimeError: ... unexpected pos`, without errno: check the message and the free space too."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    if "No space left on device" in str(err) or "os error 28" in str(err):
        return True
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def save_checkpoint(accelerator: Accelerator, config: TrainConfig, step: int, stream) -> Path:
    """Write `checkpoint-{step}` complete or not at all: into `checkpoint-{step}.tmp`, `trainer_state.json` last,
    then renamed into place; only then are old checkpoints beyond `checkpoints_total_limit` removed, so a kill or a
    full disk during the save always leaves the previous checkpoint to resume from."""
    path = Path(config.output_dir) / f"{CHECKPOINT_PREFIX}{step}"
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)  # left by an earlier interrupted save of this step
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(partial))
        # Every process owns its own slice of the data stream, so every process saves its position.
        with open(partial / f"data_state_rank{accelerator.process_index}.json", "w") as f:
            json.dump(stream.state_dict(), f)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            with open(partial / COMPLETE_MARKER, "w") as f:
                json.dump({"global_step": step, "config": config.to_dict()}, f, indent=2)
            if path.exists():  # a complete checkpoint of this step from an earlier run: replaced whole
                shutil.rmtree(path)
            os.replace(partial, path)
    except Exception as err:
        full = _disk_full(err, partial.parent)
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        if full:
            raise OSError(
                errno.ENOSPC,
                f"no space left on device while saving {str(path)!r} (the partial save was removed; earlier "
                f"checkpoints are intact): {type(err).__name__}: {err}",
            ) from err
        raise
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and config.checkpoints_total_limit is not None:
        existing = list_checkpoints(config.output_dir, complete_only=False)
        for old in existing[: max(0, len(existing) - config.checkpoints_total_limit)]:
            shutil.rmtree(old, ignore_errors=True)
    return path


def check_resumed_optimizer(path: Path, config: TrainConfig) -> None:
    """Refuse optimizer / schedule fields that differ from the checkpoint's: `load_state` restores the optimizer and
    scheduler with the checkpoint's values, so a new value would be ignored while the run records it."""
    with open(path / COMPLETE_MARKER) as f:
        saved = json.load(f).get("config", {})
    current = config.to_dict()
    differ = {k: (saved[k], current[k]) for k in OPTIMIZER_FIELDS if k in saved and saved[k] != current[k]}
    if differ:
        listed = ", ".join(f"{k} (checkpoint {a!r}, now {b!r})" for k, (a, b) in differ.items())
        raise ValueError(
            f"resume from {str(path)!r}: the optimizer and schedule are restored from the checkpoint, which was "
            f"saved with other values: {listed}; resume with the checkpoint's values, or start a new output_dir "
            "(init_from the checkpoint's weights) to train with new ones"
        )


def load_checkpoint(accelerator: Accelerator, path: Path, stream) -> int:
    with open(path / COMPLETE_MARKER) as f:
        global_step = int(json.load(f)["global_step"])
    accelerator.load_state(str(path))
    data_state = path / f"data_state_rank{accelerator.process_index}.json"
    if not data_state.is_file():
        raise FileNotFoundError(
            f"{data_state} is missing: the checkpoint was written by a run with a different number of processes"
        )
    with open(data_state) as f:
        stream.load_state_dict(json.load(f))
    return global_step


def save_final(accelerator: Accelerator, config: TrainConfig, model: torch.nn.Module, summary: dict) -> Path:
    """The PreTrainedModel folder (loads in both PyraTok classes), the diffusers folder and a model card."""
    model = accelerator.unwrap_model(model)
    final = Path(config.output_dir) / "final"
    if not accelerator.is_main_process:
        return final
    if config.task == "backbone_vae":
        model.save_pretrained(final)
        return final
    # The card names the backbone's source (a local folder included); config.json keeps only a portable one.
    backbone_source = model.config.backbone_name_or_path
    model.config.backbone_name_or_path = portable_backbone_source(backbone_source)
    model.save_pretrained(final)
    vae = AutoencoderPyraTok(**model.config.to_init_kwargs())
    vae.load_state_dict(model.state_dict())
    vae.save_pretrained(Path(config.output_dir) / "final-diffusers")
    write_training_model_card(final / "README.md", model.config, config, summary, backbone_source=backbone_source)
    shutil.copy(final / "README.md", Path(config.output_dir) / "final-diffusers" / "README.md")
    return final


# ---- logging --------------------------------------------------------------------------------------------------------
class JsonlLog:
    """Append-only jsonl log on the main process (one line per logged step).

    A run starting at `start_step` (0, or the resumed checkpoint's) first drops the records of later steps, left by
    an interrupted run that got further than its last checkpoint: the log keeps one record per step."""

    def __init__(self, path: Path, enabled: bool, start_step: int = 0):
        self.path = path
        self.enabled = enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_file():
                lines = path.read_text().splitlines()
                kept = [line for line in lines if line.strip() and _record_step(line) <= start_step]
                if len(kept) != len(lines):
                    tmp = path.with_name(path.name + PARTIAL_SUFFIX)
                    tmp.write_text("".join(line + "\n" for line in kept))
                    os.replace(tmp, path)

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def _record_step(line: str) -> float:
    try:
        return float(json.loads(line).get("step", float("inf")))
    except (ValueError, AttributeError):
        return float("inf")  # a line cut by a kill mid-write


def mean_logs(records: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for r in records for k in r}
    return {k: sum(r[k] for r in records if k in r) / sum(1 for r in records if k in r) for k in sorted(keys)}


# ---- main -----------------------------------------------------------------------------------------------------------
def train(config: TrainConfig) -> dict:
    """Run training; returns a summary (steps, wall time, last logged losses, held-out metrics if validated)."""
    started = time.time()
    # One run per output folder: a second run would interleave the logs and prune the first one's checkpoints.
    # The lock is taken before the Accelerator exists, on the launcher-assigned rank 0 only (RANK is unset when
    # launched as a single process).
    lock = OutputDirLock(config.output_dir) if int(os.environ.get("RANK", "0")) == 0 else None
    try:
        return _train(config, started)
    finally:
        if lock is not None:
            lock.release()


def _train(config: TrainConfig, started: float) -> dict:
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=config.report_to or None,
        project_config=ProjectConfiguration(project_dir=config.output_dir, logging_dir=config.output_dir),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=config.find_unused_parameters)],
    )
    set_seed(config.seed)
    objective, model = build_objective(config)
    groups = optimizer_param_groups(
        objective.named_parameters(), config.learning_rate, config.lr_scaling, config.fan_in_lr
    )
    if not groups:
        raise ValueError("nothing to train: every parameter of the objective is frozen")
    params = [p for group in groups for p in group["params"]]
    first_group_rate = groups[0]["lr"]  # the log reports learning_rate scaled as the scheduler scales this group
    optimizer = torch.optim.AdamW(
        groups,
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        weight_decay=config.weight_decay,
    )
    lr_scheduler = build_lr_scheduler(config, optimizer, accelerator.num_processes)
    objective, optimizer, lr_scheduler = accelerator.prepare(objective, optimizer, lr_scheduler)
    if config.report_to:
        accelerator.init_trackers(config.tracker_project_name, config={k: str(v) for k, v in config.to_dict().items()})

    stream = build_stream(data_config(config.data, config.seed), accelerator.process_index, accelerator.num_processes)
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
        total=config.max_train_steps,
        initial=step,
        desc=config.task,
        disable=not (config.progress_bar and accelerator.is_local_main_process),
    )
    step, last_logs = run_steps(
        accelerator, config, objective, optimizer, lr_scheduler, params, stream, step, started, log, progress,
        forward=lambda batch, generator: objective(
            batch["pixel_values"].to(accelerator.device), batch["captions"], generator
        ),
        validate_fn=lambda: validate(accelerator, config, objective),
        lr_reference=first_group_rate,
    )
    progress.close()

    summary = {
        "task": config.task,
        "steps": step,
        "wall_time_s": round(time.time() - started, 1),
        "num_processes": accelerator.num_processes,
        "last_logged": last_logs,
        "data": dict(stream.stats),
    }
    if config.validation_data:
        summary["heldout"] = validate(accelerator, config, objective)
    final = save_final(
        accelerator,
        config,
        accelerator.unwrap_model(objective).vae
        if config.task == "backbone_vae"
        else accelerator.unwrap_model(objective).model,
        summary,
    )
    summary["final"] = str(final)
    if accelerator.is_main_process:
        with open(Path(config.output_dir) / "summary.json", "w") as f:
            json.dump(summary, f, indent=2)
    accelerator.end_training()
    return summary


def run_steps(
    accelerator: Accelerator,
    config,
    objective: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler,
    params: list[torch.nn.Parameter],
    stream,
    step: int,
    started: float,
    log: JsonlLog,
    progress: tqdm,
    forward,
    validate_fn=None,
    lr_reference: float | None = None,
) -> tuple[int, dict[str, float]]:
    """The optimisation loop shared by `train.py` and `train_prior.py`: from `step` to `config.max_train_steps`.

    Each micro-batch is `next(stream)`; `forward(batch, generator)` returns an output with `.loss` and `.logs` (a
    dict of floats). The generator is seeded per step, micro-step and process, so masking and crops replay exactly
    after a resume. Non-finite losses skip the batch (three in a row raise). Logs every `logging_steps` to
    `logs.jsonl` and the trackers, validates every `validation_steps` when `config.validation_data` is set, and
    checkpoints every `checkpointing_steps` and at the end. `config` needs the fields both trainers share.

    Returns:
        `(step, last_logged)`: the final step and the last logged window's mean terms.
    """
    lr_reference = config.learning_rate if lr_reference is None else lr_reference
    window: list[dict[str, float]] = []
    last_logs: dict[str, float] = {}
    nonfinite = 0
    samples = 0
    window_start = time.time()
    while step < config.max_train_steps:
        objective.train()
        for micro in range(config.gradient_accumulation_steps):
            batch = next(stream)
            # Per-step, per-process seed: masking and AR crops replay exactly after a resume.
            generator = torch.Generator().manual_seed(
                (config.seed * 1_000_003 + step * 7919 + micro * 31 + accelerator.process_index) % 2**63
            )
            with accelerator.accumulate(objective):
                with accelerator.autocast():
                    out = forward(batch, generator)
                if not torch.isfinite(out.loss):
                    nonfinite += 1
                    if nonfinite >= MAX_CONSECUTIVE_NONFINITE:
                        raise FloatingPointError(
                            f"loss was non-finite for {nonfinite} micro-batches in a row at step {step} "
                            f"(last keys {batch['keys']}, terms {out.logs}); lower learning_rate or check the data"
                        )
                    logger.warning(f"non-finite loss at step {step} (keys {batch['keys']}): batch skipped")
                    optimizer.zero_grad()
                    continue
                nonfinite = 0
                accelerator.backward(out.loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            window.append(out.logs)
            samples += len(batch["keys"])
        step += 1
        progress.update(1)
        if step % config.logging_steps == 0 or step == config.max_train_steps:
            last_logs = mean_logs(window)
            elapsed = time.time() - window_start
            record = {
                "step": step,
                # learning_rate as scheduled (with lr_scaling=fan_in: the biases' rate; weights scale alike)
                "lr": config.learning_rate * lr_scheduler.get_last_lr()[0] / lr_reference,
                **last_logs,
                **{f"data/{k}": v for k, v in stream.stats.items()},
                "samples_per_s": samples / max(elapsed, 1e-9),
                "elapsed_s": time.time() - started,
            }
            log.write(record)
            accelerator.log(record, step=step)
            progress.set_postfix(loss=f"{last_logs.get('loss', float('nan')):.4f}")
            window, samples, window_start = [], 0, time.time()
        if validate_fn is not None and config.validation_steps and config.validation_data:
            if step % config.validation_steps == 0:
                metrics = validate_fn()
                log.write({"step": step, **{f"val/{k}": v for k, v in metrics.items()}})
                accelerator.log({f"val/{k}": v for k, v in metrics.items()}, step=step)
        if step % config.checkpointing_steps == 0 or step == config.max_train_steps:
            save_checkpoint(accelerator, config, step, stream)
    return step, last_logs


@torch.no_grad()
def validate(accelerator: Accelerator, config: TrainConfig, objective: torch.nn.Module) -> dict[str, float]:
    """Held-out PSNR / SSIM (and per-level code usage for PyraTok) on `validation_data`, main process only."""
    unwrapped = accelerator.unwrap_model(objective)
    target = unwrapped.vae if config.task == "backbone_vae" else unwrapped.model
    was_training = target.training
    target.eval()
    try:
        stream = build_stream(data_config(config.validation_data, config.seed), 0, 1)
        metrics = evaluate_reconstruction(target, stream, config.num_validation_batches, accelerator.device)
    finally:
        target.train(was_training)
    return metrics


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(
        description="Train PyraTok with Accelerate. Any TrainConfig field can be overridden: --field value "
        "(dotted for nested mappings: --data.batch_size 4, --model_overrides.hidden_size 64)."
    )
    parser.add_argument("--config", required=True, help="recipe YAML, e.g. training/configs/tiny-cpu.yaml")
    parser.add_argument(
        "--print_config", action="store_true",
        help="print the resolved recipe (its `base:` chain merged, overrides applied) as YAML and exit",
    )
    args, overrides = parser.parse_known_args(argv)
    config = TrainConfig.from_yaml(args.config, overrides)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        raise SystemExit(0)
    return config


def main(argv: list[str] | None = None) -> None:
    stop_with_parent()  # see its docstring: a killed `accelerate launch` takes this training process with it
    summary = train(parse_args(argv))
    print(json.dumps({k: v for k, v in summary.items() if k != "last_logged"}, indent=2))


if __name__ == "__main__":
    main()

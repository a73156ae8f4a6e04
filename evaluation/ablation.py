"""The paper's Table 6 ablations at tiny scale: one recipe, config switches, one markdown table beside the paper's.

    pyratok-eval ablation --data data/procedural/test [--base-config training/configs/tiny-cpu.yaml]
        [--rows full,wo-lapq,...] [--max-train-steps N] [--train-override key=value ...] [--output-dir DIR] [--resume]

Every row is the base recipe plus the overrides in `ABLATION_ROWS` (DESIGN §4: the ablations are config switches,
not code edits). Each row is trained with `training.train.train` into `output_dir/<row>/`, then its `final` model is
scored on the test split: PSNR / SSIM (/ LPIPS when its weights are cached) and bits per pixel
(`evaluation.reconstruction`), code usage (distinct codes / `2**codebook_dim` per level, mean over levels) and
zero-shot retrieval R@1 (`evaluation.retrieval`). `output_dir/ablation.md` puts these beside the paper's Table 6
numbers for the matching row ("—" where the paper has none), `output_dir/ablation.json` holds everything.

Mapping choices (the paper gives no code for its ablations):

- w/o LaPQ: one level on the deepest tap (the encoder output, i.e. the final latent grid), LFQ there; the level's
  text cross-attention, the fusion stack and the codebook losses stay. It removes the pyramid of taps and grids,
  not the text path (that is "w/o text guidance").
- w/o text guidance: training always uses the null text (`text_dropout: 1.0`) and the two text losses are off (they
  need text); evaluation encodes without prompts. Retrieval still embeds captions through the (then untrained)
  text projection, so its R@1 sits near chance by construction.
- w/o pyramid: four levels, all on the latent grid (`level_spatial_strides: [1, 1, 1, 1]`; 4x one level's tokens).
- 2 / 3 / 4 levels: the deepest 2 / 3 / 4 taps with strides [1, 2] / [1, 2, 4] / [1, 2, 4, 8].
- w/o drift, w/o AR, w/o both: the trainer's loss switches. w/o each codebook term: that term's weight set to 0;
  w/o latent: our auxiliary latent MSE (not in the paper).

A row whose resolved config equals an earlier selected row's (e.g. "w/o drift" when the base recipe already has the
drift loss off) is not trained again: it reports that row's numbers with a note saying why. Table 6's sections 5
(multi-modal models) and 6 (pretrained VAEs) swap pretrained components, which this recipe cannot switch; they are
left out.

The base recipe's `validation_data` is dropped from the row runs (the ablation scores the test split itself; the
trainer's closing held-out pass would only add time); pass `--train-override validation_data=...` to keep one.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pyratok.training.config import TrainConfig, apply_overrides, parse_overrides

from .clips import split_shards

logger = logging.getLogger(__name__)

DEFAULT_BASE_CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "tiny-cpu.yaml"
DEFAULT_OUTPUT_DIR = "out/ablation"

# ---- the paper's Table 6 ("Ablations on PyraTok components"), transcribed from the CVPR 2026 paper ------------------
# Column headers as printed ("COCO-Val<br/>PSNR / SSIM / LPIPS"); each cell is "PSNR / SSIM / LPIPS".
PAPER_COLUMNS = ("COCO-Val PSNR / SSIM / LPIPS", "WebVid-10M PSNR / SSIM / LPIPS")
PAPER_TABLE6: dict[str, tuple[str, str]] = {
    # 1. Component Ablation
    "w/o LaPQ": ("31.41 / 0.831 / 0.101", "31.47 / 0.799 / 0.118"),
    "w/o Text Guidance": ("33.43 / 0.861 / 0.081", "36.02 / 0.833 / 0.082"),
    "w/o Pyramidal-Q": ("34.02 / 0.859 / 0.082", "34.02 / 0.839 / 0.094"),
    # 2. Quantization(Q)-Blocks Ablation
    "2 Blocks": ("33.21 / 0.821 / 0.092", "33.98 / 0.844 / 0.101"),
    "3 Blocks": ("34.78 / 0.862 / 0.089", "35.14 / 0.867 / 0.085"),
    "4 Blocks (Default)": ("35.72 / 0.879 / 0.066", "36.05 / 0.885 / 0.071"),
    # 3. Loss Function Ablation
    "w/o L_drift": ("33.48 / 0.839 / 0.082", "34.52 / 0.853 / 0.081"),
    "w/o L_AR": ("33.42 / 0.842 / 0.079", "34.01 / 0.844 / 0.079"),
    "w/o L_drift & L_AR": ("32.17 / 0.832 / 0.093", "32.32 / 0.831 / 0.092"),
    # 4. Codebook Loss Ablation
    "w/o L_vision-commitment": ("32.88 / 0.819 / 0.097", "33.45 / 0.839 / 0.101"),
    "w/o L_text-cond. alignment": ("33.27 / 0.822 / 0.092", "34.12 / 0.855 / 0.091"),
    "w/o L_text-codebook alignment": ("34.11 / 0.849 / 0.087", "34.78 / 0.872 / 0.083"),
}
# Table 6's last row ("PyraTok", 36.05 / 0.885 / 0.071 | 35.72 / 0.879 / 0.066) repeats the default with its two
# columns swapped; "4 Blocks (Default)" and "Qwen-2.5 VL (Default)" agree with each other, so "full" uses those.


def _levels(num: int, strides: list[int]) -> dict[str, Any]:
    return {"model_overrides.num_levels": num, "model_overrides.level_spatial_strides": strides}


# Row name -> dotted overrides of the base recipe (`training.config.apply_overrides`), in table order.
ABLATION_ROWS: dict[str, dict[str, Any]] = {
    "full": {},
    "wo-lapq": _levels(1, [1]),
    "wo-text": {
        "model_overrides.text_dropout": 1.0,
        "model_overrides.text_alignment_weight": 0.0,
        "model_overrides.text_codebook_weight": 0.0,
    },
    "wo-pyramid": _levels(4, [1, 1, 1, 1]),
    "levels-2": _levels(2, [1, 2]),
    "levels-3": _levels(3, [1, 2, 4]),
    "levels-4": _levels(4, [1, 2, 4, 8]),
    "wo-drift": {"use_drift_loss": False},
    "wo-ar": {"use_ar_loss": False},
    "wo-drift-ar": {"use_drift_loss": False, "use_ar_loss": False},
    "wo-commitment": {"model_overrides.commitment_weight": 0.0},
    "wo-entropy": {"model_overrides.entropy_weight": 0.0},
    "wo-hierarchical": {"model_overrides.hierarchical_weight": 0.0},
    "wo-text-alignment": {"model_overrides.text_alignment_weight": 0.0},
    "wo-text-codebook": {"model_overrides.text_codebook_weight": 0.0},
    "wo-latent": {"use_latent_loss": False},
}


@dataclass(frozen=True)
class RowInfo:
    """How a row is shown: its label, the matching Table 6 row (None: the paper has none) and a note."""

    label: str
    paper_row: str | None
    note: str = ""


ROW_INFO: dict[str, RowInfo] = {
    "full": RowInfo("full (4 levels)", "4 Blocks (Default)", "the base recipe"),
    "wo-lapq": RowInfo("w/o LaPQ", "w/o LaPQ",
                       "1 level, LFQ on the encoder output (final latent grid); its text attention stays"),
    "wo-text": RowInfo("w/o text guidance", "w/o Text Guidance",
                       "null text always, text losses off, evaluated without prompts; retrieval ~chance by design"),
    "wo-pyramid": RowInfo("w/o pyramid", "w/o Pyramidal-Q", "4 levels all on the latent grid (strides 1, 1, 1, 1)"),
    "levels-2": RowInfo("2 levels", "2 Blocks", "deepest 2 taps, strides 1, 2"),
    "levels-3": RowInfo("3 levels", "3 Blocks", "deepest 3 taps, strides 1, 2, 4"),
    "levels-4": RowInfo("4 levels", "4 Blocks (Default)", "strides 1, 2, 4, 8"),
    "wo-drift": RowInfo("w/o drift", "w/o L_drift"),
    "wo-ar": RowInfo("w/o AR", "w/o L_AR"),
    "wo-drift-ar": RowInfo("w/o drift & AR", "w/o L_drift & L_AR"),
    "wo-commitment": RowInfo("w/o commitment", "w/o L_vision-commitment"),
    "wo-entropy": RowInfo("w/o entropy", None),
    "wo-hierarchical": RowInfo("w/o hierarchical KL", None),
    "wo-text-alignment": RowInfo("w/o text-cond. alignment", "w/o L_text-cond. alignment"),
    "wo-text-codebook": RowInfo("w/o text-codebook alignment", "w/o L_text-codebook alignment"),
    "wo-latent": RowInfo("w/o latent MSE (ours)", None, "our auxiliary latent loss, not in the paper"),
}

# Fields that may differ between a finished row run and the current request without it being another experiment.
_RUN_ONLY_FIELDS = ("output_dir", "max_train_steps", "resume_from_checkpoint", "progress_bar", "logging_steps",
                    "checkpointing_steps", "checkpoints_total_limit", "report_to")


# ---------------------------------------------------------------------------------------------------------- configs


def resolve_rows(rows: list[str] | str | None) -> list[str]:
    """Row names (or labels, case-insensitive; a comma-separated string works too) → names, in table order."""
    if rows is None:
        return list(ABLATION_ROWS)
    if isinstance(rows, str):
        rows = [r for r in rows.split(",") if r.strip()]
    by_label = {info.label.lower(): name for name, info in ROW_INFO.items()}
    chosen, unknown = set(), []
    for row in rows:
        key = row.strip()
        name = key if key in ABLATION_ROWS else by_label.get(key.lower())
        if name is None:
            unknown.append(row)
        else:
            chosen.add(name)
    if unknown or not chosen:
        raise ValueError(f"unknown ablation rows {unknown or rows}; choose from {', '.join(ABLATION_ROWS)}")
    return [name for name in ABLATION_ROWS if name in chosen]


def _parse_train_overrides(overrides: list[str] | None) -> dict[str, Any]:
    argv = []
    for item in overrides or []:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text or text.startswith("="):
            raise ValueError(f"training override {item!r} is not key=value (e.g. data.batch_size=4)")
        argv.append("--" + text)
    return parse_overrides(argv)


def base_config_dict(
    base_config: str | os.PathLike | TrainConfig | dict, overrides: list[str] | None = None
) -> dict:
    """The base recipe (YAML path, `TrainConfig` or its dict) as a plain dict, with `validation_data` dropped and
    then the `key=value` overrides applied."""
    if isinstance(base_config, TrainConfig):
        raw = base_config.to_dict()
    elif isinstance(base_config, dict):
        raw = TrainConfig.from_dict(base_config, source="base recipe").to_dict()
    else:
        raw = TrainConfig.from_yaml(base_config).to_dict()
    raw["validation_data"] = None  # the ablation scores the test split itself (module docstring)
    apply_overrides(raw, _parse_train_overrides(overrides))
    return raw


def build_row_config(
    base_config: str | os.PathLike | TrainConfig | dict,
    row: str,
    output_dir: str | os.PathLike = DEFAULT_OUTPUT_DIR,
    max_train_steps: int | None = None,
    overrides: list[str] | None = None,
) -> TrainConfig:
    """The training config of one row: base recipe → `overrides` → the row's switches → steps and output folder.

    The row's switches are applied after the user's overrides, so an override cannot silently undo an ablation.
    """
    if row not in ABLATION_ROWS:
        raise ValueError(f"unknown ablation row {row!r}; choose from {', '.join(ABLATION_ROWS)}")
    raw = base_config_dict(base_config, overrides)
    apply_overrides(raw, copy.deepcopy(ABLATION_ROWS[row]))
    raw["output_dir"] = str(Path(output_dir) / row)
    if max_train_steps is not None:
        raw["max_train_steps"] = max_train_steps
    return TrainConfig.from_dict(raw, source=f"ablation row {row!r}")


def _identity(config: TrainConfig) -> str:
    """What makes two runs the same experiment: every training field but the output folder, and the resolved model
    config instead of its overrides (so `num_levels: 4` on a 4-level preset counts as no change)."""
    from pyratok.training.train import build_model_config

    fields = {k: v for k, v in config.to_dict().items() if k not in ("output_dir", "model_overrides")}
    fields["model"] = build_model_config(config).to_init_kwargs()
    return json.dumps(fields, sort_keys=True, default=str)


def _noop_switches(base: TrainConfig, row: str) -> list[str]:
    """The row's switches that the base recipe already has (e.g. `use_drift_loss=false`)."""
    from pyratok.training.train import build_model_config

    model_config = build_model_config(base)
    base_fields = base.to_dict()
    out = []
    for key, value in ABLATION_ROWS[row].items():
        if key.startswith("model_overrides."):
            current = getattr(model_config, key.split(".", 1)[1])
        else:
            current = base_fields
            for part in key.split("."):
                current = current.get(part) if isinstance(current, dict) else None
        if current == value:
            out.append(f"{key.split('.')[-1]}={json.dumps(value)}")
    return out


# ------------------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_row(
    final: str | os.PathLike,
    test_split: str | os.PathLike,
    max_clips: int | None = None,
    num_frames: int | None = None,
    size: int | tuple[int, int] | None = None,
    lpips_net: str | None = None,
    device: str = "cpu",
) -> tuple[dict, dict]:
    """Score one trained row on the test split.

    Returns:
        `(metrics, reports)`: metrics `{"psnr" (dB), "ssim" ([-1, 1]), "lpips" (>= 0 or None), "code_usage_mean"
        (distinct codes / codebook size, mean over levels, in [0, 1]), "code_usage_per_level", "bits_per_pixel",
        "r1_t2v", "r1_v2t" (in [0, 1]), "chance_r1", "num_clips", "prompt_from_caption"}`; reports: the full
        reconstruction and retrieval reports.
    """
    from modeling_pyratok import PyraTokModel

    from .reconstruction import evaluate_reconstruction
    from .retrieval import evaluate_retrieval

    model = PyraTokModel.from_pretrained(str(final)).to(device).eval()
    # A model trained without text (text_dropout 1) is scored as it was trained: without prompts.
    with_text = model.config.text_dropout < 1.0
    recon = evaluate_reconstruction(model, test_split, max_clips=max_clips, num_frames=num_frames,
                                    prompt_from_caption=with_text, lpips_net=lpips_net, size=size)
    retrieval = evaluate_retrieval(model, test_split, max_clips=max_clips, num_frames=num_frames, size=size, ks=(1,))
    usage = [level["codebook_fraction"] for level in recon["code_usage"]]
    metrics = {
        "psnr": recon["psnr"],
        "ssim": recon["ssim"],
        "lpips": recon["lpips"],
        "lpips_unavailable_reason": recon["lpips_unavailable_reason"],
        "code_usage_mean": sum(usage) / len(usage),
        "code_usage_per_level": usage,
        "perplexity_per_level": [level["perplexity"] for level in recon["code_usage"]],
        "bits_per_pixel": recon["bits_per_pixel"],
        "tokens_per_clip": recon["tokens_per_clip"],
        "r1_t2v": retrieval["text_to_video"]["R@1"],
        "r1_v2t": retrieval["video_to_text"]["R@1"],
        "chance_r1": retrieval["chance"]["R@1"],
        "num_clips": recon["num_clips"],
        "prompt_from_caption": recon["prompt_from_caption"],
    }
    del model
    gc.collect()
    return metrics, {"reconstruction": recon, "retrieval": retrieval}


# --------------------------------------------------------------------------------------------------------- markdown


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    return format(value, spec)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


MARKDOWN_COLUMNS = (
    "row", "steps", "PSNR", "SSIM", "LPIPS", "code usage % (mean over levels)", "bits/pixel", "R@1 t2v", "R@1 v2t",
    "paper row", f"paper: {PAPER_COLUMNS[0]}", f"paper: {PAPER_COLUMNS[1]}", "note",
)


def ablation_markdown(result: dict) -> str:
    """The markdown report of a `run_ablation` result: a scale disclaimer, one table, footnotes."""
    scale = result["scale"]
    resolutions = ", ".join("x".join(str(v) for v in r) for r in scale["resolutions"] or [])
    steps = sorted({row["steps"] for row in result["rows"] if row["steps"] is not None})
    steps_text = ", ".join(str(s) for s in steps) if steps else "?"
    steps_text += " optimizer step" + ("" if steps == [1] else "s")
    frames = ", ".join(str(t) for t in scale["num_frames"] or [])
    lines = [
        "# PyraTok ablations (paper Table 6) at tiny scale",
        "",
        f"**Tiny-scale runs: not comparable in absolute value to the paper's numbers.** Every row was trained from "
        f"the same recipe (`{result['base_config']}`, model preset `{scale['model_preset']}`, backbone "
        f"`{scale['backbone']}`) for **{steps_text}** of batch {scale['batch_size']} "
        f"(x{scale['gradient_accumulation_steps']} accumulation), {frames} frames at {resolutions}, "
        f"learning rate {scale['learning_rate']}, seed {scale['seed']}, on `{scale['train_data']}`; only the row's "
        f"switches differ. Each row was evaluated on `{result['test_split']}` ({result['num_clips']} clips). The "
        f"paper's columns are its Table 6 (full scale: Wan 2.2 VAE, Qwen2.5-VL text encoder, COCO-Val and "
        f"WebVid-10M): read the direction of a change between rows, not absolute values.",
        "",
        "| " + " | ".join(MARKDOWN_COLUMNS) + " |",
        "|" + "|".join(" --- " for _ in MARKDOWN_COLUMNS) + "|",
    ]
    for row in result["rows"]:
        m = row["metrics"]
        paper = row["paper"]
        usage = None if m["code_usage_mean"] is None else 100 * m["code_usage_mean"]
        cells = [
            row["label"], _fmt(row["steps"], "d"), _fmt(m["psnr"], ".2f"), _fmt(m["ssim"], ".3f"),
            _fmt(m["lpips"], ".3f"), _fmt(usage, ".3g"), _fmt(m["bits_per_pixel"], ".4g"),
            _fmt(m["r1_t2v"], ".2f"), _fmt(m["r1_v2t"], ".2f"),
            paper["row"] if paper else "—", paper[PAPER_COLUMNS[0]] if paper else "—",
            paper[PAPER_COLUMNS[1]] if paper else "—", row["note"] or "",
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    chance = next((row["metrics"]["chance_r1"] for row in result["rows"] if row["metrics"]["chance_r1"]), None)
    reasons = {row["metrics"]["lpips_unavailable_reason"] for row in result["rows"]} - {None}
    lines += [
        "",
        "- PSNR (dB) / SSIM: mean over clips of per-frame values (PSNR on [-1, 1] frames, data range 2; SSIM on the "
        "intensities they encode). Code usage: distinct codes seen / codebook size, per level, averaged over levels "
        "(bounded by the tokens the test split has). Bits/pixel: token bits per input pixel over all levels. "
        "R@1: zero-shot text↔video retrieval, "
        f"chance = {_fmt(chance, '.2f')}.",
        "- \"same as …\" rows were not trained again: their resolved config equals that row's.",
        "- Table 6's last row (\"PyraTok\") repeats the default with its two columns swapped; the full model is "
        "compared with \"4 Blocks (Default)\". Sections 5 (multi-modal models) and 6 (pretrained VAEs) are not "
        "config switches of this recipe and are left out.",
    ]
    if reasons:
        lines.append(f"- LPIPS not computed: {sorted(reasons)[0]}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------- pipeline


def _scale(config: TrainConfig) -> dict:
    data = config.data
    files = data.get("data_files") or data.get("dataset_name")
    return {
        "model_preset": config.model_preset,
        "backbone": config.backbone_name_or_path or "preset default",
        "batch_size": data.get("batch_size"),
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "num_frames": data.get("num_frames"),
        "resolutions": data.get("resolutions"),
        "learning_rate": config.learning_rate,
        "seed": config.seed,
        "train_data": ", ".join(files) if isinstance(files, list) else files,
    }


def _check_finished_run(row_dir: Path, config: TrainConfig) -> None:
    saved = row_dir / "train_config.json"
    if not saved.is_file():
        return
    old = json.loads(saved.read_text())
    new = config.to_dict()
    differ = sorted(k for k in set(old) | set(new) if k not in _RUN_ONLY_FIELDS and old.get(k) != new.get(k))
    if differ:
        raise ValueError(f"{row_dir} was trained with a different config ({', '.join(differ)} differ); "
                         f"use another output_dir or remove that folder")


def _read_summary(row_dir: Path) -> dict:
    path = row_dir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def run_ablation(
    base_config: str | os.PathLike | TrainConfig,
    test_split: str | os.PathLike,
    output_dir: str | os.PathLike,
    rows: list[str] | str | None = None,
    max_train_steps: int | None = None,
    overrides: list[str] | None = None,
    max_clips: int | None = None,
    resume: bool = False,
    num_frames: int | None = None,
    size: int | tuple[int, int] | None = None,
    lpips_net: str | None = "alex",
    device: str = "cpu",
) -> dict:
    """Train and evaluate the selected Table 6 rows; write `output_dir/ablation.md` and `output_dir/ablation.json`.

    Args:
        base_config: the recipe every row starts from (YAML path or `TrainConfig`).
        test_split: folder of `*.tar` eval shards the rows are scored on.
        output_dir: row runs go to `output_dir/<row>/` (a `training.train` output folder each).
        rows: row names of `ABLATION_ROWS` (or their labels); default all, always in table order.
        max_train_steps: optimizer steps per row (default: the recipe's).
        overrides: `key=value` training overrides applied to the base recipe before the row's switches
            (e.g. `data.batch_size=4`).
        max_clips, num_frames, size: test clip selection and geometry (`evaluation.clips.ClipReader`).
        resume: reuse `output_dir/<row>/final` when it exists (its config must match) and continue an interrupted row
            from its latest checkpoint; without it, a row folder that already holds a run is an error.
        lpips_net: LPIPS trunk for the reconstruction scores (`"alex"`, ...; never downloaded: without cached
            weights LPIPS is reported as None with the reason) or None to skip LPIPS.
        device: where the trained models are evaluated (training places itself through `accelerate`).

    Returns:
        `{"task", "base_config", "test_split", "output_dir", "max_train_steps", "train_overrides", "scale",
        "num_clips", "paper_columns", "rows": [{"row", "label", "overrides", "status" ("trained", "resumed",
        "reused", "same_as"), "same_as", "noop_switches", "note", "steps", "wall_time_s", "final", "metrics",
        "paper": {"row", <paper columns>} or None}], "markdown", "json"}`.
    """
    from accelerate.state import AcceleratorState

    from pyratok.training.train import list_checkpoints, train

    from .cli import json_safe

    names = resolve_rows(rows)
    split_shards(test_split)  # fail on an empty split before hours of training
    output_dir = Path(output_dir)
    base = TrainConfig.from_dict(base_config_dict(base_config, overrides), source="base recipe")
    configs = {name: build_row_config(base_config, name, output_dir, max_train_steps, overrides) for name in names}

    # Plan first (duplicates, existing folders), so that a bad request fails before any training.
    identities: dict[str, str] = {}
    same_as: dict[str, str] = {}
    for name, config in configs.items():
        identity = _identity(config)
        if identity in identities:
            same_as[name] = identities[identity]
        else:
            identities[identity] = name
    for name, config in configs.items():
        row_dir = Path(config.output_dir)
        if name in same_as or not row_dir.exists() or not any(row_dir.iterdir()):
            continue
        if not resume:
            raise ValueError(f"{row_dir} already holds a run; pass resume=True (--resume) to reuse it, or choose "
                             f"another output_dir")
        _check_finished_run(row_dir, config)

    results: dict[str, dict] = {}
    reports: dict[str, dict] = {}
    num_clips = None
    for name, config in configs.items():
        info = ROW_INFO[name]
        noop = _noop_switches(base, name)
        paper = None
        if info.paper_row is not None:
            cells = PAPER_TABLE6[info.paper_row]
            paper = {"row": info.paper_row, PAPER_COLUMNS[0]: cells[0], PAPER_COLUMNS[1]: cells[1]}
        entry = {"row": name, "label": info.label, "overrides": ABLATION_ROWS[name], "same_as": same_as.get(name),
                 "noop_switches": noop, "note": info.note, "paper": paper}
        if name in same_as:
            other = results[same_as[name]]
            why = f"{', '.join(noop)} already in the base recipe" if noop else "identical resolved config"
            entry.update(status="same_as", note=f"same as {other['label']} ({why})", steps=other["steps"],
                         wall_time_s=0.0, final=other["final"], metrics=other["metrics"])
            results[name] = entry
            continue
        if noop and len(noop) == len(ABLATION_ROWS[name]):  # the row is the base recipe itself
            entry["note"] = "; ".join(filter(None, [info.note, f"{', '.join(noop)} already in the base recipe"]))
        row_dir = Path(config.output_dir)
        final = row_dir / "final"
        if resume and (final / "config.json").is_file():
            status, summary = "reused", _read_summary(row_dir)
            logger.info(f"ablation row {name}: reusing {final}")
        else:
            status = "trained"
            if resume and list_checkpoints(str(row_dir)):
                config.resume_from_checkpoint, status = "latest", "resumed"
            logger.info(f"ablation row {name}: training {config.max_train_steps} steps into {row_dir}")
            try:
                summary = train(config)
            finally:
                AcceleratorState._reset_state(True)  # the next row builds a fresh Accelerator in this process
                gc.collect()
        metrics, reports[name] = evaluate_row(final, test_split, max_clips=max_clips, num_frames=num_frames,
                                              size=size, lpips_net=lpips_net, device=device)
        (row_dir / "ablation_eval.json").write_text(
            json.dumps(json_safe(reports[name]), indent=2, allow_nan=False) + "\n"
        )
        num_clips = metrics["num_clips"]
        entry.update(status=status, steps=summary.get("steps"), wall_time_s=summary.get("wall_time_s"),
                     final=str(final), metrics=metrics)
        results[name] = entry

    output_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "task": "ablation",
        "base_config": str(base_config) if not isinstance(base_config, TrainConfig) else "<TrainConfig>",
        "test_split": str(test_split),
        "output_dir": str(output_dir),
        "max_train_steps": max_train_steps if max_train_steps is not None else base.max_train_steps,
        "train_overrides": list(overrides or []),
        "scale": _scale(base),
        "num_clips": num_clips,
        "paper_columns": list(PAPER_COLUMNS),
        "rows": [results[name] for name in names],
        "markdown": str(output_dir / "ablation.md"),
        "json": str(output_dir / "ablation.json"),
    }
    (output_dir / "ablation.md").write_text(ablation_markdown(result))
    (output_dir / "ablation.json").write_text(json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n")
    return result


# -------------------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Ablation flags for `pyratok-eval ablation` (`--data` is the test split; `--model` is not used: every row
    trains its own model)."""
    parser.add_argument("--base-config", default=str(DEFAULT_BASE_CONFIG),
                        help="training recipe every row starts from (default: training/configs/tiny-cpu.yaml)")
    parser.add_argument("--rows", default=None,
                        help=f"comma-separated rows (default: all): {', '.join(ABLATION_ROWS)}")
    parser.add_argument("--max-train-steps", type=int, default=None, help="optimizer steps per row (default: recipe)")
    parser.add_argument("--train-override", action="append", default=[], metavar="KEY=VALUE",
                        help="training override applied before the row switches, e.g. data.batch_size=4 "
                             "(repeatable; values parsed as YAML)")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR,
                        help="row runs, ablation.md and ablation.json go here")
    parser.add_argument("--resume", action="store_true",
                        help="reuse finished rows (OUTPUT_DIR/<row>/final) and continue interrupted ones")
    parser.add_argument("--lpips-net", default="alex", choices=("alex", "vgg", "squeeze", "none"),
                        help="LPIPS trunk for the row scores ('none' skips LPIPS; uncached weights give null)")


def run(args: argparse.Namespace) -> dict:
    """`pyratok-eval ablation`: `run_ablation` with `--data` as the test split."""
    if args.max_train_steps is not None and args.max_train_steps < 1:
        raise ValueError(f"--max-train-steps must be >= 1, got {args.max_train_steps}")
    started = time.perf_counter()
    result = run_ablation(
        args.base_config, args.data, args.output_dir, rows=args.rows,
        max_train_steps=args.max_train_steps, overrides=args.train_override, max_clips=args.max_clips,
        resume=args.resume, num_frames=args.num_frames, size=args.size,
        lpips_net=None if args.lpips_net == "none" else args.lpips_net, device=args.device,
    )
    logger.info(f"ablation done in {time.perf_counter() - started:.0f}s: {result['markdown']}")
    return result


__all__ = [
    "ABLATION_ROWS",
    "PAPER_COLUMNS",
    "PAPER_TABLE6",
    "ROW_INFO",
    "RowInfo",
    "ablation_markdown",
    "add_arguments",
    "base_config_dict",
    "build_row_config",
    "evaluate_row",
    "resolve_rows",
    "run",
    "run_ablation",
]

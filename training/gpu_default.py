"""Train the default checkpoint on one GPU within a time budget, and ship it only if it beats the current default.

    python -m training.gpu_default                      # on a GPU machine, from the repository root
    python -m training.gpu_default --smoke              # the whole path on a CPU in a few minutes (tiny data/steps)

Steps (issue 25):

1. Data: `data/procedural` (`python -m pyratok.training.make_shards --out data/procedural`, the default's seed-0 clips)
   unless it is already there (bring it along: rendering takes ~10 min on one core).
2. Backbone (`training/configs/gpu-backbone-z16.yaml`: z_dim 16, chroma and saliency-weighted L1), then PyraTok
   (`training/configs/gpu-pyratok-z16.yaml`: the CPU default's stage 2 on that backbone). Each stage first runs a
   short calibration (`--calibration-steps`) and reads its seconds per step from the trainer's `logs.jsonl`; the
   stage then gets as many steps as fit its share of `--budget-minutes` (the backbone `--backbone-share`), startup
   included. `--backbone-steps` / `--pyratok-steps` skip the calibration.
3. `pyratok-eval reconstruction` on the test split for the candidate and the current default (`--target`): object
   CIEDE2000, object PSNR, colour-name survival, whole-frame PSNR / SSIM.
4. The candidate's `config.json` and `model.safetensors` replace the target's only if its object ΔE is lower AND its
   whole-frame PSNR is higher than the current default's minus `--psnr-tolerance` (0: strictly higher). The model
   card (`README.md`) is left for a person to update with the numbers in `OUT/decision.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BACKBONE_RECIPE = "training/configs/gpu-backbone-z16.yaml"
PYRATOK_RECIPE = "training/configs/gpu-pyratok-z16.yaml"
DEFAULT_TARGET = "model_cards/pyratok-small-procedural"
SHIPPED_FILES = ("config.json", "model.safetensors")


def _run(cmd: list[str], log: Path) -> float:
    """Run `cmd` in the repository root (stdout + stderr to `log`); returns its wall time. Fails loudly."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - start
    if rc != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"command failed (exit {rc}) after {wall:.0f} s: {' '.join(cmd)}\n{tail}")
    return wall


def seconds_per_step(log_path: Path) -> float:
    """Steady-state seconds per optimizer step from a trainer `logs.jsonl` (records with `step` and `elapsed_s`):
    the slope between the first and the last logged step (the first absorbs start-up)."""
    rows = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "elapsed_s" in r]
    if len(rows) < 2 or rows[-1]["step"] <= rows[0]["step"]:
        raise ValueError(f"{log_path}: need two logged steps to time a step, got {len(rows)}")
    return (rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]) / (rows[-1]["step"] - rows[0]["step"])


def steps_for_budget(budget_s: float, startup_s: float, step_s: float, minimum: int = 1) -> int:
    """How many steps fit `budget_s` seconds when a run costs `startup_s` plus `step_s` per step (>= minimum)."""
    if step_s <= 0:
        raise ValueError(f"step_s must be > 0, got {step_s}")
    return max(minimum, math.floor((budget_s - startup_s) / step_s))


def _train_cmd(recipe: str, out_dir: Path, steps: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "pyratok.training.train", "--config", recipe, "--output_dir", str(out_dir),
            "--max_train_steps", str(steps), "--progress_bar", "false", *extra]


def train_stage(name: str, recipe: str, out: Path, budget_s: float, steps: int | None, calibration_steps: int,
                extra: list[str], max_steps: int | None = None) -> dict:
    """Calibrate (unless `steps` is given), then train one stage; returns its timing record."""
    record: dict = {"stage": name, "recipe": recipe, "budget_s": round(budget_s, 1)}
    if steps is None:
        cal_dir = out / f"{name}-calibration"
        shutil.rmtree(cal_dir, ignore_errors=True)
        log_every = max(1, calibration_steps // 4)
        wall = _run(_train_cmd(recipe, cal_dir, calibration_steps, [*extra, "--logging_steps", str(log_every),
                                                                    "--checkpointing_steps", "100000"]),
                    out / f"{name}-calibration.log")
        step_s = seconds_per_step(cal_dir / "logs.jsonl")
        startup_s = max(0.0, wall - calibration_steps * step_s)
        remaining = budget_s - wall
        steps = steps_for_budget(remaining, startup_s, step_s)
        record.update({"calibration_steps": calibration_steps, "calibration_wall_s": round(wall, 1),
                       "seconds_per_step": round(step_s, 4), "startup_s": round(startup_s, 1)})
        shutil.rmtree(cal_dir, ignore_errors=True)
    if max_steps is not None:
        steps = min(steps, max_steps)
    stage_dir = out / name
    shutil.rmtree(stage_dir, ignore_errors=True)
    wall = _run(_train_cmd(recipe, stage_dir, steps, extra), out / f"{name}.log")
    record.update({"steps": steps, "wall_s": round(wall, 1), "final": str(stage_dir / "final")})
    return record


def evaluate(model: Path, data: Path, report: Path, device: str, max_clips: int | None) -> dict:
    cmd = [sys.executable, "-m", "pyratok.evaluation.cli", "reconstruction", "--model", str(model),
           "--data", str(data),
           "--lpips-net", "none", "--device", device, "--out", str(report)]
    if max_clips is not None:
        cmd += ["--max-clips", str(max_clips)]
    wall = _run(cmd, report.with_suffix(".log"))
    results = json.loads(report.read_text())["results"]
    keys = ("psnr", "ssim", "object_delta_e", "object_psnr", "object_name_survival", "num_clips")
    return {**{k: results[k] for k in keys}, "delta_e_76": results["objects"]["delta_e_76"],
            "num_objects": results["objects"]["num_objects"], "wall_s": round(wall, 1), "report": str(report)}


def is_better(candidate: dict, current: dict, psnr_tolerance: float = 0.0) -> bool:
    """Lower object ΔE (CIEDE2000) and whole-frame PSNR above the current one's minus `psnr_tolerance`."""
    return (candidate["object_delta_e"] < current["object_delta_e"]
            and candidate["psnr"] > current["psnr"] - psnr_tolerance)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-minutes", type=float, default=7.0,
                        help="training time of both stages together, calibration and start-up included")
    parser.add_argument("--backbone-share", type=float, default=0.6, help="share of the budget for the backbone")
    parser.add_argument("--backbone-steps", type=int, default=None, help="fixed backbone steps (no calibration)")
    parser.add_argument("--pyratok-steps", type=int, default=None, help="fixed PyraTok steps (no calibration)")
    parser.add_argument("--calibration-steps", type=int, default=40)
    parser.add_argument("--data", default="data/procedural", help="shard folder with train/ and test/")
    parser.add_argument("--out", default="out/gpu-default")
    parser.add_argument("--target", default=DEFAULT_TARGET, help="checkpoint folder to compare against and replace")
    parser.add_argument("--device", default="auto", help="evaluation device (training uses accelerate's)")
    parser.add_argument("--psnr-tolerance", type=float, default=0.0, help="dB of PSNR a candidate may lose")
    parser.add_argument("--no-ship", action="store_true", help="evaluate and decide, but never copy the weights")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU check of the whole path: tiny shards, 2-step stages, batch 2, a scratch target")
    args = parser.parse_args(argv)
    if not 0 < args.backbone_share < 1 or args.budget_minutes <= 0 or args.calibration_steps < 2:
        raise SystemExit(f"need 0 < --backbone-share < 1, --budget-minutes > 0 and --calibration-steps >= 2; got "
                         f"{args.backbone_share}, {args.budget_minutes}, {args.calibration_steps}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = REPO / args.out
    out.mkdir(parents=True, exist_ok=True)
    data, target = REPO / args.data, REPO / args.target
    extra: list[str] = []
    max_clips, max_steps = None, None
    started = time.perf_counter()
    if args.smoke:
        out = REPO / args.out / "smoke"
        data = out / "data"
        scratch = out / "target"
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(target, scratch)
        target = scratch
        args.calibration_steps, max_steps, max_clips = 2, 2, 2
        extra = ["--data.batch_size", "2", "--data.shuffle_buffer", "4"]
    if not (data / "train").is_dir() or not (data / "test" / "annotations_vis.json").is_file():
        shards = (["--train", "16", "--val", "0", "--test", "4"] if args.smoke else [])
        make = [sys.executable, "-m", "pyratok.training.make_shards", "--out", str(data), *shards]
        _run(make, out / "make_shards.log")
    extra += ["--data.data_files", f"[{data}/train/*.tar]"]

    budget = args.budget_minutes * 60
    backbone = train_stage("backbone", BACKBONE_RECIPE, out, budget * args.backbone_share, args.backbone_steps,
                           args.calibration_steps, extra, max_steps)
    spent = time.perf_counter() - started
    pyratok = train_stage("pyratok", PYRATOK_RECIPE, out, max(budget - spent, 60.0), args.pyratok_steps,
                          args.calibration_steps, [*extra, "--backbone_name_or_path", backbone["final"]], max_steps)
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    candidate = evaluate(Path(pyratok["final"]), data / "test", out / "eval-candidate.json", device, max_clips)
    current = evaluate(target, data / "test", out / "eval-current.json", device, max_clips)
    better = is_better(candidate, current, args.psnr_tolerance)
    shipped = better and not args.no_ship
    if shipped:
        for name in SHIPPED_FILES:
            shutil.copy2(Path(pyratok["final"]) / name, target / name)
    decision = {
        "candidate": candidate, "current": current, "better": better, "shipped": shipped, "target": str(target),
        "rule": f"object ΔE2000 lower and whole-frame PSNR > current - {args.psnr_tolerance} dB",
        "stages": [backbone, pyratok], "total_wall_s": round(time.perf_counter() - started, 1),
    }
    (out / "decision.json").write_text(json.dumps(decision, indent=2) + "\n")
    print(json.dumps(decision, indent=2))
    return decision


if __name__ == "__main__":
    main()

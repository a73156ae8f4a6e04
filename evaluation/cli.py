"""`pyratok-eval`: run one evaluation task on an eval split and write a JSON report.

    pyratok-eval <task> [--model PATH] --data SPLIT_DIR [--out report.json] [task flags]

Tasks: `reconstruction`, `localization`, `retrieval` (this package) and `segmentation`, `visualize`, `ablation`,
`probe`, `backbone`, `generation` (`evaluation/<task>.py`, imported only when asked for) and `train-classifier`
(`evaluation/video_classifier.py`). A task module provides
`add_arguments(parser: argparse.ArgumentParser) -> None` and `run(...) -> dict`; `run` receives the parsed arguments
as its first positional argument and, if it has a parameter named `model`, the loaded `PyraTokModel` as `model=`.

The report holds the command, model, data, settings, timing and the task's results; non-finite floats (e.g. the PSNR
of an identical clip) are written as the strings `"inf"`, `"-inf"`, `"nan"` (JSON has no such numbers). Errors exit
with status 2 and one line `pyratok-eval: error: ...`.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from pyratok.data_sources import unwritable_reason

PROG = "pyratok-eval"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO_ROOT / "model_cards" / "pyratok-small-procedural"
BUILTIN_TASKS = ("reconstruction", "localization", "retrieval")
EXTERNAL_TASKS = ("segmentation", "visualize", "ablation", "probe", "backbone", "train-classifier", "generation")
TASKS = BUILTIN_TASKS + EXTERNAL_TASKS
# task name → module under pyratok.evaluation, where they differ
TASK_MODULES = {"train-classifier": "video_classifier"}


class EvalError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------------------- helpers


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err


def _size(text: str) -> int | tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected SIZE or HxW, got {text!r}") from err
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise argparse.ArgumentTypeError(f"expected SIZE or HxW, got {text!r}")


def _threshold(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def json_safe(obj):
    """Recursively replace non-finite floats by strings and tuples by lists, so `json.dumps` writes strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return json_safe(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return json_safe(obj.item())
    return obj


def load_model(path: str | os.PathLike, device: str = "cpu") -> torch.nn.Module:
    """Load a `PyraTokModel` checkpoint folder for evaluation (eval mode, on `device`)."""
    from modeling_pyratok import PyraTokModel

    folder = Path(path)
    if not folder.exists():
        hint = " (the shipped checkpoint is not written yet; pass --model PATH)" if folder == DEFAULT_MODEL else ""
        raise EvalError(f"model folder not found: {folder}{hint}")
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise EvalError(f"not a PyraTok checkpoint folder (no config.json): {folder}")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one report line on stdout, errors alone on stderr
        model = PyraTokModel.from_pretrained(str(folder))
    except (OSError, ValueError) as err:
        raise EvalError(f"cannot load model from {folder}: {err}") from err
    return model.to(device).eval()


def check_report_path(path: str) -> Path:
    """Fail before any work when the report cannot be written to `path`: it is a folder, or its nearest existing
    ancestor is a file or not writable."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise EvalError(f"--out {out} is a folder; give a file name for the report")
    reason = unwritable_reason(out.parent)
    if reason is not None:
        raise EvalError(f"cannot write the report {out}: {reason}")
    return out


def _resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EvalError(f"--device {name} requested but CUDA is not available")
    return name


# ------------------------------------------------------------------------------------------------------ built-in tasks


def _add_reconstruction(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-prompt", action="store_true", help="tokenize without the captions as prompts")
    parser.add_argument("--lpips-net", default="alex", choices=("alex", "vgg", "squeeze", "none"),
                        help="LPIPS trunk ('none' skips LPIPS)")
    parser.add_argument("--sweep-sizes", type=_int_list, default=None, metavar="S1,S2,...",
                        help="also report code usage per level at these square sizes (paper Fig. 29)")


def _run_reconstruction(args: argparse.Namespace, model: torch.nn.Module) -> dict:
    from .reconstruction import evaluate_reconstruction, resolution_sweep

    results = evaluate_reconstruction(
        model, args.data, max_clips=args.max_clips, num_frames=args.num_frames,
        prompt_from_caption=not args.no_prompt, lpips_net=None if args.lpips_net == "none" else args.lpips_net,
        size=args.size,
    )
    if args.sweep_sizes:
        results["resolution_sweep"] = resolution_sweep(
            model, args.data, sizes=args.sweep_sizes, max_clips=args.max_clips, num_frames=args.num_frames,
            prompt_from_caption=not args.no_prompt,
        )
    return results


def _add_localization(parser: argparse.ArgumentParser) -> None:
    from .localization import DEFAULT_THRESHOLD, DEFAULT_WINDOW
    from .metrics import DEFAULT_TIOU_THRESHOLDS

    parser.add_argument("--annotations", default=None,
                        help="ActivityNet JSON or THUMOS14 folder (default: DATA/annotations_localization.json)")
    parser.add_argument("--level", type=int, default=0, help="pyramid level of the frame descriptors (0 = q^(1))")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="sliding window K in frames")
    parser.add_argument("--stride", type=int, default=1, help="sliding window stride in frames")
    parser.add_argument("--threshold", type=_threshold, default=DEFAULT_THRESHOLD,
                        help="τ: a number, 'mean', 'mean+std' or 'mean+<k>std'")
    parser.add_argument("--max-segments", type=int, default=3, help="segments per video and query")
    parser.add_argument("--no-negatives", action="store_true", help="query each video with its own labels only")
    parser.add_argument("--condition-on-query", action="store_true",
                        help="encode each video with the query as prompt (one pass per query)")
    parser.add_argument("--tiou-thresholds", type=_float_list, default=list(DEFAULT_TIOU_THRESHOLDS))
    parser.add_argument("--no-predictions", action="store_true", help="leave the predictions out of the report")


def _run_localization(args: argparse.Namespace, model: torch.nn.Module) -> dict:
    from .localization import evaluate_localization

    return evaluate_localization(
        model, args.data, annotations=args.annotations, max_clips=args.max_clips, num_frames=args.num_frames,
        size=args.size, level=args.level, window=args.window, stride=args.stride, threshold=args.threshold,
        max_segments=args.max_segments, negatives=not args.no_negatives, condition_on_query=args.condition_on_query,
        tiou_thresholds=args.tiou_thresholds, keep_predictions=not args.no_predictions,
    )


def _add_retrieval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ks", type=_int_list, default=[1, 5, 10], help="recall cut-offs, e.g. 1,5,10")


def _run_retrieval(args: argparse.Namespace, model: torch.nn.Module) -> dict:
    from .retrieval import evaluate_retrieval

    return evaluate_retrieval(model, args.data, max_clips=args.max_clips, num_frames=args.num_frames,
                              size=args.size, ks=args.ks)


_BUILTIN: dict[str, tuple[Callable, Callable]] = {
    "reconstruction": (_add_reconstruction, _run_reconstruction),
    "localization": (_add_localization, _run_localization),
    "retrieval": (_add_retrieval, _run_retrieval),
}


def _task_functions(task: str) -> tuple[Callable, Callable]:
    if task in _BUILTIN:
        return _BUILTIN[task]
    module_name = TASK_MODULES.get(task, task)
    name = f"pyratok.evaluation.{module_name}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name == name:
            raise EvalError(f"task {task} is not available (evaluation/{module_name}.py is not installed)") from err
        raise EvalError(f"task {task} is not available: importing {name} failed: {err}") from err
    missing = [f for f in ("add_arguments", "run") if not callable(getattr(module, f, None))]
    if missing:
        raise EvalError(f"task {task} is not available: {name} lacks {', '.join(missing)}")
    return module.add_arguments, module.run


# ----------------------------------------------------------------------------------------------------------- parser


def _top_help() -> str:
    lines = [
        f"usage: {PROG} <task> [--model PATH] --data SPLIT_DIR [--out report.json] [task flags]",
        "",
        "Evaluate a PyraTok tokenizer on an eval split and write a JSON report.",
        "",
        "tasks:",
        "  reconstruction   PSNR / SSIM / LPIPS, code usage, bits per pixel (--sweep-sizes: usage vs resolution);",
        "                   object colour ΔE / PSNR / name survival inside the split's ground-truth masks",
        "  localization     zero-shot temporal action localization mAP (paper B.3)",
        "  retrieval        zero-shot text<->video recall@k",
        "  segmentation     zero-shot text-guided video segmentation (evaluation/segmentation.py)",
        "  visualize        qualitative figures (evaluation/visualize.py)",
        "  ablation         ablation tables (evaluation/ablation.py)",
        "  probe            luminance / chroma linear probes of the encoder's layers (evaluation/probe.py)",
        "  backbone         the continuous KL VAE alone: PSNR per causal chunk, chroma (evaluation/backbone.py)",
        "  train-classifier train the small procedural-clip classifier used by `generation` (--data = train split)",
        "  generation       text-to-video priors: Fréchet distance (I3D with --i3d, else classifier features), text",
        "                   and temporal consistency, seconds per clip (evaluation/generation.py)",
        "",
        f"`{PROG} <task> --help` lists a task's flags.",
    ]
    return "\n".join(lines)


def build_parser(task: str, add_task_arguments: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"{PROG} {task}", description=f"pyratok-eval task '{task}'")
    common = parser.add_argument_group("common")
    common.add_argument("--model", default=str(DEFAULT_MODEL),
                        help="PyraTok checkpoint folder (default: the shipped model_cards/pyratok-small-procedural)")
    common.add_argument("--data", required=True,
                        help="eval split: a folder of *.tar shards (e.g. DIR/val), one .tar shard, or a quoted glob")
    common.add_argument("--out", default=None, help="report JSON path (default: print the report)")
    common.add_argument("--max-clips", type=int, default=None, help="evaluate at most this many clips")
    common.add_argument("--num-frames", type=int, default=None, help="frames per clip, 4k+1 (default: all valid)")
    common.add_argument("--size", type=_size, default=None, help="resize + centre-crop clips to SIZE or HxW")
    common.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    common.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    common.add_argument("--seed", type=int, default=0, help="torch seed (for any random step of a task)")
    add_task_arguments(parser.add_argument_group(task))
    return parser


def _needs_model(run: Callable) -> bool:
    try:
        return "model" in inspect.signature(run).parameters
    except (TypeError, ValueError):
        return False


def _summary(results: dict) -> dict:
    """Top-level scalars and small dicts of a result, for the console."""
    return {k: v for k, v in results.items() if isinstance(v, (int, float, str, type(None))) or
            (isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values()) and len(v) <= 12)}


def _run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_help())
        return 0 if argv else 2
    task = argv[0]
    if task not in TASKS:
        raise EvalError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    add_arguments, run = _task_functions(task)
    parser = build_parser(task, add_arguments)
    args = parser.parse_args(argv[1:])
    args.task = task
    if args.threads is not None:
        if args.threads < 1:
            raise EvalError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.out is not None:
        check_report_path(args.out)
    if task in BUILTIN_TASKS:
        from .clips import split_shards

        split_shards(args.data)  # fail on a missing or empty split before spending time on the model
    elif not Path(args.data).exists():
        raise EvalError(f"data not found: {args.data}")
    args.device = _resolve_device(args.device)

    start = time.perf_counter()
    if _needs_model(run):
        model = load_model(args.model, args.device)
        results = run(args, model=model)
    else:
        results = run(args)
    if not isinstance(results, dict):
        raise EvalError(f"task {task} returned {type(results).__name__}, not a dict")
    report = {
        "command": " ".join([PROG] + [shlex.quote(a) for a in argv]),
        "task": task,
        "model": str(Path(args.model).resolve()) if _needs_model(run) else args.model,
        "data": str(Path(args.data).resolve()),
        "settings": {k: v for k, v in vars(args).items() if k not in ("model", "data", "out", "task")},
        "torch_version": torch.__version__,
        "seconds": round(time.perf_counter() - start, 2),
        "results": results,
    }
    text = json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        out = Path(args.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
        except OSError as err:
            raise EvalError(f"cannot write the report {out}: {err}") from None
        print(json.dumps(json_safe({"task": task, "out": str(out), **_summary(results)})))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `pyratok-eval`; returns the exit status (0 ok, 2 error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _run(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2, message already printed)
        return exit_.code if isinstance(exit_.code, int) else 2
    except (EvalError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2


__all__ = ["DEFAULT_MODEL", "TASKS", "build_parser", "json_safe", "load_model", "main"]


if __name__ == "__main__":
    sys.exit(main())

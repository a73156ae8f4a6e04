"""Mutation testing of the test suite: apply one small, plausible bug at a time and check that a test fails.

A self-written AST mutator (no dependency). It enumerates every mutation site in `modeling_pyratok/`, `training/` and
`evaluation/`, samples `--per-package` mutants per package with a fixed `--seed` (round-robin over its files), and for
each one:

1. copies the repository once into a temporary folder (the working tree is never modified),
2. writes the mutated file there (only the mutated expression's source span changes, so the diff is one line or a few),
3. runs `python -m pytest -x -q` on the test files that cover that source file (`TEST_MAP`, plus any
   `tests/test_invariants_*.py` that imports the module), with `--timeout` seconds per mutant,
4. restores the file.

A mutant is *killed* when pytest exits with 1 (a test failed), *survived* on 0, *timeout* when it runs past the
limit (left out of the kill rate), and *error* otherwise (collection error, crash: also a detection, counted apart).
Before the mutants, each test group runs once unmutated (unless `--no-baseline`); a group that does not pass on the
original code is reported and its mutants are skipped.

Operators: comparison flips (`<`↔`<=`, `>`↔`>=`, `==`↔`!=`, `is`↔`is not`, `in`↔`not in`), `+`↔`-`, `*`↔`/`,
`//`→`/`, `**`→`*`, numeric constant off by one (`n`→`n + 1`), dropping a `dim=`/`keepdim=`/`axis=` argument,
swapping the first two positional arguments of a call, `.mean()`↔`.sum()`, `min`↔`max`, negating an `if`/`while`/
conditional-expression test, `and`↔`or`, dropping a unary minus or `not`, and dropping one factor of a product (a
`*` weight). Docstrings, strings, annotations, `raise` and `assert` statements are not mutated.

Usage (long: minutes per mutant on a busy CPU; not part of the pytest run):

    nice -n 19 python benchmarks/mutation.py --out mutation.json               # the default sample (seed 0)
    nice -n 19 python benchmarks/mutation.py --source /tmp/base --out before.json  # the suite of another tree
    nice -n 19 python benchmarks/mutation.py --carry before.json --out after.json  # rerun only the non-killed ones

`--carry` reuses the kills of an earlier run of the same sample (same seed and source files): adding tests can only
kill more, so only the earlier survivors, time-outs and skips run again. `--list` prints the sample without running.
Prints one JSON object (also written to `--out`): totals and per-package counts, each survivor's location and diff.
"""

from __future__ import annotations

import argparse
import ast
import copy
import difflib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("modeling_pyratok", "pyratok", "training", "evaluation")
SKIP_FILES = {"__init__.py"}
DEFAULT_SEED = 0
DEFAULT_PER_PACKAGE = 20

# Source file -> the test files that exercise it (kept small: every mutant runs its whole group when it survives).
TEST_MAP: dict[str, list[str]] = {
    "modeling_pyratok/quantizer_pyratok.py": ["test_quantizer.py", "test_entropy_reference.py"],
    "modeling_pyratok/modeling_pyratok.py": [
        "test_modeling.py", "test_autoencoder.py", "test_streaming.py", "test_invariants_quantizer.py"
    ],
    "modeling_pyratok/autoencoder_pyratok.py": ["test_autoencoder.py"],
    "modeling_pyratok/backbone_pyratok.py": ["test_backbone.py"],
    "modeling_pyratok/checkpoint_pyratok.py": ["test_checkpoints.py", "test_official_checkpoint.py"],
    "modeling_pyratok/configuration_pyratok.py": ["test_config.py", "test_presets.py"],
    "modeling_pyratok/text_encoder_pyratok.py": ["test_modeling.py"],
    "modeling_pyratok/convert_official.py": ["test_official_checkpoint.py"],
    "training/losses.py": ["test_losses.py"],
    "training/objective.py": ["test_losses.py", "test_train.py"],
    "training/train.py": ["test_train.py"],
    "training/optimization.py": ["test_optimization.py"],
    "training/heldout.py": ["test_heldout.py"],
    "training/data.py": ["test_data.py"],
    "training/heads.py": ["test_heads.py"],
    "training/config.py": ["test_recipes.py", "test_config.py"],
    "pyratok/cli.py": ["test_cli.py", "test_user_faults.py"],
    "training/make_shards.py": ["test_make_shards.py"],
    "pyratok/video_io.py": ["test_video_io.py"],
    "pyratok/quality.py": ["test_losses.py", "test_heldout.py", "test_invariants_evaluation.py"],
    "training/model_card.py": ["test_train.py"],
    "evaluation/ablation.py": ["test_eval_ablation.py"],
    "evaluation/backbone.py": ["test_eval_backbone.py"],
    "evaluation/cli.py": ["test_eval_tasks.py", "test_eval_segmentation.py"],
    "evaluation/clips.py": ["test_eval_tasks.py"],
    "evaluation/crf.py": ["test_eval_segmentation.py"],
    "evaluation/localization.py": ["test_eval_metrics.py", "test_eval_tasks.py"],
    "evaluation/metrics.py": ["test_eval_metrics.py"],
    "evaluation/probe.py": ["test_eval_probe.py"],
    "evaluation/reconstruction.py": ["test_eval_metrics.py", "test_eval_tasks.py"],
    "evaluation/retrieval.py": ["test_eval_tasks.py"],
    "evaluation/segmentation.py": ["test_eval_segmentation.py"],
    "evaluation/semantic.py": ["test_eval_tasks.py"],
    "evaluation/visualize.py": ["test_eval_visualize.py"],
}
# New invariant tests join the group of every module they import (`from pyratok.training.losses import ...`).
EXTRA_TEST_GLOB = "test_invariants_*.py"

COMPARE_FLIPS = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In,
}
BINOP_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
               ast.Pow: ast.Mult}
DIM_KEYWORDS = {"dim", "keepdim", "axis"}
METHOD_SWAPS = {"mean": "sum", "sum": "mean"}
NAME_SWAPS = {"min": "max", "max": "min"}
# Swapping these arguments only raises a TypeError: a trivial kill that would inflate the rate.
TYPE_CHECKS = {"isinstance", "issubclass", "getattr", "hasattr", "setattr"}


@dataclass
class Mutant:
    """One mutation: `file` (repo-relative), 1-based `line`, `operator`, and the replaced source span."""

    file: str
    line: int
    operator: str
    original: str
    replacement: str
    start: tuple[int, int]
    end: tuple[int, int]

    @property
    def package(self) -> str:
        return self.file.split("/")[0]

    def key(self) -> str:
        return f"{self.file}:{self.line}:{self.start[1]}:{self.operator}:{self.replacement}"


def _skipped_spans(tree: ast.AST) -> set[int]:
    """ids of nodes whose subtrees are not mutated: docstrings, annotations, raise / assert, f-strings."""
    skip: set[int] = set()

    def mark(node: ast.AST | None) -> None:
        if node is not None:
            for sub in ast.walk(node):
                skip.add(id(sub))

    for node in ast.walk(tree):
        if isinstance(node, (ast.Raise, ast.Assert, ast.JoinedStr)):
            mark(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            mark(node.returns)
            for arg in [*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs, node.args.vararg,
                        node.args.kwarg]:
                if arg is not None:
                    mark(arg.annotation)
        elif isinstance(node, ast.AnnAssign):
            mark(node.annotation)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                mark(first)
    return skip


def _variants(node: ast.AST) -> list[tuple[str, ast.AST]]:
    """(operator name, mutated copy of `node`) for every operator that applies to this expression node."""
    out: list[tuple[str, ast.AST]] = []
    if isinstance(node, ast.BinOp) and any(
        isinstance(side, ast.Constant) and isinstance(side.value, str) for side in (node.left, node.right)
    ):
        return out  # path joins and string formatting: a swap only crashes
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in COMPARE_FLIPS:
                new = copy.deepcopy(node)
                new.ops[i] = COMPARE_FLIPS[type(op)]()
                out.append(("compare_flip", new))
    elif isinstance(node, ast.BinOp):
        if type(node.op) in BINOP_SWAPS:
            new = copy.deepcopy(node)
            new.op = BINOP_SWAPS[type(node.op)]()
            out.append(("binop_swap", new))
        if isinstance(node.op, ast.Mult):
            out.append(("drop_factor", copy.deepcopy(node.left)))
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
        out.append(("constant_plus_one", ast.Constant(node.value + 1)))
    elif isinstance(node, ast.Call):
        for i, keyword in enumerate(node.keywords):
            if keyword.arg in DIM_KEYWORDS:
                new = copy.deepcopy(node)
                del new.keywords[i]
                out.append(("drop_dim_argument", new))
        positional = [a for a in node.args if not isinstance(a, ast.Starred)]
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if (
            len(positional) >= 2
            and len(positional) == len(node.args)
            and ast.dump(node.args[0]) != ast.dump(node.args[1])
            and name not in TYPE_CHECKS
        ):
            new = copy.deepcopy(node)
            new.args[0], new.args[1] = new.args[1], new.args[0]
            out.append(("swap_arguments", new))
        if isinstance(node.func, ast.Attribute) and node.func.attr in METHOD_SWAPS:
            new = copy.deepcopy(node)
            new.func.attr = METHOD_SWAPS[node.func.attr]
            out.append(("mean_sum_swap", new))
        if isinstance(node.func, ast.Name) and node.func.id in NAME_SWAPS:
            new = copy.deepcopy(node)
            new.func.id = NAME_SWAPS[node.func.id]
            out.append(("min_max_swap", new))
    elif isinstance(node, ast.BoolOp):
        new = copy.deepcopy(node)
        new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        out.append(("and_or_swap", new))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
        out.append(("drop_unary", copy.deepcopy(node.operand)))
    return out


def _condition_nodes(tree: ast.AST) -> set[int]:
    return {id(n.test) for n in ast.walk(tree) if isinstance(n, (ast.If, ast.While, ast.IfExp))}


def enumerate_mutants(root: Path, relpath: str) -> list[Mutant]:
    """Every mutant of one source file, in source order."""
    source = (root / relpath).read_text()
    tree = ast.parse(source)
    skip = _skipped_spans(tree)
    conditions = _condition_nodes(tree)
    lines = source.splitlines(keepends=True)
    mutants = []
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, ast.expr) or getattr(node, "end_lineno", None) is None:
            continue
        variants = _variants(node)
        if id(node) in conditions:
            variants.append(("negate_condition", ast.UnaryOp(ast.Not(), copy.deepcopy(node))))
        start, end = (node.lineno, node.col_offset), (node.end_lineno, node.end_col_offset)
        original = _span(lines, start, end)
        for operator, new in variants:
            replacement = "(" + ast.unparse(ast.fix_missing_locations(new)) + ")"
            if replacement.strip("()") == original.strip("()"):
                continue
            mutants.append(Mutant(relpath, node.lineno, operator, original, replacement, start, end))
    mutants.sort(key=lambda m: (m.line, m.start[1], m.operator, m.replacement))
    return mutants


def _span(lines: list[str], start: tuple[int, int], end: tuple[int, int]) -> str:
    # ast offsets are UTF-8 byte offsets.
    (l0, c0), (l1, c1) = start, end
    if l0 == l1:
        return lines[l0 - 1].encode()[c0:c1].decode()
    parts = [lines[l0 - 1].encode()[c0:].decode(), *lines[l0:l1 - 1], lines[l1 - 1].encode()[:c1].decode()]
    return "".join(parts)


def apply_mutant(source: str, mutant: Mutant) -> str:
    lines = source.splitlines(keepends=True)
    (l0, c0), (l1, c1) = mutant.start, mutant.end
    head = "".join(lines[: l0 - 1]) + lines[l0 - 1].encode()[:c0].decode()
    tail = lines[l1 - 1].encode()[c1:].decode() + "".join(lines[l1:])
    return head + mutant.replacement + tail


def source_files(root: Path) -> list[str]:
    files = []
    for package in PACKAGES:
        for path in sorted((root / package).glob("*.py")):
            if path.name not in SKIP_FILES:
                files.append(f"{package}/{path.name}")
    return files


def sample_mutants(root: Path, per_package: int, seed: int) -> list[Mutant]:
    """`per_package` mutants per package, reproducible by `seed`, spread over files: the files are visited round-robin
    in a random order, each giving one random site per round (so a large generator file does not fill the sample)."""
    rng = random.Random(seed)
    chosen = []
    for package in PACKAGES:
        pools = [
            enumerate_mutants(root, relpath)
            for relpath in source_files(root)
            if relpath.startswith(package + "/") and relpath in TEST_MAP
        ]
        pools = [pool for pool in pools if pool]
        rng.shuffle(pools)
        picked: list[Mutant] = []
        while len(picked) < per_package and any(pools):
            for pool in pools:
                if pool and len(picked) < per_package:
                    picked.append(pool.pop(rng.randrange(len(pool))))
        chosen.extend(sorted(picked, key=lambda m: (m.file, m.line, m.start[1])))
    return chosen


def test_files_for(root: Path, relpath: str) -> list[str]:
    # training/ and evaluation/ are imported as pyratok.training / pyratok.evaluation; `from pyratok import cli` and
    # `from pyratok.training import losses` name the module after `import`.
    parent, _, leaf = relpath[:-3].replace("/", ".").rpartition(".")
    prefix = r"(?:pyratok\.)?" if parent in ("training", "evaluation") else ""
    pattern = re.compile(
        rf"(?:from|import)\s+{prefix}{re.escape(parent)}\.{re.escape(leaf)}\b"
        rf"|from\s+{prefix}{re.escape(parent)}\s+import\s+[^\n]*\b{re.escape(leaf)}\b"
    )
    files = [f"tests/{name}" for name in TEST_MAP.get(relpath, [])]
    for extra in sorted((root / "tests").glob(EXTRA_TEST_GLOB)):
        if pattern.search(extra.read_text()) and f"tests/{extra.name}" not in files:
            files.append(f"tests/{extra.name}")
    return [f for f in files if (root / f).exists()]


def run_pytest(workdir: Path, tests: list[str], timeout: float) -> tuple[str, float]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests]
    began = time.monotonic()
    # A new session, so a timed-out run's children (dataloader workers, subprocess CLIs) go with it.
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return "timeout", time.monotonic() - began
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): take the pytest run down too
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    elapsed = time.monotonic() - began
    return {0: "survived", 1: "killed"}.get(rc, "error"), elapsed


def copy_tree(source: Path, dest: Path) -> None:
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".ruff_cache", "outputs", "*.egg-info")
    for entry in sorted(source.iterdir()):
        if entry.name in {".git"} or entry.name.startswith(".") and entry.is_dir():
            continue
        if entry.is_dir():
            shutil.copytree(entry, dest / entry.name, ignore=ignore, symlinks=True)
        else:
            shutil.copy2(entry, dest / entry.name)


def unified_diff(source: str, mutated: str, relpath: str) -> str:
    diff = difflib.unified_diff(source.splitlines(), mutated.splitlines(), relpath, relpath, n=0, lineterm="")
    return "\n".join(line for line in diff if not line.startswith(("---", "+++")))


def summarize(results: list[dict]) -> dict:
    def counts(rows: list[dict]) -> dict:
        out = {"tried": len(rows)}
        for status in ("killed", "survived", "timeout", "error", "skipped"):
            out[status] = sum(r["status"] == status for r in rows)
        # A time-out on a loaded machine says nothing either way: left out of the rate, listed apart.
        detected = out["killed"] + out["error"]
        judged = out["tried"] - out["skipped"] - out["timeout"]
        out["kill_rate"] = round(detected / judged, 3) if judged else None
        return out

    return {
        "total": counts(results),
        "per_package": {p: counts([r for r in results if r["file"].startswith(p + "/")]) for p in PACKAGES},
    }


def survivors(rows: list[dict]) -> list[dict]:
    return [
        {"location": f"{r['file']}:{r['line']}", "operator": r["operator"], "diff": r["diff"]}
        for r in rows
        if r["status"] == "survived"
    ]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="repository to mutate (copied; never modified)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--per-package", type=int, default=DEFAULT_PER_PACKAGE)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant's pytest run")
    parser.add_argument("--carry", type=Path, help="an earlier run's JSON: its killed mutants are not rerun")
    parser.add_argument("--only", help="regex on 'file:line': run only the matching mutants of the sample")
    parser.add_argument("--shard", default="0/1", help="'i/n': run every n-th mutant from the i-th (parallel runs)")
    parser.add_argument("--merge", type=Path, nargs="+", help="combine the JSON files of shards and exit")
    parser.add_argument("--list", action="store_true", help="print the sample and exit")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the unmutated run of each test group (when the suite is known to pass)")
    parser.add_argument("--out", type=Path, help="also write the JSON here (rewritten after every mutant)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `kill PID` cleans up the copy and the pytest run

    if args.merge:
        rows = [row for path in args.merge for row in json.loads(path.read_text())["mutants"]]
        report = {"merged": [str(p) for p in args.merge], **summarize(rows), "mutants": rows}
        report["survivors"] = survivors(rows)
        if args.out:
            args.out.write_text(json.dumps(report, indent=1))
        print(json.dumps({k: report[k] for k in ("total", "per_package", "survivors")}, indent=1))
        return report
    source_root = args.source.resolve()
    mutants = sample_mutants(source_root, args.per_package, args.seed)
    index, count = (int(part) for part in args.shard.split("/"))
    mutants = mutants[index::count]
    if args.only:
        mutants = [m for m in mutants if re.search(args.only, f"{m.file}:{m.line}")]
    if args.list:
        for m in mutants:
            print(f"{m.file}:{m.line} {m.operator}: {m.original!r} -> {m.replacement!r}")
        return {}
    carried = {}
    if args.carry:
        carried = {r["key"]: r for r in json.loads(args.carry.read_text())["mutants"]}

    results: list[dict] = []
    baseline: dict[tuple[str, ...], dict] = {}
    report: dict = {"seed": args.seed, "per_package": args.per_package, "source": str(source_root)}
    with tempfile.TemporaryDirectory(prefix="pyratok-mutation-") as tmp:
        work = Path(tmp)
        copy_tree(source_root, work)
        for index, mutant in enumerate(mutants):
            row = {**asdict(mutant), "key": mutant.key()}
            row.pop("start"), row.pop("end")
            path = work / mutant.file
            original = path.read_text()
            mutated = apply_mutant(original, mutant)
            row["diff"] = unified_diff(original, mutated, mutant.file)
            tests = test_files_for(work, mutant.file)
            row["tests"] = tests
            earlier = carried.get(mutant.key(), {})
            if earlier.get("status") == "killed":
                row.update(status="killed", seconds=0.0, carried=True)
                tests = []
            elif earlier.get("status") == "survived":
                # The earlier group passed on this mutant: only the test files added since can kill it.
                tests = [t for t in tests if t not in earlier["tests"]]
                row["new_tests"] = tests
                if not tests:
                    row.update(status="survived", seconds=0.0, carried=True)
            if "status" not in row:
                group = tuple(tests)
                if group not in baseline and args.no_baseline:
                    baseline[group] = {"tests": tests, "status": "survived", "seconds": None}
                if group not in baseline:
                    status, seconds = run_pytest(work, tests, args.timeout * 2)
                    baseline[group] = {"tests": tests, "status": status, "seconds": round(seconds, 1)}
                if baseline[group]["status"] != "survived":
                    row.update(status="skipped", seconds=0.0, reason=f"unmutated group {baseline[group]['status']}")
                else:
                    try:
                        compile(mutated, mutant.file, "exec")
                        path.write_text(mutated)
                        status, seconds = run_pytest(work, tests, args.timeout)
                    finally:
                        path.write_text(original)
                    row.update(status=status, seconds=round(seconds, 1))
            results.append(row)
            print(f"[{index + 1}/{len(mutants)}] {row['status']:8s} {mutant.file}:{mutant.line} {mutant.operator} "
                  f"{row['seconds']}s", file=sys.stderr, flush=True)
            report.update(summarize(results), baseline=list(baseline.values()), mutants=results)
            report["survivors"] = survivors(results)
            if args.out:
                args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("total", "per_package", "survivors")}, indent=1))
    return report


if __name__ == "__main__":
    main()

"""Quantizer entropy term: PyraTok's closed forms vs `vector_quantize_pytorch.LFQ`'s full softmax, side by side.

Prints one JSON object. Each configuration runs in its own fresh subprocess (so peak memory is per configuration):
one warm-up forward+backward, then `--repeats` timed ones (`--lfq-repeats` for LFQ at 2^16, a minute or more each);
reported are the median and all wall times, the peak extra memory, and the entropy values.

Input: `z` of shape `(B, d, T, H, W)` = `--tokens` `(2, 5, 32, 32)` × `d = --codebook-bits` (16), standard normal
from `--seed`, `requires_grad`; the same values for every configuration (the small-codebook runs use its first
`--small-codebook-bits` channels).

Configurations:

* `ours_exact_2^d`, `ours_grouped_2^d`: sign quantization with a straight-through estimator, commitment
  `‖z − sg(q)‖²` (weight 0.25) and the entropy term `per_token_entropy − batch_code_entropy` (weight 0.1) computed
  with the library functions exactly as `PyraTokLaPQ._compute_losses` does (`bit_probabilities`, then
  `per_token_entropy` and `batch_code_entropy` in `"exact"` (chunked halves product) or `"grouped"` mode).
* `lfq_2^d`: `LFQ(dim=d, codebook_size=2**d, entropy_loss_weight=0.1)`, all other options at their defaults (no
  projections since `dim == log2(codebook_size)`, `commitment_loss_weight=0`, `diversity_gamma=1`,
  `frac_per_sample_entropy=1`, `spherical=False`, `codebook_scale=1`, `channel_first` inferred: a 5-D input is
  read as `(B, d, ...)`), in training mode, called with `inv_temperature = τ / 2` (below) and
  `return_loss_breakdown=True` for its per-sample and codebook (batch) entropies.
* `reference_fp64_2^d`: not timed against anything; a brute force in float64 over all 2^d codes of
  `softmax_c(τ·<z, c>)` (chunks of tokens, no autograd), giving the exact entropies, and the same with LFQ's 1e-5
  clamp inside the log, which explains the small gap between LFQ's numbers and the exact ones.

Workers use `--threads` torch threads (default 1, `0` for torch's default): on a 2-core machine shared with other
jobs, two OpenMP threads per op stall at thread barriers whenever a core is taken, which made the many small ops of
the closed forms 5-10x slower and very noisy. Both sides use the same count.

Both sides back-propagate `loss + mean(quantized output)` (a stand-in for a downstream loss, so the straight-through
path runs too) into `z`.

Temperature mapping: LFQ takes `softmax_c(-distance · β) = softmax_c(2·β·<x, c>)` over codes `c ∈ {±1}^d`; this is a
product of per-bit Bernoullis with `P(c_i = +1) = sigmoid(4·β·x_i)`, and ours is `sigmoid(2·τ·z_i)`, so
`β = τ / 2` (default τ = 1, β = 0.5; LFQ's own default β = 100 makes every code distribution nearly one-hot).

Peak memory: the kernel's high-water mark of the worker's resident set (`VmHWM` in /proc/self/status), reset to the
current RSS through /proc/self/clear_refs right before the warm-up run, minus the RSS at that moment: the largest
extra resident memory over the warm-up and all timed runs (it counts memory the allocator keeps between runs, so it
never misses a reuse). If clear_refs cannot be written, a 1 ms RSS sampler thread is used instead (`memory_method`).

    python benchmarks/quantizer.py        # the issue's settings; LFQ at 2^16 alone takes 6+ min and peaks ~18 GiB
    python benchmarks/quantizer.py --skip-lfq-2-16 --repeats 3 --out /tmp/quantizer.json   # quick
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from report_output import emit_report

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 2**20
# LFQ clamps probabilities at this value inside its logs (`vector_quantize_pytorch.lookup_free_quantization.log`).
LFQ_LOG_EPS = 1e-5
COMMITMENT_WEIGHT = 0.25
ENTROPY_WEIGHT = 0.1
# The issue's targets against LFQ at 2^16, and the anchor it measured on this machine.
TARGET_SPEEDUP = 100.0
TARGET_MEMORY_FRACTION = 1 / 20
TARGET_ENTROPY_REL = 0.01
ISSUE_ANCHOR = {"lfq_2^16_seconds": 52.0, "lfq_2^16_peak_gib": 18.0, "lfq_2^10_seconds": 0.42}


def lfq_inverse_temperature(bit_inverse_temperature: float) -> float:
    """LFQ's `inv_temperature` β with the same code distribution as our `τ`: `sigmoid(4β x) = sigmoid(2τ z)`."""
    return bit_inverse_temperature / 2


# ---------------------------------------------------------------------------------------------------------------------
# Worker side (one configuration per process)
# ---------------------------------------------------------------------------------------------------------------------


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _rss_bytes() -> int:
    return _proc_status_kib("VmRSS") * 1024


class PeakRSS:
    """Largest extra resident memory of this process inside a block (see the module docstring)."""

    def __enter__(self):
        self.base = _rss_bytes()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self.method = "VmHWM (kernel RSS high-water mark, reset via /proc/self/clear_refs) minus RSS at start"
            self._thread = None
        except OSError:
            self.method = "1 ms RSS sampler (clear_refs not writable) minus RSS at start"
            self._peak, self._stop = self.base, threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self._thread is None:
            peak = _proc_status_kib("VmHWM") * 1024
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
        self.peak_bytes = max(peak - self.base, 0)


def _make_input(cfg: dict):
    import torch

    batch, frames, height, width = cfg["tokens"]
    g = torch.Generator().manual_seed(cfg["seed"])
    full = torch.randn(batch, cfg["codebook_bits"], frames, height, width, generator=g)
    return full[:, : cfg["bits"]].contiguous()


def _ours_step(cfg: dict):
    import torch

    from modeling_pyratok.quantizer_pyratok import batch_code_entropy, bit_probabilities, per_token_entropy

    tau, bits = cfg["bit_inverse_temperature"], cfg["bits"]

    def step(z):
        # Sign quantization with straight-through, as PyraTokQuantizationBlock.forward.
        hard = torch.where(z >= 0, 1.0, -1.0)
        codes = hard + (z - z.detach())
        # The commitment and entropy terms, as PyraTokLaPQ._compute_losses.
        commitment = (z - torch.where(z >= 0, 1.0, -1.0)).square().mean()
        pooled = bit_probabilities(z, tau).movedim(1, -1).reshape(-1, bits)  # (N, d)
        token_entropy = per_token_entropy(pooled)
        batch_entropy = batch_code_entropy(pooled, cfg["mode"], cfg["num_groups"], cfg["chunk_size"])
        loss = COMMITMENT_WEIGHT * commitment + ENTROPY_WEIGHT * (token_entropy - batch_entropy)
        (loss + codes.mean()).backward()
        return {"per_token_entropy": token_entropy.item(), "batch_entropy": batch_entropy.item(), "loss": loss.item()}

    return step


def _lfq_step(cfg: dict):
    from vector_quantize_pytorch import LFQ

    bits = cfg["bits"]
    lfq = LFQ(dim=bits, codebook_size=2**bits, entropy_loss_weight=ENTROPY_WEIGHT).train()
    beta = lfq_inverse_temperature(cfg["bit_inverse_temperature"])

    def step(z):
        (quantized, _, aux_loss), breakdown = lfq(z, inv_temperature=beta, return_loss_breakdown=True)
        (aux_loss + quantized.mean()).backward()
        return {
            "per_token_entropy": breakdown.per_sample_entropy.item(),
            "batch_entropy": breakdown.batch_entropy.item(),
            "loss": aux_loss.item(),
        }

    return step


def _reference_step(cfg: dict):
    import torch

    tau, bits = cfg["bit_inverse_temperature"], cfg["bits"]

    def step(z):
        with torch.no_grad():
            tokens = z.double().movedim(1, -1).reshape(-1, bits)  # LFQ's token order `b d ... -> b (...) d`
            shifts = torch.arange(bits - 1, -1, -1)
            codebook = ((torch.arange(2**bits)[:, None] >> shifts) & 1).double() * 2 - 1  # (2^d, d), MSB first
            token_sum = token_sum_clamped = 0.0
            average = torch.zeros(2**bits, dtype=torch.float64)
            for chunk in tokens.split(max(1, 2**25 // 2**bits)):
                log_prob = (tau * chunk @ codebook.T).log_softmax(-1)
                prob = log_prob.exp()
                token_sum += float(-(prob * log_prob).sum())
                token_sum_clamped += float(-(prob * prob.clamp_min(LFQ_LOG_EPS).log()).sum())
                average += prob.sum(0)
            average /= tokens.shape[0]
            return {
                "per_token_entropy": token_sum / tokens.shape[0],
                "batch_entropy": float(-(average * average.log()).sum()),
                "per_token_entropy_with_lfq_clamp": token_sum_clamped / tokens.shape[0],
                "batch_entropy_with_lfq_clamp": float(-(average * average.clamp_min(LFQ_LOG_EPS).log()).sum()),
            }

    return step


def run_worker(cfg: dict) -> dict:
    import gc

    import torch

    if cfg["threads"] > 0:
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    z = _make_input(cfg).requires_grad_(cfg["kind"] != "reference")
    step = {"ours": _ours_step, "lfq": _lfq_step, "reference": _reference_step}[cfg["kind"]](cfg)
    warmup = 0 if cfg["kind"] == "reference" else 1
    times, values = [], None
    gc.collect()
    with PeakRSS() as mem:
        for i in range(warmup + cfg["repeats"]):
            z.grad = None
            start = time.perf_counter()
            out = step(z)
            elapsed = time.perf_counter() - start
            values = values or out
            if i >= warmup:
                times.append(elapsed)
            print(f"[{cfg['name']}] run {i + 1}/{warmup + cfg['repeats']}: {elapsed:.3f} s", file=sys.stderr)
    return {
        "median_s": statistics.median(times),
        "all_s": times,
        "peak_mem_mib": mem.peak_bytes / MIB,
        "rss_at_start_mib": mem.base / MIB,
        "memory_method": mem.method,
        **values,
        "versions": {
            "torch": torch.__version__,
            "vector_quantize_pytorch": importlib.metadata.version("vector-quantize-pytorch"),
        },
        "torch_threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------------------


def _spawn(cfg: dict) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    print(f"[driver] {cfg['name']} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)],
        stdout=subprocess.PIPE,  # stderr (progress, tracebacks) goes straight to ours
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        # -9: killed, e.g. by the OOM killer; tracebacks are on stderr.
        return {"error": f"worker exited with code {proc.returncode}"}
    return json.loads(lines[-1])


def _rel(ours: float, theirs: float) -> float:
    return abs(ours - theirs) / abs(theirs)


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def _ok(result: dict | None) -> bool:
    return result is not None and "error" not in result


def _entropy_comparison(results: dict, bits: int) -> dict:
    lfq, ref = results.get(f"lfq_2^{bits}"), results.get(f"reference_fp64_2^{bits}")
    table = {}
    for name in ("ours_exact", "ours_grouped", "lfq"):
        result = results.get(f"{name}_2^{bits}")
        if not _ok(result):
            continue
        row = {key: result[key] for key in ("per_token_entropy", "batch_entropy")}
        for other_name, other in (("lfq", lfq), ("reference_fp64", ref)):
            if name != other_name and _ok(other):
                for key in ("per_token_entropy", "batch_entropy"):
                    row[f"{key}_rel_diff_vs_{other_name}"] = _rel(result[key], other[key])
        table[name] = row
    if _ok(ref):
        table["reference_fp64"] = {
            key: ref[key]
            for key in (
                "per_token_entropy",
                "batch_entropy",
                "per_token_entropy_with_lfq_clamp",
                "batch_entropy_with_lfq_clamp",
            )
        }
    if "ours_grouped" in table:
        table["note"] = (
            "grouped batch entropy is an upper bound of the exact one, tight when the bit groups are independent "
            "under the batch average"
        )
    return table


def _within(row: dict | None, other: str) -> bool | None:
    if row is None:
        return None
    keys = [f"{key}_rel_diff_vs_{other}" for key in ("per_token_entropy", "batch_entropy")]
    if not all(key in row for key in keys):
        return None
    return all(row[key] <= TARGET_ENTROPY_REL for key in keys)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, nargs=4, default=[2, 5, 32, 32], metavar=("B", "T", "H", "W"))
    parser.add_argument("--codebook-bits", type=int, default=16, help="d: channels of z and log2 of LFQ's codebook")
    parser.add_argument("--small-codebook-bits", type=int, default=10, help="second anchor (0 to skip)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per configuration after 1 warm-up")
    parser.add_argument(
        "--lfq-repeats", type=int, default=5, help="timed runs of LFQ at 2^codebook-bits (1+ min each)"
    )
    parser.add_argument("--skip-lfq-2-16", action="store_true", help="skip LFQ at 2^codebook-bits (6+ min, ~18 GiB)")
    parser.add_argument("--skip-reference", action="store_true", help="skip the fp64 brute-force entropies")
    parser.add_argument("--chunk-size", type=int, default=8192, help="tokens per chunk of batch_code_entropy")
    parser.add_argument("--num-groups", type=int, default=2, help="bit groups of the grouped batch entropy")
    parser.add_argument("--bit-inverse-temperature", type=float, default=1.0, help="our τ; LFQ gets β = τ/2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker; 0: torch's default")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return {}

    big, small = args.codebook_bits, args.small_codebook_bits
    if not 1 <= big <= 20 or not 0 <= small < big:
        parser.error("need 1 <= --codebook-bits <= 20 and 0 <= --small-codebook-bits < --codebook-bits")
    if min(args.repeats, args.lfq_repeats) < 1:
        parser.error("--repeats and --lfq-repeats must be >= 1")
    common = dict(
        tokens=args.tokens,
        codebook_bits=big,
        seed=args.seed,
        bit_inverse_temperature=args.bit_inverse_temperature,
        chunk_size=args.chunk_size,
        num_groups=args.num_groups,
        threads=args.threads,
    )

    def config(kind: str, bits: int, mode: str | None = None, repeats: int | None = None) -> dict:
        name = f"{'ours_' + mode if kind == 'ours' else 'reference_fp64' if kind == 'reference' else kind}_2^{bits}"
        return dict(common, name=name, kind=kind, bits=bits, mode=mode, repeats=repeats or args.repeats)

    grouped = {bits: bits % args.num_groups == 0 for bits in (big, small) if bits}
    # Ours and LFQ alternate; each configuration's runs are consecutive in its own process (per-config peak memory).
    plan = [config("ours", big, "exact")]
    if not args.skip_lfq_2_16:
        plan.append(config("lfq", big, repeats=args.lfq_repeats))
    if grouped[big]:
        plan.append(config("ours", big, "grouped"))
    if small:
        plan.append(config("lfq", small))
        plan.append(config("ours", small, "exact"))
        if grouped[small]:
            plan.append(config("ours", small, "grouped"))
    if not args.skip_reference:
        plan += [config("reference", bits, repeats=1) for bits in (big, small) if bits]

    load_before = os.getloadavg()
    results = {cfg["name"]: _spawn(cfg) for cfg in plan}
    load_after = os.getloadavg()
    first = next((r for r in results.values() if _ok(r)), {})
    meta = {key: first.get(key) for key in ("versions", "memory_method", "torch_threads")}
    for result in results.values():
        for key in meta:
            result.pop(key, None)

    batch, frames, height, width = args.tokens
    report = {
        "benchmark": "quantizer forward+backward with its entropy term: PyraTok (exact / grouped) vs LFQ",
        "setup": {
            "input": f"z ~ N(0, 1), shape (B, d, T, H, W) = ({batch}, {big}, {frames}, {height}, {width}), "
            f"seed {args.seed}, requires_grad",
            "num_tokens": batch * frames * height * width,
            "codebook_bits": big,
            "small_codebook_bits": small or None,
            "repeats": args.repeats,
            "lfq_2^d_repeats": args.lfq_repeats,
            "warmup_runs": 1,
            "chunk_size": args.chunk_size,
            "num_groups": args.num_groups,
            "bit_inverse_temperature_tau": args.bit_inverse_temperature,
            "lfq_inv_temperature_beta": lfq_inverse_temperature(args.bit_inverse_temperature),
            "temperature_mapping": "LFQ: softmax_c(-distance*beta), distance = -2<x,c>, c in {-1,1}^d, factorises "
            "into P(c_i=+1) = sigmoid(4*beta*x_i); ours: sigmoid(2*tau*z_i); so beta = tau/2",
            "ours": f"sign + straight-through, commitment (weight {COMMITMENT_WEIGHT}), entropy term per_token_entropy"
            f" - batch_code_entropy (weight {ENTROPY_WEIGHT}) via modeling_pyratok.quantizer_pyratok functions, as "
            "PyraTokLaPQ._compute_losses",
            "lfq": f"vector_quantize_pytorch.LFQ(dim=d, codebook_size=2**d, entropy_loss_weight={ENTROPY_WEIGHT}), "
            "defaults otherwise (commitment_loss_weight=0, diversity_gamma=1, frac_per_sample_entropy=1, "
            "spherical=False, codebook_scale=1, no projections, channel_first inferred for 5-D input), train mode, "
            "return_loss_breakdown=True",
            "backward": "from loss + mean(quantized output) into z",
            "timing": "wall time of forward+backward (time.perf_counter), median of the timed runs after 1 warm-up, "
            "all runs of a configuration in one fresh process; configurations run one after another",
            **meta,
            "cpu_count": os.cpu_count(),
            "loadavg_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
            "issue_anchor": ISSUE_ANCHOR,
        },
        "configs": results,
        "entropy_comparison": {f"2^{bits}": _entropy_comparison(results, bits) for bits in (big, small) if bits},
    }

    lfq_big = results.get(f"lfq_2^{big}")
    ratios, speed, memory = {}, {}, {}
    for mode in ("exact", "grouped"):
        ours = results.get(f"ours_{mode}_2^{big}")
        if not _ok(ours):
            continue
        if big == 16 and tuple(args.tokens) == (2, 5, 32, 32):
            anchor_time = ISSUE_ANCHOR["lfq_2^16_seconds"]
            ratios[f"issue_anchor_lfq_2^16_time_over_ours_{mode}"] = anchor_time / ours["median_s"]
            ratios[f"issue_anchor_lfq_2^16_peak_mem_over_ours_{mode}"] = _ratio(
                ISSUE_ANCHOR["lfq_2^16_peak_gib"] * 1024, ours["peak_mem_mib"]
            )
        if _ok(lfq_big):
            time_ratio = lfq_big["median_s"] / ours["median_s"]
            ratios[f"lfq_2^{big}_time_over_ours_{mode}"] = time_ratio
            ratios[f"lfq_2^{big}_peak_mem_over_ours_{mode}"] = _ratio(lfq_big["peak_mem_mib"], ours["peak_mem_mib"])
            speed[mode] = time_ratio >= TARGET_SPEEDUP
            memory[mode] = ours["peak_mem_mib"] <= TARGET_MEMORY_FRACTION * lfq_big["peak_mem_mib"]
    if small:
        lfq_small = results.get(f"lfq_2^{small}")
        for mode in ("exact", "grouped"):
            ours = results.get(f"ours_{mode}_2^{small}")
            if _ok(lfq_small) and _ok(ours):
                ratios[f"lfq_2^{small}_time_over_ours_{mode}_2^{small}"] = lfq_small["median_s"] / ours["median_s"]
    report["ratios"] = ratios

    big_table = report["entropy_comparison"][f"2^{big}"]
    exact_vs_lfq = _within(big_table.get("ours_exact"), "lfq")
    targets = {
        f"speedup_ge_100x_vs_lfq_2^{big}": speed or None,
        f"peak_mem_le_1/20_of_lfq_2^{big}": memory or None,
        f"exact_entropies_within_1pct_of_lfq_2^{big}": exact_vs_lfq,
        f"exact_entropies_within_1pct_of_fp64_reference_2^{big}": _within(
            big_table.get("ours_exact"), "reference_fp64"
        ),
        f"grouped_entropies_within_1pct_of_lfq_2^{big} (bound, informational)": _within(
            big_table.get("ours_grouped"), "lfq"
        ),
    }
    if small:
        targets[f"exact_entropies_within_1pct_of_lfq_2^{small}"] = _within(
            report["entropy_comparison"][f"2^{small}"].get("ours_exact"), "lfq"
        )
    modes = ("exact", "grouped") if grouped[big] else ("exact",)
    required = [speed.get(mode) for mode in modes] + [memory.get(mode) for mode in modes] + [exact_vs_lfq]
    targets["all_met"] = None if any(v is None for v in required) else all(required)
    report["targets"] = targets

    return emit_report(report, args.out)


if __name__ == "__main__":
    main()

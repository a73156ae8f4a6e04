"""LaPQ encode overhead: PyraTokModel encoding vs the bare Wan backbone encode of the same clip, side by side.

Prints one JSON object. For each preset: median wall time (ms) over `--repeats` interleaved runs (after a warm-up)
and peak extra memory during the call (MiB; CUDA allocator peak on GPU, sampled RSS high-water mark on CPU), for

* `backbone`: `AutoencoderKLWan.encode(x).latent_dist.mode()` with the same frozen weights,
* `pyratok`: `PyraTokModel.encode(x)` (LoRA active, LaPQ, fusion; no text),
* `pyratok_merged_lora`: the same with LoRA folded into the conv weights (`PyraTokModel.merged_lora()`, entered
  once before timing),

and the ratios to `backbone`. The paper reports 492 / 449 ms ≈ 1.10x for LaPQ; our target is ≤ 1.05x.

    python benchmarks/encode_overhead.py --presets tiny wan2.1 --frames 9 --size 128 --repeats 5 [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import threading
import time

import torch
from diffusers import AutoencoderKLWan
from report_output import emit_report

from modeling_pyratok import PyraTokConfig, PyraTokModel


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak extra memory of a block: CUDA allocator stats on GPU, a 1 ms RSS sampler on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._base = _rss_bytes()
            self._peak = self._base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._peak, _rss_bytes()) - self._base


def build(preset: str, device: torch.device, dtype: torch.dtype, seed: int) -> tuple[PyraTokModel, AutoencoderKLWan]:
    torch.manual_seed(seed)
    model = PyraTokModel(PyraTokConfig.from_preset(preset)).to(device=device, dtype=dtype).eval()
    # Non-zero LoRA so the adapters really run (a fresh adapter is zero, but still costs its convolutions).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1e-3)
    return model, model.core.backbone.frozen_wan_vae().eval()


def measure(fn, device: torch.device) -> tuple[float, int]:
    with PeakMemory(device) as mem:
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return elapsed * 1e3, mem.peak_bytes


def bench_preset(preset: str, args, device: torch.device, dtype: torch.dtype) -> dict:
    model, backbone = build(preset, device, dtype, args.seed)
    multiple = model.config.spatial_multiple
    size = max(multiple, args.size // multiple * multiple)
    g = torch.Generator().manual_seed(args.seed)
    clip = (torch.rand(1, 3, args.frames, size, size, generator=g) * 2 - 1).to(device=device, dtype=dtype)

    # A second copy with LoRA folded in for the whole run: merging is a one-off set-up cost, not per call.
    merged_model = copy.deepcopy(model)
    keep_merged = contextlib.ExitStack()
    keep_merged.enter_context(merged_model.merged_lora())
    variants = {
        "backbone": lambda: backbone.encode(clip).latent_dist.mode(),
        "pyratok": lambda: model.encode(clip),
        "pyratok_merged_lora": lambda: merged_model.encode(clip),
    }
    results = {name: {"ms": [], "peak_mib": []} for name in variants}
    with torch.no_grad():
        for fn in variants.values():  # warm-up (allocator, kernels, first-call overheads)
            fn()
        for _ in range(args.repeats):
            for name, fn in variants.items():  # interleaved so machine noise hits every variant alike
                ms, peak = measure(fn, device)
                results[name]["ms"].append(ms)
                results[name]["peak_mib"].append(peak / 2**20)
    summary = {
        name: {"median_ms": statistics.median(r["ms"]), "peak_mib": max(r["peak_mib"]), "runs_ms": r["ms"]}
        for name, r in results.items()
    }
    base = summary["backbone"]
    for name in ("pyratok", "pyratok_merged_lora"):
        summary[name]["time_ratio"] = summary[name]["median_ms"] / base["median_ms"]
        summary[name]["memory_ratio"] = summary[name]["peak_mib"] / max(base["peak_mib"], 1e-9)
    keep_merged.close()
    return {"clip": [1, 3, args.frames, size, size], **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "wan2.1"])
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats must be >= 5 (medians of fewer runs are too noisy here)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    report = {
        "benchmark": "encode_overhead",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "dtype": args.dtype,
        "torch": torch.__version__,
        "paper_ratio": round(492 / 449, 3),
        "target_ratio": 1.05,
        "presets": {},
    }
    for preset in args.presets:
        report["presets"][preset] = bench_preset(preset, args, device, dtype)
    emit_report(report, args.out)


if __name__ == "__main__":
    main()

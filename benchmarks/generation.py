"""Generation speed of the two token priors against sequence length, and the AR prior's KV-cache speed-up.

Prints one JSON object. For each sequence length (latent frames of a 64x64 clip with the shipped tokenizer's
4-level layout: 85 ids per latent frame) and each prior (the shipped recipe's architecture with random weights:
speed does not depend on the values): median seconds per generated clip over `--repeats` runs, generated tokens per
second, and for the AR prior the same without the KV cache and the ratio (cache speed-up). Both run with
classifier-free guidance (the pipeline's default), batch `--batch`. Timings interleave the variants so machine noise
hits them alike. Decoding ids to pixels is not included (`benchmarks/encode_overhead.py` times the tokenizer).

    python benchmarks/generation.py --latent-frames 1 2 3 5 --repeats 3 [--steps 12] [--device cuda] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import yaml
from report_output import emit_report

from modeling_pyratok import (
    PyraTokARPrior,
    PyraTokARPriorConfig,
    PyraTokConfig,
    PyraTokMaskedPrior,
    PyraTokMaskedPriorConfig,
    PyraTokModel,
)

RECIPE = Path(__file__).resolve().parents[1] / "training" / "configs" / "prior-masked-tiny-cpu.yaml"


def layout_for(latent_frames: int):
    """The shipped tokenizer's layout (`small` preset, 4 levels) of a 64x64 clip with `latent_frames` latent frames."""
    config = PyraTokConfig.from_preset("small", text_encoder_name_or_path="pyratok/tiny-random-text-encoder",
                                       text_embed_dim=384)
    model = PyraTokModel(config)
    return model.token_layout(4 * (latent_frames - 1) + 1, 64, 64)


def time_call(fn, repeats: int, device: torch.device) -> list[float]:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latent-frames", type=int, nargs="+", default=[1, 2, 3, 5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=12, help="masked prior decoding steps")
    parser.add_argument("--guidance-scale", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    overrides = yaml.safe_load(RECIPE.read_text())["prior_overrides"]
    torch.manual_seed(0)
    text = torch.randn(args.batch, 12, 384, device=device)
    mask = torch.ones(args.batch, 12, dtype=torch.bool, device=device)
    rows = []
    for latent_frames in args.latent_frames:
        layout = layout_for(latent_frames).to_dict()
        masked = PyraTokMaskedPrior(PyraTokMaskedPriorConfig(token_layout=layout, **overrides)).to(device).eval()
        ar = PyraTokARPrior(PyraTokARPriorConfig(token_layout=layout, **overrides)).to(device).eval()
        seq_len = masked.seq_len
        calls = {
            "masked": lambda m=masked: m.generate(text, mask, guidance_scale=args.guidance_scale,
                                                  num_inference_steps=args.steps),
            "ar_kv_cache": lambda m=ar: m.generate(text, mask, guidance_scale=args.guidance_scale, use_cache=True),
            "ar_no_cache": lambda m=ar: m.generate(text, mask, guidance_scale=args.guidance_scale, use_cache=False),
        }
        for fn in calls.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.repeats):  # interleaved
            for name, fn in calls.items():
                times[name] += time_call(fn, 1, device)
        row = {"latent_frames": latent_frames, "seq_len": seq_len}
        for name, values in times.items():
            seconds = statistics.median(values)
            row[name] = {
                "seconds_per_clip": seconds / args.batch,
                "tokens_per_second": seq_len * args.batch / seconds,
            }
        row["ar_kv_cache_speedup"] = row["ar_no_cache"]["seconds_per_clip"] / row["ar_kv_cache"]["seconds_per_clip"]
        rows.append(row)
    report = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "masked_steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "prior_overrides": overrides,
        "rows": rows,
    }
    emit_report(report, args.out)


if __name__ == "__main__":
    main()

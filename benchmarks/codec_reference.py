"""What a mature video codec reaches on an eval split at a tokenizer's bit rate: a reference for reconstruction PSNR.

Prints one JSON object. Written for issue 3's aim of ≥ 26 dB PSNR from the CPU default checkpoint, which spends
0.098 bits per pixel on a 17×64×64 clip (425 tokens × 16 bits = 850 bytes): this encodes the same held-out clips
with H.264 / H.265 (PyAV's bundled FFmpeg, constant quantiser, every `--qps` value), measures each setting's bits
per pixel (every compressed byte the decoder is given: packets without their SEI messages, and extradata if the
encoder writes it; no container) and its PSNR / SSIM against the clip exactly as `pyratok-eval reconstruction`
scores a model (`training.heldout.clip_scores`, mean of per-clip values), and interpolates the PSNR the codec
reaches at `--target-bpp` (linear in log bits per pixel between the two settings around it).

`--target-bpp` defaults to the bits per pixel of `--model` (the shipped checkpoint) on the split's clip size.

    python benchmarks/codec_reference.py                                  # data/procedural/test, x264, ~20 s
    python benchmarks/codec_reference.py --codec libx265 --pix-fmt yuv444p
"""

from __future__ import annotations

import argparse
import fractions
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from report_output import emit_report  # noqa: E402

from pyratok.evaluation.clips import ClipReader  # noqa: E402
from pyratok.quality import clip_scores  # noqa: E402
from pyratok.video_io import tensor_to_video, video_to_tensor  # noqa: E402


@dataclass(frozen=True)
class CodecSpec:
    """How to drive one FFmpeg encoder: its decoder, its constant-quantiser option, and its SEI NAL units."""

    decoder: str
    quantiser_options: Callable[[int], dict[str, str]]
    sei_types: frozenset[int]
    nal_type: Callable[[int], int]  # NAL-unit type from the first header byte


CODECS = {
    "libx264": CodecSpec("h264", lambda qp: {"qp": str(qp)}, frozenset({6}), lambda byte: byte & 0x1F),
    "libx265": CodecSpec("hevc", lambda qp: {"x265-params": f"qp={qp}:log-level=error"}, frozenset({39, 40}),
                         lambda byte: (byte >> 1) & 0x3F),
}
START_CODE = b"\x00\x00\x01"
DEFAULT_MODEL = os.path.join(REPO_ROOT, "model_cards", "pyratok-small-procedural")


def strip_nal_units(data: bytes, drop_types: frozenset[int], nal_type: Callable[[int], int]) -> bytes:
    """An Annex-B byte stream without the NAL units whose type is in `drop_types`.

    Used to drop SEI messages: x264 writes its version and full option string into one (≈ 630 bytes, three quarters
    of a 17×64×64 clip's 850 bytes at the default target rate), and no decoder needs it.
    """
    starts, index = [], data.find(START_CODE)
    while index != -1:
        starts.append(index)
        index = data.find(START_CODE, index + 3)
    kept = bytearray(data[: starts[0]] if starts else data)
    for number, begin in enumerate(starts):
        end = starts[number + 1] if number + 1 < len(starts) else len(data)
        unit = data[begin:end]
        if unit[3:4] and nal_type(unit[3]) in drop_types:
            continue
        kept += unit
    return bytes(kept)


def encode_decode(
    frames: np.ndarray, codec: str, qp: int, preset: str, pix_fmt: str, fps: int
) -> tuple[np.ndarray, int]:
    """Compress uint8 RGB frames `(T, H, W, 3)` and decode them back; returns `(decoded (T, H, W, 3), bytes)`."""
    spec = CODECS[codec]
    encoder = av.CodecContext.create(codec, "w")
    encoder.width, encoder.height = frames.shape[2], frames.shape[1]
    encoder.pix_fmt = pix_fmt
    encoder.time_base = fractions.Fraction(1, fps)
    encoder.framerate = fps
    encoder.options = {"preset": preset, **spec.quantiser_options(qp)}
    packets = []
    for index, frame in enumerate(frames):
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        video_frame.pts = index
        packets += encoder.encode(video_frame)
    packets += encoder.encode(None)
    streams = [strip_nal_units(bytes(packet), spec.sei_types, spec.nal_type) for packet in packets]
    size = sum(len(stream) for stream in streams) + len(encoder.extradata or b"")

    decoder = av.CodecContext.create(spec.decoder, "r")
    if encoder.extradata:
        decoder.extradata = encoder.extradata
    decoded = []
    for stream in streams:
        decoded += decoder.decode(av.Packet(stream))
    decoded += decoder.decode(None)
    if len(decoded) != len(frames):
        raise RuntimeError(f"{codec} at qp {qp}: {len(frames)} frames in, {len(decoded)} decoded")
    return np.stack([f.to_ndarray(format="rgb24") for f in decoded]), size


def psnr_at(target_bpp: float, curve: list[dict]) -> float | None:
    """PSNR at `target_bpp`, linear in log(bpp) between the curve's two nearest points; None outside the curve."""
    points = sorted((row["bits_per_pixel"], row["psnr"]) for row in curve)
    for (b0, p0), (b1, p1) in zip(points, points[1:]):
        if b0 <= target_bpp <= b1:
            if b1 == b0:
                return round(p0, 2)
            share = (math.log(target_bpp) - math.log(b0)) / (math.log(b1) - math.log(b0))
            return round(p0 + share * (p1 - p0), 2)
    return None


def model_bits_per_pixel(model_path: str, num_frames: int, height: int, width: int) -> float:
    from modeling_pyratok import PyraTokModel

    model = PyraTokModel.from_pretrained(model_path)
    return model.bits_per_pixel(height, width, num_frames)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.path.join(REPO_ROOT, "data", "procedural", "test"),
                        help="eval split folder of *.tar shards (training/make_shards.py)")
    parser.add_argument("--max-clips", type=int, default=None)
    parser.add_argument("--num-frames", type=int, default=None, help="4k + 1 frames per clip (default: all 4k + 1)")
    parser.add_argument("--codec", default="libx264", choices=sorted(CODECS))
    parser.add_argument("--qps", type=int, nargs="+", default=[30, 34, 38, 42, 46, 51],
                        help="constant quantisers to sweep (0-51; higher = fewer bits)")
    parser.add_argument("--preset", default="veryslow", help="encoder speed preset (slower = better compression)")
    parser.add_argument("--pix-fmt", default="yuv420p", choices=("yuv420p", "yuv444p"))
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--target-bpp", type=float, default=None,
                        help="bits per pixel to read the curve at (default: --model's on the first clip's size)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="PyraTok checkpoint whose bit rate is the target")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if not all(0 <= qp <= 51 for qp in args.qps):
        parser.error(f"--qps must lie in 0..51, got {args.qps}")
    if args.target_bpp is not None and args.target_bpp <= 0:
        parser.error(f"--target-bpp must be positive, got {args.target_bpp}")
    if args.fps <= 0:
        parser.error(f"--fps must be positive, got {args.fps}")

    start = time.perf_counter()
    try:
        reader = ClipReader(args.data, max_clips=args.max_clips, num_frames=args.num_frames)
        clips = [(clip.key, tensor_to_video(clip.video)) for clip in reader]
    except (FileNotFoundError, ValueError) as error:
        parser.error(f"--data {args.data}: {error}")
    if not clips:
        raise SystemExit(f"no decodable clips in {args.data} ({reader.stats.skipped} skipped)")
    shapes = {frames.shape for _, frames in clips}
    num_frames, height, width = clips[0][1].shape[:3]
    target_bpp = args.target_bpp
    target_source = "--target-bpp"
    if target_bpp is None:
        target_bpp = model_bits_per_pixel(args.model, num_frames, height, width)
        target_source = f"{os.path.relpath(args.model, REPO_ROOT)} on {num_frames}x{height}x{width}"

    curve = []
    for qp in args.qps:
        psnrs, ssims, bits, pixels = [], [], 0, 0
        for _key, frames in clips:
            decoded, size = encode_decode(frames, args.codec, qp, args.preset, args.pix_fmt, args.fps)
            scores = clip_scores(video_to_tensor(decoded)[None], video_to_tensor(frames)[None])
            psnrs.append(scores["psnr"][0])
            ssims.append(scores["ssim"][0])
            bits += 8 * size
            pixels += frames.shape[0] * frames.shape[1] * frames.shape[2]
        row = {"qp": qp, "bits_per_pixel": round(bits / pixels, 4), "psnr": round(float(np.mean(psnrs)), 2),
               "ssim": round(float(np.mean(ssims)), 3)}
        curve.append(row)
        print(row, file=sys.stderr, flush=True)

    report = {
        "data": os.path.relpath(args.data, REPO_ROOT) if os.path.isabs(args.data) else args.data,
        "num_clips": len(clips),
        "skipped": reader.stats.skipped,
        "clip_shapes": sorted([list(s[:3]) for s in shapes]),
        "codec": args.codec,
        "preset": args.preset,
        "pix_fmt": args.pix_fmt,
        "av": av.__version__,
        "target_bpp": round(target_bpp, 4),
        "target_bpp_from": target_source,
        "psnr_at_target_bpp": psnr_at(target_bpp, curve),  # None: the target lies outside the swept rates
        "curve": curve,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    if report["psnr_at_target_bpp"] is None:
        rates = [row["bits_per_pixel"] for row in curve]
        report["note"] = (f"target {target_bpp:.4f} bits/pixel is outside the swept {min(rates)}..{max(rates)}: "
                          "add --qps values")
    return emit_report(report, args.out, indent=1)


if __name__ == "__main__":
    main()

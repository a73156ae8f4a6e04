"""How fast a from-scratch Wan-architecture VAE learns colour, against a linear patch autoencoder, side by side.

Prints one JSON object. Written to explain why the first CPU default checkpoint reconstructed grey (issue 3; the
current default's backbone gets colour from a chroma loss term, evaluation/RESULTS.md): its backbone was a small
`AutoencoderKLWan` trained from scratch for 700 steps, and this measures what such a backbone learns in a
few hundred steps, next to the simplest model with the same latent shape.

Models (all trained in this process with AdamW, `--lr`, no weight decay, L1 loss on the posterior mean):

* `wan`: `AutoencoderKLWan(**PRESETS[--preset]["backbone_config"])`, freshly initialised (seed `--seed`).
* `wan_frozen_encoder`: the same, with the encoder frozen at its random initialisation: the decoder alone learns.
  At initialisation the encoder's latent does depend on the input colour, so a decoder that still collapses is
  enough to show the collapse is the decoder's.
* `autoencoder_kl`: a control from another family: diffusers' image `AutoencoderKL` (Stable Diffusion's VAE design:
  GroupNorm with mean subtraction, non-causal convs) with the preset's widths (`base_dim × dim_mult`), residual
  blocks per stage and latent channels, and the same spatial factor, applied frame by frame.
* `linear`: `Conv3d(3, z, (1, s, s), stride (1, s, s))` + `ConvTranspose3d` with the Wan model's spatial factor `s`
  and latent channels `z`: one linear map per `s×s` patch, the same latent shape for single frames.

`signal_share_at_init`: for a freshly initialised `wan` model on the held-out solid colours, per stage, the
across-image std of the centre cell's activations over their mean magnitude: the share of the signal that still
depends on the input (1 ≈ all of it; near 0, every colour looks the same to the layers after). `--wan-init
zero-bias-residual` zeroes every bias and the last layer of every residual / attention branch instead of
PyTorch's default initialisation.

Tasks:

* `solid_colour` (always): single frames of one uniform colour drawn from `U(-0.8, 0.8)^3`, `--solid-size` pixels
  square. Reported: `mean_colour_l1` (mean |output colour − input colour| on `--num-val` held-out colours; a
  constant grey output scores ≈ 0.4) and `output_colour_std` (std across those images of the output colour, per
  channel; ~1e-5 means the output no longer depends on the input).
* `frames` (with `--data GLOB`): single frames at `--frame-size` from the WebDataset shards (`training.data`), a
  held-out batch of `--num-val` frames from `--val-data`. Reported: `psnr` (dB, frames in [-1, 1]) and `chroma`
  (mean |pixel − its mean over RGB|, the colour a grey image lacks) of the reconstructions, and the data's chroma.

Each model reports its metrics every `--eval-every` steps (`curve`, also printed to stderr as they come) and at the
end. `--skip-solid` runs the `frames` task alone.

    python benchmarks/backbone_trainability.py                               # solid colours, ~2 min on 2 cores
    python benchmarks/backbone_trainability.py --data "data/procedural/train/*.tar" \\
        --val-data "data/procedural/val/*.tar" --steps 300                    # + procedural frames, ~10 min
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch
from torch import nn

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from diffusers import AutoencoderKLWan  # noqa: E402
from report_output import emit_report  # noqa: E402

from modeling_pyratok.configuration_pyratok import PRESETS, PyraTokConfig  # noqa: E402
from pyratok.quality import chroma  # noqa: E402
from pyratok.training.optimization import optimizer_param_groups, zero_bias_residual_init_  # noqa: E402

MODELS = ("wan", "wan_frozen_encoder", "autoencoder_kl", "linear")


class LinearPatchAutoencoder(nn.Module):
    """One linear map per `s×s` patch and its transpose: `(B, 3, T, H, W)` → `(B, z, T, H/s, W/s)` → back."""

    def __init__(self, z_dim: int, spatial_factor: int):
        super().__init__()
        kernel = (1, spatial_factor, spatial_factor)
        self.encoder = nn.Conv3d(3, z_dim, kernel, stride=kernel)
        self.decoder = nn.ConvTranspose3d(z_dim, 3, kernel, stride=kernel)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(video)).clamp(-1, 1)


class ImageAutoencoderKL(nn.Module):
    """diffusers `AutoencoderKL` sized like a Wan backbone config; `(B, 3, T, H, W)` frame by frame, posterior mean."""

    def __init__(self, backbone_config: dict):
        super().__init__()
        from diffusers import AutoencoderKL

        widths = tuple(backbone_config["base_dim"] * m for m in backbone_config["dim_mult"])
        self.vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * len(widths),
            up_block_types=["UpDecoderBlock2D"] * len(widths), block_out_channels=widths,
            layers_per_block=backbone_config["num_res_blocks"], latent_channels=backbone_config["z_dim"],
            norm_num_groups=math.gcd(*widths, 32),
        )

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        batch, channels, frames, height, width = video.shape
        images = video.transpose(1, 2).reshape(batch * frames, channels, height, width)
        out = self.vae.decode(self.vae.encode(images).latent_dist.mode()).sample
        return out.reshape(batch, frames, channels, height, width).transpose(1, 2)


class WanReconstructor(nn.Module):
    """`AutoencoderKLWan` as a deterministic autoencoder (posterior mean), optionally with a frozen encoder."""

    def __init__(self, backbone_config: dict, freeze_encoder: bool, init: str = "default"):
        super().__init__()
        self.vae = AutoencoderKLWan(**backbone_config)
        if init == "zero-bias-residual":
            zero_bias_residual_init_(self.vae)
        if freeze_encoder:
            for module in (self.vae.encoder, self.vae.quant_conv):
                module.requires_grad_(False)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(self.vae.encode(video).latent_dist.mode()).sample


def build_model(name: str, backbone_config: dict, init: str) -> nn.Module:
    if name == "autoencoder_kl":
        return ImageAutoencoderKL(backbone_config)
    if name == "linear":
        derived = PyraTokConfig(backbone_config=backbone_config)  # z_dim and spatial factor as PyraTok derives them
        return LinearPatchAutoencoder(derived.z_dim, derived.scale_factor_spatial)
    return WanReconstructor(backbone_config, freeze_encoder=name == "wan_frozen_encoder", init=init)


def signal_share(model: WanReconstructor, frames: torch.Tensor) -> dict[str, float]:
    """Per stage: across-image std / mean |activation| at the centre cell (how much of it depends on the input)."""
    vae, shares, hooks = model.vae, {}, []  # filled in call order by the hooks
    stages = [(f"encoder.{n}", m) for n, m in vae.encoder.named_children() if n != "down_blocks"]
    stages += [(f"encoder.down_blocks.{i}", m) for i, m in enumerate(vae.encoder.down_blocks)]
    stages += [(f"decoder.{n}", m) for n, m in vae.decoder.named_children() if n != "up_blocks"]
    stages += [(f"decoder.up_blocks.{i}", m) for i, m in enumerate(vae.decoder.up_blocks)]
    stages += [("quant_conv", vae.quant_conv), ("post_quant_conv", vae.post_quant_conv)]
    for name, module in stages:

        def record(_module, _inputs, output, name=name):
            centre = output[..., output.shape[-2] // 2, output.shape[-1] // 2]
            shares[name] = round((centre.std(dim=0).mean() / centre.abs().mean().clamp_min(1e-12)).item(), 4)

        hooks.append(module.register_forward_hook(record))
    with torch.no_grad():
        model.eval()(frames)
    for hook in hooks:
        hook.remove()
    return shares


def solid_colours(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """`(count, 3, 1, size, size)` frames, each one uniform colour in `[-0.8, 0.8]^3`."""
    colours = torch.rand(count, 3, 1, 1, 1, generator=generator) * 1.6 - 0.8
    return colours.expand(count, 3, 1, size, size).clone()


def solid_metrics(output: torch.Tensor, target: torch.Tensor) -> dict:
    out_colour, target_colour = output.mean(dim=(2, 3, 4)), target.mean(dim=(2, 3, 4))
    return {
        "mean_colour_l1": round((out_colour - target_colour).abs().mean().item(), 4),
        "output_colour_std": [float(f"{v:.3g}") for v in out_colour.std(dim=0).tolist()],
    }


def frame_metrics(output: torch.Tensor, target: torch.Tensor) -> dict:
    mse = ((output - target) / 2).square().mean().clamp_min(1e-10)
    return {"psnr": round(-10 * torch.log10(mse).item(), 2), "chroma": round(chroma(output), 4)}


def train(model: nn.Module, batches, val: torch.Tensor, metrics, args, label: str) -> dict:
    """Trains `model` on `batches` (an iterator of `(B, 3, 1, H, W)`) and scores it on `val` along the way.

    Each intermediate score is also printed to stderr (tagged `label`), so a run that is cut short keeps them.
    """
    if args.lr_scaling == "fan-in" and isinstance(model, WanReconstructor):
        groups = optimizer_param_groups(model.named_parameters(), args.vector_lr, "fan_in", args.fan_in_lr)
    else:
        groups = optimizer_param_groups(model.named_parameters(), args.lr)
    params = [p for group in groups for p in group["params"]]
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    curve, start = [], time.perf_counter()

    def evaluate(step: int) -> dict:
        model.eval()
        with torch.no_grad():
            scores = {"step": step, **metrics(model(val), val)}
        model.train()
        return scores

    for step in range(1, args.steps + 1):
        frames = next(batches)
        loss = (model(frames) - frames).abs().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % args.eval_every == 0 and step != args.steps:
            curve.append(evaluate(step))
            print(json.dumps({"progress": label, **curve[-1]}), file=sys.stderr, flush=True)
    final = evaluate(args.steps)
    return {**final, "curve": curve, "trainable_parameters": sum(p.numel() for p in params),
            "wall_s": round(time.perf_counter() - start, 1)}


def frame_batches(data_files: str, batch_size: int, size: int, seed: int, shuffle_buffer: int):
    from pyratok.training.data import VideoDataConfig, build_stream

    config = VideoDataConfig(data_files=[data_files], num_frames=[1], resolutions=[[size, size]],
                             batch_size=batch_size, shuffle_buffer=shuffle_buffer, seed=seed)
    for batch in build_stream(config):
        yield batch["pixel_values"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    presets = sorted(p for p in PRESETS if "backbone_config" in PRESETS[p])
    parser.add_argument("--preset", default="small", choices=presets)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--wan-init", default="default", choices=("default", "zero-bias-residual"),
                        help="initialisation of the Wan models (default: diffusers / PyTorch's)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-scaling", default="none", choices=("none", "fan-in"),
                        help="fan-in: the Wan models' weights get --fan-in-lr / fan_in, biases and gains --vector-lr")
    parser.add_argument("--fan-in-lr", type=float, default=0.03)
    parser.add_argument("--vector-lr", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--num-val", type=int, default=32)
    parser.add_argument("--solid-size", type=int, default=32)
    parser.add_argument("--data", default=None, help="training shards glob; adds the `frames` task")
    parser.add_argument("--skip-solid", action="store_true", help="run only the `frames` task")
    parser.add_argument("--val-data", default=None, help="held-out shards glob (default: --data)")
    parser.add_argument("--frame-size", type=int, default=64)
    parser.add_argument("--shuffle-buffer", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    positive = ("steps", "lr", "fan_in_lr", "vector_lr", "batch_size", "eval_every", "solid_size", "frame_size",
                "shuffle_buffer")
    for flag in positive:
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if args.num_val < 2:
        parser.error(f"--num-val must be at least 2 (the output colour's std is across them), got {args.num_val}")
    if args.threads:
        torch.set_num_threads(args.threads)
    backbone_config = dict(PRESETS[args.preset]["backbone_config"])

    report = {"preset": args.preset, "wan_init": args.wan_init, "steps": args.steps, "lr": args.lr,
              "lr_scaling": args.lr_scaling, **({"fan_in_lr": args.fan_in_lr, "vector_lr": args.vector_lr}
                                                  if args.lr_scaling == "fan-in" else {}),
              "batch_size": args.batch_size, "threads": torch.get_num_threads(), "torch": torch.__version__}
    generator = torch.Generator().manual_seed(args.seed + 1)
    solid_val = solid_colours(args.num_val, args.solid_size, generator)
    torch.manual_seed(args.seed)
    report["signal_share_at_init"] = signal_share(build_model("wan", backbone_config, args.wan_init), solid_val)
    report["solid_colour"] = {}
    for name in [] if args.skip_solid else args.models:
        torch.manual_seed(args.seed)
        batches = iter(lambda: solid_colours(args.batch_size, args.solid_size, generator), None)
        model = build_model(name, backbone_config, args.wan_init)
        report["solid_colour"][name] = train(model, batches, solid_val, solid_metrics, args, f"solid_colour/{name}")

    if args.data:
        val_stream = frame_batches(args.val_data or args.data, args.num_val, args.frame_size, args.seed, 1)
        frame_val = next(val_stream)
        report["frames"] = {"data_chroma": round(chroma(frame_val), 4)}
        for name in args.models:
            torch.manual_seed(args.seed)
            batches = frame_batches(args.data, args.batch_size, args.frame_size, args.seed, args.shuffle_buffer)
            model = build_model(name, backbone_config, args.wan_init)
            report["frames"][name] = train(model, batches, frame_val, frame_metrics, args, f"frames/{name}")

    return emit_report(report, args.out, indent=1)


if __name__ == "__main__":
    main()

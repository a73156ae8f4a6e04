"""`pyratok generate`: text → video with a token prior and its tokenizer (`PyraTokTextToVideoPipeline`).

    pyratok generate "a red circle moves left on a black background" --out clip.mp4 --seed 0
    pyratok generate "..." --prior ar --top-k 64 --out clip.mp4
    pyratok generate "..." --prime first_frames.mp4 --out continued.mp4   # continue a clip

`--prior masked` (default) and `--prior ar` are the priors shipped as package data (trained on the procedural
clips with the shipped tokenizer); any saved prior folder works too. The tokenizer defaults to the shipped one;
a prior refuses a tokenizer whose codebook, level grids or fingerprint differ from those it was trained on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import model_cards

# The priors shipped as package data of `pyratok.model_cards`, beside the default tokenizer.
SHIPPED_PRIORS = {
    "masked": Path(model_cards.__file__).resolve().parent / "pyratok-prior-masked-procedural",
    "ar": Path(model_cards.__file__).resolve().parent / "pyratok-prior-ar-procedural",
}


def resolve_prior(name: str) -> Path:
    """`masked` / `ar` → the shipped prior's folder; anything else must be a saved prior folder."""
    from .cli import CliError

    path = SHIPPED_PRIORS.get(name, Path(name))
    if not (path / "config.json").is_file():
        shipped = ", ".join(SHIPPED_PRIORS)
        raise CliError(f"--prior {name!r} is neither a shipped prior ({shipped}) nor a folder with a config.json")
    return path


def load_pipeline(prior_name: str, model: str | None, device: torch.device, force: bool):
    """The pipeline of `--prior` and `--model` on `device`; refuses a tokenizer the prior was not trained on."""
    from modeling_pyratok import AutoencoderPyraTok, PyraTokModel, prior_from_pretrained
    from modeling_pyratok.pipeline_pyratok import PyraTokTextToVideoPipeline

    from .cli import DEFAULT_MODEL, CliError, load_model, model_fingerprint

    prior = prior_from_pretrained(resolve_prior(prior_name)).eval()
    tokenizer, tokenizer_id = load_model(model, torch.device("cpu"))
    assert isinstance(tokenizer, PyraTokModel)
    recorded = prior.config.tokenizer_fingerprint
    found = model_fingerprint(tokenizer)
    if recorded and recorded != found and not force:
        raise CliError(
            f"the prior was trained on tokens of a tokenizer with fingerprint {recorded} "
            f"({prior.config.tokenizer_name}); --model {tokenizer_id} has {found}. Pass the tokenizer the prior was "
            f"trained with (default {DEFAULT_MODEL}), or --force"
        )
    vae = AutoencoderPyraTok(**tokenizer.config.to_init_kwargs())
    vae.load_state_dict(tokenizer.state_dict())
    del tokenizer
    pipe = PyraTokTextToVideoPipeline.from_components(prior, vae.eval())
    return pipe.to(device)


def cmd_generate(args: argparse.Namespace) -> int:
    from .cli import check_output, resolve_device
    from .video_io import read_video, video_to_tensor, write_video

    device = resolve_device(args.device)
    inputs = {"priming video": args.prime} if args.prime else {}
    out = check_output(args.out, inputs)
    pipe = load_pipeline(args.prior, args.model, device, args.force)
    layout = pipe.layout
    height, width = (args.size, args.size) if args.size is not None else (args.height, args.width)
    video = None
    if args.prime:
        frames, _ = read_video(args.prime, max_frames=args.prime_frames)
        video = video_to_tensor(frames).unsqueeze(0)
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    bar = tqdm(total=None, desc=f"generate ({args.prior})", unit="step", file=sys.stderr, dynamic_ncols=True)

    def progress(step: int, total: int) -> None:
        bar.total = total
        bar.update(step - bar.n)

    result = pipe(
        args.prompt,
        num_frames=args.frames,
        height=height,
        width=width,
        guidance_scale=args.guidance_scale,
        num_inference_steps=args.steps,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        video=video,
        generator=generator,
        output_type="np",
        callback=progress,
    )
    bar.close()
    clip = np.clip(np.rint(result.frames[0] * 255.0), 0, 255).astype(np.uint8)  # (T, H, W, 3)
    write_video(out, clip, fps=args.fps)
    t, h, w = clip.shape[:3]
    print(f"wrote {out}: {t} frames {h}x{w} at {args.fps:g} fps ({layout.num_tokens} tokens, seed {args.seed})")
    return 0


def add_generate_parser(commands: argparse._SubParsersAction) -> None:
    """Register `pyratok generate` on the `pyratok` command's subparsers."""
    from .cli import DEFAULT_FPS, DEFAULT_MODEL, _frame_rate, _positive_int, _prompt

    gen = commands.add_parser(
        "generate",
        help="generate a video from a prompt with a token prior",
        description="Generate a clip for PROMPT with a token prior (shipped: masked, ar) and decode it with the "
        "tokenizer. Frames and size must be those the prior was trained on (the shipped priors: 17 frames, 64x64).",
    )
    gen.add_argument("prompt", type=_prompt, metavar="PROMPT", help="what the clip shows")
    gen.add_argument("--out", required=True, metavar="VIDEO", help="output .mp4 file")
    gen.add_argument("--prior", default="masked", metavar="masked|ar|PATH",
                     help="shipped prior name or a saved prior folder (default: %(default)s)")
    gen.add_argument("--model", default=None, metavar="PATH_OR_HUB_ID",
                     help=f"tokenizer that decodes the ids (default: {DEFAULT_MODEL})")
    gen.add_argument("--frames", type=_positive_int, default=None, metavar="T",
                     help="frames to generate (default and only value: the prior's, 4k+1)")
    gen.add_argument("--size", type=_positive_int, default=None, metavar="S", help="square frame size")
    gen.add_argument("--height", type=_positive_int, default=None, help="frame height (default: the prior's)")
    gen.add_argument("--width", type=_positive_int, default=None, help="frame width (default: the prior's)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    gen.add_argument("--guidance-scale", type=float, default=3.0, help="classifier-free guidance (1 = none)")
    gen.add_argument("--steps", type=_positive_int, default=12, help="masked prior: decoding steps (default: 12)")
    gen.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    gen.add_argument("--top-k", type=_positive_int, default=None, help="AR prior: sample among the k likeliest")
    gen.add_argument("--top-p", type=float, default=None, help="AR prior: nucleus sampling mass in (0, 1]")
    gen.add_argument("--prime", default=None, metavar="VIDEO", help="continue this clip (its frames are kept)")
    gen.add_argument("--prime-frames", type=_positive_int, default=5, metavar="N",
                     help="frames of --prime to keep, 4k+1 (default: %(default)s)")
    gen.add_argument("--fps", type=_frame_rate, default=DEFAULT_FPS, help="frame rate to write (default: %(default)s)")
    gen.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    gen.add_argument("--force", action="store_true", help="use a tokenizer whose fingerprint differs from the prior's")
    gen.set_defaults(handler=cmd_generate)


__all__ = ["SHIPPED_PRIORS", "add_generate_parser", "cmd_generate", "load_pipeline", "resolve_prior"]

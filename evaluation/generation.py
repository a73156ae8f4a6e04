"""Evaluation of text-to-video generation: the paper's Table 2 at small scale (issue 23 §4).

Metrics, for clips generated from held-out captions and the real clips of the same split:

- **Fréchet distance** between Gaussians fitted to clip features: `|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})`
  (covariances with `np.cov`, ddof = 1, as the StyleGAN-V / fvd-comparison reference). With `i3d=` (the TorchScript
  `i3d_torchscript.pt` of StyleGAN-V, Kinetics-400) it is the standard FVD on 400-d logits-layer features; without,
  it is computed on the 128-d features of the small procedural classifier (`evaluation/video_classifier.py`), reported
  as `"frechet_classifier_distance"` with a note that it is **not comparable to published FVD**.
- **Text consistency**: the share of clips in which the classifier recognises every shape / colour / motion the prompt
  names (top-k values = the prompt's k distinct values per attribute), per attribute and all three, with chance levels.
- **Temporal consistency**: `1 - mean |x_t - x_{t-1}|` over consecutive frames and pixels, pixels in [0, 1]
  (1 = a frozen clip; the real clips' value is reported beside it as the reference).
- **Seconds per generated clip** (text encoding + sampling + decoding, wall clock).

I3D preprocessing (following `universome/fvd-comparison` / StyleGAN-V, as packaged in
`JunyaoHu/common_metrics_on_video_quality` `fvd/styleganv/fvd.py`): the first 16 frames; each frame resized
(bilinear, `align_corners=False`) so its short side is 224, centre-cropped to 224 x 224; values in [-1, 1]; the model
is called as `detector(x, rescale=False, resize=False, return_features=True)` on `(B, 3, 16, 224, 224)`.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .background_colour import background_colour_name, background_consistency
from .video_classifier import (
    HEADS,
    VOCABULARIES,
    VideoClassifier,
    attribute_sets,
    parse_procedural_caption,
    top_k_sets,
)

FRECHET_CLASSIFIER_KEY = "frechet_classifier_distance"
FRECHET_CLASSIFIER_NOTE = ("Fréchet distance on the features of the small procedural-clip classifier trained here: "
                           "not comparable to published FVD")
I3D_FRAMES = 16
I3D_SIZE = 224
I3D_NOTE = ("FVD: I3D (StyleGAN-V i3d_torchscript.pt) features of the first 16 frames resized to 224 x 224, "
            "Fréchet distance with ddof=1 covariances")


# ------------------------------------------------------------------------------------------------ Fréchet distance


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean `(F,)` and covariance `(F, F)` (ddof = 1) of features `(N, F)`, N >= 2, in float64."""
    x = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(features, float)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be (N, F) with N >= 2, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain non-finite values")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((matrix + matrix.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a, b) -> float:
    """Fréchet distance between two Gaussians.

    Args:
        a, b: features `(N, F)` (array or tensor; statistics by `feature_statistics`) or `(mu (F,), sigma (F, F))`.

    `tr((S_a S_b)^{1/2})` is computed as `sum sqrt(eig(S_a^{1/2} S_b S_a^{1/2}))`, a symmetric PSD matrix with the
    same eigenvalues, so the result is real and stable for singular covariances (e.g. fewer clips than features).
    """
    (mu_a, s_a), (mu_b, s_b) = (_stats(x, name) for x, name in ((a, "a"), (b, "b")))
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature sizes differ: a has {mu_a.shape[0]}, b has {mu_b.shape[0]}")
    root_a = _psd_sqrt(s_a)
    middle = root_a @ s_b @ root_a
    eig = np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)
    value = float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * np.sum(np.sqrt(eig)))
    return max(value, 0.0)


def _stats(x, name: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(x, tuple) and len(x) == 2:
        mu, sigma = (np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64) for v in x)
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"{name}: expected mu (F,) and sigma (F, F), got {mu.shape} and {sigma.shape}")
        return mu, sigma
    return feature_statistics(x)


# ---------------------------------------------------------------------------------------------------------- I3D


def i3d_preprocess(video: torch.Tensor, num_frames: int = I3D_FRAMES, size: int = I3D_SIZE) -> torch.Tensor:
    """Clips `(B, 3, T, H, W)` in [-1, 1], T >= num_frames → `(B, 3, num_frames, size, size)` in [-1, 1] (module
    docstring: first frames, short side bilinearly resized to `size`, centre crop)."""
    if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"video must be (B, 3, T, H, W), got shape {tuple(getattr(video, 'shape', ()))}")
    b, _, t, h, w = video.shape
    if t < num_frames:
        raise ValueError(f"I3D features need at least {num_frames} frames per clip, got {t}")
    x = (video[:, :, :num_frames].float() + 1) / 2
    scale = size / min(h, w)
    target = (size, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), size)
    frames = x.transpose(1, 2).reshape(b * num_frames, 3, h, w)
    frames = F.interpolate(frames, size=target, mode="bilinear", align_corners=False)
    top, left = (target[0] - size) // 2, (target[1] - size) // 2
    frames = frames[:, :, top : top + size, left : left + size]
    return (frames.reshape(b, num_frames, 3, size, size).transpose(1, 2) * 2 - 1).contiguous()


class I3DFeatures:
    """The StyleGAN-V / FVD reference I3D (TorchScript, `i3d_torchscript.pt`) as a feature extractor `(B, 400)`."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu") -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"I3D weights not found: {path} (expected the TorchScript i3d_torchscript.pt used by StyleGAN-V / "
                "the FVD reference; download it yourself and pass --i3d PATH, or leave --i3d out for the "
                "classifier-feature Fréchet distance)")
        try:
            self.model = torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"cannot load {path} as a TorchScript module: {err}") from err
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        x = i3d_preprocess(video).to(self.device)
        feats = self.model(x, rescale=False, resize=False, return_features=True)
        return feats.float().cpu()


# ----------------------------------------------------------------------------------------- consistency metrics


def _as_batches(videos: torch.Tensor | Sequence[torch.Tensor], batch_size: int):
    if isinstance(videos, torch.Tensor):
        if videos.ndim != 5:
            raise ValueError(f"videos must be (N, 3, T, H, W), got shape {tuple(videos.shape)}")
        for start in range(0, videos.shape[0], batch_size):
            yield videos[start : start + batch_size]
    else:
        for start in range(0, len(videos), batch_size):
            yield torch.stack(list(videos[start : start + batch_size]))


def _num_videos(videos) -> int:
    return int(videos.shape[0]) if isinstance(videos, torch.Tensor) else len(videos)


def chance_levels(objects_per_prompt: Sequence[Sequence]) -> dict[str, float]:
    """Chance of recognising each attribute (and all three) by guessing k values of a vocabulary of V uniformly:
    `1 / C(V, k)` per prompt (k = the prompt's distinct values), product over attributes for "all", averaged."""
    per_head: dict[str, list[float]] = {h: [] for h in HEADS}
    all_three = []
    for objects in objects_per_prompt:
        sets = attribute_sets(objects)
        p = {h: 1.0 / math.comb(len(VOCABULARIES[h]), len(sets[h])) for h in HEADS}
        for h in HEADS:
            per_head[h].append(p[h])
        all_three.append(p["shape"] * p["color"] * p["motion"])
    n = max(len(all_three), 1)
    return {**{h: sum(v) / n for h, v in per_head.items()}, "all": sum(all_three) / n}


@torch.no_grad()
def text_consistency(videos: torch.Tensor | Sequence[torch.Tensor], prompts: Sequence[str],
                     classifier: VideoClassifier, batch_size: int = 16) -> dict:
    """Share of clips in which `classifier` recognises what their procedural prompt names.

    Args:
        videos: `(N, 3, T, H, W)` in [-1, 1] (or a list of `(3, T, H, W)`).
        prompts: N captions; those that are not procedural captions (e.g. camera pans) are skipped and counted.

    Returns:
        `{"num_clips", "skipped_prompts", "recognised": {shape, color, motion, all}, "chance": {...},
        "single_object": {"num_clips", shape, color, motion, all}}`; an attribute counts as recognised when the
        classifier's top-k values are exactly the prompt's k distinct values of it (top-1 for one object).
    """
    if _num_videos(videos) != len(prompts):
        raise ValueError(f"got {_num_videos(videos)} videos but {len(prompts)} prompts")
    parsed = [parse_procedural_caption(p) for p in prompts]
    keep = [i for i, objs in enumerate(parsed) if objs is not None]
    if not keep:
        raise ValueError("none of the prompts is a procedural caption; text consistency needs shape/colour/motion")
    selected = videos[keep] if isinstance(videos, torch.Tensor) else [videos[i] for i in keep]
    objects = [parsed[i] for i in keep]
    sets = [attribute_sets(o) for o in objects]
    classifier.eval()
    hits = {h: [] for h in HEADS}
    for b, batch in enumerate(_as_batches(selected, batch_size)):
        batch_sets = sets[b * batch_size : b * batch_size + batch.shape[0]]
        counts = {h: torch.tensor([len(s[h]) for s in batch_sets]) for h in HEADS}
        predicted = top_k_sets(classifier(batch), counts)
        for h in HEADS:
            for row, s in zip(predicted[h].cpu(), batch_sets):
                chosen = {VOCABULARIES[h][i] for i in torch.nonzero(row).flatten().tolist()}
                hits[h].append(chosen == set(s[h]))
    hit = {h: torch.tensor(v) for h, v in hits.items()}
    hit["all"] = hit["shape"] & hit["color"] & hit["motion"]
    single = torch.tensor([len(o) == 1 for o in objects])
    return {
        "num_clips": len(keep),
        "skipped_prompts": len(prompts) - len(keep),
        "recognised": {h: v.float().mean().item() for h, v in hit.items()},
        "chance": chance_levels(objects),
        "single_object": {"num_clips": int(single.sum()),
                          **{h: (v[single].float().mean().item() if single.any() else float("nan"))
                             for h, v in hit.items()}},
    }


def temporal_consistency(videos: torch.Tensor | Sequence[torch.Tensor]) -> float:
    """`1 - mean |x_t - x_{t-1}|` over clips, consecutive frame pairs, channels and pixels, with pixels in [0, 1].

    Args:
        videos: `(N, 3, T, H, W)` in [-1, 1] (or a list of `(3, T, H, W)`), T >= 2.

    Returns:
        A float in [0, 1]: 1 for frozen clips; lower means more change from frame to frame (motion or flicker).
    """
    total, count = 0.0, 0
    for batch in _as_batches(videos, 16):
        if batch.shape[2] < 2:
            raise ValueError(f"temporal consistency needs >= 2 frames, got {batch.shape[2]}")
        x = (batch.float().clamp(-1, 1) + 1) / 2
        diff = (x[:, :, 1:] - x[:, :, :-1]).abs()
        total += diff.sum().item()
        count += diff.numel()
    if count == 0:
        raise ValueError("no videos")
    return 1.0 - total / count


# ------------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def _features(extract: Callable[[torch.Tensor], torch.Tensor], videos, batch_size: int) -> torch.Tensor:
    return torch.cat([extract(batch).float().cpu() for batch in _as_batches(videos, batch_size)])


def evaluate_generation(
    generate_fn: Callable[[list[str], int], torch.Tensor],
    prompts: Sequence[str],
    real_videos: torch.Tensor | Sequence[torch.Tensor],
    classifier: VideoClassifier,
    batch_size: int = 8,
    seed: int = 0,
    i3d: I3DFeatures | str | os.PathLike | None = None,
    real_prompts: Sequence[str] | None = None,
    on_batch: Callable[[list[str], torch.Tensor], None] | None = None,
) -> dict:
    """Generate one clip per prompt and compare with real clips.

    Args:
        generate_fn: `(prompts, seed) -> (B, 3, T, H, W)` in [-1, 1]; called per batch with `seed + batch index`.
        prompts: the captions to generate (e.g. the held-out test captions).
        real_videos: real clips `(N, 3, T, H, W)` in [-1, 1] (or a list) for the Fréchet distance and references.
        classifier: the procedural classifier (features + text consistency).
        batch_size: prompts per `generate_fn` call (and per feature batch).
        seed: base seed.
        i3d: an `I3DFeatures` or a path to `i3d_torchscript.pt`: adds `"fvd"` (the standard I3D FVD).
        real_prompts: captions of `real_videos`: adds the classifier's consistency on real clips (the ceiling).
        on_batch: called with each batch's prompts and generated clips (e.g. to save them).

    Returns:
        A dict: counts, `seconds_per_clip`, `frechet_classifier_distance` (+ note), `fvd` (with I3D), text
        consistency (generated, and real if `real_prompts`), temporal consistency (generated and real).
    """
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if _num_videos(real_videos) < 2:
        raise ValueError(f"need >= 2 real videos for a Fréchet distance, got {_num_videos(real_videos)}")
    if isinstance(i3d, (str, os.PathLike)):
        i3d = I3DFeatures(i3d)
    generated, seconds = [], 0.0
    for b, start in enumerate(range(0, len(prompts), batch_size)):
        batch_prompts = prompts[start : start + batch_size]
        tic = time.perf_counter()
        clips = generate_fn(batch_prompts, seed + b)
        seconds += time.perf_counter() - tic
        if not isinstance(clips, torch.Tensor) or clips.ndim != 5 or clips.shape[0] != len(batch_prompts):
            raise ValueError(f"generate_fn must return ({len(batch_prompts)}, 3, T, H, W), got "
                             f"{tuple(getattr(clips, 'shape', ()))}")
        clips = clips.detach().float().cpu().clamp(-1, 1)
        generated.append(clips)
        if on_batch is not None:
            on_batch(batch_prompts, clips)
    fake = torch.cat(generated)
    classifier.eval()
    results = {
        "num_generated": len(prompts),
        "num_real": _num_videos(real_videos),
        "generated_shape": list(fake.shape[1:]),
        "seconds_per_clip": seconds / len(prompts),
    }
    if len(prompts) >= 2:
        fake_feats = _features(classifier.features, fake, batch_size)
        real_feats = _features(classifier.features, real_videos, batch_size)
        results[FRECHET_CLASSIFIER_KEY] = frechet_distance(fake_feats, real_feats)
        results["frechet_note"] = FRECHET_CLASSIFIER_NOTE
        if i3d is not None:
            results["fvd"] = frechet_distance(_features(i3d, fake, batch_size),
                                              _features(i3d, real_videos, batch_size))
            results["fvd_note"] = I3D_NOTE
    else:
        results["frechet_note"] = "one generated clip: no covariance, no Fréchet distance"
    results["text_consistency"] = text_consistency(fake, prompts, classifier, batch_size)
    if real_prompts is not None:
        results["real_text_consistency"] = text_consistency(real_videos, list(real_prompts), classifier, batch_size)
    # Classifier-free: the border ring's colour against the prompt's background colour (evaluation/background_colour).
    if any(background_colour_name(p) for p in prompts):
        results["background_consistency"] = background_consistency(fake, prompts)
    if real_prompts is not None and any(background_colour_name(p) for p in real_prompts):
        results["real_background_consistency"] = background_consistency(real_videos, list(real_prompts))
    results["temporal_consistency"] = {"generated": temporal_consistency(fake),
                                       "real": temporal_consistency(real_videos)}
    return results


# --------------------------------------------------------------------------------- priors → clips (GEN_CONTRACT A)


def generate_clips(prior, tokenizer, prompts: Sequence[str], *, guidance_scale: float = 1.0,
                   num_inference_steps: int | None = None, seed: int = 0,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """Prompts → text embeddings (the tokenizer's text encoder) → `prior.generate` ids `(B, N)` → decoded clips.

    Returns:
        `(B, 3, T, H, W)` in [-1, 1] on the CPU. `num_inference_steps` is passed to masked priors only (AR priors
        sample one token per step).
    """
    prompts = list(prompts)
    if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError(f"prompts must be non-empty strings, got {prompts!r}")
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    embeds, mask = tokenizer.get_text_encoder()(prompts, device)
    kwargs = {}
    if num_inference_steps is not None and getattr(prior.config, "model_type", "") == "pyratok_masked_prior":
        kwargs["num_inference_steps"] = num_inference_steps
    ids = prior.generate(embeds, mask, guidance_scale=guidance_scale, generator=generator, **kwargs)
    return tokenizer.decode_from_sequence(ids, prior.config.layout).float().cpu().clamp(-1, 1)


# --------------------------------------------------------------------------------------------- CLI subcommand


def _named_paths(values: Sequence[str] | None, flag: str) -> list[tuple[str | None, str]]:
    """`["name=path", "path", "a=p1,b=p2"]` → `[(name, path), ...]`; an unnamed entry has the name None."""
    out: list[tuple[str | None, str]] = []
    for value in values or []:
        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            name, sep, path = item.partition("=")
            if sep and (not name.strip() or not path.strip()):
                raise ValueError(f"{flag}: expected NAME=PATH or PATH, got {item!r}")
            out.append((name.strip(), path.strip()) if sep else (None, item))
    return out


def _unique(pairs: list[tuple[str | None, str]], flag: str) -> dict[str | None, str]:
    out: dict[str | None, str] = {}
    for name, path in pairs:
        if name in out:
            raise ValueError(f"{flag}: {name or 'an unnamed entry'} is given twice")
        out[name] = path
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `pyratok-eval generation` (`--data` is the held-out split whose captions are the prompts)."""
    parser.add_argument("--prior", action="append", default=None, metavar="[NAME=]PATH",
                        help="a trained prior folder; repeatable, or NAME=PATH,NAME=PATH (one report row each)")
    parser.add_argument("--priors", action="append", default=None, metavar="NAME=PATH,...", help="same as --prior")
    parser.add_argument("--tokenizer", action="append", default=None, metavar="[NAME=]PATH",
                        help="PyraTok folder decoding a prior's ids: PATH for all priors or NAME=PATH for one "
                             "(default: the prior's config.tokenizer_name if it is a folder, else --model)")
    parser.add_argument("--classifier", required=True,
                        help="video classifier folder (from `pyratok-eval train-classifier`)")
    parser.add_argument("--num-prompts", type=int, default=None, help="use the first N procedural test captions")
    parser.add_argument("--guidance-scale", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=None, help="masked priors: decoding steps (default: prior's)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--i3d", default=None, help="i3d_torchscript.pt (StyleGAN-V FVD detector): adds the I3D FVD")
    parser.add_argument("--save-videos", default=None, metavar="DIR",
                        help="write each generated clip to DIR/<prior>/<index>.mp4")


def _load_prior(path: str, device: str):
    from modeling_pyratok import prior_from_pretrained  # GEN_CONTRACT A (the priors branch)

    return prior_from_pretrained(path).to(device).eval()


def _load_tokenizer(path: str, device: str):
    from .cli import load_model

    return load_model(path, device)


def _tokenizer_for(name: str, prior, tokenizers: dict[str | None, str], default: str) -> str:
    if name in tokenizers:
        return tokenizers[name]
    if None in tokenizers:
        return tokenizers[None]
    recorded = getattr(prior.config, "tokenizer_name", None)
    if recorded and Path(recorded).is_dir():
        return recorded
    return default


def run(args: argparse.Namespace) -> dict:
    """Generate from every prior with the split's procedural captions and evaluate against the split's clips."""
    from .clips import ClipReader
    from .video_classifier import VideoClassifier

    pairs = _named_paths((args.prior or []) + (args.priors or []), "--prior")
    if not pairs:
        raise ValueError("give at least one --prior [NAME=]PATH")
    priors = _unique([(name or Path(path).name, path) for name, path in pairs], "--prior")
    tokenizers = _unique(_named_paths(args.tokenizer, "--tokenizer"), "--tokenizer")
    unknown = sorted(k for k in tokenizers if k is not None and k not in priors)
    if unknown:
        raise ValueError(f"--tokenizer names {unknown} match no prior (priors: {sorted(priors)})")
    if args.num_prompts is not None and args.num_prompts < 2:
        raise ValueError(f"--num-prompts must be >= 2 (a Fréchet distance needs two clips), got {args.num_prompts}")
    for name, path in priors.items():
        if not Path(path).is_dir():
            raise FileNotFoundError(f"prior {name}: folder not found: {path}")
    classifier = VideoClassifier.load(args.classifier, args.device)
    i3d = I3DFeatures(args.i3d, args.device) if args.i3d else None

    cfg = classifier.config
    prompts, real = [], []
    for clip in ClipReader(args.data, num_frames=cfg.num_frames, size=cfg.size):
        if parse_procedural_caption(clip.caption) is None:
            continue
        prompts.append(clip.caption)
        real.append(clip.video)
        if args.num_prompts is not None and len(prompts) >= args.num_prompts:
            break
    if len(prompts) < 2:
        raise ValueError(f"{args.data} has {len(prompts)} procedural captions; need >= 2")
    real_videos = torch.stack(real)

    rows = {}
    for name, path in priors.items():
        prior = _load_prior(path, args.device)
        tok_path = _tokenizer_for(name, prior, tokenizers, args.model)
        tokenizer = _load_tokenizer(tok_path, args.device)
        prior.check_tokenizer(tokenizer)
        steps = args.steps

        def generate_fn(batch: list[str], seed: int, prior=prior, tokenizer=tokenizer, steps=steps) -> torch.Tensor:
            return generate_clips(prior, tokenizer, batch, guidance_scale=args.guidance_scale,
                                  num_inference_steps=steps, seed=seed, device=args.device)

        on_batch = None
        if args.save_videos:
            from pyratok.video_io import write_video

            folder, counter = Path(args.save_videos) / name, [0]

            def on_batch(batch: list[str], clips: torch.Tensor, folder=folder, counter=counter) -> None:
                for prompt, clip in zip(batch, clips):
                    write_video(folder / f"{counter[0]:03d}.mp4", clip, fps=8.0)
                    with open(folder / "prompts.txt", "a") as f:
                        f.write(f"{counter[0]:03d}\t{prompt}\n")
                    counter[0] += 1

        row = evaluate_generation(generate_fn, prompts, real_videos, classifier, batch_size=args.batch_size,
                                  seed=args.seed, i3d=i3d, on_batch=on_batch)
        rows[name] = {"prior": str(Path(path).resolve()), "prior_type": prior.config.model_type,
                      "tokenizer": str(Path(tok_path).resolve()), **row}
    return {
        "num_prompts": len(prompts),
        "classifier": str(Path(args.classifier).resolve()),
        "classifier_text_consistency_on_real": text_consistency(real_videos, prompts, classifier, args.batch_size),
        "background_consistency_on_real": background_consistency(real_videos, prompts),
        "frechet_note": FRECHET_CLASSIFIER_NOTE,
        "priors": rows,
    }


__all__ = [
    "FRECHET_CLASSIFIER_KEY",
    "FRECHET_CLASSIFIER_NOTE",
    "I3DFeatures",
    "chance_levels",
    "evaluate_generation",
    "feature_statistics",
    "frechet_distance",
    "generate_clips",
    "i3d_preprocess",
    "temporal_consistency",
    "text_consistency",
]

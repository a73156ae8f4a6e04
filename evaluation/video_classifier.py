"""A small 3D-conv classifier of procedural clips: which shapes, colours and motions a clip shows.

Used by `evaluation/generation.py` for text consistency (does a generated clip show what its prompt names?) and, via
`VideoClassifier.features`, for a Fréchet distance when no I3D weights are given.

Labels. A procedural clip (`training/make_shards.py`) holds 1-3 objects, each with a shape (`category`), a colour and
a motion; its caption names them in drawing order. Nothing in the pixels says which object is "the first" (it is
only the one drawn underneath), so one softmax head per attribute trained on `objects[0]` could not exceed ~60% on
the two thirds of clips with several objects. The heads are therefore **multi-label presence** heads: for each
attribute, one sigmoid per vocabulary value, trained to say whether any object of the clip has that value. A clip
"is recognised" for an attribute when the classifier's top-k values, k = the number of distinct values the clip (or
prompt) has, are exactly those values; for a single-object clip that is plain top-1 accuracy. Which colour belongs
to which shape (binding) is not checked. Camera pan / zoom clips have no objects: they are skipped and counted.

Vocabularies are fixed by `make_shards` (`SHAPES`, `OBJECT_COLORS`, `MOTIONS`), not by the data.

Training augmentations keep labels exact: a horizontal flip swaps "moves left" / "moves right"; playing a clip
backwards swaps left/right, up/down and grows/shrinks (jumps, bounces, rotates and stays still read the same
both ways).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pyratok.training.make_shards import BACKGROUND_COLORS, MOTIONS, OBJECT_COLORS, SHAPES, TEXTURES

HEADS = ("shape", "color", "motion")
VOCABULARIES: dict[str, tuple[str, ...]] = {"shape": SHAPES, "color": tuple(OBJECT_COLORS), "motion": MOTIONS}
# json field of an object in the sample metadata, per head
META_FIELDS = {"shape": "category", "color": "color", "motion": "motion"}
CONFIG_NAME = "classifier_config.json"
WEIGHTS_NAME = "classifier.safetensors"

# Label permutations of the two augmentations (index i of the motion vocabulary → index of its image).
_FLIP_SWAPS = {"moves left": "moves right", "moves right": "moves left"}
_REVERSE_SWAPS = {**_FLIP_SWAPS, "moves up": "moves down", "moves down": "moves up", "grows": "shrinks",
                  "shrinks": "grows"}


# ---------------------------------------------------------------------------------------------- caption parsing

_ADJECTIVES = tuple(a for a in TEXTURES.values() if a)
_OBJECT_PATTERN = r"(?:a|an) (?P<color>{c}) (?:(?P<texture>{t}) )?(?P<shape>{s}) (?P<motion>{m})".format(
    c="|".join(map(re.escape, OBJECT_COLORS)), t="|".join(map(re.escape, _ADJECTIVES)),
    s="|".join(map(re.escape, SHAPES)), m="|".join(map(re.escape, MOTIONS)),
)
_OBJECT_RE = re.compile(_OBJECT_PATTERN)
_ANY_OBJECT = re.sub(r"\(\?P<\w+>", "(?:", _OBJECT_PATTERN)  # the same without group names (they may not repeat)
_BACKGROUND = r"(?:(?:a|an) (?:{b})(?: gradient| striped)?|a noisy (?:{b})) background".format(
    b="|".join(map(re.escape, BACKGROUND_COLORS)))
_CAPTION_RE = re.compile(rf"(?P<objects>{_ANY_OBJECT}(?:, {_ANY_OBJECT})*(?: and {_ANY_OBJECT})?) on {_BACKGROUND}")


@dataclass(frozen=True)
class PromptObject:
    """One object named by a procedural caption."""

    shape: str
    color: str
    motion: str
    texture: str  # make_shards texture name ("solid", "stripes", "checker", "dots")


def parse_procedural_caption(caption: str) -> list[PromptObject] | None:
    """Invert `make_shards.render_procedural`'s caption template.

    `"<a|an> <colour> [striped|checkered|dotted ]<shape> <motion>"` per object, joined by ", " and a final " and ",
    then `" on <background phrase>"`. Returns the objects in caption (= drawing) order, or None when `caption` does
    not follow the template (e.g. a camera pan caption, or free text).
    """
    if not isinstance(caption, str):
        raise ValueError(f"caption must be a str, got {type(caption).__name__}")
    match = _CAPTION_RE.fullmatch(caption.strip())
    if match is None:
        return None
    texture_of = {adj: name for name, adj in TEXTURES.items()}
    objects = [
        PromptObject(m["shape"], m["color"], m["motion"], texture_of.get(m["texture"] or "", "solid"))
        for m in _OBJECT_RE.finditer(match["objects"])
    ]
    # the regex alternation could in principle split ", " / " and " ambiguously: rebuild and compare
    phrases = [f"{'an' if o.color[0] in 'aeiou' else 'a'} {o.color} "
               f"{TEXTURES[o.texture] + ' ' if TEXTURES[o.texture] else ''}{o.shape} {o.motion}" for o in objects]
    joined = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return objects if joined == match["objects"] else None


def parse_prompt(caption: str) -> tuple[str, str, str] | None:
    """`(shape, colour, motion)` of the first object a procedural caption names; None if it is not one."""
    objects = parse_procedural_caption(caption)
    return None if objects is None else (objects[0].shape, objects[0].color, objects[0].motion)


def attribute_sets(objects: Iterable[PromptObject | dict]) -> dict[str, frozenset[str]]:
    """Distinct values per head of a list of `PromptObject`s or sample-json objects (`category`/`color`/`motion`)."""
    out: dict[str, set[str]] = {h: set() for h in HEADS}
    for obj in objects:
        for head in HEADS:
            value = obj[META_FIELDS[head]] if isinstance(obj, dict) else getattr(obj, head)
            if value not in VOCABULARIES[head]:
                raise ValueError(f"unknown {head} {value!r}; expected one of {VOCABULARIES[head]}")
            out[head].add(value)
    return {h: frozenset(v) for h, v in out.items()}


def multi_hot(sets: dict[str, frozenset[str]]) -> dict[str, torch.Tensor]:
    """`{head: float (V,)}` with ones at the values in `sets[head]`."""
    out = {}
    for head in HEADS:
        vec = torch.zeros(len(VOCABULARIES[head]))
        for value in sets[head]:
            vec[VOCABULARIES[head].index(value)] = 1.0
        out[head] = vec
    return out


# ------------------------------------------------------------------------------------------------------- data


@dataclass
class LabelledClips:
    """Procedural clips held in memory with multi-hot targets.

    Args:
        videos: uint8 `(N, 3, T, H, W)` (decode with `x / 127.5 - 1`).
        targets: `{head: float (N, V_head)}` multi-hot presence of each value.
        num_objects: long `(N,)` objects per clip.
        keys: sample keys.
        skipped: counts of samples left out, by reason (e.g. `{"pan": 16}`).
    """

    videos: torch.Tensor
    targets: dict[str, torch.Tensor]
    num_objects: torch.Tensor
    keys: list[str]
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.videos.shape[0])


def to_float_video(u8: torch.Tensor) -> torch.Tensor:
    """uint8 → float in [-1, 1] (same shape)."""
    return u8.float().div_(127.5).sub_(1.0)


def to_uint8_video(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] → uint8 (same shape), rounded and clipped."""
    return ((x.detach().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def load_labelled_clips(split: str | os.PathLike, *, num_frames: int = 17, size: int = 64,
                        max_clips: int | None = None) -> LabelledClips:
    """Read the procedural clips of a split (folder of `.tar` shards, one shard or a glob) with their labels.

    Clips without objects (camera pans) and clips whose json lacks objects are skipped and counted in `.skipped`.
    """
    from pyratok.evaluation.clips import ClipReader

    reader = ClipReader(split, num_frames=num_frames, size=size)
    videos, keys, nobj = [], [], []
    targets: dict[str, list[torch.Tensor]] = {h: [] for h in HEADS}
    skipped: dict[str, int] = {}
    for clip in reader:
        objects = clip.meta.get("objects") or []
        if not objects:
            reason = "pan" if clip.meta.get("kind") == "pan" else "no objects"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        hot = multi_hot(attribute_sets(objects))
        for head in HEADS:
            targets[head].append(hot[head])
        videos.append(to_uint8_video(clip.video))
        keys.append(clip.key)
        nobj.append(len(objects))
        if max_clips is not None and len(videos) >= max_clips:
            break
    if reader.stats.skipped:
        skipped["unreadable"] = reader.stats.skipped
    if not videos:
        raise ValueError(f"no procedural clips with objects in {split} (skipped: {skipped})")
    return LabelledClips(torch.stack(videos), {h: torch.stack(v) for h, v in targets.items()},
                         torch.tensor(nobj), keys, skipped)


# ------------------------------------------------------------------------------------------------------ model


@dataclass
class VideoClassifierConfig:
    """Architecture and input geometry. Clips of another size or length are resampled to `(num_frames, size, size)`.

    `channels`: the conv3d (motion) pathway; `appearance_channels`: an optional conv2d pathway run on
    `appearance_frames` evenly spaced frames at full resolution (shape and colour need spatial detail more than time);
    `()` turns it off.
    """

    channels: tuple[int, ...] = (8, 16, 32, 64)
    appearance_channels: tuple[int, ...] = (24, 48, 64, 96)
    appearance_frames: int = 3
    feature_dim: int = 128
    num_frames: int = 17
    size: int = 64
    vocabularies: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(VOCABULARIES))

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.appearance_channels = tuple(int(c) for c in self.appearance_channels)
        if self.appearance_channels and (min(self.appearance_channels) < 1 or self.appearance_frames < 1):
            raise ValueError(f"appearance_channels must be positive and appearance_frames >= 1, got "
                             f"{self.appearance_channels} and {self.appearance_frames}")
        self.vocabularies = {h: tuple(v) for h, v in self.vocabularies.items()}
        if len(self.channels) < 2 or min(self.channels) < 1:
            raise ValueError(f"channels must hold >= 2 positive ints, got {self.channels}")
        if self.feature_dim < 1 or self.num_frames < 1 or self.size < 8:
            raise ValueError(f"need feature_dim >= 1, num_frames >= 1, size >= 8; got feature_dim={self.feature_dim}"
                             f" num_frames={self.num_frames} size={self.size}")
        if set(self.vocabularies) != set(HEADS):
            raise ValueError(f"vocabularies must have the heads {HEADS}, got {tuple(self.vocabularies)}")


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class VideoClassifier(nn.Module):
    """Conv3d blocks (the first and last stride 2 in space only, the others in time and space) → mean and max pool;
    optionally conv2d blocks (the first stride 1, the others 2) on a few frames → mean and max pool over space, max
    over frames; both concatenated → linear + SiLU feature `(B, F)` → one linear presence head per attribute."""

    def __init__(self, config: VideoClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = config or VideoClassifierConfig()
        c = self.config.channels
        layers: list[nn.Module] = []
        in_ch = 3
        for i, out_ch in enumerate(c):
            stride = (1, 2, 2) if i in (0, len(c) - 1) else (2, 2, 2)
            layers += [nn.Conv3d(in_ch, out_ch, 3, stride=stride, padding=1), _norm(out_ch), nn.SiLU()]
            in_ch = out_ch
        self.body = nn.Sequential(*layers)
        pooled = 2 * in_ch
        self.appearance = None
        if self.config.appearance_channels:
            layers, in_ch = [], 3
            for i, out_ch in enumerate(self.config.appearance_channels):
                layers += [nn.Conv2d(in_ch, out_ch, 3, stride=1 if i == 0 else 2, padding=1), _norm(out_ch), nn.SiLU()]
                in_ch = out_ch
            self.appearance = nn.Sequential(*layers)
            pooled += 2 * in_ch
        self.project = nn.Linear(pooled, self.config.feature_dim)
        self.heads = nn.ModuleDict({h: nn.Linear(self.config.feature_dim, len(v))
                                    for h, v in self.config.vocabularies.items()})

    def _prepare(self, video: torch.Tensor) -> torch.Tensor:
        if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be a tensor (B, 3, T, H, W), got shape {tuple(getattr(video, 'shape', ()))}")
        if video.dtype == torch.uint8:
            video = to_float_video(video)
        cfg = self.config
        target = (cfg.num_frames, cfg.size, cfg.size)
        if tuple(video.shape[2:]) != target:
            video = F.interpolate(video.float(), size=target, mode="trilinear", align_corners=False)
        return video.to(next(self.parameters()).device, torch.float32)

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """Float `(B, 3, T, H, W)` in [-1, 1] (or uint8) → features `(B, F)`."""
        x = self._prepare(video)
        h = self.body(x)
        pooled = [h.mean(dim=(2, 3, 4)), h.amax(dim=(2, 3, 4))]
        if self.appearance is not None:
            b, _, t, height, width = x.shape
            k = min(self.config.appearance_frames, t)
            index = torch.linspace(0, t - 1, k).round().long().to(x.device)
            frames = x.index_select(2, index).transpose(1, 2).reshape(b * k, 3, height, width)
            a = self.appearance(frames)
            a = torch.cat([a.mean(dim=(2, 3)), a.amax(dim=(2, 3))], dim=1).view(b, k, -1).amax(dim=1)
            pooled.append(a)
        return F.silu(self.project(torch.cat(pooled, dim=1)))

    def logits_from_features(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        return {h: head(feats) for h, head in self.heads.items()}

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """`{head: logits (B, V_head)}` (sigmoid = probability that some object has that value)."""
        return self.logits_from_features(self.features(video))

    @torch.no_grad()
    def predict(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """`{head: long (B,)}`: the most likely value per head (for a single-object clip, its label)."""
        return {h: v.argmax(dim=1) for h, v in self(video).items()}

    @torch.no_grad()
    def predict_sets(self, video: torch.Tensor, counts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`{head: bool (B, V)}`: the `counts[head][b]` highest-scoring values of clip b, per head."""
        return top_k_sets(self(video), counts)

    # -------------------------------------------------------------------------------------------- save / load

    def save_pretrained(self, folder: str | os.PathLike, report: dict | None = None) -> None:
        """Write `classifier.safetensors` and `classifier_config.json` (config, vocabularies, optional report)."""
        from safetensors.torch import save_file

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(out / WEIGHTS_NAME))
        meta = {"config": asdict(self.config), "heads": list(HEADS)}
        if report is not None:
            meta["training_report"] = report
        (out / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str | torch.device = "cpu") -> VideoClassifier:
        """Load a folder written by `save_pretrained` (eval mode)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"not a video classifier folder (missing {', '.join(missing)}): {folder} "
                                    "(train one with `pyratok-eval train-classifier`)")
        meta = json.loads((folder / CONFIG_NAME).read_text())
        config = VideoClassifierConfig(**meta["config"])
        for head in HEADS:
            if config.vocabularies[head] != VOCABULARIES[head]:
                raise ValueError(f"{folder}: the classifier's {head} vocabulary {config.vocabularies[head]} differs "
                                 f"from make_shards' {VOCABULARIES[head]}")
        model = cls(config)
        model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
        return model.to(device).eval()


load_classifier = VideoClassifier.load


def top_k_sets(logits: dict[str, torch.Tensor], counts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`{head: bool (B, V)}` marking the `counts[head][b]` largest logits of row b (ties: lower index first)."""
    out = {}
    for head, scores in logits.items():
        k = torch.as_tensor(counts[head], device=scores.device).long()
        if k.shape != scores.shape[:1] or (k < 0).any() or (k > scores.shape[1]).any():
            raise ValueError(f"counts[{head!r}] must be (B,) in [0, {scores.shape[1]}], got {k.tolist()}")
        order = torch.argsort(scores, dim=1, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
        out[head] = rank < k[:, None]
    return out


# --------------------------------------------------------------------------------------------------- training


def _permutation(swaps: dict[str, str]) -> torch.Tensor:
    vocab = VOCABULARIES["motion"]
    return torch.tensor([vocab.index(swaps.get(m, m)) for m in vocab])


def augment(videos: torch.Tensor, motion: torch.Tensor,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal flips and time reversals of `(B, 3, T, H, W)` with the motion targets `(B, V)` permuted."""
    flip = torch.rand(videos.shape[0], generator=generator) < 0.5
    reverse = torch.rand(videos.shape[0], generator=generator) < 0.5
    videos, motion = videos.clone(), motion.clone()
    videos[flip] = videos[flip].flip(-1)
    motion[flip] = motion[flip][:, _permutation(_FLIP_SWAPS)]
    videos[reverse] = videos[reverse].flip(2)
    motion[reverse] = motion[reverse][:, _permutation(_REVERSE_SWAPS)]
    return videos, motion


@torch.no_grad()
def evaluate_classifier(classifier: VideoClassifier, data: LabelledClips | str | os.PathLike,
                        batch_size: int = 32) -> dict:
    """Held-out accuracy: per head, the fraction of clips whose top-k values (k = the clip's distinct values) are
    exactly its values ("set accuracy"; top-1 accuracy on single-object clips), for all three heads at once, and
    the same split by number of objects."""
    if not isinstance(data, LabelledClips):
        cfg = classifier.config
        data = load_labelled_clips(data, num_frames=cfg.num_frames, size=cfg.size)
    classifier.eval()
    correct = {h: [] for h in HEADS}
    for start in range(0, len(data), batch_size):
        sl = slice(start, start + batch_size)
        logits = classifier(data.videos[sl])
        counts = {h: data.targets[h][sl].sum(1).long() for h in HEADS}
        sets = top_k_sets(logits, counts)
        for h in HEADS:
            correct[h].append((sets[h].cpu() == data.targets[h][sl].bool()).all(dim=1))
    hits = {h: torch.cat(v) for h, v in correct.items()}
    hits["all"] = hits["shape"] & hits["color"] & hits["motion"]
    report = {"num_clips": len(data), "skipped": dict(data.skipped),
              "accuracy": {h: round(v.float().mean().item(), 4) for h, v in hits.items()}, "by_num_objects": {}}
    for n in sorted(set(data.num_objects.tolist())):
        sel = data.num_objects == n
        report["by_num_objects"][str(n)] = {"num_clips": int(sel.sum()),
                                            **{h: round(v[sel].float().mean().item(), 4) for h, v in hits.items()}}
    return report


def train_video_classifier(
    train_data: LabelledClips | str | os.PathLike,
    val_data: LabelledClips | str | os.PathLike | None = None,
    steps: int = 1000,
    batch_size: int = 16,
    lr: float = 2e-3,
    seed: int = 0,
    threads: int | None = None,
    config: VideoClassifierConfig | None = None,
    augmentation: bool = True,
    eval_every: int | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[VideoClassifier, dict]:
    """Train a `VideoClassifier` with AdamW (cosine decay after a short warm-up) and BCE on the presence targets.

    Args:
        train_data, val_data: `LabelledClips` or split paths (loaded with `load_labelled_clips`).
        steps, batch_size, lr, seed: optimisation; batches are drawn with replacement from a seeded generator.
        threads: torch CPU threads during training (restored after); None leaves the setting.
        config: architecture (default `VideoClassifierConfig()`).
        augmentation: random flips / time reversals with exact label swaps (module docstring).
        eval_every: evaluate on `val_data` every this many steps (None: only at the end).
        log: receives one line per evaluation / every 50 steps.

    Returns:
        `(classifier in eval mode, report)`: settings, data counts, seconds, final train loss and validation accuracy.
    """
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"need steps >= 1, batch_size >= 1, lr > 0; got steps={steps} batch_size={batch_size} "
                         f"lr={lr}")
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        config = config or VideoClassifierConfig()
        if not isinstance(train_data, LabelledClips):
            train_data = load_labelled_clips(train_data, num_frames=config.num_frames, size=config.size)
        if val_data is not None and not isinstance(val_data, LabelledClips):
            val_data = load_labelled_clips(val_data, num_frames=config.num_frames, size=config.size)
        load_seconds = time.perf_counter() - start
        torch.manual_seed(seed)
        model = VideoClassifier(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        warmup = max(1, steps // 20)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
        gen = torch.Generator().manual_seed(seed)
        history, losses = [], []
        model.train()
        for step in range(1, steps + 1):
            idx = torch.randint(len(train_data), (batch_size,), generator=gen)
            videos = to_float_video(train_data.videos[idx])
            targets = {h: train_data.targets[h][idx] for h in HEADS}
            if augmentation:
                videos, targets["motion"] = augment(videos, targets["motion"], gen)
            logits = model(videos)
            loss = sum(F.binary_cross_entropy_with_logits(logits[h], targets[h]) for h in HEADS) / len(HEADS)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            if log is not None and step % 50 == 0:
                log(f"step {step}/{steps} loss {sum(losses[-50:]) / len(losses[-50:]):.4f} "
                    f"{time.perf_counter() - start:.0f}s")
            if val_data is not None and eval_every and step % eval_every == 0 and step < steps:
                acc = evaluate_classifier(model, val_data)["accuracy"]
                model.train()
                history.append({"step": step, **acc})
                if log is not None:
                    log(f"step {step} val {acc}")
        model.eval()
        report = {
            "settings": {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "threads": threads,
                         "augmentation": augmentation, "config": asdict(config)},
            "train_clips": len(train_data), "train_skipped": dict(train_data.skipped),
            "final_train_loss": round(sum(losses[-50:]) / len(losses[-50:]), 5),
            "load_seconds": round(load_seconds, 1), "seconds": round(time.perf_counter() - start, 1),
            "val_history": history,
        }
        if val_data is not None:
            report["val"] = evaluate_classifier(model, val_data)
        return model, report
    finally:
        torch.set_num_threads(before)


# -------------------------------------------------------------------------------------------- CLI subcommand


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `pyratok-eval train-classifier` (`--data` is the train split)."""
    parser.add_argument("--classifier", required=True, help="output folder of the trained classifier")
    parser.add_argument("--val-data", default=None, help="validation split (accuracy during/after training)")
    parser.add_argument("--test-data", default=None, help="held-out split: per-head accuracy in the report")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eval-every", type=int, default=None)
    parser.add_argument("--no-augmentation", action="store_true")
    parser.add_argument("--channels", default="8,16,32,64", help="conv3d block widths, comma-separated")
    parser.add_argument("--appearance-channels", default="24,48,64,96",
                        help="conv2d (per-frame) block widths, comma-separated; '' for none")
    parser.add_argument("--appearance-frames", type=int, default=3, help="frames the conv2d pathway sees")
    parser.add_argument("--feature-dim", type=int, default=128, help="feature vector size F")
    parser.add_argument("--input-frames", type=int, default=17, help="frames the classifier sees (4k+1)")
    parser.add_argument("--input-size", type=int, default=64, help="square frame size the classifier sees")


def run(args: argparse.Namespace) -> dict:
    """Train on `--data`, save to `--classifier`, and report validation / test accuracy."""
    import sys

    start = time.perf_counter()
    try:
        channels = tuple(int(c) for c in args.channels.split(",") if c.strip())
        appearance = tuple(int(c) for c in args.appearance_channels.split(",") if c.strip())
    except ValueError as err:
        raise ValueError(f"--channels / --appearance-channels must be comma-separated integers, got "
                         f"{args.channels!r} / {args.appearance_channels!r}") from err
    config = VideoClassifierConfig(channels=channels, appearance_channels=appearance,
                                   appearance_frames=args.appearance_frames, feature_dim=args.feature_dim,
                                   num_frames=args.input_frames, size=args.input_size)
    classifier, report = train_video_classifier(
        args.data, args.val_data, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        threads=args.threads, config=config, augmentation=not args.no_augmentation, eval_every=args.eval_every,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    if args.test_data is not None:
        report["test"] = evaluate_classifier(classifier, args.test_data)
    report["command_seconds"] = round(time.perf_counter() - start, 1)
    classifier.save_pretrained(args.classifier, report=report)
    report["classifier"] = str(Path(args.classifier).resolve())
    return report


__all__ = [
    "HEADS",
    "VOCABULARIES",
    "LabelledClips",
    "PromptObject",
    "VideoClassifier",
    "VideoClassifierConfig",
    "attribute_sets",
    "evaluate_classifier",
    "load_classifier",
    "load_labelled_clips",
    "multi_hot",
    "parse_procedural_caption",
    "parse_prompt",
    "top_k_sets",
    "train_video_classifier",
]

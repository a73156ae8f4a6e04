"""Synthetic captioned video clips as WebDataset shards, with ground truth for segmentation and localization.

Two kinds of clip, both rendered with numpy/torch on the CPU and fully determined by `(seed, split, kind, index)`:

- procedural: 1-3 textured shapes on a varied background, each with a motion (move, jump, bounce, rotate, grow,
  shrink, stay still) that may cover only part of the clip; anti-aliased by supersampling, so a tokenizer can learn to
  reconstruct them. Ground truth: per-object boxes (in the sample json) and, for val/test, per-frame visible masks.
- pan: smooth camera pans and zooms over the natural photographs bundled with scikit-image (no download).

Layout (`python -m pyratok.training.make_shards --out DIR`)::

    DIR/manifest.json                                 seed, arguments, counts and sha256 of every file
    DIR/{train,val,test}/{split}-{i:05d}.tar          samples <key>.mp4 + <key>.json, keys proc-000123 / pan-000007
    DIR/{val,test}/annotations_vis.json               YouTube-VIS style masks (uncompressed column-major RLE);
                                                      `videos[].name` is the sample key, frames live in its mp4
                                                      (`file_names` are virtual `<key>/<t:05d>.png` names)
    DIR/{val,test}/annotations_localization.json      ActivityNet style event segments (seconds)

Frame conventions: pixel (row i, col j) covers [j, j+1) x [i, i+1); boxes are `[x0, y0, x1, y1]` with x1, y1
exclusive; an event's `start_frame`/`end_frame` are the frames where the motion starts and ends (the object is at rest
on both), its segment in seconds is `[start_frame / fps, end_frame / fps]`.
"""

import argparse
import hashlib
import io
import json
import math
import os
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pyratok.rle import rle_encode
from pyratok.video_io import encode_video

VERSION = "pyratok-synthetic-1"
SPLITS = ("train", "val", "test")
EVAL_SPLITS = ("val", "test")
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
KIND_IDS = {"procedural": 0, "pan": 1}
KEY_PREFIX = {"procedural": "proc", "pan": "pan"}
# Anti-aliasing: procedural objects are rendered at SUPERSAMPLE^2 points per pixel and averaged.
SUPERSAMPLE = 4
MIN_FRAMES = 3
# An object must keep at least this fraction of its own area visible in every frame (else the layout is redrawn),
# so every named object is really there for the text-query ground truth.
MIN_VISIBLE_FRACTION = 0.4
MAX_LAYOUT_TRIES = 30
CRF = 12

OBJECT_COLORS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 215, 30),
    "orange": (245, 130, 20),
    "purple": (130, 40, 170),
    "cyan": (30, 210, 220),
    "magenta": (220, 40, 200),
    "pink": (250, 160, 190),
    "brown": (130, 80, 35),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
BACKGROUND_COLORS = {
    "gray": (128, 128, 128),
    "white": (235, 235, 235),
    "black": (25, 25, 25),
    "beige": (225, 210, 170),
    "navy": (20, 30, 90),
    "olive": (110, 120, 40),
    "teal": (20, 120, 120),
    "maroon": (110, 20, 35),
    "lavender": (190, 170, 230),
    "sky blue": (130, 190, 235),
}
SHAPES = ("square", "circle", "triangle", "diamond", "star", "cross", "hexagon")
TEXTURES = {"solid": "", "stripes": "striped", "checker": "checkered", "dots": "dotted"}
BACKGROUNDS = ("solid", "gradient", "noise", "stripes")
MOTIONS = ("moves left", "moves right", "moves up", "moves down", "jumps", "bounces", "rotates", "grows", "shrinks",
           "stays still")
CAMERA_MOTIONS = ("pans left", "pans right", "pans up", "pans down", "zooms in", "zooms out")
# (skimage.data function, class name, caption phrase); all ship inside the scikit-image wheel.
PHOTOS = (
    ("astronaut", "astronaut", "an astronaut"),
    ("camera", "cameraman", "a cameraman"),
    ("coffee", "coffee", "a cup of coffee"),
    ("chelsea", "cat", "a cat"),
    ("rocket", "rocket", "a rocket"),
    ("coins", "coins", "coins"),
    ("moon", "moon", "the surface of the moon"),
    ("page", "page", "a printed page"),
    ("text", "text", "text"),
    ("clock", "clock", "a clock"),
    ("horse", "horse", "a horse silhouette"),
    ("brick", "brick", "a brick wall"),
    ("grass", "grass", "grass"),
    ("gravel", "gravel", "gravel"),
    ("colorwheel", "color wheel", "a color wheel"),
    ("immunohistochemistry", "tissue", "stained tissue"),
    ("hubble_deep_field", "galaxies", "distant galaxies"),
    ("retina", "retina", "a retina"),
    ("logo", "logo", "a logo"),
    ("stereo_motorcycle", "motorcycle", "a motorcycle"),
)


# ------------------------------------------------------------------------------------------------------- helpers


def _rng(seed: int, split: str, kind: str, index: int) -> np.random.Generator:
    # One independent stream per clip: a clip never depends on how many clips come before it.
    return np.random.default_rng(np.random.SeedSequence([seed, SPLIT_IDS[split], KIND_IDS[kind], index]))


def _block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    """Average `factor x factor` blocks over the two leading axes of `(H*f, W*f, ...)`."""
    h, w = x.shape[0] // factor, x.shape[1] // factor
    return x.reshape(h, factor, w, factor, *x.shape[2:]).mean(axis=(1, 3))


def _phase(num_frames: int, start: int, end: int) -> np.ndarray:
    """Per-frame progress of an event: 0 up to `start`, linear to 1 at `end`, then 1."""
    t = np.arange(num_frames, dtype=np.float64)
    return np.clip((t - start) / max(end - start, 1), 0.0, 1.0)


def _event_span(rng: np.random.Generator, num_frames: int) -> tuple[int, int]:
    """The whole clip half of the time; otherwise a sub-span, so temporal localization is not trivial."""
    if num_frames < 6 or rng.random() < 0.5:
        return 0, num_frames - 1
    length = int(rng.integers(max(3, num_frames // 3), num_frames - 1))  # frames from start to end, < T - 1
    start = int(rng.integers(0, num_frames - length))
    return start, start + length


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _box_from_mask(mask: np.ndarray) -> list[int] | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


# -------------------------------------------------------------------------------------------- procedural clips


def _shape_inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in object coordinates (unit circumradius, v points down)."""
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.72
    if shape == "circle":
        return u * u + v * v <= 0.85**2
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.9)) | ((av <= 0.3) & (au <= 0.9))
    if shape in ("triangle", "hexagon"):
        n = 3 if shape == "triangle" else 6
        apothem = math.cos(math.pi / n)
        normals = np.pi / 2 + 2 * np.pi * np.arange(n) / n  # one edge normal points down: the triangle points up
        inside = np.ones(u.shape, dtype=bool)
        for a in normals:
            inside &= u * math.cos(a) + v * math.sin(a) <= apothem
        return inside
    if shape == "star":
        # Fold the angle into one half-point sector and compare with the straight edge tip -> inner vertex.
        phi = np.mod(np.arctan2(v, u) + np.pi / 2, 2 * np.pi / 5)
        phi = np.minimum(phi, 2 * np.pi / 5 - phi)
        inner = 0.42
        p1 = np.array([1.0, 0.0])
        p2 = inner * np.array([math.cos(math.pi / 5), math.sin(math.pi / 5)])
        n = np.array([p2[1] - p1[1], p1[0] - p2[0]])
        c = n @ p1
        radius = c / (n[0] * np.cos(phi) + n[1] * np.sin(phi))
        return np.sqrt(u * u + v * v) <= radius
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _texture_mask(texture: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where the secondary colour shows, in object coordinates (so textures move and rotate with the object)."""
    if texture == "solid":
        return np.zeros(u.shape, dtype=bool)
    if texture == "stripes":
        return np.floor(u * 2.5 + 8).astype(np.int64) % 2 == 1
    if texture == "checker":
        return (np.floor(u * 2 + 8).astype(np.int64) + np.floor(v * 2 + 8).astype(np.int64)) % 2 == 1
    if texture == "dots":
        fu, fv = np.mod(u * 2.5, 1.0) - 0.5, np.mod(v * 2.5, 1.0) - 0.5
        return fu * fu + fv * fv <= 0.28**2
    raise ValueError(f"unknown texture {texture!r}; expected one of {tuple(TEXTURES)}")


def _secondary_color(rgb: tuple[int, int, int]) -> np.ndarray:
    c = np.asarray(rgb, dtype=np.float32) / 255
    # Dark colours get a lighter pattern, the others a darker one: the texture stays visible either way.
    return c * 0.45 if c.mean() > 0.3 else c + (1 - c) * 0.5


def _render_background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str, str]:
    """Returns `(image (size, size, 3) float in [0, 1], colour name, caption phrase)`."""
    name = str(rng.choice(list(BACKGROUND_COLORS)))
    base = np.asarray(BACKGROUND_COLORS[name], dtype=np.float32) / 255
    other = base * 0.5 if base.mean() > 0.5 else base + (1 - base) * 0.45
    kind = str(rng.choice(BACKGROUNDS))
    ss = SUPERSAMPLE
    coords = (np.arange(size * ss, dtype=np.float32) + 0.5) / (size * ss)
    y, x = np.meshgrid(coords, coords, indexing="ij")
    if kind == "solid":
        return np.broadcast_to(base, (size, size, 3)).copy(), name, f"{_article(name)} {name} background"
    angle = rng.uniform(0, 2 * np.pi)
    along = (x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle)
    if kind == "gradient":
        w = np.clip(along / 1.42 + 0.5, 0, 1)[..., None]
        img, phrase = base * (1 - w) + other * w, f"{_article(name)} {name} gradient background"
    elif kind == "stripes":
        period = rng.uniform(0.12, 0.3)
        w = (np.floor(along / period).astype(np.int64) % 2 == 1)[..., None]
        img, phrase = np.where(w, other, base), f"{_article(name)} {name} striped background"
    else:  # smooth noise: low-resolution Gaussian noise, upsampled
        cells = int(rng.integers(3, 7))
        noise = torch.from_numpy(rng.standard_normal((1, 1, cells, cells)).astype(np.float32))
        noise = F.interpolate(noise, size=(size * ss, size * ss), mode="bicubic", align_corners=True)[0, 0].numpy()
        w = np.clip(0.5 + 0.22 * noise, 0, 1)[..., None]
        img, phrase = base * (1 - w) + other * w, f"a noisy {name} background"
    return _block_mean(img.astype(np.float32), ss), name, phrase


def _object_paths(motion: str, span: tuple[int, int], num_frames: int, size: int, rng: np.random.Generator):
    """Offsets `(dx, dy)` in pixels from the start position, angle (radians) and scale per frame."""
    p = _phase(num_frames, *span)
    dx, dy = np.zeros(num_frames), np.zeros(num_frames)
    angle = np.full(num_frames, rng.uniform(-0.3, 0.3))
    scale = np.ones(num_frames)
    distance = rng.uniform(0.25, 0.42) * size
    if motion == "moves left":
        dx = -distance * p
    elif motion == "moves right":
        dx = distance * p
    elif motion == "moves up":
        dy = -distance * p
    elif motion == "moves down":
        dy = distance * p
    elif motion == "jumps":
        dy = -rng.uniform(0.22, 0.35) * size * np.sin(np.pi * p)
    elif motion == "bounces":
        hops = int(rng.integers(2, 4))
        dy = -rng.uniform(0.15, 0.25) * size * np.abs(np.sin(hops * np.pi * p))
    elif motion == "rotates":
        angle = angle + rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.0) * np.pi * p
    elif motion == "grows":
        scale = 0.6 + 0.65 * p
    elif motion == "shrinks":
        scale = 1.25 - 0.65 * p
    elif motion != "stays still":
        raise ValueError(f"unknown motion {motion!r}; expected one of {MOTIONS}")
    return dx, dy, angle, scale


def _coverage(obj: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame coverage `(T, size, size)` of the object and of its texture's secondary colour, both in [0, 1]."""
    ss = SUPERSAMPLE
    num_frames = len(obj["cx"])
    alpha = np.zeros((num_frames, size, size), dtype=np.float32)
    beta = np.zeros_like(alpha)
    sub = (np.arange(ss, dtype=np.float64) + 0.5) / ss
    for t in range(num_frames):
        cx, cy, radius = obj["cx"][t], obj["cy"][t], obj["radius"] * obj["scale"][t]
        x0, x1 = max(0, math.floor(cx - 1.05 * radius)), min(size, math.ceil(cx + 1.05 * radius))
        y0, y1 = max(0, math.floor(cy - 1.05 * radius)), min(size, math.ceil(cy + 1.05 * radius))
        if x1 <= x0 or y1 <= y0:
            continue
        xs = (np.arange(x0, x1)[:, None] + sub[None, :]).ravel()
        ys = (np.arange(y0, y1)[:, None] + sub[None, :]).ravel()
        y, x = np.meshgrid(ys, xs, indexing="ij")
        cos, sin = math.cos(obj["angle"][t]), math.sin(obj["angle"][t])
        u = ((x - cx) * cos + (y - cy) * sin) / radius
        v = (-(x - cx) * sin + (y - cy) * cos) / radius
        inside = _shape_inside(obj["category"], u, v)
        textured = inside & _texture_mask(obj["texture"], u, v)
        alpha[t, y0:y1, x0:x1] = _block_mean(inside.astype(np.float32), ss)
        beta[t, y0:y1, x0:x1] = _block_mean(textured.astype(np.float32), ss)
    return alpha, beta


def _layout_object(rng, idx, color, size, num_frames) -> dict:
    category = str(rng.choice(SHAPES))
    motion = str(rng.choice(MOTIONS))
    texture = str(rng.choice(list(TEXTURES)))
    if motion == "rotates" and category == "circle" and texture in ("solid", "dots"):
        texture = "stripes"  # a plain circle's rotation is invisible
    span = _event_span(rng, num_frames) if motion != "stays still" else (0, num_frames - 1)
    dx, dy, angle, scale = _object_paths(motion, span, num_frames, size, rng)
    radius = rng.uniform(0.11, 0.19) * size
    extent = 1.05 * radius * scale.max()
    # Start position such that the whole path stays inside the frame.
    lo_x, hi_x = extent - dx.min(), size - extent - dx.max()
    lo_y, hi_y = extent - dy.min(), size - extent - dy.max()
    cx0 = rng.uniform(lo_x, hi_x) if hi_x > lo_x else (lo_x + hi_x) / 2
    cy0 = rng.uniform(lo_y, hi_y) if hi_y > lo_y else (lo_y + hi_y) / 2
    return {
        "id": idx,
        "name": f"{color} {category}",
        "category": category,
        "color": color,
        "texture": texture,
        "motion": motion,
        "span": span,
        "radius": radius,
        "cx": cx0 + dx,
        "cy": cy0 + dy,
        "angle": angle,
        "scale": scale,
    }


def render_procedural(rng: np.random.Generator, size: int, num_frames: int) -> tuple[np.ndarray, dict, np.ndarray]:
    """One procedural clip.

    Returns:
        `(frames, meta, masks)`: uint8 `(T, size, size, 3)`; the sample json (caption, kind, class, objects, events,
        ...); visible masks bool `(num_objects, T, size, size)` (later objects are drawn on top).
    """
    background, bg_name, bg_phrase = _render_background(rng, size)
    num_objects = int(rng.integers(1, 4))
    colors = [c for c in OBJECT_COLORS if c != bg_name]
    for _ in range(MAX_LAYOUT_TRIES):
        chosen = rng.choice(len(colors), size=num_objects, replace=False)  # distinct colours: unambiguous names
        objects = [_layout_object(rng, i + 1, colors[c], size, num_frames) for i, c in enumerate(chosen)]
        coverages = [_coverage(o, size) for o in objects]
        visible = []
        for i, (alpha, _) in enumerate(coverages):
            vis = alpha.copy()
            for above, _ in coverages[i + 1 :]:
                vis *= 1 - above
            visible.append(vis)
        own = np.stack([a.sum(axis=(1, 2)) for a, _ in coverages])
        seen = np.stack([v.sum(axis=(1, 2)) for v in visible])
        if (seen >= MIN_VISIBLE_FRACTION * own).all() and all((v >= 0.5).any(axis=(1, 2)).all() for v in visible):
            break
    else:  # pragma: no cover - a single object always passes; several almost always do within the tries
        objects, coverages, visible = objects[:1], coverages[:1], [coverages[0][0]]

    frames = np.broadcast_to(background, (num_frames, size, size, 3)).astype(np.float32)
    for obj, (alpha, beta) in zip(objects, coverages):
        c1 = np.asarray(OBJECT_COLORS[obj["color"]], dtype=np.float32) / 255
        c2 = _secondary_color(OBJECT_COLORS[obj["color"]])
        frames = frames * (1 - alpha[..., None]) + alpha[..., None] * c1 + beta[..., None] * (c2 - c1)
    frames_u8 = np.clip(np.round(frames * 255), 0, 255).astype(np.uint8)
    masks = np.stack(visible) >= 0.5

    phrases, events, objects_json = [], [], []
    for obj, mask in zip(objects, masks):
        adjective = TEXTURES[obj["texture"]]
        described = f"{obj['color']} {adjective + ' ' if adjective else ''}{obj['category']}"
        phrases.append(f"{_article(described)} {described} {obj['motion']}")
        if obj["motion"] != "stays still":
            events.append(
                {"label": f"{obj['name']} {obj['motion']}", "start_frame": obj["span"][0], "end_frame": obj["span"][1]}
            )
        objects_json.append(
            {
                "id": obj["id"],
                "name": obj["name"],
                "category": obj["category"],
                "color": obj["color"],
                "texture": obj["texture"],
                "motion": obj["motion"],
                "boxes": [_box_from_mask(m) for m in mask],
            }
        )
    meta = {
        "caption": f"{_join(phrases)} on {bg_phrase}",
        "kind": "procedural",
        "class": objects[0]["name"],
        "background": bg_phrase,
        "objects": objects_json,
        "events": events,
    }
    return frames_u8, meta, masks


# --------------------------------------------------------------------------------------------------- pan clips


def load_photos() -> list[tuple[str, str, torch.Tensor]]:
    """The bundled scikit-image photographs as `(class, phrase, float (3, H, W) in [0, 1])`; grayscale → RGB."""
    import skimage.data

    photos = []
    for func, cls, phrase in PHOTOS:
        image = getattr(skimage.data, func)()
        if isinstance(image, tuple):  # stereo pairs: keep the left view
            image = image[0]
        image = np.asarray(image)
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        if image.shape[-1] == 4:  # RGBA logo over white
            a = image[..., 3:].astype(np.float32) / 255
            image = (image[..., :3] * a + 255 * (1 - a)).round().astype(np.uint8)
        photos.append((cls, phrase, torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255))
    return photos


def render_pan(
    rng: np.random.Generator, size: int, num_frames: int, photos: list[tuple[str, str, torch.Tensor]]
) -> tuple[np.ndarray, dict]:
    """A camera pan or zoom over one photograph. Returns uint8 `(T, size, size, 3)` and the sample json."""
    cls, phrase, image = photos[int(rng.integers(len(photos)))]
    _, height, width = image.shape
    motion = str(rng.choice(CAMERA_MOTIONS))
    start, end = _event_span(rng, num_frames)
    p = _phase(num_frames, start, end)
    p = p * p * (3 - 2 * p)  # smoothstep: the camera eases in and out
    short = min(height, width)
    if motion.startswith("pans"):
        crop = np.full(num_frames, rng.uniform(0.45, 0.75) * short)
        horizontal = motion in ("pans left", "pans right")
        room = (width if horizontal else height) - crop[0]
        travel = rng.uniform(0.5, 1.0) * room
        first = rng.uniform(0, room - travel)
        # "pans left": the view moves towards smaller x, so the content slides right.
        along = first + travel * p if motion in ("pans right", "pans down") else first + travel * (1 - p)
        across = rng.uniform(0, (height if horizontal else width) - crop[0])
        left, top = (along, np.full(num_frames, across)) if horizontal else (np.full(num_frames, across), along)
    else:
        wide = rng.uniform(0.7, 0.95) * short
        narrow = wide * rng.uniform(0.45, 0.65)
        crop = wide + (narrow - wide) * p if motion == "zooms in" else narrow + (wide - narrow) * p
        cx = rng.uniform(wide / 2, width - wide / 2)
        cy = rng.uniform(wide / 2, height - wide / 2)
        left, top = cx - crop / 2, cy - crop / 2

    # Pre-shrink (antialiased) so the widest view is ~SUPERSAMPLE samples per output pixel, then sample bilinearly
    # and average the supersamples: no aliasing for any zoom level.
    ss = SUPERSAMPLE
    k = min(1.0, size * ss / crop.max())
    if k < 1.0:
        image = F.interpolate(image[None], scale_factor=k, mode="bilinear", antialias=True)[0]
    _, h_s, w_s = image.shape
    sub = (torch.arange(size * ss, dtype=torch.float64) + 0.5) / (size * ss)  # in units of the view
    crop_t, left_t, top_t = (torch.from_numpy(np.asarray(a, dtype=np.float64)) * k for a in (crop, left, top))
    xs = left_t[:, None] + crop_t[:, None] * sub[None, :]  # (T, S) in scaled-image pixels
    ys = top_t[:, None] + crop_t[:, None] * sub[None, :]
    gx = (xs / w_s * 2 - 1)[:, None, :].expand(-1, size * ss, -1)
    gy = (ys / h_s * 2 - 1)[:, :, None].expand(-1, -1, size * ss)
    grid = torch.stack([gx, gy], dim=-1).float()  # (T, S, S, 2)
    frames = F.grid_sample(
        image[None].expand(num_frames, -1, -1, -1), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    frames = F.avg_pool2d(frames, ss)  # (T, 3, size, size)
    frames_u8 = (frames * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    label = f"the camera {motion}"
    preposition = "across" if motion.startswith("pans") else ("on" if motion == "zooms in" else "from")
    meta = {
        "caption": f"{label} {preposition} a photograph of {phrase}",
        "kind": "pan",
        "class": cls,
        "photo": cls,
        "camera": motion,
        "objects": [],
        "events": [{"label": label, "start_frame": start, "end_frame": end}],
    }
    return frames_u8, meta


# ------------------------------------------------------------------------------------------------------ writing


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _vis_annotations(split: str, records: list[dict], size: int, num_frames: int) -> dict:
    videos, annotations = [], []
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(SHAPES)]
    category_ids = {name: i + 1 for i, name in enumerate(SHAPES)}
    for rec in records:
        if rec["meta"]["kind"] != "procedural":
            continue
        video_id = len(videos) + 1
        key = rec["key"]
        videos.append(
            {
                "id": video_id,
                "name": key,
                "file_names": [f"{key}/{t:05d}.png" for t in range(num_frames)],
                "shard": rec["shard"],
                "caption": rec["meta"]["caption"],
                "length": num_frames,
                "height": size,
                "width": size,
            }
        )
        for obj, masks in zip(rec["meta"]["objects"], rec["masks"]):
            segmentations, areas, bboxes = [], [], []
            for mask in masks:
                if mask.any():
                    segmentations.append(rle_encode(mask))
                    areas.append(int(mask.sum()))
                    x0, y0, x1, y1 = _box_from_mask(mask)
                    bboxes.append([x0, y0, x1 - x0, y1 - y0])
                else:
                    segmentations.append(None)
                    areas.append(None)
                    bboxes.append(None)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": video_id,
                    "category_id": category_ids[obj["category"]],
                    "object_id": obj["id"],
                    "name": obj["name"],
                    "segmentations": segmentations,
                    "areas": areas,
                    "bboxes": bboxes,
                    "iscrowd": 0,
                    "height": size,
                    "width": size,
                    "length": num_frames,
                }
            )
    return {
        "info": {"description": f"PyraTok synthetic clips, {split} split", "version": VERSION},
        "videos": videos,
        "categories": categories,
        "annotations": annotations,
    }


def _localization_annotations(split: str, records: list[dict], fps: float, num_frames: int) -> dict:
    database = {}
    for rec in records:
        database[rec["key"]] = {
            "subset": split,
            "duration": num_frames / fps,
            "fps": fps,
            "num_frames": num_frames,
            "shard": rec["shard"],
            "caption": rec["meta"]["caption"],
            "annotations": [
                {
                    "segment": [e["start_frame"] / fps, e["end_frame"] / fps],
                    "label": e["label"],
                    "start_frame": e["start_frame"],
                    "end_frame": e["end_frame"],
                }
                for e in rec["meta"]["events"]
            ],
        }
    return {"version": VERSION, "database": database}


def _dump_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":")) + "\n")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_shards(
    out_dir: str | os.PathLike,
    seed: int = 0,
    size: int = 64,
    frames: int = 17,
    fps: float = 8.0,
    num_train: int = 2048,
    num_val: int = 64,
    num_test: int = 64,
    pan_fraction: float = 0.25,
    shard_size: int = 256,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Render all splits into `out_dir` (layout in the module docstring); same arguments → byte-identical files.

    Args:
        out_dir: output folder (created; existing shard files of the same names are overwritten).
        seed: base seed; each clip draws from its own stream seeded by `(seed, split, kind, index)`.
        size: frame height and width in pixels (>= 16).
        frames: frames per clip (>= 3; use 4k+1 for PyraTok).
        fps: frame rate written into the mp4 and the annotations.
        num_train, num_val, num_test: clips per split (>= 0).
        pan_fraction: share of camera pan/zoom clips in each split, in [0, 1].
        shard_size: samples per tar shard (>= 1).
        progress: optional callback receiving one line per finished shard.

    Returns:
        The manifest (also written to `out_dir/manifest.json`).
    """
    counts = {"train": num_train, "val": num_val, "test": num_test}
    bad = {k: v for k, v in counts.items() if not (isinstance(v, int) and v >= 0)}
    if bad:
        raise ValueError(f"clip counts must be non-negative integers, got {bad}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    if frames < MIN_FRAMES:
        raise ValueError(f"frames must be >= {MIN_FRAMES}, got {frames}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if not 0.0 <= pan_fraction <= 1.0:
        raise ValueError(f"pan_fraction must be in [0, 1], got {pan_fraction}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    photos = load_photos() if pan_fraction > 0 else []
    files, split_counts = [], {}
    for split in SPLITS:
        n = counts[split]
        num_pan = int(round(pan_fraction * n))
        # Which positions hold pan clips: a fixed shuffle per split, so kinds interleave within every shard.
        order = np.random.default_rng(np.random.SeedSequence([seed, SPLIT_IDS[split], 99])).permutation(n)
        is_pan = np.zeros(n, dtype=bool)
        is_pan[order[:num_pan]] = True
        split_dir = out / split
        split_dir.mkdir(parents=True, exist_ok=True)
        records, kind_index = [], {"procedural": 0, "pan": 0}
        for shard_idx, first in enumerate(range(0, n, shard_size)):
            shard_name = f"{split}-{shard_idx:05d}.tar"
            shard_path = split_dir / shard_name
            with tarfile.open(shard_path, "w", format=tarfile.GNU_FORMAT) as tar:
                for pos in range(first, min(n, first + shard_size)):
                    kind = "pan" if is_pan[pos] else "procedural"
                    index = kind_index[kind]
                    kind_index[kind] += 1
                    key = f"{KEY_PREFIX[kind]}-{index:06d}"
                    rng = _rng(seed, split, kind, index)
                    if kind == "pan":
                        clip, meta = render_pan(rng, size, frames, photos)
                        masks = None
                    else:
                        clip, meta, masks = render_procedural(rng, size, frames)
                    meta = {"key": key, **meta, "split": split, "num_frames": frames, "fps": fps,
                            "height": size, "width": size}
                    _tar_add(tar, f"{key}.mp4", encode_video(clip, fps=fps, crf=CRF))
                    _tar_add(tar, f"{key}.json", json.dumps(meta, separators=(",", ":")).encode())
                    if split in EVAL_SPLITS:
                        records.append({"key": key, "shard": shard_name, "meta": meta, "masks": masks})
            files.append(shard_path)
            if progress is not None:
                progress(f"{shard_path}: {min(n, first + shard_size) - first} clips")
        if split in EVAL_SPLITS:
            vis_path, loc_path = split_dir / "annotations_vis.json", split_dir / "annotations_localization.json"
            _dump_json(vis_path, _vis_annotations(split, records, size, frames))
            _dump_json(loc_path, _localization_annotations(split, records, fps, frames))
            files += [vis_path, loc_path]
        split_counts[split] = {"total": n, "procedural": kind_index["procedural"], "pan": kind_index["pan"]}

    manifest = {
        "version": VERSION,
        "seed": seed,
        "args": {
            "seed": seed, "size": size, "frames": frames, "fps": fps, "train": num_train, "val": num_val,
            "test": num_test, "pan_fraction": pan_fraction, "shard_size": shard_size,
        },
        "command": (
            f"python -m pyratok.training.make_shards --out DIR --seed {seed} --size {size} --frames {frames} "
            f"--fps {fps} --train {num_train} --val {num_val} --test {num_test} --pan-fraction {pan_fraction} "
            f"--shard-size {shard_size}"
        ),
        "counts": split_counts,
        "photos": [cls for cls, _, _ in photos],
        "files": [{"path": f.relative_to(out).as_posix(), "sha256": _sha256(f)} for f in files],
    }
    _dump_json(out / "manifest.json", manifest)
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64, help="frame height and width")
    parser.add_argument("--frames", type=int, default=17, help="frames per clip (4k+1 for PyraTok)")
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--train", type=int, default=2048, help="clips in the train split")
    parser.add_argument("--val", type=int, default=64, help="clips in the val split")
    parser.add_argument("--test", type=int, default=64, help="clips in the test split")
    parser.add_argument("--pan-fraction", type=float, default=0.25, help="share of camera pan/zoom clips")
    parser.add_argument("--shard-size", type=int, default=256, help="clips per tar shard")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: threads cost more than they give, and the machine is shared
    start = time.perf_counter()
    try:
        manifest = make_shards(
            args.out, seed=args.seed, size=args.size, frames=args.frames, fps=args.fps, num_train=args.train,
            num_val=args.val, num_test=args.test, pan_fraction=args.pan_fraction, shard_size=args.shard_size,
            progress=lambda line: print(line, file=sys.stderr),
        )
    finally:
        torch.set_num_threads(threads)  # main() also runs in-process (tests): leave the caller's setting alone
    print(json.dumps({"out": str(args.out), "counts": manifest["counts"],
                      "seconds": round(time.perf_counter() - start, 1)}))


__all__ = ["load_photos", "make_shards", "render_pan", "render_procedural"]


if __name__ == "__main__":
    main()


"""Deterministic clip reading for evaluation, and loaders for the eval splits' annotation files.

An eval split is what training reads (`training.data_sources.resolve_data_files`): a folder of WebDataset tar shards,
one `.tar` shard, or a glob of them; samples are `<key>.mp4` with a `<key>.json` (`{"caption", "fps", ...}`, as
written by `training/make_shards.py`) and/or a `<key>.txt` caption. Beside the shards, optionally,
`annotations_vis.json` (YouTube-VIS style masks) and `annotations_localization.json` (ActivityNet style segments).
Shards are read directly with `tarfile` (no shuffling, no webdataset dependency): samples come out in sorted key
order, whatever the shard layout.

Geometry: a clip keeps its first `F` frames, `F` the largest `4k + 1` that fits (or `num_frames`); with `size` it is
resized so the short side covers the target and centre-cropped (`pyratok.video_io.resize_and_crop`). The transform
is recorded on the clip (`EvalClip.resize`), so ground-truth masks and boxes can be mapped onto the model's frames
(`ResizeInfo.apply_to_masks`, `ResizeInfo.apply_to_box`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pyratok.data_sources import data_folder, resolve_data_files
from pyratok.video_io import VideoDecodeError, read_video, resize_and_crop, valid_frame_count, video_to_tensor

logger = logging.getLogger(__name__)

# The backbone encodes frame 0 alone, then causal chunks of this many frames (T = 4k + 1).
TEMPORAL_CHUNK = 4
VIS_FILE = "annotations_vis.json"
LOCALIZATION_FILE = "annotations_localization.json"


# ---------------------------------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class ResizeInfo:
    """How a clip's frames were resized and centre-cropped (the arithmetic of `resize_and_crop`).

    Args:
        source_size: `(H, W)` of the decoded frames.
        scaled_size: `(H_s, W_s)` after scaling (short side covers the target; equals `source_size` if unscaled).
        offset: `(top, left)` of the crop inside the scaled frame.
        target_size: `(H_t, W_t)` of the frames the model sees.
    """

    source_size: tuple[int, int]
    scaled_size: tuple[int, int]
    offset: tuple[int, int]
    target_size: tuple[int, int]

    @classmethod
    def identity(cls, height: int, width: int) -> ResizeInfo:
        return cls((height, width), (height, width), (0, 0), (height, width))

    @classmethod
    def for_resize_and_crop(cls, height: int, width: int, target_h: int, target_w: int) -> ResizeInfo:
        """The transform `resize_and_crop(frames (3, T, height, width), target_h, target_w)` applies (centre crop)."""
        scale = max(target_h / height, target_w / width)
        new_h = max(target_h, int(np.ceil(height * scale - 1e-6)))
        new_w = max(target_w, int(np.ceil(width * scale - 1e-6)))
        return cls((height, width), (new_h, new_w), ((new_h - target_h) // 2, (new_w - target_w) // 2),
                   (target_h, target_w))

    @property
    def is_identity(self) -> bool:
        return self.source_size == self.target_size and self.scaled_size == self.source_size

    def apply_to_masks(self, masks: np.ndarray | torch.Tensor) -> np.ndarray:
        """Map ground-truth masks onto the model's frames.

        Args:
            masks: bool `(..., H, W)` at `source_size` (e.g. `(T, H, W)`).

        Returns:
            bool `(..., H_t, W_t)`: area-weighted (antialiased bilinear) resampling, then coverage >= 0.5.
        """
        arr = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
        if arr.ndim < 2 or tuple(arr.shape[-2:]) != self.source_size:
            raise ValueError(f"masks must be (..., {self.source_size[0]}, {self.source_size[1]}), got {arr.shape}")
        arr = arr.astype(bool)
        if self.is_identity:
            return arr.copy()
        lead = arr.shape[:-2]
        x = torch.from_numpy(arr.reshape(-1, 1, *self.source_size).astype(np.float32))
        if self.scaled_size != self.source_size:
            x = F.interpolate(x, size=self.scaled_size, mode="bilinear", align_corners=False, antialias=True)
        (top, left), (h, w) = self.offset, self.target_size
        x = x[:, 0, top : top + h, left : left + w]
        return (x >= 0.5).numpy().reshape(*lead, h, w)

    def apply_to_box(self, box: list[float] | None) -> list[float] | None:
        """`[x0, y0, x1, y1]` (x1, y1 exclusive) in source pixels → target pixels, clipped; None stays None."""
        if box is None:
            return None
        if len(box) != 4:
            raise ValueError(f"box must be [x0, y0, x1, y1], got {box}")
        sy = self.scaled_size[0] / self.source_size[0]
        sx = self.scaled_size[1] / self.source_size[1]
        (top, left), (h, w) = self.offset, self.target_size
        x0, y0, x1, y1 = box
        out = [x0 * sx - left, y0 * sy - top, x1 * sx - left, y1 * sy - top]
        return [min(max(v, 0.0), float(w if i % 2 == 0 else h)) for i, v in enumerate(out)]


@dataclass
class EvalClip:
    """One evaluation sample.

    Args:
        key: sample key (`proc-000003`, `pan-000001`, ...).
        video: float `(3, T, H, W)` in [-1, 1], `T = 4k + 1`.
        caption: the sample's caption: the json's `caption`, else the `.txt` member's text (`""` if neither).
        meta: the sample json, unchanged (`{}` for a sample without one).
        fps: frame rate (the json's `fps`, else the container's).
        resize: the spatial transform applied to the decoded frames.
        num_source_frames: frames decoded before truncation to `T`.
    """

    key: str
    video: torch.Tensor
    caption: str
    meta: dict
    fps: float
    resize: ResizeInfo | None = None
    num_source_frames: int = 0

    @property
    def num_frames(self) -> int:
        return int(self.video.shape[1])

    def frame_times(self) -> np.ndarray:
        """Start time in seconds of each of the `T` frames, `(T,)`."""
        return np.arange(self.num_frames, dtype=np.float64) / self.fps


@dataclass
class ReaderStats:
    """Counters of a `ClipReader` pass: clips yielded, samples skipped (and why, per key)."""

    read: int = 0
    skipped: int = 0
    skipped_keys: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"read": self.read, "skipped": self.skipped, "skipped_keys": dict(self.skipped_keys)}


# -------------------------------------------------------------------------------------------------------- helpers


def _target_size(size: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        pair = (size, size)
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, int) for s in size):
        pair = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"size must be an int or a (height, width) pair of ints, got {size!r}")
    if pair[0] < 1 or pair[1] < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return pair


def split_shards(source: str | os.PathLike) -> list[Path]:
    """The shards of an eval split: a folder's sorted `*.tar`, one `.tar` file, or a glob's sorted matches.

    Raises:
        FileNotFoundError: `source` is no existing path and no glob (the message names it).
        ValueError: a folder without `*.tar`, a glob matching nothing, or a URL.
    """
    return [Path(p) for p in resolve_data_files(source, allow_remote=False)]


def split_folder(source: str | os.PathLike) -> Path:
    """The folder holding a split's shards, where its annotation files (`VIS_FILE`, `LOCALIZATION_FILE`) sit."""
    return data_folder(source)


def _sample_key(name: str) -> tuple[str, str]:
    # WebDataset convention: the key is the basename up to its first dot, the rest is the field (mp4, json, ...).
    base = name.rsplit("/", 1)[-1]
    key, _, ext = base.partition(".")
    prefix = name[: len(name) - len(base)]
    return prefix + key, ext


# --------------------------------------------------------------------------------------------------------- reader


class ClipReader:
    """Iterate the clips of an eval split deterministically (sorted keys), counting skipped samples in `stats`.

    Args:
        split_dir: the split: a folder of `*.tar` shards, one `.tar` shard, or a glob of them.
        max_clips: stop after this many yielded clips (None: all).
        num_frames: keep the first `num_frames` frames (must be `4k + 1`; clips with fewer keep the largest `4k + 1`
            they have); None keeps the largest `4k + 1`.
        size: resize + centre-crop every clip to `size` (int: square, or `(H, W)`); None keeps the stored size.
        keys: only these sample keys (in sorted order; unknown keys are an error).

    Raises:
        FileNotFoundError: `split_dir` is no existing path and no glob.
        ValueError: no shards, bad arguments, or `keys` not in the split.
    """

    def __init__(
        self,
        split_dir: str | os.PathLike,
        max_clips: int | None = None,
        num_frames: int | None = None,
        size: int | tuple[int, int] | None = None,
        keys: Iterable[str] | None = None,
    ) -> None:
        if max_clips is not None and (not isinstance(max_clips, int) or max_clips < 1):
            raise ValueError(f"max_clips must be a positive int or None, got {max_clips!r}")
        if num_frames is not None:
            if not isinstance(num_frames, int) or num_frames < 1 or (num_frames - 1) % TEMPORAL_CHUNK:
                raise ValueError(f"num_frames must be 4k + 1 (1, 5, 9, 17, ...), got {num_frames!r}")
        self.split_dir = Path(split_dir)
        self.max_clips = max_clips
        self.num_frames = num_frames
        self.size = _target_size(size)
        self.shards = split_shards(split_dir)
        self.index = self._build_index()
        if keys is not None:
            wanted = sorted(set(keys))
            missing = [k for k in wanted if k not in self.index]
            if missing:
                raise ValueError(f"{len(missing)} requested keys are not in {self.split_dir}: {missing[:5]}")
            self.keys = wanted
        else:
            self.keys = sorted(self.index)
        self.stats = ReaderStats()

    def _build_index(self) -> dict[str, dict[str, tuple[Path, str]]]:
        """key → {field: (shard, member name)}; tar headers only, no payload is read."""
        index: dict[str, dict[str, tuple[Path, str]]] = {}
        for shard in self.shards:
            try:
                with tarfile.open(shard, "r") as tar:
                    names = [m.name for m in tar.getmembers() if m.isfile()]
            except (tarfile.TarError, OSError) as err:
                logger.warning("skipping unreadable shard %s: %s", shard, err)
                continue
            for name in names:
                key, ext = _sample_key(name)
                if ext:
                    index.setdefault(key, {})[ext] = (shard, name)
        if not index:
            raise ValueError(f"no samples found in the shards of {self.split_dir}")
        return index

    def __len__(self) -> int:
        return len(self.keys) if self.max_clips is None else min(self.max_clips, len(self.keys))

    def _skip(self, key: str, reason: str) -> None:
        self.stats.skipped += 1
        self.stats.skipped_keys[key] = reason
        logger.warning("skipping sample %s in %s: %s", key, self.split_dir, reason)

    def _load(self, key: str, tars: dict[Path, tarfile.TarFile]) -> EvalClip | None:
        fields = self.index[key]
        has_caption = bool({"json", "txt"} & set(fields))  # a json (caption, fps) or a plain-text caption
        if "mp4" not in fields or not has_caption:
            missing = ["mp4"] * ("mp4" not in fields) + ["json or txt"] * (not has_caption)
            self._skip(key, f"missing field(s) {missing}")
            return None

        def read(ext: str) -> bytes:
            shard, name = fields[ext]
            if shard not in tars:
                tars[shard] = tarfile.open(shard, "r")
            member = tars[shard].extractfile(name)
            if member is None:
                raise OSError(f"{name} is not a regular file")
            return member.read()

        try:
            meta = json.loads(read("json")) if "json" in fields else {}
            if not isinstance(meta, dict):
                raise ValueError(f"sample json is a {type(meta).__name__}, not an object")
            text = read("txt").decode("utf-8", errors="replace").strip() if "txt" in fields else ""
            frames, container_fps = read_video(read("mp4"))
        except (VideoDecodeError, ValueError, OSError, tarfile.TarError) as err:
            self._skip(key, f"{type(err).__name__}: {err}")
            return None
        available = frames.shape[0]
        wanted = available if self.num_frames is None else min(self.num_frames, available)
        keep = valid_frame_count(wanted, TEMPORAL_CHUNK)
        if self.num_frames is not None and keep < self.num_frames:
            logger.warning("sample %s has %d frames; using %d instead of num_frames=%d", key, available, keep,
                           self.num_frames)
        video = video_to_tensor(frames[:keep])  # (3, T, H, W) in [-1, 1]
        height, width = video.shape[2:]
        resize = ResizeInfo.identity(height, width)
        if self.size is not None and self.size != (height, width):
            resize = ResizeInfo.for_resize_and_crop(height, width, *self.size)
            video = resize_and_crop(video, *self.size)
        fps = meta.get("fps", container_fps)
        fps = float(fps) if isinstance(fps, (int, float)) and fps > 0 else float(container_fps)
        if not fps > 0:
            self._skip(key, "no frame rate in the json or the container")
            return None
        caption = meta["caption"] if isinstance(meta.get("caption"), str) and meta["caption"] else text
        return EvalClip(key=key, video=video, caption=caption, meta=meta, fps=fps, resize=resize,
                        num_source_frames=available)

    def __iter__(self) -> Iterator[EvalClip]:
        self.stats = ReaderStats()
        tars: dict[Path, tarfile.TarFile] = {}
        try:
            for key in self.keys:
                if self.max_clips is not None and self.stats.read >= self.max_clips:
                    break
                clip = self._load(key, tars)
                if clip is not None:
                    self.stats.read += 1
                    yield clip
        finally:
            for tar in tars.values():
                tar.close()


def iter_clips(
    split_dir: str | os.PathLike,
    max_clips: int | None = None,
    num_frames: int | None = None,
    size: int | tuple[int, int] | None = None,
    keys: Iterable[str] | None = None,
) -> Iterator[EvalClip]:
    """Yield the clips of an eval split in sorted key order; see `ClipReader` (use it directly for skip counters)."""
    yield from ClipReader(split_dir, max_clips=max_clips, num_frames=num_frames, size=size, keys=keys)


# ---------------------------------------------------------------------------------------------------- annotations


def _load_json(path: str | os.PathLike, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} file {path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{what} file {path} must hold a JSON object, got {type(data).__name__}")
    return data


def load_vis_annotations(path: str | os.PathLike) -> dict:
    """Load and validate a YouTube-VIS style annotation file.

    Expected: `{"videos": [{"id", "name", "length", "height", "width", ...}], "categories": [{"id", "name"}],
    "annotations": [{"id", "video_id", "category_id", "segmentations": [RLE | None] * length, ...}]}`; RLEs are
    uncompressed (`pyratok.rle.rle_decode`).

    Returns:
        The file's dict, unchanged, plus `"videos_by_name"` (name → video) and `"annotations_by_video"`
        (video id → its annotations).

    Raises:
        FileNotFoundError: no such file.
        ValueError: malformed JSON or structure (the message names the offending entry).
    """
    data = _load_json(path, "YouTube-VIS annotation")
    for section in ("videos", "annotations", "categories"):
        if not isinstance(data.get(section), list):
            raise ValueError(f"{path}: '{section}' must be a list, got {type(data.get(section)).__name__}")
    videos: dict[int, dict] = {}
    for i, video in enumerate(data["videos"]):
        if not isinstance(video, dict) or not {"id", "name", "length"} <= set(video):
            raise ValueError(f"{path}: videos[{i}] must have 'id', 'name' and 'length', got {str(video)[:200]}")
        if video["id"] in videos:
            raise ValueError(f"{path}: duplicate video id {video['id']}")
        videos[video["id"]] = video
    category_ids = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not {"id", "name"} <= set(cat):
            raise ValueError(f"{path}: categories[{i}] must have 'id' and 'name', got {str(cat)[:200]}")
        category_ids.add(cat["id"])
    by_video: dict[int, list[dict]] = {vid: [] for vid in videos}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not {"video_id", "category_id", "segmentations"} <= set(ann):
            raise ValueError(
                f"{path}: annotations[{i}] must have 'video_id', 'category_id' and 'segmentations', got "
                f"{str(ann)[:200]}"
            )
        if ann["video_id"] not in videos:
            raise ValueError(f"{path}: annotations[{i}] refers to unknown video_id {ann['video_id']}")
        if ann["category_id"] not in category_ids:
            raise ValueError(f"{path}: annotations[{i}] refers to unknown category_id {ann['category_id']}")
        length = videos[ann["video_id"]]["length"]
        segs = ann["segmentations"]
        if not isinstance(segs, list) or len(segs) != length:
            raise ValueError(
                f"{path}: annotations[{i}] has {len(segs) if isinstance(segs, list) else segs!r} segmentations; "
                f"its video has length {length}"
            )
        by_video[ann["video_id"]].append(ann)
    data["videos_by_name"] = {v["name"]: v for v in videos.values()}
    data["annotations_by_video"] = by_video
    return data


def vis_instances(annotations: dict, video_name: str) -> list[dict]:
    """Decode the ground-truth instances of one video of `load_vis_annotations` output.

    Returns:
        One dict per instance: `{"id", "object_id", "name", "category_id", "category", "masks": bool (T, H, W)}`
        (frames without the object are all False).
    """
    from pyratok.rle import rle_decode

    video = annotations["videos_by_name"].get(video_name)
    if video is None:
        raise ValueError(f"video {video_name!r} is not in the VIS annotations")
    names = {c["id"]: c["name"] for c in annotations["categories"]}
    height, width = video.get("height"), video.get("width")
    out = []
    for ann in annotations["annotations_by_video"][video["id"]]:
        frames = []
        for seg in ann["segmentations"]:
            if seg is None:
                if height is None or width is None:
                    raise ValueError(f"video {video_name!r} needs 'height'/'width' for frames without a mask")
                frames.append(np.zeros((height, width), dtype=bool))
            else:
                frames.append(rle_decode(seg))
        out.append({
            "id": ann.get("id"),
            "object_id": ann.get("object_id"),
            "name": ann.get("name", names[ann["category_id"]]),
            "category_id": ann["category_id"],
            "category": names[ann["category_id"]],
            "masks": np.stack(frames),
        })
    return out


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _thumos_directory(path: Path) -> dict:
    """THUMOS14 temporal annotations: one `<Class>_<subset>.txt` per class, lines `video start end` in seconds."""
    files = sorted(p for p in path.glob("*.txt") if "_" in p.stem)
    if not files:
        raise ValueError(f"{path}: no THUMOS14 '<Class>_<subset>.txt' annotation files found")
    database: dict[str, dict] = {}
    for file in files:
        label, _, subset = file.stem.rpartition("_")
        if label == "Ambiguous":
            continue  # THUMOS14 marks unclear spans with this pseudo-class; they are neither GT nor negatives
        for lineno, line in enumerate(file.read_text().splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            try:
                video, start, end = parts[0], float(parts[1]), float(parts[2])
            except (IndexError, ValueError) as err:
                raise ValueError(f"{file}:{lineno}: expected 'video start end', got {line!r}") from err
            entry = database.setdefault(video, {"subset": subset, "duration": None, "fps": None,
                                                "num_frames": None, "annotations": []})
            entry["annotations"].append({"segment": [start, end], "label": label})
    return {"version": "thumos14", "database": database}


def load_localization_annotations(path: str | os.PathLike) -> dict:
    """Load and validate temporal action annotations.

    Accepted formats:

    - ActivityNet style JSON: `{"database": {video: {"subset", "duration", "fps", "num_frames",
      "annotations": [{"segment": [start_s, end_s], "label"}]}}}` (`fps`, `num_frames`, `duration` and `subset`
      optional; extra fields such as `start_frame` are kept).
    - THUMOS14 style: a folder of per-class files `<Class>_<subset>.txt` (e.g. `BaseballPitch_test.txt`), one
      `video start end` line (seconds) per instance; `Ambiguous_*.txt` is ignored.

    Returns:
        `{"version", "database"}` with every entry holding `subset`, `duration`, `fps`, `num_frames` (None where
        unknown) and `annotations` with float `[start, end]` segments, `start <= end`.

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: malformed content (the message names the offending video and entry).
    """
    p = Path(path)
    if p.is_dir():
        data = _thumos_directory(p)
    else:
        data = _load_json(p, "localization annotation")
    database = data.get("database")
    if not isinstance(database, dict):
        raise ValueError(f"{path}: expected an ActivityNet style object with a 'database' mapping of videos")
    out: dict[str, dict] = {}
    for video, entry in database.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("annotations"), list):
            raise ValueError(f"{path}: database[{video!r}] must be an object with an 'annotations' list")
        anns = []
        for i, ann in enumerate(entry["annotations"]):
            seg = ann.get("segment") if isinstance(ann, dict) else None
            if not (isinstance(seg, (list, tuple)) and len(seg) == 2 and all(_finite_number(v) for v in seg)):
                raise ValueError(f"{path}: database[{video!r}].annotations[{i}] needs a numeric 'segment' [s, e]")
            if seg[0] > seg[1]:
                raise ValueError(f"{path}: database[{video!r}].annotations[{i}] has start {seg[0]} > end {seg[1]}")
            if not isinstance(ann.get("label"), str) or not ann["label"]:
                raise ValueError(f"{path}: database[{video!r}].annotations[{i}] needs a non-empty string 'label'")
            anns.append({**ann, "segment": [float(seg[0]), float(seg[1])]})
        for name in ("duration", "fps", "num_frames"):
            value = entry.get(name)
            if value is not None and (not _finite_number(value) or value <= 0):
                raise ValueError(f"{path}: database[{video!r}].{name} must be a positive number, got {value!r}")
        out[video] = {**entry, "subset": entry.get("subset"), "duration": entry.get("duration"),
                      "fps": entry.get("fps"), "num_frames": entry.get("num_frames"), "annotations": anns}
    return {"version": data.get("version"), "database": out}


__all__ = [
    "LOCALIZATION_FILE",
    "VIS_FILE",
    "ClipReader",
    "EvalClip",
    "ReaderStats",
    "ResizeInfo",
    "iter_clips",
    "load_localization_annotations",
    "load_vis_annotations",
    "split_folder",
    "split_shards",
    "vis_instances",
]

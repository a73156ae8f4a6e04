"""Streaming captioned video clips for training, with aspect buckets and exact resume.

Sources: WebDataset shards (`data_files`, e.g. the output of `make_shards`), read by `pyratok.training.tar_shards`
into a `datasets` streaming dataset, or a Hub dataset (`dataset_name`) read by `datasets` with `streaming=True`.
Shard columns are named after the member extensions (`mp4`, `json`, `txt`, raw bytes) plus `__key__` (the sample key)
and `__url__` (the shard path). A Hub dataset's video column is cast to `datasets.Video(decode=False)`; videos are
decoded with PyAV (`pyratok.video_io.read_video`), so torchcodec is not needed.

Bad data never stops a run: a shard that is not a tar or is cut short, a caption that is missing, not JSON or not a
string, a video that does not decode, changes size or is too short — each is skipped, counted in `stats` and logged
with its shard and key. Only an epoch in which nothing decodes is an error (naming the unreadable shards).

Every example draws its clip (frame count, start frame, crop) from its own generator seeded by
`(seed, epoch, rank, index in the epoch's stream)`, so a sample never depends on what came before it. That makes exact
resume cheap: the state is the epoch, the number of raw examples pulled from the shuffled stream and the indices
waiting in unfinished buckets; a restored stream skips the pulled examples without decoding them, except the pending
ones, which it decodes again into their buckets.
"""

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node

from pyratok.data_sources import resolve_data_files
from pyratok.training.tar_shards import SAMPLE_ERROR_KEY, SHARD_ERROR_KEY, first_columns, load_tar_shards
from pyratok.video_io import VideoDecodeError, read_video, resize_and_crop, video_to_tensor

logger = logging.getLogger(__name__)

STATE_VERSION = 1
# Skipped samples are logged one by one up to this many per reason, then every WARN_EVERY-th.
WARN_FIRST = 10
WARN_EVERY = 1000
STAT_NAMES = (
    "pulled",
    "decoded",
    "skipped_corrupt",
    "skipped_too_short",
    "skipped_no_caption",
    "skipped_bad_shard",
    "dropped_at_epoch_end",
    "batches",
    "epochs_completed",
)
# Config fields that decide which examples land in which batch: a saved state only fits a stream with the same values.
RESUME_FIELDS = (
    "data_files", "dataset_name", "dataset_config_name", "dataset_split", "num_frames", "resolutions", "batch_size",
    "shuffle_buffer", "seed", "temporal_stride", "max_decode_frames",
)


@dataclass
class VideoDataConfig:
    """Where clips come from and how they are cut.

    Args:
        data_files: WebDataset `.tar` paths, folders of them or glob patterns (expanded and sorted here by
            `training.data_sources.resolve_data_files`, as `pyratok-eval --data` is; remote URLs such as `hf://...` are
            passed to `datasets` as they are). Exclusive with `dataset_name`.
        dataset_name: a Hub dataset id (or local dataset folder) for `datasets.load_dataset`.
        dataset_config_name: its configuration name, if any.
        dataset_split: the split to stream (Hub datasets; local shards form one "train" split).
        video_column: column holding the video (bytes, a path, or a `Video(decode=False)` dict).
        caption_column: column holding the caption: a str, or a dict / JSON string whose `caption_key` is the caption.
        caption_key: key of the caption inside a dict / JSON caption column.
        num_frames: candidate clip lengths, each `4k + 1`; every sample draws one, and a batch holds one length.
        resolutions: aspect buckets `[H, W]`; a sample goes to the bucket with the nearest aspect ratio, then is
            resized (short side covers) and randomly cropped to it.
        batch_size: samples per batch (per process).
        shuffle_buffer: `datasets` shuffle buffer (0: no shuffling at all, not even of the shard order).
        seed: base seed of the shuffle and of every sample's clip sampling.
        temporal_stride: take every `temporal_stride`-th frame (a clip spans `(T - 1) * stride + 1` source frames).
        max_decode_frames: decode at most this many frames of a video (None: all); bounds the cost of long videos.
    """

    data_files: list[str] | None = None
    dataset_name: str | None = None
    dataset_config_name: str | None = None
    dataset_split: str = "train"
    video_column: str = "mp4"
    caption_column: str = "json"
    caption_key: str = "caption"
    num_frames: list[int] = field(default_factory=lambda: [17])
    resolutions: list[list[int]] = field(default_factory=lambda: [[64, 64]])
    batch_size: int = 8
    shuffle_buffer: int = 256
    seed: int = 0
    temporal_stride: int = 1
    max_decode_frames: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.data_files, str):
            self.data_files = [self.data_files]
        if (self.data_files is None) == (self.dataset_name is None):
            raise ValueError(
                f"give exactly one of data_files and dataset_name, got data_files={self.data_files!r} "
                f"dataset_name={self.dataset_name!r}"
            )
        if self.data_files is not None and (
            not self.data_files or not all(isinstance(p, str) and p for p in self.data_files)
        ):
            raise ValueError(f"data_files must be a non-empty list of paths or globs, got {self.data_files!r}")
        for name in ("video_column", "caption_column", "caption_key", "dataset_split"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if isinstance(self.num_frames, int):
            self.num_frames = [self.num_frames]
        self.num_frames = list(self.num_frames)
        bad = [n for n in self.num_frames if not isinstance(n, int) or n < 1 or (n - 1) % 4]
        if not self.num_frames or bad:
            raise ValueError(f"num_frames must be a non-empty list of 4k+1 frame counts, got {self.num_frames} "
                             f"(invalid: {bad})")
        self.resolutions = [list(r) if isinstance(r, list | tuple) else r for r in self.resolutions]
        bad = [r for r in self.resolutions if not (isinstance(r, list) and len(r) == 2
                                                   and all(isinstance(v, int) and v > 0 for v in r))]
        if not self.resolutions or bad:
            raise ValueError(f"resolutions must be a non-empty list of [H, W] positive ints, got {self.resolutions} "
                             f"(invalid: {bad})")
        for name, low in (("batch_size", 1), ("shuffle_buffer", 0), ("temporal_stride", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        longest = (max(self.num_frames) - 1) * self.temporal_stride + 1
        if self.max_decode_frames is not None and (
            not isinstance(self.max_decode_frames, int) or self.max_decode_frames < longest
        ):
            raise ValueError(
                f"max_decode_frames={self.max_decode_frames!r} must be None or >= {longest}, the source frames of the "
                f"longest clip (num_frames={max(self.num_frames)}, temporal_stride={self.temporal_stride})"
            )


def load_video_dataset(config: VideoDataConfig) -> datasets.IterableDataset:
    """The raw streaming dataset: shards as `tar_shards` reads them, or a Hub dataset with its video column
    cast to `Video(decode=False)` where it is a Video feature."""
    if config.data_files is not None:
        files = resolve_data_files(config.data_files)
        _check_shard_columns(files, (config.video_column, config.caption_column))
        return load_tar_shards(files)
    ds = datasets.load_dataset(
        config.dataset_name, config.dataset_config_name, split=config.dataset_split, streaming=True
    )
    features = ds.features
    if features is not None:
        missing = [c for c in (config.video_column, config.caption_column) if c not in features]
        if missing:
            raise ValueError(f"columns {missing} not in the dataset; it has {list(features)}")
        if isinstance(features[config.video_column], datasets.Video):
            ds = ds.cast_column(config.video_column, datasets.Video(decode=False))
    return ds


def _check_shard_columns(files: list[str], columns: tuple[str, ...]) -> None:
    """A column that none of the first samples has is a misspelt name, not bad data: say so before training."""
    found = first_columns(files)
    if found is None:
        return  # no shard has a readable sample: the stream's first epoch ends with an error naming the shards
    shard, samples = found
    present = set().union(*samples)
    missing = [c for c in columns if c not in present]
    if missing:
        raise ValueError(
            f"columns {missing} are in none of the first {len(samples)} samples of {shard}; "
            f"they have {sorted(present)}"
        )


def _video_source(value: Any) -> str | bytes | None:
    """bytes or a local path from a `Video(decode=False)` dict, raw bytes, or a path; remote paths are fetched."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, str) and "://" in value:
        from datasets.utils.file_utils import xopen

        with xopen(value, "rb") as f:
            return f.read()
    if isinstance(value, bytes | str) and value:
        return value
    return None


class VideoClipStream(Iterator[dict]):
    """An endless iterator of batches `{"pixel_values", "captions", "keys"}` over a sharded, shuffled stream.

    `pixel_values` is float32 `(B, 3, T, H, W)` in [-1, 1]; every batch has one `(T, H, W)` bucket. Epochs repeat
    forever (`set_epoch` reshuffles); samples left in unfinished buckets at an epoch's end are dropped and counted.
    Bad samples (undecodable, too short, no caption) are skipped, counted in `stats` and logged with their key.

    Args:
        config: the data config.
        rank, world_size: this process's slice (`datasets.distributed.split_dataset_by_node`).
        dataset: an already loaded raw streaming dataset to use instead of `load_video_dataset(config)`.
    """

    def __init__(
        self,
        config: VideoDataConfig,
        rank: int = 0,
        world_size: int = 1,
        dataset: datasets.IterableDataset | None = None,
    ) -> None:
        if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
        self.config, self.rank, self.world_size = config, rank, world_size
        ds = load_video_dataset(config) if dataset is None else dataset
        if config.shuffle_buffer > 0:
            ds = ds.shuffle(seed=config.seed, buffer_size=config.shuffle_buffer)
        self._dataset = split_dataset_by_node(ds, rank=rank, world_size=world_size) if world_size > 1 else ds
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        self.epoch = 0
        self._reset_epoch()

    # ---- iteration ---------------------------------------------------------------------------------------------
    def _reset_epoch(self) -> None:
        self._iterator: Iterator[dict] | None = None
        self._pulled = 0  # raw examples taken from this epoch's stream
        self._epoch_decoded = 0
        self._epoch_batches = 0
        self._bad_shards: dict[str, str] = {}  # shard -> why it (or its rest) could not be read, this epoch
        # bucket (T, H, W) -> [(raw index, key, caption, clip (3, T, H, W))], in pull order
        self._buckets: dict[tuple[int, int, int], list[tuple[int, str, str, torch.Tensor]]] = {}

    def _open_epoch(self) -> None:
        self._dataset.set_epoch(self.epoch)
        self._iterator = iter(self._dataset)

    def _pull(self) -> dict | None:
        """The next raw example, or None at the end of the epoch."""
        if self._iterator is None:
            self._open_epoch()
        try:
            return next(self._iterator)
        except StopIteration:
            return None
        except Exception as err:
            # A Hub dataset's loader decodes some columns itself; an error there ends its iterator, so the sample
            # cannot be skipped: say where it happened. (Shards read by `tar_shards` never raise here.)
            raise RuntimeError(
                f"reading the dataset failed at example {self._pulled} of epoch {self.epoch} (rank {self.rank}): "
                f"{type(err).__name__}: {err}"
            ) from err

    def __iter__(self) -> "VideoClipStream":
        return self

    def __next__(self) -> dict:
        while True:
            raw = self._pull()
            if raw is None:
                self._finish_epoch()
                continue
            index = self._pulled
            self._pulled += 1
            self.stats["pulled"] += 1
            batch = self._add(index, raw)
            if batch is not None:
                return batch

    def _finish_epoch(self) -> None:
        cfg = self.config
        if self._pulled == 0:
            raise RuntimeError(
                f"epoch {self.epoch} of rank {self.rank}/{self.world_size} has no examples: the data is empty or has "
                "fewer shards/examples than processes"
            )
        if self._epoch_decoded == 0:
            unreadable = f"; unreadable shards: {self._bad_shards}" if self._bad_shards else ""
            raise RuntimeError(
                f"all {self._pulled} examples of epoch {self.epoch} (rank {self.rank}) were skipped ({self.stats}); "
                f"check video_column={cfg.video_column!r}, caption_column={cfg.caption_column!r}, "
                f"num_frames={cfg.num_frames}, temporal_stride={cfg.temporal_stride}{unreadable}"
            )
        if self._epoch_batches == 0:
            raise RuntimeError(
                f"epoch {self.epoch} (rank {self.rank}) decoded {self._epoch_decoded} samples but no (frames, H, W) "
                f"bucket reached batch_size={cfg.batch_size}: lower batch_size or use fewer num_frames/resolutions"
            )
        self.stats["dropped_at_epoch_end"] += sum(len(b) for b in self._buckets.values())
        self.stats["epochs_completed"] += 1
        self.epoch += 1
        self._reset_epoch()

    # ---- one example -------------------------------------------------------------------------------------------
    def _key(self, index: int, raw: dict) -> str:
        """WebDataset's `__key__`, else the video's path, else the position in the epoch's stream."""
        video = raw.get(self.config.video_column)
        path = video.get("path") if isinstance(video, dict) else video if isinstance(video, str) else None
        return str(raw.get("__key__") or path or f"#{index}")

    def _generator(self, index: int) -> torch.Generator:
        entropy = [self.config.seed, self.epoch, self.rank, index]
        return torch.Generator().manual_seed(int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]))

    def _skip(self, reason: str, key: str, detail: str, shard: str | None = None) -> None:
        self.stats[reason] += 1
        count = self.stats[reason]
        if count <= WARN_FIRST or count % WARN_EVERY == 0:
            where = f" in {shard}" if shard else ""
            logger.warning(
                f"{reason} #{count}: sample {key!r}{where} (epoch {self.epoch}, rank {self.rank}): {detail}"
            )

    def _caption(self, value: Any) -> str | None:
        """The caption, None if there is none (absent or blank); `ValueError` if it is not JSON or not a string."""
        cfg = self.config
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        # WebDataset members `json` / `meta.json` are raw bytes here; a Hub column may hold a JSON string too.
        if isinstance(value, str) and cfg.caption_column.rsplit(".", 1)[-1].lower() in ("json", "jsn"):
            value = json.loads(value)
            if not isinstance(value, dict):
                raise ValueError(f"the {cfg.caption_column!r} member is a JSON {type(value).__name__}, not an object")
        if isinstance(value, dict):
            value = value.get(cfg.caption_key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError(f"caption {str(value)[:80]!r} is of type {type(value).__name__}, not a string")
        return value.strip() or None

    def _bucket_size(self, height: int, width: int) -> tuple[int, int]:
        aspect = math.log(width / height)
        best = min(self.config.resolutions, key=lambda r: abs(math.log(r[1] / r[0]) - aspect))
        return best[0], best[1]

    def sample_caption(self, raw: dict, key: str) -> str | None:
        """The caption of a raw sample, or None when the sample is skipped (and counted): a bad shard, a corrupt
        sample, an unreadable or missing caption."""
        cfg = self.config
        shard = raw.get("__url__")
        if SHARD_ERROR_KEY in raw:
            self._skip("skipped_bad_shard", key, raw[SHARD_ERROR_KEY], shard)
            return None
        if SAMPLE_ERROR_KEY in raw:
            self._skip("skipped_corrupt", key, raw[SAMPLE_ERROR_KEY], shard)
            return None
        try:
            caption = self._caption(raw.get(cfg.caption_column))
        except (ValueError, UnicodeDecodeError) as err:
            self._skip("skipped_no_caption", key, f"unreadable caption: {type(err).__name__}: {err}", shard)
            return None
        if caption is None:
            self._skip("skipped_no_caption", key, f"no caption in column {cfg.caption_column!r}", shard)
        return caption

    def _load_clip(self, index: int, raw: dict, key: str) -> tuple[str, torch.Tensor] | None:
        """`(caption, clip (3, T, H, W))` or None (skipped and counted)."""
        cfg = self.config
        shard = raw.get("__url__")
        if SHARD_ERROR_KEY in raw:
            self._bad_shards[shard] = raw[SHARD_ERROR_KEY]
        caption = self.sample_caption(raw, key)
        if caption is None:
            return None
        generator = self._generator(index)
        num_frames = cfg.num_frames[int(torch.randint(len(cfg.num_frames), (1,), generator=generator))]
        span = (num_frames - 1) * cfg.temporal_stride + 1
        try:
            source = _video_source(raw.get(cfg.video_column))
            if source is None:
                raise VideoDecodeError(f"no video in column {cfg.video_column!r}")
            frames, _ = read_video(source, max_frames=cfg.max_decode_frames)
        except (VideoDecodeError, OSError) as err:
            self._skip("skipped_corrupt", key, f"{type(err).__name__}: {err}", shard)
            return None
        if frames.shape[0] < span:
            self._skip(
                "skipped_too_short", key, f"{frames.shape[0]} frames < {span} needed for {num_frames} frames", shard
            )
            return None
        start = int(torch.randint(frames.shape[0] - span + 1, (1,), generator=generator))
        clip = video_to_tensor(frames[start : start + span : cfg.temporal_stride])  # (3, T, h, w)
        height, width = self._bucket_size(*frames.shape[1:3])
        return caption, resize_and_crop(clip, height, width, generator)

    def _add(self, index: int, raw: dict) -> dict | None:
        """Decode one raw example into its bucket; return a batch when that bucket is full."""
        key = self._key(index, raw)
        loaded = self._load_clip(index, raw, key)
        if loaded is None:
            return None
        caption, clip = loaded
        self.stats["decoded"] += 1
        self._epoch_decoded += 1
        bucket_key = tuple(clip.shape[1:])
        bucket = self._buckets.setdefault(bucket_key, [])
        bucket.append((index, key, caption, clip))
        if len(bucket) < self.config.batch_size:
            return None
        del self._buckets[bucket_key]
        self.stats["batches"] += 1
        self._epoch_batches += 1
        return {
            "pixel_values": torch.stack([item[3] for item in bucket]),
            "captions": [item[2] for item in bucket],
            "keys": [item[1] for item in bucket],
        }

    # ---- resume ------------------------------------------------------------------------------------------------
    def _fingerprint(self) -> dict:
        cfg = asdict(self.config)
        return {"rank": self.rank, "world_size": self.world_size, **{k: cfg[k] for k in RESUME_FIELDS}}

    def state_dict(self) -> dict:
        """JSON-serialisable position: epoch, raw examples pulled, pending samples, counters and the config."""
        pending = sorted((item[0], item[1]) for bucket in self._buckets.values() for item in bucket)
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "pulled": self._pulled,
            "pending": [[index, key] for index, key in pending],
            "epoch_decoded": self._epoch_decoded,
            "epoch_batches": self._epoch_batches,
            "stats": dict(self.stats),
            "fingerprint": self._fingerprint(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where the stream that produced `state` was (same config, rank and world size)."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a VideoClipStream state (version {STATE_VERSION}): {str(state)[:200]}")
        saved, current = state["fingerprint"], json.loads(json.dumps(self._fingerprint()))
        diff = {k: (saved.get(k), current[k]) for k in current if saved.get(k) != current[k]}
        if diff:
            raise ValueError(f"the saved data state does not fit this stream; (saved, current) differ: {diff}")
        self.epoch = int(state["epoch"])
        self._reset_epoch()
        pending = {int(index): key for index, key in state["pending"]}
        pulled = int(state["pulled"])
        # Skip the examples already consumed without decoding them; re-decode the ones still waiting in buckets.
        for index in range(pulled):
            raw = self._pull()
            if raw is None:
                raise ValueError(f"the saved state pulled {pulled} examples of epoch {self.epoch}, now {index}")
            self._pulled += 1
            if index in pending:
                key = self._key(index, raw)
                if key != pending[index]:
                    raise ValueError(f"example {index} is {key!r}, the saved state expected {pending[index]!r}")
                # Counters are restored below. A skip or a full bucket here would mean the data is not what it was.
                decoded = self._epoch_decoded
                if self._add(index, raw) is not None or self._epoch_decoded == decoded:
                    raise ValueError(f"pending sample {key!r} no longer decodes into its bucket: the data changed")
        self._epoch_decoded = int(state["epoch_decoded"])
        self._epoch_batches = int(state["epoch_batches"])
        self.stats = {name: int(state["stats"].get(name, 0)) for name in STAT_NAMES}


def build_stream(config: VideoDataConfig, rank: int = 0, world_size: int = 1) -> VideoClipStream:
    """The batch stream of process `rank` out of `world_size` (each sees a disjoint part of the data)."""
    return VideoClipStream(config, rank=rank, world_size=world_size)


__all__ = ["VideoClipStream", "VideoDataConfig", "build_stream", "load_video_dataset"]

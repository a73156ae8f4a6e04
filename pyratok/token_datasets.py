"""Pre-tokenised video datasets: a captioned video dataset turned into PyraTok id sequences, stored as Parquet.

    summary = tokenize_dataset("data/procedural/train", "runs/tokens", model, "pyratok-small-procedural")
    ds = load_token_dataset("runs/tokens")          # a `datasets.Dataset`; `ds.push_to_hub(...)` publishes it
    info = token_dataset_info(ds)                   # the layout and tokenizer every row agrees on
    check_tokens_match(info, model)                 # ValueError naming what differs for another tokenizer

Clips are read by the training reader (`pyratok.training.data`: WebDataset shards with `.json` or `.txt` captions,
local folders and globs, Hub dataset ids with column names) with the same skip rules and counters, one pass, no
shuffling. Unlike training, the cut is deterministic so a clip's ids depend only on the clip: the first
`num_frames` frames, resized so the short side covers `height x width` and centre-cropped.

Layout of `out/`:
    data/train-r{rank}-{part:05d}.parquet   rows `key, caption, input_ids (list<int32>), layout (JSON), tokenizer_name,
                                            tokenizer_fingerprint`; each part is written to `*.tmp` and renamed, so a
                                            part on disk is always complete
    pyratok_tokens.json                     summary: rows, tokenizer, layout, counts of skipped clips by reason
    README.md                               dataset card whose `configs` entry points `datasets` at `data/`

Resume: the parts on disk are the record of what is done. A restarted run reads the keys of every part, discards
`*.tmp` leftovers, and skips those keys before decoding them; parts hold whole batches, so the remaining clips are
batched exactly as in an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from modeling_pyratok import AutoencoderPyraTok, PyraTokModel
from modeling_pyratok.tokens_pyratok import ORDERS, PyraTokTokenLayout
from pyratok.cli import model_fingerprint
from pyratok.data_sources import GLOB_CHARS, is_remote, resolve_data_files
from pyratok.training.data import VideoClipStream, VideoDataConfig, _video_source
from pyratok.training.tar_shards import first_columns
from pyratok.video_io import VideoDecodeError, read_video, resize_and_crop, video_to_tensor

logger = logging.getLogger(__name__)

FORMAT = "pyratok-token-dataset"
FORMAT_VERSION = 1
DATA_DIR = "data"
SUMMARY_FILE = "pyratok_tokens.json"
CARD_FILE = "README.md"
PART_RE = re.compile(r"^(?P<split>[a-z]+)-r(?P<rank>\d+)-(?P<part>\d{5})\.parquet$")
SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("caption", pa.string()),
        ("input_ids", pa.list_(pa.int32())),
        ("layout", pa.string()),
        ("tokenizer_name", pa.string()),
        ("tokenizer_fingerprint", pa.string()),
    ]
)
# Why a clip is left out; the first four are the training reader's own counters.
SKIP_REASONS = (
    "skipped_corrupt",  # the video does not decode (or the tar sample is unreadable)
    "skipped_too_short",  # fewer frames than `num_frames`
    "skipped_no_caption",  # caption missing, blank, not JSON or not a string
    "skipped_bad_shard",  # the rest of a shard could not be read
    "skipped_too_small",  # smaller than `height x width` (it would be upscaled; `upscale=True` allows it)
    "skipped_duplicate_key",  # a key already seen in this pass
)
VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "avi", "mov")
CAPTION_COLUMNS = ("json", "txt", "caption", "text", "prompt")
DEFAULT_ROWS_PER_PART = 1024
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


# The tokenizer fingerprint recorded in every row: `pyratok.cli.model_fingerprint`, which takes both classes.
tokenizer_fingerprint = model_fingerprint


# ---------------------------------------------------------------------------------------------------------------------
# Reading clips
# ---------------------------------------------------------------------------------------------------------------------


def data_config(
    data: str | list[str],
    *,
    num_frames: int,
    height: int,
    width: int,
    batch_size: int,
    video_column: str | None = None,
    caption_column: str | None = None,
    caption_key: str = "caption",
    dataset_config_name: str | None = None,
    dataset_split: str = "train",
) -> VideoDataConfig:
    """The training reader's config for one unshuffled pass over `data`.

    `data` is WebDataset shards (a `.tar`, a folder of them, a glob, a URL, or a list of these) or a dataset for
    `datasets.load_dataset` (a Hub id, or a local folder without `.tar` files). Columns left as None are found:
    shards take the first video extension of `VIDEO_EXTENSIONS` and caption member of `json` / `txt` present in their
    first samples; a Hub dataset takes its first `Video` feature and the first of `CAPTION_COLUMNS` it has.
    """
    common = dict(
        num_frames=[num_frames], resolutions=[[height, width]], batch_size=batch_size, shuffle_buffer=0,
        caption_key=caption_key,
    )
    sources = [data] if isinstance(data, str | os.PathLike) else list(data)
    if _is_shards(sources):
        files = resolve_data_files([str(s) for s in sources])
        present: set[str] = set()
        if video_column is None or caption_column is None:
            found = first_columns([f for f in files if not is_remote(f)])
            present = set().union(*found[1]) if found else set()
        video_column = video_column or next((c for c in VIDEO_EXTENSIONS if c in present), "mp4")
        caption_column = caption_column or next((c for c in ("json", "txt") if c in present), "json")
        return VideoDataConfig(
            data_files=files, video_column=video_column, caption_column=caption_column, **common
        )
    if len(sources) != 1:
        raise ValueError(f"give one Hub dataset id, or shards (.tar, folders, globs); got {sources}")
    name = str(sources[0])
    if video_column is None or caption_column is None:
        features = datasets.load_dataset(name, dataset_config_name, split=dataset_split, streaming=True).features
        names = list(features or {})
        if video_column is None:
            video_column = next((c for c in names if isinstance(features[c], datasets.Video)), "video")
        if caption_column is None:
            caption_column = next((c for c in CAPTION_COLUMNS if c in names), None)
            if caption_column is None:
                raise ValueError(f"dataset {name} has no caption column among {CAPTION_COLUMNS} (it has {names}); "
                                 "give caption_column")
    return VideoDataConfig(
        dataset_name=name, dataset_config_name=dataset_config_name, dataset_split=dataset_split,
        video_column=video_column, caption_column=caption_column, **common,
    )


def _is_shards(sources: list) -> bool:
    """Whether `sources` are shard paths (else one dataset id or dataset folder for `datasets.load_dataset`)."""
    for source in map(str, sources):
        path = Path(source).expanduser()
        if is_remote(source) or GLOB_CHARS & set(source) or path.is_file():
            continue
        if path.is_dir():
            if not any(path.glob("*.tar")):
                return False  # a dataset folder (videofolder, parquet, ...)
            continue
        if len(sources) == 1 and _HUB_ID.match(source) and not source.startswith("."):
            return False
        raise FileNotFoundError(f"data not found: {source} (give shards: a .tar, a folder of them or a glob; "
                                "or a Hub dataset id)")
    return True


class _OnePassReader(VideoClipStream):
    """The training reader, read once: the same sharding, caption parsing, skip rules and counters (`stats`), but no
    epochs, no buckets and a deterministic cut (first frames, centre crop)."""

    def __init__(self, config: VideoDataConfig, rank: int, world_size: int, upscale: bool) -> None:
        super().__init__(config, rank=rank, world_size=world_size)
        self.upscale = upscale
        self.stats.update({reason: 0 for reason in SKIP_REASONS}, already_written=0)

    def _key(self, index: int, raw: dict) -> str:
        """The reader's key (`__key__`, else the video's path); a row with neither is named by a hash of its video
        bytes rather than by its position, which depends on the number of processes."""
        key = super()._key(index, raw)
        video = raw.get(self.config.video_column)
        data = video.get("bytes") if isinstance(video, dict) else video
        if key == f"#{index}" and isinstance(data, bytes) and data:
            return "sha1-" + hashlib.sha1(data).hexdigest()[:20]
        return key

    def clips(self, done: set[str], limit: int | None) -> Iterator[tuple[str, str, torch.Tensor] | None]:
        """This rank's clips as `(key, caption, clip (3, T, H, W))`, or None for one skipped or already written
        (so a progress bar can count it); stops after `limit` clips that are in the dataset (new or written)."""
        seen: set[str] = set()
        kept = 0
        while limit is None or kept < limit:
            raw = self._pull()
            if raw is None:
                return
            index = self._pulled
            self._pulled += 1
            self.stats["pulled"] += 1
            key = self._key(index, raw)
            if key in seen:
                self._skip("skipped_duplicate_key", key, "the key appeared before in this pass", raw.get("__url__"))
                yield None
                continue
            seen.add(key)
            if key in done:
                self.stats["already_written"] += 1
                kept += 1
                yield None
                continue
            loaded = self._cut(raw, key)
            if loaded is None:
                yield None
                continue
            self.stats["decoded"] += 1
            kept += 1
            yield (key, *loaded)

    def _cut(self, raw: dict, key: str) -> tuple[str, torch.Tensor] | None:
        """`(caption, clip (3, T, H, W) in [-1, 1])`, or None (skipped and counted)."""
        cfg = self.config
        shard = raw.get("__url__")
        caption = self.sample_caption(raw, key)  # the training reader's checks and skip counts
        if caption is None:
            return None
        num_frames = cfg.num_frames[0]
        (height, width), = cfg.resolutions
        try:
            source = _video_source(raw.get(cfg.video_column))
            if source is None:
                raise VideoDecodeError(f"no video in column {cfg.video_column!r}")
            frames, _ = read_video(source, max_frames=num_frames)
        except (VideoDecodeError, OSError) as err:
            self._skip("skipped_corrupt", key, f"{type(err).__name__}: {err}", shard)
            return None
        if frames.shape[0] < num_frames:
            self._skip("skipped_too_short", key, f"{frames.shape[0]} frames < {num_frames}", shard)
            return None
        src_h, src_w = frames.shape[1:3]
        if not self.upscale and (src_h < height or src_w < width):
            self._skip("skipped_too_small", key, f"{src_h}x{src_w} (HxW) is smaller than {height}x{width}", shard)
            return None
        return caption, resize_and_crop(video_to_tensor(frames[:num_frames]), height, width)


# ---------------------------------------------------------------------------------------------------------------------
# Parts on disk
# ---------------------------------------------------------------------------------------------------------------------


def _parts(data_dir: Path, split: str = "train") -> list[Path]:
    """The complete parts of `split`, sorted by (rank, part)."""
    found = []
    for path in data_dir.glob(f"{split}-r*-*.parquet"):
        match = PART_RE.match(path.name)
        if match and match["split"] == split:
            found.append((int(match["rank"]), int(match["part"]), path))
    return [path for _, _, path in sorted(found)]


def _write_part(path: Path, rows: list[dict]) -> None:
    """Write `rows` as one Parquet part (see `_write_table`)."""
    _write_table(path, pa.Table.from_pylist(rows, schema=SCHEMA))


def _write_table(path: Path, table: pa.Table) -> None:
    """Write `table` to `path.tmp` (flushed to disk), then rename it over `path`, so a reader or a resumed run only
    ever sees complete parts."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        pq.write_table(table, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _written(parts: list[Path], layout_json: str, fingerprint: str) -> set[str]:
    """Keys of the parts already written, after checking they were made with this layout and tokenizer."""
    keys: set[str] = set()
    for path in parts:
        try:
            table = pq.read_table(path, columns=["key", "layout", "tokenizer_fingerprint"])
        except (OSError, pa.ArrowException) as err:
            message = f"cannot read the written part {path} ({err}); delete it to tokenise its clips again"
            raise ValueError(message) from None
        for column, expected in (("layout", layout_json), ("tokenizer_fingerprint", fingerprint)):
            values = set(pc.unique(table[column]).to_pylist())
            if values != {expected}:
                raise ValueError(
                    f"{path} was written with another {column} ({sorted(values)[:2]}, now {expected}); resume only "
                    "with the same tokenizer, order, frames and size, or write to another out folder"
                )
        keys.update(table["key"].to_pylist())
    return keys


def _drop_duplicates_across_ranks(parts: list[Path]) -> int:
    """Keep one row per key over all parts (the first in (rank, part) order) and return how many were dropped.

    Each process drops repeated keys of its own stream as it reads; a key that the source holds twice can still reach
    two processes. Parts with such rows are rewritten atomically without them (an emptied part is deleted)."""
    seen: set[str] = set()
    dropped = 0
    for path in parts:
        keys = pq.read_table(path, columns=["key"])["key"].to_pylist()
        keep = [key not in seen for key in keys]
        seen.update(keys)
        if all(keep):
            continue
        dropped += keep.count(False)
        if any(keep):
            _write_table(path, pq.read_table(path).filter(pa.array(keep)))
        else:
            path.unlink()
    return dropped


def _card(summary: dict) -> str:
    layout = summary["layout"]
    return (
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet\n"
        "tags:\n- pyratok\n- video-tokens\n---\n\n"
        f"# PyraTok tokens of {summary['data']}\n\n"
        f"{summary['num_rows']} clips of {summary['num_frames']} frames at {summary['height']}x{summary['width']} "
        f"tokenised by `{summary['tokenizer_name']}` (fingerprint `{summary['tokenizer_fingerprint']}`), "
        f"{layout['order']} order, {summary['seq_len']} ids per clip in [0, 2**{layout['codebook_dim']}).\n\n"
        "Columns: `key`, `caption`, `input_ids`, `layout` (JSON of `PyraTokTokenLayout.to_dict()`), "
        "`tokenizer_name`, `tokenizer_fingerprint`. Decode a row with\n"
        "`model.decode_from_sequence(torch.tensor([row['input_ids']]), "
        "PyraTokTokenLayout.from_dict(json.loads(row['layout'])))`.\n"
    )


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------------------
# Tokenising
# ---------------------------------------------------------------------------------------------------------------------


def check_clip_size(tokenizer: PyraTokModel | AutoencoderPyraTok, num_frames: int, height: int, width: int) -> None:
    """`ValueError` naming the value unless `num_frames` is `4k + 1` and H, W are multiples of `spatial_multiple`."""
    chunk = tokenizer.core.backbone.temporal_chunk
    if type(num_frames) is not int or num_frames < 1 or (num_frames - 1) % chunk:
        raise ValueError(f"num_frames={num_frames!r}; PyraTok takes {chunk}k + 1 frames (e.g. 17)")
    multiple = tokenizer.core.config.spatial_multiple
    for name, value in (("height", height), ("width", width)):
        if type(value) is not int or value < 1 or value % multiple:
            raise ValueError(f"{name}={value!r} is not a positive multiple of {multiple}, this tokenizer's spatial "
                             "multiple")


def tokenize_dataset(
    data: str | list[str],
    out: str | Path,
    tokenizer: PyraTokModel,
    tokenizer_name: str,
    *,
    order: str = "frame_major",
    num_frames: int = 17,
    height: int = 64,
    width: int = 64,
    batch_size: int = 8,
    video_column: str | None = None,
    caption_column: str | None = None,
    caption_key: str = "caption",
    dataset_config_name: str | None = None,
    dataset_split: str = "train",
    max_clips: int | None = None,
    rows_per_part: int = DEFAULT_ROWS_PER_PART,
    upscale: bool = False,
    resume: bool = True,
    accelerator: Any = None,
    progress: bool = True,
    prompts: bool = True,
) -> dict:
    """Tokenise every captioned clip of `data` (captions as prompts) into a Parquet dataset under `out`.

    Args:
        data: shards or a dataset id (see `data_config`, which also takes the column arguments).
        out: output folder (see the module docstring for its layout).
        tokenizer: the PyraTok model, in eval mode, on the device to run on.
        tokenizer_name: recorded in every row (a Hub id or folder name).
        order: sequence order, one of `ORDERS`.
        num_frames, height, width: the clip cut from every video: `4k + 1` frames, multiples of the tokenizer's
            `spatial_multiple`.
        batch_size: clips encoded at once (per process).
        max_clips: stop when the dataset holds this many clips (split over the processes); None: all.
        rows_per_part: rows per Parquet part (rounded up to whole batches, which keeps resume exact).
        upscale: tokenise videos smaller than `height x width` (upscaled) instead of skipping them.
        resume: continue from the parts already in `out` (False: delete them and start over).
        accelerator: an `accelerate.Accelerator`; each process tokenises a disjoint share and writes its own parts,
            the main process writes the summary. None: one process.
        progress: show a progress bar (on the main process).
        prompts: encode with the captions as prompts (False: without text, for a tokenizer trained without text
            guidance; the captions are still stored for the prior).

    Returns:
        The summary written to `out/pyratok_tokens.json`: `num_rows` in the dataset, `written` by this run,
        `already_written` (resumed), `skipped` (reason → count), `seconds`, the layout and tokenizer.

    Raises:
        ValueError: a bad order / size / frame count, parts in `out` from another tokenizer or layout, or no clip at
            all could be tokenised (the message gives the skip counts).
    """
    start_time = time.perf_counter()
    if order not in ORDERS:
        raise ValueError(f"order={order!r}; choose one of {ORDERS}")
    check_clip_size(tokenizer, num_frames, height, width)
    for name, value in (("batch_size", batch_size), ("rows_per_part", rows_per_part)):
        if type(value) is not int or value < 1:
            raise ValueError(f"{name}={value!r}; expected a positive int")
    if max_clips is not None and (type(max_clips) is not int or max_clips < 1):
        raise ValueError(f"max_clips={max_clips!r}; expected a positive int or None")
    rank = accelerator.process_index if accelerator is not None else 0
    world = accelerator.num_processes if accelerator is not None else 1
    is_main = rank == 0

    def barrier() -> None:
        if accelerator is not None:
            accelerator.wait_for_everyone()

    config = data_config(
        data, num_frames=num_frames, height=height, width=width, batch_size=batch_size, video_column=video_column,
        caption_column=caption_column, caption_key=caption_key, dataset_config_name=dataset_config_name,
        dataset_split=dataset_split,
    )
    layout = tokenizer.token_layout(num_frames, height, width, order=order)
    layout_json = json.dumps(layout.to_dict(), sort_keys=True)
    fingerprint = tokenizer_fingerprint(tokenizer)
    out = Path(out).expanduser()
    data_dir = out / DATA_DIR

    if is_main:
        data_dir.mkdir(parents=True, exist_ok=True)
        for stale in data_dir.glob("*.parquet.tmp"):  # a part being written when a run was killed
            stale.unlink()
        if not resume:
            for path in [*_parts(data_dir), out / SUMMARY_FILE]:
                path.unlink(missing_ok=True)
    barrier()
    existing = _parts(data_dir)
    done = _written(existing, layout_json, fingerprint)
    mine = [int(PART_RE.match(p.name)["part"]) for p in existing if int(PART_RE.match(p.name)["rank"]) == rank]
    next_part = max(mine, default=-1) + 1
    barrier()  # every process has listed the parts before any writes a new one

    reader = _OnePassReader(config, rank=rank, world_size=world, upscale=upscale)
    limit = None if max_clips is None else max_clips // world + (rank < max_clips % world)
    per_part = -(-rows_per_part // batch_size) * batch_size
    device = next(tokenizer.parameters()).device
    rows: list[dict] = []
    batch: list[tuple[str, str, torch.Tensor]] = []
    written = 0

    def encode(items: list[tuple[str, str, torch.Tensor]]) -> None:
        pixel_values = torch.stack([clip for _, _, clip in items]).to(device)
        text = [caption for _, caption, _ in items] if prompts else None
        seq, got = tokenizer.encode_to_sequence(pixel_values, text=text, order=order)
        if got != layout:
            raise RuntimeError(f"the tokenizer returned layout {got.to_dict()}, expected {layout.to_dict()}")
        for (key, caption, _), ids in zip(items, seq.to(torch.int32).cpu().tolist(), strict=True):
            rows.append({"key": key, "caption": caption, "input_ids": ids, "layout": layout_json,
                         "tokenizer_name": tokenizer_name, "tokenizer_fingerprint": fingerprint})

    def flush() -> None:
        nonlocal next_part, written
        _write_part(data_dir / f"train-r{rank}-{next_part:05d}.parquet", rows)
        written += len(rows)
        next_part += 1
        rows.clear()

    tokenizer.core.get_text_encoder()  # loaded now rather than inside the first batch, under the progress bar
    bar = tqdm(total=limit if world == 1 else None, desc="tokenize-dataset", unit="clip", file=sys.stderr,
               dynamic_ncols=True, disable=not (progress and is_main))
    with bar:
        for item in reader.clips(done, limit):
            bar.update(1)
            if item is None:
                continue
            batch.append(item)
            if len(batch) == batch_size:
                encode(batch)
                batch.clear()
                bar.set_postfix(written=written + len(rows), refresh=False)
                if len(rows) >= per_part:
                    flush()
        if batch:
            encode(batch)
        if rows:
            flush()

    local = {name: reader.stats[name] for name in ("pulled", "already_written", "decoded", *SKIP_REASONS)}
    local["written"] = written
    # Counters travel through small files (no collective op, so any launcher's processes can share them).
    _write_text_atomic(out / f".stats-r{rank}.json", json.dumps(local))
    barrier()
    if is_main:
        stats_files = [out / f".stats-r{r}.json" for r in range(world)]
        gathered = [json.loads(path.read_text(encoding="utf-8")) for path in stats_files]
        totals = {name: sum(s[name] for s in gathered) for name in local}
        if world > 1:
            dropped = _drop_duplicates_across_ranks(_parts(data_dir))
            totals["skipped_duplicate_key"] += dropped
            totals["written"] -= dropped
        parts = _parts(data_dir)
        summary = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "data": data if isinstance(data, str) else list(map(str, data)),
            "video_column": config.video_column,
            "caption_column": config.caption_column,
            "tokenizer_name": tokenizer_name,
            "tokenizer_fingerprint": fingerprint,
            "order": order,
            "num_frames": num_frames,
            "height": height,
            "width": width,
            "layout": layout.to_dict(),
            "seq_len": layout.seq_len,
            "codebook_size": 2**layout.codebook_dim,
            "num_rows": sum(pq.ParquetFile(p).metadata.num_rows for p in parts),
            "num_parts": len(parts),
            "data_files": f"{DATA_DIR}/train-*.parquet",
            "written": totals["written"],
            "already_written": totals["already_written"],
            "pulled": totals["pulled"],
            "skipped": {reason: totals[reason] for reason in SKIP_REASONS},
            "skipped_total": sum(totals[reason] for reason in SKIP_REASONS),
            "processes": world,
            "seconds": round(time.perf_counter() - start_time, 3),
        }
        _write_text_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        _write_text_atomic(out / CARD_FILE, _card(summary))
        for path in stats_files:
            path.unlink()
    barrier()
    summary = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    if summary["num_rows"] == 0:
        skipped = {k: v for k, v in summary["skipped"].items() if v}
        raise ValueError(
            f"no clip of {summary['data']} could be tokenised ({summary['pulled']} read, skipped: {skipped}); check "
            f"video_column={config.video_column!r}, caption_column={config.caption_column!r}, "
            f"num_frames={num_frames}, size {height}x{width}"
        )
    return summary


# ---------------------------------------------------------------------------------------------------------------------
# Reading token datasets
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenDatasetInfo:
    """What every row of a token dataset agrees on."""

    layout: PyraTokTokenLayout
    tokenizer_name: str
    tokenizer_fingerprint: str
    num_rows: int


def load_token_dataset(path: str | Path, split: str = "train", cache_dir: str | None = None) -> datasets.Dataset:
    """A token dataset written by `tokenize_dataset` (a local folder: its `data/{split}-*.parquet`) or pushed to the
    Hub (an id), as a `datasets.Dataset`."""
    local = Path(path).expanduser()
    if local.is_dir():
        files = sorted(str(p) for p in _parts(local / DATA_DIR, split))
        if not files:
            raise ValueError(f"{path} holds no {DATA_DIR}/{split}-r*-*.parquet parts: not a PyraTok token dataset")
        return datasets.load_dataset("parquet", data_files={split: files}, split=split, cache_dir=cache_dir)
    return datasets.load_dataset(str(path), split=split, cache_dir=cache_dir)


def token_dataset_info(ds: datasets.Dataset) -> TokenDatasetInfo:
    """The layout and tokenizer of `ds`; `ValueError` naming the field when rows disagree on them, or when a row's
    `input_ids` is not `layout.seq_len` long."""
    missing = [name for name in SCHEMA.names if name not in ds.column_names]
    if missing:
        raise ValueError(f"not a PyraTok token dataset: columns {missing} are missing (it has {ds.column_names})")
    if len(ds) == 0:
        raise ValueError("the token dataset has no rows")
    table = ds.with_format("arrow")[:]
    values = {}
    for name in ("layout", "tokenizer_name", "tokenizer_fingerprint"):
        found = pc.unique(table[name]).to_pylist()
        if len(found) != 1:
            shown = [str(v)[:120] for v in found[:3]]
            raise ValueError(f"rows disagree on {name}: {len(found)} different values, e.g. {shown}")
        values[name] = found[0]
    layout = PyraTokTokenLayout.from_dict(json.loads(values["layout"]))
    lengths = pc.unique(pc.list_value_length(table["input_ids"])).to_pylist()
    if lengths != [layout.seq_len]:
        raise ValueError(f"input_ids lengths {sorted(lengths, key=str)[:5]} differ from the layout's seq_len "
                         f"{layout.seq_len}")
    return TokenDatasetInfo(layout, values["tokenizer_name"], values["tokenizer_fingerprint"], len(ds))


def check_tokens_match(
    info: TokenDatasetInfo | PyraTokTokenLayout,
    tokenizer: PyraTokModel | AutoencoderPyraTok,
    *,
    strict_fingerprint: bool = False,
) -> None:
    """Refuse a tokenizer that cannot decode the dataset's ids: `ValueError` naming the codebook / level strides /
    level grid that differ. A different fingerprint (same shapes, other weights) warns, or raises if `strict`."""
    layout = info.layout if isinstance(info, TokenDatasetInfo) else info
    theirs = {
        "codebook_dim": tokenizer.core.config.codebook_dim,
        "level_strides": tuple(tokenizer.core.quantizer.level_spatial_strides),
    }
    ours = {"codebook_dim": layout.codebook_dim, "level_strides": layout.level_strides}
    diff = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
    if not diff:
        grids = tuple(tokenizer.core.quantizer.level_grid(layout.latent_size))
        if grids != layout.level_shapes:
            diff["level_shapes"] = (layout.level_shapes, grids)
    if diff:
        shown = ", ".join(f"{k}: dataset {a}, tokenizer {b}" for k, (a, b) in diff.items())
        raise ValueError(f"the token dataset does not fit this tokenizer ({shown})")
    if isinstance(info, TokenDatasetInfo):
        found = tokenizer_fingerprint(tokenizer)
        if found != info.tokenizer_fingerprint:
            message = (f"the token dataset was made by tokenizer {info.tokenizer_name} (fingerprint "
                       f"{info.tokenizer_fingerprint}); this tokenizer has fingerprint {found}, so its codes mean "
                       "something else")
            if strict_fingerprint:
                raise ValueError(message)
            warnings.warn(message, stacklevel=2)


__all__ = [
    "SKIP_REASONS",
    "TokenDatasetInfo",
    "check_clip_size",
    "check_tokens_match",
    "data_config",
    "load_token_dataset",
    "token_dataset_info",
    "tokenize_dataset",
    "tokenizer_fingerprint",
]

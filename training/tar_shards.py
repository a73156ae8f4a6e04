"""Read WebDataset `.tar` shards sample by sample, turning every read fault into a record instead of an exception.

`datasets`' WebDataset builder infers its columns from the first samples (a first sample without a caption, or with a
caption of another type, fails the whole dataset), parses `.json` members inside its iterator (one bad member ends the
epoch) and stops silently where a shard is cut short. Here a shard is read with `tarfile` in stream mode, members are
grouped into samples by key as WebDataset does, and a fault becomes a record `{"__key__", "__url__", <error key>}`
(`SHARD_ERROR_KEY`, or `SAMPLE_ERROR_KEY` for one bad sample) that the caller skips and counts. Member contents
stay raw `bytes`: parsing captions and decoding videos is the caller's business, where a bad one is a skipped sample.

A sample is a dict `{"__key__": str, "__url__": shard, <extension>: bytes, ...}`, e.g. `{"mp4": ..., "json": ...}`
for `proc-000001.mp4` + `proc-000001.json`.
"""

from __future__ import annotations

import lzma
import os
import re
import tarfile
import zlib
from collections.abc import Iterator
from typing import Any

import datasets

# An error record holds one of these keys with the reason: the shard (or its rest) is unreadable, or one sample is.
SHARD_ERROR_KEY = "__shard_error__"
SAMPLE_ERROR_KEY = "__sample_error__"
# Faults of the file itself (not of our code): a sample or a whole shard that cannot be read is skipped for these.
# (gzip and bz2 raise OSError / EOFError subclasses.)
READ_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError)


# Adapted from webdataset (https://github.com/webdataset/webdataset, webdataset/tariterators.py@87bd5aa, BSD-3-Clause)
# as vendored by datasets' WebDataset builder (Apache-2.0): the key is the path up to the first dot of the file name.
def split_member_name(path: str) -> tuple[str | None, str | None]:
    """`"dir/proc-01.mp4"` → `("dir/proc-01", "mp4")`; `"a.b.json"` → `("a", "b.json")`; no dot → `(None, None)`."""
    match = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", path)
    if not match:
        return None, None
    return match.group(1), match.group(2)


def _open(url: str):
    if "://" in url:
        from datasets.utils.file_utils import xopen

        return xopen(url, "rb", block_size=0)
    return open(url, "rb")


def _dropped(sample: dict[str, Any]) -> str:
    return f"; its partly read sample {sample['__key__']!r} is dropped" if sample else ""


def iter_shard(url: str) -> Iterator[dict[str, Any]]:
    """The samples of one shard in archive order, then one error record if the shard could not be read to its end.

    A shard that is not a tar archive, is empty, or ends without tar's end-of-archive marker (cut short) yields an
    error record naming how many samples came before the fault; the sample being read at that point is dropped with
    it, since its members may be incomplete. A sample with a member twice is an error record itself.
    """
    stop: list[BaseException] = []

    class _EndAwareTarInfo(tarfile.TarInfo):
        # tarfile in stream mode ends the iteration quietly on an empty, truncated or invalid header after the first
        # one; remembering which header error ended it tells a complete archive (a zero block) from a cut one.
        @classmethod
        def fromtarfile(cls, tar):
            try:
                return super().fromtarfile(tar)
            except tarfile.HeaderError as err:
                stop.append(err)
                raise

    def error(key: str | None, message: str) -> dict[str, Any]:
        return {"__key__": key, "__url__": url, SHARD_ERROR_KEY: message}

    sample: dict[str, Any] = {}
    yielded = 0
    try:
        with _open(url) as f, tarfile.open(fileobj=f, mode="r|*", tarinfo=_EndAwareTarInfo) as tar:
            for member in tar:
                name = member.name
                if not member.isreg() or os.path.basename(name).startswith((".", "__")):
                    continue  # folders, links and hidden files, as datasets' `iter_archive` skips them
                key, field = split_member_name(name)
                if key is None:
                    continue
                if sample and sample["__key__"] != key:
                    yield sample
                    yielded += 1
                    sample = {}
                if field in sample:
                    sample[SAMPLE_ERROR_KEY] = f"member {name!r} appears twice in the sample"
                    continue
                sample.setdefault("__key__", key)
                sample.setdefault("__url__", url)
                sample[field] = tar.extractfile(member).read()
                tar.members = []  # stream mode: do not keep every TarInfo of the shard
    except READ_ERRORS as err:
        yield error(sample.get("__key__"), f"shard unreadable after {yielded} samples: {type(err).__name__}: {err}"
                    + _dropped(sample))
        return
    if stop and not isinstance(stop[-1], tarfile.EOFHeaderError):
        yield error(sample.get("__key__"), f"shard cut short after {yielded} samples (no end-of-archive marker: "
                    f"{type(stop[-1]).__name__}: {stop[-1]})" + _dropped(sample))
        return
    if sample:
        yield sample


def generate_samples(shards: list[str]) -> Iterator[dict[str, Any]]:
    """Every shard's samples in turn (the `datasets` generator: `shards` is the list it shuffles and splits)."""
    for url in shards:
        yield from iter_shard(url)


def load_tar_shards(files: list[str]) -> datasets.IterableDataset:
    """A streaming `datasets.IterableDataset` over the shards, one shard per data source, so `shuffle` permutes the
    shard order and `split_dataset_by_node` gives each rank whole shards when they divide evenly (as for `datasets`'
    WebDataset builder). No features: samples are plain dicts, of whatever members each one has."""
    return datasets.IterableDataset.from_generator(generate_samples, gen_kwargs={"shards": list(files)})


def first_columns(files: list[str], max_samples: int = 5) -> tuple[str, list[set[str]]] | None:
    """The member extensions of the first readable samples of the first shard that has any, as `(shard, [set])`."""
    for url in files:
        found = []
        for sample in iter_shard(url):
            if SHARD_ERROR_KEY not in sample and SAMPLE_ERROR_KEY not in sample:
                found.append({k for k in sample if not k.startswith("__")})
            if len(found) >= max_samples:
                break
        if found:
            return url, found
    return None


__all__ = [
    "SAMPLE_ERROR_KEY",
    "SHARD_ERROR_KEY",
    "first_columns",
    "generate_samples",
    "iter_shard",
    "load_tar_shards",
    "split_member_name",
]

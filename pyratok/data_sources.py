"""Where WebDataset shards come from: one resolution rule for training (`data.data_files`) and evaluation (`--data`).

A source is a folder (its `*.tar` shards), one shard file, or a glob pattern; training also passes remote URLs
(`hf://...`, `https://...`) through to `datasets` unchanged. Local results are sorted, so the shard order never
depends on the file system. `unwritable_reason` checks, before any work, where a CLI will write its output.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

GLOB_CHARS = frozenset("*?[")


def is_remote(source: str) -> bool:
    return "://" in source


def resolve_data_files(sources: str | os.PathLike | list[str | os.PathLike], allow_remote: bool = True) -> list[str]:
    """Expand data sources into shard paths.

    Args:
        sources: one source or a list of them, each a folder (→ its sorted `*.tar` files), a file (kept as given), a
            glob pattern (→ its sorted matches; `~` is expanded) or, with `allow_remote`, a URL (kept as given).
        allow_remote: pass URLs through (training streams them through `datasets`); False makes them an error
            (evaluation reads local tar files).

    Returns:
        The shard paths, in the order of `sources`, each source's matches sorted.

    Raises:
        FileNotFoundError: a path without glob characters does not exist (the message names it).
        ValueError: no sources, a glob matching nothing, a folder without `*.tar` files, or a URL where
            `allow_remote` is False.
    """
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if not items or not all(isinstance(s, (str, os.PathLike)) and str(s) for s in items):
        raise ValueError(f"data sources must be a non-empty path, glob or list of them, got {sources!r}")
    files: list[str] = []
    for item in items:
        source = str(item)
        if is_remote(source):
            if not allow_remote:
                raise ValueError(f"{source!r} is a URL: evaluation reads local shards (a folder, a .tar or a glob)")
            files.append(source)
            continue
        path = os.path.expanduser(source)
        if os.path.isdir(path):
            shards = sorted(str(p) for p in Path(path).glob("*.tar") if p.is_file())
            if not shards:
                example = Path(source) / "val-00000.tar"
                raise ValueError(f"no *.tar shards in folder {source} (expected e.g. {example})")
            files += shards
        elif os.path.isfile(path):
            files.append(path)
        elif GLOB_CHARS & set(source):
            matches = sorted(glob.glob(path))
            if not matches:
                raise ValueError(f"data pattern {source!r} matches no file (cwd {os.getcwd()})")
            files += matches
        else:
            raise FileNotFoundError(
                f"data not found: {source} (cwd {os.getcwd()}; give a folder of *.tar shards, one .tar or a glob)"
            )
    return files


def data_folder(source: str | os.PathLike) -> Path:
    """The folder a local source lives in: the folder itself, a shard's parent, or a glob's first match's parent (where
    a split's annotation files sit beside its shards)."""
    path = Path(os.path.expanduser(str(source)))
    if path.is_dir():
        return path
    return Path(resolve_data_files(source, allow_remote=False)[0]).parent


def unwritable_reason(start: Path) -> str | None:
    """Why nothing can be created at `start` (a path that may not exist yet), or None: its nearest existing ancestor
    is a file, or a folder this process cannot write."""
    ancestor = start
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is a file, not a folder"
    if not os.access(ancestor, os.W_OK):
        return f"{ancestor} is not writable"
    return None


__all__ = ["data_folder", "is_remote", "resolve_data_files", "unwritable_reason"]

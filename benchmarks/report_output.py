"""The one way a benchmark script hands back its report: JSON on stdout, and the same text in `--out` if given."""

from __future__ import annotations

import json


def emit_report(report: dict, out: str | None, indent: int = 2) -> dict:
    """Prints `report` as JSON and, when `out` is a path, writes the same text there; returns `report`."""
    text = json.dumps(report, indent=indent)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
    return report

"""Write .ci/constraints.txt: the exact installed version of every distribution that PyraTok (with the extras CI
installs) pulls in, found by walking the requirement graph from the installed `pyratok` distribution.

    python .ci/freeze_constraints.py test consumers > .ci/constraints.txt
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import sys

from packaging.requirements import Requirement


def freeze(extras: set[str]) -> dict[str, str]:
    pinned: dict[str, str] = {}
    todo: list[tuple[str, set[str]]] = [("pyratok", extras)]
    while todo:
        name, wanted = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement whose marker excludes this platform
        key = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if key in pinned:
            continue
        pinned[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in wanted | {""}):
                continue
            todo.append((req.name, set(req.extras)))
    pinned.pop("pyratok", None)
    return pinned


if __name__ == "__main__":
    print("# Exact versions CI installs (pip -c): the tested environment. setup.cfg declares ranges.")
    print(f"# Regenerate: python .ci/freeze_constraints.py {' '.join(sys.argv[1:])} > .ci/constraints.txt")
    for name, version in sorted(freeze(set(sys.argv[1:])).items()):
        print(f"{name}=={version}")

"""A figure of generated clips: one row per prompt, for each prior a few frames side by side.

Reads the folders `pyratok-eval generation --save-videos DIR` writes (`DIR/<prior>/NNN.mp4` and
`DIR/<prior>/prompts.txt`, one `NNN<TAB>prompt` line per clip) and writes one PNG:

    python -m pyratok.evaluation.generation_figure --videos out/gen-videos --priors pyratok,wo-lapq,wo-text \
        --num-prompts 4 --frames 0,8,16 --out evaluation/figures/generation.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pyratok.video_io import read_video

GAP = 4  # pixels between frame groups
LABEL_HEIGHT = 14  # pixels of text above each frame group and left of each row


def read_prompts(folder: Path) -> dict[str, str]:
    """`prompts.txt` of one prior's folder → {clip index "NNN": prompt}."""
    path = folder / "prompts.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: write the clips with `pyratok-eval generation --save-videos`")
    rows = [line.split("\t", 1) for line in path.read_text().splitlines() if line.strip()]
    return {index: prompt for index, prompt in rows}


def generation_grid(videos: Path, priors: list[str], num_prompts: int, frames: list[int], scale: int = 2
                    ) -> tuple[Image.Image, list[str]]:
    """The figure and its prompts: row i shows clip i of every prior (the same prompt in every folder)."""
    prompts = {name: read_prompts(videos / name) for name in priors}
    indices = sorted(prompts[priors[0]])[:num_prompts]
    for name in priors[1:]:
        differing = [i for i in indices if prompts[name].get(i) != prompts[priors[0]][i]]
        if differing:
            raise ValueError(f"prior {name!r} has other prompts than {priors[0]!r} for clips {differing}")
    rows = []
    for index in indices:
        groups = []
        for name in priors:
            clip, _ = read_video(str(videos / name / f"{index}.mp4"))
            bad = [f for f in frames if not 0 <= f < len(clip)]
            if bad:
                raise ValueError(f"frames {bad} are outside the {len(clip)} frames of {videos / name / index}.mp4")
            groups.append(np.concatenate([clip[f] for f in frames], axis=1))
        gap = np.full((groups[0].shape[0], GAP, 3), 255, dtype=np.uint8)
        row = groups[0]
        for group in groups[1:]:
            row = np.concatenate([row, gap, group], axis=1)
        rows.append(row)
    height, width = rows[0].shape[:2]
    image = Image.new("RGB", (width * scale, LABEL_HEIGHT + len(rows) * (height * scale + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(image)
    group_width = (width - GAP * (len(priors) - 1)) // len(priors)
    for k, name in enumerate(priors):
        draw.text((k * (group_width + GAP) * scale + 2, 1), name, fill="black")
    for r, (row, index) in enumerate(zip(rows, indices, strict=True)):
        top = LABEL_HEIGHT + r * (height * scale + LABEL_HEIGHT)
        draw.text((2, top + 1), f"{index}: {prompts[priors[0]][index]}", fill="black")
        tile = Image.fromarray(row).resize((width * scale, height * scale), Image.NEAREST)
        image.paste(tile, (0, top + LABEL_HEIGHT))
    return image, [prompts[priors[0]][i] for i in indices]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", required=True, help="the --save-videos folder of `pyratok-eval generation`")
    parser.add_argument("--priors", required=True, help="comma-separated prior names (sub-folders), in column order")
    parser.add_argument("--num-prompts", type=int, default=4)
    parser.add_argument("--frames", default="0,8,16", help="comma-separated frame indices per clip")
    parser.add_argument("--scale", type=int, default=2, help="pixel upscaling of the frames")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args(argv)
    image, prompts = generation_grid(Path(args.videos), args.priors.split(","), args.num_prompts,
                                     [int(f) for f in args.frames.split(",")], args.scale)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out)
    print(f"wrote {args.out}: {len(prompts)} prompts x {args.priors}")


if __name__ == "__main__":
    main()

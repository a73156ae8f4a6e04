"""evaluation/generation_figure.py: each tile holds the asked frame of the asked prior's clip for the row's prompt."""

import numpy as np
import pytest

from pyratok.evaluation.generation_figure import GAP, LABEL_HEIGHT, generation_grid
from pyratok.video_io import write_video

COLOURS = {"a": [(250, 0, 0), (0, 250, 0)], "b": [(0, 0, 250), (250, 250, 0)]}  # prior -> colour of clip 000, 001


def write_prior(folder, colours, prompts, frames=5):
    folder.mkdir(parents=True)
    for i, colour in enumerate(colours):
        clip = np.zeros((frames, 16, 16, 3), dtype=np.uint8)
        clip[:] = colour
        clip[-1] = 128  # the last frame is grey: shows which frame a tile holds
        write_video(folder / f"{i:03d}.mp4", clip, fps=8.0)
    (folder / "prompts.txt").write_text("".join(f"{i:03d}\t{p}\n" for i, p in enumerate(prompts)))


def test_tiles_hold_the_asked_frames_of_each_prior(tmp_path):
    for name, colours in COLOURS.items():
        write_prior(tmp_path / name, colours, ["red then blue", "green then yellow"])
    image, prompts = generation_grid(tmp_path, ["a", "b"], num_prompts=2, frames=[0, 4], scale=1)
    assert prompts == ["red then blue", "green then yellow"]
    pixels = np.asarray(image).astype(int)
    for row in range(2):
        top = LABEL_HEIGHT + row * (16 + LABEL_HEIGHT) + LABEL_HEIGHT + 8
        for k, name in enumerate(["a", "b"]):
            left = k * (32 + GAP)
            np.testing.assert_allclose(pixels[top, left + 8], COLOURS[name][row], atol=12)  # frame 0
            np.testing.assert_allclose(pixels[top, left + 24], (128, 128, 128), atol=12)  # frame 4 (grey)


def test_priors_with_other_prompts_are_refused(tmp_path):
    write_prior(tmp_path / "a", COLOURS["a"], ["one", "two"])
    write_prior(tmp_path / "b", COLOURS["b"], ["one", "other"])
    with pytest.raises(ValueError, match="other prompts"):
        generation_grid(tmp_path, ["a", "b"], num_prompts=2, frames=[0])
    with pytest.raises(ValueError, match="outside"):
        generation_grid(tmp_path, ["a"], num_prompts=1, frames=[9])

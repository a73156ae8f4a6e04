"""evaluation/background_colour.py: captions name their background colour; a rendered background is recognised."""

import numpy as np
import pytest
import torch

from pyratok.evaluation.background_colour import (
    background_colour_name,
    background_consistency,
    clip_background_colour,
)
from pyratok.training.make_shards import BACKGROUND_COLORS, _render_background


def rendered(seed: int) -> tuple[torch.Tensor, str, str]:
    """A 5-frame clip of one `make_shards` background: `(3, 5, 64, 64)` in [-1, 1], its colour, its phrase."""
    image, name, phrase = _render_background(np.random.default_rng(seed), 64)
    clip = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[:, None].repeat(1, 5, 1, 1) * 2 - 1
    return clip.float(), name, phrase


def test_caption_phrases_name_their_colour():
    for seed in range(60):
        _, name, phrase = rendered(seed)
        assert background_colour_name(f"a red circle moves left on {phrase}") == name
    assert background_colour_name("the camera pans up across a photograph of a retina") is None
    assert background_colour_name("a red circle on a noisy sky blue background") == "sky blue"


def test_rendered_backgrounds_are_recognised():
    hits = []
    for seed in range(60):
        clip, name, phrase = rendered(seed)
        got = clip_background_colour(clip)
        assert got in BACKGROUND_COLORS
        hits.append(got == name)
        if "noisy" not in phrase and "gradient" not in phrase:  # solid and striped: two exact palette colours
            assert got == name, (phrase, got)
    assert np.mean(hits) > 0.95  # 59 of these 60 (one beige gradient reads as olive)


def test_consistency_counts_by_hand():
    clips, prompts = [], []
    for seed in range(4):
        clip, name, phrase = rendered(seed)
        clips.append(clip)
        prompts.append(f"a red circle moves left on {phrase}")
    wrong = [c for c in BACKGROUND_COLORS if c != background_colour_name(prompts[0])][0]
    prompts[0] = f"a red circle moves left on a {wrong} background"  # one clip now disagrees with its prompt
    clips.append(clips[1])
    prompts.append("the camera pans left across a photograph of a city")  # skipped: no background colour
    expected = np.mean([clip_background_colour(c) == background_colour_name(p) for c, p in zip(clips[:4], prompts)])
    report = background_consistency(clips, prompts)
    assert report == {"num_clips": 4, "skipped_prompts": 1, "recognised": pytest.approx(expected),
                      "chance": 1 / len(BACKGROUND_COLORS)}
    with pytest.raises(ValueError, match="prompts"):
        background_consistency(clips, prompts[:-1])

"""The data config's defaults are valid clip geometry for the backbone (issue 26 mutation survivor)."""

from pyratok.training.data import VideoDataConfig


def test_default_clip_lengths_fit_the_causal_backbone():
    config = VideoDataConfig(data_files=["shards/*.tar"])
    # Wan encodes frame 0 alone, then chunks of 4: every length is 4k + 1
    assert config.num_frames and all((t - 1) % 4 == 0 for t in config.num_frames), config.num_frames
    assert all(h % 8 == 0 and w % 8 == 0 for h, w in config.resolutions), config.resolutions

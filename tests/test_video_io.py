"""pyratok.video_io: PyAV round trips, tensor conventions, resize/crop and the frame-count rule."""

import numpy as np
import pytest
import torch

from pyratok.video_io import (
    VideoDecodeError,
    encode_video,
    read_video,
    resize_and_crop,
    tensor_to_video,
    valid_frame_count,
    video_to_tensor,
    write_video,
)


def smooth_clip(frames: int = 9, height: int = 48, width: int = 64) -> np.ndarray:
    """uint8 `(T, H, W, 3)` of slowly moving sinusoids: what a codec at high quality should keep almost exactly."""
    t = np.arange(frames)[:, None, None] / frames
    y = np.linspace(0, 1, height)[None, :, None]
    x = np.linspace(0, 1, width)[None, None, :]
    channels = [np.sin(6 * x + 3 * t + 2 * y), np.cos(4 * y - 2 * t + 0 * x), np.sin(3 * (x + y) + t)]
    return ((np.stack(channels, axis=-1) + 1) * 127.5).round().astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def test_round_trip_quality_and_fps(tmp_path):
    clip = smooth_clip()
    path = tmp_path / "nested" / "dir" / "clip.mp4"  # parents are created
    write_video(path, clip, fps=12.0)
    frames, fps = read_video(path)
    assert frames.shape == clip.shape and frames.dtype == np.uint8
    assert fps == pytest.approx(12.0)
    assert psnr(frames, clip) > 35


def test_odd_sizes_and_float_tensor_input(tmp_path):
    clip = smooth_clip(frames=5, height=33, width=47)
    x = video_to_tensor(clip)
    write_video(tmp_path / "odd.mp4", x)  # (3, T, H, W) float in [-1, 1]
    frames, _ = read_video(str(tmp_path / "odd.mp4"))
    assert frames.shape == (5, 33, 47, 3)
    assert psnr(frames, clip) > 35


def test_bytes_input_and_max_frames(tmp_path):
    clip = smooth_clip(frames=9)
    data = encode_video(clip)
    write_video(tmp_path / "a.mp4", clip)
    assert (tmp_path / "a.mp4").read_bytes() == data
    frames, _ = read_video(data, max_frames=4)
    assert frames.shape == (4, *clip.shape[1:])
    full, _ = read_video(data)
    np.testing.assert_array_equal(frames, full[:4])


def test_encoding_is_deterministic():
    clip = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    assert encode_video(clip) == encode_video(clip.copy())


def test_errors_name_the_source(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_video(missing)
    with pytest.raises(VideoDecodeError, match="<300 bytes>"):
        read_video(b"not a video" * 27 + b"xxx")
    with pytest.raises(VideoDecodeError, match="<0 bytes>"):
        read_video(b"")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01" * 100)
    with pytest.raises(VideoDecodeError, match="garbage.mp4"):
        read_video(garbage)
    assert issubclass(VideoDecodeError, ValueError)
    with pytest.raises(ValueError, match="max_frames"):
        read_video(encode_video(smooth_clip(frames=2)), max_frames=0)


def ts_piece(frames: np.ndarray) -> bytes:
    """One MPEG-TS piece; pieces of different sizes, concatenated, change resolution mid-stream."""
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def test_a_resolution_change_mid_stream_names_the_source_and_both_sizes(tmp_path):
    path = tmp_path / "sizechange.ts"
    path.write_bytes(ts_piece(smooth_clip(5, 64, 64)) + ts_piece(smooth_clip(4, 96, 128)))
    with pytest.raises(VideoDecodeError, match=r"sizechange.ts: frame 5 is 128x96, frame 0 is 64x64"):
        read_video(path)
    frames, _ = read_video(path, max_frames=5)  # the first piece alone decodes
    assert frames.shape == (5, 64, 64, 3)


def test_write_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        write_video(tmp_path / "x.mp4", np.zeros((4, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="float32"):
        write_video(tmp_path / "x.mp4", np.zeros((4, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "x.mp4", smooth_clip(frames=2), fps=0)
    with pytest.raises(ValueError, match="crf"):
        write_video(tmp_path / "x.mp4", smooth_clip(frames=2), crf=60)


def test_tensor_conversions():
    clip = smooth_clip(frames=3, height=8, width=10)
    x = video_to_tensor(clip)
    assert x.shape == (3, 3, 8, 10) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(tensor_to_video(x), clip)
    np.testing.assert_array_equal(video_to_tensor(torch.from_numpy(clip)), x)
    assert tensor_to_video(torch.full((3, 1, 2, 2), 5.0)).max() == 255  # clipped
    with pytest.raises(ValueError, match="uint8"):
        video_to_tensor(clip.astype(np.float32))
    with pytest.raises(ValueError, match="3, T, H, W"):
        tensor_to_video(torch.zeros(3, 8, 10))


def test_resize_and_crop():
    x = torch.rand(3, 2, 40, 100) * 2 - 1
    centre = resize_and_crop(x, 32, 32)
    assert centre.shape == (3, 2, 32, 32)
    assert centre.min() >= -1 and centre.max() <= 1
    # The short side covers the target: a 40x100 frame becomes 32x80 and loses columns only.
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(resize_and_crop(x, 32, 32, g1), resize_and_crop(x, 32, 32, g2))
    crops = {resize_and_crop(x, 32, 32, torch.Generator().manual_seed(s))[0, 0, 0, 0].item() for s in range(8)}
    assert len(crops) > 1  # random offsets differ
    same = torch.rand(3, 1, 16, 24)
    torch.testing.assert_close(resize_and_crop(same, 16, 24), same)  # nothing to do
    up = resize_and_crop(torch.rand(3, 1, 10, 12), 30, 20)
    assert up.shape == (3, 1, 30, 20)
    with pytest.raises(ValueError, match="height=0"):
        resize_and_crop(x, 0, 32)
    with pytest.raises(ValueError, match="float"):
        resize_and_crop(torch.zeros(3, 2, 4, 4, dtype=torch.uint8), 2, 2)


@pytest.mark.parametrize(
    ("n", "chunk", "expected"), [(1, 4, 1), (4, 4, 1), (5, 4, 5), (17, 4, 17), (20, 4, 17), (7, 2, 7)]
)
def test_valid_frame_count(n, chunk, expected):
    assert valid_frame_count(n, chunk) == expected


def test_valid_frame_count_rejects_empty():
    with pytest.raises(ValueError, match="n=0"):
        valid_frame_count(0)

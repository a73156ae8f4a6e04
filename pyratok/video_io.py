"""Video decoding/encoding with PyAV and the tensor conventions of PyraTok's data pipeline.

Frames on disk and in numpy are uint8 `(T, H, W, 3)` RGB; frames in torch are float32 `(3, T, H, W)` in [-1, 1], the
layout `PyraTokModel` takes per batch item. Everything here works offline (no torchcodec, no network).
"""

import io
import os
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

# x264's high-4:4:4 profile avoids chroma subsampling, so colour edges of small synthetic clips survive a round trip.
PIX_FMT_444 = "yuv444p"
PIX_FMT_420 = "yuv420p"


class VideoDecodeError(ValueError):
    """A video source exists but cannot be decoded (corrupt, empty, or without a video stream)."""


def _describe(source: str | os.PathLike | bytes) -> str:
    if isinstance(source, bytes | bytearray | memoryview):
        return f"<{len(source)} bytes>"
    return str(source)


def _size(frame: np.ndarray) -> str:
    return f"{frame.shape[1]}x{frame.shape[0]}"  # W x H, as video tools print it


def read_video(source: str | os.PathLike | bytes, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode a video file or in-memory container.

    Args:
        source: a path, or the raw bytes of a container (mp4, webm, ...).
        max_frames: stop after this many frames (None: decode all).

    Returns:
        `(frames, fps)`: uint8 `(T, H, W, 3)` RGB frames in [0, 255], T >= 1, and the stream's frame rate.

    Raises:
        FileNotFoundError: `source` is a path that does not exist.
        VideoDecodeError: the source has no video stream, no decodable frame, is corrupt, or changes resolution
            mid-stream.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    name = _describe(source)
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise VideoDecodeError(f"cannot decode video {name}: empty input")
        target = io.BytesIO(bytes(source))
    else:
        if not os.path.isfile(source):
            raise FileNotFoundError(f"video file not found: {name}")
        target = os.fspath(source)

    frames = []
    try:
        with av.open(target, mode="r") as container:
            if not container.streams.video:
                raise VideoDecodeError(f"cannot decode video {name}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if frames[-1].shape != frames[0].shape:
                    # A stream may change resolution mid-way (e.g. concatenated MPEG-TS); np.stack would fail bare.
                    raise VideoDecodeError(
                        f"cannot decode video {name}: frame {len(frames) - 1} is {_size(frames[-1])}, frame 0 is "
                        f"{_size(frames[0])} (the resolution changes mid-stream)"
                    )
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except VideoDecodeError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise VideoDecodeError(f"cannot decode video {name}: {type(err).__name__}: {err}") from err
    if not frames:
        raise VideoDecodeError(f"cannot decode video {name}: no frames")
    return np.stack(frames), fps


def tensor_to_video(x: torch.Tensor) -> np.ndarray:
    """Float `(3, T, H, W)` in [-1, 1] → uint8 `(T, H, W, 3)`; values outside [-1, 1] are clipped."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[0] != 3 or not x.is_floating_point():
        raise ValueError(
            f"expected a float tensor (3, T, H, W), got {type(x).__name__} "
            f"shape={tuple(getattr(x, 'shape', ()))} dtype={getattr(x, 'dtype', None)}"
        )
    u8 = ((x.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return u8.permute(1, 2, 3, 0).contiguous().numpy()


def video_to_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 `(T, H, W, 3)` → float32 `(3, T, H, W)` in [-1, 1]."""
    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got shape={tuple(x.shape)} dtype={x.dtype}")
    return x.permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


def _as_uint8_frames(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(frames, torch.Tensor) and frames.is_floating_point():
        return tensor_to_video(frames)
    arr = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(
            "expected uint8 frames (T, H, W, 3) or a float tensor (3, T, H, W) in [-1, 1], "
            f"got shape={arr.shape} dtype={arr.dtype}"
        )
    return np.ascontiguousarray(arr)


def write_video(
    path: str | os.PathLike, frames: np.ndarray | torch.Tensor, fps: float = 8.0, crf: int = 12
) -> None:
    """Encode frames to an H.264 mp4 (yuv444p); the same frames give byte-identical files.

    Args:
        path: output file; parent directories are created.
        frames: uint8 `(T, H, W, 3)` RGB (numpy or tensor), or a float tensor `(3, T, H, W)` in [-1, 1].
        fps: frame rate (> 0).
        crf: x264 constant rate factor in [0, 51]; lower is higher quality.
    """
    data = encode_video(frames, fps=fps, crf=crf)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def encode_video(frames: np.ndarray | torch.Tensor, fps: float = 8.0, crf: int = 12) -> bytes:
    """Like `write_video`, but return the mp4 container's bytes."""
    arr = _as_uint8_frames(frames)
    num_frames, height, width, _ = arr.shape
    if num_frames < 1 or height < 1 or width < 1:
        raise ValueError(f"cannot encode an empty video of shape {arr.shape}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in [0, 51], got {crf}")
    codec = av.codec.Codec("libx264", "w")
    pix_fmt = PIX_FMT_444 if any(f.name == PIX_FMT_444 for f in codec.video_formats) else PIX_FMT_420
    if pix_fmt == PIX_FMT_420 and (height % 2 or width % 2):
        raise ValueError(f"yuv420p needs even frame sizes, got height={height} width={width}")
    # A rational rate keeps e.g. 29.97 exact enough; the mp4 muxer stores it as the stream time base.
    rate = round(fps) if float(fps).is_integer() else av.utils.Fraction(fps).limit_denominator(1001)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        # x264's macroblock-tree rate control makes the bytes vary from process to process on short clips (seen
        # with PyAV 18 / libx264 here); without it, and on one thread, the same frames always give the same file.
        stream.options = {"crf": str(crf), "preset": "medium", "x264-params": "mbtree=0"}
        stream.codec_context.thread_count = 1
        for frame in arr:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def resize_and_crop(
    frames: torch.Tensor, height: int, width: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Scale so the short side covers the target, then crop to `(height, width)`.

    Args:
        frames: float `(3, T, H, W)` in [-1, 1].
        height, width: target size.
        generator: draws a random crop offset; None gives the centre crop.

    Returns:
        float `(3, T, height, width)` in [-1, 1] (antialiased bilinear resampling).
    """
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or not frames.is_floating_point():
        raise ValueError(
            f"expected float frames (3, T, H, W), got shape={tuple(getattr(frames, 'shape', ()))} "
            f"dtype={getattr(frames, 'dtype', None)}"
        )
    if height < 1 or width < 1:
        raise ValueError(f"target size must be positive, got height={height} width={width}")
    _, _, h, w = frames.shape
    scale = max(height / h, width / w)
    # ceil (with a tolerance against float noise) so the scaled frame always covers the target.
    new_h = max(height, int(np.ceil(h * scale - 1e-6)))
    new_w = max(width, int(np.ceil(w * scale - 1e-6)))
    x = frames
    if (new_h, new_w) != (h, w):
        x = F.interpolate(
            frames.transpose(0, 1), size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True
        ).transpose(0, 1)
    if generator is None:
        top, left = (new_h - height) // 2, (new_w - width) // 2
    else:
        top = int(torch.randint(0, new_h - height + 1, (1,), generator=generator))
        left = int(torch.randint(0, new_w - width + 1, (1,), generator=generator))
    return x[:, :, top : top + height, left : left + width].clamp(-1.0, 1.0).contiguous()


def valid_frame_count(n: int, chunk: int = 4) -> int:
    """The largest `chunk * k + 1 <= n` (the frame counts a causal video VAE with temporal factor `chunk` takes)."""
    if n < 1:
        raise ValueError(f"need at least 1 frame, got n={n}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got chunk={chunk}")
    return (n - 1) // chunk * chunk + 1


__all__ = [
    "VideoDecodeError",
    "encode_video",
    "read_video",
    "resize_and_crop",
    "tensor_to_video",
    "valid_frame_count",
    "video_to_tensor",
    "write_video",
]

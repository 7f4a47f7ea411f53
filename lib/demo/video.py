"""Video input and output for the demo.

Reading: :func:`open_video` takes a video file (anything FFmpeg/PyAV decodes)
or a folder of images and returns a :class:`VideoReader` that yields RGB uint8
frames; it can be iterated several times (the demo reads the video once for the
front-end and again for rendering).

Writing: :class:`VideoWriter` writes browser-playable H.264 mp4 (yuv420p,
``moov`` atom first) through PyAV's libx264, atomically: frames go to a temp
file in the target folder which replaces the target only when the writer closes
without an error.

Bad input raises :class:`VideoError` (a :class:`lib.errors.UserError`) with one
line naming the file.
"""
from __future__ import annotations

import logging
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

import numpy as np

from lib.errors import MissingAssetError, UserError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_FPS = 30.0  # used when a container states no frame rate, and for image folders


class VideoError(UserError):
    """A video that cannot be read: corrupt, unsupported, or without frames."""


class VideoNotFoundError(MissingAssetError):
    """The video file or image folder does not exist."""


class VideoReader:
    """Frames of a video file or an image folder as RGB uint8 arrays.

    Attributes:
        path: the source.
        fps: frames per second (float; image folders use ``fps`` passed to open_video).
        num_frames: frame count (from the container header or, when it states
            none, counted by demuxing; exact for image folders).
        width, height: frame size in pixels.
    """

    def __init__(self, path: Path, fps: float, num_frames: int, width: int, height: int,
                 images: Optional[List[Path]] = None):
        self.path = Path(path)
        self.fps = float(fps)
        self.num_frames = int(num_frames)
        self.width = int(width)
        self.height = int(height)
        self._images = images

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return (f"VideoReader({str(self.path)!r}, {self.width}x{self.height}, {self.num_frames} frames, "
                f"{self.fps:.3f} fps)")

    def iter_frames(self, start: int = 0, max_frames: Optional[int] = None) -> Iterator[Tuple[int, np.ndarray]]:
        """Yield ``(frame_index, rgb)`` from frame ``start`` on; rgb is (H, W, 3) uint8.

        At most ``max_frames`` frames (None = to the end). Indices count decoded
        frames from 0.
        """
        start = max(int(start), 0)
        stop = None if max_frames is None else start + max(int(max_frames), 0)
        if stop is not None and stop <= start:
            return
        if self._images is not None:
            yield from self._iter_images(start, stop)
        else:
            yield from self._iter_video(start, stop)

    def read_frame(self, index: int) -> np.ndarray:
        """One frame (RGB uint8); decodes from the start for video files, so use sparingly."""
        for _, frame in self.iter_frames(start=index, max_frames=1):
            return frame
        raise VideoError(f"{self.path}: no frame {index} (video has {self.num_frames})")

    def _iter_images(self, start: int, stop: Optional[int]):
        for idx in range(start, len(self._images) if stop is None else min(stop, len(self._images))):
            yield idx, _read_image(self._images[idx])

    def _iter_video(self, start: int, stop: Optional[int]):
        import av

        try:
            container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as err:
            raise VideoError(f"cannot read video {self.path}: {err}") from None
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame-parallel decoding where the codec allows it
            idx = 0
            try:
                for frame in container.decode(stream):
                    if idx >= start:
                        yield idx, _frame_to_rgb(frame)
                    idx += 1
                    if stop is not None and idx >= stop:
                        break
            except av.error.FFmpegError as err:
                # A file that breaks off: keep what decoded, say where it stopped.
                if idx == 0:
                    raise VideoError(f"cannot decode video {self.path}: {err}") from None
                logger.warning("%s: decoding stopped at frame %d: %s", self.path, idx, err)
        finally:
            container.close()


def _frame_to_rgb(frame) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    return np.ascontiguousarray(rgb)


def _read_image(path: Path) -> np.ndarray:
    import cv2

    # np.fromfile + imdecode: cv2.imread cannot open non-ASCII paths on every platform.
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise VideoError(f"cannot read image {path}")
    if img.dtype != np.uint8:  # 16-bit images
        img = (img / (65535.0 if img.dtype == np.uint16 else max(float(img.max()), 1.0)) * 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def open_video(path: Union[str, os.PathLike], fps: float = DEFAULT_FPS) -> VideoReader:
    """Open a video file or an image folder (images sorted by name).

    Args:
        path: video file or folder of images.
        fps: frame rate for image folders (video files keep their own).

    Raises:
        VideoNotFoundError: the path does not exist.
        VideoError: unreadable/corrupt file, no video stream, or no frames.
    """
    path = Path(path)
    if not path.exists():
        raise VideoNotFoundError(f"video not found: {path}")
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not images:
            raise VideoError(f"image folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        first = _read_image(images[0])
        return VideoReader(path, fps, len(images), first.shape[1], first.shape[0], images=images)
    return _open_video_file(path)


def _open_video_file(path: Path) -> VideoReader:
    import av

    if path.stat().st_size == 0:
        raise VideoError(f"video {path} is empty (0 bytes)")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise VideoError(f"cannot read video {path}: {_short(err)}") from None
    try:
        if not container.streams.video:
            raise VideoError(f"{path} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate and float(rate) > 0 else DEFAULT_FPS
        # Decode the first frame: proves the file is readable and gives the true size.
        first = None
        try:
            for frame in container.decode(stream):
                first = frame
                break
        except av.error.FFmpegError as err:
            raise VideoError(f"cannot decode video {path}: {_short(err)}") from None
        if first is None:
            raise VideoError(f"video {path} has no frames")
        width, height = int(first.width), int(first.height)
        num = int(stream.frames or 0)
    finally:
        container.close()
    if num <= 0:
        num = _count_frames(path)
    if num <= 0:
        raise VideoError(f"video {path} has no frames")
    return VideoReader(path, fps, num, width, height)


def _count_frames(path: Path) -> int:
    """Count video packets (no decoding) for containers whose header has no frame count."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return sum(1 for pkt in container.demux(stream) if pkt.size > 0)
    except av.error.FFmpegError:
        return 0


def _chmod_like_new_file(path: str) -> None:
    """mkstemp makes 0600 files; give the result the mode a plain open() would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _short(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


class VideoWriter:
    """Context manager writing RGB frames to a browser-playable H.264 mp4.

    libx264, yuv420p (odd sizes are padded to even by repeating the last
    row/column), ``+faststart``. The file appears at ``path`` only when the
    writer closes without an exception; otherwise the temp file is removed.

    Args:
        path: output .mp4.
        fps: frame rate (the source video's, to keep timing).
        width, height: frame size of the RGB frames passed to :meth:`write`.
        crf: x264 quality (lower = better, 18-28 sensible).
        preset: x264 speed preset.
    """

    def __init__(self, path: Union[str, os.PathLike], fps: float, width: int, height: int,
                 crf: int = 23, preset: str = "veryfast"):
        self.path = Path(path)
        self.fps = float(fps) if fps and fps > 0 else DEFAULT_FPS
        self.width, self.height = int(width), int(height)
        if self.width < 1 or self.height < 1:
            raise ValueError(f"VideoWriter: bad frame size {width}x{height}")
        self.out_width, self.out_height = self.width + self.width % 2, self.height + self.height % 2
        self.crf, self.preset = int(crf), preset
        self.frames_written = 0
        self._container = None
        self._stream = None
        self._tmp: Optional[str] = None

    def __enter__(self) -> "VideoWriter":
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".tmp.mp4", dir=self.path.parent)
        os.close(fd)
        try:
            self._container = av.open(self._tmp, mode="w", format="mp4", options={"movflags": "+faststart"})
            rate = Fraction(self.fps).limit_denominator(1001)
            self._stream = self._container.add_stream("libx264", rate=rate)
            self._stream.width, self._stream.height = self.out_width, self.out_height
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(self.crf), "preset": self.preset}
        except BaseException:
            self._abort()
            raise
        return self

    def write(self, rgb: np.ndarray) -> None:
        """Append one frame: (H, W, 3) RGB uint8 (or (H, W) gray) of the writer's size."""
        import av

        if self._container is None:
            raise RuntimeError("VideoWriter.write outside its 'with' block")
        rgb = np.asarray(rgb)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=-1)
        if rgb.shape[:2] != (self.height, self.width) or rgb.shape[2] != 3:
            raise ValueError(f"VideoWriter: frame shape {rgb.shape}, expected ({self.height}, {self.width}, 3)")
        if rgb.dtype != np.uint8:
            rgb = np.clip(rgb, 0, 255).astype(np.uint8)
        if (self.out_height, self.out_width) != (self.height, self.width):
            rgb = np.pad(rgb, ((0, self.out_height - self.height), (0, self.out_width - self.width), (0, 0)),
                         mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._abort()
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
            _chmod_like_new_file(self._tmp)
            os.replace(self._tmp, self.path)
            self._tmp = None
        except BaseException:
            self._abort()
            raise

    def _abort(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - closing a half-written file may fail; it is removed anyway
                pass
            self._container = None
        if self._tmp and os.path.exists(self._tmp):
            os.unlink(self._tmp)
        self._tmp = None

"""Writing videos: H.264 fragmented MP4 (playable even if the run is killed), optionally a GIF,
encoded on a worker thread while the agent plays on."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

#: x264's superfast preset with its B-frames, look-ahead and macroblock tree back: on recorded Atari
#: panels 30% less encoder time than veryfast for 7% larger files (scripts/bench_record.py).
X264_PARAMS = "bframes=3:rc-lookahead=10:mbtree=1"


def _ffmpeg_writer(path: Path, size: tuple[int, int], fps: int, codec: str, pix_fmt: str, params: list[str]):
    import imageio_ffmpeg

    writer = imageio_ffmpeg.write_frames(str(path), size, fps=fps, codec=codec, pix_fmt_out=pix_fmt,
                                         macro_block_size=16 if codec == "libx264" else 1, quality=None,
                                         bitrate=None, ffmpeg_log_level="error", output_params=params)
    writer.send(None)
    return writer


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """ffmpeg failures (a full disk, a closed pipe) as OSErrors naming the file being written."""
    try:
        yield
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    except RuntimeError as exc:  # imageio-ffmpeg reports a dead ffmpeg as a RuntimeError
        raise OSError(0, str(exc).splitlines()[0], str(path)) from exc


class VideoWriter:
    """Frames to an H.264 fragmented MP4 (each fragment playable on its own), and optionally a half-size GIF.

    Both are encoded by ffmpeg as the frames arrive, so memory stays bounded however long the game,
    and a killed run leaves files that play up to their last frame.
    """

    def __init__(self, path: Path, fps: int, gif: bool = False) -> None:
        self.path = path
        self.fps = fps
        self._writer = None
        self._gif = None
        self.gif_path = path.with_suffix(".gif") if gif else None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB frame; it is padded with black to whole 16-pixel macroblocks if needed."""
        h, w = frame.shape[:2]
        if h % 16 or w % 16:
            padded = np.zeros(((h + 15) // 16 * 16, (w + 15) // 16 * 16, 3), np.uint8)
            padded[:h, :w] = frame
            frame, (h, w) = padded, padded.shape[:2]
        if self._writer is None:
            with _naming(self.path):
                self._writer = _ffmpeg_writer(
                    self.path, (w, h), self.fps, "libx264", "yuv420p",
                    ["-preset", "superfast", "-x264-params", X264_PARAMS, "-threads", "1", "-crf", "27",
                     "-g", str(2 * self.fps),
                     "-movflags", "frag_keyframe+empty_moov+default_base_moof"])
            if self.gif_path is not None:
                with _naming(self.gif_path):
                    self._gif = _ffmpeg_writer(self.gif_path, (w // 2, h // 2), self.fps, "gif", "rgb8",
                                               ["-threads", "1", "-loop", "0"])
        with _naming(self.path):
            self._writer.send(np.ascontiguousarray(frame))
        if self._gif is not None:
            with _naming(self.gif_path):
                self._gif.send(np.ascontiguousarray(frame[: h // 2 * 2: 2, : w // 2 * 2: 2]))
        self.frames += 1

    def close(self) -> None:
        for attr, path in (("_writer", self.path), ("_gif", self.gif_path)):
            writer = getattr(self, attr)
            setattr(self, attr, None)
            if writer is not None:
                with _naming(path):
                    writer.close()


class BackgroundVideo:
    """Renders and encodes video frames on a worker thread while the agent plays the next steps.

    ``submit(render, *args)`` queues ``render(*args)`` (which returns a frame); at most ``depth``
    frames wait. :meth:`close` writes every queued frame before closing, so an interrupted run keeps
    all the frames it produced. A failure in the worker is raised by the next ``submit``/``close``.
    """

    def __init__(self, writer: VideoWriter, depth: int = 8) -> None:
        self.writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="rlexplain-video", daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path:
        return self.writer.path

    @property
    def frames(self) -> int:
        return self.writer.frames

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is None:
                try:
                    render, args = job
                    self.writer.write(render(*args))
                except BaseException as exc:  # reported to the recording thread
                    self._error = exc

    def submit(self, render: Callable[..., np.ndarray], *args) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((render, args))

    def close(self, timeout: float = 60.0) -> None:
        """Write the queued frames and close the files; waits at most ``timeout`` seconds for the worker.

        The worker is stopped by a sentinel put into the queue (never by an unbounded join): a worker
        that has failed drains the queue without rendering, so the sentinel always gets through.
        """
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.writer.close()
        elif self._error is None:
            self._error = TimeoutError(f"the video worker did not finish {self.writer.path} within {timeout:g} s")
        if self._error is not None:
            raise self._error

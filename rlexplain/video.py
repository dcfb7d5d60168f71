"""Writing videos: H.264 fragmented MP4 (playable even if the run is killed), optionally a GIF,
encoded on a worker thread while the agent plays on."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np


class VideoWriter:
    """Frames to an H.264 fragmented MP4 (each fragment playable on its own), and optionally a GIF."""

    def __init__(self, path: Path, fps: int, gif: bool = False) -> None:
        self.path = path
        self.fps = fps
        self._writer = None
        self._gif = None
        self._gif_path = path.with_suffix(".gif") if gif else None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            import imageio_ffmpeg

            h, w = frame.shape[:2]
            self._writer = imageio_ffmpeg.write_frames(
                str(self.path), (w, h), fps=self.fps, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=16,
                quality=None, bitrate=None, ffmpeg_log_level="error",
                output_params=["-preset", "ultrafast", "-threads", "1", "-crf", "23", "-g", str(2 * self.fps),
                               "-movflags", "frag_keyframe+empty_moov+default_base_moof"],
            )
            self._writer.send(None)
            if self._gif_path is not None:
                import imageio.v2 as imageio

                self._gif = imageio.get_writer(self._gif_path, mode="I", duration=1000 / self.fps, loop=0)
        self._writer.send(np.ascontiguousarray(frame))
        if self._gif is not None:
            self._gif.append_data(frame[::2, ::2])
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None
        if self._gif is not None:
            self._gif.close()
            self._gif = None


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

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self.writer.close()
        if self._error is not None:
            raise self._error

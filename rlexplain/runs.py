"""The run folder: its layout, how it is created, written crash-safely, and read back.

This module is the only code that knows the file names of a run. A run folder holds:

``summary.json``      ``"status": "running"`` while recording, replaced atomically at the end with
                      ``"complete"`` or ``"interrupted"``; agent, env, method, seeds, versions, means
``steps.csv``         one row per agent step, flushed as it goes
``episode_<k>.mp4``   the video of episode ``k`` (``.gif`` on request)
``maps/episode_<k>/chunk_<first step>.npz``   per step: ``step``, ``relevance`` (float16, the
                      explained map(s) in observation layout), ``obs`` (uint8), ``frames`` (native
                      RGB), ``ram`` (128 bytes), ``colour_scale``
``plots/``            statistics plots (:mod:`rlexplain.report.plots`)
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import os
import platform
import shutil
import signal
import socket
import sys
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future
from pathlib import Path

import numpy as np

from rlexplain import envs
from rlexplain.errors import RunError, RunInterrupted
from rlexplain.files import ensure_writable_dir, to_json, write_atomically

SUMMARY = "summary.json"
STEPS = "steps.csv"
MAPS = "maps"
PLOTS = "plots"
#: Steps of maps buffered in memory before a chunk is written: if the process is killed (SIGKILL, power
#: loss), the buffer and at most one chunk being written are lost; every other ending writes them out.
CHUNK_STEPS = 16
#: The key in every summary.json rlexplain writes, naming the command: how ``--force`` recognises
#: a folder it may replace.
MARKER = "rlexplain_run"
#: A "running" run whose files have not changed for this long, or whose process is gone, ended without closing.
STALE_SECONDS = 120


def video_path(run_dir: Path, episode: int) -> Path:
    return Path(run_dir) / f"episode_{episode}.mp4"


def maps_dir(run_dir: Path, episode: int) -> Path:
    return Path(run_dir) / MAPS / f"episode_{episode}"


def safe_name(text: str) -> str:
    """``text`` as part of a folder name: letters, digits and ``-_@.+`` kept, anything else ``_``."""
    return "".join(c if c.isalnum() or c in "-_@.+" else "_" for c in str(text))


def default_run_dir(env_id: str, *parts: str, root: str | Path = "runs") -> Path:
    """``runs/<Game>-<part>-<part>...-<YYYYmmdd-HHMMSS>``, e.g. the agent, the method and the target."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / "-".join([envs.game_name(env_id), *(safe_name(p) for p in parts if p), stamp])


def is_run_dir(folder: Path) -> bool:
    """Whether ``folder`` is an rlexplain output: its summary.json (a JSON object) carries :data:`MARKER`, or,
    for runs written before the marker existed, names rlexplain among its versions."""
    try:
        data = json.loads((Path(folder) / SUMMARY).read_text())
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict) and (MARKER in data or "rlexplain" in (data.get("versions") or {})):
        return True
    try:  # comparisons written before they had a summary.json
        return "versions" in json.loads((Path(folder) / "compare.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def prepare_run_dir(out: Path, force: bool, keep: Sequence[str | Path] = ()) -> Path:
    """Create ``out``, or with ``force`` empty an earlier rlexplain output there; fail early if not writable.

    Call it only after every option and input has been checked, so that a bad option never costs the
    old run. ``force`` never empties a folder that is not recognisably an rlexplain output
    (:func:`is_run_dir`), and never deletes the files in ``keep`` (inputs of the new run, such as a
    states file inside the old output folder).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"output {out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise RunError(f"output folder {out} exists and is not empty; pass --force to replace an earlier rlexplain "
                           f"output there, or choose another --out")
        if not is_run_dir(out):
            raise RunError(f"--force refused: {out} is not an rlexplain output folder (no rlexplain summary.json); "
                           f"it may hold other files, so choose another --out")
        kept = {Path(k).resolve() for k in keep if k is not None}
        for item in out.iterdir():
            resolved = item.resolve()
            if resolved in kept:
                continue
            if item.is_dir() and not item.is_symlink():
                if any(k.is_relative_to(resolved) for k in kept):
                    continue  # a kept input lies inside: leave that subfolder
                shutil.rmtree(item)
            else:
                item.unlink()
    try:
        ensure_writable_dir(out)
    except OSError as exc:
        raise RunError(f"cannot write to output folder {out} ({exc.strerror}); choose a writable --out") from exc
    return out


_STEP = {"depth": 0, "pending": None}  # inside atomic_step(): a signal waits until the step is written


def _interruption(name: str) -> BaseException:
    return KeyboardInterrupt() if name == "SIGINT" else RunInterrupted(name)


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """While inside, Ctrl-C raises KeyboardInterrupt and SIGTERM and SIGHUP raise
    :class:`~rlexplain.errors.RunInterrupted` in the main thread, so a run stopped by ``timeout``,
    ``docker stop`` or a scheduler closes its files and says ``interrupted``; a signal that arrives while
    a step is being written (:func:`atomic_step`) takes effect once it is. Outside the main thread
    nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if _STEP["depth"]:
            _STEP["pending"] = name
            return
        raise _interruption(name)

    wanted = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {s: signal.signal(s, handler) for s in wanted}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _STEP.update(depth=0, pending=None)


@contextlib.contextmanager
def atomic_step() -> Iterator[None]:
    """Write one step's CSV row, maps and video frame as a unit: a signal arriving meanwhile is raised after,
    so a clean interrupt never leaves a step in one file and not in another."""
    _STEP["depth"] += 1
    try:
        yield
    finally:
        _STEP["depth"] -= 1
    if _STEP["depth"] == 0 and _STEP["pending"]:
        name, _STEP["pending"] = _STEP["pending"], None
        raise _interruption(name)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """While inside (closing a run's files), Ctrl-C, SIGTERM and SIGHUP are ignored, so a second Ctrl-C
    cannot leave half-written files; the closing code bounds its own waits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in wanted}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """Re-raise an OSError from writing ``path`` (a full disk, a quota) with the path in its message."""
    try:
        yield
    except OSError as exc:
        if exc.filename:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def new_summary(kind: str, command: Sequence[str] | None = None, **fields) -> dict:
    """The first summary of an rlexplain output: the :data:`MARKER` naming the command ``kind``, status
    ``running``, when it started, who writes it (:func:`process_marker`), ``fields``, versions, the command line."""
    return {MARKER: kind, "status": "running", "started": _dt.datetime.now().isoformat(timespec="seconds"),
            "writer": process_marker(), **fields, "versions": versions(),
            "command": list(command) if command else [sys.executable, *sys.argv]}


def ending(error: BaseException | None) -> dict:
    """How a run ended, for its summary: ``complete``; ``interrupted`` (Ctrl-C, SIGTERM, SIGHUP, with the
    signal's name); or ``failed`` with the error."""
    out: dict = {"status": "complete", "finished": _dt.datetime.now().isoformat(timespec="seconds")}
    if error is not None:
        out.update(status="interrupted" if isinstance(error, KeyboardInterrupt) else "failed",
                   error=f"{type(error).__name__}: {error}".strip().rstrip(":"))
        if isinstance(error, RunInterrupted):
            out["signal"] = error.signal_name
    return out


@contextlib.contextmanager
def tracked(run_dir: Path, summary: dict) -> Iterator[dict]:
    """Run the body of a command with its summary kept truthful: written (reserving space) on entry, signals
    turned into interruptions inside, and finally updated with :func:`ending` -- also when the body fails."""
    write_summary(run_dir, summary, reserve=True)
    try:
        with signals_interrupt():
            yield summary
    except BaseException as exc:
        with signals_deferred():
            summary.update(ending(exc))
            write_summary(run_dir, summary)
        raise
    summary.update(ending(None))
    write_summary(run_dir, summary)


def process_marker() -> dict:
    """Who writes a running run: host and process id, so that a reader can tell a live run from a dead one."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def ended_without_closing(run_dir: str | Path, summary: dict) -> bool:
    """A summary still saying ``running`` whose writer is gone: its process no longer exists (same host), or
    its files have not changed for :data:`STALE_SECONDS` (another host)."""
    if summary.get("status") != "running":
        return False
    writer = summary.get("writer") or {}
    if writer.get("host") == socket.gethostname() and isinstance(writer.get("pid"), int):
        try:
            os.kill(writer["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, owned by someone else
            return False
        return False
    files = [Path(run_dir) / SUMMARY, Path(run_dir) / STEPS]
    newest = max((f.stat().st_mtime for f in files if f.exists()), default=0.0)
    return time.time() - newest > STALE_SECONDS


def versions() -> dict[str, str]:
    """Versions of the libraries that decide what an agent sees and does, for provenance."""
    from importlib.metadata import PackageNotFoundError, version

    import ale_py
    import gymnasium
    import stable_baselines3
    import torch

    try:
        ours = version("rlexplain")
    except PackageNotFoundError:  # running from a source tree that is not installed
        ours = "unknown"
    return {"rlexplain": ours, "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "stable_baselines3": stable_baselines3.__version__,
            "gymnasium": gymnasium.__version__, "ale_py": ale_py.__version__}


#: Bytes the first summary of a run reserves on disk (as trailing whitespace), so that the final summary
#: can still be written when the disk has filled up in between.
SUMMARY_RESERVE = 1 << 16


def write_summary(run_dir: Path, summary: dict, reserve: bool = False) -> None:
    """Write ``summary.json`` atomically; ``reserve`` pads it with :data:`SUMMARY_RESERVE` bytes of whitespace.

    If the atomic write fails (a full disk), the summary is written over the old file in place, inside
    the space the padded first summary reserved, so that a run stopped by a full disk still says so.
    """
    path = Path(run_dir) / SUMMARY
    text = to_json(summary)
    if reserve:
        text += " " * SUMMARY_RESERVE + "\n"
    try:
        write_atomically(path, text.encode())
    except OSError:
        payload = text.encode()
        if not path.is_file() or len(payload) > path.stat().st_size:
            raise
        with open(path, "r+b") as f:  # the blocks are already allocated: overwriting needs no free space
            f.write(payload)
            f.write(b" " * (path.stat().st_size - len(payload)))
            f.flush()
            os.fsync(f.fileno())


def read_summary(run_dir: str | Path) -> dict:
    """The run's ``summary.json`` as a dict, or a one-line :class:`RunError`."""
    path = Path(run_dir) / SUMMARY
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise RunError(f"{run_dir} is not an rlexplain run folder (no {SUMMARY})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path} is not valid JSON ({exc}); the run folder is damaged") from exc
    if not isinstance(data, dict):
        raise RunError(f"{path} does not hold a run summary (a JSON object)")
    return data


def read_steps(run_dir: str | Path) -> dict[str, np.ndarray]:
    """``steps.csv`` as columns: numeric columns as float arrays (empty cells NaN), others as str arrays."""
    path = Path(run_dir) / STEPS
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if None not in r.values()]  # a truncated last row is dropped
    if not rows:
        return {}
    out: dict[str, np.ndarray] = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        try:
            out[key] = np.array([float(v) if v != "" else np.nan for v in values])
        except ValueError:
            out[key] = np.array(values)
    return out


#: Levels of the stored relevance on each side of zero: maps are kept as int8 ``round(63 R / max|R|)``
#: per step (6 bits and a sign; error at most 0.8% of the step's largest |R|), with ``relevance_scale``
#: = max|R|. Statistics are computed from the full-precision maps while recording.
RELEVANCE_LEVELS = 63


def quantise(relevance: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """A map as (int8 levels, scale): see :data:`RELEVANCE_LEVELS`."""
    r = np.asarray(relevance, dtype=np.float32)
    scale = np.float32(np.abs(r).max()) if r.size else np.float32(0)
    if not scale > 0:
        return np.zeros(r.shape, np.int8), np.float32(0)
    return np.round(r * (RELEVANCE_LEVELS / scale)).astype(np.int8), scale


class MapWriter:
    """Buffers per-step arrays and writes them as ``chunk_<first step>.npz`` every :data:`CHUNK_STEPS` steps.

    Every array is compressed inside the npz (plain ``np.load`` reads it): Atari screens deflate
    ~100x; relevance is quantised (:func:`quantise`) and bzip2-compressed, which at the same cost
    as deflate level 6 is ~20% smaller and 7x faster than deflate level 9. Readers
    (:func:`iter_maps`, :func:`load_maps`) return it as float32 ``relevance`` again.

    :param pool: an executor (one worker thread is enough) that compresses and writes the chunks
        while the caller goes on playing; zlib and bz2 release the GIL, so this runs on another
        core. One chunk at a time is in flight (the next waits for it), so a killed process loses
        fewer than two chunks. A write error is raised by the next :meth:`add` or by :meth:`close`.
        None: write in the caller's thread.
    """

    STORED = ("colour_scale", "step", "relevance_scale")

    def __init__(self, folder: Path, pool: Executor | None = None) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pool = pool
        self._buffer: dict[str, list[np.ndarray]] = {}
        self._first = 0
        self._pending: list[Future] = []
        #: steps written to disk so far
        self.written = 0

    def add(self, step: int, **arrays: np.ndarray) -> None:
        self._raise_failed()
        if not self._buffer:
            self._first = step
        for key, value in dict(arrays, step=np.asarray(step)).items():
            self._buffer.setdefault(key, []).append(np.asarray(value))
        if len(self._buffer["step"]) >= CHUNK_STEPS:
            self.flush()

    def flush(self) -> None:
        """Hand the buffered steps to the writer (the pool, or write them now)."""
        if not self._buffer:
            return
        buffer, self._buffer = self._buffer, {}
        path = self.folder / f"chunk_{self._first:06d}.npz"
        if self.pool is None:
            self._write(path, buffer)
            return
        while self._pending:  # at most one chunk in flight: a killed process loses < 2 chunks
            self._pending.pop(0).result()
        self._pending.append(self.pool.submit(self._write, path, buffer))

    def close(self) -> None:
        """Flush and wait until every chunk is on disk; raise the first write error."""
        self.flush()
        pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    def _raise_failed(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for future in done:
            future.result()

    def _write(self, path: Path, buffer: dict[str, list[np.ndarray]]) -> None:
        if "relevance" in buffer:
            quantised = [quantise(r) for r in buffer.pop("relevance")]
            buffer["relevance_q"] = [q for q, _ in quantised]
            buffer["relevance_scale"] = [s for _, s in quantised]
        payload = io.BytesIO()
        with zipfile.ZipFile(payload, "w") as archive:
            for key, values in buffer.items():
                data = io.BytesIO()
                np.lib.format.write_array(data, np.stack(values), allow_pickle=False)
                if key in self.STORED:
                    method, level = zipfile.ZIP_STORED, None
                elif key == "relevance_q":
                    method, level = zipfile.ZIP_BZIP2, 9
                else:
                    method, level = zipfile.ZIP_DEFLATED, 9
                archive.writestr(zipfile.ZipInfo(f"{key}.npy"), data.getvalue(), compress_type=method,
                                 compresslevel=level)
        with naming(path):
            write_atomically(path, payload.getvalue())
        self.written += len(buffer["step"])


def map_chunks(run_dir: str | Path, episode: int) -> list[Path]:
    """The map chunk files of one episode, in step order."""
    return sorted(maps_dir(Path(run_dir), episode).glob("chunk_*.npz"))


def iter_maps(run_dir: str | Path, episode: int, keys: Sequence[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The stored per-step arrays of one episode, one chunk at a time (memory bounded by the chunk size).

    :param keys: the arrays to read (all when None); unread arrays are never decompressed.
    """
    for chunk in map_chunks(run_dir, episode):
        with np.load(chunk) as data:
            yield _decoded(data, keys)


def _decoded(data, keys: Sequence[str] | None) -> dict[str, np.ndarray]:
    """A chunk's arrays, with quantised relevance turned back into float32 ``relevance``."""
    wanted = list(keys) if keys is not None else [k for k in data.files if k != "relevance_q"] + ["relevance"]
    out = {}
    for key in dict.fromkeys(wanted):
        if key == "relevance" and "relevance_q" in data.files:
            scale = data["relevance_scale"].astype(np.float32) / RELEVANCE_LEVELS
            q = data["relevance_q"]
            out[key] = q.astype(np.float32) * scale.reshape((-1,) + (1,) * (q.ndim - 1))
        elif key in data.files:
            out[key] = data[key]
    return out


def episodes_on_disk(run_dir: str | Path) -> list[int]:
    """Episodes with a maps folder, in order."""
    folder = Path(run_dir) / MAPS
    found = [int(p.name.split("_")[1]) for p in folder.glob("episode_*") if p.name.split("_")[1].isdigit()]
    return sorted(found)


def load_maps(run_dir: str | Path, episode: int) -> dict[str, np.ndarray]:
    """All stored per-step arrays of one episode of a run, concatenated in step order."""
    chunks = map_chunks(run_dir, episode)
    if not chunks:
        raise RunError(f"no stored maps for episode {episode} in {run_dir}")
    parts: dict[str, list[np.ndarray]] = {}
    for chunk in chunks:
        with np.load(chunk) as data:
            for key, value in _decoded(data, None).items():
                parts.setdefault(key, []).append(value)
    return {k: np.concatenate(v) for k, v in parts.items()}


def run_status(run_dir: str | Path, summary: dict) -> str:
    """The status a reader should believe: the summary's own, or ``ended without closing``."""
    return "ended without closing" if ended_without_closing(run_dir, summary) else str(summary.get("status"))


def repair(run_dir: str | Path) -> dict:
    """Finalise the summary of a run that ended without closing (SIGKILL, power loss, a disk so full that
    not even the reserved summary fitted) from what is on disk, and remove half-written temporary files.

    Per episode it states the counts that survived -- CSV rows, map steps, video frames -- which may
    differ by the few steps that were in flight; the return and length come from the CSV.
    """
    from rlexplain.stats import RunningMeans

    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    if summary.get("status") == "running" and not ended_without_closing(run_dir, summary):
        writer = summary.get("writer") or {}
        raise RunError(f"{run_dir} is still being written (process {writer.get('pid')} on {writer.get('host')}); "
                       f"repair it after it has ended")
    for leftover in run_dir.rglob("*.tmp"):
        leftover.unlink()
    columns = read_steps(run_dir) if (run_dir / STEPS).is_file() else {}
    episode_ids = sorted(set(np.unique(columns.get("episode", np.array([]))).astype(int)) | set(episodes_on_disk(run_dir)))
    previous = {e.get("episode"): e for e in summary.get("episodes", []) if isinstance(e, dict)}
    episodes = []
    for k in episode_ids:
        sel = columns["episode"] == k if columns else np.zeros(0, bool)
        map_steps = sum(len(chunk["step"]) for chunk in iter_maps(run_dir, k, ["step"]))
        video = video_path(run_dir, k)
        frames = None
        if video.is_file():
            try:
                import imageio_ffmpeg

                frames = int(imageio_ffmpeg.count_frames_and_secs(str(video))[0])
            except Exception:  # an mp4 cut before its first fragment: no frame is readable
                frames = 0
        entry = dict(previous.get(k, {"episode": k}))
        entry.update(rows=int(sel.sum()), map_steps=int(map_steps), video_frames=frames, length=int(sel.sum()),
                     status=entry.get("status") if entry.get("status") not in (None, "running") else
                     "ended without closing")
        if sel.any():
            entry["return"] = float(columns["score"][sel][-1])
        episodes.append(entry)
    means = RunningMeans(["relevance_", "frame_share_", "share_", "density_", "entropy", "com_"])
    for i in range(len(columns.get("step", []))):
        means.update({k: float(v[i]) for k, v in columns.items() if v.dtype.kind == "f"})
    if summary.get("status") == "running":
        summary.update(status="interrupted", error="ended without closing (killed, or the machine stopped); "
                                                    "summary rebuilt from the files by `rlexplain stats --repair`")
    summary.update(episodes=episodes, steps=int(len(columns.get("step", []))), means=means.means(),
                   repaired=_dt.datetime.now().isoformat(timespec="seconds"))
    write_summary(run_dir, summary)
    return summary

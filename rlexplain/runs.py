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

import csv
import datetime as _dt
import io
import json
import platform
import shutil
import zipfile
from pathlib import Path

import numpy as np

from rlexplain import envs
from rlexplain.errors import RunError
from rlexplain.files import write_atomically, write_json_atomically

SUMMARY = "summary.json"
STEPS = "steps.csv"
MAPS = "maps"
PLOTS = "plots"
#: Steps of maps buffered in memory before a chunk is written.
CHUNK_STEPS = 256


def video_path(run_dir: Path, episode: int) -> Path:
    return Path(run_dir) / f"episode_{episode}.mp4"


def maps_dir(run_dir: Path, episode: int) -> Path:
    return Path(run_dir) / MAPS / f"episode_{episode}"


def default_run_dir(env_id: str, agent_name: str, root: str | Path = "runs") -> Path:
    """``runs/<Game>-<agent>-<YYYYmmdd-HHMMSS>``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_@." else "_" for c in agent_name)
    return Path(root) / f"{envs.game_name(env_id)}-{safe}-{stamp}"


def prepare_run_dir(out: Path, force: bool) -> Path:
    """Create ``out``; refuse a non-empty one unless ``force``; fail early if it is not writable."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"output {out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise RunError(f"output folder {out} exists and is not empty; pass --force to overwrite it or "
                           f"choose another --out")
        for item in out.iterdir():
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunError(f"cannot write to output folder {out} ({exc.strerror}); choose a writable --out") from exc
    return out


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


def write_summary(run_dir: Path, summary: dict) -> None:
    write_json_atomically(Path(run_dir) / SUMMARY, summary)


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


class MapWriter:
    """Buffers per-step arrays and writes them as ``chunk_<first step>.npz`` every :data:`CHUNK_STEPS` steps.

    Relevance is stored uncompressed (float16 noise compresses poorly and slowly); frames,
    observations and RAM are deflated (Atari screens compress ~100x at little cost).
    """

    STORED = ("relevance", "colour_scale", "step")

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._buffer: dict[str, list[np.ndarray]] = {}
        self._first = 0

    def add(self, step: int, **arrays: np.ndarray) -> None:
        if not self._buffer:
            self._first = step
        for key, value in dict(arrays, step=np.asarray(step)).items():
            self._buffer.setdefault(key, []).append(np.asarray(value))
        if len(self._buffer["step"]) >= CHUNK_STEPS:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        payload = io.BytesIO()
        with zipfile.ZipFile(payload, "w") as archive:
            for key, values in self._buffer.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.stack(values), allow_pickle=False)
                method = zipfile.ZIP_STORED if key in self.STORED else zipfile.ZIP_DEFLATED
                archive.writestr(zipfile.ZipInfo(f"{key}.npy"), buffer.getvalue(), compress_type=method)
        write_atomically(self.folder / f"chunk_{self._first:06d}.npz", payload.getvalue())
        self._buffer = {}


def map_chunks(run_dir: str | Path, episode: int) -> list[Path]:
    """The map chunk files of one episode, in step order."""
    return sorted(maps_dir(Path(run_dir), episode).glob("chunk_*.npz"))


def load_maps(run_dir: str | Path, episode: int) -> dict[str, np.ndarray]:
    """All stored per-step arrays of one episode of a run, concatenated in step order."""
    chunks = map_chunks(run_dir, episode)
    if not chunks:
        raise RunError(f"no stored maps for episode {episode} in {run_dir}")
    parts: dict[str, list[np.ndarray]] = {}
    for chunk in chunks:
        with np.load(chunk) as data:
            for key in data.files:
                parts.setdefault(key, []).append(data[key])
    return {k: np.concatenate(v) for k, v in parts.items()}

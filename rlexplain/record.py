"""Recording gameplay with relevance: videos, per-step statistics and the maps to re-plot them.

A run folder (``runs/<Game>-<agent>-<YYYYmmdd-HHMMSS>/`` unless ``out`` is given) holds:

``episode_<k>.mp4``      H.264 video, fragmented MP4 (playable even if the run is killed); ``.gif`` on request
``steps.csv``            one row per agent step, flushed as it goes
``summary.json``         ``"status": "running"`` while recording, replaced atomically at the end
                         with ``"complete"`` or ``"interrupted"``
``maps/episode_<k>/chunk_<nnnnn>.npz``   per step: ``step``, ``relevance`` (float16, the explained
                         map(s) in observation layout), ``obs`` (uint8 84x84x4), ``frames`` (native
                         210x160 RGB), ``ram`` (128 bytes), ``colour_scale``
``plots/``               statistics plots (:mod:`rlexplain.plots`)

Row ``t`` and video frame ``t`` show the observation ``o_t``, the action ``a_t`` chosen from it, its
relevance, and the reward and score obtained by ``a_t``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import platform
import shutil
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlexplain import envs, render, stats
from rlexplain.agents import Agent, AgentError, default_agent_for, load_agent
from rlexplain.explain import Explainer
from rlexplain.objects import ObjectExtractor, extractor_for

CHUNK_STEPS = 256
BASE_COLUMNS = ["episode", "step", "action", "action_name", "reward", "score", "lives"]


class RecordError(RuntimeError):
    """Bad recording options or an unusable output folder."""


def default_run_dir(env_id: str, agent_name: str, root: str | Path = "runs") -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_@." else "_" for c in agent_name)
    return Path(root) / f"{envs.game_name(env_id)}-{safe}-{stamp}"


def prepare_run_dir(out: Path, force: bool) -> Path:
    """Create ``out``; refuse a non-empty one unless ``force``; fail early if it is not writable."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RecordError(f"output {out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise RecordError(f"output folder {out} exists and is not empty; pass --force to overwrite it or "
                              f"choose another --out")
        for item in out.iterdir():
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RecordError(f"cannot write to output folder {out} ({exc.strerror}); choose a writable --out") from exc
    return out


def write_json_atomically(path: Path, data: Any) -> None:
    """Write strict JSON (NaN becomes null) to a temporary file, then rename it over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_finite(data), indent=2, default=_json_default, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _finite(o: Any) -> Any:
    if isinstance(o, float):
        return o if np.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if np.isnan(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return repr(o)


def versions() -> dict[str, str]:
    import ale_py
    import gymnasium
    import stable_baselines3
    import torch

    from rlexplain import __version__

    return {"rlexplain": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "stable_baselines3": stable_baselines3.__version__,
            "gymnasium": gymnasium.__version__, "ale_py": ale_py.__version__}


class VideoWriter:
    """Frames to an H.264 fragmented MP4 (each fragment playable on its own), and optionally a GIF."""

    def __init__(self, path: Path, fps: int, gif: bool) -> None:
        import imageio_ffmpeg

        self.path = path
        self.fps = fps
        self._writer = None
        self._gif = None
        self._gif_path = path.with_suffix(".gif") if gif else None
        self._ffmpeg = imageio_ffmpeg
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            h, w = frame.shape[:2]
            self._writer = self._ffmpeg.write_frames(
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
        import queue
        import threading

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

    def submit(self, render, *args) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((render, args))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self.writer.close()
        if self._error is not None:
            raise self._error


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
        path = self.folder / f"chunk_{self._first:06d}.npz"
        tmp = path.with_name(path.name + ".tmp")
        with zipfile.ZipFile(tmp, "w") as archive:
            for key, values in self._buffer.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.stack(values), allow_pickle=False)
                method = zipfile.ZIP_STORED if key in self.STORED else zipfile.ZIP_DEFLATED
                archive.writestr(zipfile.ZipInfo(f"{key}.npy"), buffer.getvalue(), compress_type=method)
        os.replace(tmp, path)
        self._buffer = {}


def load_maps(run_dir: str | Path, episode: int) -> dict[str, np.ndarray]:
    """All stored per-step arrays of one episode of a run, concatenated in step order."""
    folder = Path(run_dir) / "maps" / f"episode_{episode}"
    chunks = sorted(folder.glob("chunk_*.npz"))
    if not chunks:
        raise FileNotFoundError(f"no stored maps for episode {episode} in {run_dir}")
    parts: dict[str, list[np.ndarray]] = {}
    for chunk in chunks:
        with np.load(chunk) as data:
            for key in data.files:
                parts.setdefault(key, []).append(data[key])
    return {k: np.concatenate(v) for k, v in parts.items()}


@dataclass
class RecordResult:
    """What :func:`record` produced: the run folder and its final summary."""

    run_dir: Path
    summary: dict = field(default_factory=dict)


def _parse_target(action: str | int, agent: Agent) -> str:
    text = str(action)
    if text in ("chosen", "all", "contrastive"):
        return text
    if text.lstrip("-").isdigit() and 0 <= int(text) < agent.n_actions:
        return text
    if text.upper() in agent.action_names:
        return str(agent.action_names.index(text.upper()))
    raise RecordError(f"unknown --action {action!r}: expected chosen, all, contrastive, an index 0..{agent.n_actions - 1}"
                      f" or an action name ({', '.join(agent.action_names)})")


def record(env: str | None = None, agent: str | Agent | None = None, *, episodes: int = 1,
           max_steps: int = envs.MAX_EPISODE_STEPS, seed: int = 0, composite: str = "epsilon_plus_flat",
           action: str | int = "chosen", deterministic: bool = True, fps: int = 15, gif: bool = False,
           out: str | Path | None = None, force: bool = False, show_frames: bool = False, boxes: bool = False,
           video: bool = True, plots: bool = True, progress: bool = True, threads: int | None = 1,
           command: Sequence[str] | None = None) -> RecordResult:
    """Play full games with an agent, explaining every step; write video, statistics and maps.

    :param env: a game name or env id (``Breakout``); defaults to the agent's own game.
    :param agent: an :class:`Agent`, a path, an rl-zoo folder or a bundled name; defaults to the
        game's bundled agent (``breakout-dqn`` for Breakout).
    :param episodes: full games to play. :param max_steps: cap on agent steps per game.
    :param seed: seeds the env (game ``k`` uses ``seed + k``) and the agent's own randomness.
    :param composite: LRP composite, or ``gradient`` / ``gradient_x_input``.
    :param action: ``chosen`` (the action taken), ``all``, ``contrastive``, or an action index/name.
    :param deterministic: greedy actions; False for the agent's stochastic policy.
    :param fps: video frame rate (15 = real time: the game shows 15 agent steps per second).
    :param gif: also write a half-size GIF. :param out: the run folder. :param force: overwrite a non-empty one.
    :param show_frames: show the four stacked input frames, each with its own relevance.
    :param boxes: outline the RAM-derived object boxes in the video.
    :param video: False to skip videos (statistics and maps only).
    :param plots: write ``plots/`` at the end (:func:`rlexplain.plots.plot_run`).
    :param threads: torch threads while recording (1: batch-1 inference gains nothing from more,
        and the video encoder runs on the other core); None leaves torch's setting alone.
    :returns: the run folder and summary. The summary says ``interrupted`` if the run was stopped
        (Ctrl-C, crash, full disk); everything written until then stays on disk and the exception is re-raised.
    """
    if episodes < 1 or max_steps < 1 or fps < 1:
        raise RecordError("episodes, max_steps and fps must be positive")
    if agent is None:
        if env is None:
            raise RecordError("give --env (e.g. --env Breakout) or --agent")
        agent = default_agent_for(envs.resolve_env_id(env))
        if agent is None:
            raise RecordError(f"no bundled agent for {envs.game_name(envs.resolve_env_id(env))}; pass --agent "
                              f"(an SB3 .zip or rl-zoo run folder), or see `rlexplain agents`")
    if not isinstance(agent, Agent):
        agent = load_agent(agent, env=env)
    elif env is not None:
        agent.check_env(agent.make_env(env, max_episode_steps=None))
    env_id = envs.resolve_env_id(env) if env is not None else agent.env_id
    if env_id is None:
        raise AgentError(f"agent {agent.name} does not say which game it plays; pass --env")
    target = _parse_target(action, agent)
    explainer = Explainer(agent, composite)
    run_dir = prepare_run_dir(Path(out) if out else default_run_dir(env_id, agent.name), force)
    objects = extractor_for(env_id)
    recorder = _Recorder(run_dir, agent, explainer, env_id, objects, target, deterministic, fps, gif, show_frames,
                         boxes, video)
    recorder.summary.update(seed=seed, episodes_requested=episodes, max_steps=max_steps,
                            command=list(command) if command else [sys.executable, *sys.argv])
    recorder.start()
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for episode in range(episodes):
            recorder.play(episode, seed, max_steps, progress)
    except BaseException as exc:
        recorder.finish("interrupted", exc)
        raise
    finally:
        torch.set_num_threads(previous_threads)
    recorder.finish("complete")
    if plots:
        from rlexplain.plots import plot_run

        plot_run(run_dir)
    return RecordResult(run_dir, recorder.summary)


class _Recorder:
    """The recording loop and its writers (one instance per run)."""

    def __init__(self, run_dir: Path, agent: Agent, explainer: Explainer, env_id: str, objects: ObjectExtractor,
                 target: str, deterministic: bool, fps: int, gif: bool, show_frames: bool, boxes: bool,
                 video: bool) -> None:
        self.run_dir, self.agent, self.explainer, self.env_id = run_dir, agent, explainer, env_id
        self.objects, self.target, self.deterministic = objects, target, deterministic
        self.fps, self.gif, self.show_frames, self.boxes, self.video = fps, gif, show_frames, boxes, video
        self.colour = render.ColourScale()
        self.means = stats.RunningMeans(["relevance_", "frame_share_", "share_", "density_", "entropy", "com_"])
        self.steps = 0
        self.episodes: list[dict] = []
        names = agent.action_names
        self.columns = BASE_COLUMNS + [f"value_{n}" for n in names] + list(
            stats.step_statistics(np.zeros((84, 84, agent.frame_stack), np.float32),
                                  objects.masks(None, agent.frame_stack) if objects else None).keys()) + ["colour_scale"]
        method = explainer.describe()
        self.summary: dict[str, Any] = {
            "status": "running", "started": _dt.datetime.now().isoformat(timespec="seconds"),
            "env_id": env_id, "game": envs.game_name(env_id), "agent": agent.describe(),
            "method": method, "composite": method.get("name", method["method"]),
            "target": target, "deterministic": deterministic,
            "colour_scale": {"kind": "peak-hold of the 99.5th percentile of |R| summed over the stacked frames",
                             "decay": self.colour.decay, "quantile": self.colour.quantile},
            "value_columns": "Q-values" if agent.output_kind == "q_values" else "action probabilities",
            "objects": objects.describe() if objects else None,
            "notes": _method_notes(method),
            "versions": versions(), "episodes": [],
        }
        self._csv_file = None
        self._csv = None

    def start(self) -> None:
        write_json_atomically(self.run_dir / "summary.json", self.summary)
        self._csv_file = open(self.run_dir / "steps.csv", "w", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=self.columns, extrasaction="ignore")
        self._csv.writeheader()
        self._csv_file.flush()

    def play(self, episode: int, seed: int, max_steps: int, progress: bool) -> None:
        from tqdm.auto import tqdm

        agent = self.agent
        env = agent.make_env(self.env_id, max_episode_steps=max_steps)
        agent.seed(seed + episode)
        obs, _ = env.reset(seed=seed + episode)
        ale = env.unwrapped.ale
        layout = self._layout()
        video = (BackgroundVideo(VideoWriter(self.run_dir / f"episode_{episode}.mp4", self.fps, self.gif))
                 if self.video else None)
        maps = MapWriter(self.run_dir / "maps" / f"episode_{episode}")
        history: list[np.ndarray] = []  # RAM of the last frame_stack steps, for per-frame object masks
        score, step, lives_start = 0.0, 0, ale.lives()
        record = {"episode": episode, "seed": seed + episode, "return": 0.0, "length": 0, "status": "running"}
        self.episodes.append(record)
        bar = tqdm(desc=f"episode {episode}", unit="step", disable=not progress, leave=False)
        try:
            while True:
                explanation = self.explainer.step(obs, self.deterministic, self.target)
                a = int(explanation.actions[0])
                relevance = explanation.relevance  # one observation: no batch axis
                chosen_map = relevance[a] if self.target == "all" else relevance
                frame = ale.getScreenRGB()
                ram = ale.getRAM().copy()
                lives = ale.lives()
                history = (history + [ram])[-agent.frame_stack:]
                masks = self.objects.masks(history, agent.frame_stack) if self.objects else None
                next_obs, reward, terminated, truncated, _ = env.step(a)
                score += float(reward)
                values = self._values(explanation.outputs[0])
                scale = self.colour.update(chosen_map.sum(-1))  # the video shows the map summed over frames
                row = {"episode": episode, "step": step, "action": a, "action_name": agent.action_names[a],
                       "reward": float(reward), "score": score, "lives": lives, "colour_scale": scale}
                row.update({f"value_{n}": float(v) for n, v in zip(agent.action_names, values)})
                row.update(stats.step_statistics(chosen_map, masks))
                self._csv.writerow({k: _csv_value(v) for k, v in row.items()})
                self._csv_file.flush()
                self.means.update(row)
                self.steps += 1
                maps.add(step, relevance=torch.from_numpy(relevance).half().numpy(), obs=obs, frames=frame, ram=ram,
                         colour_scale=np.float32(scale))
                if video is not None:
                    video.submit(self._frame, layout, frame, obs, relevance, chosen_map, scale, values, a,
                                 {"step": step, "score": f"{score:g}", "lives": lives,
                                  "action": agent.action_names[a]}, list(history))
                step += 1
                record.update({"return": score, "length": step})
                bar.update(1)
                obs = next_obs
                if terminated or truncated:
                    record["end"] = "game over" if terminated else f"capped at {max_steps} steps"
                    break
            record["status"] = "complete"
        finally:
            bar.close()
            record["lives_lost"] = int(lives_start - ale.lives())
            maps.flush()
            if video is not None:
                video.close()
                record["video"] = video.path.name
                record["video_frames"] = video.frames
            env.close()

    def _values(self, outputs: np.ndarray) -> np.ndarray:
        if self.agent.output_kind == "q_values":
            return outputs
        e = np.exp(outputs - outputs.max())
        return e / e.sum()

    def _layout(self) -> render.FrameLayout:
        agent = self.agent
        if self.target == "all":
            strip, labels = agent.n_actions, agent.action_names
        elif self.show_frames:
            strip, labels = agent.frame_stack, [f"t-{agent.frame_stack - 1 - i}" for i in range(agent.frame_stack)]
        else:
            strip, labels = 0, []
        label = "Q-values" if agent.output_kind == "q_values" else "probabilities"
        return render.FrameLayout(agent.action_names, agent.name, strip, labels, label)

    def _frame(self, layout: render.FrameLayout, frame: np.ndarray, obs: np.ndarray, relevance: np.ndarray,
               chosen_map: np.ndarray, scale: float, values: np.ndarray, action: int, info: dict,
               history: list[np.ndarray]) -> np.ndarray:
        game = render.upscale(render.overlay(frame, render.to_native(chosen_map.sum(-1)), scale))
        if self.boxes and self.objects:
            render.draw_boxes(game, self.objects.boxes(history[-1]), render.SCALE)
        tiles: list[np.ndarray] = []
        if self.target == "all":
            tiles = [render.tile_image(obs[..., -1], relevance[k].sum(-1), scale) for k in range(len(relevance))]
        elif self.show_frames:
            # one frame carries about a quarter of the summed map: a matching scale keeps tiles comparable
            per_frame = scale / obs.shape[-1]
            tiles = [render.tile_image(obs[..., i], chosen_map[..., i], per_frame) for i in range(obs.shape[-1])]
        return layout.compose(game, values, action, info, tiles)

    def finish(self, status: str, error: BaseException | None = None) -> None:
        if self._csv_file is not None and not self._csv_file.closed:
            self._csv_file.close()
        self.summary["status"] = status
        self.summary["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
        if error is not None:
            self.summary["error"] = f"{type(error).__name__}: {error}".strip().rstrip(":")
        self.summary["episodes"] = self.episodes
        returns = [e["return"] for e in self.episodes if e.get("status") == "complete"]
        self.summary["mean_return"] = float(np.mean(returns)) if returns else None
        self.summary["steps"] = self.steps
        self.summary["means"] = self.means.means()
        try:
            write_json_atomically(self.run_dir / "summary.json", self.summary)
        except OSError:
            pass  # e.g. a full disk: the "running" summary and everything flushed before stay on disk


def _method_notes(method: dict) -> list[str]:
    """Caveats of the chosen method (``Explainer.describe()``) that change how the statistics read."""
    notes = []
    rules = list(method.get("assigned", {}).values())
    if rules and rules[0].startswith("Flat"):
        notes.append("the first layer uses the Flat rule, which spreads relevance uniformly over each receptive "
                     "field without looking at the input: all stacked frames get the same map, so frame_share_* "
                     "is 0.25 by construction; use epsilon_gamma_box or epsilon_plus to compare frames")
    return notes


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.6g}"
    return v

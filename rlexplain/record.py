"""Recording gameplay with relevance: the recording loop.

:func:`record` plays full games with an agent, explains every step and writes a run folder
(layout in :mod:`rlexplain.runs`): video, per-step statistics (``steps.csv``), the maps needed to
re-plot, and a ``summary.json`` that says how the run ended.

Row ``t`` and video frame ``t`` show the observation ``o_t``, the action ``a_t`` chosen from it, its
relevance, and the reward and score obtained by ``a_t``.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlexplain import devices, envs, render, runs, stats
from rlexplain.agents import Agent, default_agent_for, hub, load_agent
from rlexplain.catalog import DEFAULT_METHOD, DEFAULT_METHOD_REASON
from rlexplain.devices import resolve_device
from rlexplain.errors import AgentError, RunError
from rlexplain.explainer import BASELINES, Explainer, Explanation, Target, parse_target
from rlexplain.objects import ObjectExtractor, category_colour, extractor_for
from rlexplain.video import BackgroundVideo, VideoWriter

BASE_COLUMNS = ["episode", "step", "action", "action_name", "reward", "score", "lives"]


@dataclass
class RecordOptions:
    """How to record (everything but the agent and the env).

    :ivar episodes: full games to play. :ivar max_steps: cap on agent steps per game.
    :ivar seed: seeds the env (game ``k`` uses ``seed + k``) and the agent's own randomness (game ``k``'s
        generator is seeded with ``seed + k`` too).
    :ivar n_envs: games played side by side, explained in one batched call per step; game ``k``
        starts when a slot frees up. Each game's rows, maps and video are those of recording it alone
        (up to float32 rounding of the batched arithmetic, ~1e-7 relative).
    :ivar composite: the explanation method (:data:`rlexplain.explainer.METHODS`).
    :ivar action: the explained target (:func:`rlexplain.explainer.parse_target`): ``chosen``,
        ``all``, ``contrastive``, or an action index / name.
    :ivar deterministic: greedy actions; False for the agent's stochastic policy.
    :ivar fps: video frame rate (15 = real time: the game shows 15 agent steps per second).
    :ivar gif: also write a half-size GIF. :ivar video: False to skip videos.
    :ivar maps: False to store no maps (``maps/``): statistics, video and summary only; the mean
        heatmap plot, the viewer and ``strategies`` need the maps.
    :ivar show_frames: show the stacked input frames, each with its own relevance.
    :ivar boxes: outline the RAM-derived object boxes in the video.
    :ivar progress: show a progress bar.
    :ivar device: where explanations run (``cpu``, ``cuda``, ``cuda:N``, ``auto``); the env, statistics
        and video stay on the CPU. :ivar tf32: allow TF32 on CUDA (off: float32 as on the CPU).
    :ivar threads: torch threads while recording (1: batch-1 inference gains nothing from more,
        and the video encoder runs on the other core); None leaves torch's setting alone.
    """

    episodes: int = 1
    max_steps: int = envs.MAX_EPISODE_STEPS
    seed: int = 0
    n_envs: int = 1
    composite: str = DEFAULT_METHOD
    action: str | int = "chosen"
    deterministic: bool = True
    fps: int = 15
    gif: bool = False
    video: bool = True
    maps: bool = True
    show_frames: bool = False
    boxes: bool = False
    progress: bool = True
    device: str = "cpu"
    tf32: bool = False
    threads: int | None = 1

    def check(self) -> None:
        """Raise :class:`RunError` naming the first option out of range."""
        if self.composite in BASELINES:
            raise RunError(f"--composite {self.composite} is an evaluation baseline, not an explanation; use it in "
                           f"`rlexplain evaluate`")
        for name in ("episodes", "max_steps", "fps", "n_envs"):
            if getattr(self, name) < 1:
                raise RunError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        resolve_device(self.device)
        if self.seed < 0:
            raise RunError(f"--seed must be >= 0 (gymnasium seeds are non-negative), got {self.seed}")


@dataclass
class RecordResult:
    """What :func:`record` produced: the run folder and its final summary."""

    run_dir: Path
    summary: dict = field(default_factory=dict)


def record(env: str | None = None, agent: str | Agent | None = None, options: RecordOptions | None = None, *,
           out: str | Path | None = None, force: bool = False, command: Sequence[str] | None = None,
           **option_values: Any) -> RecordResult:
    """Play full games with an agent, explaining every step; write video, statistics and maps.

    :param env: a game name or env id (``Breakout``); defaults to the agent's own game.
    :param agent: an :class:`Agent`, a path, an rl-zoo folder or a bundled name; defaults to the
        game's bundled agent (``breakout-dqn`` for Breakout).
    :param options: a :class:`RecordOptions`; or give its fields as keywords (``episodes=2``, ...).
    :param out: the run folder (default ``runs/<Game>-<agent>-<time>``). :param force: overwrite a non-empty one.
    :param command: the command line to record in the summary (default: ``sys.argv``).
    Plots are drawn from the run folder afterwards (:func:`rlexplain.report.plots.plot_run`; the
    ``record`` command does it for you).

    :returns: the run folder and summary. The summary says ``interrupted`` if the run was stopped
        (Ctrl-C, crash, full disk); everything written until then stays on disk and the exception is re-raised.
    """
    if options is not None and option_values:
        raise TypeError("give options= or keyword options, not both")
    try:
        options = options or RecordOptions(**option_values)
    except TypeError as exc:
        raise TypeError(f"record(): {exc}; the options are the fields of RecordOptions") from exc
    options.check()
    if agent is None:
        if env is None:
            raise RunError("give --env (e.g. --env Breakout) or --agent")
        agent = default_agent_for(envs.resolve_env_id(env))
        if agent is None:
            game = envs.game_name(envs.resolve_env_id(env))
            repos = hub.hub_repos(game)
            hint = f"--agent hf:{repos[0]} (the RL Zoo's agent on the Hugging Face Hub)" if repos else \
                "--agent hf:ORG/REPO (a Hugging Face Hub repository)"
            raise RunError(f"no bundled agent for {game}; pass {hint}, an SB3 .zip or an rl-zoo run folder "
                           f"(see `rlexplain games`)")
    if not isinstance(agent, Agent):
        agent = load_agent(agent, env=env)
    elif env is not None:
        agent.make_env(env, max_episode_steps=None).close()  # checks that the agent fits the game
    env_id = envs.resolve_env_id(env) if env is not None else agent.env_id
    if env_id is None:
        raise AgentError(f"agent {agent.name} does not say which game it plays; pass --env")
    target = parse_target(options.action, agent)
    if target.mode == "value":
        raise RunError("record explains actions (chosen, all, contrastive, an index or a name), not the value")
    if target.mode == "all" and options.show_frames:
        raise RunError("--frames shows the stacked frames of one map; with --action all there is one map per action")
    explainer = Explainer(agent, options.composite, device=options.device)
    default_dir = runs.default_run_dir(env_id, agent.name, options.composite, target.label(agent.action_names))
    run_dir = runs.prepare_run_dir(Path(out) if out else default_dir, force, keep=[agent.path])
    recorder = _Recorder(run_dir, agent, explainer, env_id, extractor_for(env_id), target, options, command)
    previous_threads = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        with runs.signals_interrupt(), devices.precision(options.tf32):
            recorder.start()
            recorder.play()
    except BaseException as exc:
        with runs.signals_deferred():
            recorder.finish(exc)
        raise
    finally:
        torch.set_num_threads(previous_threads)
    recorder.finish()
    return RecordResult(run_dir, recorder.summary)


@dataclass
class _Game:
    """One episode being played in a slot: its env, writers, random generator and running totals."""

    episode: int
    env: Any
    record: dict
    rng: np.random.Generator
    colour: render.ColourScale
    obs: np.ndarray | None = None
    video: BackgroundVideo | None = None
    maps: runs.MapWriter | None = None
    history: list[np.ndarray] = field(default_factory=list)  # RAM of the last frame_stack steps (object masks)
    score: float = 0.0
    step: int = 0
    lives_start: int = 0


class _Recorder:
    """The recording loop and its writers (one instance per run)."""

    def __init__(self, run_dir: Path, agent: Agent, explainer: Explainer, env_id: str,
                 objects: ObjectExtractor | None, target: Target, options: RecordOptions,
                 command: Sequence[str] | None = None) -> None:
        self.run_dir, self.agent, self.explainer, self.env_id = run_dir, agent, explainer, env_id
        self.objects, self.target, self.options = objects, target, options
        self.means = stats.RunningMeans(["relevance_", "frame_share_", "share_", "density_", "entropy", "com_"])
        self.steps = 0
        self.episodes: list[dict] = []
        names = agent.action_names
        categories = list(objects.categories) if objects else None
        self.columns = (BASE_COLUMNS + [f"value_{n}" for n in names]
                        + stats.statistic_columns(agent.frame_stack, categories) + ["colour_scale"])
        method = explainer.describe()
        self.summary: dict[str, Any] = runs.new_summary("record", command, **{
            "env_id": env_id, "game": envs.game_name(env_id), "agent": agent.describe(),
            "method": method, "composite": method.get("name", method["method"]),
            "target": target.label(names), "deterministic": options.deterministic,
            "colour_scale": {"kind": "per frame: the 99.5th percentile of |R| (summed over the stacked frames) of "
                                     "each step reaches full colour; the scale is printed on the video's colour bar "
                                     "and stored in steps.csv (colour_scale)",
                             "decay": render.ColourScale.decay, "quantile": render.ColourScale.quantile},
            "value_columns": "Q-values" if agent.output_kind == "q_values" else "action probabilities",
            "objects": objects.describe() if objects else None,
            "notes": _method_notes(method),
            "method_choice": DEFAULT_METHOD_REASON if options.composite == DEFAULT_METHOD else
            "chosen by the user (--composite)",
            "seed": options.seed, "episodes_requested": options.episodes, "max_steps": options.max_steps,
            "n_envs": options.n_envs, "device": devices.describe(explainer.device, options.tf32),
            "options": asdict(options), "episodes": [],
        })
        self._csv_file = None
        self._csv = None
        self._layout = self._make_layout()
        # one thread compresses and writes the map chunks of every game while the games go on
        self._map_pool = ThreadPoolExecutor(1, thread_name_prefix="rlexplain-maps")

    def start(self) -> None:
        runs.write_summary(self.run_dir, self.summary, reserve=True)
        self._csv_file = open(self.run_dir / runs.STEPS, "w", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=self.columns, extrasaction="ignore")
        self._csv.writeheader()
        self._csv_file.flush()

    def play(self) -> None:
        """Play every episode, ``n_envs`` at a time, explaining each step of all running games in one call."""
        from tqdm.auto import tqdm

        options = self.options
        upcoming = iter(range(options.episodes))
        games: list[_Game] = []
        bar = tqdm(desc=f"0/{options.episodes} episodes done", unit="step", disable=not options.progress,
                   leave=False, dynamic_ncols=True, bar_format="{desc}: {n_fmt} steps [{elapsed}, {rate_fmt}]")
        try:
            for episode in itertools.islice(upcoming, options.n_envs):
                games.append(self._open(episode))
            while games:
                explanation = self.explainer.step(np.stack([g.obs for g in games]), options.deterministic,
                                                  self.target, rngs=[g.rng for g in games])
                running = []
                for i, game in enumerate(games):
                    if self._advance(game, explanation, i):
                        running.append(game)
                        continue
                    game.record["status"] = "complete"
                    self._close(game)
                    following = next(upcoming, None)
                    if following is not None:
                        running.append(self._open(following))
                bar.update(len(games))
                games = running
                bar.set_description_str(self._progress(games), refresh=False)
        except BaseException:
            with runs.signals_deferred():
                bar.close()
                for game in games:
                    try:
                        self._close(game)
                    except Exception as exc:  # noqa: BLE001 -- the first error is raised; every game is closed
                        game.record["close_error"] = f"{type(exc).__name__}: {exc}"
            raise
        bar.close()

    def _progress(self, games: list[_Game]) -> str:
        done = sum(e["status"] != "running" for e in self.episodes)
        playing = ", ".join(str(g.episode + 1) for g in games)
        return f"{done}/{self.options.episodes} episodes done" + (f", playing {playing}" if playing else "")

    def _open(self, episode: int) -> _Game:
        """Start episode ``episode`` (env seeded with ``seed + episode``) with its own video and map writers."""
        agent, options = self.agent, self.options
        seed = options.seed + episode
        record = {"episode": episode, "seed": seed, "return": 0.0, "length": 0, "status": "running",
                  "rows": 0, "map_steps": 0}
        self.episodes.append(record)
        env = agent.make_env(self.env_id, max_episode_steps=options.max_steps)
        game = _Game(episode, env, record, rng=np.random.default_rng(seed), colour=render.ColourScale())
        game.obs, _ = env.reset(seed=seed)
        game.lives_start = env.unwrapped.ale.lives()
        if options.video:
            game.video = BackgroundVideo(VideoWriter(runs.video_path(self.run_dir, episode), options.fps, options.gif))
        if options.maps:
            game.maps = runs.MapWriter(runs.maps_dir(self.run_dir, episode), self._map_pool)
        return game

    def _advance(self, game: _Game, explanation: Explanation, i: int) -> bool:
        """Act, explain and write one step of ``game`` from row ``i`` of the batch; False when the game has ended."""
        agent, options, record = self.agent, self.options, game.record
        a = int(explanation.actions[i])
        relevance = explanation.relevance[i]
        chosen_map = relevance[a] if self.target.mode == "all" else relevance
        ale = game.env.unwrapped.ale
        frame = ale.getScreenRGB()
        ram = ale.getRAM().copy()
        lives = ale.lives()
        game.history = (game.history + [ram])[-agent.frame_stack:]
        size = agent.input_shape[-1]  # object masks on the agent's own input (84, or an rl-zoo screen_size)
        masks = self.objects.masks(game.history, agent.frame_stack, size) if self.objects else None
        obs = game.obs
        next_obs, reward, terminated, truncated, _ = game.env.step(a)
        game.score += float(reward)
        step = game.step
        values = agent.values(explanation.outputs[i])
        scale = game.colour.update(chosen_map.sum(-1))  # the video shows the map summed over frames
        row = {"episode": game.episode, "step": step, "action": a, "action_name": agent.action_names[a],
               "reward": float(reward), "score": game.score, "lives": lives, "colour_scale": scale}
        row.update({f"value_{n}": float(v) for n, v in zip(agent.action_names, values)})
        row.update(stats.step_statistics(chosen_map, masks))
        with runs.atomic_step():  # row, maps and frame of a step: all or none
            with runs.naming(self.run_dir / runs.STEPS):
                self._csv.writerow({k: _csv_value(v) for k, v in row.items()})
                self._csv_file.flush()
            record["rows"] += 1
            self.means.update(row)
            self.steps += 1
            if game.maps is not None:
                game.maps.add(step, relevance=relevance, obs=obs, frames=frame, ram=ram,
                              colour_scale=np.float32(scale))
            if game.video is not None:
                densities = {k[len("density_"):]: v for k, v in row.items() if k.startswith("density_")}
                game.video.submit(self._frame, self._layout, frame, obs, relevance, chosen_map, scale, values, a,
                                  {"step": step, "score": f"{game.score:g}", "lives": lives,
                                   "action": agent.action_names[a]}, list(game.history), densities)
            game.step += 1
            record.update({"return": game.score, "length": game.step})
        game.obs = next_obs
        if terminated or truncated:
            record["end"] = "game over" if terminated else f"capped at {options.max_steps} steps"
            return False
        return True

    def _close(self, game: _Game) -> None:
        """Write out and close one game's maps, video and env, and note their counts (also after an error)."""
        record = game.record
        record["lives_lost"] = int(game.lives_start - game.env.unwrapped.ale.lives())
        try:
            if game.maps is not None:
                game.maps.close()
        finally:
            record["map_steps"] = game.maps.written if game.maps is not None else 0
            try:
                if game.video is not None:
                    game.video.close()
            finally:
                if game.video is not None:
                    record["video"] = game.video.path.name
                    record["video_frames"] = game.video.frames
                game.env.close()

    def _make_layout(self) -> render.FrameLayout:
        agent = self.agent
        if self.target.mode == "all":
            strip, labels = agent.n_actions, agent.action_names
        elif self.options.show_frames:
            strip, labels = agent.frame_stack, [f"t-{agent.frame_stack - 1 - i}" for i in range(agent.frame_stack)]
        else:
            strip, labels = 0, []
        label = "Q-values" if agent.output_kind == "q_values" else "probabilities"
        categories = {c: category_colour(c) for c in self.objects.categories} if self.objects else None
        return render.FrameLayout(agent.action_names, agent.name, strip, labels, label,
                                  method=self.summary["composite"], target=self.summary["target"],
                                  categories=categories)

    def _frame(self, layout: render.FrameLayout, frame: np.ndarray, obs: np.ndarray, relevance: np.ndarray,
               chosen_map: np.ndarray, scale: float, values: np.ndarray, action: int, info: dict,
               history: list[np.ndarray], densities: dict[str, float]) -> np.ndarray:
        game = render.upscale(render.overlay(frame, render.to_native(chosen_map.sum(-1)), scale))
        if self.options.boxes and self.objects:
            colours = {c: category_colour(c) for c in self.objects.categories}
            render.draw_boxes(game, self.objects.boxes(history[-1]), render.SCALE, colours)
        tiles: list[np.ndarray] = []
        marks: list[str] = []
        if self.target.mode == "all":
            tiles = [render.tile_image(obs[..., -1], relevance[k].sum(-1), scale) for k in range(len(relevance))]
            marks = [f"{v:.3g}" for v in values]
        elif self.options.show_frames:
            # one frame carries about a quarter of the summed map: a matching scale keeps tiles comparable
            per_frame = scale / obs.shape[-1]
            tiles = [render.tile_image(obs[..., i], chosen_map[..., i], per_frame) for i in range(obs.shape[-1])]
        return layout.compose(game, values, action, info, tiles, scale=scale, densities=densities, tile_marks=marks)

    def finish(self, error: BaseException | None = None) -> None:
        """Close the CSV and write the final summary: ``complete``, ``interrupted`` (Ctrl-C, SIGTERM,
        SIGHUP) or ``failed`` (an error, e.g. a full disk), with each episode's counts of CSV rows,
        map steps and video frames."""
        if self._csv_file is not None and not self._csv_file.closed:
            try:
                self._csv_file.close()
            except OSError:
                pass  # a full disk: the rows flushed before are on disk
        self._map_pool.shutdown(wait=True)
        self.summary.update(runs.ending(error))
        self.episodes.sort(key=lambda e: e["episode"])
        for episode in self.episodes:
            if episode["status"] == "running":
                episode["status"] = self.summary["status"]
        self.summary["episodes"] = self.episodes
        returns = [e["return"] for e in self.episodes if e.get("status") == "complete"]
        self.summary["mean_return"] = float(np.mean(returns)) if returns else None
        self.summary["steps"] = self.steps
        self.summary["means"] = self.means.means()
        try:
            runs.write_summary(self.run_dir, self.summary)
        except OSError:
            pass  # the final summary does not fit even the reserved space: `stats` reports the run as ended
            # without closing, and `stats --repair` rebuilds the summary from the files


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
        return "" if np.isnan(v) else f"{v:.5g}"
    return v

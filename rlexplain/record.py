"""Recording gameplay with relevance: the recording loop.

:func:`record` plays full games with an agent, explains every step and writes a run folder
(layout in :mod:`rlexplain.runs`): video, per-step statistics (``steps.csv``), the maps needed to
re-plot, and a ``summary.json`` that says how the run ended.

Row ``t`` and video frame ``t`` show the observation ``o_t``, the action ``a_t`` chosen from it, its
relevance, and the reward and score obtained by ``a_t``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlexplain import envs, render, runs, stats
from rlexplain.agents import Agent, default_agent_for, hub, load_agent
from rlexplain.catalog import DEFAULT_METHOD, DEFAULT_METHOD_REASON
from rlexplain.errors import AgentError, RunError
from rlexplain.explainer import BASELINES, Explainer, Target, parse_target
from rlexplain.objects import ObjectExtractor, category_colour, extractor_for
from rlexplain.video import BackgroundVideo, VideoWriter

BASE_COLUMNS = ["episode", "step", "action", "action_name", "reward", "score", "lives"]


@dataclass
class RecordOptions:
    """How to record (everything but the agent and the env).

    :ivar episodes: full games to play. :ivar max_steps: cap on agent steps per game.
    :ivar seed: seeds the env (game ``k`` uses ``seed + k``) and the agent's own randomness.
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
    :ivar threads: torch threads while recording (1: batch-1 inference gains nothing from more,
        and the video encoder runs on the other core); None leaves torch's setting alone.
    """

    episodes: int = 1
    max_steps: int = envs.MAX_EPISODE_STEPS
    seed: int = 0
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
    threads: int | None = 1

    def check(self) -> None:
        """Raise :class:`RunError` naming the first option out of range."""
        if self.composite in BASELINES:
            raise RunError(f"--composite {self.composite} is an evaluation baseline, not an explanation; use it in "
                           f"`rlexplain evaluate`")
        for name in ("episodes", "max_steps", "fps"):
            if getattr(self, name) < 1:
                raise RunError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
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
    explainer = Explainer(agent, options.composite)
    default_dir = runs.default_run_dir(env_id, agent.name, options.composite, target.label(agent.action_names))
    run_dir = runs.prepare_run_dir(Path(out) if out else default_dir, force, keep=[agent.path])
    recorder = _Recorder(run_dir, agent, explainer, env_id, extractor_for(env_id), target, options, command)
    previous_threads = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        with runs.signals_interrupt():
            recorder.start()
            for episode in range(options.episodes):
                recorder.play(episode)
    except BaseException as exc:
        with runs.signals_deferred():
            recorder.finish(exc)
        raise
    finally:
        torch.set_num_threads(previous_threads)
    recorder.finish()
    return RecordResult(run_dir, recorder.summary)


class _Recorder:
    """The recording loop and its writers (one instance per run)."""

    def __init__(self, run_dir: Path, agent: Agent, explainer: Explainer, env_id: str,
                 objects: ObjectExtractor | None, target: Target, options: RecordOptions,
                 command: Sequence[str] | None = None) -> None:
        self.run_dir, self.agent, self.explainer, self.env_id = run_dir, agent, explainer, env_id
        self.objects, self.target, self.options = objects, target, options
        self.colour = render.ColourScale()
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
                             "decay": self.colour.decay, "quantile": self.colour.quantile},
            "value_columns": "Q-values" if agent.output_kind == "q_values" else "action probabilities",
            "objects": objects.describe() if objects else None,
            "notes": _method_notes(method),
            "method_choice": DEFAULT_METHOD_REASON if options.composite == DEFAULT_METHOD else
            "chosen by the user (--composite)",
            "seed": options.seed, "episodes_requested": options.episodes, "max_steps": options.max_steps,
            "options": asdict(options), "episodes": [],
        })
        self._csv_file = None
        self._csv = None

    def start(self) -> None:
        runs.write_summary(self.run_dir, self.summary, reserve=True)
        self._csv_file = open(self.run_dir / runs.STEPS, "w", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=self.columns, extrasaction="ignore")
        self._csv.writeheader()
        self._csv_file.flush()

    def play(self, episode: int) -> None:
        from tqdm.auto import tqdm

        agent, options = self.agent, self.options
        seed = options.seed + episode
        env = agent.make_env(self.env_id, max_episode_steps=options.max_steps)
        agent.seed(seed)
        obs, _ = env.reset(seed=seed)
        ale = env.unwrapped.ale
        layout = self._layout()
        size = agent.input_shape[-1]  # object masks on the agent's own input (84, or an rl-zoo screen_size)
        video = (BackgroundVideo(VideoWriter(runs.video_path(self.run_dir, episode), options.fps, options.gif))
                 if options.video else None)
        maps = runs.MapWriter(runs.maps_dir(self.run_dir, episode)) if options.maps else None
        history: list[np.ndarray] = []  # RAM of the last frame_stack steps, for per-frame object masks
        score, step, lives_start = 0.0, 0, ale.lives()
        record = {"episode": episode, "seed": seed, "return": 0.0, "length": 0, "status": "running"}
        steps_path = self.run_dir / runs.STEPS
        rows_written = 0
        self.episodes.append(record)
        bar = tqdm(desc=f"episode {episode + 1}/{options.episodes}", unit="step", total=options.max_steps,
                   disable=not options.progress, leave=False, dynamic_ncols=True,
                   bar_format="{desc}: {n_fmt} steps (cap {total_fmt}) [{elapsed}, {rate_fmt}]")
        try:
            while True:
                explanation = self.explainer.step(obs, options.deterministic, self.target)
                a = int(explanation.actions[0])
                relevance = explanation.relevance  # one observation: no batch axis
                chosen_map = relevance[a] if self.target.mode == "all" else relevance
                frame = ale.getScreenRGB()
                ram = ale.getRAM().copy()
                lives = ale.lives()
                history = (history + [ram])[-agent.frame_stack:]
                masks = self.objects.masks(history, agent.frame_stack, size) if self.objects else None
                next_obs, reward, terminated, truncated, _ = env.step(a)
                score += float(reward)
                values = agent.values(explanation.outputs[0])
                scale = self.colour.update(chosen_map.sum(-1))  # the video shows the map summed over frames
                row = {"episode": episode, "step": step, "action": a, "action_name": agent.action_names[a],
                       "reward": float(reward), "score": score, "lives": lives, "colour_scale": scale}
                row.update({f"value_{n}": float(v) for n, v in zip(agent.action_names, values)})
                row.update(stats.step_statistics(chosen_map, masks))
                with runs.atomic_step():  # row, maps and frame of a step: all or none
                    with runs.naming(steps_path):
                        self._csv.writerow({k: _csv_value(v) for k, v in row.items()})
                        self._csv_file.flush()
                    rows_written += 1
                    self.means.update(row)
                    self.steps += 1
                    if maps is not None:
                        maps.add(step, relevance=relevance, obs=obs, frames=frame,
                                 ram=ram, colour_scale=np.float32(scale))
                    if video is not None:
                        densities = {k[len("density_"):]: v for k, v in row.items() if k.startswith("density_")}
                        video.submit(self._frame, layout, frame, obs, relevance, chosen_map, scale, values, a,
                                     {"step": step, "score": f"{score:g}", "lives": lives,
                                      "action": agent.action_names[a]}, list(history), densities)
                    step += 1
                    record.update({"return": score, "length": step})
                bar.update(1)
                obs = next_obs
                if terminated or truncated:
                    record["end"] = "game over" if terminated else f"capped at {options.max_steps} steps"
                    break
            record["status"] = "complete"
        finally:
            with runs.signals_deferred():
                bar.close()
                record["lives_lost"] = int(lives_start - ale.lives())
                record["rows"] = rows_written
                try:
                    if maps is not None:
                        maps.flush()
                finally:
                    record["map_steps"] = maps.written if maps is not None else 0
                    if video is not None:
                        try:
                            video.close()
                        finally:
                            record["video"] = video.path.name
                            record["video_frames"] = video.frames
                    env.close()

    def _layout(self) -> render.FrameLayout:
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
        self.summary.update(runs.ending(error))
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

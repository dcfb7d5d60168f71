"""Comparing agents across training checkpoints on one fixed set of states.

Every checkpoint is explained on the same states, collected once by a reference policy (default:
the last checkpoint) and saved as ``states.npz``, so differences come from the agents and not from
different situations (Lapuschkin et al. 2019 watched Breakout agents learn to aim for the tunnel this
way). Each checkpoint also plays its own full games for its return.

Output folder:

``states.npz``          observations, native frames, RAM (of each state's four stacked steps), env id, seed
``summary.csv``         one row per checkpoint, in training order: ``checkpoint, timesteps, mean_return``,
                        ``returns``, and the mean ``share_<category>`` / ``density_<category>`` on the states
``densities_vs_steps.png`` object densities (or grid-row shares) against training steps
``return_vs_steps.png`` return (mean +- std and single games) against training steps, when games were played
``checkpoint_<N>.png``  each checkpoint's mean relevance on the states
``similarity.png``      mean Spearman rank correlation of the relevance maps between checkpoints
``states.mp4``          the states side by side, each checkpoint's heatmap normalised on its own
``report.html``         everything above in one page that opens without a server

The computation is here; the figures, video and page are drawn by :mod:`rlexplain.report.compare_report`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rlexplain import devices, envs, runs, stats
from rlexplain.agents import Agent, bundled_agents_dir, checkpoint_series, default_agent_for, hub, load_agent
from rlexplain.agents.checkpoints import steps_from_name
from rlexplain.catalog import DEFAULT_METHOD
from rlexplain.devices import resolve_device
from rlexplain.errors import CompareError
from rlexplain.explainer import BASELINES, Explainer
from rlexplain.files import write_json_atomically
from rlexplain.objects import extractor_for
from rlexplain.states import collect_states, load_states, save_states


@dataclass
class CompareResult:
    """The output folder and one summary row per checkpoint, in training order."""

    out: Path
    rows: list[dict] = field(default_factory=list)
    #: mean rank correlation (average ranks) between the checkpoints' maps on the fixed states
    similarity: np.ndarray | None = None
    #: the comparison's settings and provenance (``compare.json`` without the rows)
    meta: dict = field(default_factory=dict)
    #: the fixed states (``obs``, ``frames``, ``ram``, ...) as saved in ``states.npz``
    states: dict = field(default_factory=dict, repr=False)
    #: each checkpoint's relevance maps on the states, in row order
    maps: list = field(default_factory=list, repr=False)

    def table(self) -> str:
        """Checkpoints, returns (mean +- std over the games played here; ``card``: the model card's mean over
        its games, when there is a card) and mean densities (or shares) as aligned text."""
        keys = [k for k in self.rows[0] if k.startswith("density_")] or \
            [k for k in self.rows[0] if k.startswith("share_")]
        width = max(len("checkpoint"), *(len(r["label"]) for r in self.rows))
        lines = [f"{'checkpoint':<{width}s}  {'return':>15s}  {'card':>6s}  " + "  ".join(f"{k:>15s}" for k in keys)]
        for row in self.rows:
            ret = f"{row['mean_return']:.1f} +- {row['std_return']:.1f}" if row["games"] else "-"
            card = f"{row['card_return']:.1f}" if row["card_games"] else "-"
            lines.append(f"{row['label']:<{width}s}  {ret:>15s}  {card:>6s}  " + "  ".join(
                f"{format_value(row[k]):>15s}" for k in keys))
        return "\n".join(lines)


def format_value(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def checkpoint_steps(path: Path) -> int:
    """Training steps of a checkpoint: from ``rl_model_{N}_steps.zip``, else ``num_timesteps`` in the zip."""
    steps = steps_from_name(path)
    if steps is not None:
        return steps
    try:
        with zipfile.ZipFile(path) as archive:
            return int(json.loads(archive.read("data")).get("num_timesteps", 0))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise CompareError(f"{path}: cannot read its training steps ({exc}); is it an SB3 checkpoint?") from exc


def resolve_checkpoints(specs: Sequence[str | Path] | None, env_id: str | None) -> list[Path | str]:
    """Checkpoints in training order: files as given, folders (or rl-zoo runs) expanded to their
    ``rl_model_*_steps.zip``, ``hf:`` Hub agents as given; none given means the game's bundled series."""
    if not specs:
        if env_id is None:
            raise CompareError("give --env or checkpoints")
        name = default_agent_for(env_id)
        if name is None:
            raise CompareError(f"no bundled checkpoint series for {envs.game_name(env_id)}; pass checkpoints")
        specs = [bundled_agents_dir() / name]
    paths: list[Path | str] = []
    for spec in specs:
        if hub.is_hub_spec(spec):
            paths.append(str(spec))
            continue
        p = Path(spec)
        if p.is_dir():
            found = checkpoint_series(p)
            if not found:
                raise CompareError(f"no rl_model_*_steps.zip in {p}")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise CompareError(f"checkpoint not found: {p}")
    return list(dict.fromkeys(paths))


def compare(env: str | None = None, checkpoints: Sequence[str | Path] | None = None, *, out: str | Path | None = None,
            states: str | Path | None = None, n_states: int = 200, games: int = 2, max_steps: int = 10_000,
            seed: int = 0, composite: str = DEFAULT_METHOD, reference: str | Path | None = None,
            force: bool = False, progress: bool = True, device: str = "cpu", tf32: bool = False) -> CompareResult:
    """Explain several checkpoints on the same states and compare where they attend.

    :param env: the game (default: the checkpoints' own).
    :param checkpoints: zips, folders of ``rl_model_*_steps.zip`` or rl-zoo run folders; None: the
        game's bundled series.
    :param states: a ``states.npz`` from an earlier comparison, to reuse its states.
    :param n_states: states to collect (every 4th step of the reference policy's play).
    :param games: full games per checkpoint for its return (stochastic policy: DQN epsilon 0.01).
    :param max_steps: agent steps per game at most.
    :param reference: the checkpoint whose play collects the states (default: the last).
    :param device: where the maps are computed (``cpu``, ``cuda``, ``auto``). :param tf32: allow TF32 on CUDA.
    """

    if composite in BASELINES:
        raise CompareError(f"--composite {composite} is an evaluation baseline, not an explanation; use it in "
                           f"`rlexplain evaluate`")
    device = resolve_device(device)
    env_id = envs.resolve_env_id(env) if env else None
    specs = resolve_checkpoints(checkpoints, env_id)
    loaded = sorted(((load_agent(s, env=env_id), s) for s in specs),
                    key=lambda pair: pair[0].timesteps or checkpoint_steps(pair[0].path))
    agents = [agent for agent, _ in loaded]
    paths = [agent.path for agent in agents]
    env_id = env_id or agents[-1].env_id
    if env_id is None:
        raise CompareError("the checkpoints do not say which game they play; pass --env")
    steps = [agent.timesteps or checkpoint_steps(agent.path) for agent in agents]
    state_data = load_states(states, env_id) if states is not None else None  # checked before anything is replaced
    if state_data is not None:
        agents[-1].preprocess(state_data["obs"][:1])  # states of another frame stack or size: a one-line error
    out = runs.prepare_run_dir(Path(out) if out else Path("runs") / f"compare-{envs.game_name(env_id)}-"
                               f"{_dt.datetime.now():%Y%m%d-%H%M%S}", force, keep=[states, *paths])
    with runs.tracked(out, runs.new_summary("compare", env_id=env_id)) as summary, devices.precision(tf32):
        rows, similarity, meta, state_data, maps = _compare(
            out, env_id, agents, paths, steps, state_data, reference, n_states, games, max_steps, seed, composite,
            states, progress, device)
        summary.update(meta, device=devices.describe(device, tf32))
    return CompareResult(out, rows, similarity, meta, state_data, maps)


def _compare(out: Path, env_id: str, agents: list[Agent], paths: list, steps: list[int], state_data: dict | None,
             reference, n_states: int, games: int, max_steps: int, seed: int, composite: str, states,
             progress: bool, device=None) -> tuple:
    """The comparison itself, once the output folder is ready (see :func:`compare`)."""
    from tqdm.auto import tqdm

    if state_data is None:
        ref = load_agent(reference, env=env_id) if reference else agents[-1]
        state_data = collect_states(ref, env_id, n_states, seed, progress=progress)
        state_data.update(env_id=np.array(env_id), seed=np.array(seed), reference=np.array(ref.name),
                          policy=np.array("stochastic"))
    save_states(out / "states.npz", state_data, env_id=env_id, seed=int(state_data.get("seed", seed)),
                reference=str(state_data.get("reference", "")), policy=str(state_data.get("policy", "stochastic")))
    objects = extractor_for(env_id)
    frame_stack = state_data["obs"].shape[-1]
    size = state_data["obs"].shape[1]  # object masks on the agents' own input size
    masks = [objects.masks(list(r), frame_stack, size) for r in state_data["ram"]] if objects else None
    rows, maps = [], []
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for path, agent, n in tqdm(list(zip(paths, agents, steps)), desc="checkpoints", disable=not progress):
            explainer = Explainer(agent, composite, device=device)
            relevance = np.concatenate([explainer.explain(state_data["obs"][i: i + 64]).relevance
                                        for i in range(0, len(state_data["obs"]), 64)])
            maps.append(relevance)
            per_state = [stats.step_statistics(r, masks[i] if masks else None) for i, r in enumerate(relevance)]
            running = stats.RunningMeans(["share_", "density_", "frame_share_", "entropy"])
            for row in per_state:
                running.update(row)
            means = running.means()
            if not objects:  # no object categories for this game: shares per grid row, top to bottom
                grid_rows = stats.grid_row_shares({k: np.array([row[k] for row in per_state]) for k in per_state[0]})
                means.update({f"share_{name.replace(' ', '_')}": float(np.mean(v)) for name, v in grid_rows.items()})
            agent.seed(seed)
            returns = envs.play_games(lambda obs, agent=agent: agent.act(obs, deterministic=False), env_id, games,
                                      seed=seed + 1000, max_episode_steps=max_steps,
                                      **agent.env_settings()) if games > 0 else []
            card = (agent.card or {}).get("evaluation", {})
            rows.append({"checkpoint": str(path), "label": agent.name, "timesteps": n,
                         "card_return": float(card["mean_return"]) if "mean_return" in card else float("nan"),
                         "card_games": int(card.get("games") or 0),
                         "mean_return": float(np.mean(returns)) if returns else float("nan"),
                         "std_return": float(np.std(returns)) if returns else float("nan"), "games": len(returns),
                         "returns": " ".join(f"{r:g}" for r in returns), **means})
    finally:
        torch.set_num_threads(previous_threads)
    similarity = np.array([[stats.rank_correlation(a, b) for b in maps] for a in maps])
    _write_summary(out / "summary.csv", rows)
    np.savetxt(out / "similarity.csv", similarity, delimiter=",", fmt="%.4f")
    meta = {"env_id": env_id, "seed": seed, "composite": composite, "n_states": len(state_data["obs"]),
            "games": games, "max_steps": max_steps, "states_from": str(states) if states else "collected",
            "reference": str(state_data.get("reference", "")), "versions": runs.versions(),
            "categories": list(objects.categories) + ["other"] if objects else "grid rows"}
    write_json_atomically(out / "compare.json", {**meta, "checkpoints": rows, "similarity": similarity.tolist()})
    return rows, similarity, meta, state_data, maps


def _write_summary(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})



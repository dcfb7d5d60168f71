"""Comparing agents across training checkpoints on one fixed set of states.

Every checkpoint is explained on the same states, collected once by a reference policy (default:
the last checkpoint) and saved as ``states.npz``, so differences come from the agents and not from
different situations (Lapuschkin et al. 2019 watched Breakout agents learn to aim for the tunnel this
way). Each checkpoint also plays its own full games for its return.

Output folder:

``states.npz``          observations, native frames, RAM (of each state's four stacked steps), env id, seed
``summary.csv``         one row per checkpoint, in training order: ``checkpoint, timesteps, mean_return``,
                        ``returns``, and the mean ``share_<category>`` / ``density_<category>`` on the states
``shares_vs_steps.png`` object (or grid-row) shares against training steps
``return_vs_steps.png`` return against training steps
``similarity.png``      mean Spearman rank correlation of the relevance maps between checkpoints
``states.mp4``          the states side by side, each checkpoint's heatmap normalised on its own
``report.html``         everything above in one page that opens without a server
"""

from __future__ import annotations

import csv
import datetime as _dt
import html
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rlexplain import envs, render, stats
from rlexplain.agents import Agent, AgentError, bundled_agents_dir, checkpoint_series, default_agent_for, load_agent
from rlexplain.checkpoints import steps_from_name
from rlexplain.evaluate import play_games
from rlexplain.explain import Explainer
from rlexplain.objects import extractor_for
from rlexplain.record import RecordError, prepare_run_dir, versions, write_json_atomically


@dataclass
class CompareResult:
    """The output folder and one summary row per checkpoint, in training order."""

    out: Path
    rows: list[dict] = field(default_factory=list)

    def table(self) -> str:
        keys = ["timesteps", "mean_return"] + [k for k in self.rows[0] if k.startswith("share_")]
        width = max(len(Path(r["checkpoint"]).name) for r in self.rows)
        lines = [f"{'checkpoint':<{width}s}  " + "  ".join(f"{k:>12s}" for k in keys)]
        for row in self.rows:
            lines.append(f"{Path(row['checkpoint']).name:<{width}s}  " + "  ".join(f"{_fmt(row[k]):>12s}" for k in keys))
        return "\n".join(lines)


def _fmt(v) -> str:
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
        raise AgentError(f"{path}: cannot read its training steps ({exc}); is it an SB3 checkpoint?") from exc


def resolve_checkpoints(specs: Sequence[str | Path] | None, env_id: str | None) -> list[Path]:
    """Checkpoint files in training order: files as given, folders (or rl-zoo runs) expanded to
    their ``rl_model_*_steps.zip``; none given means the game's bundled series."""
    if not specs:
        if env_id is None:
            raise RecordError("give --env or checkpoints")
        name = default_agent_for(env_id)
        if name is None:
            raise RecordError(f"no bundled checkpoint series for {envs.game_name(env_id)}; pass checkpoints")
        specs = [bundled_agents_dir() / name]
    paths: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = checkpoint_series(p)
            if not found:
                raise RecordError(f"no rl_model_*_steps.zip in {p}")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise RecordError(f"checkpoint not found: {p}")
    return sorted(dict.fromkeys(paths), key=checkpoint_steps)


def collect_states(agent: Agent, env_id: str, n_states: int, seed: int, stride: int = 4,
                   max_steps: int = envs.MAX_EPISODE_STEPS, progress: bool = True) -> dict[str, np.ndarray]:
    """Play with ``agent`` (its stochastic policy, so it cannot stall) and keep every ``stride``-th state."""
    from tqdm.auto import tqdm

    keep: dict[str, list] = {"obs": [], "frames": [], "ram": []}
    env = agent.make_env(env_id, max_episode_steps=max_steps)
    agent.seed(seed)
    episode = 0
    obs, _ = env.reset(seed=seed)
    ale = env.unwrapped.ale
    history: list[np.ndarray] = []
    step = 0
    bar = tqdm(total=n_states, desc="collecting states", disable=not progress, leave=False)
    while len(keep["obs"]) < n_states:
        ram = ale.getRAM().copy()
        history = (history + [ram])[-agent.frame_stack:]
        if step % stride == 0:
            stack = np.zeros((agent.frame_stack, 128), np.uint8)
            stack[agent.frame_stack - len(history):] = history
            keep["obs"].append(obs)
            keep["frames"].append(ale.getScreenRGB())
            keep["ram"].append(stack)
            bar.update(1)
        obs, _, terminated, truncated, _ = env.step(int(agent.act(obs, deterministic=False)))
        step += 1
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
            history = []
    bar.close()
    env.close()
    return {k: np.stack(v) for k, v in keep.items()}


def save_states(path: Path, states: dict[str, np.ndarray], env_id: str, seed: int, reference: str) -> None:
    np.savez_compressed(path, obs=states["obs"], frames=states["frames"], ram=states["ram"], env_id=np.array(env_id),
                        seed=np.array(seed), reference=np.array(reference))


def load_states(path: str | Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as data:
            states = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise RecordError(f"cannot read states file {path}: {exc}") from exc
    missing = {"obs", "frames", "ram", "env_id"} - set(states)
    if missing:
        raise RecordError(f"{path} is not an rlexplain states file (missing {', '.join(sorted(missing))})")
    return states


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over states of the rank correlation between two checkpoints' maps."""
    def ranks(x):
        flat = x.reshape(len(x), -1)
        r = np.empty_like(flat, dtype=np.float32)
        idx = np.argsort(flat, axis=1)
        np.put_along_axis(r, idx, np.arange(flat.shape[1], dtype=np.float32)[None].repeat(len(flat), 0), axis=1)
        return r - r.mean(1, keepdims=True)

    ra, rb = ranks(a), ranks(b)
    corr = (ra * rb).sum(1) / (np.linalg.norm(ra, axis=1) * np.linalg.norm(rb, axis=1) + 1e-12)
    return float(corr.mean())


def compare(env: str | None = None, checkpoints: Sequence[str | Path] | None = None, *, out: str | Path | None = None,
            states: str | Path | None = None, n_states: int = 200, games: int = 2, max_steps: int = 10_000,
            seed: int = 0, composite: str = "epsilon_plus_flat", reference: str | Path | None = None,
            force: bool = False, video: bool = True, progress: bool = True) -> CompareResult:
    """Explain several checkpoints on the same states and compare where they attend.

    :param env: the game (default: the checkpoints' own).
    :param checkpoints: zips, folders of ``rl_model_*_steps.zip`` or rl-zoo run folders; None: the
        game's bundled series.
    :param states: a ``states.npz`` from an earlier comparison, to reuse its states.
    :param n_states: states to collect (every 4th step of the reference policy's play).
    :param games: full games per checkpoint for its return (stochastic policy: DQN epsilon 0.01).
    :param max_steps: agent steps per game at most.
    :param reference: the checkpoint whose play collects the states (default: the last).
    """
    from tqdm.auto import tqdm

    env_id = envs.resolve_env_id(env) if env else None
    paths = resolve_checkpoints(checkpoints, env_id)
    agents = [load_agent(p, env=env_id) for p in paths]
    env_id = env_id or agents[-1].env_id
    if env_id is None:
        raise RecordError("the checkpoints do not say which game they play; pass --env")
    steps = [checkpoint_steps(p) for p in paths]
    out = prepare_run_dir(Path(out) if out else Path("runs") / f"compare-{envs.game_name(env_id)}-"
                          f"{_dt.datetime.now():%Y%m%d-%H%M%S}", force)
    if states is not None:
        state_data = load_states(states)
        if str(state_data["env_id"]) != env_id:
            raise RecordError(f"{states} holds states of {state_data['env_id']}, not {env_id}")
    else:
        ref = load_agent(reference, env=env_id) if reference else agents[-1]
        state_data = collect_states(ref, env_id, n_states, seed, progress=progress)
        state_data.update(env_id=np.array(env_id), seed=np.array(seed), reference=np.array(str(ref.path)))
    save_states(out / "states.npz", state_data, env_id, int(state_data.get("seed", seed)),
                str(state_data.get("reference", "")))
    objects = extractor_for(env_id)
    frame_stack = state_data["obs"].shape[-1]
    masks = [objects.masks(list(r), frame_stack) for r in state_data["ram"]] if objects else None
    rows, maps = [], []
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for path, agent, n in tqdm(list(zip(paths, agents, steps)), desc="checkpoints", disable=not progress):
            explainer = Explainer(agent, composite)
            relevance = np.concatenate([explainer.explain(state_data["obs"][i: i + 64]).relevance
                                        for i in range(0, len(state_data["obs"]), 64)])
            maps.append(relevance)
            per_state = [stats.step_statistics(r, masks[i] if masks else None) for i, r in enumerate(relevance)]
            running = stats.RunningMeans(["share_", "density_", "frame_share_", "entropy"])
            for row in per_state:
                running.update(row)
            means = running.means()
            if not objects:  # no object categories for this game: shares per grid row, top to bottom
                rows_share = np.array([[sum(row[f"grid_share_{r}_{c}"] for c in range(stats.DEFAULT_GRID[1]))
                                        for r in range(stats.DEFAULT_GRID[0])] for row in per_state])
                means.update({f"share_grid_row_{r}": float(np.nanmean(rows_share[:, r]))
                              for r in range(stats.DEFAULT_GRID[0])})
            policy = _stochastic_policy(agent, seed)
            returns = play_games(policy, env_id, games, seed=seed + 1000, max_episode_steps=max_steps,
                                 wrapper_kwargs=agent.wrapper_kwargs) if games > 0 else []
            rows.append({"checkpoint": str(path), "timesteps": n,
                         "mean_return": float(np.mean(returns)) if returns else float("nan"),
                         "returns": " ".join(f"{r:g}" for r in returns), **means})
    finally:
        torch.set_num_threads(previous_threads)
    similarity = np.array([[_spearman(a, b) if i != j else 1.0 for j, b in enumerate(maps)]
                           for i, a in enumerate(maps)])
    _write_summary(out / "summary.csv", rows)
    np.savetxt(out / "similarity.csv", similarity, delimiter=",", fmt="%.4f")
    _plots(out, rows, similarity, [Path(r["checkpoint"]).name for r in rows])
    if video:
        _video(out / "states.mp4", state_data, maps, [f"{n:,} steps" for n in steps])
    meta = {"env_id": env_id, "seed": seed, "composite": composite, "n_states": len(state_data["obs"]),
            "games": games, "max_steps": max_steps, "states_from": str(states) if states else "collected",
            "reference": str(state_data.get("reference", "")), "versions": versions(),
            "categories": list(objects.categories) + ["other"] if objects else "grid rows"}
    write_json_atomically(out / "compare.json", {**meta, "checkpoints": rows, "similarity": similarity.tolist()})
    _report(out, rows, similarity, meta, video)
    return CompareResult(out, rows)


def _stochastic_policy(agent: Agent, seed: int):
    agent.seed(seed)

    def policy(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return agent.choose(agent.network(agent.preprocess(obs)), deterministic=False)

    return policy


def _write_summary(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _plots(out: Path, rows: list[dict], similarity: np.ndarray, labels: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["timesteps"] for r in rows]
    shares = [k for k in rows[0] if k.startswith("share_")]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in shares:
        ax.plot(steps, [r[key] for r in rows], "o-", label=key[len("share_"):])
    ax.set(xlabel="training steps", ylabel="mean share of positive relevance on the fixed states",
           title="where the agent attends, over training")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "shares_vs_steps.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [r["mean_return"] for r in rows], "o-", color="tab:green")
    ax.set(xlabel="training steps", ylabel="mean return (full games)", title="return over training")
    fig.tight_layout()
    fig.savefig(out / "return_vs_steps.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(1.2 * len(rows) + 3, 1.0 * len(rows) + 2.5))
    image = ax.imshow(similarity, vmin=-1, vmax=1, cmap="RdBu_r")
    short = [f"{s:,}" for s in steps]
    ax.set_xticks(range(len(rows)), short, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), short)
    for (i, j), v in np.ndenumerate(similarity):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if abs(v) > 0.6 else "black")
    ax.set_title("rank correlation of relevance maps\n(mean over the fixed states)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(out / "similarity.png", dpi=100)
    plt.close(fig)


def _video(path: Path, states: dict[str, np.ndarray], maps: list[np.ndarray], labels: list[str]) -> None:
    import cv2

    from rlexplain.record import VideoWriter

    scales = [render.robust_max(m.sum(-1)) or 1.0 for m in maps]  # each checkpoint on its own scale
    writer = VideoWriter(path, fps=5, gif=False)
    try:
        for i in range(len(states["obs"])):
            panels = []
            for m, scale, label in zip(maps, scales, labels):
                panel = render.upscale(render.overlay(states["frames"][i], render.to_native(m[i].sum(-1)), scale), 2)
                panel = np.ascontiguousarray(np.vstack([np.zeros((24, panel.shape[1], 3), np.uint8), panel]))
                cv2.putText(panel, label, (6, 17), render.FONT, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
                panels.append(panel)
            frame = np.hstack(panels)
            h, w = frame.shape[:2]
            canvas = np.zeros(((h + 15) // 16 * 16, (w + 15) // 16 * 16, 3), np.uint8)
            canvas[:h, :w] = frame
            writer.write(canvas)
    finally:
        writer.close()


def _report(out: Path, rows: list[dict], similarity: np.ndarray, meta: dict, video: bool) -> None:
    keys = ["timesteps", "mean_return", "returns"] + [k for k in rows[0] if k.startswith(("share_", "density_"))]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["checkpoint"] + keys)
    body = "".join("<tr><td>" + html.escape(Path(r["checkpoint"]).name) + "</td>" +
                   "".join(f"<td>{html.escape(_fmt(r.get(k, '')))}</td>" for k in keys) + "</tr>" for r in rows)
    video_html = ('<h2>The same states, each checkpoint\'s relevance</h2><video src="states.mp4" controls loop '
                  'width="100%"></video><p>Each checkpoint\'s heatmap is normalised on its own scale (Q-values '
                  'grow over training); red/yellow: evidence for the chosen action, blue: against.</p>'
                  if video else "")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>rlexplain: checkpoints on {html.escape(meta['env_id'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px;text-align:right}}img{{max-width:49%}}</style></head>
<body><h1>Checkpoints compared on {html.escape(meta['env_id'])}</h1>
<p>{meta['n_states']} fixed states ({html.escape(meta['states_from'])}; reference policy
{html.escape(meta['reference'])}), seed {meta['seed']}, method {html.escape(meta['composite'])};
each checkpoint also played {meta['games']} full games (at most {meta['max_steps']} steps) for its return.
Shares are fractions of each state's positive relevance on the objects read from RAM
({html.escape(str(meta['categories']))}), averaged over the states; density = share / area share.</p>
<div style="overflow-x:auto"><table><tr>{head}</tr>{body}</table></div>
<p><img src="shares_vs_steps.png"> <img src="return_vs_steps.png"></p>
<p><img src="similarity.png"></p>
{video_html}
<p>Files: <a href="summary.csv">summary.csv</a>, <a href="similarity.csv">similarity.csv</a>,
<a href="compare.json">compare.json</a>, <a href="states.npz">states.npz</a> (reuse with --states).</p>
</body></html>
"""
    (out / "report.html").write_text(page)

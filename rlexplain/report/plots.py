"""Plots and a summary table of a run, from its saved files only (``steps.csv``, ``summary.json``, ``maps/``).

``plot_run(run_dir)`` writes into ``<run>/plots/``:

``densities_episode_<k>.png``     object densities (share / area share, log axis; or grid-row shares for
                                  games without objects) over time, 15-step means over faint raw values,
                                  rewards and lost lives in the legend
``mean_heatmap_episode_<k>.png``  the episode's mean relevance over its mean frame, with a colour bar
``densities_per_action.png``      mean densities per chosen action
``summary_table.md``              per-episode return and length, mean shares and densities
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from rlexplain import render, runs, stats
from rlexplain.objects import category_colour
from rlexplain.runs import read_steps


def _categories(columns: dict[str, np.ndarray]) -> list[str]:
    return [k[len("share_"):] for k in columns if k.startswith("share_")]


def _colour(name: str) -> tuple[float, float, float]:
    return tuple(c / 255 for c in category_colour(name))


def density_series(columns: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    """What the time plots draw: object densities (share / area share; 1 = as much evidence as area), or,
    for games without object categories, shares per grid row."""
    densities = {k[len("density_"):]: v for k, v in columns.items() if k.startswith("density_")}
    if densities:
        return densities, "density: share of positive relevance / share of the input's area"
    return stats.grid_row_shares(columns), "share of positive relevance per grid row (top to bottom)"


def plot_run(run_dir: str | Path) -> Path:
    """Write the plots and summary table of a run; returns the ``plots/`` folder."""
    run_dir = Path(run_dir)
    summary = runs.read_summary(run_dir)
    columns = read_steps(run_dir)
    out = run_dir / runs.PLOTS
    out.mkdir(exist_ok=True)
    if not columns:
        (out / "summary_table.md").write_text("no steps recorded\n")
        return out
    series, label = density_series(columns)
    log = label.startswith("density")
    for episode in np.unique(columns["episode"]).astype(int):
        sel = columns["episode"] == episode
        steps = columns["step"][sel]
        fig = Figure(figsize=(10, 4.2))
        ax = fig.subplots()
        for name, values in series.items():
            raw = values[sel].astype(np.float64)
            shown = np.where(raw > 0, raw, np.nan) if log else raw
            ax.plot(steps, shown, color=_colour(name), lw=0.5, alpha=0.25)
            ax.plot(steps, _smooth(raw), color=_colour(name), lw=1.8, label=f"{name} (15-step mean)")
        lost = steps[stats.lives_lost(columns["lives"][sel])]
        for i, s_ in enumerate(lost):
            ax.axvline(s_, color="black", ls="--", lw=0.9, alpha=0.7, label="life lost" if i == 0 else None)
        rewarded = steps[columns["reward"][sel] > 0]
        if len(rewarded):
            ax.plot(rewarded, np.zeros(len(rewarded)), "|", color="black", ms=9, mew=1.2,
                    transform=ax.get_xaxis_transform(), label="reward", clip_on=False)
        if log:
            ax.set_yscale("log")
            ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
            smoothed = np.concatenate([_smooth(v[sel].astype(np.float64)) for v in series.values()])
            smoothed = smoothed[smoothed > 0]
            if smoothed.size:  # the 15-step means set the range; single-step dips to ~0 fall below it
                ax.set_ylim(max(smoothed.min() / 3, 1e-3), smoothed.max() * 3)
        ax.set(xlabel="agent step", ylabel=label.split(":")[0] + (" (log)" if log else ""),
               title=f"{summary.get('agent', {}).get('name')} on {summary.get('game')}, episode {episode} "
                     f"({summary.get('composite')}, target {summary.get('target', 'chosen')})")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        fig.text(0.01, 0.01, label + (" (dotted: 1)" if log else "") + "; faint: every step", fontsize=7,
                 color="0.4")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        fig.savefig(out / f"densities_episode_{episode}.png", dpi=100)
        _mean_heatmap(run_dir, episode, out / f"mean_heatmap_episode_{episode}.png", columns["action"][sel])
    _per_action(columns, series, out / "densities_per_action.png", log)
    (out / "summary_table.md").write_text(summary_table(run_dir, columns, summary))
    return out


def _smooth(values: np.ndarray, window: int = 15) -> np.ndarray:
    v = np.nan_to_num(values.astype(np.float64))
    if len(v) < window:
        return v
    kernel = np.ones(window)
    return np.convolve(v, kernel, mode="same") / np.convolve(np.ones_like(v), kernel, mode="same")


def _mean_heatmap(run_dir: Path, episode: int, path: Path, actions: np.ndarray) -> None:
    """The episode's mean relevance (of the explained action; summed over stacked frames) over its mean
    frame, with a colour bar: read chunk by chunk, so memory does not grow with the episode."""
    total_map, total_frame, n = None, None, 0
    for chunk in runs.iter_maps(run_dir, episode, ["relevance", "frames", "step"]):
        rel = chunk["relevance"].astype(np.float32)
        if rel.ndim == 5:  # --action all: the map of the action taken at each step
            rel = rel[np.arange(len(rel)), actions[chunk["step"].astype(int)].astype(int)]
        summed = rel.sum((0, -1), dtype=np.float64)
        frames = chunk["frames"].sum(0, dtype=np.float64)
        total_map = summed if total_map is None else total_map + summed
        total_frame = frames if total_frame is None else total_frame + frames
        n += len(rel)
    if not n:
        return
    mean, frame = total_map / n, (total_frame / n).round().astype(np.uint8)
    scale = render.robust_max(mean) or 1.0
    image = render.overlay(frame, render.to_native(mean), scale)
    fig = Figure(figsize=(4.4, 5.6))
    ax = fig.subplots()
    ax.imshow(image)
    ax.set_title(f"mean relevance, episode {episode} ({n} steps)\nover the episode's mean frame", fontsize=9)
    ax.axis("off")
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    lut = render.LUT_RGB * render.LUT_ALPHA[:, None]  # as the overlay looks on black
    bar = fig.colorbar(ScalarMappable(Normalize(-scale, scale), ListedColormap(lut / 255.0)), ax=ax, fraction=0.05,
                       pad=0.02)
    bar.set_label("mean relevance (red: for the action, blue: against)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _per_action(columns: dict[str, np.ndarray], series: dict[str, np.ndarray], path: Path, log: bool) -> None:
    names = columns["action_name"]
    actions = list(dict.fromkeys(names.tolist()))
    fig = Figure(figsize=(max(5.5, 1.3 * len(actions) * max(1, len(series)) / 3), 4))
    ax = fig.subplots()
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        means = [np.nanmean(values[names == a]) if np.any(names == a) else np.nan for a in actions]
        ax.bar(np.arange(len(actions)) + i * width, means, width, label=name, color=_colour(name))
    counts = [int((names == a).sum()) for a in actions]
    ax.set_xticks(np.arange(len(actions)) + 0.4 - width / 2, [f"{a}\n(n={n})" for a, n in zip(actions, counts)])
    if log:
        ax.set_yscale("log")
        ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
    ax.set(ylabel="mean density (share / area)" + (", log" if log else "") if log else "mean share",
           title="where the agent looks, by the action it chose")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def summary_table(run_dir: Path, columns: dict[str, np.ndarray] | None = None, summary: dict | None = None) -> str:
    """A Markdown table: episodes (return, length, lives lost), then mean share and density per category."""
    columns = columns if columns is not None else read_steps(run_dir)
    summary = summary if summary is not None else runs.read_summary(run_dir)
    lines = [f"# {summary.get('agent', {}).get('name')} on {summary.get('env_id')} ({summary.get('composite')}, "
             f"status {runs.run_status(run_dir, summary)})", "", "| episode | return | length | lives lost | end |",
             "|---:|---:|---:|---:|---|"]
    for e in summary.get("episodes", []):
        lines.append(f"| {e['episode']} | {e['return']:g} | {e['length']} | {e.get('lives_lost', '')} | "
                     f"{e.get('end', e.get('status', ''))} |")
    categories = _categories(columns)
    if categories:
        lines += ["", "| category | mean share | mean density (share / area) |", "|---|---:|---:|"]
        for c in categories:
            density = columns.get(f"density_{c}")
            d = f"{np.nanmean(density):.3f}" if density is not None and np.any(~np.isnan(density)) else ""
            lines.append(f"| {c} | {np.nanmean(columns[f'share_{c}']):.3f} | {d} |")
    frames = [k for k in columns if k.startswith("frame_share_")]
    if frames:
        lines += ["", "| stacked frame (0 = oldest) | mean share |", "|---|---:|"]
        lines += [f"| {k[-1]} | {np.nanmean(columns[k]):.3f} |" for k in frames]
    lines += ["", f"mean entropy {np.nanmean(columns['entropy']):.3f}; centre of mass (row, col) "
                  f"({np.nanmean(columns['com_row']):.1f}, {np.nanmean(columns['com_col']):.1f}) on the 84x84 input"]
    return "\n".join(lines) + "\n"

"""The comparison report: figures, the states video and ``report.html`` of a :class:`~rlexplain.compare.CompareResult`."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from rlexplain import render
from rlexplain.compare import CompareResult, format_value
from rlexplain.objects import category_colour
from rlexplain.video import VideoWriter


def write(result: CompareResult, video: bool = True) -> Path:
    """Write the comparison's figures (``densities_vs_steps.png``, ``return_vs_steps.png`` when games were
    played, ``similarity.png``, one ``checkpoint_<steps>.png`` mean map per checkpoint), ``states.mp4``
    (unless ``video`` is False) and ``report.html``; returns the page."""
    out, rows = result.out, result.rows
    figures = _plots(out, rows, result.similarity)
    maps = {}
    for row, relevance in zip(rows, result.maps):
        maps[row["timesteps"]] = _mean_map(out / f"checkpoint_{row['timesteps']}.png", result.states, relevance, row)
    if video:
        _video(out / "states.mp4", result.states, result.maps, [f"{r['timesteps']:,} steps" for r in rows])
    _report(out, rows, result.meta, video, figures, maps)
    return out / "report.html"


def _colour(name: str) -> tuple[float, float, float]:
    return tuple(c / 255 for c in category_colour(name))


def _plots(out: Path, rows: list[dict], similarity: np.ndarray) -> list[str]:
    steps = [r["timesteps"] for r in rows]
    figures = []
    densities = [k for k in rows[0] if k.startswith("density_")]
    keys = densities or [k for k in rows[0] if k.startswith("share_")]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for key in keys:
        name = key.split("_", 1)[1]
        ax.plot(steps, [r[key] for r in rows], "o-", label=name, color=_colour(name) if densities else None)
    if densities:
        ax.set_yscale("log")
        ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
    ax.set(xlabel="training steps", ylabel="mean density (share / area), log" if densities else "mean share",
           title="where the agent looks on the fixed states, over training")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(out / "densities_vs_steps.png", dpi=100)
    figures.append("densities_vs_steps.png")
    if any(r["returns"] for r in rows):
        fig = Figure(figsize=(7, 4))
        ax = fig.subplots()
        for r in rows:
            games = [float(g) for g in r["returns"].split()]
            ax.plot([r["timesteps"]] * len(games), games, ".", color="tab:green", alpha=0.4)
        ax.errorbar(steps, [r["mean_return"] for r in rows], yerr=[r["std_return"] for r in rows], fmt="o-",
                    color="tab:green", capsize=4, label="mean +- std over games; dots: single games")
        ax.set(xlabel="training steps", ylabel="return (full games)", title="return over training")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "return_vs_steps.png", dpi=100)
        figures.append("return_vs_steps.png")
    fig = Figure(figsize=(1.2 * len(rows) + 3, 1.0 * len(rows) + 2.5))
    ax = fig.subplots()
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
    figures.append("similarity.png")
    return figures


def _mean_map(path: Path, states: dict, relevance: np.ndarray, row: dict) -> str:
    """One checkpoint's mean relevance on the fixed states, over their mean frame, with its colour scale."""
    mean = relevance.sum(-1).mean(0)
    frame = states["frames"].mean(0).round().astype(np.uint8)
    scale = render.robust_max(mean) or 1.0
    fig = Figure(figsize=(3.2, 4.2))
    ax = fig.subplots()
    ax.imshow(render.overlay(frame, render.to_native(mean), scale))
    ax.axis("off")
    ax.set_title(f"{row['timesteps']:,} steps: mean relevance\n(colour scale +-{scale:.2g})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path.name


def _video(path: Path, states: dict[str, np.ndarray], maps: list[np.ndarray], labels: list[str]) -> None:
    scales = [render.robust_max(m.sum(-1)) or 1.0 for m in maps]  # each checkpoint on its own scale
    writer = VideoWriter(path, fps=5, gif=False)
    try:
        for i in range(len(states["obs"])):
            panels = [render.captioned(render.upscale(render.overlay(states["frames"][i], render.to_native(
                m[i].sum(-1)), scale), 2), label, band=24, scale=0.5) for m, scale, label in zip(maps, scales, labels)]
            writer.write(np.hstack(panels))
    finally:
        writer.close()




def _report(out: Path, rows: list[dict], meta: dict, video: bool, figures: list[str], maps: dict) -> None:
    keys = ["timesteps", "mean_return", "std_return", "games", "card_return", "card_games"] + \
        [k for k in rows[0] if k.startswith(("share_", "density_"))]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["checkpoint"] + keys)
    body = "".join(
        f'<tr id="row-{r["timesteps"]}"><td><a href="#ckpt-{r["timesteps"]}">{html.escape(r["label"])}</a></td>'
        + "".join(f"<td>{html.escape(format_value(r.get(k, '')))}</td>" for k in keys) + "</tr>" for r in rows)
    sections = "".join(
        f'<figure id="ckpt-{r["timesteps"]}"><img src="{maps[r["timesteps"]]}" alt="mean relevance at '
        f'{r["timesteps"]} steps"><figcaption><a href="#row-{r["timesteps"]}">{html.escape(r["label"])}</a>, return '
        f'{format_value(r["mean_return"])}</figcaption></figure>' for r in rows)
    video_html = ('<h2>The same states, each checkpoint\'s relevance</h2><video src="states.mp4" controls loop '
                  'width="100%"></video><p>Each checkpoint\'s heatmap is normalised on its own scale (Q-values '
                  'grow over training).</p>' if video else "")
    categories = meta["categories"] if isinstance(meta["categories"], str) else ", ".join(meta["categories"])
    returns = (f"each checkpoint also played {meta['games']} full games (at most {meta['max_steps']} steps; its own "
               f"stochastic policy) for its return" if meta["games"] else "no games were played (--games 0)")
    returns += ("; card_return is the mean over the model card's games (card_games), the better estimate"
                if any(r["card_games"] for r in rows) else "")
    images = " ".join(f'<img src="{f}" alt="{f}">' for f in figures)
    origin = "" if meta["states_from"] == "collected" else f"from {html.escape(meta['states_from'])}, "
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>rlexplain: checkpoints on {html.escape(meta['env_id'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px;text-align:right}}img{{max-width:49%}}
figure{{display:inline-block;margin:4px;text-align:center;font-size:12px}}figure img{{max-width:220px}}
tr:target,figure:target{{background:#ffeeb0}}</style></head>
<body><h1>Checkpoints compared on {html.escape(meta['env_id'])}</h1>
<p>{meta['n_states']} fixed states ({origin}collected by {html.escape(meta['reference'])}), seed {meta['seed']}, method {html.escape(meta['composite'])}; {returns}.
Shares are fractions of each state's positive relevance on the objects read from RAM ({html.escape(categories)}),
averaged over the states; density = share / area share (1: as much evidence as area).
Red/yellow: evidence for the chosen action, blue: against.</p>
<div style="overflow-x:auto"><table><tr>{head}</tr>{body}</table></div>
<p>{images}</p>
<h2>Each checkpoint's mean relevance on the fixed states</h2>
<div>{sections}</div>
{video_html}
<p>Files: <a href="summary.csv">summary.csv</a>, <a href="similarity.csv">similarity.csv</a>,
<a href="compare.json">compare.json</a>, <a href="states.npz">states.npz</a> (reuse with --states).</p>
</body></html>
"""
    (out / "report.html").write_text(page)

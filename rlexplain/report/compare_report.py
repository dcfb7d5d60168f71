"""The comparison report: figures, the states video and ``report.html`` of a :class:`~rlexplain.compare.CompareResult`."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from rlexplain import render
from rlexplain.compare import CompareResult, format_value
from rlexplain.video import VideoWriter


def write(result: CompareResult, video: bool = True) -> Path:
    """Write ``shares_vs_steps.png``, ``return_vs_steps.png``, ``similarity.png``, ``states.mp4``
    (unless ``video`` is False) and ``report.html`` into the comparison's folder; returns the page."""
    out, rows = result.out, result.rows
    _plots(out, rows, result.similarity)
    if video:
        _video(out / "states.mp4", result.states, result.maps, [f"{r['timesteps']:,} steps" for r in rows])
    _report(out, rows, result.similarity, result.meta, video)
    return out / "report.html"


def _plots(out: Path, rows: list[dict], similarity: np.ndarray) -> None:
    steps = [r["timesteps"] for r in rows]
    shares = [k for k in rows[0] if k.startswith("share_")]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for key in shares:
        ax.plot(steps, [r[key] for r in rows], "o-", label=key[len("share_"):])
    ax.set(xlabel="training steps", ylabel="mean share of positive relevance on the fixed states",
           title="where the agent attends, over training")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "shares_vs_steps.png", dpi=100)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(steps, [r["mean_return"] for r in rows], "o-", color="tab:green")
    ax.set(xlabel="training steps", ylabel="mean return (full games)", title="return over training")
    fig.tight_layout()
    fig.savefig(out / "return_vs_steps.png", dpi=100)
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




def _video(path: Path, states: dict[str, np.ndarray], maps: list[np.ndarray], labels: list[str]) -> None:
    import cv2

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
                   "".join(f"<td>{html.escape(format_value(r.get(k, '')))}</td>" for k in keys) + "</tr>" for r in rows)
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

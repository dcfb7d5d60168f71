"""The sweep's ``report.html``: per game, attention over training, returns and faithfulness, and every job's row."""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from rlexplain.objects import category_colour
from rlexplain.report.evaluate_report import colours

if TYPE_CHECKING:
    from rlexplain.sweep import SweepResult

#: Which page of a job's folder the table links to.
_PAGES = {"record": "plots/", "evaluate": "abc.png", "compare": "report.html", "strategies": "report.html"}


def write(result: SweepResult) -> Path:
    """Write ``figures/*.png`` and ``report.html`` into the sweep's folder; returns the page."""
    out = result.out
    (out / "figures").mkdir(exist_ok=True)
    done = [r for r in result.rows if r["status"] in ("complete", "skipped")]
    sections = []
    for game in dict.fromkeys(r["game"] for r in result.rows):
        figures = [f for f in (_attention(out, game, done), _returns(out, game, done), _faithfulness(out, game, done))
                   if f]
        images = "".join(f'<img src="figures/{f}" alt="{html.escape(f)}">' for f in figures)
        sections.append(f"<h2>{html.escape(game)}</h2>" + (images or "<p>No finished record or evaluate jobs yet.</p>"))
    keys = list(dict.fromkeys(k for r in result.rows for k in r))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr class='{}'>".format(html.escape(r["status"].replace(" ", "-")))
                   + "".join(f"<td>{_cell(k, r)}</td>" for k in keys) + "</tr>" for r in result.rows)
    status = ", ".join(f"{n} {html.escape(s)}" for s, n in result.counts().items())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>rlexplain sweep: {html.escape(out.name)}</title>
<style>body{{font-family:sans-serif;max-width:1300px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:12px;text-align:right}}img{{max-width:49%}}
tr.failed td{{background:#fde2e2}}tr.not-run td,tr.interrupted td{{background:#f2f2f2}}</style></head>
<body><h1>Sweep {html.escape(out.name)}</h1>
<p>{len(result.rows)} jobs ({html.escape(result.backend)}): {status}. Skipped jobs had finished in an earlier run of
this sweep with the same agents and options; their figures are read from their folders.
Attention: the mean density of positive relevance on each object (its share of the relevance over its share of the
screen; 1 = as much evidence as area) over each recorded run, averaged over seeds. Faithfulness: the area between the
MoRF and LeRF region-perturbation curves (abc, higher = more faithful) of each method.</p>
{''.join(sections)}
<h2>Jobs</h2>
<div style="overflow-x:auto"><table><tr>{head}</tr>{body}</table></div>
<p>The same as CSV: <a href="sweep.csv">sweep.csv</a>.</p>
</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path


def _cell(key: str, row: dict) -> str:
    value = row.get(key, "")
    if key == "output" and value:
        page = _PAGES.get(row["job"], "")
        return f'<a href="{html.escape(str(value))}/{page}">{html.escape(Path(str(value)).name)}</a>'
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _x(row: dict) -> int | str:
    """Where a job's figures go on the x axis: its agent's training steps, or its name when they are unknown."""
    return row["timesteps"] if isinstance(row["timesteps"], (int, float)) else str(row["agent"])


def _series(rows: list[dict], key: str) -> tuple[list, list[float], list[float]]:
    """x (:func:`_x`), mean and std over seeds of ``key``."""
    by_x: dict = defaultdict(list)
    for r in rows:
        value = r.get(key)
        if isinstance(value, (int, float)) and np.isfinite(value):
            by_x[_x(r)].append(float(value))
    xs = list(by_x)
    return xs, [float(np.mean(by_x[x])) for x in xs], [float(np.std(by_x[x])) for x in xs]


def _save(fig: Figure, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / "figures" / name, dpi=90)
    return name


def _axis(ax, xs: list) -> None:
    if xs and all(isinstance(x, (int, float)) for x in xs):
        ax.set_xlabel("training steps")
    else:
        ax.set_xlabel("agent")
        ax.tick_params(axis="x", labelrotation=30)


def _attention(out: Path, game: str, rows: list[dict]) -> str | None:
    records = [r for r in rows if r["job"] == "record" and r["game"] == game]
    methods = list(dict.fromkeys(r["method"] for r in records))
    if not methods:
        return None
    fig = Figure(figsize=(6.5 * len(methods), 4))
    for ax, method in zip(np.atleast_1d(fig.subplots(1, len(methods))), methods):
        mine = [r for r in records if r["method"] == method]
        keys = [k for k in mine[0] if k.startswith("density_")] or [k for k in mine[0] if k.startswith("share_")]
        for key in keys:
            name = key.split("_", 1)[1]
            xs, mean, std = _series(mine, key)
            colour = tuple(c / 255 for c in category_colour(name))
            ax.errorbar(xs, mean, yerr=std, fmt="o-", capsize=3, label=name, color=colour)
        if keys and keys[0].startswith("density_"):
            ax.set_yscale("log")
            ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
        _axis(ax, [_x(r) for r in mine])
        ax.set(ylabel="mean density (log)" if keys and keys[0].startswith("density_") else "mean share",
               title=f"{game}: where the agent looks ({method})")
        ax.legend(fontsize=8, frameon=False)
    return _save(fig, out, f"attention_{game}.png")


def _returns(out: Path, game: str, rows: list[dict]) -> str | None:
    records = [r for r in rows if r["job"] == "record" and r["game"] == game]
    if not records:
        return None
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for r in records:  # every run a dot, the mean over seeds a line
        if isinstance(r.get("return"), (int, float)):
            ax.plot([_x(r)], [r["return"]], ".", color="tab:green", alpha=0.5)
    xs, mean, _ = _series(records, "return")
    ax.plot(xs, mean, "o-", color="tab:green", label="mean over seeds and methods")
    _axis(ax, xs)
    ax.set(ylabel="return of the recorded games", title=f"{game}: returns")
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, out, f"returns_{game}.png")


def _faithfulness(out: Path, game: str, rows: list[dict]) -> str | None:
    evaluations = [r for r in rows if r["job"] == "evaluate" and r["game"] == game]
    keys = list(dict.fromkeys(k for r in evaluations for k in r if k.startswith("abc_")))
    if not keys:
        return None
    methods = [k[len("abc_"):] for k in keys]
    colour = colours(methods)
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for method, key in zip(methods, keys):
        xs, mean, std = _series(evaluations, key)
        failed = any(r.get(f"sanity_{method}") == "fail" for r in evaluations)
        ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3,
                    color=colour[method], ls=":" if failed else "-",
                    label=method + (" (fails randomisation)" if failed else ""))
    ax.axhline(0, color="0.6", lw=0.8)
    _axis(ax, [_x(r) for r in evaluations])
    ax.set(ylabel="abc (MoRF - LeRF), higher = more faithful", title=f"{game}: faithfulness")
    ax.legend(fontsize=7, frameon=False)
    return _save(fig, out, f"faithfulness_{game}.png")

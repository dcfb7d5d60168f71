"""Figures of an evaluation: perturbation curves with bands, abc with error bars, randomisation correlations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from rlexplain.evaluate import SANITY_THRESHOLD, EvaluateResult


def colours(methods: list[str]) -> dict[str, tuple]:
    """One colour per method, the same in every figure (``random`` in grey)."""
    from matplotlib import colormaps

    palette = colormaps["tab20"].colors
    others = [m for m in methods if m != "random"]
    out = {m: palette[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20] for i, m in enumerate(others)}
    out["random"] = (0.5, 0.5, 0.5)
    return out


def write(result: EvaluateResult) -> list[Path]:
    """Write ``curves.png``, ``abc.png`` and ``randomisation.png`` into the evaluation folder."""
    out, rows = result.out, result.rows
    methods = [r["method"] for r in rows]
    colour = colours(methods)
    summary = result.summary
    title = f"{summary.get('agent', {}).get('name')} on {summary.get('game')}"
    paths = [out / "curves.png", out / "abc.png", out / "randomisation.png"]

    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, order, label in zip(axes, ("morf", "lerf"), ("most relevant first (MoRF)", "least relevant first (LeRF)")):
        for method in methods:
            curve = [c for c in result.curves if c["method"] == method and c["order"] == order]
            k = np.array([c["step"] for c in curve])
            mean = np.array([c["mean_output"] for c in curve])
            se = np.array([c["se"] for c in curve])
            ax.plot(k, mean, color=colour[method], lw=1.4, ls="--" if method == "random" else "-", label=method)
            ax.fill_between(k, mean - se, mean + se, color=colour[method], alpha=0.15, lw=0)
        ax.set(xlabel="regions replaced", title=label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{summary.get('measured_output', 'explained output')}\n(mean over states, band: 1 s.e.)")
    axes[1].legend(fontsize=7, ncol=2, loc="lower left")
    fig.suptitle(f"region perturbation, {title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(paths[0], dpi=110)

    ranked = sorted(rows, key=lambda r: r["abc"])
    fig = Figure(figsize=(7, 0.35 * len(rows) + 1.4))
    ax = fig.subplots()
    y = np.arange(len(ranked))
    ax.barh(y, [r["abc"] for r in ranked], xerr=[r["abc_se"] for r in ranked], color=[colour[r["method"]] for r in ranked],
            capsize=3)
    ax.set_yticks(y, [f"{r['method']} ({r['sanity'] or 'no check'})" for r in ranked], fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set(xlabel="abc = AOPC(MoRF) - AOPC(LeRF)   (higher: more faithful; bars: 1 s.e.)",
           title=f"faithfulness, {title}")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=110)

    fig = Figure(figsize=(7.5, 0.35 * len(rows) + 2.0))
    ax = fig.subplots()
    ax.barh(y - 0.2, [r["rho_top"] for r in ranked], 0.4, color="tab:orange", label="top layer randomised")
    ax.barh(y + 0.2, [r["rho_all"] for r in ranked], 0.4, color="tab:purple", label="all layers randomised")
    ax.axvline(SANITY_THRESHOLD, color="k", ls="--", lw=0.8, label=f"pass threshold ({SANITY_THRESHOLD})")
    ax.set_yticks(y, [r["method"] for r in ranked], fontsize=8)
    ax.set(xlabel="Spearman correlation with the original |map|\n(low: the map depends on the weights)",
           title=f"model randomisation, {title}", xlim=(-0.2, 1.05))
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=110)
    return paths

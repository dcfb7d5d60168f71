"""The strategies report: eigengap, embedding, prototypes, shares over training, event-aligned densities,
cluster and highlight videos, ``report.html``; and the ViRelAy export."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from rlexplain import render, runs
from rlexplain.objects import category_colour
from rlexplain.strategies import EVENT_WINDOW, StrategiesResult
from rlexplain.video import VideoWriter

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78"]


def _c(k: int) -> str:
    return PALETTE[k % len(PALETTE)]


def _overlay(frame: np.ndarray, heat: np.ndarray) -> np.ndarray:
    return render.overlay(frame, render.to_native(heat), render.robust_max(heat) or 1.0)


def write(result: StrategiesResult, videos: bool = True) -> Path:
    """Write the figures, videos and ``report.html`` into the result's folder; returns the page."""
    out, sp = result.out, result.spectral
    figures = []

    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    shown = sp.eigenvalues[: max(sp.k + 3, 8)]
    ax.plot(np.arange(1, len(shown) + 1), shown, "o-", color="k")
    ax.axvline(sp.k + 0.5, color="tab:red", ls="--", label=f"k = {sp.k}")
    ax.set(xlabel="index", ylabel="eigenvalue of the normalised Laplacian",
           title="eigengap: k small eigenvalues before the largest gap")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "eigengap.png", dpi=100)
    figures.append("eigengap.png")

    fig = Figure(figsize=(11, 4.6))
    axes = fig.subplots(1, 2)
    for c in range(sp.k):
        sel = sp.labels == c
        axes[0].scatter(*result.xy[sel].T, s=5, color=_c(c), label=f"{c}: {result.clusters[c]['label']}")
    for i, r in enumerate(result.runs):
        sel = result.index.run == i
        axes[1].scatter(*result.xy[sel].T, s=5, label=r["label"], color=PALETTE[(i * 3) % len(PALETTE)])
    axes[0].set_title("strategies", fontsize=10)
    axes[1].set_title("runs / checkpoints", fontsize=10)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, markerscale=2.5, loc="best")
    fig.suptitle(result.embedding_method, fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "embedding.png", dpi=100)
    figures.append("embedding.png")

    cols = 1 + 8
    fig = Figure(figsize=(1.25 * cols, 1.9 * sp.k + 0.4))
    axes = np.atleast_2d(fig.subplots(sp.k, cols))
    for c in range(sp.k):
        proto = result.prototypes[c]
        axes[c, 0].imshow(_overlay(proto["frame"], proto["map"]))
        info = result.clusters[c]
        axes[c, 0].set_title(f"{c}: {info['label']}\n{info['share']:.0%} of steps", fontsize=7, loc="left")
        for j in range(1, cols):
            members = result.members.get(c, [])
            if j - 1 < len(members):
                axes[c, j].imshow(_overlay(members[j - 1]["frame"], members[j - 1]["map"]))
        for ax in axes[c]:
            ax.axis("off")
    fig.suptitle("prototype (mean map over mean frame), then the 8 members nearest the centre", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "prototypes.png", dpi=90)
    figures.append("prototypes.png")

    fig = Figure(figsize=(max(5, 1.3 * len(result.over_training) + 2), 3.8))
    ax = fig.subplots()
    bottom = np.zeros(len(result.over_training))
    labels = [f"{r['run']}" for r in result.over_training]
    for c in range(sp.k):
        shares = np.array([r[f"strategy_{c}"] for r in result.over_training])
        ax.bar(labels, shares, bottom=bottom, color=_c(c), label=f"{c}: {result.clusters[c]['label']}")
        bottom += shares
    ax.set(ylabel="share of the run's steps", title="strategies per run (checkpoints in training order)")
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    fig.savefig(out / "strategies_over_training.png", dpi=100)
    figures.append("strategies_over_training.png")

    if result.events:
        fig = Figure(figsize=(4.2 * len(result.events), 3.6))
        axes = np.atleast_1d(fig.subplots(1, len(result.events), sharey=True))
        for ax, (name, objects) in zip(axes, result.events.items()):
            n_events = 0
            for obj, curve in objects.items():
                x = np.array(curve["offset"])
                mean, ci = np.array(curve["mean"]), np.array(curve["ci"])
                colour = np.array(category_colour(obj)) / 255
                ax.plot(x, mean, color=colour, label=obj)
                ax.fill_between(x, mean - ci, mean + ci, color=colour, alpha=0.2, lw=0)
                n_events = curve["events"]
            ax.axvline(0, color="k", lw=0.8)
            ax.set(title=f"{name} ({n_events} events)", xlabel="steps from the event", xlim=EVENT_WINDOW)
            ax.set_yscale("log")
        axes[0].set_ylabel("density (share / area), log\nmean and 95% interval")
        axes[-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "events.png", dpi=100)
        figures.append("events.png")

    video_links = []
    if videos:
        for c in range(sp.k):
            path = out / f"strategy_{c}.mp4"
            _video(path, [(m["frame"], m["map"], f"strategy {c}: {result.clusters[c]['label']} | {m['run']} "
                           f"ep {m['episode']} step {m['step']}") for m in result.members.get(c, [])], fps=4)
            video_links.append(path.name)
        frames = []
        for h_i, h in enumerate(result.highlights):
            for m in h.get("frames", []):
                tag = " <-- the moment" if m["step"] == h["step"] else ""
                frames.append((m["frame"], m["map"], f"highlight {h_i + 1}: importance {h['importance']:.3g}, "
                                                    f"{h['label']} ep {h['episode']} step {m['step']}{tag}"))
        _video(out / "highlights.mp4", frames, fps=8)
        video_links.append("highlights.mp4")
    return _page(result, figures, video_links)


def _video(path: Path, frames: list[tuple[np.ndarray, np.ndarray, str]], fps: int) -> None:
    if not frames:
        return
    writer = VideoWriter(path, fps=fps)
    try:
        for frame, heat, caption in frames:
            writer.write(render.captioned(render.upscale(_overlay(frame, heat), 2), caption[:90], width=640))
    finally:
        writer.close()


def _page(result: StrategiesResult, figures: list[str], videos: list[str]) -> Path:
    e = html.escape
    rows = []
    for c in result.clusters:
        actions = ", ".join(f"{a} {p:.0%}" for a, p in sorted(c["actions"].items(), key=lambda kv: -kv[1]) if p >= 0.05)
        dens = ", ".join(f"{n} {d:.2g}" for n, d in c["densities"].items() if np.isfinite(d))
        runs_ = ", ".join(f"{n}: {m}" for n, m in c["runs"].items())
        rows.append(f"<tr><td>{c['cluster']}</td><td>{e(c['label'])}</td><td>{c['size']}</td><td>{c['share']:.1%}</td>"
                    f"<td>{e(actions)}</td><td>{e(dens)}</td><td>{c['when']['step_median']:.0f} / "
                    f"{c['when']['score_median']:.0f} / {c['when']['lives_median']:.0f}</td>"
                    f"<td>{c['follows']['reward_within_30']:.0%} / {c['follows']['life_lost_within_30']:.0%}</td>"
                    f"<td>{e(runs_)}</td><td><a href=\"strategy_{c['cluster']}.mp4\">video</a></td></tr>")
    training = "".join(f"<tr><td>{e(str(r['run']))}</td><td>{r['timesteps']}</td><td>{r['maps']}</td>" +
                       "".join(f"<td>{r[f'strategy_{c}']:.1%}</td>" for c in range(result.spectral.k)) + "</tr>"
                       for r in result.over_training)
    highlights = "".join(f"<tr><td>{i + 1}</td><td>{e(h['label'])}</td><td>{h['episode']}</td><td>{h['step']}</td>"
                         f"<td>{h['importance']:.3g}</td><td>{h['cluster']}</td></tr>"
                         for i, h in enumerate(result.highlights))
    images = "".join(f'<p><img src="{f}" alt="{f}"></p>' for f in figures)
    links = ", ".join(f'<a href="{v}">{v}</a>' for v in videos)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>rlexplain strategies: {e(result.game)}</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:2em auto}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px}}img{{max-width:100%}}</style></head><body>
<h1>Strategies of {e(", ".join(r["label"] for r in result.runs))} on {e(result.game)}</h1>
<p>{len(result.spectral.labels)} relevance maps, SpRAy: k = {result.spectral.k} strategies. Labels name the densest
objects (density = share of the evidence / share of the area) and where the prototype's evidence peaks.</p>
<table><tr><th>#</th><th>label</th><th>maps</th><th>share</th><th>actions</th><th>densities</th>
<th>median step / score / lives</th><th>then: reward / life lost within 30 steps</th><th>runs</th><th></th></tr>
{''.join(rows)}</table>
<h2>Over training</h2><table><tr><th>run</th><th>timesteps</th><th>maps</th>
{''.join(f'<th>{c}</th>' for c in range(result.spectral.k))}</tr>{training}</table>
<h2>Important moments (HIGHLIGHTS-DIV)</h2><table><tr><th>#</th><th>run</th><th>episode</th><th>step</th>
<th>importance</th><th>strategy</th></tr>{highlights}</table>
{images}
<p>Videos: {links}. Files: <a href="clusters.csv">clusters.csv</a>, <a href="strategies.json">strategies.json</a>.</p>
</body></html>
"""
    path = result.out / "report.html"
    path.write_text(page)
    return path


def export_virelay(result: StrategiesResult, folder: Path | None = None) -> Path:
    """Write the analysis as a ViRelAy project (ViRelAy's documented HDF5 database layout): ``input.h5``
    (the newest stacked frame of each step, float32 N x 1 x H x W in [0, 1], labelled with the chosen
    action), ``attribution.h5`` (the maps summed over stacked frames), ``analysis.h5`` (spectral embedding
    with eigenvalues, the 2-D embedding, k-means labels, average prototypes), ``label-map.json``, ``project.yaml``."""
    import h5py

    folder = Path(folder or result.out / "virelay")
    folder.mkdir(parents=True, exist_ok=True)
    n = len(result.spectral.labels)
    position = {(int(r), int(e), int(s)): i for i, (r, e, s) in enumerate(zip(result.index.run, result.index.episode,
                                                                               result.index.step))}
    actions = None
    with h5py.File(folder / "input.h5", "w") as fin, h5py.File(folder / "attribution.h5", "w") as fat:
        for r in result.runs:
            run_dir = Path(r["dir"])
            columns = runs.read_steps(run_dir)
            for e in runs.episodes_on_disk(run_dir):
                ep_actions = columns["action"][columns["episode"] == e].astype(int)
                for chunk in runs.iter_maps(run_dir, e, ["relevance", "obs", "step"]):
                    for j, t in enumerate(chunk["step"].astype(int)):
                        i = position.get((r["index"], e, t))
                        if i is None:
                            continue
                        rel = chunk["relevance"][j]
                        if rel.ndim == 4:
                            rel = rel[ep_actions[t]]
                        if actions is None:
                            h, w = rel.shape[:2]
                            data = fin.create_dataset("data", (n, 1, h, w), "float32", chunks=(1, 1, h, w))
                            attribution = fat.create_dataset("attribution", (n, 1, h, w), "float32", chunks=(1, 1, h, w))
                            actions = np.zeros(n, np.uint32)
                            n_actions = len([k for k in columns if k.startswith("value_")])
                            prediction = np.zeros((n, n_actions), np.float32)
                            names = [k[len("value_"):] for k in columns if k.startswith("value_")]
                        data[i, 0] = chunk["obs"][j][..., -1] / 255.0
                        attribution[i, 0] = rel.sum(-1)
                        actions[i] = ep_actions[t]
                        prediction[i] = [columns[f"value_{a}"][columns["episode"] == e][t] for a in names]
        fin.create_dataset("label", data=actions)
        fat.create_dataset("index", data=np.arange(n, dtype=np.uint32))
        fat.create_dataset("label", data=actions)
        fat.create_dataset("prediction", data=prediction)
    sp = result.spectral
    with h5py.File(folder / "analysis.h5", "w") as f:
        g = f.create_group("all")
        g.create_dataset("name", data="all steps")
        g.create_dataset("index", data=np.arange(n, dtype=np.uint32))
        spectral = g.create_group("embedding/spectral")
        spectral.create_dataset("name", data="spectral embedding (kNN graph, normalised Laplacian)")
        spectral.create_dataset("root", data=sp.embedding.astype(np.float32))
        spectral.create_dataset("eigenvalue", data=sp.eigenvalues[: sp.embedding.shape[1]].astype(np.float32))
        tsne = g.create_group("embedding/tsne")
        tsne.create_dataset("name", data=result.embedding_method)
        tsne.create_dataset("root", data=result.xy.astype(np.float32))
        tsne["base"] = spectral
        clustering = g.create_group(f"clustering/kmeans-{sp.k:02d}")
        clustering.create_dataset("name", data=f"k-means, k = {sp.k}")
        clustering.create_dataset("root", data=sp.labels.astype(np.uint32))
        clustering["base"] = spectral
        clustering.attrs["#clusters"] = sp.k
        proto = clustering.create_group("prototype/average")
        proto.create_dataset("name", data="average map")
        proto.create_dataset("root", data=np.stack([p["map"] for p in result.prototypes])[:, None].astype(np.float32))
    (folder / "label-map.json").write_text(json.dumps([{"index": i, "name": a} for i, a in enumerate(names)], indent=1))
    method = next(iter(result.runs), {}).get("label", "agent")
    (folder / "project.yaml").write_text(
        f"project:\n  name: rlexplain strategies ({result.game})\n  model: {method}\n  label_map: label-map.json\n"
        f"  dataset:\n    name: {result.game} steps\n    type: hdf5\n    path: input.h5\n"
        f"    input_width: {w}\n    input_height: {h}\n    up_sampling_method: none\n    down_sampling_method: none\n"
        f"  attributions:\n    attribution_method: LRP (rlexplain)\n    attribution_strategy: predicted_label\n"
        f"    sources:\n    - attribution.h5\n  analyses:\n  - analysis_method: Spectral\n    sources:\n    - analysis.h5\n")
    return folder / "project.yaml"

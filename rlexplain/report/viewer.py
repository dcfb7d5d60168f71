"""``rlexplain view RUN_DIR``: one self-contained ``view.html`` to explore a recorded run in a browser.

The page embeds everything (no network request, works from ``file://``): per step the native frame,
the agent's stacked input frames, the relevance map (as stored: 6-bit levels and a scale), the object
boxes read from RAM, and the ``steps.csv`` columns the timeline draws. Frames and maps travel as
deflated chunks of :data:`CHUNK` steps, decompressed by the browser (``DecompressionStream``) when
shown, so long episodes stay light in memory.

The page exposes ``window.rlexplainViewer`` for scripts and tests:

``ready``                      a Promise resolved once the first frame is drawn
``step``, ``episode``, ``nSteps``  the current step and episode, and the episode's length
``seek(step)``                 show a step; returns a Promise resolved when it is drawn
``setEpisode(k)``              show episode ``k`` (Promise)
``setOverlay(on)``, ``setBoxes(on)``  toggle the heatmap and the object boxes (Promises)
``cursorX()``                  the timeline cursor's x position in canvas pixels
``gameMean()``                 mean RGB of the game canvas (for tests)

Keys: right/left arrow = one agent step (shift: 10), space = play/pause, Home/End, ``o`` overlay, ``b`` boxes.
"""

from __future__ import annotations

import base64
import html
import json
import zlib
from pathlib import Path

import numpy as np

from rlexplain import envs, render, runs
from rlexplain.errors import RunError
from rlexplain.objects import category_colour, extractor_for
from rlexplain.report.plots import density_series

#: Steps per embedded chunk.
CHUNK = 64


def _chunks(run_dir: Path, episode: int, actions: np.ndarray, objects,
            categories: list[str]) -> tuple[list[str], dict, int]:
    """The episode's steps as base64 deflated chunks (frames, input frames, map levels, map scales, boxes),
    their shapes, and how many steps they hold."""
    encoded, shapes, count = [], {}, 0
    buffers: dict[str, list] = {"frames": [], "obs": [], "q": [], "scale": [], "boxes": []}

    def flush() -> None:
        if not buffers["frames"]:
            return
        boxes = json.dumps(buffers["boxes"], separators=(",", ":")).encode()
        arrays = [np.stack(buffers["frames"]), np.stack(buffers["obs"]), np.stack(buffers["q"]),
                  np.asarray(buffers["scale"], np.float32)]
        shapes.update(frame=list(arrays[0].shape[1:]), obs=list(arrays[1].shape[1:]))
        payload = b"".join(a.tobytes() for a in arrays) + boxes
        encoded.append(base64.b64encode(zlib.compress(payload, 6)).decode())
        for v in buffers.values():
            v.clear()

    for chunk in runs.iter_maps(run_dir, episode, ["relevance", "frames", "obs", "ram", "step"]):
        for i, step in enumerate(chunk["step"].astype(int)):
            if step >= len(actions):  # maps of a step whose CSV row was lost (a killed run)
                break
            count += 1
            relevance = chunk["relevance"][i]
            if relevance.ndim == 4:  # --action all: the map of the action taken
                relevance = relevance[int(actions[step])]
            q, scale = runs.quantise(relevance)
            buffers["frames"].append(chunk["frames"][i])
            buffers["obs"].append(chunk["obs"][i])
            buffers["q"].append(q)
            buffers["scale"].append(scale)
            labelled = objects.boxes(chunk["ram"][i]) if objects is not None and "ram" in chunk else []
            buffers["boxes"].append([[categories.index(c), *(round(float(v), 1) for v in box)]
                                     for c, box in labelled if c in categories])
            if len(buffers["frames"]) == CHUNK:
                flush()
    flush()
    return encoded, shapes, count


def build(run_dir: str | Path) -> dict:
    """The data the page embeds, per episode (see the module docstring)."""
    run_dir = Path(run_dir)
    summary = runs.read_summary(run_dir)
    columns = runs.read_steps(run_dir)
    if not columns:
        raise RunError(f"{run_dir} has no recorded steps to view")
    episodes = runs.episodes_on_disk(run_dir)
    if not episodes:
        raise RunError(f"{run_dir} stores no maps (recorded with --no-maps?): the viewer needs them")
    series, series_label = density_series(columns)
    objects = extractor_for(summary["env_id"]) if summary.get("env_id") else None
    categories = list(objects.categories) if objects else []
    value_keys = [k for k in columns if k.startswith("value_")]
    out = {"title": f"{summary.get('agent', {}).get('name')} on {summary.get('game')}",
           "method": summary.get("composite"), "target": summary.get("target", "chosen"),
           "values": summary.get("value_columns", "values"), "actions": [k[len("value_"):] for k in value_keys],
           "series": {name: list(category_colour(name)) for name in series}, "seriesLabel": series_label,
           "logSeries": series_label.startswith("density"),
           "categories": [[c, list(category_colour(c))] for c in categories],
           "lut": (np.concatenate([render.LUT_RGB, render.LUT_ALPHA[:, None] * 255], 1)).round().astype(int).tolist(),
           "levels": runs.RELEVANCE_LEVELS, "native": [envs.NATIVE_HEIGHT, envs.NATIVE_WIDTH], "episodes": []}
    for k in episodes:
        sel = columns["episode"] == k
        n = int(sel.sum())
        if n == 0:
            continue
        actions = columns["action"][sel].astype(int)
        chunks, shapes, stored = _chunks(run_dir, k, actions, objects, categories)
        if not stored:
            continue
        out["episodes"].append({
            "episode": k, "n": stored, "chunk": CHUNK, "chunks": chunks, "shapes": shapes,
            "action": actions.tolist(), "reward": columns["reward"][sel].tolist(),
            "score": columns["score"][sel].tolist(), "lives": columns["lives"][sel].astype(int).tolist(),
            "scale": np.nan_to_num(columns["colour_scale"][sel], nan=1.0).tolist(),
            "values": [np.nan_to_num(columns[key][sel]).round(5).tolist() for key in value_keys],
            "series": {name: np.nan_to_num(v[sel]).round(5).tolist() for name, v in series.items()},
        })
    return out


def write(run_dir: str | Path) -> Path:
    """Write ``view.html`` into the run folder; returns its path."""
    run_dir = Path(run_dir)
    data = json.dumps(build(run_dir), separators=(",", ":"))
    page = PAGE.replace("__TITLE__", html.escape(run_dir.name)).replace("__DATA__", data.replace("</", "<\\/"))
    path = run_dir / "view.html"
    path.write_text(page)
    return path


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rlexplain viewer: __TITLE__</title>
<style>
body{font-family:system-ui,sans-serif;background:#111;color:#ddd;margin:12px}
#top{display:flex;gap:16px;align-items:flex-start}
canvas.pix{image-rendering:pixelated}
#panel{min-width:300px;font-size:13px}
#panel h1{font-size:15px;margin:0 0 4px}
.muted{color:#999}
#controls{margin:8px 0;display:flex;gap:12px;align-items:center;flex-wrap:wrap;font-size:13px}
#scrub{width:480px}
#strip canvas{margin-right:6px;border:1px solid #333}
table.vals td{padding:1px 6px}
.chosen{color:#ffc800;font-weight:bold}
#timeline{cursor:pointer;background:#181818;margin-top:8px}
</style></head>
<body>
<div id="top">
 <div><canvas id="game" class="pix" width="480" height="630"></canvas></div>
 <div id="panel">
  <h1 id="title"></h1><div class="muted" id="what"></div>
  <p>step <b id="step">0</b> / <span id="nsteps"></span> &middot; score <span id="score"></span> &middot; lives
   <span id="lives"></span><br>action <span id="action" class="chosen"></span>, reward <span id="reward"></span></p>
  <table class="vals" id="vals"></table>
  <p class="muted">colour: red/yellow = evidence for the explained output, blue = against; full colour at
   &plusmn;<span id="scale"></span> (this step's 99.5th percentile of |R|)</p>
  <div id="strip"></div><div class="muted" id="striplabel">stacked input frames, oldest first, each with its own map</div>
 </div>
</div>
<div id="controls">
 <select id="episode"></select>
 <button id="play">play</button>
 <input id="scrub" type="range" min="0" value="0">
 <label><input type="checkbox" id="overlay" checked> heatmap (o)</label>
 <label><input type="checkbox" id="boxes"> object boxes (b)</label>
 <span class="muted">&larr;/&rarr; one step, shift: 10, space: play</span>
</div>
<canvas id="timeline" width="1000" height="250"></canvas>
<div class="muted" id="legend"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const $ = id => document.getElementById(id);
const game = $("game"), gctx = game.getContext("2d");
const tl = $("timeline"), tctx = tl.getContext("2d");
const [NH, NW] = D.native;
const ACTION_COLOURS = ["#1f77b4","#ff7f0e","#2ca02c","#d62728","#9467bd","#8c564b","#e377c2","#7f7f7f","#bcbd22",
  "#17becf","#aec7e8","#ffbb78","#98df8a","#ff9896","#c5b0d5","#c49c94","#f7b6d2","#dbdb8d"];
const state = {episode: 0, step: 0, overlay: true, boxes: false, playing: false, drawn: Promise.resolve()};
const cache = new Map();
function rgb(c) { return `rgb(${c[0]},${c[1]},${c[2]})`; }
function ep() { return D.episodes[state.episode]; }

async function inflate(b64) {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
async function chunk(e, index) {
  const key = e.episode + ":" + index;
  if (!cache.has(key)) {
    cache.set(key, inflate(e.chunks[index]).then(buf => {
      const n = Math.min(e.chunk, e.n - index * e.chunk);
      const [fh, fw] = e.shapes.frame, [oh, ow, oc] = e.shapes.obs;
      const fs = fh * fw * 3, os = oh * ow * oc;
      let at = 0;
      const frames = buf.subarray(at, at += n * fs), obs = buf.subarray(at, at += n * os);
      const q = new Int8Array(buf.buffer, buf.byteOffset + at, n * os); at += n * os;
      const scales = new Float32Array(buf.slice(at, at + 4 * n).buffer); at += 4 * n;
      const boxes = JSON.parse(new TextDecoder().decode(buf.subarray(at)));
      return {frames, obs, q, scales, boxes, fh, fw, oh, ow, oc, fs, os};
    }));
    if (cache.size > 12) cache.delete(cache.keys().next().value);
  }
  return cache.get(key);
}

function heatImage(values, h, w, scale) {
  const img = new ImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const k = Math.max(0, Math.min(255, Math.floor((values[i] / scale + 1) * 127.5)));
    const c = D.lut[k];
    img.data[4 * i] = c[0]; img.data[4 * i + 1] = c[1]; img.data[4 * i + 2] = c[2]; img.data[4 * i + 3] = c[3];
  }
  return img;
}
function toCanvas(img) {
  const c = document.createElement("canvas"); c.width = img.width; c.height = img.height;
  c.getContext("2d").putImageData(img, 0, 0); return c;
}

async function draw() {
  const e = ep(), t = state.step;
  const c = await chunk(e, Math.floor(t / e.chunk));
  if (e !== ep() || t !== state.step) return;  // a newer request superseded this one
  const i = t % e.chunk;
  const frame = new ImageData(c.fw, c.fh);
  for (let p = 0; p < c.fh * c.fw; p++) {
    const s = i * c.fs + 3 * p;
    frame.data[4 * p] = c.frames[s]; frame.data[4 * p + 1] = c.frames[s + 1]; frame.data[4 * p + 2] = c.frames[s + 2];
    frame.data[4 * p + 3] = 255;
  }
  gctx.imageSmoothingEnabled = false;
  gctx.drawImage(toCanvas(frame), 0, 0, game.width, game.height);
  const unit = c.scales[i] / D.levels;
  const summed = new Float32Array(c.oh * c.ow), per = [];
  for (let f = 0; f < c.oc; f++) per.push(new Float32Array(c.oh * c.ow));
  for (let p = 0; p < c.oh * c.ow; p++) {
    for (let f = 0; f < c.oc; f++) {
      const v = c.q[i * c.os + p * c.oc + f] * unit; summed[p] += v; per[f][p] = v;
    }
  }
  const scale = e.scale[t] > 0 ? e.scale[t] : 1;
  if (state.overlay) gctx.drawImage(toCanvas(heatImage(summed, c.oh, c.ow, scale)), 0, 0, game.width, game.height);
  if (state.boxes) {
    const sx = game.width / NW, sy = game.height / NH;
    for (const b of c.boxes[i]) {
      gctx.strokeStyle = rgb(D.categories[b[0]][1]); gctx.lineWidth = 2;
      gctx.strokeRect(b[1] * sx, b[2] * sy, b[3] * sx, b[4] * sy);
    }
  }
  const strip = $("strip");
  if (strip.children.length !== c.oc) {
    strip.innerHTML = "";
    for (let f = 0; f < c.oc; f++) {
      const cv = document.createElement("canvas"); cv.width = 2 * c.ow; cv.height = 2 * c.oh; cv.className = "pix";
      cv.style.width = Math.round(1.5 * c.ow) + "px";
      strip.appendChild(cv);
    }
  }
  for (let f = 0; f < c.oc; f++) {
    const grey = new ImageData(c.ow, c.oh);
    for (let p = 0; p < c.oh * c.ow; p++) {
      const g = c.obs[i * c.os + p * c.oc + f];
      grey.data[4 * p] = grey.data[4 * p + 1] = grey.data[4 * p + 2] = g; grey.data[4 * p + 3] = 255;
    }
    const ctx = strip.children[f].getContext("2d"); ctx.imageSmoothingEnabled = false;
    ctx.drawImage(toCanvas(grey), 0, 0, 2 * c.ow, 2 * c.oh);
    if (state.overlay) ctx.drawImage(toCanvas(heatImage(per[f], c.oh, c.ow, scale / c.oc)), 0, 0, 2 * c.ow, 2 * c.oh);
  }
  panel();
  timeline();
}

function panel() {
  const e = ep(), t = state.step, a = e.action[t];
  $("step").textContent = t; $("nsteps").textContent = e.n - 1; $("score").textContent = e.score[t];
  $("lives").textContent = e.lives[t]; $("action").textContent = D.actions[a]; $("reward").textContent = e.reward[t];
  $("scale").textContent = Number(e.scale[t]).toPrecision(2); $("scrub").value = t;
  const vals = e.values.map(v => v[t]), mean = vals.reduce((x, y) => x + y, 0) / vals.length;
  $("vals").innerHTML = `<tr><td class="muted">${D.values}</td><td class="muted">value</td><td class="muted">- mean</td></tr>` +
    D.actions.map((name, k) => `<tr class="${k === a ? "chosen" : ""}"><td>${k === a ? "&#9654; " : ""}${name}</td>` +
      `<td>${vals[k].toPrecision(4)}</td><td>${(vals[k] - mean >= 0 ? "+" : "") + (vals[k] - mean).toPrecision(2)}</td></tr>`).join("");
}

const TL = {left: 60, right: 10, top: 8, split: 110, bottom: 236};
function x(t) { const e = ep(); return TL.left + (tl.width - TL.left - TL.right) * (e.n > 1 ? t / (e.n - 1) : 0); }
function timeline() {
  const e = ep(); tctx.clearRect(0, 0, tl.width, tl.height);
  tctx.font = "10px sans-serif"; tctx.fillStyle = "#999";
  const lines = (series, top, bottom, log) => {
    let lo = Infinity, hi = -Infinity;
    for (const v of series) for (const y of v) { const z = log ? Math.log10(Math.max(y, 1e-3)) : y; lo = Math.min(lo, z); hi = Math.max(hi, z); }
    if (!(hi > lo)) { hi = lo + 1; }
    return (v, colour) => {
      tctx.strokeStyle = colour; tctx.lineWidth = 1; tctx.beginPath();
      v.forEach((y, t) => { const z = log ? Math.log10(Math.max(y, 1e-3)) : y;
        const py = bottom - (bottom - top) * (z - lo) / (hi - lo); t ? tctx.lineTo(x(t), py) : tctx.moveTo(x(t), py); });
      tctx.stroke();
    };
  };
  const dens = lines(Object.values(e.series), TL.top, TL.split - 6, D.logSeries);
  for (const [name, v] of Object.entries(e.series)) dens(v, rgb(D.series[name]));
  tctx.fillText(D.logSeries ? "density (log)" : "share", 2, TL.top + 10);
  const val = lines(e.values, TL.split + 4, TL.bottom - 16, false);
  e.values.forEach((v, k) => val(v, ACTION_COLOURS[k % ACTION_COLOURS.length]));
  tctx.fillStyle = "#999"; tctx.fillText(D.values, 2, TL.split + 14);
  e.action.forEach((a, t) => { tctx.fillStyle = ACTION_COLOURS[a % ACTION_COLOURS.length];
    tctx.fillRect(x(t), TL.bottom - 12, Math.max(1, x(1) - x(0)), 6); });
  tctx.fillStyle = "#999"; tctx.fillText("action", 2, TL.bottom - 6);
  e.reward.forEach((r, t) => { if (r > 0) { tctx.fillStyle = "#fff"; tctx.fillRect(x(t), TL.bottom - 4, 1.5, 4); } });
  e.lives.forEach((l, t) => { if (t && l < e.lives[t - 1]) { tctx.strokeStyle = "#888"; tctx.setLineDash([3, 3]);
    tctx.beginPath(); tctx.moveTo(x(t), TL.top); tctx.lineTo(x(t), TL.bottom); tctx.stroke(); tctx.setLineDash([]); } });
  tctx.strokeStyle = "#ffc800"; tctx.lineWidth = 1.5; tctx.beginPath();
  tctx.moveTo(x(state.step), 0); tctx.lineTo(x(state.step), tl.height); tctx.stroke();
}

function seek(t) {
  const e = ep(); state.step = Math.max(0, Math.min(e.n - 1, Math.round(t)));
  state.drawn = draw(); return state.drawn;
}
function setEpisode(k) {
  state.episode = Math.max(0, Math.min(D.episodes.length - 1, k)); $("episode").value = state.episode;
  $("scrub").max = ep().n - 1; return seek(0);
}
function setOverlay(on) { state.overlay = !!on; $("overlay").checked = state.overlay; return seek(state.step); }
function setBoxes(on) { state.boxes = !!on; $("boxes").checked = state.boxes; return seek(state.step); }

$("title").textContent = D.title;
$("what").textContent = `method ${D.method}, target ${D.target}`;
$("legend").innerHTML = "timeline: " + Object.entries(D.series).map(([n, c]) => `<span style="color:${rgb(c)}">${n}</span>`).join(", ") +
  " (" + D.seriesLabel + "); " + D.actions.map((n, k) => `<span style="color:${ACTION_COLOURS[k % ACTION_COLOURS.length]}">${n}</span>`).join(", ") +
  " (" + D.values + ", and the action band); white ticks: rewards; dashed: lives lost. Click to jump.";
D.episodes.forEach((e, k) => { const o = document.createElement("option"); o.value = k;
  o.textContent = `episode ${e.episode} (${e.n} steps)`; $("episode").appendChild(o); });
$("episode").onchange = ev => setEpisode(Number(ev.target.value));
$("scrub").oninput = ev => seek(Number(ev.target.value));
$("overlay").onchange = ev => setOverlay(ev.target.checked);
$("boxes").onchange = ev => setBoxes(ev.target.checked);
tl.onclick = ev => { const r = tl.getBoundingClientRect(), px = (ev.clientX - r.left) * tl.width / r.width;
  seek((px - TL.left) / (tl.width - TL.left - TL.right) * (ep().n - 1)); };
function play() {
  if (!state.playing) return;
  if (state.step >= ep().n - 1) { state.playing = false; $("play").textContent = "play"; return; }
  seek(state.step + 1).then(() => setTimeout(play, 1000 / 15));
}
$("play").onclick = () => { state.playing = !state.playing; $("play").textContent = state.playing ? "pause" : "play"; play(); };
document.addEventListener("keydown", ev => {
  const n = ev.shiftKey ? 10 : 1;
  if (ev.key === "ArrowRight") { seek(state.step + n); ev.preventDefault(); }
  else if (ev.key === "ArrowLeft") { seek(state.step - n); ev.preventDefault(); }
  else if (ev.key === "Home") seek(0); else if (ev.key === "End") seek(ep().n - 1);
  else if (ev.key === " ") { $("play").click(); ev.preventDefault(); }
  else if (ev.key === "o") setOverlay(!state.overlay); else if (ev.key === "b") setBoxes(!state.boxes);
});
window.rlexplainViewer = {
  get step() { return state.step; }, get episode() { return state.episode; }, get nSteps() { return ep().n; },
  seek, setEpisode, setOverlay, setBoxes, drawn: () => state.drawn,
  cursorX: () => x(state.step),
  gameMean: () => { const d = gctx.getImageData(0, 0, game.width, game.height).data; const m = [0, 0, 0];
    for (let p = 0; p < d.length; p += 4) { m[0] += d[p]; m[1] += d[p + 1]; m[2] += d[p + 2]; }
    return m.map(v => v / (d.length / 4)); },
};
window.rlexplainViewer.ready = setEpisode(0);
</script>
</body></html>
"""

"""An agent's recurring strategies, discovered from the relevance maps ``record`` stored.

**SpRAy** (Lapuschkin et al. 2019, "Unmasking Clever Hans predictors"): every map is summed over the
stacked frames, shrunk to ``size x size`` (area averaging) and scaled to unit length; a sparse
k-nearest-neighbour graph with Gaussian affinities (bandwidth: the median neighbour distance) joins
similar maps; the eigenvalues of its normalised Laplacian show how many well-separated groups
there are (the largest relative gap among the smallest eigenvalues, the *eigengap*, unless ``k`` is given);
k-means on the spectral embedding (the rows of the corresponding eigenvectors, unit length, as in
Ng, Jordan & Weiss 2002) gives the strategies. scipy's sparse eigensolver and scikit-learn's
k-means and t-SNE do the numerical work.

Around the clusters: what each strategy looks at (prototype, densities, a label), when it is used
and what follows it, how its share changes over training checkpoints, the agent's most important
moments (HIGHLIGHTS-DIV, Amir & Amir 2018), and where it looks around events (rewards, lost lives,
paddle hits). Maps are streamed chunk by chunk; only the shrunk maps of all steps stay in memory.

The computation is here; :mod:`rlexplain.report.strategies_report` draws it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rlexplain import devices, envs, runs, stats
from rlexplain.devices import resolve_device
from rlexplain.errors import RunError
from rlexplain.objects import ram_events

if TYPE_CHECKING:
    import torch

#: Steps before and after an event in the event-aligned densities.
EVENT_WINDOW = (-30, 10)
#: Steps after a strategy's use in which a reward or a lost life counts as "what follows".
FOLLOW = 30
#: At most this many maps go into t-SNE; the others are placed at their nearest embedded neighbours.
TSNE_MAX = 3000


@dataclass
class StrategyOptions:
    """:ivar k: the number of strategies, or None for the eigengap's choice (among 2..``max_k``).
    :ivar size: side of the shrunk maps. :ivar neighbours: k of the kNN graph.
    :ivar highlights: important moments to select. :ivar context: steps shown before and after each.
    :ivar seed: seeds k-means and t-SNE.
    :ivar device: where the kNN graph's distances are computed (``cpu``, ``cuda``, ``auto``): all pairs of
        maps, the part that grows fastest with the number of maps. :ivar tf32: allow TF32 there on CUDA."""

    k: int | None = None
    max_k: int = 10
    size: int = 21
    neighbours: int = 10
    highlights: int = 5
    context: int = 10
    seed: int = 0
    device: str = "cpu"
    tf32: bool = False


@dataclass
class StepIndex:
    """Which step each map is: run (index into the run folders), episode, step."""

    run: np.ndarray
    episode: np.ndarray
    step: np.ndarray

    def keys(self) -> np.ndarray:
        return np.stack([self.run, self.episode, self.step], 1)


@dataclass
class SpectralResult:
    """SpRAy's output for N maps: eigenvalues, the chosen k, labels (N,), the spectral embedding (N, k)."""

    eigenvalues: np.ndarray
    k: int
    labels: np.ndarray
    embedding: np.ndarray


# -- SpRAy, on arrays ----------------------------------------------------------------------------------
def shrink(maps: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) maps -> (N, size * size) area averages, each scaled to unit length (zero maps stay zero)."""
    import cv2

    small = np.stack([cv2.resize(np.ascontiguousarray(m, dtype=np.float32), (size, size), interpolation=cv2.INTER_AREA)
                      for m in maps]).reshape(len(maps), -1)
    norms = np.linalg.norm(small, axis=1, keepdims=True)
    return np.divide(small, norms, out=np.zeros_like(small), where=norms > 0)


def eigengap(eigenvalues: np.ndarray, max_k: int = 10) -> int:
    """The number of clusters the spectrum suggests: the k in 2..max_k after which the next eigenvalue jumps
    the most relative to its size, ``(lambda_k - lambda_{k-1}) / lambda_k`` (0-based, ascending): k near-zero
    eigenvalues, then a clear step. The relative gap is used because eigenvalues inside clusters grow slowly
    while noise adds large absolute steps further up the spectrum."""
    lam = np.asarray(eigenvalues[: max_k + 1], dtype=np.float64)
    best, best_gap = 2, -np.inf
    for k in range(2, len(lam)):
        gap = (lam[k] - lam[k - 1]) / max(lam[k], 1e-12)
        if gap > best_gap + 1e-9:
            best, best_gap = k, gap
    return best


def knn_graph(x: np.ndarray, m: int, device: str | torch.device | None = None, chunk: int = 2048):
    """The distances to each row's ``m`` nearest other rows, as a sparse (N, N) matrix (row i: its
    neighbours, nearest first), computed exactly in float32 in blocks of ``chunk`` rows on ``device``."""
    import torch
    from scipy.sparse import csr_matrix

    n = len(x)
    points = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=resolve_device(device))
    squared = (points * points).sum(1)
    indices, distances = [], []
    for start in range(0, n, chunk):
        block = points[start: start + chunk]
        d2 = (squared[start: start + chunk, None] + squared[None] - 2 * block @ points.T).clamp_min_(0)
        rows = torch.arange(len(block), device=points.device)
        d2[rows, rows + start] = float("inf")  # not its own neighbour
        values, idx = torch.topk(d2, m, dim=1, largest=False, sorted=True)
        indices.append(idx.cpu())
        distances.append(values.sqrt().cpu())
    data = torch.cat(distances).double().numpy().ravel()
    return csr_matrix((data, torch.cat(indices).numpy().ravel(), np.arange(0, n * m + 1, m)), shape=(n, n))


def spectral_clusters(features: np.ndarray, k: int | None = None, max_k: int = 10, neighbours: int = 10,
                      seed: int = 0, keys: np.ndarray | None = None,
                      device: str | torch.device | None = None) -> SpectralResult:
    """SpRAy on ``features`` (N, D): kNN affinity graph, normalised Laplacian eigenvalues, eigengap, k-means.

    The result does not depend on the order of the rows: they are put in a canonical order first
    (by ``keys``, (N, m) integers such as run, episode, step; else by their content), and clusters
    are numbered by decreasing size. ``device``: where the kNN distances are computed (:func:`knn_graph`).
    """
    from scipy.sparse import csgraph
    from scipy.sparse.linalg import lobpcg
    from sklearn.cluster import KMeans

    n = len(features)
    if n < 3:
        raise RunError(f"strategies need at least 3 maps, got {n}")
    order = np.lexsort(keys.T[::-1]) if keys is not None else np.lexsort(np.round(features, 6).T[::-1])
    x = features[order]
    m = min(neighbours, n - 1)
    distances = knn_graph(x, m, device)
    sigma = float(np.median(distances.data)) or 1.0
    affinity = distances.copy()
    affinity.data = np.exp(-(affinity.data / sigma) ** 2)
    affinity = affinity.maximum(affinity.T)
    laplacian = csgraph.laplacian(affinity, normed=True)
    n_eig = min(max(max_k, k or 0) + 1, n - 1)
    # the smallest eigenvalues of L with LOBPCG, a block method: it also finds repeated zeros (one per
    # connected component) that single-vector Lanczos can miss; small graphs are solved densely
    if n <= 5 * n_eig + 5:
        values, vectors = np.linalg.eigh(laplacian.toarray())
        values, vectors = values[:n_eig], vectors[:, :n_eig]
    else:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = np.random.default_rng(seed).random((n, n_eig))
            values, vectors = lobpcg(laplacian, start, largest=False, tol=1e-6, maxiter=1000)
    idx = np.argsort(values)
    eigenvalues, vectors = np.clip(values[idx], 0, 2), vectors[:, idx]
    if k is None:
        k = eigengap(eigenvalues, max_k)
    if k > n:
        raise RunError(f"k = {k} is more than the {n} maps")
    embedding = vectors[:, :k]
    norms = np.linalg.norm(embedding, axis=1, keepdims=True)
    embedding = np.divide(embedding, norms, out=np.zeros_like(embedding), where=norms > 0)
    raw = KMeans(k, n_init=10, random_state=seed).fit_predict(embedding)
    sizes = np.bincount(raw, minlength=k)
    first = np.array([np.flatnonzero(raw == c)[0] if sizes[c] else n for c in range(k)])
    rank = np.lexsort((first, -sizes))  # by decreasing size, ties by first member in canonical order
    relabel = np.empty(k, int)
    relabel[rank] = np.arange(k)
    labels = np.empty(n, int)
    labels[order] = relabel[raw]
    out_embedding = np.empty_like(embedding)
    out_embedding[order] = embedding
    return SpectralResult(eigenvalues, k, labels, out_embedding)


def two_d(embedding: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """A 2-D map of the spectral embedding for the scatter plot: UMAP when installed, else t-SNE (on at most
    :data:`TSNE_MAX` points; the others are placed at the mean of their 5 nearest embedded neighbours)."""
    n = len(embedding)
    try:
        import umap

        return umap.UMAP(random_state=seed).fit_transform(embedding), "UMAP of the spectral embedding"
    except ImportError:
        pass
    from sklearn.manifold import TSNE
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, TSNE_MAX), replace=False))
    perplexity = float(min(30, max(2, (len(sample) - 1) / 3)))
    xy_sample = TSNE(2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(embedding[sample])
    xy = np.zeros((n, 2))
    xy[sample] = xy_sample
    rest = np.setdiff1d(np.arange(n), sample)
    if len(rest):
        _, nearest = NearestNeighbors(n_neighbors=min(5, len(sample))).fit(embedding[sample]).kneighbors(
            embedding[rest])
        xy[rest] = xy_sample[nearest].mean(1)
    how = "t-SNE of the spectral embedding" + (f" ({len(sample)} of {n} points; the rest at their nearest "
                                               f"neighbours)" if len(rest) else "")
    return xy, how


def importance(values: np.ndarray, kind: str) -> np.ndarray:
    """HIGHLIGHTS importance per step (Amir & Amir 2018): ``max - min`` of the Q-values (DQN), or, for action
    probabilities (PPO/A2C), ``1 - H(pi) / log(n_actions)`` (a sure policy matters most)."""
    if kind == "q_values":
        return values.max(1) - values.min(1)
    p = np.clip(values, 1e-12, 1)
    return 1 - (-(p * np.log(p)).sum(1)) / np.log(values.shape[1])


def highlights_div(scores: np.ndarray, features: np.ndarray, groups: np.ndarray, steps: np.ndarray, n: int,
                   context: int, max_similarity: float = 0.9) -> list[int]:
    """HIGHLIGHTS-DIV: the most important steps, skipping any whose state is too similar (cosine of the
    shrunk maps above ``max_similarity``) to one already chosen or whose context overlaps one in the same episode."""
    chosen: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if len(chosen) == n:
            break
        if any(groups[i] == groups[j] and abs(int(steps[i]) - int(steps[j])) <= 2 * context for j in chosen):
            continue
        if any(float(features[i] @ features[j]) > max_similarity for j in chosen):
            continue
        chosen.append(int(i))
    return chosen


def event_aligned(series: dict[str, np.ndarray], events: np.ndarray, window: tuple[int, int] = EVENT_WINDOW
                  ) -> dict[str, dict[str, np.ndarray]]:
    """Mean and 95% confidence half-width of each series around events of one sequence, and the events' count.

    :param series: name -> (T,) values of one episode. :param events: (T,) bool, True where an event happens.
    :returns: name -> {"offset", "mean", "ci", "n"} (offsets ``window[0]..window[1]``; steps outside the
        episode count as missing).
    """
    import warnings

    offsets = np.arange(window[0], window[1] + 1)
    at = np.flatnonzero(events)
    out = {}
    warnings.filterwarnings("ignore", message="(Mean of empty slice|Degrees of freedom)", category=RuntimeWarning)
    for name, values in series.items():
        t = at[:, None] + offsets[None]
        inside = (t >= 0) & (t < len(values))
        aligned = np.where(inside, values[np.clip(t, 0, len(values) - 1)], np.nan)
        count = np.sum(~np.isnan(aligned), 0)
        mean = np.nanmean(aligned, 0) if len(at) else np.full(len(offsets), np.nan)
        sd = np.nanstd(aligned, 0, ddof=1) if len(at) > 1 else np.full(len(offsets), np.nan)
        out[name] = {"offset": offsets, "mean": mean, "ci": 1.96 * sd / np.sqrt(np.maximum(count, 1)), "n": count}
    return out


def position_words(row: float, col: float, size: float) -> str:
    """``low-left``, ``top``, ``centre``, ... for a point on the input."""
    vertical = ["top", "middle", "low"][min(2, int(3 * row / size))]
    horizontal = ["left", "centre", "right"][min(2, int(3 * col / size))]
    if horizontal == "centre":
        return vertical if vertical != "middle" else "centre"
    return f"{vertical}-{horizontal}" if vertical != "middle" else horizontal


# -- the command ---------------------------------------------------------------------------------------
@dataclass
class StrategiesResult:
    """Everything :func:`strategies` found; ``clusters`` holds one dict per strategy (see ``strategies.json``)."""

    out: Path
    runs: list[dict]
    index: StepIndex
    spectral: SpectralResult
    xy: np.ndarray
    embedding_method: str
    clusters: list[dict]
    over_training: list[dict]
    highlights: list[dict]
    events: dict[str, dict]
    prototypes: list[dict] = field(repr=False, default_factory=list)
    members: dict[int, list[dict]] = field(repr=False, default_factory=dict)
    game: str = ""


def _load_runs(run_dirs: Sequence[str | Path]) -> list[dict]:
    loaded = []
    for i, run_dir in enumerate(run_dirs):
        run_dir = Path(run_dir)
        summary = runs.read_summary(run_dir)
        if not runs.episodes_on_disk(run_dir) or not any(runs.map_chunks(run_dir, k) for k in
                                                         runs.episodes_on_disk(run_dir)):
            raise RunError(f"{run_dir} holds no stored maps (recorded with --no-maps?): strategies need the maps")
        columns = runs.read_steps(run_dir)
        agent = summary.get("agent") or {}
        loaded.append({"index": i, "dir": run_dir, "summary": summary, "columns": columns,
                       "label": agent.get("name") or run_dir.name, "timesteps": agent.get("timesteps"),
                       "env_id": summary.get("env_id"), "method": summary.get("composite")})
    games = {r["env_id"] for r in loaded}
    if len(games) > 1:
        raise RunError(f"the runs are of different games ({', '.join(sorted(map(str, games)))}); give runs of one game")
    methods = {r["method"] for r in loaded}
    if len(methods) > 1:
        raise RunError(f"the runs were explained with different methods ({', '.join(sorted(map(str, methods)))}): "
                       f"their maps are not comparable; record them with one --composite")
    return loaded


def _collect(loaded: list[dict], size: int) -> tuple[np.ndarray, StepIndex, dict]:
    """Pass 1: the shrunk maps of every stored step, which step each is, and each episode's RAM."""
    features, run_ids, episodes, steps, rams = [], [], [], [], {}
    for r in loaded:
        n_rows = {int(e): int((r["columns"]["episode"] == e).sum()) for e in np.unique(r["columns"]["episode"])}
        for k in runs.episodes_on_disk(r["dir"]):
            ram_parts = []
            for chunk in runs.iter_maps(r["dir"], k, ["relevance", "step", "ram"]):
                keep = chunk["step"].astype(int) < n_rows.get(k, 0)  # maps whose CSV row exists
                rel = chunk["relevance"][keep]
                if rel.ndim == 5:  # --action all: the chosen action's map
                    actions = r["columns"]["action"][r["columns"]["episode"] == k].astype(int)
                    rel = rel[np.arange(len(rel)), actions[chunk["step"][keep].astype(int)]]
                features.append(shrink(rel.sum(-1), size))
                run_ids.append(np.full(int(keep.sum()), r["index"]))
                episodes.append(np.full(int(keep.sum()), k))
                steps.append(chunk["step"][keep].astype(int))
                if "ram" in chunk:
                    ram_parts.append(chunk["ram"][keep])
            if ram_parts:
                rams[(r["index"], k)] = np.concatenate(ram_parts)
    return (np.concatenate(features), StepIndex(np.concatenate(run_ids), np.concatenate(episodes),
                                                np.concatenate(steps)), rams)


def _episode_columns(r: dict, episode: int) -> dict[str, np.ndarray]:
    sel = r["columns"]["episode"] == episode
    return {k: v[sel] for k, v in r["columns"].items()}


def strategies(run_dirs: Sequence[str | Path], options: StrategyOptions | None = None, *, out: str | Path | None = None,
               force: bool = False, command: Sequence[str] | None = None, **option_values: Any) -> StrategiesResult:
    """Discover strategies in the maps of one or more recorded runs (several checkpoints or agents of one game).

    :param run_dirs: run folders written by ``record`` (with their maps).
    :param options: a :class:`StrategyOptions`, or its fields as keywords (``k=4``).
    :param out: the output folder (default ``runs/strategies-<Game>-<time>``).
    :returns: the result, also written as ``clusters.csv`` and ``strategies.json`` into ``out``.
    """
    options = options or StrategyOptions(**option_values)
    resolve_device(options.device)
    if not run_dirs:
        raise RunError("give at least one run folder (recorded with `rlexplain record`)")
    loaded = _load_runs(run_dirs)
    env_id = loaded[0]["env_id"]
    features, index, rams = _collect(loaded, options.size)
    if options.k is not None and not 1 <= options.k <= len(features):
        raise RunError(f"--k {options.k} is not between 1 and the {len(features)} maps")
    out = runs.prepare_run_dir(Path(out) if out else runs.default_run_dir(env_id or "unknown", "strategies"), force,
                               keep=[r["dir"] for r in loaded])
    summary = runs.new_summary("strategies", command, env_id=env_id, runs=[str(r["dir"]) for r in loaded],
                               options=asdict(options))
    with runs.tracked(out, summary):
        result = _analyse(out, loaded, features, index, rams, options, env_id)
        summary.update(k=result.spectral.k, n_maps=int(len(features)))
    return result


def _analyse(out: Path, loaded: list[dict], features: np.ndarray, index: StepIndex, rams: dict,
             options: StrategyOptions, env_id: str | None) -> StrategiesResult:
    """SpRAy and everything around the clusters, once the output folder is ready (see :func:`strategies`)."""
    with devices.precision(options.tf32):
        spectral = spectral_clusters(features, options.k, options.max_k, options.neighbours, options.seed,
                                     keys=index.keys(), device=options.device)
    xy, how = two_d(spectral.embedding, options.seed)
    kind = next((r["summary"].get("value_columns") for r in loaded), "Q-values")
    value_kind = "q_values" if str(kind).startswith("Q") else "probabilities"
    per_step = _per_step_tables(loaded, index, rams)
    clusters = _describe_clusters(loaded, index, spectral, per_step)
    over_training = _over_training(loaded, index, spectral)
    scores = importance(per_step["values"], value_kind)
    groups = index.run * 100_000 + index.episode
    chosen = highlights_div(scores, features, groups, index.step, options.highlights, options.context)
    highlights = [{"run": int(index.run[i]), "label": loaded[index.run[i]]["label"], "episode": int(index.episode[i]),
                   "step": int(index.step[i]), "importance": float(scores[i]), "cluster": int(spectral.labels[i])}
                  for i in chosen]
    events = _events(loaded, rams, env_id)
    prototypes, members, windows = _gather(loaded, index, spectral, chosen, options.context)
    for cluster, proto in zip(clusters, prototypes):
        cluster["label"] = _label(proto["map"], cluster["densities"],
                                  _object_position(env_id, rams, index, spectral.labels == cluster["cluster"],
                                                   cluster["densities"]))
    for h, frames in zip(highlights, windows):
        h["frames"] = frames
    result = StrategiesResult(out, [{k: (str(v) if isinstance(v, Path) else v) for k, v in r.items()
                                     if k in ("index", "dir", "label", "timesteps")} for r in loaded],
                              index, spectral, xy, how, clusters, over_training, highlights, events,
                              prototypes, members, game=envs.game_name(env_id) if env_id else "")
    _write_tables(result, k_given=options.k is not None)
    return result


def _per_step_tables(loaded: list[dict], index: StepIndex, rams: dict) -> dict[str, np.ndarray]:
    """Per map: action values, actions, densities, score, lives, and what follows within :data:`FOLLOW` steps
    (a reward; a lost life, or a lost point in games without lives)."""
    values, actions, score, lives, reward_next, lost_next = [], [], [], [], [], []
    densities: dict[str, list] = {}
    categories = sorted({k[len("density_"):] for r in loaded for k in r["columns"] if k.startswith("density_")})
    for i in range(len(loaded)):
        for k in np.unique(index.episode[index.run == i]):
            cols = _episode_columns(loaded[i], int(k))
            steps = index.step[(index.run == i) & (index.episode == k)]
            value_keys = [c for c in cols if c.startswith("value_")]
            values.append(np.stack([cols[c][steps] for c in value_keys], 1))
            actions.append(cols["action"][steps].astype(int))
            score.append(cols["score"][steps])
            lives.append(cols["lives"][steps])
            rewards, life = cols["reward"], cols["lives"]
            cum = np.concatenate([[0], np.cumsum(rewards > 0)])
            # a lost life, or a point lost in games without lives (Pong's -1)
            lost = np.concatenate([[0], np.cumsum(stats.lives_lost(life) | (rewards < 0))])
            end = np.minimum(steps + FOLLOW, len(rewards) - 1)
            reward_next.append(cum[end + 1] - cum[steps + 1] > 0)
            lost_next.append(lost[end + 1] - lost[steps + 1] > 0)
            for c in categories:
                densities.setdefault(c, []).append(cols.get(f"density_{c}", np.full(len(rewards), np.nan))[steps])
    # the loops above follow the order of index (runs, then episodes, then steps, as collected)
    return {"values": np.concatenate(values), "action": np.concatenate(actions), "score": np.concatenate(score),
            "lives": np.concatenate(lives), "reward_next": np.concatenate(reward_next),
            "lost_next": np.concatenate(lost_next),
            "densities": {c: np.concatenate(v) for c, v in densities.items()}}


def _describe_clusters(loaded: list[dict], index: StepIndex, spectral: SpectralResult,
                       per_step: dict) -> list[dict]:
    action_names = [c[len("value_"):] for c in loaded[0]["columns"] if c.startswith("value_")]
    n = len(spectral.labels)
    clusters = []
    for c in range(spectral.k):
        members = spectral.labels == c
        dens = {name: float(np.nanmean(v[members])) if members.any() else float("nan")
                for name, v in per_step["densities"].items()}
        counts = np.bincount(per_step["action"][members], minlength=len(action_names))
        clusters.append({
            "cluster": c, "size": int(members.sum()), "share": float(members.mean()),
            "actions": {a: float(counts[i] / max(1, counts.sum())) for i, a in enumerate(action_names)},
            "densities": dens,
            "when": {"step_median": float(np.median(index.step[members])),
                     "score_median": float(np.median(per_step["score"][members])),
                     "lives_median": float(np.median(per_step["lives"][members]))},
            "follows": {"reward_within_30": float(per_step["reward_next"][members].mean()),
                        "life_lost_within_30": float(per_step["lost_next"][members].mean())},
            "runs": {loaded[i]["label"]: int((members & (index.run == i)).sum()) for i in range(len(loaded))},
        })
    assert sum(c["size"] for c in clusters) == n
    return clusters


def _over_training(loaded: list[dict], index: StepIndex, spectral: SpectralResult) -> list[dict]:
    rows = []
    for r in loaded:
        mine = index.run == r["index"]
        shares = np.bincount(spectral.labels[mine], minlength=spectral.k) / max(1, mine.sum())
        rows.append({"run": r["label"], "timesteps": r["timesteps"], "maps": int(mine.sum()),
                     **{f"strategy_{c}": float(s) for c, s in enumerate(shares)}})
    return sorted(rows, key=lambda row: (row["timesteps"] is None, row["timesteps"] or 0))


def _events(loaded: list[dict], rams: dict, env_id: str | None) -> dict[str, dict]:
    """Densities aligned on rewards, lost lives and game events from RAM, pooled over every episode."""
    game = envs.game_name(env_id) if env_id else ""
    pooled: dict[str, dict[str, list]] = {}
    for r in loaded:
        for k in np.unique(r["columns"]["episode"]).astype(int):
            cols = _episode_columns(r, k)
            series = {c[len("density_"):]: v for c, v in cols.items() if c.startswith("density_")}
            if not series:
                continue
            found = {"reward": cols["reward"] > 0, "life lost": stats.lives_lost(cols["lives"])}
            if game == "Pong":
                found = {"point won": cols["reward"] > 0, "point lost": cols["reward"] < 0}
            ram = rams.get((r["index"], k))
            if ram is not None and len(ram) == len(cols["reward"]):
                found.update(ram_events(game, ram))
            for name, events in found.items():
                aligned = event_aligned(series, events)
                slot = pooled.setdefault(name, {})
                for obj, stats_ in aligned.items():
                    slot.setdefault(obj, []).append((stats_, int(events.sum())))
    out = {}
    for name, objects in pooled.items():
        out[name] = {}
        for obj, parts in objects.items():
            n_events = sum(n for _, n in parts)
            if n_events == 0:
                continue
            weights = np.array([[n] for _, n in parts], float)
            means = np.stack([np.nan_to_num(s["mean"]) for s, _ in parts])
            ci = np.stack([np.nan_to_num(s["ci"]) for s, _ in parts])
            out[name][obj] = {"offset": parts[0][0]["offset"].tolist(),
                              "mean": ((means * weights).sum(0) / weights.sum()).tolist(),
                              "ci": (np.sqrt(((ci * weights) ** 2).sum(0)) / weights.sum()).tolist(),
                              "events": n_events}
        if not out[name]:
            del out[name]
    return out


def _gather(loaded: list[dict], index: StepIndex, spectral: SpectralResult, highlights: list[int], context: int,
            montage: int = 8, video: int = 40) -> tuple[list[dict], dict[int, list[dict]], list[list[dict]]]:
    """Pass 2 over the maps: per cluster the mean map and mean frame (prototype) and the members nearest its
    centre (frame and map, for the montage and the cluster video); the frames around each highlight."""
    k = spectral.k
    size = None
    sums, frame_sums, counts = [None] * k, [None] * k, np.zeros(k, int)
    wanted: dict[tuple[int, int, int], list[tuple[str, int, int]]] = {}
    for c in range(k):
        members = np.flatnonzero(spectral.labels == c)
        centre = spectral.embedding[members].mean(0)
        nearest = members[np.argsort(np.linalg.norm(spectral.embedding[members] - centre, axis=1))[:video]]
        for rank, i in enumerate(nearest):
            wanted.setdefault((int(index.run[i]), int(index.episode[i]), int(index.step[i])), []).append(
                ("member", c, rank))
    for h, i in enumerate(highlights):
        for t in range(int(index.step[i]) - context, int(index.step[i]) + context + 1):
            wanted.setdefault((int(index.run[i]), int(index.episode[i]), t), []).append(("highlight", h, t))
    label_of = {(int(r), int(e), int(t)): int(c) for r, e, t, c in zip(index.run, index.episode, index.step,
                                                                        spectral.labels)}
    members_out: dict[int, list[dict]] = {c: [] for c in range(k)}
    windows: list[list[dict]] = [[] for _ in highlights]
    for r in loaded:
        actions = r["columns"]["action"]
        for e in runs.episodes_on_disk(r["dir"]):
            ep_actions = actions[r["columns"]["episode"] == e].astype(int)
            for chunk in runs.iter_maps(r["dir"], e, ["relevance", "frames", "step", "colour_scale"]):
                for j, t in enumerate(chunk["step"].astype(int)):
                    key = (r["index"], e, t)
                    rel = chunk["relevance"][j]
                    if rel.ndim == 4:
                        if t >= len(ep_actions):
                            continue
                        rel = rel[ep_actions[t]]
                    summed = rel.sum(-1)
                    c = label_of.get(key)
                    if c is not None:
                        frame = chunk["frames"][j].astype(np.float64)
                        sums[c] = summed.astype(np.float64) if sums[c] is None else sums[c] + summed
                        frame_sums[c] = frame if frame_sums[c] is None else frame_sums[c] + frame
                        counts[c] += 1
                        size = summed.shape[0]
                    for what, which, rank in wanted.get(key, []):
                        item = {"run": r["label"], "episode": e, "step": t, "frame": chunk["frames"][j],
                                "map": summed, "cluster": c, "rank": rank}
                        (members_out[which] if what == "member" else windows[which]).append(item)
    prototypes = [{"map": sums[c] / max(counts[c], 1), "frame": (frame_sums[c] / max(counts[c], 1)).round()
                   .astype(np.uint8), "size": size} for c in range(k)]
    for items in [*members_out.values(), *windows]:  # members nearest first; highlight windows in time order
        items.sort(key=lambda m: m["rank"])
    return prototypes, members_out, windows


def _object_position(env_id: str | None, rams: dict, index: StepIndex, members: np.ndarray,
                     densities: dict[str, float]) -> str | None:
    """Where the strategy's densest object usually is on the screen (median of its boxes over the members,
    from RAM), in words; None when the game has no object extractor or the object is never on screen."""
    from rlexplain.objects import extractor_for

    objects = extractor_for(env_id) if env_id else None
    dense = [n for n, d in sorted(densities.items(), key=lambda kv: -kv[1]) if np.isfinite(d)]
    if objects is None or not dense:
        return None
    centres = []
    for i in np.flatnonzero(members):
        ram = rams.get((int(index.run[i]), int(index.episode[i])))
        if ram is None or index.step[i] >= len(ram):
            continue
        boxes = [b for name, b in objects.boxes(ram[index.step[i]]) if name == dense[0]]
        if boxes:
            x, y, w, h = boxes[0]
            centres.append((y + h / 2, x + w / 2))
    if not centres:
        return None
    row, col = np.median(np.array(centres), 0)
    return position_words(row / envs.NATIVE_HEIGHT * 84, col / envs.NATIVE_WIDTH * 84, 84)


def _label(prototype: np.ndarray, densities: dict[str, float], where: str | None = None) -> str:
    """A short name for a strategy: its densest objects, the first with where it usually is on the screen
    (``where``, from RAM), or else where the evidence peaks (the maximum of the smoothed prototype),
    e.g. ``ball low-left, paddle``."""
    import cv2

    p = cv2.blur(np.clip(prototype, 0, None).astype(np.float32), (7, 7))
    if where is None and p.max() > 0:
        row, col = np.unravel_index(int(np.argmax(p)), p.shape)
        where = position_words(float(row), float(col), p.shape[0])
    where = where or "nowhere"
    dense = sorted(((d, n) for n, d in densities.items() if np.isfinite(d) and d > 1.0), reverse=True)[:2]
    if not dense:
        return f"diffuse, {where}"
    names = [n for _, n in dense]
    return ", ".join([f"{names[0]} {where}", *names[1:]])


def _write_tables(result: StrategiesResult, k_given: bool = False) -> None:
    import csv

    with open(result.out / "clusters.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "episode", "step", "cluster", "x", "y"])
        for i in range(len(result.spectral.labels)):
            writer.writerow([result.runs[result.index.run[i]]["label"], int(result.index.episode[i]),
                             int(result.index.step[i]), int(result.spectral.labels[i]),
                             f"{result.xy[i, 0]:.4f}", f"{result.xy[i, 1]:.4f}"])
    data = {"k": result.spectral.k, "k_from": "given (--k)" if k_given else "eigengap",
            "eigenvalues": result.spectral.eigenvalues.tolist(), "embedding_2d": result.embedding_method,
            "runs": result.runs, "clusters": result.clusters, "over_training": result.over_training,
            "highlights": [{k: v for k, v in h.items() if k != "frames"} for h in result.highlights],
            "events": result.events}
    (result.out / "strategies.json").write_text(json.dumps(data, indent=1, default=str) + "\n")

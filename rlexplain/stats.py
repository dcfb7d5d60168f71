"""Per-step attention statistics computed from a relevance map, and episode summaries.

All shares are fractions of the step's *positive* relevance (the evidence for the explained
output), so they lie in [0, 1] and are comparable across steps and agents whatever the scale of
the Q-values; they are empty (NaN) when a step has no positive relevance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_GRID = (6, 6)


def positive(relevance: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(relevance, dtype=np.float32), 0, None)


def relevance_totals(relevance: np.ndarray) -> dict[str, float]:
    """``relevance_sum``, ``relevance_pos``, ``relevance_neg`` of one map."""
    r = np.asarray(relevance, dtype=np.float64)
    pos = float(np.clip(r, 0, None).sum())
    neg = float(np.clip(r, None, 0).sum())
    return {"relevance_sum": pos + neg, "relevance_pos": pos, "relevance_neg": neg}


def frame_shares(relevance: np.ndarray, _p: np.ndarray | None = None) -> list[float]:
    """Share of positive relevance on each stacked frame (last axis, 0 = oldest)."""
    p = positive(relevance) if _p is None else _p
    per_frame = p.reshape(-1, p.shape[-1]).sum(0, dtype=np.float64)
    total = per_frame.sum()
    return [float(v / total) if total > 0 else float("nan") for v in per_frame]


def _edges(n: int, parts: int) -> np.ndarray:
    return np.cumsum([0] + [len(a) for a in np.array_split(np.arange(n), parts)][:-1])


def grid_shares(relevance: np.ndarray, grid: tuple[int, int] = DEFAULT_GRID, _p2: np.ndarray | None = None) -> np.ndarray:
    """Share of positive relevance in each cell of a ``rows x cols`` grid over the 84x84 input (all frames)."""
    p = positive(relevance).sum(-1) if _p2 is None else _p2
    cells = np.add.reduceat(np.add.reduceat(p, _edges(p.shape[0], grid[0]), 0), _edges(p.shape[1], grid[1]), 1)
    total = cells.sum(dtype=np.float64)
    return cells / total if total > 0 else np.full(grid, np.nan)


def entropy(relevance: np.ndarray, _p2: np.ndarray | None = None) -> float:
    """Shannon entropy of the positive relevance over input pixels (frames summed), normalised to [0, 1].

    0: all evidence on one pixel; 1: spread evenly over the whole input.
    """
    p = (positive(relevance).sum(-1) if _p2 is None else _p2).ravel()
    total = p.sum(dtype=np.float64)
    if total <= 0:
        return float("nan")
    q = p[p > 0] / total
    return float(-(q * np.log2(q)).sum() / np.log2(p.size))


def centre_of_mass(relevance: np.ndarray, _p2: np.ndarray | None = None) -> tuple[float, float]:
    """(row, col) centre of the positive relevance on the 84x84 input, in input pixels."""
    p = positive(relevance).sum(-1) if _p2 is None else _p2
    total = p.sum(dtype=np.float64)
    if total <= 0:
        return float("nan"), float("nan")
    return (float(p.sum(1) @ np.arange(p.shape[0]) / total), float(p.sum(0) @ np.arange(p.shape[1]) / total))


def _claims(masks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each category's own pixels: a pixel in several categories' masks counts for the first listed."""
    out, claimed = {}, None
    for name, mask in masks.items():
        own = mask if claimed is None else mask & ~claimed
        claimed = own if claimed is None else claimed | own
        out[name] = own
    return out


def object_shares(relevance: np.ndarray, masks: Mapping[str, np.ndarray], _p: np.ndarray | None = None
                  ) -> dict[str, float]:
    """Share of positive relevance on each category's mask ((84, 84, 4) bool, one slice per stacked frame).

    Pixels claimed by several categories count for the first listed; ``other`` is the rest, so
    the category shares and ``other`` sum to 1.
    """
    p = positive(relevance) if _p is None else _p
    total = float(p.sum(dtype=np.float64))
    out: dict[str, float] = {}
    for name, own in _claims(masks).items():
        out[name] = float(p[own].sum(dtype=np.float64) / total) if total > 0 else float("nan")
    out["other"] = max(0.0, 1.0 - sum(out.values())) if total > 0 else float("nan")
    return out


def area_shares(masks: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Fraction of the input (all stacked frames) each category's own pixels cover."""
    return {name: float(own.mean()) for name, own in _claims(masks).items()}


def step_statistics(relevance: np.ndarray, masks: Mapping[str, np.ndarray] | None = None,
                    grid: tuple[int, int] = DEFAULT_GRID) -> dict[str, float]:
    """All per-step columns for one (84, 84, 4) map: totals, frame shares, object shares and densities,
    grid shares, entropy and centre of mass."""
    p = positive(relevance)
    p2 = p.sum(-1)
    row: dict[str, float] = relevance_totals(relevance)
    for i, share in enumerate(frame_shares(relevance, p)):
        row[f"frame_share_{i}"] = share
    if masks is not None:
        shares = object_shares(relevance, masks, p)
        areas = area_shares(masks)
        for name, share in shares.items():
            row[f"share_{name}"] = share
        for name, area in areas.items():
            row[f"density_{name}"] = shares[name] / area if area > 0 else float("nan")
    for (r, c), share in np.ndenumerate(grid_shares(relevance, grid, p2)):
        row[f"grid_share_{r}_{c}"] = float(share)
    row["entropy"] = entropy(relevance, p2)
    row["com_row"], row["com_col"] = centre_of_mass(relevance, p2)
    return row


def statistic_columns(frame_stack: int, categories: Sequence[str] | None,
                      grid: tuple[int, int] = DEFAULT_GRID) -> list[str]:
    """The columns :func:`step_statistics` returns, in its order, declared without computing anything.

    :param categories: the object categories (without ``other``), or None when the game has none.
    """
    columns = ["relevance_sum", "relevance_pos", "relevance_neg"] + [f"frame_share_{i}" for i in range(frame_stack)]
    if categories is not None:
        columns += [f"share_{c}" for c in (*categories, "other")] + [f"density_{c}" for c in categories]
    columns += [f"grid_share_{r}_{c}" for r in range(grid[0]) for c in range(grid[1])]
    return columns + ["entropy", "com_row", "com_col"]


def grid_row_shares(rows: Mapping[str, np.ndarray | float], grid: tuple[int, int] = DEFAULT_GRID) -> dict[str, np.ndarray]:
    """Shares per grid row, top to bottom (``grid row <r>``), from the ``grid_share_<r>_<c>`` columns:
    the regions reported for games without object categories."""
    return {f"grid row {r}": sum(np.nan_to_num(np.asarray(rows[f"grid_share_{r}_{c}"], dtype=np.float64))
                                 for c in range(grid[1])) for r in range(grid[0])}


def lives_lost(lives: np.ndarray) -> np.ndarray:
    """(T,) bool: True at the steps whose ``lives`` column is lower than the step before's."""
    lives = np.asarray(lives)
    return np.diff(lives, prepend=lives[:1]) < 0


class RunningMeans:
    """NaN-aware means of the columns starting with any of ``prefixes``, without keeping the rows."""

    def __init__(self, prefixes: Sequence[str]) -> None:
        self.prefixes = tuple(prefixes)
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def update(self, row: Mapping[str, float]) -> None:
        for key, value in row.items():
            if key.startswith(self.prefixes):
                self._sums.setdefault(key, 0.0)
                self._counts.setdefault(key, 0)
                if value is not None and not np.isnan(value):
                    self._sums[key] += float(value)
                    self._counts[key] += 1

    def means(self) -> dict[str, float]:
        return {k: self._sums[k] / self._counts[k] if self._counts[k] else float("nan") for k in self._sums}



def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over states of Spearman's rank correlation between two sets of maps (N, ...).

    Ranks are average ranks (ties share the mean of their positions), as Spearman's coefficient is
    defined: LRP maps are full of ties (exact zeros under z+, equal values under Flat), and ranking
    ties arbitrarily would invent correlation. A state where either map is constant counts as NaN
    and is left out of the mean.
    """
    from scipy.stats import rankdata

    ra = rankdata(a.reshape(len(a), -1), axis=1)
    rb = rankdata(b.reshape(len(b), -1), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    norm = np.linalg.norm(ra, axis=1) * np.linalg.norm(rb, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(norm > 0, (ra * rb).sum(1) / norm, np.nan)
    return float(np.nanmean(corr)) if np.isfinite(corr).any() else float("nan")

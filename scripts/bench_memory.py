"""Peak memory of ``rlexplain stats`` (plots and table from the files) on synthetic runs of growing length.

    python scripts/bench_memory.py                    # 1,000 and 5,000 steps
    python scripts/bench_memory.py --steps 1000 27000

Each length is a run folder written with rlexplain's own writers (steps.csv, map chunks with float16
maps, native frames and observations, summary.json), then ``rlexplain stats`` runs on it in a fresh
process, whose peak resident memory is printed. Memory should not grow with the length: maps and
frames are read one chunk at a time. (Goal: under 1 GB at the 27,000-step cap.)
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlexplain import runs, stats  # noqa: E402
from rlexplain.objects import BreakoutObjects  # noqa: E402

ACTIONS = ["NOOP", "FIRE", "RIGHT", "LEFT"]


def synthetic_run(folder: Path, steps: int, seed: int = 0, patterns: int = 0) -> Path:
    """A Breakout-shaped run folder of ``steps`` steps written by the recorder's writers: random maps, or
    with ``patterns`` > 0, maps made of one of that many Gaussian blobs plus noise (for clustering)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:84, 0:84]
    centres = rng.uniform(10, 74, (max(patterns, 1), 2))
    folder.mkdir(parents=True)
    categories = list(BreakoutObjects.categories)
    columns = (["episode", "step", "action", "action_name", "reward", "score", "lives"]
               + [f"value_{a}" for a in ACTIONS] + stats.statistic_columns(4, categories) + ["colour_scale"])
    runs.write_summary(folder, {runs.MARKER: "record", "status": "complete", "game": "Breakout",
                                "env_id": "BreakoutNoFrameskip-v4", "agent": {"name": "synthetic"},
                                "composite": "epsilon_plus_flat", "episodes": [{"episode": 0, "return": 0.0,
                                                                                 "length": steps}]})
    writer = runs.MapWriter(runs.maps_dir(folder, 0))
    frame = np.zeros((210, 160, 3), np.uint8)
    with open(folder / runs.STEPS, "w", newline="") as f:
        rows = csv.DictWriter(f, columns)
        rows.writeheader()
        for t in range(steps):
            if patterns:
                cy, cx = centres[t % patterns] + rng.normal(0, 2, 2)
                blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 50.0)[..., None]
                relevance = (blob + 0.1 * rng.normal(size=(84, 84, 4))).astype(np.float16)
            else:
                relevance = rng.normal(size=(84, 84, 4)).astype(np.float16)
            row = {"episode": 0, "step": t, "action": t % 4, "action_name": ACTIONS[t % 4], "reward": float(t % 50 == 0),
                   "score": t // 50, "lives": 5 - t * 5 // max(steps, 1), "colour_scale": 1.0,
                   **{f"value_{a}": 0.0 for a in ACTIONS}}
            row.update({c: float(rng.random()) for c in columns if c not in row})
            rows.writerow(row)
            frame[100 + t % 50, 80] = t % 255
            writer.add(t, relevance=relevance, obs=rng.integers(0, 255, (84, 84, 4), np.uint8), frames=frame,
                       ram=np.zeros(128, np.uint8), colour_scale=np.float32(1.0))
    writer.close()
    return folder


def peak_rss_mb(run_dir: Path) -> float:
    """Peak resident memory (MB) of ``rlexplain stats RUN_DIR`` in a fresh process."""
    code = ("import resource, sys; from rlexplain import cli; cli.main(['stats', sys.argv[1]]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, check=True)
    kib = int(done.stdout.strip().splitlines()[-1])
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, nargs="+", default=[1000, 5000])
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.steps:
            results[n] = peak_rss_mb(synthetic_run(Path(tmp) / f"run_{n}", n))
            print(f"stats on {n:6d} steps   peak RSS {results[n]:7.1f} MB", flush=True)


if __name__ == "__main__":
    main()

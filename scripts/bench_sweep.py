"""The same small sweep serially and on a local Ray cluster, in one run (goal: Ray >= 1.6x faster on 2 cores).

    python scripts/bench_sweep.py                         # 2 Breakout checkpoints x 2 seeds, record + evaluate
    python scripts/bench_sweep.py --jobs evaluate --n-states 64
    python scripts/bench_sweep.py --ray-cpus 8 --seeds 0 1 2 3

Each run starts from an empty folder; the Ray time includes starting the local cluster and its
workers. Both sweeps must produce the same statistics (checked).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlexplain.sweep import SweepSpec, sweep  # noqa: E402

AGENTS = Path(__file__).resolve().parents[1] / "agents" / "breakout-dqn"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", nargs="+", default=[str(AGENTS / "rl_model_200000_steps.zip"),
                                                    str(AGENTS / "rl_model_1000000_steps.zip")])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--n-states", type=int, default=128)
    p.add_argument("--ray-cpus", type=int, default=os.cpu_count())
    p.add_argument("--jobs", default="record,evaluate", help="which jobs the sweep runs")
    p.add_argument("--no-video", action="store_true", help="record jobs without video")
    args = p.parse_args()
    options = {"record": {"max_steps": args.max_steps, "video": not args.no_video},
               "evaluate": {"n_states": args.n_states, "max_steps": 2000}}
    jobs = {kind: options[kind] for kind in args.jobs.split(",")}
    times, tables = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("serial", "ray"):
            spec = SweepSpec.from_mapping({"agents": args.agents, "seeds": args.seeds, "jobs": jobs,
                                           "out": str(Path(tmp) / backend)})
            started = time.perf_counter()
            result = sweep(spec, backend=backend, ray_cpus=args.ray_cpus, progress=False)
            times[backend] = time.perf_counter() - started
            if result.failed:
                sys.exit(result.table())
            with open(result.out / "sweep.csv", newline="") as f:
                tables[backend] = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]
            print(f"# {backend}: {result.table().splitlines()[0]}")
    same = tables["serial"] == tables["ray"]
    n = len(tables["serial"])
    what = {"record": f"record ({args.max_steps} steps, {'no video' if args.no_video else 'video'})",
            "evaluate": f"evaluate ({args.n_states} states)"}
    print(f"# {len(args.agents)} agents x {len(args.seeds)} seeds, {' + '.join(what[k] for k in jobs)}: {n} jobs on "
          f"{os.cpu_count()} cores")
    print(f"serial             {times['serial']:7.1f} s")
    print(f"ray ({args.ray_cpus} CPUs)       {times['ray']:7.1f} s   {times['serial'] / times['ray']:.2f}x serial")
    print(f"same sweep.csv (less timings): {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()

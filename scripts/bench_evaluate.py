"""Time ``rlexplain evaluate`` with its default method set, and print its throughput.

    python scripts/bench_evaluate.py                      # 128 states, K = 100, every default method
    python scripts/bench_evaluate.py --n-states 32 --threads 2

Prints the wall time of the whole evaluation (playing for the states included) and ``states x methods
x steps`` per second (each step is one perturbed input in each of the two orders). The goal is
<= 5 minutes for the defaults on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlexplain.evaluate import DEFAULT_METHODS, EvaluateOptions, evaluate  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", default="breakout-dqn")
    p.add_argument("--n-states", type=int, default=128)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        evaluate(args.agent, options=EvaluateOptions(n_states=args.n_states, steps=args.steps, progress=False),
                 out=Path(tmp) / "a")
        total = time.perf_counter() - started
    work = args.n_states * len(DEFAULT_METHODS) * args.steps
    print(f"# {args.agent}, {args.n_states} states, K = {args.steps}, {len(DEFAULT_METHODS)} methods, "
          f"torch {torch.__version__}, {args.threads} threads")
    print(f"evaluate (states collected by play included)   {total:7.1f} s")
    print(f"states x methods x steps per second            {work / total:9.0f}")


if __name__ == "__main__":
    main()

"""End-to-end speed of ``rlexplain record`` beside the bare env loop, in one run.

Measures agent steps per second of:
  * the bare env loop (SB3 Atari preprocessing, random actions, no agent);
  * the agent acting alone (one forward pass per step);
  * ``record`` with the default layout and statistics (video, steps.csv, maps), and without video,
    for ``--n-envs`` 1, 4 and 8 (that many games side by side, explained in one batch per step);
and the size of the default run folder per 1,000 agent steps (goal: <= 10 MB).

    python scripts/bench_record.py --steps 500 [--n-envs 1 4 8] [--agent breakout-dqn] [--env Breakout]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlexplain.agents import load_agent  # noqa: E402
from rlexplain.catalog import DEFAULT_METHOD  # noqa: E402
from rlexplain.envs import make_env  # noqa: E402
from rlexplain.record import record  # noqa: E402


def env_loop(env_id: str, steps: int, policy=None) -> float:
    env = make_env(env_id, seed=0)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        action = rng.integers(env.action_space.n) if policy is None else policy(obs)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="Breakout")
    p.add_argument("--agent", default="breakout-dqn")
    p.add_argument("--steps", type=int, default=500, help="agent steps per game (each of n-envs games)")
    p.add_argument("--n-envs", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--composite", default=DEFAULT_METHOD)
    args = p.parse_args()
    torch.set_num_threads(1)
    agent = load_agent(args.agent, env=args.env)
    bare = env_loop(args.env, args.steps)
    acting = env_loop(args.env, args.steps, lambda o: agent.act(o))
    rates: dict[tuple[int, bool], float] = {}
    size = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.n_envs:
            for video in (True, False):
                out = Path(tmp) / f"n{n}-{video}"
                t0 = time.perf_counter()
                result = record(args.env, agent, max_steps=args.steps, episodes=n, n_envs=n, seed=0,
                                composite=args.composite, out=out, video=video, progress=False)
                steps = result.summary["steps"]
                rates[n, video] = steps / (time.perf_counter() - t0)
                if video and size is None:
                    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / steps * 1000 / 1e6
                if steps < n * args.steps:
                    print(f"# note: n-envs {n}: some games ended early ({steps} steps in all)")
    print(f"# {args.agent} on {args.env}, {args.steps} steps per game, composite {args.composite}, "
          f"torch {torch.__version__}, 1 torch thread, {os.cpu_count()} cores")
    print(f"{'bare env loop':36s} {bare:8.1f} steps/s")
    print(f"{'agent acting (no LRP)':36s} {acting:8.1f} steps/s")
    first = args.n_envs[0]
    for video, label in ((True, "record, default (video+csv+maps)"), (False, "record, no video")):
        for n in args.n_envs:
            rate = rates[n, video]
            ratio = rate / rates[first, video]
            print(f"{label + f', n-envs {n}':36s} {rate:8.1f} steps/s   {ratio:5.2f} x n-envs {first}")
    print(f"run folder (video, steps.csv, maps, summary): {size:.1f} MB per 1000 agent steps")


if __name__ == "__main__":
    main()

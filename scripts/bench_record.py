"""End-to-end speed of ``rlexplain record`` beside the bare env loop, in one run.

Measures agent steps per second of:
  * the bare env loop (SB3 Atari preprocessing, random actions, no agent);
  * the agent acting alone (one forward pass per step);
  * ``record`` with the default layout and statistics (video, steps.csv, maps), and without video.
and the size of the default run folder per 1,000 agent steps (goal: <= 10 MB).

    python scripts/bench_record.py --steps 1000 [--agent breakout-dqn] [--env Breakout]
"""

from __future__ import annotations

import argparse
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
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--composite", default=DEFAULT_METHOD)
    args = p.parse_args()
    torch.set_num_threads(1)
    agent = load_agent(args.agent, env=args.env)
    bare = env_loop(args.env, args.steps)
    acting = env_loop(args.env, args.steps, lambda o: agent.act(o))
    results = {"bare env loop": bare, "agent acting (no LRP)": acting}
    size = None
    with tempfile.TemporaryDirectory() as tmp:
        for label, video in (("record, default (video+csv+maps)", True), ("record, no video", False)):
            out = Path(tmp) / label.replace(" ", "_")
            t0 = time.perf_counter()
            result = record(args.env, agent, max_steps=args.steps, seed=0, composite=args.composite, out=out,
                            video=video, progress=False)
            steps = result.summary["steps"]
            results[label] = steps / (time.perf_counter() - t0)
            if video:
                size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / steps * 1000 / 1e6
            if steps < args.steps:
                print(f"# note: the game ended after {steps} steps")
    print(f"# {args.agent} on {args.env}, {args.steps} steps, composite {args.composite}, torch {torch.__version__}")
    for label, rate in results.items():
        print(f"{label:36s} {rate:8.1f} steps/s   {rate / bare:5.3f} x bare env")
    print(f"run folder (video, steps.csv, maps, summary): {size:.1f} MB per 1000 agent steps")


if __name__ == "__main__":
    main()

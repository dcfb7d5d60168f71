"""Benchmark the LRP engine on SB3's NatureCNN: ms per frame, and ratios to the plain input gradient.

One run measures, with the same threads and inputs, after warm-up, the median over repeats of:
  * the plain input gradient (autograd w.r.t. the /255 input, parameters not requiring grad);
  * each rlexplain composite (and gradient_x_input);
  * zennit's equivalent composite, when zennit is importable.
Ratios are to the plain gradient measured in the same run, so they mean something on a noisy
machine where absolute times do not.

    python scripts/bench_lrp.py                     # batch 1 and 32, 1 thread
    python scripts/bench_lrp.py --threads 2 --batch 32 --repeats 50 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlexplain.agents import build_networks  # noqa: E402
from rlexplain.devices import precision, resolve_device  # noqa: E402
from rlexplain.explainer import make_method  # noqa: E402
from rlexplain.lrp import COMPOSITES  # noqa: E402
from rlexplain.lrp.zennit_reference import import_zennit  # noqa: E402

ZENNIT = {
    "epsilon_plus": "EpsilonPlus", "epsilon_plus_flat": "EpsilonPlusFlat",
    "epsilon_alpha2_beta1": "EpsilonAlpha2Beta1", "epsilon_alpha2_beta1_flat": "EpsilonAlpha2Beta1Flat",
    "epsilon_gamma_box": "EpsilonGammaBox",
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=30, help="timed calls per method (median reported)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA (off by default: fp32 as on the CPU)")
    p.add_argument("--no-zennit", action="store_true")
    return p.parse_args()


def nature_cnn(device: str) -> torch.nn.Module:
    """SB3's DQN CnnPolicy as rlexplain explains it; without SB3 (e.g. on a bare GPU machine), the same
    NatureCNN layers built directly."""
    torch.manual_seed(0)
    try:
        from stable_baselines3.dqn.policies import CnnPolicy

        policy = CnnPolicy(gym.spaces.Box(0, 255, (4, 84, 84), dtype=np.uint8), gym.spaces.Discrete(4), lambda _: 1e-4)
        network, _ = build_networks(policy, "dqn")
    except ImportError:
        from torch import nn

        network = nn.Sequential(nn.Conv2d(4, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
                                nn.Conv2d(64, 64, 3, 1), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(),
                                nn.Linear(512, 4))
    for p in network.parameters():
        p.requires_grad_(False)
    return network.to(device).eval()


def median_ms(fn, repeats: int, warmup: int, device: str) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def load_zennit():
    try:
        import_zennit()
        import zennit.composites as zc
        from zennit.attribution import Gradient
        return zc, Gradient
    except ImportError as exc:
        print(f"# zennit not importable ({exc}); its columns are skipped")
        return None, None


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.device = str(resolve_device(args.device))
    with precision(args.tf32):
        run(args)


def run(args: argparse.Namespace) -> None:
    network = nature_cnn(args.device)
    zc, ZennitGradient = (None, None) if args.no_zennit else load_zennit()
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{args.threads} thread(s)"
    print(f"# NatureCNN 4x84x84 -> 4, torch {torch.__version__}, {where}, device {args.device}, "
          f"TF32 {'on' if args.tf32 else 'off'}, median of {args.repeats}")
    print(f"{'method':28s} {'batch':>5s} {'ms/frame':>9s} {'x gradient':>10s} {'zennit ms/frame':>15s} {'zennit x grad':>13s}")
    for batch in args.batch:
        obs = torch.randint(0, 256, (batch, 4, 84, 84), dtype=torch.uint8, device=args.device)
        onehot = torch.nn.functional.one_hot(torch.zeros(batch, dtype=torch.long), 4).float().to(args.device)

        def plain_gradient():
            x = (obs.float() / 255.0).requires_grad_(True)
            out = network(x)
            return torch.autograd.grad(out, x, onehot)[0]

        base = median_ms(plain_gradient, args.repeats, args.warmup, args.device)
        print(f"{'gradient (plain autograd)':28s} {batch:5d} {base / batch:9.4f} {1.0:10.2f}   "
              f"({1000 * batch / base:,.0f} frames/s)")
        for name in list(COMPOSITES) + ["gradient_x_input"]:
            method = make_method(network, name)

            def ours(method=method):
                return method(obs.float() / 255.0, onehot)[0]

            t = median_ms(ours, args.repeats, args.warmup, args.device)
            line = f"{name:28s} {batch:5d} {t / batch:9.4f} {t / base:10.2f}"
            if zc is not None and name in ZENNIT:
                x0 = (obs.float() / 255.0)
                kwargs = {"low": torch.zeros_like(x0), "high": torch.ones_like(x0)} if name == "epsilon_gamma_box" else {}
                composite = getattr(zc, ZENNIT[name])(**kwargs)
                with ZennitGradient(network, composite) as attributor:
                    tz = median_ms(lambda: attributor(obs.float() / 255.0, onehot), args.repeats, args.warmup,
                                   args.device)
                line += f" {tz / batch:15.4f} {tz / base:13.2f}"
            print(line + f"   ({1000 * batch / t:,.0f} frames/s" +
                  (f"; zennit {1000 * batch / tz:,.0f})" if zc is not None and name in ZENNIT else ")"), flush=True)


if __name__ == "__main__":
    main()

"""Copy chosen checkpoints of a training run into ``agents/<name>/`` as light zips with their cards.

    python scripts/bundle_agents.py --run runs/train/breakout-dqn --name breakout-dqn --steps 100000 500000 1000000

Light zips drop the optimizer state and DQN's target network (rebuilt from the online network on
load), a quarter of a full DQN checkpoint. Each card gains ``"light": true``, the file's sha256 and
where it came from.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlexplain.checkpoints import strip_checkpoint  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="training run folder (scripts/train.py --out)")
    p.add_argument("--name", required=True, help="bundled agent name, e.g. breakout-dqn")
    p.add_argument("--steps", type=int, nargs="+", required=True, help="checkpoint steps to ship")
    p.add_argument("--agents", type=Path, default=Path(__file__).resolve().parents[1] / "agents")
    args = p.parse_args()
    out = args.agents / args.name
    for steps in args.steps:
        src = args.run / f"rl_model_{steps}_steps.zip"
        card_path = src.with_suffix(".json")
        if not src.is_file() or not card_path.is_file():
            raise SystemExit(f"missing {src} or its card {card_path.name}")
        dst = strip_checkpoint(src, out / src.name)
        card = json.loads(card_path.read_text())
        card.update(light=True, sha256=hashlib.sha256(dst.read_bytes()).hexdigest(), source_run=str(args.run))
        dst.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
        print(f"{dst}  {dst.stat().st_size / 1e6:.1f} MB  return {card['evaluation']['mean_return']:.1f}")


if __name__ == "__main__":
    main()

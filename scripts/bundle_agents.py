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

from rlexplain.agents.checkpoints import strip_checkpoint  # noqa: E402


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
    write_model_card(out)


def write_model_card(folder: Path) -> None:
    """``README.md``: the series' model card, made from the checkpoints' JSON cards."""
    cards = sorted((json.loads(p.read_text()) for p in folder.glob("rl_model_*_steps.json")),
                   key=lambda c: c["timesteps"])
    if not cards:
        return
    last = cards[-1]
    ev = last["evaluation"]
    lines = [
        f"# {folder.name}: {last['algorithm'].upper()} on {last['env_id']}",
        "",
        f"One training run of `scripts/train.py` (SB3 {last['versions']['stable_baselines3']}, torch "
        f"{last['versions']['torch']}, seed {last['seed']}), rl-zoo's Atari hyperparameters with "
        f"`total_timesteps={last['total_timesteps']}`:",
        "",
        "```",
        *dict.fromkeys(c["command"] for c in cards),  # the first start, then any resumes
        "```",
        "",
        *(["The second command resumed the run from its newest checkpoint: weights, target network and optimizer "
           "state reloaded, the replay buffer (not saved) refilled before learning went on.", ""]
          if len({c["command"] for c in cards}) > 1 else []),
        "Preprocessing: " + ", ".join(f"{k}={v}" for k, v in last["preprocessing"].items()) + ".",
        "Hyperparameters: " + ", ".join(f"{k}={v}" for k, v in last["hyperparameters"].items()) + ".",
        "",
        f"Evaluation: {ev['games']} full games (all lives, raw score, at most {ev['max_episode_steps']} agent steps), "
        f"{ev['policy']}, game seeds {ev['seed']}..{ev['seed'] + ev['games'] - 1}; a uniformly random policy on the "
        f"same games scores {ev['random_mean_return']:.1f}."
        + ("" if ev.get("fire_on_life_loss") else " In these games the agent had to press FIRE itself after a lost "
           "life (epsilon makes it happen); rlexplain's full-game envs now start every life with FIRE as training did."),
        "",
        *([f"The run was planned for {last['total_timesteps']:,} steps and stopped after {last['timesteps']:,} "
           f"when its session's time ran out; "
           + ("DQN's only schedule, the exploration rate (10% of the planned total), had long reached its final "
              "value." if last["algorithm"] == "dqn" else
              f"PPO's learning rate and clip range, linear in the planned total, were at "
              f"{1 - last['timesteps'] / last['total_timesteps']:.0%} of their initial values."), ""]
          if last["timesteps"] < last["total_timesteps"] else []),
        "| checkpoint | steps | mean return | std |",
        "|---|---:|---:|---:|",
    ]
    for c in cards:
        e = c["evaluation"]
        lines.append(f"| rl_model_{c['timesteps']}_steps.zip | {c['timesteps']:,} | {e['mean_return']:.1f} | "
                     f"{e['std_return']:.1f} |")
    light = ("no optimizer state and no target network (rebuilt from the online network by `rlexplain.load_agent`)"
             if last["algorithm"] in ("dqn", "qrdqn") else "no optimizer state")
    lines += ["", f"The zips are light: {light}. Each `.json` beside a zip is its full card (per-game returns, "
              "versions, sha256)."]
    (folder / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

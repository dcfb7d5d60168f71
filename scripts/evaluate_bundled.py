"""Run ``rlexplain evaluate`` on every bundled checkpoint and print the README's faithfulness table.

One ``evaluate`` per checkpoint (the default methods, 128 states, 4x4 regions, K = 100, blur), each
in its own folder under ``--out``; then one Markdown table of abc +- s.e. per method and checkpoint,
the randomisation verdicts, the cost relative to the gradient, and which method the evidence picks
as the default: the most faithful (abc averaged over each game's checkpoints, then over the games, so
that every game counts the same) among those that pass the sanity check on every checkpoint and cost
at most ``--max-cost`` times the gradient.

    python scripts/evaluate_bundled.py --out runs/evaluate-bundled
    python scripts/evaluate_bundled.py --agents breakout-dqn@200000 pong-ppo --n-states 32   # a quick look
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlexplain.agents import list_bundled  # noqa: E402
from rlexplain.evaluate import EvaluateOptions, evaluate  # noqa: E402
from rlexplain.report import evaluate_report  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", nargs="*", help="agents to evaluate (default: every bundled checkpoint)")
    p.add_argument("--out", type=Path, default=Path("runs/evaluate-bundled"))
    p.add_argument("--n-states", type=int, default=128)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--max-cost", type=float, default=2.0, help="cost limit for the default, in gradients")
    p.add_argument("--reuse", action="store_true", help="read finished evaluations in --out instead of rerunning")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    agents = args.agents or [f"{a['name']}@{c['timesteps']}" for a in list_bundled() for c in a["checkpoints"]]
    tables: dict[str, list[dict]] = {}
    games: dict[str, str] = {}
    for name in agents:
        folder = args.out / name.replace("/", "_").replace(":", "_")
        if args.reuse and (folder / "evaluate.csv").is_file():
            with open(folder / "evaluate.csv", newline="") as f:
                tables[name] = list(csv.DictReader(f))
            games[name] = json.loads((folder / "summary.json").read_text()).get("env_id", "?")
            continue
        print(f"# evaluating {name}", flush=True)
        result = evaluate(name, options=EvaluateOptions(n_states=args.n_states, steps=args.steps, progress=False),
                          out=folder, force=True, command=["python", *sys.argv])
        evaluate_report.write(result)
        tables[name] = [{k: str(v) for k, v in row.items()} for row in result.rows]
        games[name] = result.summary["env_id"]
    methods = [r["method"] for r in next(iter(tables.values()))]
    print("\n| method | " + " | ".join(f"`{a}` abc" for a in tables) + " | randomisation (rho_all) | cost (x gradient) |")
    print("|---|" + "---:|" * len(tables) + "---|---:|")
    verdict = {}
    for method in methods:
        rows = [next(r for r in table if r["method"] == method) for table in tables.values()]
        cells = [f"{float(r['abc']):.2f} +- {float(r['abc_se']):.2f}" for r in rows]
        sanity = [r["sanity"] for r in rows]
        rho = " / ".join(f"{float(r['rho_all']):.2f}" for r in rows)
        cost = float(np.median([float(r["relative_time"]) for r in rows]))
        by_game: dict[str, list[float]] = {}
        for agent, r in zip(tables, rows):
            by_game.setdefault(games[agent], []).append(float(r["abc"]))
        mean_abc = float(np.mean([np.mean(v) for v in by_game.values()]))
        verdict[method] = (mean_abc, all(s == "pass" for s in sanity), cost)
        mark = "pass" if verdict[method][1] else ("fail" if all(s == "fail" for s in sanity) else "mixed")
        print(f"| {method} | " + " | ".join(cells) + f" | {mark} ({rho}) | {cost:.1f} |")
    eligible = {m: v for m, v in verdict.items() if v[1] and v[2] <= args.max_cost and m != "random"}
    best_overall = max(verdict, key=lambda m: verdict[m][0])
    if eligible:
        best = max(eligible, key=lambda m: eligible[m][0])
        print(f"\nmost faithful method that passes the sanity check on every checkpoint and costs <= {args.max_cost:g}x "
              f"the gradient: {best} (abc {eligible[best][0]:.2f}, mean over games); most faithful overall: "
              f"{best_overall} (abc {verdict[best_overall][0]:.2f}, cost {verdict[best_overall][2]:.0f}x, sanity "
              f"{'pass' if verdict[best_overall][1] else 'not on every checkpoint'})")
    else:
        print("\nno method passes the sanity check on every checkpoint within the cost limit")
    per_agent = {a: max(t, key=lambda r: float(r["abc"]))["method"] for a, t in tables.items()}
    print("most faithful per checkpoint: " + ", ".join(f"{a}: {m}" for a, m in per_agent.items()))


if __name__ == "__main__":
    main()

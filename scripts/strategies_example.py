"""The README's worked example of ``rlexplain strategies``: one full game per bundled checkpoint, then SpRAy.

    python scripts/strategies_example.py            # Breakout, every bundled breakout-dqn checkpoint

Records one full game (seed 0) with each checkpoint of a bundled series into ``--out``/<checkpoint>, runs
``rlexplain strategies`` over all of them, prints the strategies and their shares per checkpoint, and
copies the prototype grid, the shares over training and the event-aligned densities into docs/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlexplain import cli  # noqa: E402
from rlexplain.agents import list_bundled  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--series", default="breakout-dqn")
    p.add_argument("--out", type=Path, default=Path("runs/strategies-example"))
    args = p.parse_args()
    series = next(a for a in list_bundled() if a["name"] == args.series)
    dirs = []
    for ckpt in series["checkpoints"]:
        name = f"{args.series}@{ckpt['timesteps']}"
        run = args.out / name
        if not (run / "summary.json").is_file():
            cli.main(["record", "--agent", name, "--out", str(run), "--force", "--quiet", "--no-plots", "--no-video"])
        dirs.append(str(run))
    cli.main(["strategies", *dirs, "--out", str(args.out / "strategies"), "--force"])
    data = json.loads((args.out / "strategies" / "strategies.json").read_text())
    print("\n| strategy | " + " | ".join(r["run"] for r in data["over_training"]) + " |")
    print("|---|" + "---:|" * len(data["over_training"]))
    for c in data["clusters"]:
        key = f"strategy_{c['cluster']}"
        print(f"| {c['cluster']}: {c['label']} | " + " | ".join(f"{r[key]:.0%}" for r in data["over_training"]) + " |")
    DOCS.mkdir(exist_ok=True)
    for name in ("prototypes.png", "strategies_over_training.png", "events.png"):
        shutil.copy(args.out / "strategies" / name, DOCS / f"strategies_{name}")


if __name__ == "__main__":
    main()

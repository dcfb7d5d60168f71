"""Time and memory of ``rlexplain strategies`` on many maps (goal: 10,000 maps in <= 60 s on a 2-core CPU).

    python scripts/bench_strategies.py               # 10,000 maps from 5 planted patterns
    python scripts/bench_strategies.py --maps 2000

Builds a synthetic run folder with rlexplain's own writers (maps of 5 planted blobs plus noise), then
runs the analysis (SpRAy, descriptions, highlights, events; no figures or videos) in a fresh process and
prints its wall time, peak memory and the strategies found.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_memory import synthetic_run  # noqa: E402

CODE = """
import resource, sys, time
from rlexplain.strategies import strategies
started = time.perf_counter()
result = strategies([sys.argv[1]], out=sys.argv[2])
print(f"{time.perf_counter() - started:.1f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} "
      f"{result.spectral.k}")
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--maps", type=int, default=10_000)
    p.add_argument("--patterns", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = synthetic_run(Path(tmp) / "run", args.maps, patterns=args.patterns)
        done = subprocess.run([sys.executable, "-c", CODE, str(run), str(Path(tmp) / "out")], capture_output=True,
                              text=True, check=True)
        seconds, rss, k = done.stdout.split()
    print(f"# {args.maps} maps ({args.patterns} planted patterns + noise)")
    print(f"strategies analysis   {float(seconds):7.1f} s   peak RSS {float(rss):6.0f} MB   k found: {k}")


if __name__ == "__main__":
    main()

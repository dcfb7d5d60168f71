"""Remake the README's pictures: one video frame and a screenshot of the viewer (docs/*.png).

    python scripts/readme_figures.py            # needs Chromium and Playwright for the screenshot

Records 400 steps of the bundled Breakout agent with the default method, keeps video frame
``--frame``, writes the run's ``view.html`` and photographs it in headless Chromium at that step.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import imageio.v2 as imageio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlexplain import cli  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frame", type=int, default=262)
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = p.parse_args()
    DOCS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cli.main(["record", "--env", "Breakout", "--max-steps", "400", "--boxes", "--out", str(run), "--quiet",
                  "--no-plots"])
        reader = imageio.get_reader(run / "episode_0.mp4")
        for i, frame in enumerate(reader):
            if i == args.frame:
                imageio.imwrite(DOCS / "video_frame.png", frame)
                break
        reader.close()
        cli.main(["view", str(run)])
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1040, "height": 990})
            page.goto((run / "view.html").as_uri())
            page.evaluate("() => window.rlexplainViewer.ready")
            page.evaluate(f"() => window.rlexplainViewer.seek({args.frame})")
            page.screenshot(path=str(DOCS / "viewer.png"))
            browser.close()
    for name in ("video_frame.png", "viewer.png"):
        print(f"{DOCS / name}: {(DOCS / name).stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()

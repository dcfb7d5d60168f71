"""The viewer and the comparison report in a real browser (headless Chromium): keyboard stepping, seeking,
toggles, and the displayed step, frame and timeline cursor agreeing; no request leaves the page, no
console error occurs."""

from __future__ import annotations

import numpy as np
import pytest

from rlexplain import cli, runs

from conftest import PageWatch


@pytest.fixture(scope="module")
def viewed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("view") / "run"
    assert cli.main(["record", "--env", "Breakout", "--episodes", "2", "--max-steps", "90", "--out", str(out),
                     "--quiet", "--no-plots"]) == 0
    assert cli.main(["view", str(out)]) == 0
    return out


def frame_mean(run, episode: int, step: int) -> np.ndarray:
    frames = runs.load_maps(run, episode)["frames"]
    return frames[step].reshape(-1, 3).mean(0)


def test_viewer_steps_seeks_and_toggles_with_step_frame_and_cursor_in_agreement(browser, viewed_run, tmp_path):
    watch = PageWatch(browser, (viewed_run / "view.html").as_uri())
    page = watch.page
    page.evaluate("() => window.rlexplainViewer.ready")
    page.evaluate("() => window.rlexplainViewer.setOverlay(false)")
    n = page.evaluate("() => window.rlexplainViewer.nSteps")
    assert n == 90

    def check(step: int, episode: int = 0) -> None:
        page.evaluate("() => window.rlexplainViewer.drawn()")
        assert page.evaluate("() => window.rlexplainViewer.step") == step
        assert page.inner_text("#step") == str(step)
        assert int(page.input_value("#scrub")) == step
        shown = np.array(page.evaluate("() => window.rlexplainViewer.gameMean()"))
        np.testing.assert_allclose(shown, frame_mean(viewed_run, episode, step), atol=1e-6)
        width = page.evaluate("() => document.getElementById('timeline').width")
        expected = 60 + (width - 70) * step / (n - 1)
        assert page.evaluate("() => window.rlexplainViewer.cursorX()") == pytest.approx(expected)

    page.focus("body")
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    check(3)
    page.keyboard.press("Shift+ArrowRight")
    check(13)
    page.keyboard.press("ArrowLeft")
    check(12)
    page.evaluate("() => window.rlexplainViewer.seek(57)")
    check(57)
    box = page.locator("#timeline").bounding_box()  # clicking the timeline jumps there
    page.mouse.click(box["x"] + (60 + (1000 - 70) * 30 / 89) * box["width"] / 1000, box["y"] + 50)
    check(30)
    plain = np.array(page.evaluate("() => window.rlexplainViewer.gameMean()"))
    page.keyboard.press("o")
    page.evaluate("() => window.rlexplainViewer.drawn()")
    assert page.is_checked("#overlay")
    assert not np.allclose(page.evaluate("() => window.rlexplainViewer.gameMean()"), plain)
    page.select_option("#episode", "1")
    page.evaluate("() => window.rlexplainViewer.drawn()")
    page.evaluate("() => window.rlexplainViewer.setOverlay(false)")
    check(0, episode=1)
    page.screenshot(path=str(tmp_path / "viewer.png"))
    assert (tmp_path / "viewer.png").stat().st_size > 10_000
    assert watch.errors == [] and watch.outside() == []


def test_compare_report_loads_every_image_and_links_rows_to_their_maps(browser, tmp_path):
    out = tmp_path / "cmp"
    assert cli.main(["compare", "--env", "Breakout", "--n-states", "4", "--games", "1", "--max-steps", "200",
                     "--out", str(out), "--quiet"]) == 0
    watch = PageWatch(browser, (out / "report.html").as_uri())
    page = watch.page
    page.wait_for_load_state("load")
    assert page.evaluate("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    first = page.locator("table a").first
    target = first.get_attribute("href")
    first.click()
    assert page.evaluate("() => location.hash") == target
    assert page.locator(f"{target} img").evaluate("i => i.naturalWidth") > 0
    assert watch.errors == [] and watch.outside() == []


def test_sweep_report_loads_every_figure_and_links_each_job_to_its_folder(browser, tmp_path):
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    agents = Path(__file__).resolve().parents[1] / "agents" / "breakout-dqn"
    out = tmp_path / "sweep"
    assert cli.main(["sweep", "--agents", str(agents / "rl_model_200000_steps.zip"),
                     str(agents / "rl_model_1000000_steps.zip"), "--jobs", "record", "--max-steps", "25",
                     "--serial", "--quiet", "--out", str(out)]) == 0
    watch = PageWatch(browser, (out / "report.html").as_uri())
    page = watch.page
    page.wait_for_load_state("load")
    assert page.evaluate("() => document.images.length") == 2  # attention and returns (no evaluate jobs)
    assert page.evaluate("() => [...document.images].every(i => i.complete && i.naturalWidth > 300)")
    links = page.evaluate("() => [...document.querySelectorAll('table a')].map(a => a.href)")
    assert len(links) == 2 and all(Path(unquote(urlparse(link).path)).exists() for link in links)
    assert watch.errors == [] and watch.outside() == []

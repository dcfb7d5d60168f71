"""SpRAy strategies: planted patterns are found (eigengap and adjusted Rand index), labels do not depend
on the input order, events align where they happen, a real recording goes end to end, bad input fails in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlexplain import cli
from rlexplain.strategies import event_aligned, highlights_div, importance, shrink, spectral_clusters

from conftest import PageWatch


def planted_maps(n_per: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Maps made of one of three blobs (top-left, centre, bottom-right) plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:84, 0:84]
    centres = [(15, 15), (42, 42), (70, 68)]
    maps, truth = [], []
    for label, (cy, cx) in enumerate(centres):
        for _ in range(n_per):
            jitter = rng.normal(0, 3, 2)
            blob = np.exp(-((yy - cy - jitter[0]) ** 2 + (xx - cx - jitter[1]) ** 2) / (2 * 6.0 ** 2))
            maps.append(blob + 0.15 * rng.random((84, 84)))
            truth.append(label)
    return np.stack(maps), np.array(truth)


def test_planted_patterns_are_found_with_the_eigengap_and_match_the_truth():
    from sklearn.metrics import adjusted_rand_score

    maps, truth = planted_maps()
    result = spectral_clusters(shrink(maps, 21), seed=0)
    assert result.k == 3
    assert adjusted_rand_score(truth, result.labels) >= 0.9
    assert result.eigenvalues[2] < 1e-6 < result.eigenvalues[3]  # three near-zero eigenvalues, then a step


def test_labels_do_not_depend_on_the_order_of_the_maps():
    maps, _ = planted_maps(40, seed=1)
    features = shrink(maps, 21)
    keys = np.stack([np.zeros(len(maps), int), np.zeros(len(maps), int), np.arange(len(maps))], 1)
    first = spectral_clusters(features, keys=keys, seed=0)
    perm = np.random.default_rng(5).permutation(len(maps))
    second = spectral_clusters(features[perm], keys=keys[perm], seed=0)
    np.testing.assert_array_equal(second.labels, first.labels[perm])


def test_event_alignment_on_a_hand_made_sequence():
    t = np.arange(200)
    ball = np.ones(200)
    events = np.zeros(200, bool)
    events[[50, 120, 195]] = True
    for e in (50, 120, 195):  # the agent looks at the ball more and more in the 10 steps before each event
        ball[e - 10: e + 1] = np.linspace(1, 11, 11)
    aligned = event_aligned({"ball": ball, "steps": t.astype(float)}, events, window=(-30, 10))["ball"]
    offsets = aligned["offset"]
    np.testing.assert_allclose(aligned["mean"][offsets == 0], 11)
    np.testing.assert_allclose(aligned["mean"][offsets == -5], 6)
    np.testing.assert_allclose(aligned["mean"][offsets == -20], 1)
    assert aligned["n"][offsets == 10][0] == 2  # the third event's window runs past the end
    assert aligned["ci"][offsets == 0][0] == 0  # identical around every event


def test_highlights_are_important_and_diverse():
    scores = np.array([5.0, 4.9, 4.8, 1.0, 3.0, 0.5])
    features = np.eye(6)
    features[1] = features[0]  # step 1 looks like step 0
    groups = np.zeros(6, int)
    steps = np.array([0, 100, 200, 300, 400, 500])
    assert highlights_div(scores, features, groups, steps, 3, context=10) == [0, 2, 4]
    q = np.array([[1.0, 1.0, 1.0], [0.0, 3.0, 1.0]])
    np.testing.assert_allclose(importance(q, "q_values"), [0.0, 3.0])
    p = np.array([[1 / 3] * 3, [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(importance(p, "probabilities"), [0.0, 1.0], atol=1e-9)


@pytest.fixture(scope="module")
def two_recordings(tmp_path_factory):
    root = tmp_path_factory.mktemp("strategies")
    dirs = []
    for steps, name in ((150, "a"), (150, "b")):
        out = root / name
        agent = "breakout-dqn@500000" if name == "a" else "breakout-dqn"
        assert cli.main(["record", "--env", "Breakout", "--agent", agent, "--max-steps", str(steps), "--out", str(out),
                         "--quiet", "--no-plots", "--no-video"]) == 0
        dirs.append(out)
    return dirs


def test_strategies_end_to_end_on_real_recordings_with_report_and_virelay_export(two_recordings, tmp_path, browser):
    import h5py

    out = tmp_path / "st"
    assert cli.main(["strategies", *map(str, two_recordings), "--out", str(out), "--virelay"]) == 0
    data = json.loads((out / "strategies.json").read_text())
    k = data["k"]
    assert k >= 2 and len(data["clusters"]) == k and data["k_from"] == "eigengap"
    assert abs(sum(c["share"] for c in data["clusters"]) - 1) < 1e-9
    assert [r["run"] for r in data["over_training"]] == ["breakout-dqn@500000", "breakout-dqn@1000000"]
    for cluster in data["clusters"]:
        assert cluster["label"] and set(cluster["follows"]) == {"reward_within_30", "life_lost_within_30"}
    rows = (out / "clusters.csv").read_text().splitlines()
    assert rows[0] == "run,episode,step,cluster,x,y" and len(rows) == 1 + 300
    for name in ("eigengap.png", "embedding.png", "prototypes.png", "strategies_over_training.png", "events.png",
                 "highlights.mp4", "strategy_0.mp4", "report.html"):
        assert (out / name).stat().st_size > 0, name
    assert data["events"]["reward"]["ball"]["events"] > 0
    with h5py.File(out / "virelay" / "analysis.h5") as f:
        assert f["all/embedding/spectral/root"].shape[0] == 300
        assert f[f"all/clustering/kmeans-{k:02d}/root"].shape == (300,)
    with h5py.File(out / "virelay" / "attribution.h5") as f:
        assert f["attribution"].shape == (300, 1, 84, 84) and np.abs(f["attribution"][5]).sum() > 0
    watch = PageWatch(browser, (out / "report.html").as_uri())
    watch.page.wait_for_load_state("load")
    assert watch.page.evaluate("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert watch.errors == [] and watch.outside() == []
    assert cli.main(["strategies", *map(str, two_recordings), "--k", "2", "--out", str(out), "--force",
                     "--no-video"]) == 0
    assert json.loads((out / "strategies.json").read_text())["k_from"] == "given (--k)"


def test_bad_strategies_input_is_a_one_line_error(two_recordings, tmp_path, capsys):
    no_maps = tmp_path / "nomaps"
    assert cli.main(["record", "--env", "Breakout", "--max-steps", "5", "--out", str(no_maps), "--quiet",
                     "--no-maps", "--no-video", "--no-plots"]) == 0
    from stable_baselines3 import DQN

    from conftest import fake_atari_env

    DQN("CnnPolicy", fake_atari_env(6), buffer_size=10, device="cpu").save(tmp_path / "pong.zip")
    pong = tmp_path / "pong"
    assert cli.main(["record", "--env", "Pong", "--agent", str(tmp_path / "pong.zip"), "--max-steps", "5",
                     "--out", str(pong), "--quiet", "--no-video", "--no-plots"]) == 0
    capsys.readouterr()
    for argv, message in [([str(no_maps)], "holds no stored maps"),
                          ([str(two_recordings[0]), str(pong)], "the runs are of different games"),
                          ([str(two_recordings[0]), "--k", "999"], "is not between 1 and the 150 maps")]:
        assert cli.main(["strategies", *argv, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
        assert not (tmp_path / "x").exists()

"""RAM object extractors on known states, per-frame masks, statistics invariants, and `rlexplain stats`."""

from __future__ import annotations

import numpy as np
import pytest

from rlexplain import cli, stats
from rlexplain.envs import make_env
from rlexplain.objects import BreakoutObjects, PongObjects, box_to_input, extractor_for
from rlexplain.record import record
from rlexplain.runs import read_steps

RED = (200, 72, 72)  # Breakout's ball and paddle


def breakout_after_fire(steps: int = 12):
    env = make_env("Breakout", seed=0)
    env.reset(seed=0)
    for _ in range(steps):
        env.step(1)  # FIRE, then keep the paddle still
    return env


def test_breakout_ball_is_absent_until_fire():
    env = make_env("Breakout", seed=0, wrapper_kwargs={"noop_max": 0})
    # AtariWrapper presses FIRE on reset; a raw reset shows the state before it
    env.unwrapped.reset(seed=0)
    labels = [label for label, _ in BreakoutObjects().boxes(env.unwrapped.ale.getRAM())]
    assert "ball" not in labels and "paddle" in labels


def test_breakout_ball_box_covers_the_balls_pixels_after_fire():
    env = breakout_after_fire()
    ale = env.unwrapped.ale
    found = 0
    for _ in range(80):
        _, _, terminated, _, _ = env.step(1)
        if terminated:
            break
        frame, boxes = ale.getScreenRGB(), dict(BreakoutObjects().boxes(ale.getRAM()))
        ys, xs = np.nonzero((frame[94:188, 8:152] == RED).all(-1))
        if len(ys) == 0:
            continue
        assert "ball" in boxes
        x, y, w, h = boxes["ball"]
        ys, xs = ys + 94, xs + 8
        assert np.all((xs >= x) & (xs < x + w) & (ys >= y) & (ys < y + h))
        found += 1
    assert found >= 10


def test_breakout_brick_bitmap_matches_the_rendered_wall():
    env = breakout_after_fire()
    ale = env.unwrapped.ale
    rng = np.random.default_rng(0)
    for _ in range(600):  # a paddle that follows the ball breaks bricks
        ram = ale.getRAM()
        paddle, ball = int(ram[72]) - 47 + 8, int(ram[99]) - 49
        action = 1 if ram[101] == 0 else (2 if ball > paddle + 2 else 3 if ball < paddle - 2 else 0)
        if rng.random() < 0.05:
            action = rng.integers(4)
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    bitmap = BreakoutObjects().bricks(ale.getRAM())
    frame = ale.getScreenRGB()
    drawn = np.array([[frame[57 + 6 * r + 3, 8 + 8 * c + 4].any() for c in range(18)] for r in range(6)])
    assert bitmap.sum() < 108, "some bricks should be broken"
    np.testing.assert_array_equal(bitmap, drawn)


def test_pong_boxes_cover_ball_and_paddles():
    env = make_env("Pong", seed=0)
    env.reset(seed=0)
    ale = env.unwrapped.ale
    rng = np.random.default_rng(1)
    colours = {"ball": (236, 236, 236), "player": (92, 186, 92), "enemy": (213, 130, 74)}
    checked = 0
    for _ in range(150):
        env.step(rng.integers(6))
        frame, boxes = ale.getScreenRGB(), dict(PongObjects().boxes(ale.getRAM()))
        for label, colour in colours.items():
            ys, xs = np.nonzero((frame[34:194] == colour).all(-1))
            if len(ys):
                x, y, w, h = boxes[label]
                ys = ys + 34
                assert np.all((xs >= x) & (xs < x + w) & (ys >= y) & (ys < y + h)), label
                checked += 1
    assert checked > 200


def test_boxes_map_onto_the_input_as_area_resampling_does():
    rows, cols = box_to_input((80, 105, 2, 4))  # native centre -> input centre
    assert rows == slice(42, 44) and cols == slice(42, 44)  # native 81 overlaps input col 43 ([81.9, 83.8))
    assert box_to_input((0, 0, 160, 210)) == (slice(0, 84), slice(0, 84))


def test_each_stacked_frame_uses_the_boxes_of_its_own_step():
    extractor = BreakoutObjects()
    rams = []
    for x in (60, 80, 100, 120):
        ram = np.zeros(128, np.uint8)
        ram[72], ram[99], ram[101] = 100, x + 49, 120  # paddle fixed, ball moving right
        rams.append(ram)
    masks = extractor.masks(rams, 4)
    centres = [np.nonzero(masks["ball"][..., i])[1].mean() for i in range(4)]
    assert centres == sorted(centres) and centres[0] < centres[-1]
    partial = extractor.masks(rams[-2:], 4)  # start of an episode: older frames are zero-filled
    assert not partial["ball"][..., :2].any() and partial["ball"][..., 3].any()


def test_other_games_fall_back_to_grid_regions_without_ocatari(monkeypatch):
    import rlexplain.objects as objects

    def missing(game):
        raise ModuleNotFoundError("No module named 'ocatari'", name="ocatari")

    monkeypatch.setattr(objects, "_import_ocatari_ram", missing)
    assert extractor_for("SpaceInvadersNoFrameskip-v4") is None
    assert isinstance(extractor_for("BreakoutNoFrameskip-v4"), BreakoutObjects)


def test_category_shares_sum_to_at_most_one_and_grid_shares_to_one():
    rng = np.random.default_rng(0)
    relevance = rng.standard_normal((84, 84, 4)).astype(np.float32)
    masks = BreakoutObjects().masks([np.full(128, 100, np.uint8)] * 4, 4)
    row = stats.step_statistics(relevance, masks)
    categories = [k for k in row if k.startswith("share_") and k != "share_other"]
    assert sum(row[k] for k in categories) <= 1 + 1e-9
    assert sum(row[k] for k in categories) + row["share_other"] == pytest.approx(1.0)
    grid = [v for k, v in row.items() if k.startswith("grid_share_")]
    assert len(grid) == 36 and sum(grid) == pytest.approx(1.0)
    assert 0 <= row["entropy"] <= 1
    assert sum(row[f"frame_share_{i}"] for i in range(4)) == pytest.approx(1.0)


def test_statistics_on_known_maps():
    relevance = np.zeros((84, 84, 4), np.float32)
    relevance[10, 20, 3] = 2.0
    relevance[50, 60, 0] = -1.0
    row = stats.step_statistics(relevance)
    assert row["relevance_pos"] == 2.0 and row["relevance_neg"] == -1.0 and row["relevance_sum"] == 1.0
    assert row["frame_share_3"] == 1.0 and row["frame_share_0"] == 0.0
    assert (row["com_row"], row["com_col"]) == (10.0, 20.0) and row["entropy"] == 0.0
    empty = stats.step_statistics(-np.ones((84, 84, 4), np.float32))
    assert np.isnan(empty["frame_share_0"]) and np.isnan(empty["entropy"])


def test_stats_command_writes_plots_from_a_short_run(tmp_path, capsys):
    run = record("Breakout", "breakout-dqn", max_steps=40, out=tmp_path / "run", video=False,
                 progress=False, composite="epsilon_gamma_box").run_dir
    columns = read_steps(run)
    for c in ("paddle", "ball", "bricks", "hud", "other"):
        assert f"share_{c}" in columns
    assert cli.main(["stats", str(run)]) == 0
    out = capsys.readouterr().out
    assert "| ball |" in out and "mean share" in out
    for name in ("densities_episode_0.png", "mean_heatmap_episode_0.png", "densities_per_action.png", "summary_table.md"):
        assert (run / "plots" / name).stat().st_size > 0


def test_ocatari_adapter_names_objects_of_other_games_when_installed():
    pytest.importorskip("termcolor")  # OCAtari's RAM modules need it; install: pip install --no-deps ocatari termcolor
    extractor = extractor_for("FreewayNoFrameskip-v4")
    if extractor is None:
        pytest.skip("ocatari is not installed")
    env = make_env("Freeway", seed=0)
    env.reset(seed=0)
    for _ in range(30):
        env.step(1)
    masks = extractor.masks([env.unwrapped.ale.getRAM()] * 4, 4)
    assert {"chicken", "car"} <= set(masks) and masks["chicken"].any() and masks["car"].any()


def test_relevance_on_the_ball_alone_gives_ball_share_one_and_density_one_over_its_area():
    ram = np.zeros(128, np.uint8)
    ram[72], ram[99], ram[101] = 100, 129, 120  # paddle at x 53, ball at (80, 129)
    masks = BreakoutObjects().masks([ram] * 4, 4)
    relevance = np.where(masks["ball"], 1.0, 0.0).astype(np.float32)
    relevance[masks["paddle"]] = -5.0  # negative evidence does not count in shares
    row = stats.step_statistics(relevance, masks)
    assert row["share_ball"] == 1.0 and row["share_paddle"] == 0.0 and row["share_other"] == 0.0
    assert row["density_ball"] == pytest.approx(1.0 / masks["ball"].mean())

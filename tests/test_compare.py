"""Checkpoint comparison: fixed states, training order, PPO/other games, the report's links."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import fake_atari_env

from rlexplain import cli
from rlexplain.agents.checkpoints import save_checkpoint
from rlexplain.compare import compare
from rlexplain.states import load_states
from rlexplain.stats import rank_correlation
from rlexplain.report import compare_report


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_bundled_series_compared_on_a_few_states_gives_one_row_per_checkpoint_in_training_order(tmp_path):
    result = compare("Breakout", out=tmp_path / "cmp", n_states=6, games=1, max_steps=300, progress=False)
    rows = read_csv(result.out / "summary.csv")
    steps = [int(r["timesteps"]) for r in rows]
    assert steps == sorted(steps) and len(rows) >= 1
    for key in ("checkpoint", "mean_return", "share_paddle", "share_ball", "share_bricks", "share_hud"):
        assert key in rows[0]
    states = load_states(result.out / "states.npz")
    assert states["obs"].shape == (6, 84, 84, 4) and str(states["env_id"]) == "BreakoutNoFrameskip-v4"
    similarity = np.loadtxt(result.out / "similarity.csv", delimiter=",", ndmin=2)
    assert similarity.shape == (len(rows), len(rows)) and np.allclose(np.diag(similarity), 1.0)


def test_report_references_files_that_exist_and_links_each_row_to_its_map(tmp_path):
    result = compare("Breakout", out=tmp_path / "cmp", n_states=4, games=0, progress=False)
    page = compare_report.write(result).read_text()
    links = re.findall(r'(?:src|href)="([^"#][^"]*)"', page)
    assert {"states.mp4", "densities_vs_steps.png", "similarity.png", "summary.csv"} <= set(links)
    assert "return_vs_steps.png" not in links  # no games, no empty returns plot
    for link in links:
        assert (result.out / link).is_file(), link
    for row in result.rows:
        assert f'href="#ckpt-{row["timesteps"]}"' in page and f'id="ckpt-{row["timesteps"]}"' in page
    assert "/" not in result.meta["reference"] and "[" not in page.split("objects read from RAM")[1][:40]


def _ppo_checkpoints(tmp_path: Path) -> list[Path]:
    from stable_baselines3 import PPO

    paths = []
    for steps, seed in ((2000, 0), (1000, 1)):  # written out of order on purpose
        model = PPO("CnnPolicy", fake_atari_env(6), n_steps=8, batch_size=8, seed=seed, device="cpu",
                    policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=16)))
        paths.append(save_checkpoint(model, tmp_path / "ppo" / f"rl_model_{steps}_steps.zip"))
    return paths


def test_ppo_checkpoints_on_another_game_compare_with_its_objects_and_reused_states(tmp_path):
    _ppo_checkpoints(tmp_path)
    first = compare("Pong", [tmp_path / "ppo"], out=tmp_path / "a", n_states=5, games=1, max_steps=100,
                    progress=False)
    rows = read_csv(first.out / "summary.csv")
    assert [int(r["timesteps"]) for r in rows] == [1000, 2000]
    assert "share_player" in rows[0] and "share_enemy" in rows[0]
    again = compare("Pong", [tmp_path / "ppo"], out=tmp_path / "b", states=first.out / "states.npz", games=0,
                    progress=False)
    np.testing.assert_array_equal(load_states(again.out / "states.npz")["obs"], load_states(first.out / "states.npz")["obs"])
    assert read_csv(again.out / "summary.csv")[0]["share_player"] == rows[0]["share_player"]


def test_states_of_another_game_are_refused(tmp_path):
    _ppo_checkpoints(tmp_path)
    first = compare("Pong", [tmp_path / "ppo"], out=tmp_path / "a", n_states=3, games=0, progress=False)
    assert cli.main(["compare", "--env", "Breakout", "--states", str(first.out / "states.npz"),
                     "--out", str(tmp_path / "c"), "--quiet"]) == 2


def test_missing_checkpoint_gives_a_one_line_error(tmp_path, capsys):
    assert cli.main(["compare", "--env", "Breakout", str(tmp_path / "nope.zip"), "--quiet"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_games_without_object_categories_compare_by_grid_rows(tmp_path, monkeypatch):
    import rlexplain.compare as compare_module

    monkeypatch.setattr(compare_module, "extractor_for", lambda env_id: None)
    _ppo_checkpoints(tmp_path)
    result = compare("Pong", [tmp_path / "ppo"], out=tmp_path / "g", n_states=3, games=0, progress=False)
    row = read_csv(result.out / "summary.csv")[0]
    shares = [float(row[f"share_grid_row_{r}"]) for r in range(6)]
    assert sum(shares) == pytest.approx(1.0, abs=1e-6)


def test_rank_correlation_uses_average_ranks_like_scipy_on_maps_full_of_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    # two independent maps, 70% exact zeros each (as epsilon_plus maps are)
    a = rng.normal(size=(5, 84, 84)) * (rng.random((5, 84, 84)) > 0.7)
    b = rng.normal(size=(5, 84, 84)) * (rng.random((5, 84, 84)) > 0.7)
    want = np.mean([spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b)])
    assert rank_correlation(a, b) == pytest.approx(want, abs=1e-9)
    assert abs(rank_correlation(a, b)) < 0.05  # independent maps: no correlation invented by ordering ties
    assert rank_correlation(a, a) == pytest.approx(1.0)

"""The bundled Pong series: ``rlexplain record --env Pong`` works out of the box, the final checkpoint
beats the built-in opponent, and the Pong objects (player, enemy, ball) carry the evidence they should."""

from __future__ import annotations

import csv
import json

import numpy as np

from rlexplain import cli, envs
from rlexplain.agents import list_bundled, load_agent


def test_pong_series_is_bundled_and_its_final_checkpoint_wins_a_game():
    series = next(a for a in list_bundled() if a["name"] == "pong-ppo")
    assert series["env_id"] == "PongNoFrameskip-v4" and series["algorithm"] == "ppo"
    assert len(series["checkpoints"]) >= 3
    final = series["checkpoints"][-1]
    assert final["mean_return"] >= 5 and final["games"] >= 10
    agent = load_agent("pong-ppo")
    returns = envs.play_games(lambda obs: agent.act(obs), agent.env_id, 2, seed=10_000, max_episode_steps=8000)
    assert max(returns) > 0, returns  # full games against the built-in opponent: at least one won


def test_record_pong_out_of_the_box_with_player_enemy_and_ball_statistics(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["record", "--env", "Pong", "--max-steps", "300", "--out", str(out), "--quiet", "--no-video",
                     "--no-plots"]) == 0
    assert json.loads((out / "summary.json").read_text())["agent"]["name"] == "pong-ppo@2000000"
    with open(out / "steps.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 300
    shares = {c: np.array([float(r[f"share_{c}"] or "nan") for r in rows]) for c in ("player", "enemy", "ball", "hud")}
    total = sum(np.nan_to_num(v) for v in shares.values()) + np.array([float(r["share_other"] or 0) for r in rows])
    np.testing.assert_allclose(total[~np.isnan(shares["ball"])], 1.0, atol=1e-3)
    density = {c: np.nanmean([float(r[f"density_{c}"] or "nan") for r in rows]) for c in ("player", "ball")}
    # the agent's own paddle and the ball get more evidence than their area: it watches what it must hit
    assert density["ball"] > 1 and density["player"] > 1, density

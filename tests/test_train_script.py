"""scripts/train.py end to end on a tiny budget: checkpoints with rl-zoo names, model cards, resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlexplain.agents import load_agent

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train.py"


def train(out: Path, total: int, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--env", "Breakout", "--algo", "dqn", "--total-timesteps", str(total),
           "--save-every", "200", "--out", str(out), "--hp", "learning_starts=100", "--hp", "buffer_size=500",
           "--eval-games", "2", "--eval-max-steps", "200", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("light", [False, True])
def test_train_script_writes_checkpoints_and_cards_and_resumes(tmp_path, light):
    out = tmp_path / "run"
    flags = ["--light"] if light else []
    first = train(out, 400, *flags)
    assert first.returncode == 0, first.stderr[-2000:]
    assert sorted(p.name for p in out.glob("rl_model_*_steps.zip")) == ["rl_model_200_steps.zip",
                                                                        "rl_model_400_steps.zip"]
    card = json.loads((out / "rl_model_400_steps.json").read_text())
    for key in ("algorithm", "env_id", "preprocessing", "timesteps", "seed", "hyperparameters", "evaluation",
                "command"):
        assert key in card
    assert card["timesteps"] == 400 and card["hyperparameters"]["learning_starts"] == 100
    assert card["evaluation"]["games"] == 2 and "random_mean_return" in card["evaluation"]
    resumed = train(out, 600, "--resume", *flags)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from rl_model_400_steps.zip" in resumed.stdout
    assert (out / "rl_model_600_steps.zip").is_file()
    agent = load_agent(out / "rl_model_600_steps.zip")
    assert agent.timesteps == 600 and agent.env_id == "BreakoutNoFrameskip-v4"

"""scripts/train.py end to end on a tiny budget, in-process: rl-zoo checkpoint names, model cards, resume."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from rlexplain.agents import load_agent

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train.py"


def train(monkeypatch, out: Path, total: int, *extra: str) -> None:
    spec = importlib.util.spec_from_file_location("rlexplain_train_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = ["train.py", "--env", "Breakout", "--algo", "dqn", "--total-timesteps", str(total), "--save-every", "200",
            "--out", str(out), "--hp", "learning_starts=100", "--hp", "buffer_size=500", "--eval-games", "2",
            "--eval-max-steps", "200", "--light", *extra]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()


def test_train_script_writes_checkpoints_and_cards_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    train(monkeypatch, out, 400)
    assert sorted(p.name for p in out.glob("rl_model_*_steps.zip")) == ["rl_model_200_steps.zip",
                                                                        "rl_model_400_steps.zip"]
    card = json.loads((out / "rl_model_400_steps.json").read_text())
    for key in ("algorithm", "env_id", "preprocessing", "timesteps", "seed", "hyperparameters", "evaluation",
                "command", "versions"):
        assert key in card
    assert card["timesteps"] == 400 and card["hyperparameters"]["learning_starts"] == 100 and card["light"]
    assert card["evaluation"]["games"] == 2 and len(card["evaluation"]["random_returns"]) == 2
    train(monkeypatch, out, 600, "--resume")
    assert "resuming from rl_model_400_steps.zip" in capsys.readouterr().out
    agent = load_agent(out / "rl_model_600_steps.zip")
    assert agent.timesteps == 600 and agent.env_id == "BreakoutNoFrameskip-v4"

"""``hf:ORG/REPO`` agents, loaded through huggingface_hub from a real Hub cache that the test builds
(``models--ORG--REPO/{blobs,snapshots/<commit>,refs/main}``, as the Hub client writes it), offline;
and the one-line errors for a missing repository, an unreachable Hub and a repository without a zip.

huggingface_hub reads its settings (cache folder, offline mode, endpoint) when it is imported, so each
case runs in a fresh process with its environment, exactly as a user's command would."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import fake_atari_env, require

REPO = "sb3/dqn-PongNoFrameskip-v4"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# rl-zoo writes its hyperparameters as a dumped OrderedDict; frame_stack 2 proves config.yml is applied
CONFIG = """!!python/object/apply:collections.OrderedDict
- - - env_wrapper
    - - stable_baselines3.common.atari_wrappers.AtariWrapper
  - - frame_stack
    - 2
  - - policy
    - CnnPolicy
"""


def small_pong_dqn_zip(tmp_path: Path) -> bytes:
    import gymnasium as gym
    import numpy as np
    from stable_baselines3 import DQN

    env = fake_atari_env(6)
    env.observation_space = gym.spaces.Box(0, 255, (84, 84, 2), dtype=np.uint8)
    model = DQN("CnnPolicy", env, buffer_size=10, device="cpu", seed=0,
                policy_kwargs={"features_extractor_kwargs": {"features_dim": 16}})
    model.save(tmp_path / "model.zip")
    return (tmp_path / "model.zip").read_bytes()


def build_hub_cache(hf_home: Path, repo: str, files: dict[str, bytes], commit: str = COMMIT) -> None:
    """The Hub client's cache layout: content-addressed blobs, a snapshot of links to them, refs/main."""
    org, name = repo.split("/")
    storage = hf_home / "hub" / f"models--{org}--{name}"
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (storage / "blobs").mkdir()
    for filename, payload in files.items():
        blob = hashlib.sha256(payload).hexdigest()
        (storage / "blobs" / blob).write_bytes(payload)
        (snapshot / filename).symlink_to(Path("..") / ".." / "blobs" / blob)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(commit)


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    require("huggingface_hub", "loading hf: agents")
    root = tmp_path_factory.mktemp("hf")
    build_hub_cache(root, REPO, {"dqn-PongNoFrameskip-v4.zip": small_pong_dqn_zip(root), "config.yml": CONFIG.encode(),
                                 "env_kwargs.yml": b"{}\n", "train_eval_metrics.zip": b"not the agent"})
    build_hub_cache(root, "someone/notes", {"README.md": b"# no agent here\n"})
    return root


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1", **env}
    full_env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-m", "rlexplain.cli", *args], capture_output=True, text=True,
                          timeout=300, env=full_env, check=False)


def test_hub_agent_records_offline_from_the_cache_with_its_rl_zoo_settings(hf_home, tmp_path):
    out = tmp_path / "run"
    offline = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    done = run(["record", "--agent", f"hf:{REPO}", "--max-steps", "5", "--out", str(out), "--no-video",
                "--no-plots", "--quiet"], offline)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["agent"]["name"] == f"hf:{REPO}" and summary["env_id"] == "PongNoFrameskip-v4"
    assert summary["agent"]["algorithm"] == "dqn" and summary["steps"] == 5
    assert Path(summary["agent"]["path"]).name == "dqn-PongNoFrameskip-v4.zip"
    assert str(hf_home) in summary["agent"]["path"]  # the standard cache, not a private copy
    pinned = run(["record", "--agent", f"hf:{REPO}@{COMMIT}", "--max-steps", "2", "--out", str(tmp_path / "pin"),
                  "--no-video", "--no-plots", "--quiet"], offline)
    assert pinned.returncode == 0, pinned.stderr[-2000:]


def test_uncached_repositories_offline_and_repositories_without_a_zip_are_one_line_errors(hf_home, tmp_path):
    offline = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    for agent, message in [("hf:sb3/ppo-SpaceInvadersNoFrameskip-v4", "cannot reach the Hub for sb3/ppo-Space"
                            "InvadersNoFrameskip-v4: pass a local path, or use a filled cache with HF_HUB_OFFLINE=1"),
                           ("hf:someone/notes", "Hub repository someone/notes holds no SB3 agent zip"),
                           ("hf:not a repo", "expected hf:ORG/REPO")]:
        done = run(["record", "--agent", agent, "--env", "Pong", "--max-steps", "2", "--out", str(tmp_path / "x")],
                   offline)
        err = done.stderr.strip()
        assert done.returncode == 2 and message in err and "\n" not in err, err[-2000:]
        assert not (tmp_path / "x").exists()


class _Hub(http.server.BaseHTTPRequestHandler):
    """The Hub's answer for a repository that does not exist (status 404, ``X-Error-Code: RepoNotFound``)."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "Repository not found"}')

    def log_message(self, *args):
        pass


def test_missing_repository_and_unreachable_hub_are_one_line_errors(tmp_path):
    require("huggingface_hub", "loading hf: agents")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        online = {"HF_HOME": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "0",
                  "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}"}
        done = run(["record", "--agent", "hf:sb3/dqn-NoSuchGameNoFrameskip-v4", "--max-steps", "2",
                    "--out", str(tmp_path / "x")], online)
    finally:
        server.shutdown()
    assert done.returncode == 2 and "no Hub repository sb3/dqn-NoSuchGameNoFrameskip-v4" in done.stderr
    with socket.socket() as s:  # a port nothing listens on: the Hub cannot be reached
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = {"HF_HOME": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{closed}"}
    done = run(["record", "--agent", f"hf:{REPO}", "--max-steps", "2", "--out", str(tmp_path / "y")], down)
    assert done.returncode == 2 and "cannot reach the Hub" in done.stderr and "\n" not in done.stderr.strip()


def test_games_lists_bundled_and_hub_agents_and_record_names_the_hub_for_games_without_one(capsys):
    from rlexplain import cli

    assert cli.main(["games"]) == 0
    lines = {line.split()[1] if line.startswith("*") else line.split()[0]: line for line in
             capsys.readouterr().out.splitlines()[1:-1]}
    assert lines["Breakout"].startswith("* ") and "--agent breakout-dqn" in lines["Breakout"]
    assert "--agent hf:sb3/dqn-SpaceInvadersNoFrameskip-v4" in lines["SpaceInvaders"]
    assert "Tennis" not in lines
    assert cli.main(["record", "--env", "SpaceInvaders"]) == 2
    assert "--agent hf:sb3/dqn-SpaceInvadersNoFrameskip-v4" in capsys.readouterr().err

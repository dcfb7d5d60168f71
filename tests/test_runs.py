"""Run folders that survive every ending: SIGTERM and SIGKILL of a real recording, a full disk, interrupted
GIFs, long episodes read back in bounded memory, other observation sizes, and damaged files."""

from __future__ import annotations

import csv
import json
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from rlexplain import cli, runs
from rlexplain.explainer import Explainer
from rlexplain.record import record

from conftest import fake_atari_env

ROOT = Path(__file__).resolve().parents[1]


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "steps.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if None not in r.values()]


def start_recording(out: Path, *extra: str, preexec=None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rlexplain.cli", "record", "--env", "Breakout", "--max-steps", "20000", "--out",
           str(out), "--quiet", "--no-plots", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)


def wait_for_rows(out: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (out / "steps.csv").is_file() and len(rows(out)) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"recording ended early: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    raise AssertionError("recording did not reach the wanted number of rows")


def test_sigterm_interrupts_cleanly_with_truthful_status_and_agreeing_counts(tmp_path):
    out = tmp_path / "run"
    proc = start_recording(out)
    wait_for_rows(out, 40, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "interrupted" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGTERM"
    episode = summary["episodes"][0]
    assert episode["status"] == "interrupted"
    assert episode["rows"] == len(rows(out)) == episode["map_steps"] == episode["video_frames"]
    assert sum(len(c["step"]) for c in runs.iter_maps(out, 0, ["step"])) == episode["map_steps"]
    assert not list(out.rglob("*.tmp"))


def test_sigkill_leaves_a_run_that_stats_recognises_and_repairs(tmp_path, capsys):
    out = tmp_path / "run"
    proc = start_recording(out)
    wait_for_rows(out, 60, proc)
    proc.kill()
    proc.wait(timeout=60)
    assert json.loads((out / "summary.json").read_text())["status"] == "running"
    assert cli.main(["stats", str(out)]) == 0
    assert "ended without closing" in capsys.readouterr().err
    assert cli.main(["stats", "--repair", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "ended without closing" in summary["error"]
    episode = summary["episodes"][0]
    n = len(rows(out))
    assert episode["rows"] == n and episode["length"] == n
    # less than two chunks of maps (the buffer, one chunk being written) and the frames in flight were lost,
    # and the summary says how many remain
    assert n - 2 * runs.CHUNK_STEPS - 1 <= episode["map_steps"] <= n
    assert n - 30 <= episode["video_frames"] <= n
    assert not list(out.rglob("*.tmp"))


def test_a_full_disk_fails_in_one_line_naming_the_path_and_keeps_everything_before(tmp_path):
    out = tmp_path / "run"

    def small_disk():  # files may not grow past 2 MB (what a full disk does to the next write)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))

    proc = start_recording(out, preexec=small_disk)
    _, err = proc.communicate(timeout=300)
    lines = err.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and str(out) in lines[0], err[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"]
    episode = summary["episodes"][0]
    assert episode["rows"] == len(rows(out)) > 0
    assert sum(len(c["step"]) for c in runs.iter_maps(out, 0, ["step"])) == episode["map_steps"] > 0
    assert not list(out.rglob("*.tmp"))


def test_interrupting_a_gif_recording_never_hangs_and_keeps_the_frames(tmp_path, monkeypatch):
    import imageio_ffmpeg

    from rlexplain.agents import load_agent

    agent = load_agent("breakout-dqn")
    original = Explainer.step
    for attempt in range(6):
        calls = {"n": 0}

        def step(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 8 + attempt:
                raise KeyboardInterrupt
            return original(self, *args, **kwargs)

        monkeypatch.setattr(Explainer, "step", step)
        out = tmp_path / f"run{attempt}"
        finished = threading.Event()

        def run():
            try:
                record("Breakout", agent, max_steps=100, out=out, gif=True, progress=False)
            except KeyboardInterrupt:
                finished.set()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(60)
        assert finished.is_set(), f"attempt {attempt}: the interrupted recording hung"
        assert imageio_ffmpeg.count_frames_and_secs(str(out / "episode_0.gif"))[0] == 7 + attempt


def test_stats_memory_does_not_grow_with_the_episode_length():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_memory.py"), "--steps", "200", "2000"],
                          capture_output=True, text=True, timeout=600, check=True)
    peaks = [float(line.split()[-2]) for line in done.stdout.splitlines() if "peak RSS" in line]
    assert len(peaks) == 2 and peaks[1] - peaks[0] < 60, done.stdout


def test_64x64_rl_zoo_run_records_plots_and_compares_with_its_config(tmp_path):
    import gymnasium as gym
    from stable_baselines3 import DQN

    run = tmp_path / "logs" / "dqn" / "BreakoutNoFrameskip-v4_1"
    (run / "BreakoutNoFrameskip-v4").mkdir(parents=True)
    (run / "BreakoutNoFrameskip-v4" / "config.yml").write_text(
        "!!python/object/apply:collections.OrderedDict\n- - - env_wrapper\n    - - stable_baselines3.common."
        "atari_wrappers.AtariWrapper:\n          screen_size: 64\n  - - frame_stack\n    - 4\n")
    env = fake_atari_env(4)
    env.observation_space = gym.spaces.Box(0, 255, (64, 64, 4), dtype=np.uint8)
    for steps in (1000, 2000):
        DQN("CnnPolicy", env, buffer_size=10, device="cpu", seed=steps).save(run / f"rl_model_{steps}_steps.zip")
    out = tmp_path / "rec"
    assert cli.main(["record", "--agent", str(run), "--max-steps", "30", "--out", str(out), "--quiet"]) == 0
    table = rows(out)
    assert len(table) == 30 and "share_ball" in table[0]
    assert np.isclose(sum(float(table[5][k]) for k in table[5] if k.startswith("share_")), 1.0, atol=1e-4)
    assert (out / "plots" / "mean_heatmap_episode_0.png").is_file()
    assert cli.main(["compare", str(run), "--out", str(tmp_path / "cmp"), "--n-states", "4", "--games", "0",
                     "--quiet", "--no-video"]) == 0
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["env_id"] == "BreakoutNoFrameskip-v4"


def test_damaged_files_and_bad_options_are_one_line_errors_without_stub_runs(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["record", "--env", "Breakout", "--max-steps", "6", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    with open(out / "steps.csv", "a") as f:
        f.write("0,6,1")  # a row cut by a crash
    assert cli.main(["stats", str(out)]) == 0
    (out / "summary.json").write_text("[1, 2]")
    assert cli.main(["stats", str(out)]) == 2
    assert "does not hold a run summary" in capsys.readouterr().err
    bad_states = tmp_path / "bad.npz"
    np.savez(bad_states, obs=np.zeros((3, 84, 84, 4), np.uint8), frames=np.zeros((2, 210, 160, 3), np.uint8),
             ram=np.zeros((3, 4, 128), np.uint8), env_id=np.array("BreakoutNoFrameskip-v4"))
    for argv, message in [(["record", "--env", "Breakout", "--seed", "-1", "--out", str(tmp_path / "a")],
                           "--seed must be >= 0"),
                          (["record", "--env", "Breakout", "--action", "all", "--frames", "--out", str(tmp_path / "b")],
                           "--frames shows the stacked frames of one map"),
                          (["record", "--env", "CartPole-v1", "--out", str(tmp_path / "c")], "is not an Atari game"),
                          (["compare", "--env", "Breakout", "--states", str(bad_states), "--out", str(tmp_path / "d")],
                           "different numbers of states")]:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
        assert not Path(argv[-1]).exists()


def test_compare_force_with_states_inside_the_output_keeps_them(tmp_path):
    from rlexplain.compare import compare

    first = compare("Breakout", out=tmp_path / "cmp", n_states=3, games=0, progress=False)
    states = first.out / "states.npz"
    before = np.load(states)["obs"]
    (first.out / "notes.txt").write_text("old output")
    again = compare("Breakout", out=first.out, states=states, n_states=3, games=0, force=True, progress=False)
    np.testing.assert_array_equal(np.load(again.out / "states.npz")["obs"], before)
    assert not (first.out / "notes.txt").exists()

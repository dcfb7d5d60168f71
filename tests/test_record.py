"""Recording: video, steps.csv, summary and maps; determinism; interruption; wrappers; the CLI."""

from __future__ import annotations

import csv
import json
import shutil

import imageio.v2 as imageio
import numpy as np
import pytest

from rlexplain import cli
from rlexplain.catalog import DEFAULT_METHOD
from rlexplain.agents import load_agent
from rlexplain.errors import RunError as RecordError
from rlexplain.explainer import Explainer, explain
from rlexplain.record import record
from rlexplain.runs import load_maps
from rlexplain.wrappers import RelevanceWrapper, VecRelevance


@pytest.fixture(scope="module")
def agent():
    return load_agent("breakout-dqn")


def rows(run_dir):
    with open(run_dir / "steps.csv", newline="") as f:
        return list(csv.DictReader(f))


def video_frames(path):
    reader = imageio.get_reader(path)
    frames = [frame for frame in reader]
    reader.close()
    return frames


def test_short_recording_yields_one_video_frame_and_one_row_per_step(tmp_path, agent):
    result = record("Breakout", agent, max_steps=50, out=tmp_path / "run", progress=False)
    run = result.run_dir
    frames = video_frames(run / "episode_0.mp4")
    assert len(frames) == 50 and frames[0].ndim == 3
    table = rows(run)
    assert len(table) == 50
    assert [int(r["step"]) for r in table] == list(range(50))
    for column in ["episode", "step", "action", "action_name", "reward", "score", "lives", "value_NOOP",
                   "value_FIRE", "value_RIGHT", "value_LEFT", "relevance_sum", "relevance_pos", "relevance_neg",
                   "frame_share_0", "frame_share_3"]:
        assert column in table[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["steps"] == 50
    assert summary["agent"]["sha256"] and summary["composite"] == DEFAULT_METHOD
    assert "most faithful" in summary["method_choice"]
    maps = load_maps(run, 0)
    assert maps["relevance"].shape == (50, 84, 84, 4) and maps["frames"].shape == (50, 210, 160, 3)


def test_recorded_relevance_is_the_explanation_of_the_recorded_action(tmp_path, agent):
    run = record("Breakout", agent, max_steps=12, out=tmp_path / "run", video=False,
                 progress=False).run_dir
    maps = load_maps(run, 0)
    actions = [int(r["action"]) for r in rows(run)]
    for t in (0, 5, 11):
        expected = explain(agent, maps["obs"][t], actions[t])
        # stored maps are quantised to 63 levels of the step's max |R| (runs.RELEVANCE_LEVELS): half a level at most
        step_max = np.abs(expected).max()
        np.testing.assert_allclose(maps["relevance"][t], expected, rtol=0, atol=0.5 / 63 * step_max * 1.0001)
        total = float(rows(run)[t]["relevance_sum"])
        assert total == pytest.approx(float(expected.sum()), rel=1e-3, abs=1e-7)


def test_same_seed_and_agent_give_identical_actions_and_relevance(tmp_path, agent):
    runs = [record("Breakout", agent, max_steps=40, seed=7, deterministic=False, out=tmp_path / f"r{i}",
                   video=False, progress=False).run_dir for i in range(2)]
    a, b = (rows(r) for r in runs)
    assert [r["action"] for r in a] == [r["action"] for r in b]
    np.testing.assert_array_equal(load_maps(runs[0], 0)["relevance"], load_maps(runs[1], 0)["relevance"])


def fail_on_call(monkeypatch, owner, name: str, n: int, error: BaseException) -> None:
    """Make the ``n``-th call of ``owner.name`` raise ``error`` (earlier calls run as usual)."""
    original = getattr(owner, name)
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)


def test_interrupted_run_keeps_its_video_rows_and_says_interrupted(tmp_path, agent, monkeypatch):
    fail_on_call(monkeypatch, Explainer, "step", 31, KeyboardInterrupt())
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        record("Breakout", agent, max_steps=100, out=out, progress=False)
    assert len(rows(out)) == 30
    assert len(video_frames(out / "episode_0.mp4")) == 30
    assert load_maps(out, 0)["relevance"].shape[0] == 30
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "KeyboardInterrupt" in summary["error"]


def test_force_replaces_only_an_earlier_run_and_never_before_the_options_are_checked(tmp_path, agent):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(RecordError, match="exists and is not empty; pass --force"):
        record("Breakout", agent, max_steps=5, out=out, progress=False)
    with pytest.raises(RecordError, match="--force refused: .* is not an rlexplain output folder"):
        record("Breakout", agent, max_steps=5, out=out, force=True, progress=False)
    assert (out / "precious.txt").read_text() == "keep me"
    (out / "precious.txt").unlink()
    record("Breakout", agent, max_steps=5, out=out, video=False, progress=False)
    before = (out / "steps.csv").read_text()
    with pytest.raises(RecordError, match="--seed must be >= 0"):
        record("Breakout", agent, max_steps=5, out=out, force=True, seed=-1, progress=False)
    assert (out / "steps.csv").read_text() == before  # a bad option costs nothing
    shutil.copy(agent.path, out / "agent.zip")  # an input inside the folder being replaced is kept
    record("Breakout", str(out / "agent.zip"), max_steps=3, out=out, force=True, video=False, progress=False)
    assert (out / "agent.zip").is_file() and len(rows(out)) == 3


def test_action_all_stores_one_map_per_action_and_shows_them(tmp_path, agent):
    run = record("Breakout", agent, max_steps=6, action="all", out=tmp_path / "run", gif=True,
                 progress=False).run_dir
    assert load_maps(run, 0)["relevance"].shape == (6, 4, 84, 84, 4)
    assert len(video_frames(run / "episode_0.mp4")) == 6
    assert len(video_frames(run / "episode_0.gif")) == 6


def test_gymnasium_wrapper_puts_the_explanation_of_the_action_taken_into_info(agent):
    env = RelevanceWrapper(agent.make_env(), agent)
    obs, _ = env.reset(seed=0)
    for action in [1, 2, 3]:
        previous = obs
        obs, reward, terminated, truncated, info = env.step(action)
        np.testing.assert_allclose(info["relevance"], explain(agent, previous, action), rtol=1e-6, atol=1e-9)
        assert info["action_values"].shape == (4,)


def test_vecenv_wrapper_explains_each_env_action_on_its_previous_observation(agent):
    from rlexplain.envs import make_vec_env

    venv = VecRelevance(make_vec_env("Breakout", 2, seed=0, full_games=True), agent)
    obs = venv.reset()
    actions = np.array([1, 3])
    _, _, _, infos = venv.step(actions)
    for i in range(2):
        np.testing.assert_allclose(infos[i]["relevance"], explain(agent, obs[i], int(actions[i])), rtol=1e-6,
                                   atol=1e-9)


def test_cli_record_runs_and_bad_input_gives_one_line_errors(tmp_path, capsys):
    assert cli.main(["record", "--env", "Breakout", "--max-steps", "8", "--out", str(tmp_path / "run"), "--quiet",
                     "--no-video"]) == 0
    assert "run folder" in capsys.readouterr().out
    assert (tmp_path / "run" / "plots" / "densities_episode_0.png").is_file()  # the command draws the plots
    for argv, message in [(["record", "--env", "Breakot"], "did you mean Breakout"),
                          (["record", "--env", "Tennis"], "no bundled agent for Tennis"),
                          (["record", "--env", "Breakout", "--out", str(tmp_path / "run"), "--max-steps", "3"],
                           "exists and is not empty"),
                          (["record", "--env", "Breakout", "--action", "JUMP", "--out", str(tmp_path / "x")],
                           "unknown action 'JUMP'")]:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err


def test_an_error_mid_run_keeps_what_was_written_says_failed_and_counts_agree(tmp_path, agent, monkeypatch):
    import errno

    from rlexplain import stats

    # one call per step: step 21 fails
    fail_on_call(monkeypatch, stats, "step_statistics", 21, OSError(errno.ENOSPC, "No space left on device"))
    out = tmp_path / "run"
    with pytest.raises(OSError):
        record("Breakout", agent, max_steps=60, out=out, progress=False)
    assert len(rows(out)) == 20
    assert len(video_frames(out / "episode_0.mp4")) == 20
    assert len(load_maps(out, 0)["step"]) == 20
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left" in summary["error"]
    episode = summary["episodes"][0]
    assert episode["status"] == "failed" and episode["rows"] == episode["map_steps"] == episode["video_frames"] == 20
    assert not list(out.rglob("*.tmp"))


def test_several_episodes_get_their_own_video_maps_and_rows(tmp_path, agent):
    run = record("Breakout", agent, episodes=2, max_steps=7, out=tmp_path / "run",
                 progress=False).run_dir
    table = rows(run)
    assert [r["episode"] for r in table] == ["0"] * 7 + ["1"] * 7
    assert len(video_frames(run / "episode_1.mp4")) == 7 and load_maps(run, 1)["relevance"].shape[0] == 7
    summary = json.loads((run / "summary.json").read_text())
    assert [e["seed"] for e in summary["episodes"]] == [0, 1]


@pytest.mark.parametrize("agent_name", ["breakout-dqn", "pong-ppo@500k"])
def test_games_side_by_side_equal_each_game_recorded_alone(tmp_path, agent_name):
    """--n-envs: 3 stochastic games in 2 slots (the third starts when a slot frees up) give each game
    the rows, maps and video of recording it alone with its seed (up to float32 rounding of the batch)."""
    agent = load_agent(agent_name)
    caps = dict(max_steps=40, deterministic=False, progress=False)
    together = record(None, agent, episodes=3, n_envs=2, seed=5, out=tmp_path / "together", **caps).run_dir
    summary = json.loads((together / "summary.json").read_text())
    assert summary["status"] == "complete" and [e["episode"] for e in summary["episodes"]] == [0, 1, 2]
    table = rows(together)
    for k in range(3):
        alone = record(None, agent, episodes=1, seed=5 + k, out=tmp_path / f"alone{k}", **caps).run_dir
        mine = [r for r in table if int(r["episode"]) == k]
        theirs = rows(alone)
        assert len(mine) == len(theirs) == 40
        for a, b in zip(mine, theirs):
            for column in a:
                if column in ("episode",):
                    continue
                if column in ("step", "action", "action_name", "reward", "score", "lives"):
                    assert a[column] == b[column], column
                elif a[column] or b[column]:
                    assert float(a[column]) == pytest.approx(float(b[column]), rel=1e-3, abs=1e-6), column
        m1, m2 = load_maps(together, k), load_maps(alone, 0)
        assert np.array_equal(m1["obs"], m2["obs"]) and np.array_equal(m1["frames"], m2["frames"])
        np.testing.assert_allclose(m1["relevance"], m2["relevance"], atol=np.abs(m2["relevance"]).max() / 50)
        assert len(video_frames(together / f"episode_{k}.mp4")) == len(video_frames(alone / "episode_0.mp4")) == 40


def test_bad_n_envs_and_device_are_refused_before_anything_is_written(tmp_path, capsys):
    assert cli.main(["record", "--env", "Breakout", "--n-envs", "0", "--out", str(tmp_path / "a")]) == 2
    assert "--n-envs must be at least 1" in capsys.readouterr().err
    assert cli.main(["record", "--env", "Breakout", "--device", "tpu", "--out", str(tmp_path / "b")]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

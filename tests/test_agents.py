"""Env factory, checkpoint loading (SB3 zips, light saves, numpy-1 pickles, rl-zoo folders), and their errors."""

from __future__ import annotations

import base64
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fake_atari_env

import rlexplain
from rlexplain import envs
from rlexplain.agents import list_bundled, load_agent, resolve_bundled
from rlexplain.agents.checkpoints import load_model, save_checkpoint, steps_from_name
from rlexplain.errors import AgentError, TargetError

FIXTURES = Path(__file__).parent / "fixtures"


def test_env_factory_yields_stacked_uint8_observations_of_sb3_shape():
    env = envs.make_env("Breakout", seed=0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8
    assert not obs[..., :3].any(), "after reset the older frames are zero, as in SB3's VecFrameStack"
    obs, *_ = env.step(1)
    assert obs.shape == (84, 84, 4)


def test_env_factory_matches_sb3_vec_env_observations():
    single = envs.make_env("Breakout", full_games=False, max_episode_steps=None)
    vec = envs.make_vec_env("Breakout", 1, seed=3)
    vec_obs = vec.reset()
    single_obs, _ = single.reset(seed=3)
    np.testing.assert_array_equal(single_obs, vec_obs[0])
    for action in [1, 2, 2, 3, 0, 1]:
        single_obs, *_ = single.step(action)
        vec_obs, *_ = vec.step(np.array([action]))
        np.testing.assert_array_equal(single_obs, vec_obs[0])


def test_game_names_resolve_and_unknown_games_list_close_matches():
    assert envs.resolve_env_id("Breakout") == "BreakoutNoFrameskip-v4"
    assert envs.resolve_env_id("pong") == "PongNoFrameskip-v4"
    assert envs.resolve_env_id("BreakoutNoFrameskip-v4") == "BreakoutNoFrameskip-v4"
    with pytest.raises(ValueError, match="unknown Atari game 'Breakot': did you mean Breakout"):
        envs.resolve_env_id("Breakot")
    with pytest.raises(ValueError, match="skips frames itself"):
        envs.resolve_env_id("ALE/Breakout-v5")


def test_full_games_are_capped_at_27000_agent_steps():
    import gymnasium as gym

    env, limits = envs.make_env("Breakout"), []
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            limits.append(env._max_episode_steps)
        env = env.env
    assert envs.MAX_EPISODE_STEPS in limits


BUNDLED_GAMES = {"breakout-dqn": ("dqn", "BreakoutNoFrameskip-v4", ["NOOP", "FIRE", "RIGHT", "LEFT"]),
                 "pong-ppo": ("ppo", "PongNoFrameskip-v4", ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"])}


@pytest.mark.parametrize("series, checkpoint", [(a["name"], c["path"]) for a in list_bundled()
                                                for c in a["checkpoints"]])
def test_each_bundled_checkpoint_loads_and_acts(series, checkpoint):
    agent = load_agent(checkpoint)
    env = agent.make_env(seed=0)
    obs, _ = env.reset(seed=0)
    action = agent.act(obs)
    assert 0 <= action < agent.n_actions
    algorithm, env_id, actions = BUNDLED_GAMES[series]
    assert agent.algorithm == algorithm and agent.env_id == env_id
    assert agent.action_names == actions
    assert agent.timesteps == steps_from_name(checkpoint)


def test_bundled_names_resolve_to_final_and_exact_checkpoints_or_list_the_available_ones():
    series = list_bundled()[0]["checkpoints"]
    assert resolve_bundled("breakout-dqn") == Path(series[-1]["path"])
    first = series[0]["timesteps"]
    assert resolve_bundled(f"breakout-dqn@{first}") == Path(series[0]["path"])
    assert resolve_bundled(f"breakout-dqn@{first // 1000}k") == Path(series[0]["path"])
    with pytest.raises(AgentError, match=r"no checkpoint at 100,000 steps: available breakout-dqn@200000, "):
        resolve_bundled("breakout-dqn@100k")


def test_bundled_final_checkpoint_plays_better_than_the_random_play_on_its_card():
    final = list_bundled()[0]["checkpoints"][-1]
    agent = load_agent(final["path"])
    assert agent.timesteps == final["timesteps"] == agent.card["timesteps"]
    returns = envs.play_games(lambda obs: agent.act(obs), agent.env_id, 1, seed=0, max_episode_steps=3000)
    assert returns[0] > 3 * final["random_mean_return"]


def _fake_atari_env():
    return fake_atari_env(4)


def _small_model(algo: str):
    from stable_baselines3 import A2C, DQN, PPO

    kwargs = dict(policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=16)), device="cpu", seed=0)
    if algo == "dqn":
        return DQN("CnnPolicy", _fake_atari_env(), buffer_size=10, **kwargs)
    if algo == "a2c":
        return A2C("CnnPolicy", _fake_atari_env(), n_steps=8, **kwargs)
    return PPO("CnnPolicy", _fake_atari_env(), n_steps=8, batch_size=8, **kwargs)


@pytest.mark.parametrize("algo", ["dqn", "ppo", "a2c"])
@pytest.mark.parametrize("light", [False, True])
def test_model_saved_by_current_sb3_round_trips(tmp_path, algo, light):
    model = _small_model(algo)
    path = save_checkpoint(model, tmp_path / "rl_model_1234_steps.zip", light=light)
    agent = load_agent(path, env="Breakout")
    obs = np.random.default_rng(0).integers(0, 256, (3, 84, 84, 4), dtype=np.uint8)
    with torch.no_grad():
        raw = torch.as_tensor(obs).permute(0, 3, 1, 2).float()
        expected = model.policy.q_net(raw) if algo == "dqn" else model.policy.get_distribution(raw).distribution.logits
    outputs = torch.as_tensor(agent.outputs(obs))
    if algo != "dqn":  # SB3's Categorical stores normalised logits
        outputs = torch.log_softmax(outputs, -1)
    np.testing.assert_allclose(outputs.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert agent.algorithm == algo and agent.timesteps == 1234
    assert (agent.value_network is None) == (algo == "dqn")


def test_light_checkpoint_is_smaller_and_restores_the_target_network(tmp_path):
    model = _small_model("dqn")
    full = save_checkpoint(model, tmp_path / "full.zip")
    light = save_checkpoint(model, tmp_path / "light.zip", light=True)
    assert light.stat().st_size < 0.5 * full.stat().st_size
    restored = load_model(light, env=None, algo="dqn", observation_space=_fake_atari_env().observation_space,
                          action_space=_fake_atari_env().action_space)
    for online, target in zip(restored.policy.q_net.parameters(), restored.policy.q_net_target.parameters()):
        assert torch.equal(online, target)


def test_fixture_saved_under_numpy_1_loads_under_numpy_2():
    meta = json.loads((FIXTURES / "dqn_numpy1.json").read_text())
    assert meta["numpy"].startswith("1.")
    agent = load_agent(FIXTURES / "dqn_numpy1.zip", env="Breakout")
    obs = (np.arange(84 * 84 * 4).reshape(84, 84, 4) * 7 % 256).astype(np.uint8)
    np.testing.assert_allclose(agent.outputs(obs)[0], meta["q_values"], rtol=1e-5)


def _with_unreadable_pickles(src: Path, dst: Path) -> None:
    """Copy an SB3 zip, replacing its pickled spaces and schedules by ones naming a missing module
    (what a zip written under another numpy looks like: ``No module named 'numpy._core.numeric'``)."""
    blob = b"cnumpy._core_that_does_not_exist.numeric\nMissing\n."  # pickle: GLOBAL module name, STOP
    encoded = base64.b64encode(blob).decode()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            payload = zin.read(item.filename)
            if item.filename == "data":
                data = json.loads(payload)
                for key in ("observation_space", "action_space", "lr_schedule", "exploration_schedule"):
                    if key in data:
                        data[key][":serialized:"] = encoded
                payload = json.dumps(data).encode()
            zout.writestr(item, payload)


def test_unpicklable_spaces_are_rebuilt_from_the_env(tmp_path):
    model = _small_model("dqn")
    good = save_checkpoint(model, tmp_path / "good.zip")
    broken = tmp_path / "broken.zip"
    _with_unreadable_pickles(good, broken)
    agent = load_agent(broken, env="Breakout")
    obs = np.zeros((84, 84, 4), np.uint8)
    np.testing.assert_allclose(agent.outputs(obs), load_agent(good, env="Breakout").outputs(obs), rtol=1e-6)
    with pytest.raises(AgentError, match="could not be unpickled.*pass env="):
        load_agent(broken)


def test_agent_for_another_game_is_refused_before_anything_runs():
    checkpoint = list_bundled()[0]["checkpoints"][-1]["path"]
    with pytest.raises(AgentError, match="has 4 actions but PongNoFrameskip-v4 has 6"):
        load_agent(checkpoint, env="Pong")


def test_corrupt_missing_and_non_sb3_files_give_one_line_errors(tmp_path):
    (tmp_path / "text.zip").write_text("not a zip")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "hello")
    good = save_checkpoint(_small_model("dqn"), tmp_path / "good.zip")
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases = {"text.zip": "not an SB3 checkpoint", "other.zip": "not an SB3 checkpoint",
             "truncated.zip": "not an SB3 checkpoint|corrupt", "missing.zip": "no agent|not found"}
    for name, message in cases.items():
        with pytest.raises(AgentError, match=message) as info:
            load_agent(tmp_path / name, env="Breakout")
        assert "\n" not in str(info.value)


def test_rl_zoo_run_folder_loads_its_env_zip_with_config(tmp_path):
    run = tmp_path / "logs" / "dqn" / "BreakoutNoFrameskip-v4_1"
    (run / "BreakoutNoFrameskip-v4").mkdir(parents=True)
    save_checkpoint(_small_model("dqn"), run / "BreakoutNoFrameskip-v4.zip")
    save_checkpoint(_small_model("dqn"), run / "rl_model_5000_steps.zip")
    (run / "BreakoutNoFrameskip-v4" / "config.yml").write_text(
        "!!python/object/apply:collections.OrderedDict\n- - - env_wrapper\n    - stable_baselines3.common.atari_wrappers"
        ".AtariWrapper:\n        terminal_on_life_loss: false\n  - - frame_stack\n    - 4\n  - - policy\n    - CnnPolicy\n")
    agent = load_agent(run)
    assert agent.path.name == "BreakoutNoFrameskip-v4.zip"
    assert agent.env_id == "BreakoutNoFrameskip-v4"
    assert agent.wrapper_kwargs == {"terminal_on_life_loss": False} and agent.frame_stack == 4
    (run / "BreakoutNoFrameskip-v4.zip").unlink()
    assert load_agent(run).path.name == "rl_model_5000_steps.zip"


def test_stochastic_dqn_acts_with_small_fixed_epsilon_not_the_saved_exploration_rate():
    agent = load_agent(list_bundled()[0]["checkpoints"][-1]["path"])
    outputs = np.tile(np.array([[0.0, 1.0, 0.0, 0.0]]), (20_000, 1))
    agent.seed(0)
    actions = agent.choose(outputs, deterministic=False)
    assert 0.005 < np.mean(actions != 1) < 0.02  # epsilon 0.01 explores; 3/4 of those differ from greedy


def test_ppo_agent_is_explained_for_actions_and_for_its_value(tmp_path):
    model = _small_model("ppo")
    with torch.no_grad():  # bias-free, so that conservative LRP sums exactly to the explained output
        for name, p in model.policy.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    agent = load_agent(save_checkpoint(model, tmp_path / "ppo.zip"), env="Breakout")
    obs = np.random.default_rng(0).integers(0, 256, (2, 84, 84, 4), dtype=np.uint8)
    r_value = rlexplain.explain(agent, obs, "value", composite="epsilon_plus")
    r_action = rlexplain.explain(agent, obs, 2, composite="epsilon_plus")
    r_all = rlexplain.explain(agent, obs, "all")
    assert r_action.shape == r_value.shape == (2, 84, 84, 4) and r_all.shape == (2, 4, 84, 84, 4)
    raw = torch.as_tensor(obs).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        value = model.policy.predict_values(raw).numpy()[:, 0]
    np.testing.assert_allclose(r_value.sum((1, 2, 3)), value, rtol=1e-3)
    np.testing.assert_allclose(r_action.sum((1, 2, 3)), agent.outputs(obs)[:, 2], rtol=1e-3)


def test_dqn_agent_has_no_value_head_and_says_so():
    agent = load_agent(list_bundled()[0]["checkpoints"][-1]["path"])
    with pytest.raises(TargetError, match="no value head"):
        rlexplain.explain(agent, np.zeros((84, 84, 4), np.uint8), "value")


def test_qrdqn_agent_is_explained_through_the_mean_over_quantiles(tmp_path):
    sb3_contrib = pytest.importorskip("sb3_contrib")
    model = sb3_contrib.QRDQN("CnnPolicy", _fake_atari_env(), buffer_size=10, device="cpu", seed=0,
                              policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=16), n_quantiles=5))
    agent = load_agent(save_checkpoint(model, tmp_path / "qrdqn.zip", light=True), env="Breakout")
    assert agent.algorithm == "qrdqn"
    obs = np.random.default_rng(0).integers(0, 256, (3, 84, 84, 4), dtype=np.uint8)
    with torch.no_grad():
        quantiles = model.policy.quantile_net(torch.as_tensor(obs).permute(0, 3, 1, 2).float())
    np.testing.assert_allclose(agent.outputs(obs), quantiles.mean(1).numpy(), rtol=1e-5, atol=1e-6)
    assert np.array_equal(agent.act(obs), quantiles.mean(1).argmax(1).numpy())
    assert rlexplain.explain(agent, obs, "contrastive").shape == obs.shape


def test_full_games_start_every_life_with_fire_as_training_did():
    env = envs.make_env("Breakout", seed=0, max_episode_steps=5000)
    env.reset(seed=0)
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = env.step(0)  # an agent that never presses FIRE
        steps += 1
    assert terminated and env.unwrapped.ale.lives() == 0 and steps < 5000
    plain = envs.make_env("Breakout", seed=0, max_episode_steps=2000, fire_on_life_loss=False)
    plain.reset(seed=0)
    for _ in range(2000):
        _, _, terminated, truncated, _ = plain.step(0)
        if terminated or truncated:
            break
    assert truncated and plain.unwrapped.ale.lives() > 0  # without it, the game waits for FIRE forever

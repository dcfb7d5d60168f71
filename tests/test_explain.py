"""Targets, methods and explainers: one parser for every entry point; explanations that follow the
network they explain and never change the caller's model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import fake_atari_env

import rlexplain
from rlexplain.agents import from_model, load_agent
from rlexplain.errors import MethodError, TargetError
from rlexplain.explainer import METHODS, Explainer, explain, parse_target


@pytest.fixture(scope="module")
def agent():
    return load_agent("breakout-dqn")


def obs_batch(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 84, 84, 4), dtype=np.uint8)


def test_public_api_loads_an_agent_and_explains_it_in_the_observations_layout(agent):
    obs = obs_batch(2)
    assert isinstance(agent, rlexplain.Agent) and agent.n_actions == 4
    relevance = rlexplain.explain(agent, obs)
    assert relevance.shape == obs.shape and relevance.dtype == np.float32
    assert set(rlexplain.METHODS) >= {"epsilon_plus_flat", "epsilon_gamma_box", "gradient", "gradient_x_input"}
    assert issubclass(rlexplain.AgentError, rlexplain.RLExplainError)


def test_targets_by_name_index_and_chosen_agree_everywhere(agent):
    obs = obs_batch(2)
    left = agent.action_names.index("LEFT")
    by_index = explain(agent, obs, left)
    np.testing.assert_array_equal(explain(agent, obs, "LEFT"), by_index)
    np.testing.assert_array_equal(explain(agent, obs, "left"), by_index)
    np.testing.assert_array_equal(explain(agent, obs, str(left)), by_index)
    greedy = agent.outputs(obs).argmax(-1)
    np.testing.assert_array_equal(explain(agent, obs, "chosen"), explain(agent, obs, greedy))
    np.testing.assert_array_equal(explain(agent, obs, None), explain(agent, obs, greedy))
    assert parse_target("LEFT", agent).mode == "action" and int(parse_target("LEFT", agent).actions) == left
    step = Explainer(agent).step(obs, target="LEFT")
    np.testing.assert_array_equal(step.relevance, by_index)
    np.testing.assert_array_equal(step.explained, [left, left])
    for bad in ("JUMP", 7, -1, [0, 9]):
        with pytest.raises(TargetError):
            explain(agent, obs, bad)


def test_explain_follows_a_replaced_network_and_edited_weights(agent):
    obs = obs_batch(2)
    other = load_agent("breakout-dqn@200000")
    before = explain(agent, obs, 1)
    original = agent.network
    try:
        agent.network = other.network
        np.testing.assert_array_equal(explain(agent, obs, 1), explain(other, obs, 1))
    finally:
        agent.network = original
    np.testing.assert_array_equal(explain(agent, obs, 1), before)


def test_an_explainer_explains_the_network_as_it_was_when_made_even_after_data_edits():
    model = _dqn()
    agent = from_model(model)
    obs = obs_batch(2)
    explainer = Explainer(agent, "epsilon_gamma_box")
    before = explainer.explain(obs, 1)
    conv2 = agent.network.layers[2]
    with torch.no_grad():
        conv2.weight.data.normal_()  # an edit through .data, which no version counter sees
    after = explainer.explain(obs, 1)
    np.testing.assert_array_equal(after.relevance, before.relevance)
    np.testing.assert_array_equal(after.outputs, before.outputs)  # forward and relevance from the same network
    fresh = Explainer(agent, "epsilon_gamma_box").explain(obs, 1)
    assert not np.allclose(fresh.relevance, before.relevance)
    np.testing.assert_allclose(fresh.outputs, agent.outputs(obs), rtol=1e-5)


def test_from_model_leaves_the_callers_model_trainable():
    model = _dqn()
    agent = from_model(model)
    explain(agent, obs_batch(1))
    assert all(p.requires_grad for p in model.policy.parameters())
    model.learn(total_timesteps=40)  # trains (the fake env's buffer fills, gradient steps run)


def test_float64_explainer_works_on_a_real_agent_and_matches_float32(agent):
    obs = obs_batch(2)
    for method in ("epsilon_plus_flat", "epsilon_gamma_box", "gradient"):
        e64 = Explainer(agent, method, dtype=torch.float64).explain(obs)
        e32 = Explainer(agent, method).explain(obs)
        scale = np.abs(e64.relevance).max()
        np.testing.assert_allclose(e32.relevance, e64.relevance, atol=1e-3 * scale)


def test_unknown_methods_and_parameters_are_one_line_errors(agent):
    with pytest.raises(MethodError, match="unknown method 'lrp_magic': expected one of epsilon_plus"):
        explain(agent, obs_batch(1), composite="lrp_magic")
    with pytest.raises(MethodError, match="gradient does not take parameters epsilon"):
        explain(agent, obs_batch(1), composite="gradient", epsilon=0.1)
    assert len(set(METHODS)) == len(METHODS)


def _dqn():
    from stable_baselines3 import DQN

    return DQN("CnnPolicy", fake_atari_env(4), buffer_size=50, learning_starts=10, batch_size=4, train_freq=1,
               device="cpu", seed=0, policy_kwargs={"features_extractor_kwargs": {"features_dim": 16}})


def test_device_option_and_tf32_switch(tmp_path):
    import torch

    from rlexplain import devices
    from rlexplain.errors import DeviceError

    assert devices.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert devices.resolve_device(None) is None and devices.resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(DeviceError, match="expected cpu, cuda, cuda:N or auto"):
        devices.resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="torch sees no CUDA GPU"):
            devices.resolve_device("cuda:0")
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with devices.precision(tf32=True):
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    with devices.precision(tf32=False):
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


@pytest.mark.parametrize("method", ["epsilon_gamma_box", "smoothgrad", "occlusion", "integrated_gradients"])
def test_explaining_on_an_explicit_device_gives_the_same_maps(method):
    """The device path (inputs, weights and seeded noise moved to the method's device) on the CPU, where CI runs."""
    import torch

    agent = load_agent("breakout-dqn")
    obs = np.random.default_rng(0).integers(0, 255, (3, 84, 84, 4), dtype=np.uint8)
    params = {"samples": 4} if method == "smoothgrad" else {"steps": 4} if method == "integrated_gradients" else {}
    here = Explainer(agent, method, **params).explain(obs)
    there = Explainer(agent, method, device="cpu", **params)
    assert there.method.device == torch.device("cpu")
    np.testing.assert_array_equal(there.explain(obs).relevance, here.relevance)


@pytest.mark.parametrize("method", ["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "occlusion",
                                    "random"])
def test_methods_keep_every_tensor_on_their_device(method):
    """On torch's meta device (shapes, no data) a tensor made on the CPU inside a method would meet the method's
    tensors and fail, as it would on CUDA; CI has no GPU. (LRP's rules branch on data, which meta tensors lack;
    they ran on CUDA in scripts/bench_lrp.py.)"""
    import torch

    from rlexplain.explainer import make_method, target_weights

    agent = load_agent("breakout-dqn")
    params = {"samples": 2} if method == "smoothgrad" else {"steps": 2} if method == "integrated_gradients" else {}
    explainer = make_method(agent.network, method, device=torch.device("meta"), **params)
    trace = explainer.forward(torch.rand(2, 4, 84, 84))
    for mode in ("action", "all", "contrastive"):
        maps = explainer.relevance(trace, target_weights(mode, np.array([0, 1]), agent.n_actions))
        assert maps.device.type == "meta"
        assert maps.shape == ((2, 4, 4, 84, 84) if mode == "all" else (2, 4, 84, 84))

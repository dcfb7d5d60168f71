"""SB3 image policies beyond NatureCNN: custom extractors, pooling, BatchNorm, padding, unnormalised
images, explicit networks -- each built as a small SB3 model here, explained, and checked against
zennit's composites (with its BatchNorm canonizer); and unsupported policies refused in one line."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import fake_atari_env, import_zennit
from torch import nn

from rlexplain.agents import from_model
from rlexplain.errors import AgentError, UnsupportedLayerError
from rlexplain.explainer import Explainer, explain

TOLERANCE = 1e-6
ZENNIT_NAMES = {"epsilon_plus": "EpsilonPlus", "epsilon_plus_flat": "EpsilonPlusFlat",
                "epsilon_alpha2_beta1": "EpsilonAlpha2Beta1", "epsilon_alpha2_beta1_flat": "EpsilonAlpha2Beta1Flat",
                "epsilon_gamma_box": "EpsilonGammaBox"}


def make_extractor(cnn: nn.Sequential, features_dim: int = 32):
    """A features extractor as SB3's documentation teaches it: ``self.cnn`` then ``self.linear``."""
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class CustomCNN(BaseFeaturesExtractor):
        def __init__(self, observation_space: gym.spaces.Box, features_dim: int = features_dim) -> None:
            super().__init__(observation_space, features_dim)
            self.cnn = copy.deepcopy(cnn)
            with torch.no_grad():
                n_flatten = self.cnn(torch.zeros(1, *observation_space.shape)).shape[1]
            self.linear = nn.Sequential(nn.Linear(n_flatten, features_dim), nn.ReLU())

        def forward(self, observations: torch.Tensor) -> torch.Tensor:
            return self.linear(self.cnn(observations))

    return CustomCNN


def dqn(cnn: nn.Sequential | None = None, seed: int = 0, **policy_kwargs):
    from stable_baselines3 import DQN

    if cnn is not None:
        policy_kwargs["features_extractor_class"] = make_extractor(cnn)
    return DQN("CnnPolicy", fake_atari_env(4), buffer_size=10, device="cpu", seed=seed, policy_kwargs=policy_kwargs)


def randomise_batch_norms(model) -> None:
    """Give every BatchNorm non-trivial statistics, as training would.

    rlexplain folds BatchNorm into the float32 policy at load, zennit's canonizer into the float64
    copy it is given; values that are exact in float32 (eps 0, variances powers of 4, scales powers
    of 2, shifts multiples of 1/8) make both folds the same numbers, so the maps can be compared tightly.
    """
    g = torch.Generator().manual_seed(1)

    def pick(values, n):
        return torch.tensor(values)[torch.randint(len(values), (n,), generator=g)]

    for m in model.policy.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = 0.0
            with torch.no_grad():
                m.running_mean.copy_(pick([-0.125, 0.0, 0.125, 0.25], m.num_features))
                m.running_var.copy_(pick([0.25, 1.0, 4.0], m.num_features))
                m.weight.copy_(pick([0.5, 1.0, 2.0], m.num_features))
                m.bias.copy_(pick([-0.25, 0.0, 0.125], m.num_features))


def observations(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 84, 84, 4), dtype=np.uint8)


def zennit_map(model_modules: nn.Module, composite_name: str, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """zennit's map of ``weights . outputs`` for the policy's own modules (BatchNorm merged by its canonizer)."""
    import_zennit()
    import zennit.composites as zc
    from zennit.attribution import Gradient as ZennitGradient
    from zennit.canonizers import SequentialMergeBatchNorm

    kwargs = {"canonizers": [SequentialMergeBatchNorm()]}
    if composite_name == "epsilon_gamma_box":
        kwargs.update(low=torch.zeros_like(x), high=torch.ones_like(x))
    composite = getattr(zc, ZENNIT_NAMES[composite_name])(**kwargs)
    net = copy.deepcopy(model_modules).double().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    with ZennitGradient(net, composite) as attributor:
        _, relevance = attributor(x, lambda out: out * weights)
    return relevance


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def check_against_zennit(model, sequential: nn.Module, composites=tuple(ZENNIT_NAMES)) -> None:
    agent = from_model(model, algorithm="dqn")
    obs = observations()
    x = agent.preprocess(obs).double()
    actions = np.array([1, 3])
    weights = torch.nn.functional.one_hot(torch.as_tensor(actions), 4).double()
    for name in composites:
        ours = Explainer(agent, name, dtype=torch.float64).explain(obs, actions).relevance
        theirs = zennit_map(sequential, name, x, weights).movedim(1, -1).numpy()
        assert relative_error(torch.as_tensor(ours), torch.as_tensor(theirs)) <= TOLERANCE, name


def test_custom_features_extractor_as_sb3_documents_it_is_explained_as_zennit_does():
    cnn = nn.Sequential(nn.Conv2d(4, 8, 8, stride=4), nn.ReLU(), nn.Conv2d(8, 16, 4, stride=2), nn.ReLU(),
                        nn.Flatten())
    model = dqn(cnn)
    q = model.policy.q_net
    check_against_zennit(model, nn.Sequential(q.features_extractor.cnn, q.features_extractor.linear, q.q_net))


def test_pooling_batchnorm_same_padding_dilation_and_other_activations_match_zennit():
    cnn = nn.Sequential(
        nn.Conv2d(4, 8, 4, stride=1, padding="same"), nn.BatchNorm2d(8), nn.LeakyReLU(0.1),  # asymmetric "same"
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2), nn.BatchNorm2d(8), nn.ELU(),
        nn.AvgPool2d(2), nn.Dropout(0.2),
        nn.Conv2d(8, 8, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(4), nn.Tanh(), nn.Flatten(),
    )
    model = dqn(cnn)
    randomise_batch_norms(model)
    q = model.policy.q_net
    check_against_zennit(model, nn.Sequential(q.features_extractor.cnn, q.features_extractor.linear, q.q_net))


def test_functional_forward_is_read_as_its_layers():
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class Functional(BaseFeaturesExtractor):
        def __init__(self, observation_space, features_dim: int = 16) -> None:
            super().__init__(observation_space, features_dim)
            self.conv = nn.Conv2d(4, 8, 8, stride=4)
            self.fc = nn.Linear(8 * 20 * 20, features_dim)

        def forward(self, x):
            x = torch.relu(self.conv(x))
            return torch.relu(self.fc(x.view(x.size(0), -1)))

    from stable_baselines3 import DQN

    model = DQN("CnnPolicy", fake_atari_env(4), buffer_size=10, device="cpu", seed=0,
                policy_kwargs={"features_extractor_class": Functional})
    q = model.policy.q_net
    fe = q.features_extractor
    sequential = nn.Sequential(fe.conv, nn.ReLU(), nn.Flatten(), fe.fc, nn.ReLU(), q.q_net)
    check_against_zennit(model, sequential, ("epsilon_plus_flat", "epsilon_gamma_box"))


def test_unnormalised_image_policy_is_explained_as_the_same_function_of_the_0_1_input():
    plain = dqn(normalize_images=False)
    scaled = dqn(normalize_images=True)
    scaled.policy.load_state_dict(plain.policy.state_dict())
    with torch.no_grad():  # conv1 of the normalising policy sees x/255: give it 255 W to compute the same function
        for net in (scaled.policy.q_net, scaled.policy.q_net_target):
            net.features_extractor.cnn[0].weight.mul_(255.0)
    obs = observations()
    a, b = from_model(plain), from_model(scaled)
    np.testing.assert_allclose(a.outputs(obs), b.outputs(obs), rtol=1e-4)
    for name in ("epsilon_plus_flat", "epsilon_gamma_box", "gradient"):
        np.testing.assert_allclose(explain(a, obs, composite=name), explain(b, obs, composite=name), rtol=1e-3,
                                   atol=1e-6 * np.abs(explain(b, obs, composite=name)).max())


def test_untraceable_extractor_is_refused_and_explained_through_an_explicit_network():
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class Untraceable(BaseFeaturesExtractor):
        def __init__(self, observation_space, features_dim: int = 16) -> None:
            super().__init__(observation_space, features_dim)
            self.cnn = nn.Sequential(nn.Conv2d(4, 8, 8, stride=4), nn.ReLU(), nn.Flatten())
            self.linear = nn.Sequential(nn.Linear(8 * 20 * 20, features_dim), nn.ReLU())

        def forward(self, x):
            if x.dim() == 3:  # data-dependent control flow: torch.fx cannot trace it
                x = x[None]
            return self.linear(self.cnn(x))

    from stable_baselines3 import DQN

    model = DQN("CnnPolicy", fake_atari_env(4), buffer_size=10, device="cpu", seed=0,
                policy_kwargs={"features_extractor_class": Untraceable})
    with pytest.raises(UnsupportedLayerError, match=r"features_extractor \(Untraceable\).*cannot be traced.*pass network="):
        from_model(model)
    q = model.policy.q_net
    agent = from_model(model, network=nn.Sequential(q.features_extractor.cnn, q.features_extractor.linear, q.q_net))
    obs = observations()
    assert np.isfinite(explain(agent, obs, composite="epsilon_gamma_box")).all()
    wrong = nn.Sequential(copy.deepcopy(q.features_extractor.cnn), q.features_extractor.linear, nn.Linear(16, 4))
    with pytest.raises(AgentError, match="does not reproduce the policy's action outputs"):
        from_model(model, network=wrong)


def test_a_network_with_a_skip_connection_gets_gradients_and_a_clear_lrp_error():
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class Residual(BaseFeaturesExtractor):
        def __init__(self, observation_space, features_dim: int = 16) -> None:
            super().__init__(observation_space, features_dim)
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 84 * 84, features_dim), nn.ReLU())

        def forward(self, x):
            return self.head(torch.relu(self.conv(x)) + x)

    from stable_baselines3 import DQN

    model = DQN("CnnPolicy", fake_atari_env(4), buffer_size=10, device="cpu", seed=0,
                policy_kwargs={"features_extractor_class": Residual})
    with pytest.raises(UnsupportedLayerError, match=r"features_extractor \(Residual\).*skip connection.*pass network="):
        from_model(model)
    q = model.policy.q_net
    agent = from_model(model, network=nn.Sequential(q.features_extractor, q.q_net))
    assert np.abs(explain(agent, observations(), composite="gradient")).sum() > 0
    with pytest.raises(UnsupportedLayerError, match="skip connection"):
        explain(agent, observations(), composite="epsilon_plus_flat")


def test_unsupported_layers_and_policies_are_refused_in_one_line_naming_path_and_type():
    cnn = nn.Sequential(nn.Conv2d(4, 8, 8, stride=4), nn.ReLU(), nn.Flatten(), nn.Softmax(dim=-1))
    agent = from_model(dqn(cnn))
    with pytest.raises(UnsupportedLayerError, match=r"unsupported layer q_net\.features_extractor\.cnn\.3 \(Softmax\)"):
        explain(agent, observations(1)[0])
    bn_first = nn.Sequential(nn.BatchNorm2d(4), nn.Conv2d(4, 8, 8, stride=4), nn.ReLU(), nn.Flatten())
    with pytest.raises(UnsupportedLayerError, match=r"cnn\.0 \(BatchNorm2d\) after the input"):
        from_model(dqn(bn_first))
    sb3_contrib = pytest.importorskip("sb3_contrib")
    recurrent = sb3_contrib.RecurrentPPO("CnnLstmPolicy", fake_atari_env(4), n_steps=8, batch_size=8, device="cpu",
                                         policy_kwargs={"lstm_hidden_size": 8})
    with pytest.raises(AgentError, match="not supported: recurrent policies"):
        from_model(recurrent, algorithm="ppo")


def test_mlp_policy_on_vector_observations_is_not_supported():
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", gym.make("CartPole-v1"), n_steps=8, batch_size=8, device="cpu")
    with pytest.raises(AgentError, match=r"not supported: .* not images"):
        from_model(model, algorithm="ppo")

"""From an SB3 policy to the network that is explained: an explicit chain of leaf layers.

Explaining needs the computation from the preprocessed input (N, C, H, W) in [0, 1] to the
action outputs as a sequence of layers, each with its dotted path in the policy. This module
builds that chain from the policy's own modules (features extractor, then ``q_net`` /
``quantile_net`` / ``mlp_extractor`` + ``action_net`` / ``value_net``), never from a
re-implementation: containers are unrolled or traced (:mod:`rlexplain.lrp.chain`), then the chain is
*canonized* with exact, output-preserving folds (:mod:`rlexplain.lrp.canonizers`): a BatchNorm into
the Conv2d/Linear before it, the ``x 255`` of ``normalize_images=False`` policies into the first
weight layer, and (here) QR-DQN's mean over quantiles into its last layer.

:func:`verify` then checks that the chain reproduces the policy's own forward pass, so an
architecture this module misreads is refused at load instead of explained wrongly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from rlexplain.errors import AgentError, UnsupportedLayerError
from rlexplain.lrp.canonizers import Scale, canonize, copy_with
from rlexplain.lrp.chain import Chain, layers_of


def mean_over_quantiles(layer: nn.Module, n_quantiles: int, n_actions: int, path: str) -> nn.Linear:
    """QR-DQN's last Linear layer followed by the mean over quantiles, as one Linear layer (exact)."""
    if not isinstance(layer, nn.Linear):
        raise UnsupportedLayerError(f"unsupported QR-DQN head: {path} ({type(layer).__name__}) before the mean over "
                                    f"quantiles, expected Linear")
    q, a = n_quantiles, n_actions
    bias = None if layer.bias is None else layer.bias.view(q, a).mean(0)
    merged = nn.Linear(layer.in_features, a, bias=layer.bias is not None)
    return copy_with(merged, layer.weight.view(q, a, -1).mean(0), bias)




# -- the policy's networks -------------------------------------------------------------------------
def _reject_unsupported(policy: Any) -> None:
    from stable_baselines3.common.preprocessing import is_image_space

    name = type(policy).__name__
    if any(hasattr(policy, attr) for attr in ("lstm_actor", "lstm_critic")) or "Recurrent" in name:
        raise AgentError(f"not supported: recurrent policies ({name}); rlexplain explains feed-forward image policies "
                         f"(DQN, QR-DQN, PPO, A2C with CnnPolicy or a custom CNN extractor)")
    space = policy.observation_space
    if not is_image_space(space, check_channels=False):
        raise AgentError(f"not supported: {name} observes {type(space).__name__}{tuple(space.shape or ())}, not "
                         f"images; rlexplain explains image policies (observations (C, H, W) uint8)")
    if not hasattr(policy.action_space, "n"):
        raise AgentError(f"not supported: {name} has a {type(policy.action_space).__name__} action space; rlexplain "
                         f"explains discrete actions (Atari)")


def build_networks(policy: Any, algorithm: str) -> tuple[Chain, Chain | None]:
    """(action network, value network or None) as canonized chains over the policy's own modules.

    The action network maps (N, C, H, W) float in [0, 1] to Q-values (DQN), mean quantiles
    (QR-DQN) or logits (PPO/A2C); the value network (PPO/A2C) to the state value.
    """
    _reject_unsupported(policy)
    head: list[tuple[str, nn.Module]] = []
    if getattr(policy, "normalize_images", True) is False:
        head.append(("preprocess.scale_255", Scale(255.0)))  # SB3 skips its /255: the network sees 0..255
    if algorithm == "dqn":
        net = policy.q_net
        layers = layers_of(net.features_extractor, "q_net.features_extractor") + layers_of(net.q_net, "q_net.q_net")
        return Chain(canonize(head + layers)), None
    if algorithm == "qrdqn":
        net = policy.quantile_net
        layers = (layers_of(net.features_extractor, "quantile_net.features_extractor")
                  + layers_of(net.quantile_net, "quantile_net.quantile_net"))
        path, last = layers[-1]
        layers[-1] = (f"{path}+mean_over_quantiles",
                      mean_over_quantiles(last, net.n_quantiles, int(net.action_space.n), path))
        return Chain(canonize(head + layers)), None
    if algorithm not in ("ppo", "a2c"):
        raise AgentError(f"unsupported algorithm {algorithm!r}: expected dqn, qrdqn, ppo or a2c")
    pi_extractor = getattr(policy, "pi_features_extractor", policy.features_extractor)
    vf_extractor = getattr(policy, "vf_features_extractor", policy.features_extractor)
    pi_name = "features_extractor" if pi_extractor is policy.features_extractor else "pi_features_extractor"
    vf_name = "features_extractor" if vf_extractor is policy.features_extractor else "vf_features_extractor"
    actions = (layers_of(pi_extractor, pi_name) + layers_of(policy.mlp_extractor.policy_net, "mlp_extractor.policy_net")
               + [("action_net", policy.action_net)])
    value = (layers_of(vf_extractor, vf_name) + layers_of(policy.mlp_extractor.value_net, "mlp_extractor.value_net")
             + [("value_net", policy.value_net)])
    return Chain(canonize(head + actions)), Chain(canonize(head + value))


def network_chain(network: nn.Module) -> Chain:
    """A user-supplied network ((N, C, H, W) in [0, 1] -> outputs) as a canonized chain."""
    return Chain(canonize(layers_of(network, "")))


@torch.no_grad()
def policy_outputs(policy: Any, algorithm: str, raw: Tensor) -> tuple[Tensor, Tensor | None]:
    """The policy's own outputs on raw (0..255) channel-first observations, through SB3's code path."""
    if algorithm == "dqn":
        return policy.q_net(raw), None
    if algorithm == "qrdqn":
        return policy.quantile_net(raw).mean(1), None
    return policy.get_distribution(raw).distribution.logits, policy.predict_values(raw)


@torch.no_grad()
def verify(policy: Any, algorithm: str, network: nn.Module, value_network: nn.Module | None, name: str) -> None:
    """Check that the chains reproduce the policy's own forward pass (guards against misread architectures)."""
    shape = tuple(policy.observation_space.shape)
    dtype = next((p.dtype for p in policy.parameters()), torch.float32)
    raw = torch.randint(0, 256, (2, *shape), generator=torch.Generator().manual_seed(0)).to(dtype)
    expected, expected_value = policy_outputs(policy, algorithm, raw)
    try:
        got = network(raw / 255.0)
        got_value = value_network(raw / 255.0) if value_network is not None else None
    except Exception as exc:
        raise AgentError(f"agent {name}: its network fails on the policy's observations {shape} "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if algorithm in ("ppo", "a2c"):  # SB3's Categorical keeps normalised logits (log-probabilities)
        got = torch.log_softmax(got, -1)
    pairs = [(got, expected, "action outputs")]
    if got_value is not None:
        pairs.append((got_value, expected_value, "value"))
    for got, want, what in pairs:
        scale = float(want.abs().max()) or 1.0
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5 * scale):
            raise AgentError(f"agent {name}: rlexplain's layer chain does not reproduce the policy's {what}; its "
                             f"architecture ({type(policy).__name__}) is not supported: pass network=")


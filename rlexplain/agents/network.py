"""From an SB3 policy to the network that is explained: an explicit chain of leaf layers.

Explaining needs the computation from the preprocessed input (N, C, H, W) in [0, 1] to the
action outputs as a sequence of layers, each with its dotted path in the policy. This module
builds that chain from the policy's own modules (features extractor, then ``q_net`` /
``quantile_net`` / ``mlp_extractor`` + ``action_net`` / ``value_net``), never from a
re-implementation:

* ``nn.Sequential`` containers are unrolled in order;
* any other container -- SB3's ``NatureCNN``, a user's ``BaseFeaturesExtractor`` -- is traced with
  ``torch.fx``; its forward must be a chain (no branches or skip connections), where functional
  calls that LRP treats as layers (``torch.flatten``, ``F.relu``, ``x.view(x.size(0), -1)``, ...)
  become their module equivalents;
* then the chain is *canonized* (as zennit's canonizers do), with exact, output-preserving folds:
  a BatchNorm into the Conv2d/Linear before it, the ``x 255`` of ``normalize_images=False``
  policies into the first weight layer, and QR-DQN's mean over quantiles into its last layer.

:func:`verify` then checks that the chain reproduces the policy's own forward pass, so an
architecture this module misreads is refused at load instead of explained wrongly.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlexplain.errors import AgentError, UnsupportedLayerError
from rlexplain.lrp.engine import Chain
from rlexplain.lrp.layers import LINEAR_LAYERS


class PixelScale(nn.Module):
    """Multiplies the [0, 1] input back to [0, 255], for policies built with ``normalize_images=False``.

    Only present until :func:`canonize` folds it into the first weight layer.
    """

    def forward(self, x: Tensor) -> Tensor:
        return x * 255.0


class MeanOverQuantiles(nn.Module):
    """QR-DQN's head output (N, n_quantiles * n_actions) -> the mean over quantiles (N, n_actions).

    Only present until :func:`canonize` folds it into the Linear layer before it.
    """

    def __init__(self, n_quantiles: int, n_actions: int) -> None:
        super().__init__()
        self.n_quantiles, self.n_actions = n_quantiles, n_actions

    def forward(self, x: Tensor) -> Tensor:
        return x.view(-1, self.n_quantiles, self.n_actions).mean(1)


# functional calls (and tensor methods) that correspond to a leaf layer LRP knows
_FUNCTIONS: dict[Any, type[nn.Module]] = {
    F.relu: nn.ReLU, torch.relu: nn.ReLU, F.leaky_relu: nn.LeakyReLU, F.elu: nn.ELU, F.silu: nn.SiLU,
    F.gelu: nn.GELU, torch.tanh: nn.Tanh, F.tanh: nn.Tanh, torch.sigmoid: nn.Sigmoid, F.sigmoid: nn.Sigmoid,
    torch.flatten: nn.Flatten,
}
_METHODS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "flatten": nn.Flatten}
_IDENTITY_METHODS = {"float", "contiguous"}
_FLATTENING_METHODS = {"view", "reshape"}


def layers_of(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """The leaf layers of ``module`` in forward order, each with its dotted path under ``prefix``.

    :raises UnsupportedLayerError: a forward that is not a chain of layers (branches, skip
        connections, recurrence) or uses an operation with no layer equivalent.
    """
    if isinstance(module, Chain):
        return module.named_layers()
    children = list(module.named_children())
    if not children:
        return [] if isinstance(module, nn.Sequential) else [(prefix, module)]
    if isinstance(module, nn.Sequential):
        out: list[tuple[str, nn.Module]] = []
        for name, child in children:
            out += layers_of(child, f"{prefix}.{name}" if prefix else name)
        return out
    if type(module).__module__.startswith("torch.nn"):  # a torch container such as MultiheadAttention
        return [(prefix, module)]
    return _traced_layers(module, prefix)


def _traced_layers(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """``layers_of`` for a container with its own forward, read from its ``torch.fx`` graph."""
    where = f"{prefix} ({type(module).__name__})"
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception as exc:
        raise UnsupportedLayerError(f"cannot read the layers of {where}: its forward cannot be traced "
                                    f"({type(exc).__name__}); pass network= (an nn.Sequential of supported layers)"
                                    ) from exc
    out: list[tuple[str, nn.Module]] = []
    current = None  # the node holding the chain's running tensor
    shape_nodes: set = set()  # nodes computing sizes (x.size(0), x.shape[0]) used only as reshape arguments
    for node in graph.nodes:
        if node.op == "placeholder":
            if current is None:
                current = node
            continue
        if node.op == "output":
            if node.args[0] is not current:
                raise UnsupportedLayerError(f"{where}: its forward does not return its chain of layers' output; "
                                            f"pass network=")
            return out
        consumes = current in node.all_input_nodes
        if not consumes or (node.op == "call_method" and node.target == "size") or \
                (node.op == "call_function" and node.target is getattr):
            if node.op == "get_attr":
                raise UnsupportedLayerError(f"{where} uses its parameter {node.target} outside a layer; "
                                            f"pass network=")
            shape_nodes.add(node)
            continue
        if node.op == "call_function" and node.target is operator.getitem and node.args[0] in shape_nodes:
            shape_nodes.add(node)
            continue
        others = [n for n in node.all_input_nodes if n is not current and n not in shape_nodes]
        if others or (node.args and node.args[0] is not current):
            raise UnsupportedLayerError(f"{where}: {node.op} {_name(node.target)} combines the running tensor with "
                                        f"others (a branch or skip connection); rlexplain explains chains of layers, "
                                        f"pass network=")
        path = f"{prefix}.{node.target}" if node.op == "call_module" else f"{prefix}.<{_name(node.target)}>"
        if node.op == "call_module":
            out += layers_of(module.get_submodule(node.target), path)
        elif node.op == "call_function" and node.target in _FUNCTIONS:
            out.append((path, _functional_layer(node)))
        elif node.op == "call_method" and node.target in _METHODS:
            out.append((path, _functional_layer(node)))
        elif node.op == "call_method" and node.target in _IDENTITY_METHODS:
            pass
        elif node.op == "call_method" and node.target in _FLATTENING_METHODS and node.args[-1] == -1 \
                and len(node.args) == 3:
            out.append((path, nn.Flatten()))  # x.view(x.size(0), -1): flatten all but the batch axis
        else:
            raise UnsupportedLayerError(f"{where}: operation {_name(node.target)} has no LRP layer equivalent; "
                                        f"use modules (nn.ReLU, nn.Flatten, ...) or pass network=")
        current = node
    raise UnsupportedLayerError(f"{where}: its forward has no output")


def _functional_layer(node) -> nn.Module:
    cls = _FUNCTIONS[node.target] if node.op == "call_function" else _METHODS[node.target]
    if cls is nn.Flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        if start != 1:
            raise UnsupportedLayerError(f"flatten(start_dim={start}) would merge the batch axis; use start_dim=1")
        return nn.Flatten()
    if cls is nn.LeakyReLU:
        slope = node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope", 0.01)
        return nn.LeakyReLU(slope)
    if cls is nn.ELU:
        return nn.ELU(node.args[1] if len(node.args) > 1 else node.kwargs.get("alpha", 1.0))
    return cls()


def _name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", repr(target))


# -- canonizing: exact folds that leave only layers with LRP rules -----------------------------------
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def canonize(layers: Sequence[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """Fold BatchNorm, :class:`PixelScale` and :class:`MeanOverQuantiles` into neighbouring weight layers.

    Folded layers are copies; the policy's own modules are never modified. The result computes
    the same function as the input chain (up to float rounding).
    """
    out: list[tuple[str, nn.Module]] = []
    pending_scale: tuple[str, float] | None = None
    for path, module in layers:
        if isinstance(module, PixelScale):
            pending_scale = (path, 255.0)
            continue
        if pending_scale is not None and isinstance(module, LINEAR_LAYERS):
            module = _scaled_input(module, pending_scale[1])
            path = f"{pending_scale[0]}+{path}"
            pending_scale = None
        if isinstance(module, _BATCH_NORMS):
            if not out or not isinstance(out[-1][1], LINEAR_LAYERS):
                previous = out[-1][0] if out else "the input"
                raise UnsupportedLayerError(f"unsupported layer {path} ({type(module).__name__}) after {previous}: "
                                            f"rlexplain folds a BatchNorm into the Conv2d/Linear right before it")
            before_path, before = out.pop()
            out.append((f"{before_path}+{path}", _merge_batch_norm(before, module)))
            continue
        if isinstance(module, MeanOverQuantiles):
            before_path, before = out.pop() if out else ("", None)
            if not isinstance(before, nn.Linear):
                raise UnsupportedLayerError(f"unsupported QR-DQN head: {before_path or 'nothing'} before the mean "
                                            f"over quantiles is {type(before).__name__}, expected Linear")
            out.append((f"{before_path}+mean_over_quantiles", _mean_over_quantiles(before, module)))
            continue
        out.append((path, module))
    if pending_scale is not None:
        raise UnsupportedLayerError("normalize_images=False policy without a weight layer to fold the x255 into")
    return out


def _copy_with(layer: nn.Module, weight: Tensor, bias: Tensor | None) -> nn.Module:
    new = copy.deepcopy(layer)
    with torch.no_grad():
        new.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        new.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
    return new


def _scaled_input(layer: nn.Module, factor: float) -> nn.Module:
    """``layer(factor * x)`` as one layer: the weights times ``factor`` (zero padding stays zero)."""
    return _copy_with(layer, layer.weight * factor, layer.bias)


def _merge_batch_norm(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """``bn(layer(x))`` in eval mode as one layer: ``W' = W * g / sqrt(var + eps)``, ``b' = (b - mean) * ... + beta``."""
    scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
    shape = (-1,) + (1,) * (layer.weight.ndim - 1)
    return _copy_with(layer, layer.weight * scale.view(shape), (bias - bn.running_mean) * scale + shift)


def _mean_over_quantiles(layer: nn.Linear, mean: MeanOverQuantiles) -> nn.Linear:
    q, a = mean.n_quantiles, mean.n_actions
    bias = None if layer.bias is None else layer.bias.view(q, a).mean(0)
    merged = nn.Linear(layer.in_features, a, bias=layer.bias is not None)
    return _copy_with(merged, layer.weight.view(q, a, -1).mean(0), bias)


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
        head.append(("preprocess.scale_255", PixelScale()))
    if algorithm == "dqn":
        net = policy.q_net
        layers = layers_of(net.features_extractor, "q_net.features_extractor") + layers_of(net.q_net, "q_net.q_net")
        return Chain(canonize(head + layers)), None
    if algorithm == "qrdqn":
        net = policy.quantile_net
        layers = (layers_of(net.features_extractor, "quantile_net.features_extractor")
                  + layers_of(net.quantile_net, "quantile_net.quantile_net")
                  + [("quantile_net.mean", MeanOverQuantiles(net.n_quantiles, int(net.action_space.n)))])
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
    raw = torch.randint(0, 256, (2, *shape), generator=torch.Generator().manual_seed(0)).float()
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


"""Explaining an agent's decisions: which output (target) and which method, for one or many frames.

Targets (``action=``):

* ``None`` -- the greedy action (argmax of Q-values, mean quantiles or logits);
* an int, or one int per observation -- that action;
* ``"all"`` -- every action, in one batched call (an action axis after the batch axis);
* ``"contrastive"`` -- the greedy action against the mean of the others, ``y_a - mean_{b != a} y_b``;
* ``"value"`` -- the state value of PPO/A2C.

LRP starts from the explained output's value (``weights * outputs``, e.g. one-hot times the
Q-values), so for conservative rules on bias-free networks the relevance sums to ``Q(s, a)``.
The gradient methods return the input gradient of the same target ``weights . outputs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rlexplain.agents import Agent, AgentError
from rlexplain.lrp.composites import Composite, UserMapping
from rlexplain.lrp.engine import Method, make_method

Target = None | int | Sequence[int] | np.ndarray | str
TARGET_MODES = ("chosen", "all", "contrastive", "value")


@dataclass
class Explanation:
    """One explained batch.

    :ivar relevance: float32, the layout of the observations ((N, 84, 84, 4) from SB3's frame
        stack), with an action axis after the batch axis for ``action="all"``.
    :ivar outputs: the network's outputs (N, n_actions), or the value (N, 1) for ``"value"``.
    :ivar actions: the explained (or chosen) action per observation (N,); -1 for ``"value"``.
    :ivar target: the target mode: ``chosen``, ``all``, ``contrastive`` or ``value``.
    """

    relevance: np.ndarray
    outputs: np.ndarray
    actions: np.ndarray
    target: str


def target_weights(mode: str, actions: np.ndarray, n_outputs: int) -> Tensor:
    """The output weights of a target: (N, n_outputs), or (N, n_outputs, n_outputs) for ``all``."""
    n = len(actions)
    if mode == "all":
        return torch.eye(n_outputs).expand(n, n_outputs, n_outputs)
    if mode == "value":
        return torch.ones(n, 1)
    onehot = torch.nn.functional.one_hot(torch.as_tensor(actions, dtype=torch.long), n_outputs).float()
    if mode == "contrastive":
        if n_outputs < 2:
            raise AgentError("a contrastive explanation needs at least two actions")
        return onehot - (1 - onehot) / (n_outputs - 1)
    return onehot


class Explainer:
    """A reusable explainer for one agent and method: relevance, outputs and action in one pass.

    :param agent: the agent.
    :param composite: a composite name (``epsilon_plus_flat``, ...), ``gradient``,
        ``gradient_x_input``, a :class:`~rlexplain.lrp.Composite`, or a ``{layer path or type: rule}`` mapping.
    :param rules: a ``{layer path or type: rule}`` mapping overriding the composite's choices.
    :param dtype: the working precision (``torch.float64`` for reference checks).
    :param composite_kwargs: a named composite's parameters (``epsilon``, ``gamma``, ``low``, ``high``).
    """

    def __init__(self, agent: Agent, composite: str | Composite | UserMapping = "epsilon_plus_flat",
                 rules: UserMapping | None = None, dtype: torch.dtype = torch.float32, **composite_kwargs) -> None:
        self.agent = agent
        self.dtype = dtype
        self.method: Method = make_method(agent.network, composite, rules, **composite_kwargs)
        self._value_method: Method | None = None
        self._spec = (composite, rules, composite_kwargs)

    def describe(self) -> dict:
        """The method and its parameters, for summaries."""
        return self.method.describe()

    def _value(self) -> Method:
        if self.agent.value_network is None:
            raise AgentError(f"{self.agent.algorithm.upper()} agent {self.agent.name} has no value head; "
                             f"explain an action instead (action=None, an index, 'all' or 'contrastive')")
        if self._value_method is None:
            composite, rules, kwargs = self._spec
            self._value_method = make_method(self.agent.value_network, composite, rules, **kwargs)
        return self._value_method

    def _input(self, obs: np.ndarray) -> Tensor:
        return self.agent.preprocess(obs).to(self.dtype)

    def explain(self, obs: np.ndarray, action: Target = None) -> Explanation:
        """Explain ``action`` (see the module docstring) on a batch or a single observation."""
        x = self._input(obs)
        if isinstance(action, str):
            if action not in ("all", "contrastive", "value"):
                raise ValueError(f"unknown target {action!r}: expected None, an action index, one index per "
                                 f"observation, 'all', 'contrastive' or 'value'")
            mode = action
        else:
            mode = "chosen"
        method = self._value() if mode == "value" else self.method
        trace = method.forward(x)
        outputs = trace.outputs.detach()
        if mode == "value":
            actions = np.full(len(x), -1)
        elif action is None or mode in ("all", "contrastive"):
            actions = outputs.argmax(-1).numpy()
        else:
            actions = self._check_actions(action, len(x))
        weights = target_weights(mode, actions, outputs.shape[-1]).to(self.dtype)
        relevance = method.relevance(trace, weights)
        return Explanation(self.agent.to_observation_layout(relevance, obs), outputs.float().numpy(), actions, mode)

    def step(self, obs: np.ndarray, deterministic: bool = True, target: str = "chosen") -> Explanation:
        """Choose the agent's action on ``obs`` and explain it, sharing one forward pass.

        :param target: ``chosen`` (the action taken), ``all``, ``contrastive`` (the action taken
            against the others) or an action index as a string or int.
        """
        x = self._input(obs)
        trace = self.method.forward(x)
        outputs = trace.outputs.detach()
        actions = self.agent.choose(outputs, deterministic)
        if str(target).lstrip("-").isdigit():
            mode, explained = "chosen", self._check_actions(int(target), len(x))
        elif target in ("chosen", "all", "contrastive"):
            mode, explained = target, actions
        else:
            raise ValueError(f"unknown target {target!r}: expected chosen, all, contrastive or an action index")
        relevance = self.method.relevance(trace, target_weights(mode, explained, outputs.shape[-1]).to(self.dtype))
        return Explanation(self.agent.to_observation_layout(relevance, obs), outputs.float().numpy(), actions, mode)

    def _check_actions(self, action: int | Sequence[int] | np.ndarray, n: int) -> np.ndarray:
        actions = np.full(n, action, dtype=np.int64) if np.ndim(action) == 0 else np.array(action, dtype=np.int64)
        if actions.shape != (n,):
            raise ValueError(f"got {actions.size} actions for {n} observations: give one int, or one per observation")
        bad = actions[(actions < 0) | (actions >= self.agent.n_actions)]
        if bad.size:
            raise ValueError(f"action {int(bad[0])} out of range: agent {self.agent.name} has actions "
                             f"0..{self.agent.n_actions - 1} ({', '.join(self.agent.action_names)})")
        return actions


def explain(agent: Agent, obs: np.ndarray, action: Target = None, composite: str | Composite | UserMapping =
            "epsilon_plus_flat", **composite_kwargs) -> np.ndarray:
    """Relevance of ``obs`` for ``action``, float32 in the layout of ``obs``.

    :param agent: a loaded :class:`~rlexplain.agents.Agent`.
    :param obs: one observation (84, 84, 4) or a batch (N, 84, 84, 4), uint8 as the env yields it.
    :param action: None (greedy) | int | one int per observation | ``"all"`` (adds an action axis
        after the batch axis) | ``"contrastive"`` | ``"value"``.
    :param composite: ``epsilon_plus_flat`` (default), ``epsilon_plus``, ``epsilon_alpha2_beta1``,
        ``epsilon_alpha2_beta1_flat``, ``epsilon_gamma_box``, ``gradient``, ``gradient_x_input``,
        a :class:`~rlexplain.lrp.Composite` or a ``{layer path or type: rule}`` mapping.
    """
    key = (composite, tuple(sorted(composite_kwargs.items()))) if isinstance(composite, str) else None
    cache = agent.__dict__.setdefault("_explainers", {})
    explainer = cache.get(key) if key is not None else None
    if explainer is None:
        explainer = Explainer(agent, composite, **composite_kwargs)
        if key is not None:
            cache[key] = explainer
    return explainer.explain(obs, action).relevance

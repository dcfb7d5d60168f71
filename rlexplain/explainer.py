"""Explaining an agent's decisions: which output (the target), which method, for one or many frames.

Targets (``action=`` in :func:`explain`, ``--action`` on the command line), parsed in one place,
:func:`parse_target`:

* ``None`` / ``"chosen"`` -- the agent's action: the greedy one in :func:`explain`, the one it
  actually took (possibly sampled) in :meth:`Explainer.step` and ``record``;
* an int, a digit string or an action name (``"LEFT"``, any case) -- that action; a sequence of
  ints -- one action per observation;
* ``"all"`` -- every action, in one batched call (an action axis after the batch axis);
* ``"contrastive"`` -- the chosen action against the mean of the others, ``y_a - mean_{b != a} y_b``;
* ``"value"`` -- the state value of PPO/A2C.

Methods (``composite=``): the LRP composites of :mod:`rlexplain.lrp.composites` and the
non-LRP methods of :mod:`rlexplain.methods` (gradient, gradient x input, integrated gradients,
SmoothGrad, occlusion, and the ``random`` baseline), in one registry, :data:`METHODS`. LRP starts from
the explained output's value (``weights * outputs``), so for conservative rules on bias-free
networks the relevance sums to ``Q(s, a)``; the gradient methods return the input gradient of
the same ``weights . outputs``.

An :class:`Explainer` explains the network as it was when the Explainer was made (it keeps a
frozen copy); :func:`explain` makes a new one on every call, so it always follows ``agent.network``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from rlexplain import catalog
from rlexplain.agents import Agent
from rlexplain.devices import resolve_device
from rlexplain.errors import AgentError, MethodError, TargetError
from rlexplain.lrp.composites import COMPOSITES, Composite, UserMapping
from rlexplain.lrp.engine import LRP
from rlexplain.methods import Gradient, IntegratedGradients, Occlusion, RandomMap, SmoothGrad

# -- targets -----------------------------------------------------------------------------------------
TARGET_MODES = ("chosen", "action", "all", "contrastive", "value")
TargetSpec = None | int | str | Sequence[int] | np.ndarray


@dataclass(frozen=True)
class Target:
    """A parsed target: ``mode`` is one of :data:`TARGET_MODES`; ``actions`` holds the fixed
    action (a scalar) or one per observation for ``mode == "action"``, else None."""

    mode: str
    actions: np.ndarray | None = None

    def label(self, action_names: Sequence[str]) -> str:
        """A short label for summaries, folder names and video legends (``chosen``, ``LEFT``, ...)."""
        if self.mode != "action":
            return self.mode
        if self.actions.ndim == 0:
            return action_names[int(self.actions)]
        return "per-observation actions"


def parse_target(action: TargetSpec | Target, agent: Agent) -> Target:
    """The one parser of targets (see the module docstring) for the API and the command line.

    :raises TargetError: an unknown mode or action name, or an index outside the agent's actions.
    """
    if isinstance(action, Target):
        return action
    if action is None:
        return Target("chosen")
    names = agent.action_names
    if isinstance(action, str):
        text = action.strip()
        if text.lower() in ("chosen", "greedy"):
            return Target("chosen")
        if text.lower() in ("all", "contrastive", "value"):
            mode = text.lower()
            if mode == "value" and agent.value_network is None:
                raise TargetError(f"{agent.algorithm.upper()} agent {agent.name} has no value head; explain an "
                                  f"action instead (chosen, all, contrastive, an index or a name)")
            if mode == "contrastive" and agent.n_actions < 2:
                raise TargetError("a contrastive explanation needs at least two actions")
            return Target(mode)
        if text.lstrip("-").isdigit():
            return Target("action", _check_indices(np.asarray(int(text)), agent))
        upper = [n.upper() for n in names]
        if text.upper() in upper:
            return Target("action", np.asarray(upper.index(text.upper())))
        raise TargetError(f"unknown action {action!r}: expected chosen, all, contrastive, value, an index "
                          f"0..{agent.n_actions - 1} or an action name ({', '.join(names)})")
    actions = np.asarray(action)
    if actions.dtype.kind not in "iu" or actions.ndim > 1:
        raise TargetError(f"unknown target {action!r}: expected None, 'chosen', 'all', 'contrastive', 'value', an "
                          f"action index or name, or one index per observation")
    return Target("action", _check_indices(actions.astype(np.int64), agent))


def _check_indices(actions: np.ndarray, agent: Agent) -> np.ndarray:
    bad = actions[(actions < 0) | (actions >= agent.n_actions)]
    if bad.size:
        raise TargetError(f"action {int(bad.ravel()[0])} out of range: agent {agent.name} has actions "
                          f"0..{agent.n_actions - 1} ({', '.join(agent.action_names)})")
    return actions


def target_weights(mode: str, actions: np.ndarray, n_outputs: int) -> Tensor:  # (built on the CPU; methods move them)
    """The output weights of a target: (N, n_outputs), or (N, n_outputs, n_outputs) for ``all``."""
    n = len(actions)
    if mode == "all":
        return torch.eye(n_outputs).expand(n, n_outputs, n_outputs)
    if mode == "value":
        return torch.ones(n, 1)
    onehot = torch.nn.functional.one_hot(torch.as_tensor(actions, dtype=torch.long), n_outputs).float()
    if mode == "contrastive":
        return onehot - (1 - onehot) / (n_outputs - 1)
    return onehot


# -- methods ---------------------------------------------------------------------------------------
Method = LRP | Gradient | IntegratedGradients | SmoothGrad | Occlusion | RandomMap
#: Methods that are not LRP composites: name -> factory(network, dtype, device, **params).
OTHER_METHODS: dict[str, Callable[..., Method]] = {
    "gradient": lambda network, dtype, device: Gradient(network, times_input=False, dtype=dtype, device=device),
    "gradient_x_input": lambda network, dtype, device: Gradient(network, times_input=True, dtype=dtype,
                                                                device=device),
    "integrated_gradients": IntegratedGradients,
    "smoothgrad": SmoothGrad,
    "occlusion": Occlusion,
    "random": RandomMap,
}
#: Every method name accepted wherever a composite name is (``record --composite``, ``compare``, ...).
METHODS: tuple[str, ...] = tuple(COMPOSITES) + tuple(OTHER_METHODS)
BASELINES = catalog.BASELINES
if METHODS != catalog.METHOD_NAMES:  # the command line's list must name exactly the registered methods
    raise ImportError(f"rlexplain.catalog.METHOD_NAMES {catalog.METHOD_NAMES} != registered methods {METHODS}")


def make_method(network: nn.Module, method: str | Composite | UserMapping = catalog.DEFAULT_METHOD,
                rules: UserMapping | None = None, dtype: torch.dtype | None = None,
                device: torch.device | str | None = None, **params) -> Method:
    """An explanation method by name (:data:`METHODS`), a :class:`~rlexplain.lrp.Composite` or a rule mapping.

    The method explains a frozen copy of ``network`` in ``dtype`` on ``device`` (None: the network's own).

    :raises MethodError: an unknown name, or parameters the method does not take.
    """
    if isinstance(method, str) and method in OTHER_METHODS:
        if rules:
            raise MethodError(f"{method} takes no rules (it is not an LRP composite)")
        try:
            return OTHER_METHODS[method](network, dtype=dtype, device=device, **params)
        except TypeError as exc:
            raise MethodError(f"{method} does not take parameters {', '.join(params)} ({exc})") from exc
    if isinstance(method, str) and method not in COMPOSITES:
        raise MethodError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
    try:
        return LRP(network, method, rules, dtype=dtype, device=device, **params)
    except TypeError as exc:
        if "unexpected keyword" not in str(exc):
            raise
        raise MethodError(f"{method} does not take these parameters: {exc}") from exc


# -- explaining ------------------------------------------------------------------------------------
@dataclass
class Explanation:
    """One explained batch.

    :ivar relevance: float32, the layout of the observations ((N, 84, 84, 4) from SB3's frame
        stack), with an action axis after the batch axis for ``action="all"``.
    :ivar outputs: the network's outputs (N, n_actions) (float32).
    :ivar actions: the action chosen (:meth:`Explainer.step`) or explained (:meth:`Explainer.explain`;
        -1 for ``"value"``) per observation (N,).
    :ivar target: the target mode: ``chosen``, ``action``, ``all``, ``contrastive`` or ``value``.
    :ivar explained: the action whose output was explained, per observation (N,) (-1 for ``all`` / ``value``).
    """

    relevance: np.ndarray
    outputs: np.ndarray
    actions: np.ndarray
    target: str
    explained: np.ndarray | None = None


class Explainer:
    """A reusable explainer for one agent and method: relevance, outputs and action in one pass.

    It explains the agent's network as it is when the Explainer is made (a frozen copy, in
    ``dtype``): make a new one after changing the network or its weights.

    :param agent: the agent.
    :param composite: a method name (:data:`METHODS`), a :class:`~rlexplain.lrp.Composite`, or a
        ``{layer path or type: rule}`` mapping.
    :param rules: a ``{layer path or type: rule}`` mapping overriding the composite's choices.
    :param dtype: the working precision (``torch.float64`` for reference checks).
    :param device: where to explain: ``cpu``, ``cuda``, ``cuda:1`` or ``auto``
        (:func:`rlexplain.devices.resolve_device`); None: where the agent's network is (it stays there).
    :param params: a method's parameters (``epsilon``, ``gamma``, ``low``, ``high`` for composites).
    """

    def __init__(self, agent: Agent, composite: str | Composite | UserMapping = catalog.DEFAULT_METHOD,
                 rules: UserMapping | None = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None, **params) -> None:
        self.agent = agent
        self.dtype = dtype
        self.device = resolve_device(device)
        self.method: Method = make_method(agent.network, composite, rules, dtype, self.device, **params)
        self._value_method: Method | None = (
            make_method(agent.value_network, composite, rules, dtype, self.device, **params)
            if agent.value_network is not None else None)

    def describe(self) -> dict:
        """The method and its parameters, for summaries."""
        return self.method.describe()

    def explain(self, obs: np.ndarray, action: TargetSpec | Target = None) -> Explanation:
        """Explain ``action`` (see the module docstring; ``chosen`` is the greedy action) on one or many observations."""
        target = parse_target(action, self.agent)
        return self._explain(obs, target, acting=None)

    def step(self, obs: np.ndarray, deterministic: bool = True, target: TargetSpec | Target = "chosen",
             rngs: Sequence[np.random.Generator] | None = None) -> Explanation:
        """Choose the agent's action on ``obs`` and explain ``target``, sharing one forward pass.

        ``chosen`` (and ``contrastive``) then refer to the action taken, greedy or sampled
        (``rngs``: one generator per observation, see :meth:`Agent.choose`).
        """
        return self._explain(obs, parse_target(target, self.agent), acting=deterministic, rngs=rngs)

    def _explain(self, obs: np.ndarray, target: Target, acting: bool | None,
                 rngs: Sequence[np.random.Generator] | None = None) -> Explanation:
        x = self.agent.preprocess(obs).to(self.dtype)
        n = len(x)
        if target.mode == "value":
            if acting is not None:
                raise TargetError("the value is explained with explain(), not while acting")
            trace = self._value_method.forward(x)
            outputs = trace.outputs.detach()
            weights = target_weights("value", np.full(n, -1), 1)
            relevance = self._value_method.relevance(trace, weights)
            actions = np.full(n, -1)
            return Explanation(self.agent.to_observation_layout(relevance, obs), outputs.float().cpu().numpy(),
                               actions, "value", actions)
        trace = self.method.forward(x)
        outputs = trace.outputs.detach()
        chosen = self.agent.choose(outputs.cpu(), True if acting is None else acting, rngs)
        if target.mode == "action":
            explained = np.broadcast_to(target.actions, (n,)).copy() if target.actions.ndim == 0 else target.actions
            if explained.shape != (n,):
                raise TargetError(f"got {explained.size} actions for {n} observations: give one, or one per observation")
        else:
            explained = chosen
        relevance = self.method.relevance(trace, target_weights(target.mode, explained, outputs.shape[-1]))
        actions = chosen if acting is not None else explained
        return Explanation(self.agent.to_observation_layout(relevance, obs), outputs.float().cpu().numpy(), actions,
                           target.mode, np.full(n, -1) if target.mode == "all" else explained)


def explain(agent: Agent, obs: np.ndarray, action: TargetSpec = None,
            composite: str | Composite | UserMapping = catalog.DEFAULT_METHOD, **params) -> np.ndarray:
    """Relevance of ``obs`` for ``action``, float32 in the layout of ``obs``.

    :param agent: a loaded :class:`~rlexplain.agents.Agent`; its current ``network`` is explained.
    :param obs: one observation (84, 84, 4) or a batch (N, 84, 84, 4), uint8 as the env yields it.
    :param action: None / ``"chosen"`` (greedy) | an index or action name | one index per observation |
        ``"all"`` (adds an action axis after the batch axis) | ``"contrastive"`` | ``"value"``.
    :param composite: a method of :data:`METHODS` (default ``epsilon_plus_flat``), a
        :class:`~rlexplain.lrp.Composite` or a ``{layer path or type: rule}`` mapping.
    :param params: the method's parameters (e.g. ``epsilon=0.25``).
    """
    if agent.network is None:
        raise AgentError(f"agent {agent.name} has no network to explain")
    return Explainer(agent, composite, **params).explain(obs, action).relevance

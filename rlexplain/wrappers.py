"""Relevance as a gymnasium wrapper and as an SB3 VecEnv wrapper.

``info["relevance"]`` returned by ``step(a_t)`` explains ``a_t`` on the observation ``o_t`` it was
chosen from (the observation returned by the previous ``reset``/``step``), in the layout of the
observations. ``info["action_values"]`` holds the network's outputs on ``o_t``. Nothing else about
the env changes.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rlexplain.agents import Agent
from rlexplain.catalog import DEFAULT_METHOD
from rlexplain.explainer import Explainer


class RelevanceWrapper(gym.Wrapper):
    """Adds ``info["relevance"]`` and ``info["action_values"]`` for the action just taken.

    :param env: an env yielding the agent's observations (e.g. ``agent.make_env()``).
    :param agent: the agent whose decision is explained (not necessarily the one choosing actions).
    :param composite: as for :class:`~rlexplain.explainer.Explainer`.
    """

    def __init__(self, env: gym.Env, agent: Agent, composite: Any = DEFAULT_METHOD, **kwargs: Any) -> None:
        super().__init__(env)
        agent.check_env(env)
        self.explainer = kwargs.pop("explainer", None) or Explainer(agent, composite, **kwargs)
        self._obs: np.ndarray | None = None

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._obs = obs
        return obs, info

    def step(self, action):
        if self._obs is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        explanation = self.explainer.explain(self._obs, int(action))
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info, relevance=explanation.relevance, action_values=explanation.outputs[0])
        self._obs = obs
        return obs, reward, terminated, truncated, info


try:
    from stable_baselines3.common.vec_env import VecEnvWrapper
except ImportError:  # pragma: no cover - SB3 is a dependency
    VecEnvWrapper = object  # type: ignore[misc,assignment]


class VecRelevance(VecEnvWrapper):
    """The same for an SB3 VecEnv (e.g. ``make_atari_env`` + ``VecFrameStack``): one batched explanation per step.

    After an episode ends, SB3 resets that env inside ``step``; the relevance still refers to the
    observation the action was chosen from.
    """

    def __init__(self, venv, agent: Agent, composite: Any = DEFAULT_METHOD, **kwargs: Any) -> None:
        super().__init__(venv)
        agent.check_env(venv)
        self.explainer = kwargs.pop("explainer", None) or Explainer(agent, composite, **kwargs)
        self._obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None

    def reset(self):
        self._obs = self.venv.reset()
        return self._obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)
        self.venv.step_async(actions)

    def step_wait(self):
        explanation = self.explainer.explain(self._obs, self._actions.reshape(-1))
        obs, rewards, dones, infos = self.venv.step_wait()
        for i, info in enumerate(infos):
            info["relevance"] = explanation.relevance[i]
            info["action_values"] = explanation.outputs[i]
        self._obs = obs
        return obs, rewards, dones, infos

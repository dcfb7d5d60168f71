"""The :class:`Agent`: a trained SB3 policy as explaining sees it -- a network, its actions, its env.

SB3 divides uint8 images by 255 inside ``preprocess_obs``, outside any module: :meth:`Agent.preprocess`
does that step explicitly, so the network's input is exactly what the first layer sees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rlexplain import envs
from rlexplain.errors import AgentError

#: Epsilon of a DQN agent acting stochastically: a small fixed value, never the exploration rate
#: saved in the zip (which may still be ~0.9 for a short run).
DQN_EPSILON = 0.01


def softmax(outputs: Tensor | np.ndarray) -> np.ndarray:
    """Probabilities from logits along the last axis (float64, numerically stable)."""
    return torch.softmax(torch.as_tensor(outputs, dtype=torch.float64), -1).numpy()


@dataclass
class Agent:
    """A trained SB3 Atari agent, ready to act and to be explained.

    :ivar policy: the SB3 policy.
    :ivar algorithm: ``dqn``, ``qrdqn``, ``ppo`` or ``a2c``.
    :ivar env_id: the env it was trained on, when known.
    :ivar network: (N, C, H, W) float in [0, 1] -> action outputs (Q-values, mean quantiles or
        logits). It is what every explanation explains: replace it, or edit its weights, and the
        next :func:`~rlexplain.explain` follows (an :class:`~rlexplain.Explainer` made earlier
        keeps explaining the network as it was when it was made).
    :ivar value_network: the same input -> state value (PPO/A2C), else None.
    :ivar action_names: ALE action meanings (``NOOP``, ``FIRE``, ...), or ``A0..`` when unknown.
    :ivar timesteps: training steps of the checkpoint, when known.
    :ivar path: the checkpoint file. :ivar name: a short label. :ivar card: its model card, if any.
    :ivar frame_stack: stacked frames per observation. :ivar wrapper_kwargs: AtariWrapper arguments.
    :ivar env_kwargs: arguments of ``gym.make`` (an rl-zoo ``env_kwargs.yml``).
    """

    policy: Any
    algorithm: str
    env_id: str | None
    network: nn.Module
    value_network: nn.Module | None
    action_names: list[str]
    timesteps: int | None = None
    path: Path | None = None
    name: str = "agent"
    card: dict | None = None
    frame_stack: int = envs.FRAME_STACK
    wrapper_kwargs: dict = field(default_factory=dict)
    env_kwargs: dict = field(default_factory=dict)
    _rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0), repr=False)

    # -- what it is ---------------------------------------------------------------------------
    @property
    def n_actions(self) -> int:
        return len(self.action_names)

    @property
    def output_kind(self) -> str:
        """``q_values`` (DQN, QR-DQN: mean over quantiles) or ``logits`` (PPO, A2C)."""
        return "q_values" if self.algorithm in ("dqn", "qrdqn") else "logits"

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The network's input shape without the batch axis, channels first: (4, 84, 84)."""
        return tuple(self.policy.observation_space.shape)

    @property
    def sha256(self) -> str | None:
        return file_sha256(self.path) if self.path else None

    def describe(self) -> dict:
        """What is known of the agent's origin, for summaries."""
        return {"name": self.name, "path": str(self.path) if self.path else None, "algorithm": self.algorithm,
                "env_id": self.env_id, "timesteps": self.timesteps, "sha256": self.sha256,
                "card_mean_return": (self.card or {}).get("evaluation", {}).get("mean_return")}

    # -- using it -----------------------------------------------------------------------------
    def preprocess(self, obs: np.ndarray) -> Tensor:
        """Env observations (H, W, C) or (N, H, W, C) uint8 -> network input (N, C, H, W) float32 in [0, 1].

        Channel-first observations (N, C, H, W) are accepted too.
        """
        x = torch.as_tensor(np.asarray(obs))
        c, h, w = self.input_shape
        if x.shape[-3:] == (h, w, c) and (h, w, c) != (c, h, w):
            x = x.movedim(-1, -3)
        if x.shape[-3:] != (c, h, w):
            raise AgentError(f"observation of shape {tuple(np.shape(obs))} does not fit agent {self.name}: "
                             f"expected ({h}, {w}, {c}) or (N, {h}, {w}, {c})")
        if x.ndim == 3:
            x = x[None]
        return x.to(torch.float32) / 255.0

    def to_observation_layout(self, relevance: Tensor, obs: np.ndarray) -> np.ndarray:
        """Network-layout maps (..., C, H, W) back to the layout and rank of ``obs`` (float32)."""
        r = relevance.detach()
        c, h, w = self.input_shape
        obs_shape = np.shape(obs)
        if obs_shape[-3:] == (h, w, c) and (h, w, c) != (c, h, w):
            r = r.movedim(-3, -1)
        r = r.to(torch.float32).cpu().numpy()
        return r[0] if len(obs_shape) == 3 else r

    @torch.no_grad()
    def outputs(self, obs: np.ndarray) -> np.ndarray:
        """Action outputs (N, n_actions): Q-values or logits."""
        dtype = next((p.dtype for p in self.network.parameters()), torch.float32)
        return self.network(self.preprocess(obs).to(dtype)).numpy()

    def values(self, outputs: Tensor | np.ndarray) -> np.ndarray:
        """What the value columns show: Q-values as they are (DQN), action probabilities (PPO/A2C)."""
        return np.asarray(outputs, dtype=np.float64) if self.output_kind == "q_values" else softmax(outputs)

    def choose(self, outputs: Tensor | np.ndarray, deterministic: bool = True,
               rngs: Sequence[np.random.Generator] | None = None) -> np.ndarray:
        """Actions from action outputs (N, n_actions): greedy, or the agent's stochastic policy.

        Stochastic: DQN/QR-DQN act epsilon-greedily with :data:`DQN_EPSILON`; PPO/A2C sample
        their categorical policy, drawing from the agent's generator (:meth:`seed`), or from
        ``rngs``, one generator per row: games played side by side then draw exactly what each
        would draw alone.
        """
        out = torch.as_tensor(outputs, dtype=torch.float64)
        greedy = out.argmax(-1).numpy()
        if deterministic:
            return greedy
        if rngs is not None:
            if len(rngs) != len(out):
                raise ValueError(f"{len(rngs)} generators for {len(out)} rows")
            return np.concatenate([self._sample(out[i:i + 1], greedy[i:i + 1], rng) for i, rng in enumerate(rngs)])
        return self._sample(out, greedy, self._rng)

    def _sample(self, out: Tensor, greedy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.output_kind == "q_values":
            explore = rng.random(len(greedy)) < DQN_EPSILON
            return np.where(explore, rng.integers(self.n_actions, size=len(greedy)), greedy)
        probs = softmax(out)
        u = rng.random((len(probs), 1))
        return np.minimum((probs.cumsum(-1) < u).sum(-1), self.n_actions - 1)

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray | int:
        """The agent's action for one observation (an int) or a batch (an array)."""
        actions = self.choose(self.outputs(obs), deterministic)
        return int(actions[0]) if np.ndim(obs) == 3 else actions

    def seed(self, seed: int) -> None:
        """Seed the agent's own randomness (stochastic acting)."""
        self._rng = np.random.default_rng(seed)

    def env_settings(self) -> dict:
        """Frame stack, AtariWrapper and ``gym.make`` arguments: what :func:`rlexplain.envs.make_env` needs
        to give this agent the observations it was trained on."""
        return {"frame_stack": self.frame_stack, "wrapper_kwargs": self.wrapper_kwargs, "env_kwargs": self.env_kwargs}

    def make_env(self, env_id: str | None = None, **kwargs):
        """The env this agent acts in (its env id unless given), with its frame stack and wrapper settings."""
        env_id = env_id or self.env_id
        if env_id is None:
            raise AgentError(f"agent {self.name} does not say which game it plays; pass env=")
        kwargs.setdefault("frame_stack", self.frame_stack)
        kwargs.setdefault("wrapper_kwargs", self.wrapper_kwargs)
        kwargs.setdefault("env_kwargs", self.env_kwargs)
        env = envs.make_env(env_id, **kwargs)
        self.check_env(env)
        return env

    def check_env(self, env) -> None:
        """Raise :class:`AgentError` if the env's observations or actions do not fit the agent."""
        obs_shape = tuple(env.observation_space.shape)
        c, h, w = self.input_shape
        n = getattr(env.action_space, "n", None)
        name = getattr(getattr(env, "spec", None), "id", None) or type(env).__name__
        if obs_shape not in ((h, w, c), (c, h, w)):
            raise AgentError(f"agent {self.name} expects observations ({h}, {w}, {c}) but {name} yields {obs_shape}")
        if n != self.n_actions:
            raise AgentError(f"agent {self.name} has {self.n_actions} actions but {name} has {n}: "
                             f"it was trained on another game ({self.env_id or 'unknown'})")


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

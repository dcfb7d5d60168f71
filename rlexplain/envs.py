"""Game names -> env ids, the one Atari env factory that training and explaining share, and playing games.

The preprocessing is SB3's Atari convention (the one rl-zoo trains with): the ``NoFrameskip-v4``
game, :class:`stable_baselines3.common.atari_wrappers.AtariWrapper` (no-op reset, frame skip 4 with
max-pooling, fire on reset, 84x84 grey) and a stack of the last 4 frames on the last axis, oldest
first, zero-filled after a reset exactly as SB3's ``VecFrameStack`` does.

Training sees SB3's defaults (a lost life ends an episode, rewards clipped to their sign).
Explaining plays full games (all lives, raw rewards), capped at :data:`MAX_EPISODE_STEPS` agent
steps so a weak agent cannot stall a run; every life starts with FIRE as it did in training
(:class:`FireOnLifeLoss`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from rlexplain.errors import GameError

FRAME_STACK = 4
SCREEN_SIZE = 84
FRAME_SKIP = 4
#: 30 minutes of play at 60 Hz with frame skip 4 (the usual Atari evaluation cap).
MAX_EPISODE_STEPS = 27_000
NATIVE_HEIGHT, NATIVE_WIDTH = 210, 160

_registered = False


def _register_ale() -> None:
    global _registered
    if not _registered:
        import ale_py

        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner on every env
        gym.register_envs(ale_py)
        _registered = True


def atari_games() -> list[str]:
    """Names of the ALE games that have a ``NoFrameskip-v4`` id (``"Breakout"``, ``"Pong"``, ...)."""
    _register_ale()
    return sorted(k[: -len("NoFrameskip-v4")] for k in gym.registry if k.endswith("NoFrameskip-v4"))


def resolve_env_id(name: str) -> str:
    """Map a game name (``Breakout``, ``breakout``, ``ALE/Breakout-v5``) or a full id to an env id.

    A bare game name means SB3's convention, ``<Game>NoFrameskip-v4``. A full id that is registered
    is returned unchanged.

    :raises GameError: for an unknown game, listing close matches.
    """
    _register_ale()
    if name in gym.registry:
        if "ale_py" not in str(gym.spec(name).entry_point):
            raise GameError(f"{name!r} is not an Atari game: rlexplain explains agents of ALE games "
                            f"(e.g. Breakout, Pong; see `rlexplain games`)")
        if gym.spec(name).kwargs.get("frameskip", 1) != 1:
            raise GameError(
                f"{name!r} skips frames itself; rlexplain follows SB3's Atari convention, "
                f"use {game_name(name)}NoFrameskip-v4 (or just {game_name(name)!r})"
            )
        return name
    games = atari_games()
    by_lower = {g.lower(): g for g in games}
    key = re.sub(r"^ALE/", "", name)
    key = re.sub(r"(NoFrameskip)?-v\d+$", "", key).replace("_", "").replace("-", "").lower()
    if key in by_lower:
        return f"{by_lower[key]}NoFrameskip-v4"
    close = difflib.get_close_matches(key, list(by_lower), n=4, cutoff=0.6)
    hint = f"did you mean {', '.join(by_lower[c] for c in close)}?" if close else "see `rlexplain games`."
    raise GameError(f"unknown Atari game {name!r}: {hint}")


def game_name(env_id: str) -> str:
    """``BreakoutNoFrameskip-v4`` -> ``Breakout``."""
    return re.sub(r"(NoFrameskip)?-v\d+$", "", env_id.split("/")[-1])


class FrameStack(gym.ObservationWrapper):
    """Stack the last ``n`` frames on the last axis, oldest first, zeros after reset.

    This is SB3's ``VecFrameStack(channels_order="last")`` for a single gymnasium env, so an agent
    explained here sees exactly the observations it was trained on.
    """

    def __init__(self, env: gym.Env, n: int = FRAME_STACK) -> None:
        super().__init__(env)
        h, w = env.observation_space.shape[:2]
        self.n = n
        self._stack = np.zeros((h, w, n), dtype=np.uint8)
        self.observation_space = gym.spaces.Box(0, 255, (h, w, n), dtype=np.uint8)

    def reset(self, **kwargs: Any):
        self._stack[:] = 0
        return super().reset(**kwargs)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        self._stack = np.roll(self._stack, -1, axis=-1)
        self._stack[..., -1] = observation[..., 0] if observation.ndim == 3 else observation
        return self._stack.copy()


class FireOnLifeLoss(gym.Wrapper):
    """After a lost life (not the last), play NOOP, FIRE, RIGHT for the agent, as in training.

    SB3 trains Atari agents with ``EpisodicLifeEnv`` + ``FireResetEnv``: every life starts with a
    no-op, FIRE and RIGHT that the agent never chooses, so it never learns to press FIRE itself.
    In a full game a greedy agent would then wait forever after its first lost life (seen: 27,000
    steps of nothing). This wrapper gives every life the start it had in training; the rewards of
    those steps count for the step that lost the life.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.lives = 0

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives and not (terminated or truncated):
            for forced in (0, 1, 2):  # EpisodicLifeEnv.reset's no-op, then FireResetEnv's FIRE and RIGHT
                obs, extra, terminated, truncated, info = self.env.step(forced)
                reward += extra
                if terminated or truncated:
                    break
        self.lives = lives
        return obs, reward, terminated, truncated, info


def _wrapper_kwargs(full_games: bool, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """AtariWrapper arguments: SB3's training defaults, or full games (all lives, raw rewards), then overrides."""
    return {"terminal_on_life_loss": not full_games, "clip_reward": not full_games, **(overrides or {})}


def make_env(
    env_id: str,
    *,
    seed: int | None = None,
    frame_stack: int = FRAME_STACK,
    full_games: bool = True,
    max_episode_steps: int | None = MAX_EPISODE_STEPS,
    wrapper_kwargs: dict[str, Any] | None = None,
    render_mode: str | None = None,
    fire_on_life_loss: bool | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> gym.Env:
    """The Atari env in SB3's convention, as one gymnasium env yielding (84, 84, 4) uint8.

    :param env_id: a game name or env id (see :func:`resolve_env_id`).
    :param seed: seeds the first ``reset`` and the action space.
    :param frame_stack: number of stacked frames (rl-zoo uses 4 for Atari).
    :param full_games: True for explaining/evaluation (all lives, raw rewards); False for SB3's
        training defaults (a lost life ends the episode, rewards clipped).
    :param max_episode_steps: cap in agent steps (None: no cap beyond the game's own).
    :param wrapper_kwargs: overrides for ``AtariWrapper`` (an rl-zoo config's ``env_wrapper`` args).
    :param fire_on_life_loss: in full games of FIRE games, start every life as training did
        (:class:`FireOnLifeLoss`); default: ``full_games``.
    :param env_kwargs: arguments of ``gym.make`` (an rl-zoo ``env_kwargs.yml``).
    """
    from stable_baselines3.common.atari_wrappers import AtariWrapper

    env_id = resolve_env_id(env_id)
    env = gym.make(env_id, render_mode=render_mode, **(env_kwargs or {}))
    kwargs = _wrapper_kwargs(full_games, wrapper_kwargs)
    env = AtariWrapper(env, **kwargs)
    if (full_games if fire_on_life_loss is None else fire_on_life_loss) and \
            "FIRE" in env.unwrapped.get_action_meanings() and not kwargs["terminal_on_life_loss"]:
        env = FireOnLifeLoss(env)
    if max_episode_steps:
        env = gym.wrappers.TimeLimit(env, max_episode_steps=max_episode_steps)
    if frame_stack > 1:
        env = FrameStack(env, frame_stack)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def make_vec_env(
    env_id: str,
    n_envs: int = 1,
    *,
    seed: int | None = None,
    frame_stack: int = FRAME_STACK,
    full_games: bool = False,
    max_episode_steps: int | None = None,
    wrapper_kwargs: dict[str, Any] | None = None,
    monitor_dir: str | None = None,
):
    """The same preprocessing as an SB3 ``VecEnv`` (``make_atari_env`` + ``VecFrameStack``), for training.

    Defaults are SB3's training defaults (``full_games=False``); each env is wrapped in a
    ``Monitor`` placed under ``AtariWrapper``, so logged returns are those of full games with raw
    rewards, as rl-zoo reports them.
    """
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    env_id = resolve_env_id(env_id)
    kwargs = _wrapper_kwargs(full_games, wrapper_kwargs)
    env_kwargs = {"max_episode_steps": max_episode_steps * FRAME_SKIP} if max_episode_steps else None
    venv = make_atari_env(
        env_id, n_envs=n_envs, seed=seed, wrapper_kwargs=kwargs, env_kwargs=env_kwargs, monitor_dir=monitor_dir
    )
    return VecFrameStack(venv, frame_stack) if frame_stack > 1 else venv




#: A batch policy: uint8 observations (N, 84, 84, 4) -> actions (N,).
BatchPolicy = Callable[[np.ndarray], np.ndarray]


def play_games(
    policy: BatchPolicy | None,
    env_id: str,
    n_games: int = 10,
    *,
    seed: int = 0,
    max_episode_steps: int = MAX_EPISODE_STEPS,
    frame_stack: int = FRAME_STACK,
    wrapper_kwargs: dict[str, Any] | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> list[float]:
    """Play ``n_games`` full games side by side and return their (unclipped) scores.

    Game ``k`` is seeded with ``seed + k``, so two policies evaluated with the same seed start from
    the same no-op resets. ``policy=None`` plays uniformly random actions (the usual baseline).
    """
    games = [make_env(env_id, max_episode_steps=max_episode_steps, frame_stack=frame_stack,
                      wrapper_kwargs=wrapper_kwargs, env_kwargs=env_kwargs) for _ in range(n_games)]
    rng = np.random.default_rng(seed)
    obs = np.stack([env.reset(seed=seed + k)[0] for k, env in enumerate(games)]) if games else None
    returns = np.zeros(n_games)
    running = np.ones(n_games, dtype=bool)
    while running.any():
        idx = np.flatnonzero(running)
        if policy is None:
            actions = rng.integers(games[0].action_space.n, size=len(idx))
        else:
            actions = np.asarray(policy(obs[idx])).reshape(-1)
        for i, a in zip(idx, actions):
            o, r, terminated, truncated, _ = games[i].step(int(a))
            returns[i] += r
            obs[i] = o
            if terminated or truncated:
                running[i] = False
    for env in games:
        env.close()
    return returns.tolist()

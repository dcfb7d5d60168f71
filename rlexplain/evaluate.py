"""Full-game returns of a policy, in the env that explaining uses (all lives, raw rewards, capped)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rlexplain.envs import MAX_EPISODE_STEPS, make_env

#: A batch policy: uint8 observations (N, 84, 84, 4) -> actions (N,).
BatchPolicy = Callable[[np.ndarray], np.ndarray]


def play_games(
    policy: BatchPolicy | None,
    env_id: str,
    n_games: int = 10,
    *,
    seed: int = 0,
    max_episode_steps: int = MAX_EPISODE_STEPS,
    wrapper_kwargs: dict | None = None,
) -> list[float]:
    """Play ``n_games`` full games side by side and return their (unclipped) scores.

    Game ``k`` is seeded with ``seed + k``, so two policies evaluated with the same seed start from
    the same no-op resets. ``policy=None`` plays uniformly random actions (the usual baseline).
    """
    envs = [
        make_env(env_id, max_episode_steps=max_episode_steps, wrapper_kwargs=wrapper_kwargs) for _ in range(n_games)
    ]
    rng = np.random.default_rng(seed)
    obs = np.stack([env.reset(seed=seed + k)[0] for k, env in enumerate(envs)])
    returns = np.zeros(n_games)
    running = np.ones(n_games, dtype=bool)
    while running.any():
        idx = np.flatnonzero(running)
        if policy is None:
            actions = rng.integers(envs[0].action_space.n, size=len(idx))
        else:
            actions = np.asarray(policy(obs[idx])).reshape(-1)
        for i, a in zip(idx, actions):
            o, r, terminated, truncated, _ = envs[i].step(int(a))
            returns[i] += r
            obs[i] = o
            if terminated or truncated:
                running[i] = False
    for env in envs:
        env.close()
    return returns.tolist()

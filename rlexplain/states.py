"""Fixed sets of game states: collected by playing, saved as ``states.npz``, reused across commands.

``compare`` explains every checkpoint on the same states and ``evaluate`` scores every method on
them, so that differences come from the agents or methods, not from different situations. A
states file holds, per state: ``obs`` (the agent's input, uint8 (H, W, C)), ``frames`` (the native
RGB screen), ``ram`` (the RAM of the state's stacked steps, oldest first), ``episode`` and ``step``;
and for the set: ``env_id``, ``seed``, ``reference`` (the agent whose play collected them) and ``policy``.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from rlexplain import envs
from rlexplain.agents import Agent
from rlexplain.errors import RunError
from rlexplain.files import write_atomically

PER_STATE = ("obs", "frames", "ram", "episode", "step")


def collect_states(agent: Agent, env_id: str, n_states: int, seed: int, *, policy: str = "stochastic",
                   stride: int = 4, spread: bool = False, skip_life_start: int = 0,
                   max_steps: int = envs.MAX_EPISODE_STEPS, progress: bool = True) -> dict[str, np.ndarray]:
    """Play with ``agent`` and keep ``n_states`` states.

    :param policy: ``stochastic`` (the agent's own randomness: DQN epsilon 0.01, PPO sampling) or ``greedy``.
    :param stride: keep every ``stride``-th step (when not ``spread``).
    :param spread: play whole games and keep ``n_states`` evenly spaced over them (the stride adapts, so
        memory stays bounded), instead of the first ones.
    :param skip_life_start: leave out the first steps of every life (the ball is not in play yet).
    :param max_steps: agent steps per game at most.
    """
    from tqdm.auto import tqdm

    if n_states < 1:
        raise RunError(f"need at least one state, got n_states={n_states}")
    keep: dict[str, list] = {k: [] for k in PER_STATE}
    env = agent.make_env(env_id, max_episode_steps=max_steps)
    agent.seed(seed)
    episode = 0
    obs, _ = env.reset(seed=seed)
    ale = env.unwrapped.ale
    history: list[np.ndarray] = []
    step, since_life, lives = 0, 0, ale.lives()
    bar = tqdm(total=n_states, desc="collecting states", disable=not progress, leave=False)
    while True:
        ram = ale.getRAM().copy()
        history = (history + [ram])[-agent.frame_stack:]
        if step % stride == 0 and since_life >= skip_life_start:
            stack = np.zeros((agent.frame_stack, 128), np.uint8)
            stack[agent.frame_stack - len(history):] = history
            for key, value in zip(PER_STATE, (obs, ale.getScreenRGB(), stack, episode, step)):
                keep[key].append(value)
            if spread and len(keep["obs"]) > 2 * n_states:  # bounded memory: keep every other, halve the rate
                keep = {k: v[::2] for k, v in keep.items()}
                stride *= 2
            bar.n = min(len(keep["obs"]), n_states)
            bar.refresh()
        obs, _, terminated, truncated, _ = env.step(int(agent.act(obs, deterministic=policy == "greedy")))
        step += 1
        since_life = 0 if ale.lives() < lives else since_life + 1
        lives = ale.lives()
        if terminated or truncated:
            if len(keep["obs"]) >= n_states:
                break
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
            history, step, since_life, lives = [], 0, 0, ale.lives()
        elif not spread and len(keep["obs"]) >= n_states:
            break
    bar.close()
    env.close()
    chosen = np.round(np.linspace(0, len(keep["obs"]) - 1, n_states)).astype(int) if spread else np.arange(n_states)
    return {k: np.stack(v)[chosen] for k, v in keep.items()}


def save_states(path: str | Path, states: dict[str, np.ndarray], *, env_id: str, seed: int, reference: str,
                policy: str) -> Path:
    """Write a states file atomically (compressed)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: states[k] for k in PER_STATE if k in states}, env_id=np.array(env_id),
                        seed=np.array(seed), reference=np.array(reference), policy=np.array(policy))
    return write_atomically(path, buffer.getvalue())


def load_states(path: str | Path, env_id: str | None = None) -> dict[str, np.ndarray]:
    """A states file, checked: its arrays agree in length, and (if given) it holds states of ``env_id``."""
    try:
        with np.load(path) as data:
            states = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise RunError(f"cannot read states file {path}: {exc}") from exc
    missing = {"obs", "frames", "ram", "env_id"} - set(states)
    if missing:
        raise RunError(f"{path} is not an rlexplain states file (missing {', '.join(sorted(missing))})")
    lengths = {k: len(states[k]) for k in PER_STATE if k in states}
    if len(set(lengths.values())) != 1:
        raise RunError(f"states file {path} is damaged: its arrays hold different numbers of states ({lengths})")
    if env_id is not None and str(states["env_id"]) != env_id:
        raise RunError(f"{path} holds states of {states['env_id']}, not {env_id}")
    return states

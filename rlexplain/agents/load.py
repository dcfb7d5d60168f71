"""Loading agents: SB3 zips, rl-zoo run folders, Hub repositories, bundled checkpoint series, models in memory.

``load_agent`` accepts a path to an SB3 ``.zip``, an rl-zoo run folder (``logs/dqn/BreakoutNoFrameskip-v4_1``,
whose ``config.yml`` gives the frame stack and AtariWrapper arguments), ``hf:ORG/REPO`` (an rl-zoo
Hub repository, :mod:`rlexplain.agents.hub`), or a bundled agent's name
(``breakout-dqn``, ``breakout-dqn@500000``), and returns an :class:`~rlexplain.agents.agent.Agent`
whose layer chain has been checked against the policy's own forward pass.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

from torch import nn

from rlexplain import envs
from rlexplain.agents import hub
from rlexplain.agents.agent import Agent
from rlexplain.agents.checkpoints import (
    ACTING_OBJECTS,
    build_model,
    guess_algorithm,
    policy_observation_space,
    read_zip,
    steps_from_name,
)
from rlexplain.agents.network import build_networks, network_chain, verify
from rlexplain.errors import AgentError, CheckpointError, UnsupportedLayerError


def bundled_agents_dir() -> Path:
    """Where bundled agents live: ``$RLEXPLAIN_AGENTS``, else ``agents/`` beside the package."""
    return Path(os.environ.get("RLEXPLAIN_AGENTS", Path(__file__).resolve().parents[2] / "agents"))


def from_model(model: Any, *, algorithm: str | None = None, env_id: str | None = None, name: str = "agent",
               path: Path | None = None, timesteps: int | None = None, card: dict | None = None,
               frame_stack: int = envs.FRAME_STACK, wrapper_kwargs: dict | None = None,
               env_kwargs: dict | None = None, network: nn.Module | None = None, copy_policy: bool = True) -> Agent:
    """An :class:`Agent` around an SB3 model already in memory (e.g. during or right after training).

    :param model: the SB3 model (DQN, QR-DQN, PPO, A2C).
    :param network: for architectures rlexplain cannot read: any module mapping the policy's
        observations as floats in [0, 1], channels first, to its action outputs (Q-values or logits).
        It is checked against the policy's own outputs like the chains rlexplain builds.
    :param copy_policy: explain a copy of the policy (default), so that the caller's model keeps
        training unchanged; False shares it (what :func:`load_agent` does with models it built itself).
    """
    algorithm = algorithm or guess_algorithm({"policy_class": type(model.policy)})
    policy = copy.deepcopy(model.policy) if copy_policy else model.policy
    policy.set_training_mode(False)
    if network is not None:
        if not isinstance(network, nn.Module):
            raise AgentError(f"network= must be a torch module, got {type(network).__name__}")
        network = copy.deepcopy(network).eval() if copy_policy else network.eval()
        try:
            chain, value_chain = network_chain(network), None
        except UnsupportedLayerError:
            chain, value_chain = network, None  # explained as given, if its layers have rules
    else:
        chain, value_chain = build_networks(policy, algorithm)
    verify(policy, algorithm, chain, value_chain, name)
    n = int(policy.action_space.n)
    names = _action_names(env_id, n)
    if timesteps is None:
        timesteps = int(getattr(model, "num_timesteps", 0)) or None
    return Agent(policy, algorithm, env_id, chain, value_chain, names, timesteps, path, name, card,
                 frame_stack, dict(wrapper_kwargs or {}), dict(env_kwargs or {}))


def _action_names(env_id: str | None, n: int) -> list[str]:
    if env_id is not None:
        try:
            env = envs.make_env(env_id, max_episode_steps=None, frame_stack=1)
            names = list(env.unwrapped.get_action_meanings())
            env.close()
            if len(names) == n:
                return names
        except Exception:  # unknown or unbuildable env: fall back to indices
            pass
    return [f"A{i}" for i in range(n)]


# -- finding and loading ------------------------------------------------------------------------
def checkpoint_series(folder: str | Path) -> list[Path]:
    """All ``rl_model_{N}_steps.zip`` in a folder (or its rl-zoo run folder), ordered by N."""
    folder = Path(folder)
    found = [p for p in folder.glob("rl_model_*_steps.zip") if steps_from_name(p) is not None]
    return sorted(found, key=steps_from_name)


def list_bundled() -> list[dict]:
    """The bundled agents: name, checkpoints with their steps and card returns."""
    out = []
    root = bundled_agents_dir()
    for folder in sorted(p for p in root.glob("*") if p.is_dir()):
        series = checkpoint_series(folder)
        if not series:
            continue
        checkpoints = []
        for ckpt in series:
            card = _read_card(ckpt)
            ev = (card or {}).get("evaluation", {})
            checkpoints.append({"path": str(ckpt), "timesteps": steps_from_name(ckpt),
                                "mean_return": ev.get("mean_return"), "random_mean_return": ev.get("random_mean_return"),
                                "games": ev.get("games")})
        card = _read_card(series[-1]) or {}
        out.append({"name": folder.name, "env_id": card.get("env_id"), "algorithm": card.get("algorithm"),
                    "checkpoints": checkpoints})
    return out


def default_agent_for(env_id: str) -> str | None:
    """The bundled agent a game uses by default: ``<game>-dqn``, else any bundled series trained on it."""
    game = envs.game_name(env_id).lower()
    agents = list_bundled()
    for agent in sorted(agents, key=lambda a: a["name"] != f"{game}-dqn"):
        if agent["name"] == f"{game}-dqn" or agent["env_id"] == env_id:
            return agent["name"]
    return None


def _read_card(ckpt: Path) -> dict | None:
    card = ckpt.with_suffix(".json")
    if card.is_file():
        try:
            return json.loads(card.read_text())
        except json.JSONDecodeError:
            return None
    return None


def _parse_steps(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", text.strip().replace(",", "").replace("_", ""))
    if not m:
        raise AgentError(f"cannot read training steps {text!r}: use e.g. 500000, 500k or 1M")
    return round(float(m.group(1)) * {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()])


def resolve_bundled(spec: str) -> Path | None:
    """``breakout-dqn`` -> its final checkpoint; ``breakout-dqn@500k`` -> the checkpoint of exactly 500,000 steps.

    :returns: None when no bundled agent has that name.
    :raises AgentError: no checkpoint of those steps (the message lists the available ones).
    """
    name, _, at = spec.partition("@")
    folder = bundled_agents_dir() / name
    series = checkpoint_series(folder) if name and folder.is_dir() else []
    if not series:
        return None
    if not at or at in ("final", "last"):
        return series[-1]
    target = _parse_steps(at)
    for path in series:
        if steps_from_name(path) == target:
            return path
    available = ", ".join(f"{name}@{steps_from_name(p)}" for p in series)
    raise AgentError(f"bundled agent {name} has no checkpoint at {target:,} steps: available {available}")


def _read_rlzoo_yaml(path: Path) -> dict:
    """An rl-zoo YAML file (``config.yml``, ``env_kwargs.yml``: a mapping, a list of [key, value] pairs,
    or a dumped ``OrderedDict``), or {} when it is absent."""
    if not path.is_file():
        return {}
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def ordered_dict(loader, node):  # rl-zoo dumps an OrderedDict: !!python/object/apply:collections.OrderedDict
        value = loader.construct_sequence(node, deep=True)
        return dict(value[0]) if value and isinstance(value[0], list) else {}

    Loader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", ordered_dict)
    try:
        data = yaml.load(path.read_text(), Loader=Loader)
    except yaml.YAMLError as exc:
        raise AgentError(f"cannot read rl-zoo settings {path}: {str(exc).splitlines()[0]}") from exc
    if isinstance(data, list):
        data = dict(data)
    return data if isinstance(data, dict) else {}


def rlzoo_settings(folder: Path) -> dict:
    """What an rl-zoo settings folder (``config.yml``, ``env_kwargs.yml``) says about the env:
    ``frame_stack``, ``wrapper_kwargs`` (AtariWrapper arguments) and ``env_kwargs`` (for ``gym.make``)."""
    config = _read_rlzoo_yaml(folder / "config.yml")
    return {"frame_stack": int(config.get("frame_stack") or 1) if "frame_stack" in config else envs.FRAME_STACK,
            "wrapper_kwargs": _wrapper_kwargs_from_config(config),
            "env_kwargs": _read_rlzoo_yaml(folder / "env_kwargs.yml")}


def _wrapper_kwargs_from_config(config: dict) -> dict:
    """The AtariWrapper arguments of an rl-zoo ``env_wrapper`` entry; other wrappers are reported, not applied."""
    import warnings

    wrapper = config.get("env_wrapper")
    items = wrapper if isinstance(wrapper, list) else [wrapper]
    kwargs: dict = {}
    for item in items:
        names = item.items() if isinstance(item, dict) else [(item, None)] if item else []
        for name, args in names:
            if str(name).endswith("AtariWrapper"):
                kwargs = dict(args or {})
            else:
                warnings.warn(f"rl-zoo config lists env wrapper {name}, which rlexplain does not apply; the agent "
                              f"is explained on SB3's Atari preprocessing alone", stacklevel=3)
    return kwargs


def resolve_spec(spec: str | Path) -> tuple[Path, dict]:
    """A checkpoint path and what the location says about it (env id, frame stack, wrapper, name)."""
    text = str(spec)
    p = Path(text).expanduser()
    if p.is_file():  # a zip inside an rl-zoo run folder (e.g. one of its rl_model_*_steps.zip) gets its settings
        env_dirs = [d for d in p.parent.iterdir() if d.is_dir() and (d / "config.yml").is_file()]
        return p, ({"env_id": env_dirs[0].name, **rlzoo_settings(env_dirs[0])} if env_dirs else {})
    if p.is_dir():
        env_dirs = [d for d in p.iterdir() if d.is_dir() and (d / "config.yml").is_file()]
        env_id = env_dirs[0].name if env_dirs else None
        if env_id is None:
            m = re.match(r"(.+?)(_\d+)?$", p.name)
            env_id = m.group(1) if m and m.group(1) in _known_ids() else None
        candidates = ([p / f"{env_id}.zip"] if env_id else []) + [p / "best_model.zip"]
        found = next((c for c in candidates if c.is_file()), None) or (checkpoint_series(p) or [None])[-1]
        if found is None:
            raise AgentError(f"no checkpoint in folder {p}: expected <env_id>.zip, best_model.zip or rl_model_*_steps.zip")
        meta: dict[str, Any] = {"name": p.name}
        if env_id:
            meta.update(env_id=env_id, **rlzoo_settings(p / env_id))
        return found, meta
    if hub.is_hub_spec(text):
        folder = hub.download(text)
        repo, _ = hub.parse(text)
        algorithm, env_id = hub.algorithm_and_env(repo)
        meta = {"name": text, "hub_folder": str(folder), **rlzoo_settings(folder)}
        if env_id:
            meta["env_id"] = env_id
        if algorithm:
            meta["algorithm"] = algorithm
        return hub.agent_zip(folder, repo), meta
    bundled = resolve_bundled(text) if not text.endswith(".zip") else None
    if bundled is not None:
        return bundled, {"name": f"{text.partition('@')[0]}@{steps_from_name(bundled)}"}
    names = [a["name"] for a in list_bundled()]
    raise AgentError(f"no agent {text!r}: expected a path to an SB3 .zip, an rl-zoo run folder, hf:ORG/REPO (a Hub "
                     f"repository), or a bundled agent ({', '.join(names) or 'none installed'})")


def _known_ids() -> set[str]:
    envs._register_ale()
    import gymnasium as gym

    return set(gym.registry)


def load_agent(spec: str | Path, env: Any = None, algorithm: str | None = None,
               network: nn.Module | None = None) -> Agent:
    """Load an agent: a path to an SB3 .zip, an rl-zoo run folder, or a bundled agent's name.

    :param spec: ``agents/breakout-dqn/rl_model_1000000_steps.zip``, ``logs/dqn/BreakoutNoFrameskip-v4_1``,
        ``hf:sb3/dqn-PongNoFrameskip-v4[@revision]`` (a Hub repository, downloaded into the Hub cache),
        ``breakout-dqn`` (final checkpoint) or ``breakout-dqn@500k`` (the checkpoint of exactly 500,000 steps).
    :param env: the game it should play -- a name, an env id, or a gymnasium env -- used to rebuild
        spaces that cannot be unpickled and checked against the agent before anything runs.
    :param algorithm: ``dqn``/``qrdqn``/``ppo``/``a2c``; read from the checkpoint when None.
    :param network: an explicit network for architectures rlexplain cannot read (see :func:`from_model`).
    :raises AgentError: missing/corrupt/non-SB3 files, unsupported policies, or an agent that does not fit ``env``.
    """
    path, meta = resolve_spec(spec)
    card = _read_card(path)
    try:
        data, params, variables = read_zip(path, ACTING_OBJECTS)
        algorithm = algorithm or guess_algorithm(data, path, meta.get("algorithm"))
    except CheckpointError as exc:
        raise AgentError(str(exc)) from exc
    given_env = env is not None and not isinstance(env, str)
    env_obj = env if given_env else None
    env_id = envs.resolve_env_id(env) if isinstance(env, str) else getattr(getattr(env, "spec", None), "id", None)
    env_id = env_id or meta.get("env_id") or (card or {}).get("env_id")
    frame_stack = meta.get("frame_stack", envs.FRAME_STACK)
    wrapper_kwargs = meta.get("wrapper_kwargs", {})
    env_kwargs = meta.get("env_kwargs", {})
    try:
        if env_obj is None and env_id is not None:
            env_obj = envs.make_env(env_id, frame_stack=frame_stack, wrapper_kwargs=wrapper_kwargs,
                                    env_kwargs=env_kwargs, max_episode_steps=None)
        if env_obj is not None:
            _check_fit(data, env_obj, env_id, path)
            # the env's spaces replace the pickled ones (which may not even unpickle here)
            data.update(observation_space=policy_observation_space(env_obj.observation_space),
                        action_space=env_obj.action_space)
        timesteps = steps_from_name(path) or (card or {}).get("timesteps") or int(data.get("num_timesteps", 0)) or None
        model = build_model(path, data, params, variables, algorithm)
    except CheckpointError as exc:
        raise AgentError(str(exc)) from exc
    finally:
        if env_obj is not None and not given_env:
            env_obj.close()
    name = meta.get("name") or path.stem
    if name.startswith("rl_model_"):
        name = f"{path.parent.name}@{timesteps}" if timesteps else path.parent.name
    return from_model(model, algorithm=algorithm, env_id=env_id, name=name, path=path, timesteps=timesteps,
                      card=card, frame_stack=frame_stack, wrapper_kwargs=wrapper_kwargs, env_kwargs=env_kwargs,
                      network=network, copy_policy=False)


def _check_fit(data: dict, env_obj: Any, env_id: str | None, path: Path) -> None:
    """Compare the zip's own spaces (when they unpickle here) with the env's, before building anything."""
    where = env_id or "the env"
    n, want = getattr(data.get("action_space"), "n", None), getattr(env_obj.action_space, "n", None)
    if n is not None and want is not None and int(n) != int(want):
        raise AgentError(f"agent {path.name} has {int(n)} actions but {where} has {int(want)}: "
                         f"it was trained on another game")
    space = data.get("observation_space")
    if space is not None and tuple(space.shape) != tuple(policy_observation_space(env_obj.observation_space).shape):
        raise AgentError(f"agent {path.name} expects observations {tuple(space.shape)} (channels first) but "
                         f"{where} yields {tuple(env_obj.observation_space.shape)}")

"""Trained agents: load SB3 zips, rl-zoo run folders and bundled agents as one :class:`Agent`.

An :class:`Agent` wraps an SB3 policy and exposes what explaining needs: the network from the
preprocessed input (N, 4, 84, 84) in [0, 1] to the action outputs as an explicit layer chain
(:class:`rlexplain.lrp.Chain`), built from SB3's own modules (features extractor, then ``q_net`` /
``action_net`` / ``value_net``), never a re-implementation. SB3 divides uint8 images by 255 inside
``preprocess_obs``, outside any module: :meth:`Agent.preprocess` does that step explicitly, so the
network's input is exactly what the first layer sees.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rlexplain import envs
from rlexplain.checkpoints import (
    ACTING_OBJECTS,
    CheckpointError,
    build_model,
    guess_algorithm,
    policy_observation_space,
    read_zip,
    steps_from_name,
)
from rlexplain.lrp.engine import Chain

#: Epsilon of a DQN agent acting stochastically: a small fixed value, never the exploration rate
#: saved in the zip (which may still be ~0.9 for a short run).
DQN_EPSILON = 0.01


class AgentError(ValueError):
    """An agent that cannot be found, loaded, explained or used with the given env."""


class PixelScale(nn.Module):
    """Multiplies the [0, 1] input back to [0, 255] for policies built with ``normalize_images=False``.

    An element-wise scaling: LRP passes relevance through it unchanged.
    """

    def forward(self, x: Tensor) -> Tensor:
        return x * 255.0


def bundled_agents_dir() -> Path:
    """Where bundled agents live: ``$RLEXPLAIN_AGENTS``, else ``agents/`` beside the package."""
    return Path(os.environ.get("RLEXPLAIN_AGENTS", Path(__file__).resolve().parents[1] / "agents"))


@dataclass
class Agent:
    """A trained SB3 Atari agent, ready to act and to be explained.

    :ivar policy: the SB3 policy (its modules are shared with :attr:`network`).
    :ivar algorithm: ``dqn``, ``qrdqn``, ``ppo`` or ``a2c``.
    :ivar env_id: the env it was trained on, when known.
    :ivar network: (N, C, 84, 84) float in [0, 1] -> action outputs (Q-values, mean quantiles or logits).
    :ivar value_network: the same input -> state value (PPO/A2C), else None.
    :ivar action_names: ALE action meanings (``NOOP``, ``FIRE``, ...), or ``A0..`` when unknown.
    :ivar timesteps: training steps of the checkpoint, when known.
    :ivar path: the checkpoint file. :ivar name: a short label. :ivar card: its model card, if any.
    """

    policy: Any
    algorithm: str
    env_id: str | None
    network: Chain
    value_network: Chain | None
    action_names: list[str]
    timesteps: int | None = None
    path: Path | None = None
    name: str = "agent"
    card: dict | None = None
    frame_stack: int = envs.FRAME_STACK
    wrapper_kwargs: dict = field(default_factory=dict)
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
        return _sha256(self.path) if self.path else None

    def describe(self) -> dict:
        """What is known of the agent's origin, for summaries."""
        return {"name": self.name, "path": str(self.path) if self.path else None, "algorithm": self.algorithm,
                "env_id": self.env_id, "timesteps": self.timesteps, "sha256": self.sha256,
                "card_mean_return": (self.card or {}).get("evaluation", {}).get("mean_return")}

    # -- using it -----------------------------------------------------------------------------
    def preprocess(self, obs: np.ndarray) -> Tensor:
        """Env observations (84, 84, 4) or (N, 84, 84, 4) uint8 -> network input (N, 4, 84, 84) float32 in [0, 1].

        Channel-first observations (N, 4, 84, 84) are accepted too.
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
        """Network-layout maps (..., 4, 84, 84) back to the layout and rank of ``obs`` (float32)."""
        r = relevance.detach()
        c, h, w = self.input_shape
        obs_shape = np.shape(obs)
        if obs_shape[-3:] == (h, w, c) and (h, w, c) != (c, h, w):
            r = r.movedim(-3, -1)
        r = r.to(torch.float32).numpy()
        return r[0] if len(obs_shape) == 3 else r

    @torch.no_grad()
    def outputs(self, obs: np.ndarray) -> np.ndarray:
        """Action outputs (N, n_actions): Q-values or logits."""
        return self.network(self.preprocess(obs)).numpy()

    def choose(self, outputs: Tensor | np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Actions from action outputs: greedy, or the agent's stochastic policy.

        Stochastic: DQN/QR-DQN act epsilon-greedily with :data:`DQN_EPSILON`; PPO/A2C sample
        their categorical policy.
        """
        out = torch.as_tensor(outputs, dtype=torch.float64)
        greedy = out.argmax(-1).numpy()
        if deterministic:
            return greedy
        if self.output_kind == "q_values":
            explore = self._rng.random(len(greedy)) < DQN_EPSILON
            return np.where(explore, self._rng.integers(self.n_actions, size=len(greedy)), greedy)
        probs = torch.softmax(out, -1).numpy()
        u = self._rng.random((len(probs), 1))
        return np.minimum((probs.cumsum(-1) < u).sum(-1), self.n_actions - 1)

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray | int:
        """The agent's action for one observation (an int) or a batch (an array)."""
        actions = self.choose(self.outputs(obs), deterministic)
        return int(actions[0]) if np.ndim(obs) == 3 else actions

    def seed(self, seed: int) -> None:
        """Seed the agent's own randomness (stochastic acting)."""
        self._rng = np.random.default_rng(seed)

    def make_env(self, env_id: str | None = None, **kwargs):
        """The env this agent acts in (its env id unless given), with its frame stack and wrapper settings."""
        env_id = env_id or self.env_id
        if env_id is None:
            raise AgentError(f"agent {self.name} does not say which game it plays; pass env=")
        kwargs.setdefault("frame_stack", self.frame_stack)
        kwargs.setdefault("wrapper_kwargs", self.wrapper_kwargs)
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


# -- building the network chains ----------------------------------------------------------------
def _extractor_layers(extractor: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    from stable_baselines3.common.torch_layers import FlattenExtractor, NatureCNN

    if isinstance(extractor, NatureCNN):  # forward: linear(cnn(x))
        return Chain.of(extractor.cnn, f"{prefix}.cnn").named_layers() + \
            Chain.of(extractor.linear, f"{prefix}.linear").named_layers()
    if isinstance(extractor, FlattenExtractor):
        return [(f"{prefix}.flatten", extractor.flatten)]
    if isinstance(extractor, nn.Sequential):
        return Chain.of(extractor, prefix).named_layers()
    raise AgentError(f"unsupported features extractor {prefix} ({type(extractor).__name__}): rlexplain explains "
                     f"NatureCNN, FlattenExtractor and nn.Sequential extractors")


def _mean_over_quantiles(layer: nn.Linear, n_quantiles: int, n_actions: int) -> nn.Linear:
    """QR-DQN's last layer followed by the mean over quantiles, folded into one Linear layer (exact)."""
    merged = nn.Linear(layer.in_features, n_actions, bias=layer.bias is not None)
    with torch.no_grad():
        merged.weight.copy_(layer.weight.view(n_quantiles, n_actions, -1).mean(0))
        if layer.bias is not None:
            merged.bias.copy_(layer.bias.view(n_quantiles, n_actions).mean(0))
    return merged


def build_networks(policy: Any, algorithm: str) -> tuple[Chain, Chain | None]:
    """(action network, value network or None) as explicit chains over the policy's own modules."""
    head: list[tuple[str, nn.Module]] = []
    if getattr(policy, "normalize_images", True) is False:
        head.append(("preprocess.scale_255", PixelScale()))
    if algorithm == "dqn":
        net = policy.q_net
        trunk = _extractor_layers(net.features_extractor, "q_net.features_extractor")
        return Chain(head + trunk + Chain.of(net.q_net, "q_net.q_net").named_layers()), None
    if algorithm == "qrdqn":
        net = policy.quantile_net
        trunk = _extractor_layers(net.features_extractor, "quantile_net.features_extractor")
        layers = Chain.of(net.quantile_net, "quantile_net.quantile_net").named_layers()
        path, last = layers[-1]
        if not isinstance(last, nn.Linear):
            raise AgentError(f"unsupported QR-DQN head {path} ({type(last).__name__})")
        layers[-1] = (f"{path}+mean_over_quantiles", _mean_over_quantiles(last, net.n_quantiles, int(net.action_space.n)))
        return Chain(head + trunk + layers), None
    pi_extractor = getattr(policy, "pi_features_extractor", policy.features_extractor)
    vf_extractor = getattr(policy, "vf_features_extractor", policy.features_extractor)
    pi_name = "features_extractor" if pi_extractor is policy.features_extractor else "pi_features_extractor"
    vf_name = "features_extractor" if vf_extractor is policy.features_extractor else "vf_features_extractor"
    actions = Chain(head + _extractor_layers(pi_extractor, pi_name)
                    + Chain.of(policy.mlp_extractor.policy_net, "mlp_extractor.policy_net").named_layers()
                    + [("action_net", policy.action_net)])
    value = Chain(head + _extractor_layers(vf_extractor, vf_name)
                  + Chain.of(policy.mlp_extractor.value_net, "mlp_extractor.value_net").named_layers()
                  + [("value_net", policy.value_net)])
    return actions, value


@torch.no_grad()
def _policy_outputs(policy: Any, algorithm: str, raw: Tensor) -> tuple[Tensor, Tensor | None]:
    """The policy's own outputs on raw (0..255) channel-first observations, through SB3's code path."""
    if algorithm == "dqn":
        return policy.q_net(raw), None
    if algorithm == "qrdqn":
        return policy.quantile_net(raw).mean(1), None
    return policy.get_distribution(raw).distribution.logits, policy.predict_values(raw)


def _verify(policy: Any, algorithm: str, network: Chain, value_network: Chain | None, name: str) -> None:
    """Check that the chains reproduce the policy's own forward pass (guards against unknown architectures)."""
    shape = tuple(policy.observation_space.shape)
    raw = torch.randint(0, 256, (2, *shape), generator=torch.Generator().manual_seed(0)).float()
    expected, expected_value = _policy_outputs(policy, algorithm, raw)
    got = network(raw / 255.0)
    if algorithm in ("ppo", "a2c"):  # SB3's Categorical keeps normalised logits (log-probabilities)
        got = torch.log_softmax(got, -1)
    pairs = [(got, expected, "action outputs")]
    if value_network is not None:
        pairs.append((value_network(raw / 255.0), expected_value, "value"))
    for got, want, what in pairs:
        with torch.no_grad():
            if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
                raise AgentError(f"agent {name}: rlexplain's layer chain does not reproduce the policy's {what}; "
                                 f"its architecture ({type(policy).__name__}) is not supported")


def from_model(model: Any, *, algorithm: str | None = None, env_id: str | None = None, name: str = "agent",
               path: Path | None = None, timesteps: int | None = None, card: dict | None = None,
               frame_stack: int = envs.FRAME_STACK, wrapper_kwargs: dict | None = None) -> Agent:
    """An :class:`Agent` around an SB3 model already in memory (e.g. right after training)."""
    algorithm = algorithm or guess_algorithm({"policy_class": type(model.policy)})
    policy = model.policy
    policy.set_training_mode(False)
    for p in policy.parameters():
        p.requires_grad_(False)
    network, value_network = build_networks(policy, algorithm)
    _verify(policy, algorithm, network, value_network, name)
    n = int(policy.action_space.n)
    names = _action_names(env_id, n)
    if timesteps is None:
        timesteps = int(getattr(model, "num_timesteps", 0)) or None
    return Agent(policy, algorithm, env_id, network, value_network, names, timesteps, path, name, card,
                 frame_stack, dict(wrapper_kwargs or {}))


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
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", text.strip())
    if not m:
        raise AgentError(f"cannot read training steps {text!r}: use e.g. 100k, 1.2M or 250000")
    return int(float(m.group(1)) * {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()])


def resolve_bundled(spec: str) -> Path | None:
    """``breakout-dqn`` -> its final checkpoint; ``breakout-dqn@100k`` -> the one nearest 100k steps."""
    name, _, at = spec.partition("@")
    folder = bundled_agents_dir() / name
    series = checkpoint_series(folder) if folder.is_dir() else []
    if not series:
        return None
    if not at or at in ("final", "last"):
        return series[-1]
    target = _parse_steps(at)
    return min(series, key=lambda p: abs(steps_from_name(p) - target))


def _read_rlzoo_config(run: Path, env_id: str) -> dict:
    """rl-zoo's ``<run>/<env_id>/config.yml`` (a list of [key, value] pairs or a mapping), or {}."""
    path = run / env_id / "config.yml"
    if not path.is_file():
        return {}
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def ordered_dict(loader, node):  # rl-zoo dumps an OrderedDict: !!python/object/apply:collections.OrderedDict
        value = loader.construct_sequence(node, deep=True)
        return dict(value[0]) if value and isinstance(value[0], list) else {}

    Loader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", ordered_dict)
    data = yaml.load(path.read_text(), Loader=Loader)
    if isinstance(data, list):
        data = dict(data)
    return data or {}


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
    if p.is_file():
        return p, {}
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
            config = _read_rlzoo_config(p, env_id)
            meta.update(env_id=env_id, frame_stack=int(config.get("frame_stack", envs.FRAME_STACK)),
                        wrapper_kwargs=_wrapper_kwargs_from_config(config))
        return found, meta
    bundled = resolve_bundled(text) if not text.endswith(".zip") else None
    if bundled is not None:
        return bundled, {"name": f"{text.partition('@')[0]}@{steps_from_name(bundled)}"}
    names = [a["name"] for a in list_bundled()]
    raise AgentError(f"no agent {text!r}: expected a path to an SB3 .zip, an rl-zoo run folder, or a bundled agent "
                     f"({', '.join(names) or 'none installed'})")


def _known_ids() -> set[str]:
    envs._register_ale()
    import gymnasium as gym

    return set(gym.registry)


def load_agent(spec: str | Path, env: Any = None, algorithm: str | None = None) -> Agent:
    """Load an agent: a path to an SB3 .zip, an rl-zoo run folder, or a bundled agent's name.

    :param spec: ``agents/breakout-dqn/rl_model_1000000_steps.zip``, ``logs/dqn/BreakoutNoFrameskip-v4_1``,
        ``breakout-dqn`` (final checkpoint) or ``breakout-dqn@100k`` (the checkpoint nearest 100k steps).
    :param env: the game it should play -- a name, an env id, or a gymnasium env -- used to rebuild
        spaces that cannot be unpickled and checked against the agent before anything runs.
    :param algorithm: ``dqn``/``qrdqn``/``ppo``/``a2c``; read from the checkpoint when None.
    :raises AgentError: missing/corrupt/non-SB3 files, or an agent that does not fit ``env``.
    """
    path, meta = resolve_spec(spec)
    card = _read_card(path)
    try:
        data, params, variables = read_zip(path, ACTING_OBJECTS)
        algorithm = algorithm or guess_algorithm(data, path)
    except CheckpointError as exc:
        raise AgentError(str(exc)) from exc
    given_env = env is not None and not isinstance(env, str)
    env_obj = env if given_env else None
    env_id = envs.resolve_env_id(env) if isinstance(env, str) else getattr(getattr(env_obj, "spec", None), "id", None)
    env_id = env_id or meta.get("env_id") or (card or {}).get("env_id")
    frame_stack = meta.get("frame_stack", envs.FRAME_STACK)
    wrapper_kwargs = meta.get("wrapper_kwargs", {})
    if env_obj is None and env_id is not None:
        env_obj = envs.make_env(env_id, frame_stack=frame_stack, wrapper_kwargs=wrapper_kwargs, max_episode_steps=None)
    try:
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
                      card=card, frame_stack=frame_stack, wrapper_kwargs=wrapper_kwargs)


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

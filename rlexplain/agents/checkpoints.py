"""Reading and writing SB3 checkpoints robustly: light saves, and loads across library versions.

SB3 stores a model as a zip of ``data`` (JSON, with cloudpickled spaces and schedules),
``policy.pth`` (state dict), ``policy.optimizer.pth`` and ``pytorch_variables.pth``. Two things
break plain ``ALGO.load`` in practice, and both are handled here:

* cloudpickled objects written under another numpy/Python (``No module named
  'numpy._core.numeric'`` when numpy 2 wrote it and numpy 1 reads, and the reverse) -- like
  rl-zoo, we replace schedules with constants through ``custom_objects`` and rebuild the spaces
  from the env the agent is meant for;
* our *light* checkpoints, which omit the optimizer state and DQN's target network (a copy of the
  online network at save time up to ``target_update_interval`` steps; rebuilt from it on load).
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from rlexplain.errors import CheckpointError
from rlexplain.files import write_atomically

ALGORITHMS = ("dqn", "qrdqn", "ppo", "a2c")
_STEPS_RE = re.compile(r"rl_model_(\d+)_steps\.zip$")


def algorithm_class(name: str):
    """SB3 (or sb3-contrib) algorithm class for ``dqn``/``ppo``/``a2c``/``qrdqn``."""
    name = name.lower().replace("-", "").replace("_", "")
    if name in ("dqn", "ppo", "a2c"):
        import stable_baselines3

        return getattr(stable_baselines3, name.upper())
    if name == "qrdqn":
        try:
            from sb3_contrib import QRDQN
        except ImportError as exc:
            raise CheckpointError("QR-DQN checkpoints need sb3-contrib: pip install sb3-contrib") from exc
        return QRDQN
    raise CheckpointError(f"unsupported algorithm {name!r}: expected one of {', '.join(ALGORITHMS)}")


def steps_from_name(path: str | Path) -> int | None:
    """``rl_model_250000_steps.zip`` -> 250000 (rl-zoo's CheckpointCallback naming), else None."""
    m = _STEPS_RE.search(Path(path).name)
    return int(m.group(1)) if m else None


def save_checkpoint(model, path: str | Path, light: bool = False) -> Path:
    """Save an SB3 model; ``light`` drops the optimizer state and DQN's target network.

    A light checkpoint is about a quarter of a full DQN one. :func:`load_model` restores it
    (target network = online network, fresh optimizer), which is exact for explaining and a
    documented approximation for resuming training.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    model.save(buffer)
    write_atomically(path, _strip(buffer.getvalue()) if light else buffer.getvalue())
    return path


def strip_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Write a light copy of the SB3 zip ``src`` to ``dst`` (see :func:`save_checkpoint`)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(dst, _strip(Path(src).read_bytes()))
    return dst


def _strip(zip_bytes: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if item.filename == "policy.optimizer.pth":
                continue
            payload = src.read(item.filename)
            if item.filename == "policy.pth":
                state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
                state = {k: v for k, v in state.items() if not _is_target_key(k)}
                buffer = io.BytesIO()
                torch.save(state, buffer)
                payload = buffer.getvalue()
            dst.writestr(item.filename, payload)
    return out.getvalue()


def policy_observation_space(space):
    """The observation space as SB3 policies store it: channel-last images are transposed.

    SB3 wraps image envs in ``VecTransposeImage`` (HWC -> CHW) before building the policy, so a
    zip stores (4, 84, 84) for an env yielding (84, 84, 4).
    """
    from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
    from stable_baselines3.common.vec_env import VecTransposeImage

    if is_image_space(space, check_channels=False) and not is_image_space_channels_first(space):
        return VecTransposeImage.transpose_space(space)
    return space


def _is_target_key(key: str) -> bool:
    return key.startswith(("q_net_target.", "quantile_net_target."))


def _complete_state(state: dict[str, torch.Tensor], policy_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fill a light checkpoint's missing target-network weights from the online network."""
    state = dict(state)
    for key in policy_state:
        if key not in state and _is_target_key(key):
            online = key.replace("_target.", ".", 1)
            if online in state:
                state[key] = state[online].clone()
    return state


def read_zip(path: str | Path, custom_objects: dict[str, Any] | None = None):
    """``(data, params, pytorch_variables)`` of an SB3 zip, or a one-line :class:`CheckpointError`."""
    from stable_baselines3.common.save_util import load_from_zip_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not an SB3 checkpoint (not a zip file; SB3 saves models as .zip)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bad = archive.testzip()
        if bad is not None:
            raise CheckpointError(f"{path} is corrupt (bad CRC in {bad}); re-save or re-download it")
        if "data" not in names or "policy.pth" not in names:
            raise CheckpointError(f"{path} is a zip but not an SB3 checkpoint (no 'data' and 'policy.pth' inside)")
        # SB3 only tolerates some unpickling errors; a zip from another numpy raises ModuleNotFoundError.
        # Replace every object that cannot be unpickled here (rl-zoo's custom_objects remedy).
        custom_objects = dict(custom_objects or {})
        for key in _unreadable_objects(path):
            custom_objects.setdefault(key, None)
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Could not deserialize object")
            data, params, variables = load_from_zip_file(path, device="cpu", custom_objects=custom_objects)
        data = {k: v for k, v in data.items() if v is not None or k not in custom_objects}
    except CheckpointError:
        raise
    except Exception as exc:  # zip, json, torch errors: all mean the file is unusable
        raise CheckpointError(f"{path} is corrupt or unreadable ({type(exc).__name__}: {exc})") from exc
    if not data or not params or "policy" not in params:
        raise CheckpointError(f"{path} holds no SB3 policy parameters")
    return data, params, variables


def _unreadable_objects(path: Path) -> list[str]:
    """Keys of the zip's ``data`` whose cloudpickled value cannot be unpickled in this environment."""
    import base64
    import json

    import cloudpickle

    with zipfile.ZipFile(path) as archive:
        data = json.loads(archive.read("data"))
    bad = []
    for key, item in data.items():
        if isinstance(item, dict) and ":serialized:" in item:
            try:
                cloudpickle.loads(base64.b64decode(item[":serialized:"].encode()))
            except Exception:
                bad.append(key)
    return bad


def guess_algorithm(data: dict[str, Any], path: str | Path = "", hint: str | None = None) -> str:
    """Which algorithm saved a zip: from the pickled policy class, else ``hint`` (e.g. an rl-zoo
    repository's name), else from the saved hyperparameters."""
    policy_class = data.get("policy_class")
    module = getattr(policy_class, "__module__", "") or ""
    for algo in ("qrdqn", "dqn", "ppo", "a2c"):
        if f".{algo}." in module or module.endswith(f".{algo}"):
            return algo
    if hint in ALGORITHMS:
        return hint
    if hint is not None:
        raise CheckpointError(f"{path} was saved by {hint.upper()}, which rlexplain does not explain: expected one "
                              f"of {', '.join(ALGORITHMS)} (discrete-action Atari agents)")
    if "exploration_final_eps" in data:
        return "qrdqn" if "n_quantiles" in str(data.get("policy_kwargs", "")) else "dqn"
    if "clip_range" in data or "n_epochs" in data:
        return "ppo"
    if "ent_coef" in data:
        return "a2c"
    raise CheckpointError(f"cannot tell which algorithm saved {path}; pass algo='dqn'|'ppo'|'a2c'|'qrdqn'")


#: What an agent that only acts needs instead of the saved schedules (rl-zoo's enjoy does the same).
ACTING_OBJECTS: dict[str, Any] = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0,
                                  "exploration_schedule": lambda _: 0.0}


def load_model(
    path: str | Path,
    env=None,
    algo: str | None = None,
    *,
    for_training: bool = False,
    observation_space=None,
    action_space=None,
):
    """Load an SB3 model from ``path`` the way SB3 does, but robust to version drift and light saves.

    :param env: a VecEnv/gym env to attach (needed to resume training).
    :param algo: ``dqn``/``ppo``/``a2c``/``qrdqn``; guessed from the zip when None.
    :param for_training: keep the saved schedules (resume); otherwise they are replaced by
        constants (:data:`ACTING_OBJECTS`), since an agent that only acts never needs them.
    :param observation_space, action_space: spaces to use instead of the pickled ones (taken from
        ``env`` when given); required when the zip's spaces cannot be unpickled here.
    """
    if env is not None:
        observation_space = observation_space or env.observation_space
        action_space = action_space or env.action_space
    custom: dict[str, Any] = {} if for_training else dict(ACTING_OBJECTS)
    if observation_space is not None:
        custom.update(observation_space=policy_observation_space(observation_space), action_space=action_space)
    data, params, variables = read_zip(path, custom)
    return build_model(path, data, params, variables, algo, env=env, for_training=for_training)


def build_model(path: str | Path, data: dict[str, Any], params: dict[str, Any], variables: dict[str, Any] | None,
                algo: str | None = None, *, env=None, for_training: bool = False):
    """The SB3 model of an already read zip (:func:`read_zip`); ``data`` is modified."""
    for key in ("observation_space", "action_space"):
        if key not in data:
            raise CheckpointError(
                f"{path}: its {key} could not be unpickled with this numpy/gymnasium; pass env= so it can be rebuilt"
            )
    cls = algorithm_class(algo or guess_algorithm(data, path))
    kwargs = dict(data.get("policy_kwargs") or {})
    kwargs.pop("device", None)
    data["policy_kwargs"] = kwargs
    if env is not None:
        data.pop("_last_obs", None)  # force a reset before training, as SB3 does
        env = cls._wrap_env(env, data.get("verbose", 0))
        data["n_envs"] = env.num_envs
    elif "env" in data:
        data.pop("env")
    try:
        model = cls(policy=data["policy_class"], env=env, device="cpu", _init_setup_model=False)
        model.__dict__.update(data)
        if not for_training:
            model.buffer_size = 1  # never allocate a replay buffer for an agent that only acts
        model._setup_model()
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot rebuild its {cls.__name__} policy ({type(exc).__name__}: {exc})") from exc
    policy_state = model.policy.state_dict()
    state = _complete_state(params["policy"], policy_state)
    missing = sorted(set(policy_state) - set(state))
    unexpected = sorted(set(state) - set(policy_state))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: parameters do not fit a {cls.__name__} {type(model.policy).__name__} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    try:
        model.policy.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: parameter shapes do not fit the policy ({str(exc).splitlines()[0]})") from exc
    if "policy.optimizer" in params:
        try:
            model.policy.optimizer.load_state_dict(params["policy.optimizer"])
        except Exception:
            pass  # optimizer state from another torch version: a fresh optimizer is fine for acting
    for name, value in (variables or {}).items():  # e.g. SAC's log_ent_coef; none for DQN/PPO
        obj = model
        *parents, leaf = name.split(".")
        for p in parents:
            obj = getattr(obj, p)
        getattr(obj, leaf).data = value.data
    return model

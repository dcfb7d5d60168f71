"""Agents from the Hugging Face Hub: ``hf:ORG/REPO[@revision]``, loaded as rl-zoo run folders.

The RL Zoo publishes its trained agents as Hub repositories named ``<algo>-<EnvId>`` (organisation
``sb3``: ``sb3/dqn-PongNoFrameskip-v4``, ``sb3/ppo-BreakoutNoFrameskip-v4``, ...), holding
``<algo>-<EnvId>.zip`` (the SB3 model), ``config.yml`` (hyperparameters, with ``frame_stack`` and
``env_wrapper``) and ``env_kwargs.yml``. :func:`download` fetches those files with
``huggingface_hub`` into its standard cache (``$HF_HOME/hub``, shared with every other Hub tool),
and works offline from that cache with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import re
from pathlib import Path

from rlexplain.errors import AgentError

PREFIX = "hf:"
#: The files of an rl-zoo Hub repository that loading needs (not its videos or evaluation logs).
AGENT_FILES = ["*.zip", "config.yml", "env_kwargs.yml"]
#: Files in rl-zoo repositories that are zips but not the agent.
NOT_AGENTS = {"train_eval_metrics.zip"}
#: Atari agents the RL Zoo trained (its ``benchmark.md``) and published as ``sb3/<algo>-<Game>NoFrameskip-v4``.
RL_ZOO_ATARI: dict[str, tuple[str, ...]] = {
    game: ("dqn", "qrdqn", "ppo", "a2c")
    for game in ("Asteroids", "BeamRider", "Breakout", "Enduro", "Pong", "Qbert", "RoadRunner", "Seaquest",
                 "SpaceInvaders")
}
_REPO = re.compile(r"^(?P<org>[\w.-]+)/(?P<name>[\w.-]+)$")


def is_hub_spec(spec: object) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def hub_repos(game: str) -> list[str]:
    """The RL Zoo's Hub repositories for a game (``Pong`` -> ``sb3/a2c-PongNoFrameskip-v4``, ...), or []."""
    return [f"sb3/{algo}-{game}NoFrameskip-v4" for algo in RL_ZOO_ATARI.get(game, ())]


def parse(spec: str) -> tuple[str, str | None]:
    """``hf:ORG/REPO[@revision]`` -> (``ORG/REPO``, revision or None)."""
    repo, _, revision = spec[len(PREFIX):].partition("@")
    if not _REPO.match(repo):
        raise AgentError(f"cannot read Hub agent {spec!r}: expected hf:ORG/REPO or hf:ORG/REPO@revision, "
                         f"e.g. hf:sb3/dqn-PongNoFrameskip-v4")
    return repo, revision or None


def algorithm_and_env(repo: str) -> tuple[str | None, str | None]:
    """What an rl-zoo repository name says: ``sb3/dqn-PongNoFrameskip-v4`` -> (``dqn``, ``PongNoFrameskip-v4``)."""
    m = re.match(r"^(?P<algo>[a-z0-9]+)-(?P<env>.+)$", repo.split("/", 1)[1])
    return (m.group("algo"), m.group("env")) if m else (None, None)


def download(spec: str) -> Path:
    """The local folder (a snapshot in the Hub cache) holding the agent files of ``hf:ORG/REPO[@revision]``.

    :raises AgentError: in one line, for a repository or revision that does not exist, a Hub that
        cannot be reached without the files cached, or a missing ``huggingface_hub``.
    """
    repo, revision = parse(spec)
    try:
        import huggingface_hub
        from huggingface_hub import errors
    except ImportError as exc:
        raise AgentError("hf: agents need huggingface_hub: pip install huggingface_hub") from exc
    try:
        folder = huggingface_hub.snapshot_download(repo, revision=revision, allow_patterns=AGENT_FILES)
    except errors.RevisionNotFoundError as exc:
        raise AgentError(f"Hub repository {repo} has no revision {revision!r}") from exc
    except (errors.RepositoryNotFoundError, errors.GatedRepoError) as exc:
        raise AgentError(f"no Hub repository {repo} (or it is private or gated: log in with `hf auth login`); "
                         f"the RL Zoo's agents are named like sb3/dqn-PongNoFrameskip-v4") from exc
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled) as exc:
        raise AgentError(f"cannot reach the Hub for {repo}: pass a local path, or use a filled cache with "
                         f"HF_HUB_OFFLINE=1") from exc
    except errors.HfHubHTTPError as exc:
        raise AgentError(f"the Hub refused {repo} ({str(exc).splitlines()[0]})") from exc
    return Path(folder)


def agent_zip(folder: Path, repo: str) -> Path:
    """The SB3 zip of a downloaded repository: ``<algo>-<EnvId>.zip``, else its only other zip."""
    named = folder / f"{repo.split('/', 1)[1]}.zip"
    if named.is_file():
        return named
    zips = sorted(p for p in folder.glob("*.zip") if p.name not in NOT_AGENTS)
    if len(zips) == 1:
        return zips[0]
    if not zips:
        raise AgentError(f"Hub repository {repo} holds no SB3 agent zip (expected {named.name})")
    raise AgentError(f"Hub repository {repo} holds several zips ({', '.join(p.name for p in zips)}) and none "
                     f"named {named.name}; download it and pass the zip's path")

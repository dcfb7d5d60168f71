"""Trained agents: loading (zips, rl-zoo folders, bundled series), the SB3 -> layer chain, and the Agent."""

from rlexplain.agents.agent import DQN_EPSILON, Agent, file_sha256, softmax
from rlexplain.agents.load import (
    bundled_agents_dir,
    checkpoint_series,
    default_agent_for,
    from_model,
    list_bundled,
    load_agent,
    resolve_bundled,
    resolve_spec,
)
from rlexplain.agents.network import build_networks, network_chain

__all__ = [
    "DQN_EPSILON", "Agent", "build_networks", "bundled_agents_dir", "checkpoint_series", "default_agent_for",
    "file_sha256", "from_model", "list_bundled", "load_agent", "network_chain", "resolve_bundled", "resolve_spec",
    "softmax",
]

"""rlexplain: Layer-wise Relevance Propagation for trained Atari reinforcement-learning agents.

The public names below are imported on first use, so that ``import rlexplain`` (and ``rlexplain --help``)
stays fast: torch and the Atari emulator load only when an agent or an explanation is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Agent": "rlexplain.agents", "from_model": "rlexplain.agents", "load_agent": "rlexplain.agents",
    "AgentError": "rlexplain.errors", "RLExplainError": "rlexplain.errors",
    "METHODS": "rlexplain.explainer", "Explainer": "rlexplain.explainer", "Explanation": "rlexplain.explainer",
    "explain": "rlexplain.explainer", "parse_target": "rlexplain.explainer",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rlexplain' has no attribute {name!r}")

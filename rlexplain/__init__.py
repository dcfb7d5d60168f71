"""rlexplain: Layer-wise Relevance Propagation for trained Atari reinforcement-learning agents."""

from rlexplain.agents import Agent, from_model, load_agent
from rlexplain.errors import AgentError, RLExplainError
from rlexplain.explain import METHODS, Explainer, Explanation, explain, parse_target

__version__ = "0.1.0"
__all__ = ["METHODS", "Agent", "AgentError", "Explainer", "Explanation", "RLExplainError", "explain", "from_model",
           "load_agent", "parse_target", "__version__"]

"""rlexplain: Layer-wise Relevance Propagation for trained Atari reinforcement-learning agents."""

from rlexplain.agents import Agent, AgentError, load_agent
from rlexplain.explain import Explainer, Explanation, explain

__version__ = "0.1.0"
__all__ = ["Agent", "AgentError", "Explainer", "Explanation", "explain", "load_agent", "__version__"]

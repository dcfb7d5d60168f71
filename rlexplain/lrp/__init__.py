"""Layer-wise relevance propagation: rules, composites and the engine."""

from rlexplain.lrp.composites import COMPOSITES, METHODS, Composite, UnsupportedLayerError, get_composite
from rlexplain.lrp.engine import LRP, Chain, Gradient, Trace, make_method
from rlexplain.lrp.rules import AlphaBeta, Epsilon, Flat, Gamma, Pass, Rule, WSquare, ZBox, ZPlus, stabilize

__all__ = [
    "COMPOSITES", "METHODS", "Composite", "UnsupportedLayerError", "get_composite", "LRP", "Chain", "Gradient",
    "Trace", "make_method", "AlphaBeta", "Epsilon", "Flat", "Gamma", "Pass", "Rule", "WSquare", "ZBox", "ZPlus",
    "stabilize",
]

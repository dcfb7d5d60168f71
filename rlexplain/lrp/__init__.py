"""Layer-wise relevance propagation: rules, composites and the engine."""

from rlexplain.lrp.composites import COMPOSITES, Composite, get_composite
from rlexplain.lrp.engine import LRP, Chain, Trace, snapshot
from rlexplain.lrp.rules import (
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Norm,
    Pass,
    Rule,
    WinnerTakesAll,
    WSquare,
    ZBox,
    ZPlus,
    stabilize,
)

__all__ = [
    "COMPOSITES", "Composite", "get_composite", "LRP", "Chain", "Trace", "snapshot", "AlphaBeta", "Epsilon", "Flat",
    "Gamma", "Norm", "Pass", "Rule", "WinnerTakesAll", "WSquare", "ZBox", "ZPlus", "stabilize",
]

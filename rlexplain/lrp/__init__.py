"""Layer-wise relevance propagation: rules, composites and the engine."""

from rlexplain.lrp.canonizers import Scale, canonize
from rlexplain.lrp.chain import Chain, layers_of
from rlexplain.lrp.composites import COMPOSITES, Composite, get_composite
from rlexplain.lrp.engine import LRP, Trace, snapshot
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
    "COMPOSITES", "Composite", "get_composite", "LRP", "Chain", "Scale", "canonize", "layers_of", "Trace", "snapshot",
    "AlphaBeta", "Epsilon", "Flat", "Gamma", "Norm", "Pass", "Rule", "WinnerTakesAll", "WSquare", "ZBox", "ZPlus", "stabilize",
]

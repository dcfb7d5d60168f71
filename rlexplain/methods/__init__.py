"""Explanation methods other than LRP (which lives in :mod:`rlexplain.lrp`), behind the same interface.

A method has ``forward(x) -> Trace`` (one pass that keeps what it needs) and
``relevance(trace, weights) -> Tensor`` (the map of the explained outputs ``weights . outputs``),
and ``describe()`` for summaries. :mod:`rlexplain.explainer` keeps the registry of all methods.
"""

from rlexplain.methods.baseline import RandomMap
from rlexplain.methods.gradient import Gradient, IntegratedGradients, SmoothGrad
from rlexplain.methods.occlusion import Occlusion, gaussian_blur

__all__ = ["Gradient", "IntegratedGradients", "Occlusion", "RandomMap", "SmoothGrad", "gaussian_blur"]

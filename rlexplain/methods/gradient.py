"""The gradient (Simonyan et al. 2014) and gradient x input (Shrikumar et al. 2016) of the explained output.

For ``weights . outputs`` the map is ``d(weights . f(x)) / dx`` (``gradient``), or that times ``x``
(``gradient_x_input``); computed with autograd on a frozen copy of the network, so the caller's
model is never touched.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rlexplain.lrp.engine import Trace, dtype_of, snapshot


class Gradient:
    """The input gradient of ``weights . outputs``, optionally times the input.

    :param network: the network (explained as it is now: the method keeps a copy).
    :param times_input: False for ``gradient``, True for ``gradient_x_input``.
    :param dtype: the working precision; None keeps the network's.
    """

    def __init__(self, network: nn.Module, times_input: bool = False, dtype: torch.dtype | None = None) -> None:
        self.network = snapshot(network, dtype)
        self.times_input = times_input
        self.dtype = dtype or dtype_of(self.network)

    def forward(self, x: Tensor) -> Trace:
        x = x.detach().to(self.dtype).requires_grad_(True)
        with torch.enable_grad():
            out = self.network(x)
        return Trace(out, [x], [])

    def relevance(self, trace: Trace, weights: Tensor) -> Tensor:
        x, out = trace.inputs[0], trace.outputs
        weights = weights.to(out.dtype)
        if weights.ndim == 2:
            grads = torch.autograd.grad(out, x, weights, retain_graph=True)[0]
        else:
            grads = torch.stack([torch.autograd.grad(out, x, weights[:, j], retain_graph=True)[0]
                                 for j in range(weights.shape[1])], 1)
            x = x[:, None]
        return (grads * x if self.times_input else grads).detach()

    def __call__(self, x: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        trace = self.forward(x)
        return self.relevance(trace, weights), trace.outputs.detach()

    def describe(self) -> dict:
        """The method's name, for summaries."""
        return {"method": "gradient_x_input" if self.times_input else "gradient"}

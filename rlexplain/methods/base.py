"""What every non-LRP method shares: a frozen copy of the network, its forward pass, and the call protocol.

A method is ``forward(x) -> Trace`` (the outputs, and the input) then ``relevance(trace, weights)`` (the
map of ``weights . outputs``; weights (N, n_out), or (N, K, n_out) for K maps per input).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rlexplain.lrp.engine import Trace, device_of, dtype_of, snapshot


class OutputMethod:
    """Base class: explains ``network`` as it is now (a frozen copy in ``dtype`` on ``device``; None keeps the
    network's). Inputs and output weights are moved to the copy's device; results stay there."""

    name = "method"

    def __init__(self, network: nn.Module, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        self.network = snapshot(network, dtype, device)
        self.dtype = dtype or dtype_of(self.network)
        self.device = device_of(self.network)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Trace:
        x = x.to(device=self.device, dtype=self.dtype)
        return Trace(self.network(x), [x], [])

    def relevance(self, trace: Trace, weights: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, x: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        trace = self.forward(x)
        return self.relevance(trace, weights), trace.outputs

    def params(self) -> dict:
        """The method's parameters, for summaries."""
        return {}

    def describe(self) -> dict:
        """The method's name and parameters, for summaries."""
        return {"method": self.name, "name": self.name, **self.params()}

"""A random map: the baseline every faithfulness measure must beat (an evaluation baseline, not an explanation)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rlexplain.lrp.engine import Trace, dtype_of, snapshot


class RandomMap:
    """Independent uniform noise in [0, 1) per input element, seeded (reproducible), blind to the network.

    :param seed: seeds the noise; each call draws the next maps of that stream.
    """

    name = "random"

    def __init__(self, network: nn.Module, dtype: torch.dtype | None = None, seed: int = 0) -> None:
        self.network = snapshot(network, dtype)
        self.dtype = dtype or dtype_of(self.network)
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Trace:
        x = x.to(self.dtype)
        return Trace(self.network(x), [x], [])

    def relevance(self, trace: Trace, weights: Tensor) -> Tensor:
        x = trace.inputs[0]
        shape = x.shape if weights.ndim == 2 else (x.shape[0], weights.shape[1], *x.shape[1:])
        return torch.rand(shape, generator=self._generator, dtype=x.dtype)

    def __call__(self, x: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        trace = self.forward(x)
        return self.relevance(trace, weights), trace.outputs

    def describe(self) -> dict:
        """The method's name and parameters, for summaries."""
        return {"method": self.name, "name": self.name, "seed": self.seed}

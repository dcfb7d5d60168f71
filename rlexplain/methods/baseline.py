"""A random map: the baseline every faithfulness measure must beat (an evaluation baseline, not an explanation)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rlexplain.lrp.engine import Trace
from rlexplain.methods.base import OutputMethod


class RandomMap(OutputMethod):
    """Independent uniform noise in [0, 1) per input element, seeded (reproducible), blind to the network.

    :param seed: seeds the noise; each call draws the next maps of that stream.
    """

    name = "random"

    def __init__(self, network: nn.Module, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, seed: int = 0) -> None:
        super().__init__(network, dtype, device)
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    def relevance(self, trace: Trace, weights: Tensor) -> Tensor:
        x = trace.inputs[0]
        shape = x.shape if weights.ndim == 2 else (x.shape[0], weights.shape[1], *x.shape[1:])
        return torch.rand(shape, generator=self._generator, dtype=x.dtype).to(x.device)  # same maps on every device

    def params(self) -> dict:
        return {"seed": self.seed}

"""Gradient-based methods: the gradient (Simonyan et al. 2014), gradient x input (Shrikumar et al.
2016), integrated gradients (Sundararajan et al. 2017) and SmoothGrad (Smilkov et al. 2017).

Each explains the output combination ``weights . f(x)`` (one-hot for one action), computed with
autograd on a frozen copy of the network, so the caller's model is never touched. Inputs are the
network's (N, C, H, W) floats in [0, 1]; the maps have the same shape.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rlexplain.errors import MethodError
from rlexplain.lrp.engine import Trace
from rlexplain.methods.base import OutputMethod

#: Inputs per forward/backward pass when a method evaluates many copies of each input.
CHUNK = 512


def input_gradient(network: nn.Module, x: Tensor, weights: Tensor) -> Tensor:
    """``d(weights . network(x)) / dx`` for weights (N, n_out), computed in chunks of :data:`CHUNK` inputs."""
    parts = []
    for start in range(0, len(x), CHUNK):
        xs = x[start: start + CHUNK].detach().requires_grad_(True)
        with torch.enable_grad():
            out = network(xs)
            parts.append(torch.autograd.grad(out, xs, weights[start: start + CHUNK].to(out.dtype))[0])
    return torch.cat(parts)


class _GradientMethod(OutputMethod):
    """Gradient-based methods: one map per explained combination, each from :meth:`map`."""

    name = "gradient"

    def relevance(self, trace: Trace, weights: Tensor) -> Tensor:
        """Maps (N, *input) for weights (N, n_out), or (N, K, *input) for (N, K, n_out)."""
        x = trace.inputs[0]
        weights = weights.to(device=x.device, dtype=x.dtype)
        if weights.ndim == 2:
            return self.map(x, weights).detach()
        return torch.stack([self.map(x, weights[:, k]) for k in range(weights.shape[1])], 1).detach()

    def map(self, x: Tensor, weights: Tensor) -> Tensor:
        raise NotImplementedError


class Gradient(_GradientMethod):
    """The input gradient of ``weights . outputs``, optionally times the input.

    :param network: the network (explained as it is now: the method keeps a copy).
    :param times_input: False for ``gradient``, True for ``gradient_x_input``.
    :param dtype: the working precision; None keeps the network's.
    """

    def __init__(self, network: nn.Module, times_input: bool = False, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__(network, dtype, device)
        self.times_input = times_input
        self.name = "gradient_x_input" if times_input else "gradient"

    def map(self, x: Tensor, weights: Tensor) -> Tensor:
        grads = input_gradient(self.network, x, weights)
        return grads * x if self.times_input else grads


class IntegratedGradients(_GradientMethod):
    """Integrated gradients (Sundararajan et al. 2017) from a black baseline (all pixels 0):
    ``x * mean_{alpha} grad f(alpha x)`` over ``steps`` midpoints ``alpha = (i + 1/2) / steps`` of [0, 1].

    The map sums (up to the Riemann error) to ``f(x) - f(0)`` for the explained output.

    :param steps: points on the path from the baseline to the input.
    """

    name = "integrated_gradients"

    def __init__(self, network: nn.Module, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, steps: int = 32) -> None:
        super().__init__(network, dtype, device)
        if steps < 1:
            raise MethodError(f"integrated_gradients needs steps >= 1, got {steps}")
        self.steps = steps

    def map(self, x: Tensor, weights: Tensor) -> Tensor:
        alphas = (torch.arange(self.steps, dtype=x.dtype, device=x.device) + 0.5) / self.steps
        path = (alphas.view(-1, 1, 1, 1, 1) * x[None]).reshape(-1, *x.shape[1:])  # (steps * N, ...)
        grads = input_gradient(self.network, path, weights.repeat(self.steps, 1))
        return x * grads.view(self.steps, *x.shape).mean(0)

    def params(self) -> dict:
        return {"baseline": "black (0)", "steps": self.steps}


class SmoothGrad(_GradientMethod):
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over ``samples`` copies of the input
    with Gaussian noise of standard deviation ``sigma`` (in input units: 0.15 = 15% of the [0, 1] range,
    within the 10-20% the paper recommends). The noise is seeded, so maps are reproducible.

    :param samples: noisy copies per input. :param sigma: the noise level. :param seed: the noise seed.
    """

    name = "smoothgrad"

    def __init__(self, network: nn.Module, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, samples: int = 32, sigma: float = 0.15,
                 seed: int = 0) -> None:
        super().__init__(network, dtype, device)
        if samples < 1 or sigma < 0:
            raise MethodError(f"smoothgrad needs samples >= 1 and sigma >= 0, got {samples}, {sigma}")
        self.samples, self.sigma, self.seed = samples, sigma, seed

    def map(self, x: Tensor, weights: Tensor) -> Tensor:
        g = torch.Generator().manual_seed(self.seed)
        # drawn on the CPU, so the same seed gives the same noise on every device
        noise = torch.randn((self.samples, *x.shape), generator=g, dtype=x.dtype).to(x.device) * self.sigma
        noisy = (x[None] + noise).reshape(-1, *x.shape[1:])
        grads = input_gradient(self.network, noisy, weights.repeat(self.samples, 1))
        return grads.view(self.samples, *x.shape).mean(0)

    def params(self) -> dict:
        return {"samples": self.samples, "sigma": self.sigma, "seed": self.seed}

"""Perturbation saliency (Greydanus et al. 2018, "Visualizing and understanding Atari agents").

At each position ``(i, j)`` of a grid with the given ``stride``, the input is blended towards its own
Gaussian blur (``blur`` = sigma of the blur) under a Gaussian mask ``M_ij`` of standard deviation
``sigma`` centred there -- ``x' = x (1 - M_ij) + blur(x) M_ij``, in every stacked frame -- and the
saliency of the position is the drop of the explained output, ``w . f(x) - w . f(x')`` (Greydanus
et al. use the squared change of the whole policy; the signed drop of the explained output keeps
this package's target semantics: positive = evidence for it). The map at a pixel is the
mask-weighted mean of the saliencies of the positions covering it, split equally over the stacked
frames. All perturbed copies of an input run in batched forward passes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlexplain.errors import MethodError
from rlexplain.lrp.engine import Trace
from rlexplain.methods.base import OutputMethod

#: Perturbed inputs per forward pass.
CHUNK = 1024


def gaussian_kernel(sigma: float, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> Tensor:
    """A normalised 1-D Gaussian of standard deviation ``sigma`` over +- 3 sigma."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Each channel of (N, C, H, W) blurred with a separable Gaussian, borders reflected."""
    k = gaussian_kernel(sigma, x.dtype, x.device)
    r = len(k) // 2
    c = x.shape[1]
    y = F.pad(x, (r, r, 0, 0), mode="reflect" if r < x.shape[-1] else "replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode="reflect" if r < x.shape[-2] else "replicate")
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def gaussian_masks(height: int, width: int, stride: int, sigma: float, dtype: torch.dtype,
                   device: torch.device | None = None) -> Tensor:
    """(P, H, W): one Gaussian bump (peak 1) per grid position, positions ``stride`` apart from (0, 0)."""
    rows = torch.arange(0, height, stride, dtype=dtype, device=device)
    cols = torch.arange(0, width, stride, dtype=dtype, device=device)
    yy = torch.arange(height, dtype=dtype, device=device).view(1, -1, 1)
    xx = torch.arange(width, dtype=dtype, device=device).view(1, 1, -1)
    centres = torch.cartesian_prod(rows, cols)
    return torch.exp(-((yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2) / (2 * sigma ** 2))


class Occlusion(OutputMethod):
    """Greydanus et al.'s perturbation saliency for the explained output (see the module docstring).

    :param network: the network (explained as it is now: the method keeps a copy).
    :param stride: pixels between perturbed positions (5 in the paper, on 84x84 inputs).
    :param sigma: standard deviation of the perturbation mask (5 in the paper).
    :param blur: standard deviation of the blur the masked region is blended towards (3 in the paper).
    """

    name = "occlusion"

    def __init__(self, network: nn.Module, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, stride: int = 5, sigma: float = 5.0,
                 blur: float = 3.0) -> None:
        if stride < 1 or sigma <= 0 or blur <= 0:
            raise MethodError(f"occlusion needs stride >= 1, sigma > 0 and blur > 0, got {stride}, {sigma}, {blur}")
        super().__init__(network, dtype, device)
        self.stride, self.sigma, self.blur = stride, sigma, blur

    @torch.no_grad()
    def relevance(self, trace: Trace, weights: Tensor) -> Tensor:
        """Maps (N, *input) for weights (N, n_out), or (N, K, *input) for (N, K, n_out)."""
        x, outputs = trace.inputs[0], trace.outputs
        n, c, h, w = x.shape
        masks = gaussian_masks(h, w, self.stride, self.sigma, x.dtype, x.device)  # (P, H, W)
        blurred = gaussian_blur(x, self.blur)
        drops = []  # per input: (P, n_out) output drops
        for i in range(n):
            perturbed = x[i][None] * (1 - masks[:, None]) + blurred[i][None] * masks[:, None]  # (P, C, H, W)
            out = torch.cat([self.network(perturbed[s: s + CHUNK]) for s in range(0, len(perturbed), CHUNK)])
            drops.append(outputs[i][None] - out)
        drops = torch.stack(drops)  # (N, P, n_out)
        weights = weights.to(device=x.device, dtype=x.dtype)
        saliency = torch.einsum("npo,no->np", drops, weights) if weights.ndim == 2 else \
            torch.einsum("npo,nko->nkp", drops, weights)
        pixel = torch.einsum("...p,phw->...hw", saliency, masks) / masks.sum(0)
        return (pixel / c).unsqueeze(-3).expand(*pixel.shape[:-2], c, h, w).contiguous()

    def params(self) -> dict:
        return {"stride": self.stride, "sigma": self.sigma, "blur": self.blur}

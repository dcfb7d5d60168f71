"""Canonizers: exact rewrites of a layer chain into layers that have LRP rules (as zennit's canonizers).

* a BatchNorm (in eval mode) after a Conv2d/Linear is merged into it (zennit's
  ``SequentialMergeBatchNorm``);
* a :class:`Scale` (a constant factor, e.g. the ``x 255`` of SB3 policies built with
  ``normalize_images=False``) is folded into the next weight layer.

Folded layers are copies: the original modules are never modified. The result computes the same
function (up to float rounding).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rlexplain.errors import UnsupportedLayerError
from rlexplain.lrp.layers import LINEAR_LAYERS


class Scale(nn.Module):
    """Multiplies its input by a constant ``factor``; folded into the next weight layer by :func:`canonize`."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def canonize(layers: Sequence[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """Fold BatchNorm and :class:`Scale` layers into neighbouring weight layers (see the module docstring)."""
    out: list[tuple[str, nn.Module]] = []
    pending_scale: tuple[str, float] | None = None
    for path, module in layers:
        if isinstance(module, Scale):
            pending_scale = (path, module.factor)
            continue
        if pending_scale is not None and isinstance(module, LINEAR_LAYERS):
            module = _scaled_input(module, pending_scale[1])
            path = f"{pending_scale[0]}+{path}"
            pending_scale = None
        if isinstance(module, _BATCH_NORMS):
            if not out or not isinstance(out[-1][1], LINEAR_LAYERS):
                previous = out[-1][0] if out else "the input"
                raise UnsupportedLayerError(f"unsupported layer {path} ({type(module).__name__}) after {previous}: "
                                            f"rlexplain folds a BatchNorm into the Conv2d/Linear right before it")
            before_path, before = out.pop()
            out.append((f"{before_path}+{path}", _merge_batch_norm(before, module)))
            continue
        out.append((path, module))
    if pending_scale is not None:
        raise UnsupportedLayerError(f"{pending_scale[0]}: a Scale layer with no weight layer after it to fold into")
    return out


def copy_with(layer: nn.Module, weight: Tensor, bias: Tensor | None) -> nn.Module:
    new = copy.deepcopy(layer)
    with torch.no_grad():
        new.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        new.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
    return new


def _scaled_input(layer: nn.Module, factor: float) -> nn.Module:
    """``layer(factor * x)`` as one layer: the weights times ``factor`` (zero padding stays zero)."""
    return copy_with(layer, layer.weight * factor, layer.bias)


def _merge_batch_norm(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """``bn(layer(x))`` in eval mode as one layer: ``W' = W * g / sqrt(var + eps)``, ``b' = (b - mean) * ... + beta``."""
    scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
    shape = (-1,) + (1,) * (layer.weight.ndim - 1)
    return copy_with(layer, layer.weight * scale.view(shape), (bias - bn.running_mean) * scale + shift)

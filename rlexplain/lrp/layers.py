"""The linear layers LRP rules act on, seen through one small interface.

A rule needs four things of a layer: its forward map with given (possibly modified) parameters,
the transpose of that map (the gradient of the forward w.r.t. its input), and the layer's
parameters in the working dtype. :class:`LinearMap` wraps ``nn.Conv2d`` and ``nn.Linear`` to
provide exactly that, and caches what does not change from frame to frame -- modified weights
(``W+``, ``W + gamma W+``, ...) and input-independent terms (``W+ l``, ``1 . 1``) -- so that a
rule pays only for what depends on the current input. The cache is keyed by the parameters'
storage and version, so an in-place update of the weights (e.g. ``load_state_dict``) is noticed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlexplain.errors import UnsupportedLayerError

#: Element-wise layers: LRP passes relevance through them unchanged (zennit's ``Activation`` + ``Pass``).
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.Softplus,
    nn.Hardtanh, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid,
)
#: Layers that only reshape (or, in eval mode, do nothing): relevance is reshaped back.
RESHAPES: tuple[type[nn.Module], ...] = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout2d)
#: Average pooling: a fixed positive linear map (zennit's ``AvgPool`` type, explained with its ``Norm`` rule).
AVG_POOLS: tuple[type[nn.Module], ...] = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
#: Max pooling: relevance follows the gradient to each window's maximum (zennit's default for ``MaxPool``).
MAX_POOLS: tuple[type[nn.Module], ...] = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
#: Layers with weights that the rules act on.
LINEAR_LAYERS: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


class LinearMap:
    """An affine layer ``z = W x + b`` (``nn.Linear`` or ``nn.Conv2d``) as the rules see it.

    :param module: the layer.
    :param path: its dotted path in the network (for error messages).
    """

    def __init__(self, module: nn.Module, path: str) -> None:
        if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
            raise UnsupportedLayerError(f"unsupported layer {path} (Conv2d with padding_mode={module.padding_mode!r})"
                                        f": LRP here supports zero padding only")
        self.module = module
        self.path = path
        self.is_conv = isinstance(module, nn.Conv2d)
        #: explicit (top, bottom, left, right) zero padding for ``padding="same"`` (possibly asymmetric)
        self.pad: tuple[int, int, int, int] = (0, 0, 0, 0)
        self.padding: tuple[int, int] = (0, 0)
        if self.is_conv:
            if isinstance(module.padding, str):
                if module.padding == "same":
                    totals = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size)]
                    self.pad = (totals[0] // 2, totals[0] - totals[0] // 2, totals[1] // 2, totals[1] - totals[1] // 2)
            else:
                self.padding = tuple(module.padding)
        self._cache: dict[Any, Any] = {}
        self._key: Any = None

    # -- parameters --------------------------------------------------------------------------
    def _version(self) -> tuple:
        params = [self.module.weight] + ([self.module.bias] if self.module.bias is not None else [])
        return tuple((p.data_ptr(), p._version) for p in params)

    def cached(self, key: Any, dtype: torch.dtype, build: Callable[[], Any]) -> Any:
        """``build()`` once per (key, dtype) for as long as the layer's parameters are unchanged."""
        version = self._version()
        if version != self._key:
            self._cache.clear()
            self._key = version
        full_key = (key, dtype)
        if full_key not in self._cache:
            self._cache[full_key] = build()
        return self._cache[full_key]

    def params(self, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
        """``(W, b)`` detached, in ``dtype`` (b is None for a layer without bias)."""

        def build() -> tuple[Tensor, Tensor | None]:
            b = self.module.bias
            return (self.module.weight.detach().to(dtype), None if b is None else b.detach().to(dtype))

        return self.cached("params", dtype, build)

    def modified(self, key: Any, dtype: torch.dtype, modify: Callable[[Tensor, Tensor | None], Any]) -> Any:
        """``modify(W, b)``, cached: the rules' modified parameters (``W+``, ``W + gamma W+``, ...)."""
        return self.cached(key, dtype, lambda: modify(*self.params(dtype)))

    # -- the map and its transpose -----------------------------------------------------------
    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """``W x + b`` with the given parameters and this layer's stride/padding/groups."""
        if self.is_conv:
            m = self.module
            if any(self.pad):
                top, bottom, left, right = self.pad
                x = F.pad(x, (left, right, top, bottom))
            return F.conv2d(x, weight, bias, m.stride, self.padding, m.dilation, m.groups)
        return F.linear(x, weight, bias)

    def backward(self, s: Tensor, weight: Tensor, input_shape: torch.Size) -> Tensor:
        """``W^T s``: the gradient of ``forward(x, weight)`` w.r.t. ``x``, for an input of ``input_shape``."""
        if not self.is_conv:
            return s @ weight
        m = self.module
        top, bottom, left, right = self.pad
        padded_hw = (input_shape[-2] + top + bottom, input_shape[-1] + left + right)
        out_hw = s.shape[-2:]
        output_padding = []
        for i in range(2):
            natural = (out_hw[i] - 1) * m.stride[i] - 2 * self.padding[i] + m.dilation[i] * (weight.shape[2 + i] - 1) + 1
            output_padding.append(padded_hw[i] - natural)
        # channels-last lets oneDNN run the transposed convolution 2-3x faster on CPU (measured on
        # NatureCNN's first layer); the result is numerically the same map.
        cl = torch.channels_last
        out = F.conv_transpose2d(s.contiguous(memory_format=cl), weight.contiguous(memory_format=cl), None,
                                 m.stride, self.padding, tuple(output_padding), m.groups, m.dilation)
        if any(self.pad):  # the explicit padding's positions are no input: crop them off
            out = out[..., top: top + input_shape[-2], left: left + input_shape[-1]]
        return out

    def backward_ones(self, s: Tensor, input_shape: torch.Size) -> Tensor:
        """``1^T s`` for an all-ones weight, computed without materialising it (the Flat rule).

        With every weight equal to one, each input channel receives the same sum, so the output
        channels are summed first and one single-channel transpose is broadcast.
        """
        m = self.module
        if not self.is_conv:
            return s.sum(-1, keepdim=True).expand(*s.shape[:-1], input_shape[-1])
        if m.groups != 1:
            ones = torch.ones_like(self.params(s.dtype)[0])
            return self.backward(s, ones, input_shape)
        kernel = torch.ones(1, 1, *m.kernel_size, dtype=s.dtype, device=s.device)
        summed = self.backward(s.sum(1, keepdim=True), kernel, (1, *input_shape[-2:]))
        return summed.expand(s.shape[0], input_shape[1], *input_shape[-2:])

    def constant_output(self, key: Any, value: Tensor | float, weight_fn: Callable, input_shape: torch.Size,
                        dtype: torch.dtype, bias: bool = True) -> Tensor:
        """``forward(value, modified W[, modified b])`` for an input-independent ``value`` (one sample), cached.

        Used for the terms that do not depend on the input: ZBox's ``W+ l`` and ``W- h``, Flat's
        and WSquare's ``W' 1``.
        """

        def build() -> Tensor:
            w, b = weight_fn(*self.params(dtype))
            x = torch.broadcast_to(torch.as_tensor(value, dtype=dtype, device=w.device), (1, *input_shape[1:]))
            return self.forward(x, w, b if bias else None)

        return self.cached(("constant", key, tuple(input_shape[1:])), dtype, build)

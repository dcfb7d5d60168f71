"""LRP rules, one class per rule, each body its formula.

Conventions follow zennit's ``rules.py`` (Anders et al., "Software for dataset-wide XAI", 2021) so
results can be cross-checked against it numerically:

* ``stabilize(z, e) = z + e * sign(z)`` with ``sign(0) = +1``;
* a rule redistributes the relevance ``R`` arriving at a layer's output through
  ``s = R / stabilize(z')`` where ``z'`` is the rule's (modified) forward, and returns
  ``R_in = x' * (W'^T s)`` summed over its terms;
* biases take part in the denominators as zennit does: kept for Epsilon; clamped with the weights
  (``b+`` beside ``W+``, and no bias on the terms that pair negative inputs with weights) for ZPlus,
  AlphaBeta and Gamma; clamped and cancelled for ZBox; zeroed for Flat; squared for WSquare.

Each rule handles negative inputs as zennit does; when the input is non-negative (every layer
after a ReLU, and the first layer on [0, 1] pixels) the terms on ``x-`` vanish and are skipped, and
the remaining terms are fused into one convolution with stacked weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rlexplain.lrp.layers import LinearMap

__all__ = [
    "Rule", "Epsilon", "ZPlus", "AlphaBeta", "Gamma", "ZBox", "Flat", "WSquare", "Pass", "Norm", "WinnerTakesAll",
    "stabilize",
]


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """``z + epsilon * sign(z)``, with ``sign(0) = +1`` so that a zero never divides."""
    return z + epsilon * ((z >= 0).to(z.dtype) * 2 - 1)


def _split(t: Tensor, n: int) -> list[Tensor]:
    """Undo the stacking of ``n`` equally sized blocks along the channel axis."""
    return list(t.chunk(n, dim=1))


def _cat_params(*pairs: tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor | None]:
    """Stack several (W, b) along the output axis so one convolution computes all of them."""
    weights = torch.cat([w for w, _ in pairs])
    biases = [b for _, b in pairs]
    if all(b is None for b in biases):
        return weights, None
    ref = next(b for b in biases if b is not None)
    return weights, torch.cat([torch.zeros_like(ref) if b is None else b for b in biases])


def _pos(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(min=0)


def _neg(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(max=0)


class Rule:
    """Base class: maps the relevance at a layer's output to relevance at its input.

    :meth:`relevance` gets the layer, its input ``x``, its (unmodified) output ``z`` from the
    forward pass and the output relevance ``r``, and returns the input relevance.
    """

    #: The rule needs an affine layer (Conv2d/Linear); False for :class:`Pass`.
    needs_weights = True

    def relevance(self, layer: LinearMap, x: Tensor, z: Tensor, r: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def params(self) -> dict[str, float]:
        """The rule's parameters, as recorded in run summaries."""
        return {k: v for k, v in vars(self).items() if isinstance(v, (int, float))}


class Epsilon(Rule):
    """LRP-epsilon (Bach et al. 2015): ``R_i = x_i sum_j w_ij R_j / stabilize(z_j, epsilon)``.

    ``z_j = sum_i x_i w_ij + b_j`` is the layer's own output; ``epsilon=0`` gives LRP-0 (up to
    the sign convention at exact zeros).

    :param epsilon: the stabiliser; larger values absorb weak or contradictory relevance.
    """

    def __init__(self, epsilon: float = 1e-6) -> None:
        self.epsilon = epsilon

    def relevance(self, layer: LinearMap, x: Tensor, z: Tensor, r: Tensor) -> Tensor:
        w, _ = layer.params(x.dtype)
        s = r / stabilize(z, self.epsilon)
        return x * layer.backward(s, w, x.shape)


class AlphaBeta(Rule):
    """LRP-alpha-beta (Bach et al. 2015): positive and negative contributions weighted separately.

    ``R_i = sum_j (alpha z+_ij / z+_j - beta z-_ij / z-_j) R_j`` with ``z+_ij`` the positive
    contributions ``x+ w+`` and ``x- w-`` (with ``b+`` in ``z+_j``) and ``z-_ij`` the negative ones
    ``x+ w-`` and ``x- w+`` (with ``b-`` in ``z-_j``). Requires ``alpha - beta = 1``.

    :param alpha: weight of the positive part. :param beta: weight of the negative part.
    :param stabilizer: epsilon of the denominators' stabiliser.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6) -> None:
        if alpha < 0 or beta < 0 or abs(alpha - beta - 1.0) > 1e-12:
            raise ValueError(f"AlphaBeta needs alpha, beta >= 0 and alpha - beta = 1, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta, self.stabilizer = alpha, beta, stabilizer

    def relevance(self, layer: LinearMap, x: Tensor, z: Tensor, r: Tensor) -> Tensor:
        (wp, bp), (wn, bn) = layer.modified("alphabeta", x.dtype, lambda w, b: ((_pos(w), _pos(b)), (_neg(w), _neg(b))))
        if bool((x >= 0).all()):
            stacked = layer.modified("alphabeta_cat", x.dtype, lambda w, b: _cat_params((_pos(w), _pos(b)), (_neg(w), _neg(b))))
            zp, zn = _split(layer.forward(x, *stacked), 2)
            s = torch.cat([self.alpha * r / stabilize(zp, self.stabilizer), -self.beta * r / stabilize(zn, self.stabilizer)], 1)
            return x * layer.backward(s, stacked[0], x.shape)
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        sp = r / stabilize(layer.forward(xp, wp, bp) + layer.forward(xn, wn), self.stabilizer)
        sn = r / stabilize(layer.forward(xp, wn, bn) + layer.forward(xn, wp), self.stabilizer)
        positive = xp * layer.backward(sp, wp, x.shape) + xn * layer.backward(sp, wn, x.shape)
        negative = xp * layer.backward(sn, wn, x.shape) + xn * layer.backward(sn, wp, x.shape)
        return self.alpha * positive - self.beta * negative


class ZPlus(Rule):
    """LRP-z+ (Bach et al. 2015; Montavon et al. 2017): alpha=1, beta=0, positive contributions only.

    ``R_i = sum_j (x+_i w+_ij + x-_i w-_ij) R_j / stabilize(sum_i (x+_i w+_ij + x-_i w-_ij) + b+_j)``.

    :param stabilizer: epsilon of the denominator's stabiliser.
    """

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = stabilizer

    def relevance(self, layer: LinearMap, x: Tensor, z: Tensor, r: Tensor) -> Tensor:
        (wp, bp), wn = layer.modified("zplus", x.dtype, lambda w, b: ((_pos(w), _pos(b)), _neg(w)))
        if bool((x >= 0).all()):
            s = r / stabilize(layer.forward(x, wp, bp), self.stabilizer)
            return x * layer.backward(s, wp, x.shape)
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        s = r / stabilize(layer.forward(xp, wp, bp) + layer.forward(xn, wn), self.stabilizer)
        return xp * layer.backward(s, wp, x.shape) + xn * layer.backward(s, wn, x.shape)


class Gamma(Rule):
    """Generalised LRP-gamma (Montavon et al. 2019; Andeol et al. 2021), as in zennit >= 0.5.

    Positive outputs (``z_j > 0``) are explained by the contributions that favour them, with
    positive weights boosted: ``(w + gamma w+)`` on ``x+`` (bias ``b + gamma b+``) and
    ``(w + gamma w-)`` on ``x-``; negative outputs symmetrically with ``w-`` and ``w+`` swapped.
    ``gamma = 0`` gives LRP-0; large gamma approaches z+.

    :param gamma: how much the positive (resp. negative) weights are boosted.
    :param stabilizer: epsilon of the denominators' stabiliser.
    """

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6) -> None:
        self.gamma, self.stabilizer = gamma, stabilizer

    def _boost(self, w: Tensor, b: Tensor | None):
        g = self.gamma
        up = (w + g * _pos(w), None if b is None else b + g * _pos(b))    # for z > 0 on x+
        down = (w + g * _neg(w), None if b is None else b + g * _neg(b))  # for z < 0 on x+
        return up, down

    def relevance(self, layer: LinearMap, x: Tensor, z: Tensor, r: Tensor) -> Tensor:
        rp, rn = r * (z > 0), r * (z < 0)
        if bool((x >= 0).all()):
            stacked = layer.modified(("gamma_cat", self.gamma), x.dtype, lambda w, b: _cat_params(*self._boost(w, b)))
            zp, zn = _split(layer.forward(x, *stacked), 2)
            s = torch.cat([rp / stabilize(zp, self.stabilizer), rn / stabilize(zn, self.stabilizer)], 1)
            return x * layer.backward(s, stacked[0], x.shape)
        (wu, bu), (wd, bd) = layer.modified(("gamma", self.gamma), x.dtype, self._boost)
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        sp = rp / stabilize(layer.forward(xp, wu, bu) + layer.forward(xn, wd), self.stabilizer)
        sn = rn / stabilize(layer.forward(xp, wd, bd) + layer.forward(xn, wu), self.stabilizer)
        return (xp * layer.backward(sp, wu, x.shape) + xn * layer.backward(sp, wd, x.shape)
                + xp * layer.backward(sn, wd, x.shape) + xn * layer.backward(sn, wu, x.shape))


class ZBox(Rule):
    """LRP-z^B (Montavon et al. 2017) for a first layer whose inputs lie in a box ``[low, high]``.

    ``R_i = sum_j (x_i w_ij - l_i w+_ij - h_i w-_ij) R_j / stabilize(sum_i (x_i w_ij - l_i w+_ij - h_i w-_ij))``
    (the bias cancels: ``b - b+ - b- = 0``). The terms in ``l`` and ``h`` do not depend on the
    input and are computed once.

    :param low: lowest possible input value (scalar or tensor broadcastable to one input).
    :param high: highest possible input value.
    :param stabilizer: epsilon of the denominator's stabiliser.
    """

    def __init__(self, low: float | Tensor = 0.0, high: float | Tensor = 1.0, stabilizer: float = 1e-6) -> None:
        self.low, self.high, self.stabilizer = low, high, stabilizer

    def params(self) -> dict[str, float]:
        def scalar(v):
            return float(v) if not isinstance(v, Tensor) or v.numel() == 1 else "tensor"

        return {"low": scalar(self.low), "high": scalar(self.high), "stabilizer": self.stabilizer}

    def relevance(self, layer: LinearMap, x: Tensor, z: Tensor, r: Tensor) -> Tensor:
        key = id(self)
        low_term = layer.constant_output(("zbox_low", key), self.low, lambda w, b: (_pos(w), _pos(b)), x.shape, x.dtype)
        high_term = layer.constant_output(("zbox_high", key), self.high, lambda w, b: (_neg(w), _neg(b)), x.shape, x.dtype)
        s = r / stabilize(z - low_term - high_term, self.stabilizer)
        low = torch.as_tensor(self.low, dtype=x.dtype, device=x.device)
        high = torch.as_tensor(self.high, dtype=x.dtype, device=x.device)
        w = layer.params(x.dtype)[0]
        if bool((low == 0).all()):
            # l = 0 (pixels in [0, h]): one transpose with [W; W-] stacked along the input axis
            stacked = layer.modified("zbox_w_wneg", x.dtype, lambda w, b: torch.cat([w, _neg(w)], 1))
            if layer.is_conv:
                c_w, c_n = _split(layer.backward(s, stacked, (x.shape[0], 2 * x.shape[1], *x.shape[2:])), 2)
            else:
                c_w, c_n = (s @ stacked).chunk(2, dim=-1)
            return x * c_w - high * c_n
        wp, wn = layer.modified("zbox_pn", x.dtype, lambda w, b: (_pos(w), _neg(w)))
        return x * layer.backward(s, w, x.shape) - low * layer.backward(s, wp, x.shape) - high * layer.backward(s, wn, x.shape)


class Flat(Rule):
    """LRP-flat (Lapuschkin et al. 2019): relevance spread uniformly over each output's receptive field.

    ``R_i = sum_j R_j / stabilize(#inputs of j)`` -- every weight taken as 1, no bias, inputs ignored.

    :param stabilizer: epsilon of the denominator's stabiliser.
    """

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = stabilizer

    def relevance(self, layer: LinearMap, x: Tensor, z: Tensor, r: Tensor) -> Tensor:
        fan_in = layer.constant_output("flat", 1.0, lambda w, b: (torch.ones_like(w), None), x.shape, x.dtype, bias=False)
        s = r / stabilize(fan_in, self.stabilizer)
        return layer.backward_ones(s, x.shape)


class WSquare(Rule):
    """LRP-w^2 (Montavon et al. 2017): ``R_i = sum_j w_ij^2 R_j / stabilize(sum_i w_ij^2 + b_j^2)``.

    For first layers with unbounded inputs; like zennit, the bias is squared too.

    :param stabilizer: epsilon of the denominator's stabiliser.
    """

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = stabilizer

    def relevance(self, layer: LinearMap, x: Tensor, z: Tensor, r: Tensor) -> Tensor:
        def square(w, b):
            return w * w, None if b is None else b * b

        z_sq = layer.constant_output("wsquare", 1.0, square, x.shape, x.dtype)
        s = r / stabilize(z_sq, self.stabilizer)
        return layer.backward(s, layer.modified("wsquare_w", x.dtype, lambda w, b: w * w), x.shape)


class Pass(Rule):
    """Pass relevance through unchanged: the rule for element-wise activations (zennit's ``Pass``)."""

    needs_weights = False

    def relevance(self, layer, x: Tensor, z: Tensor, r: Tensor) -> Tensor:
        return r


def _transpose(module: nn.Module, x: Tensor, s: Tensor) -> Tensor:
    """``J^T s`` for a parameter-free layer (pooling): the vector-Jacobian product at ``x``."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        return torch.autograd.grad(module(xg), xg, s)[0]


class Norm(Rule):
    """Average pooling as the fixed linear map it is, with the epsilon rule (zennit's ``Norm``).

    ``R_i = x_i sum_j (dz_j/dx_i) R_j / stabilize(z_j)``: each window's relevance is shared by its
    inputs in proportion to their contribution to the window's mean.

    :param stabilizer: epsilon of the denominator's stabiliser.
    """

    needs_weights = False

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = stabilizer

    def relevance(self, layer: nn.Module, x: Tensor, z: Tensor, r: Tensor) -> Tensor:
        return x * _transpose(layer, x, r / stabilize(z, self.stabilizer))


class WinnerTakesAll(Rule):
    """Max pooling: each window's relevance goes to the input that won it (the gradient, as in zennit).

    Conservative, since max pooling is positively homogeneous: the winner's value is the output.
    """

    needs_weights = False

    def relevance(self, layer: nn.Module, x: Tensor, z: Tensor, r: Tensor) -> Tensor:
        return _transpose(layer, x, r)

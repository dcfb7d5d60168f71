"""The LRP engine: one forward pass that keeps what the rules need, then one relevance pass.

Networks are explicit chains of leaf layers (:class:`Chain`), which is what SB3's Atari policies
are (NatureCNN, then the heads). The engine runs the chain once, keeping each layer's input and
output, then walks it backwards applying each layer's rule. It does not use autograd or hooks, so
there is no graph to build; modified weights and input-independent terms are cached by the layers
(:mod:`rlexplain.lrp.layers`). Several explained outputs (``action="all"``) share the forward pass.

:class:`Gradient` offers the reference methods (``gradient``, ``gradient_x_input``) behind the same
interface, computed with autograd.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rlexplain.lrp.composites import GRADIENT_METHODS, Composite, UserMapping, get_composite
from rlexplain.lrp.layers import LINEAR_LAYERS, LinearMap
from rlexplain.lrp.rules import Rule


class Chain(nn.Module):
    """A network as an explicit sequence of leaf layers, each with its dotted path in the original model.

    Calling it runs the layers in order. Build one from ``[(path, module), ...]``; the modules are
    shared with the original model, not copied.
    """

    def __init__(self, layers: Sequence[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self.paths = [p for p, _ in layers]
        self.layers = nn.ModuleList([m for _, m in layers])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def named_layers(self) -> list[tuple[str, nn.Module]]:
        return list(zip(self.paths, self.layers))

    @classmethod
    def of(cls, module: nn.Module, prefix: str = "") -> Chain:
        """A Chain from a Chain or a (nested) ``nn.Sequential``; other containers cannot be ordered."""
        if isinstance(module, Chain):
            return module
        return cls(_leaves(module, prefix))


def _leaves(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    children = list(module.named_children())
    if not children:
        if isinstance(module, nn.Sequential):  # an empty Sequential is the identity (SB3's empty MLP heads)
            return []
        return [(prefix or type(module).__name__, module)]
    if not isinstance(module, nn.Sequential):
        raise TypeError(
            f"cannot order the layers of {prefix or 'the network'} ({type(module).__name__}): pass an nn.Sequential "
            f"or an rlexplain Chain"
        )
    out: list[tuple[str, nn.Module]] = []
    for name, child in children:
        out += _leaves(child, f"{prefix}.{name}" if prefix else name)
    return out


@dataclass
class Trace:
    """What a forward pass leaves for the relevance pass: the outputs, and each layer's input and output."""

    outputs: Tensor
    inputs: list[Tensor]
    results: list[Tensor]


class LRP:
    """Layer-wise relevance propagation over a :class:`Chain` with a composite's rules.

    :param network: the chain (or an ``nn.Sequential``) from the network's input to its outputs.
    :param composite: a composite name, a :class:`Composite`, or a ``{path or type: rule}`` mapping.
    :param rules: a user mapping that overrides the composite for the layers it names.
    :param composite_kwargs: parameters of a named composite (``epsilon``, ``gamma``, ``low``, ...).
    """

    def __init__(self, network: nn.Module, composite: str | Composite | UserMapping = "epsilon_plus_flat",
                 rules: UserMapping | None = None, **composite_kwargs) -> None:
        self.network = Chain.of(network)
        composite = get_composite(composite, **composite_kwargs)
        self.composite = composite.with_rules(rules) if rules else composite
        layers = self.network.named_layers()
        self.rules: list[Rule | None] = self.composite.assign(layers)
        self._maps = [LinearMap(m, p) if isinstance(m, LINEAR_LAYERS) else None for p, m in layers]

    @torch.no_grad()
    def forward(self, x: Tensor) -> Trace:
        """Run the network, keeping each layer's input and output."""
        inputs, results = [], []
        for layer in self.network.layers:
            inputs.append(x)
            x = layer(x)
            results.append(x)
        return Trace(x, inputs, results)

    @torch.no_grad()
    def relevance(self, trace: Trace, weights: Tensor) -> Tensor:
        """Relevance at the network's input for the explained outputs ``weights . outputs``.

        :param weights: (N, n_out) -- one explained combination of outputs per sample (one-hot for
            one action) -- or (N, K, n_out) for K explanations per sample sharing the forward pass.
            The relevance entering the top layer is ``weights * outputs``.
        :returns: (N, *input) or (N, K, *input).
        """
        n = trace.outputs.shape[0]
        k = weights.shape[1] if weights.ndim == 3 else None
        r = (weights * (trace.outputs if k is None else trace.outputs[:, None])).to(trace.outputs.dtype)
        if k is not None:
            r = r.reshape(n * k, -1)
        for i in reversed(range(len(self.network.layers))):
            x, z = trace.inputs[i], trace.results[i]
            if k is not None:
                x = x.repeat_interleave(k, 0)
                z = z.repeat_interleave(k, 0) if self._maps[i] is not None else z
            rule = self.rules[i]
            if rule is None:  # reshape-only layer
                r = r.reshape(x.shape)
            else:
                r = rule.relevance(self._maps[i], x, z, r).reshape(x.shape)
        return r if k is None else r.reshape(n, k, *r.shape[1:])

    def __call__(self, x: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        """``(relevance, outputs)`` in one pass."""
        trace = self.forward(x)
        return self.relevance(trace, weights), trace.outputs

    def describe(self) -> dict:
        return {"method": "lrp", **self.composite.describe(),
                "assigned": {p: repr(r) for p, r in zip(self.network.paths, self.rules) if r is not None}}


class Gradient:
    """Reference methods: the input gradient of ``weights . outputs``, optionally times the input.

    :param network: the network (any module; it is not modified).
    :param times_input: False for ``gradient``, True for ``gradient_x_input``.
    """

    def __init__(self, network: nn.Module, times_input: bool = False) -> None:
        self.network = network
        self.times_input = times_input

    def forward(self, x: Tensor) -> Trace:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            out = self.network(x)
        return Trace(out, [x], [])

    def relevance(self, trace: Trace, weights: Tensor) -> Tensor:
        x, out = trace.inputs[0], trace.outputs
        if weights.ndim == 2:
            grads = torch.autograd.grad(out, x, weights.to(out.dtype), retain_graph=True)[0]
        else:
            grads = torch.stack([torch.autograd.grad(out, x, weights[:, j].to(out.dtype), retain_graph=True)[0]
                                 for j in range(weights.shape[1])], 1)
            x = x[:, None]
        return (grads * x if self.times_input else grads).detach()

    def __call__(self, x: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        trace = self.forward(x)
        return self.relevance(trace, weights), trace.outputs.detach()

    def describe(self) -> dict:
        return {"method": "gradient_x_input" if self.times_input else "gradient"}


Method = LRP | Gradient


def make_method(network: nn.Module, method: str | Composite | UserMapping = "epsilon_plus_flat",
                rules: UserMapping | None = None, **composite_kwargs) -> Method:
    """An explanation method by name: a composite (LRP) or ``gradient`` / ``gradient_x_input``."""
    if isinstance(method, str) and method in GRADIENT_METHODS:
        if rules or composite_kwargs:
            raise ValueError(f"{method} takes no rules or composite parameters")
        return Gradient(network, times_input=method == "gradient_x_input")
    return LRP(network, method, rules, **composite_kwargs)

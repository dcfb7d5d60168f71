"""The LRP engine: one forward pass that keeps what the rules need, then one relevance pass.

Networks are explicit chains of leaf layers (:class:`Chain`), which is what SB3's Atari policies
are (NatureCNN, then the heads). The engine runs the chain once, keeping each layer's input and
output, then walks it backwards applying each layer's rule. It does not use autograd or hooks, so
there is no graph to build; modified weights and input-independent terms are cached by the layers
(:mod:`rlexplain.lrp.layers`). Several explained outputs (``action="all"``) share the forward pass.

The engine explains the network as it is when the :class:`LRP` object is made: it keeps its own
copy of the network (in the working dtype), so later edits of the original's weights (``.data``
included) or a later ``train()`` of it change nothing here -- make a new object to explain them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rlexplain.lrp.chain import Chain
from rlexplain.lrp.composites import Composite, UserMapping, get_composite
from rlexplain.lrp.layers import LINEAR_LAYERS, LinearMap
from rlexplain.lrp.rules import Rule


@dataclass
class Trace:
    """What a forward pass leaves for the relevance pass: the outputs, and each layer's input and output."""

    outputs: Tensor
    inputs: list[Tensor]
    results: list[Tensor]


class LRP:
    """Layer-wise relevance propagation over a :class:`Chain` with a composite's rules.

    :param network: the chain (or an ``nn.Sequential``) from the network's input to its outputs;
        the engine works on a copy of it (see the module docstring).
    :param composite: a composite name, a :class:`Composite`, or a ``{path or type: rule}`` mapping.
    :param rules: a user mapping that overrides the composite for the layers it names.
    :param dtype: the working precision (``torch.float64`` for reference checks); None keeps the network's.
    :param device: where the copy lives and runs (``cuda``; see :func:`rlexplain.devices.resolve_device`);
        None keeps the network's. Inputs and output weights are moved there; results stay there.
    :param composite_kwargs: parameters of a named composite (``epsilon``, ``gamma``, ``low``, ...).
    """

    def __init__(self, network: nn.Module, composite: str | Composite | UserMapping = "epsilon_plus_flat",
                 rules: UserMapping | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, **composite_kwargs) -> None:
        self.network = snapshot(Chain.of(network), dtype, device)
        self.dtype = dtype or dtype_of(self.network)
        self.device = device_of(self.network)
        composite = get_composite(composite, **composite_kwargs)
        self.composite = composite.with_rules(rules) if rules else composite
        layers = self.network.named_layers()
        self.rules: list[Rule | None] = self.composite.assign(layers)
        self._maps = [LinearMap(m, p) if isinstance(m, LINEAR_LAYERS) else m for p, m in layers]

    @torch.no_grad()
    def forward(self, x: Tensor) -> Trace:
        """Run the network, keeping each layer's input and output."""
        x = x.to(device=self.device, dtype=self.dtype)
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
        weights = weights.to(device=trace.outputs.device, dtype=trace.outputs.dtype)
        r = weights * (trace.outputs if k is None else trace.outputs[:, None])
        if k is not None:
            r = r.reshape(n * k, -1)
        for i in reversed(range(len(self.network.layers))):
            x, z = trace.inputs[i], trace.results[i]
            rule = self.rules[i]
            if k is not None and rule is not None:
                x, z = x.repeat_interleave(k, 0), z.repeat_interleave(k, 0)
            if rule is None:  # reshape-only layer
                r = r.reshape(r.shape[0], *x.shape[1:])
            else:
                r = rule.relevance(self._maps[i], x, z, r).reshape(x.shape)
        return r if k is None else r.reshape(n, k, *r.shape[1:])

    def __call__(self, x: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        """``(relevance, outputs)`` in one pass."""
        trace = self.forward(x)
        return self.relevance(trace, weights), trace.outputs

    def describe(self) -> dict:
        """The method, composite and the rule given to each layer, for summaries."""
        return {"method": "lrp", **self.composite.describe(),
                "assigned": {p: repr(r) for p, r in zip(self.network.paths, self.rules) if r is not None}}


def dtype_of(network: nn.Module) -> torch.dtype:
    return next((p.dtype for p in network.parameters()), torch.float32)


def device_of(network: nn.Module) -> torch.device:
    return next((p.device for p in network.parameters()), torch.device("cpu"))


def snapshot(network: nn.Module, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> nn.Module:
    """A frozen copy of ``network`` in eval mode (on ``device`` and in ``dtype``, if given): what an explanation
    method explains.

    The copy shares nothing with the original, so explaining never changes the caller's model
    (its ``requires_grad`` flags, its mode) and the caller's later changes never leak into a
    method's cached modified weights.
    """
    copied = copy.deepcopy(network).eval()
    if dtype is not None or device is not None:
        copied = copied.to(device=device, dtype=dtype)
    for p in copied.parameters():
        p.requires_grad_(False)
    return copied

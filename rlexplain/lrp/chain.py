"""Networks as explicit chains of leaf layers, read from ``nn.Sequential`` or traced with ``torch.fx``.

LRP walks a network layer by layer, so it needs the layers in forward order. ``nn.Sequential``
containers are unrolled; any other container (SB3's ``NatureCNN``, a user's features extractor) is
traced with ``torch.fx``: its forward must be a chain -- no branches or skip connections -- and the
functional calls LRP treats as layers (``torch.flatten``, ``F.relu``, ``x.view(x.size(0), -1)``, ...)
become their module equivalents.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlexplain.errors import UnsupportedLayerError


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
        """A Chain from any module whose forward is a chain of layers (see the module docstring)."""
        if isinstance(module, Chain):
            return module
        return cls(layers_of(module, prefix))


# functional calls (and tensor methods) that correspond to a leaf layer LRP knows
_FUNCTIONS: dict[Any, type[nn.Module]] = {
    F.relu: nn.ReLU, torch.relu: nn.ReLU, F.leaky_relu: nn.LeakyReLU, F.elu: nn.ELU, F.silu: nn.SiLU,
    F.gelu: nn.GELU, torch.tanh: nn.Tanh, F.tanh: nn.Tanh, torch.sigmoid: nn.Sigmoid, F.sigmoid: nn.Sigmoid,
    torch.flatten: nn.Flatten,
}
_METHODS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "flatten": nn.Flatten}
_IDENTITY_METHODS = {"float", "contiguous"}
_FLATTENING_METHODS = {"view", "reshape"}


def layers_of(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """The leaf layers of ``module`` in forward order, each with its dotted path under ``prefix``.

    :raises UnsupportedLayerError: a forward that is not a chain of layers (branches, skip
        connections, recurrence) or uses an operation with no layer equivalent.
    """
    if isinstance(module, Chain):
        return module.named_layers()
    children = list(module.named_children())
    if not children:
        return [] if isinstance(module, nn.Sequential) else [(prefix, module)]
    if isinstance(module, nn.Sequential):
        out: list[tuple[str, nn.Module]] = []
        for name, child in children:
            out += layers_of(child, f"{prefix}.{name}" if prefix else name)
        return out
    if type(module).__module__.startswith("torch.nn"):  # a torch container such as MultiheadAttention
        return [(prefix, module)]
    return _traced_layers(module, prefix)


def _traced_layers(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """``layers_of`` for a container with its own forward, read from its ``torch.fx`` graph."""
    where = f"{prefix} ({type(module).__name__})"
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception as exc:
        raise UnsupportedLayerError(f"cannot read the layers of {where}: its forward cannot be traced "
                                    f"({type(exc).__name__}); pass network= (an nn.Sequential of supported layers)"
                                    ) from exc
    out: list[tuple[str, nn.Module]] = []
    current = None  # the node holding the chain's running tensor
    shape_nodes: set = set()  # nodes computing sizes (x.size(0), x.shape[0]) used only as reshape arguments
    for node in graph.nodes:
        if node.op == "placeholder":
            if current is None:
                current = node
            continue
        if node.op == "output":
            if node.args[0] is not current:
                raise UnsupportedLayerError(f"{where}: its forward does not return its chain of layers' output; "
                                            f"pass network=")
            return out
        consumes = current in node.all_input_nodes
        if not consumes or (node.op == "call_method" and node.target == "size") or \
                (node.op == "call_function" and node.target is getattr):
            if node.op == "get_attr":
                raise UnsupportedLayerError(f"{where} uses its parameter {node.target} outside a layer; "
                                            f"pass network=")
            shape_nodes.add(node)
            continue
        if node.op == "call_function" and node.target is operator.getitem and node.args[0] in shape_nodes:
            shape_nodes.add(node)
            continue
        others = [n for n in node.all_input_nodes if n is not current and n not in shape_nodes]
        if others or (node.args and node.args[0] is not current):
            raise UnsupportedLayerError(f"{where}: {node.op} {_name(node.target)} combines the running tensor with "
                                        f"others (a branch or skip connection); rlexplain explains chains of layers, "
                                        f"pass network=")
        path = f"{prefix}.{node.target}" if node.op == "call_module" else f"{prefix}.<{_name(node.target)}>"
        if node.op == "call_module":
            out += layers_of(module.get_submodule(node.target), path)
        elif node.op == "call_function" and node.target in _FUNCTIONS:
            out.append((path, _functional_layer(node)))
        elif node.op == "call_method" and node.target in _METHODS:
            out.append((path, _functional_layer(node)))
        elif node.op == "call_method" and node.target in _IDENTITY_METHODS:
            pass
        elif node.op == "call_method" and node.target in _FLATTENING_METHODS and node.args[-1] == -1 \
                and len(node.args) == 3:
            out.append((path, nn.Flatten()))  # x.view(x.size(0), -1): flatten all but the batch axis
        else:
            raise UnsupportedLayerError(f"{where}: operation {_name(node.target)} has no LRP layer equivalent; "
                                        f"use modules (nn.ReLU, nn.Flatten, ...) or pass network=")
        current = node
    raise UnsupportedLayerError(f"{where}: its forward has no output")


def _functional_layer(node) -> nn.Module:
    cls = _FUNCTIONS[node.target] if node.op == "call_function" else _METHODS[node.target]
    if cls is nn.Flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        if start != 1:
            raise UnsupportedLayerError(f"flatten(start_dim={start}) would merge the batch axis; use start_dim=1")
        return nn.Flatten()
    if cls is nn.LeakyReLU:
        slope = node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope", 0.01)
        return nn.LeakyReLU(slope)
    if cls is nn.ELU:
        return nn.ELU(node.args[1] if len(node.args) > 1 else node.kwargs.get("alpha", 1.0))
    return cls()


def _name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", repr(target))



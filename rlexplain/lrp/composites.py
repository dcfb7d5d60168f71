"""Composites: which rule each layer of a network gets.

A composite knows nothing of how rules compute; it only assigns. Named composites mirror zennit's
``composites.py`` (element-wise activations get :class:`Pass`; ``torch.nn.Linear`` gets Epsilon;
convolutions get the composite's rule; the ``*_flat`` and ``*_box`` composites give the first
linear layer -- convolution or fully connected -- its own rule):

==============================  =============  ======================  =========================
composite                       first layer    other convolutions      fully connected
==============================  =============  ======================  =========================
``epsilon_plus``                ZPlus          ZPlus                   Epsilon
``epsilon_plus_flat`` (default) Flat           ZPlus                   Epsilon
``epsilon_alpha2_beta1``        AlphaBeta(2,1) AlphaBeta(2,1)          Epsilon
``epsilon_alpha2_beta1_flat``   Flat           AlphaBeta(2,1)          Epsilon
``epsilon_gamma_box``           ZBox(0, 1)     Gamma(0.25)             Epsilon
==============================  =============  ======================  =========================

Every composite also gives average pooling zennit's Norm rule and max pooling the winner-takes-all
gradient (zennit's default for it); BatchNorm is folded into the layer before it when the agent is
loaded (:mod:`rlexplain.agents.network`), as zennit's ``SequentialMergeBatchNorm`` canonizer does.

Defaults are zennit's: epsilon 1e-6, gamma 0.25, stabiliser 1e-6; ZBox's box is [0, 1], the
range of the network's input (SB3 scales pixels by 1/255 before the first layer).

A user mapping is a dict from a layer's dotted path, or from a layer type, to a :class:`Rule`;
it takes precedence over the composite it is combined with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from torch import Tensor, nn

from rlexplain.errors import MethodError, UnsupportedLayerError
from rlexplain.lrp.layers import ACTIVATIONS, AVG_POOLS, LINEAR_LAYERS, MAX_POOLS, RESHAPES
from rlexplain.lrp.rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, Rule, WinnerTakesAll, ZBox, ZPlus

LayerMap = Sequence[tuple[tuple[type[nn.Module], ...], Rule]]
UserMapping = Mapping[str | type[nn.Module], Rule]


@dataclass
class Composite:
    """Assigns rules to layers: by path (``name_map``), then first linear layer (``first_map``), then type.

    :param layer_map: ``[(layer types, rule), ...]``; the first matching entry wins.
    :param first_map: the same, for the first Conv2d/Linear layer in forward order.
    :param name_map: ``{dotted layer path: rule}``, overriding the maps above.
    :param name: a label for summaries.
    """

    layer_map: LayerMap
    first_map: LayerMap = ()
    name_map: Mapping[str, Rule] = field(default_factory=dict)
    name: str = "custom"

    def assign(self, layers: Sequence[tuple[str, nn.Module]]) -> list[Rule | None]:
        """One rule per layer (None for pure reshapes), or :class:`UnsupportedLayerError`."""
        rules: list[Rule | None] = []
        first_seen = False
        for path, module in layers:
            rule: Rule | None = self.name_map.get(path)
            is_first = isinstance(module, LINEAR_LAYERS) and not first_seen
            first_seen = first_seen or isinstance(module, LINEAR_LAYERS)
            if rule is None and is_first:
                rule = _lookup(self.first_map, module)
            if rule is None:
                rule = _lookup(self.layer_map, module)
            if rule is None and isinstance(module, RESHAPES):
                rules.append(None)
                continue
            if rule is None:
                raise UnsupportedLayerError(
                    f"unsupported layer {path} ({type(module).__name__}): rlexplain's LRP handles Conv2d, Linear, "
                    f"element-wise activations, average and max pooling, BatchNorm after Conv2d/Linear and "
                    f"Flatten/Identity/Dropout; give it a rule with rules={{'{path}': ...}} or pass network="
                )
            if rule.needs_weights and not isinstance(module, LINEAR_LAYERS):
                raise UnsupportedLayerError(
                    f"rule {rule!r} needs a Conv2d or Linear layer, but {path} is {type(module).__name__}"
                )
            rules.append(rule)
        return rules

    def describe(self) -> dict:
        """A JSON-able description (name and each rule with its parameters)."""
        def rules(m: LayerMap) -> list:
            return [[[t.__name__ for t in types], repr(rule)] for types, rule in m if not isinstance(rule, Pass)]

        return {"name": self.name, "first_layer": rules(self.first_map), "layers": rules(self.layer_map),
                "by_name": {k: repr(v) for k, v in self.name_map.items()}}

    def with_rules(self, mapping: UserMapping) -> Composite:
        """This composite with a user's ``{path or type: rule}`` mapping taking precedence."""
        by_name = {k: v for k, v in mapping.items() if isinstance(k, str)}
        by_type = [((k,), v) for k, v in mapping.items() if isinstance(k, type)]
        return Composite(list(by_type) + list(self.layer_map), list(by_type) + list(self.first_map),
                         {**self.name_map, **by_name}, self.name)


def _lookup(layer_map: LayerMap, module: nn.Module) -> Rule | None:
    return next((rule for types, rule in layer_map if isinstance(module, types)), None)


def _base(conv_rule: Rule, epsilon: float, stabilizer: float = 1e-6) -> list:
    return [(ACTIVATIONS, Pass()), (AVG_POOLS, Norm(stabilizer)), (MAX_POOLS, WinnerTakesAll()),
            ((nn.Conv2d,), conv_rule), ((nn.Linear,), Epsilon(epsilon))]


def epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """ZPlus for convolutions, Epsilon for fully connected layers."""
    return Composite(_base(ZPlus(stabilizer), epsilon, stabilizer), name="epsilon_plus")


def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Flat for the first layer, ZPlus for other convolutions, Epsilon for fully connected layers."""
    return Composite(_base(ZPlus(stabilizer), epsilon, stabilizer), [(LINEAR_LAYERS, Flat(stabilizer))], name="epsilon_plus_flat")


def epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """AlphaBeta(2, 1) for convolutions, Epsilon for fully connected layers."""
    return Composite(_base(AlphaBeta(2.0, 1.0, stabilizer), epsilon, stabilizer), name="epsilon_alpha2_beta1")


def epsilon_alpha2_beta1_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Flat for the first layer, AlphaBeta(2, 1) for other convolutions, Epsilon for fully connected layers."""
    return Composite(_base(AlphaBeta(2.0, 1.0, stabilizer), epsilon, stabilizer), [(LINEAR_LAYERS, Flat(stabilizer))],
                     name="epsilon_alpha2_beta1_flat")


def epsilon_gamma_box(low: float | Tensor = 0.0, high: float | Tensor = 1.0, epsilon: float = 1e-6,
                      gamma: float = 0.25, stabilizer: float = 1e-6) -> Composite:
    """ZBox(low, high) for the first convolution, Gamma for the others, Epsilon for fully connected layers."""
    return Composite(_base(Gamma(gamma, stabilizer), epsilon, stabilizer), [((nn.Conv2d,), ZBox(low, high, stabilizer))],
                     name="epsilon_gamma_box")


COMPOSITES: dict[str, Callable[..., Composite]] = {
    "epsilon_plus": epsilon_plus,
    "epsilon_plus_flat": epsilon_plus_flat,
    "epsilon_alpha2_beta1": epsilon_alpha2_beta1,
    "epsilon_alpha2_beta1_flat": epsilon_alpha2_beta1_flat,
    "epsilon_gamma_box": epsilon_gamma_box,
}


def get_composite(composite: str | Composite | UserMapping, **kwargs) -> Composite:
    """A :class:`Composite` from a name (with keyword parameters), a Composite, or a user mapping.

    A user mapping alone is completed with ``epsilon_plus_flat`` for the layers it does not name.
    """
    if isinstance(composite, Composite):
        return composite
    if isinstance(composite, Mapping):
        return epsilon_plus_flat().with_rules(composite)
    if composite not in COMPOSITES:
        raise MethodError(f"unknown composite {composite!r}: expected one of {', '.join(COMPOSITES)}")
    return COMPOSITES[composite](**kwargs)

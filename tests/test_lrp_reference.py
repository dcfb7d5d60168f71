"""The engine against an independent reference, on SB3's NatureCNN, in float64.

The reference follows the generic recipe of Montavon et al.'s LRP tutorial layer by layer --
``z = rho(W) x``, ``s = R / z``, ``c = rho(W)^T s`` (by autograd), ``R = x * c`` -- with each rule
spelled out as zennit defines it. It shares no code with the engine: no fused weights, no caches,
no transposed convolutions, modified layers built as copies.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import import_zennit
from torch import nn

from rlexplain.errors import UnsupportedLayerError
from rlexplain.explainer import make_method
from rlexplain.lrp import COMPOSITES, LRP, AlphaBeta, Epsilon, Gamma, ZPlus

TOLERANCE = 1e-6

# which rule each of NatureCNN's five weight layers (conv1, conv2, conv3, fc, head) gets, per composite
KINDS = {
    "epsilon_plus": ["zplus", "zplus", "zplus", "eps", "eps"],
    "epsilon_plus_flat": ["flat", "zplus", "zplus", "eps", "eps"],
    "epsilon_alpha2_beta1": ["ab", "ab", "ab", "eps", "eps"],
    "epsilon_alpha2_beta1_flat": ["flat", "ab", "ab", "eps", "eps"],
    "epsilon_gamma_box": ["zbox", "gamma", "gamma", "eps", "eps"],
}


def stab(z, e=1e-6):
    return z + e * torch.where(z >= 0, 1.0, -1.0)


def modified(layer, w_fn, b_fn=None):
    """A copy of ``layer`` with weight ``w_fn(W)`` and bias ``b_fn(b)`` (None: no bias)."""
    m = copy.deepcopy(layer)
    m.weight = nn.Parameter(w_fn(layer.weight.detach()))
    m.bias = None if (b_fn is None or layer.bias is None) else nn.Parameter(b_fn(layer.bias.detach()))
    return m


def leaf(t):
    return t.detach().clone().requires_grad_(True)


def backprop(z, s, *inputs):
    """The tutorial's step 3: c = rho(W)^T s, as the gradient of (z * s).sum() w.r.t. each input."""
    return torch.autograd.grad((z * s.detach()).sum(), inputs, allow_unused=True)


def pos(t):
    return t.clamp(min=0)


def neg(t):
    return t.clamp(max=0)


def reference_step(kind, layer, a, R, gamma=0.25, low=0.0, high=1.0):
    if kind == "eps":
        x = leaf(a)
        z = layer(x)
        (c,) = backprop(z, R / stab(z), x)
        return x * c
    if kind == "flat":
        ones = leaf(torch.ones_like(a))
        z = modified(layer, torch.ones_like)(ones)
        (c,) = backprop(z, R / stab(z), ones)
        return c
    if kind == "zbox":
        x, lb, hb = leaf(a), leaf(a * 0 + low), leaf(a * 0 + high)
        z = layer(x) - modified(layer, pos, pos)(lb) - modified(layer, neg, neg)(hb)
        cx, cl, ch = backprop(z, R / stab(z), x, lb, hb)
        return x * cx + lb * cl + hb * ch
    xp, xn = leaf(pos(a)), leaf(neg(a))
    if kind == "zplus":
        z = modified(layer, pos, pos)(xp) + modified(layer, neg)(xn)
        gp, gn = backprop(z, R / stab(z), xp, xn)
        return xp * gp + xn * gn
    if kind == "ab":  # alpha = 2, beta = 1
        z_up = modified(layer, pos, pos)(xp) + modified(layer, neg)(xn)
        z_dn = modified(layer, neg, neg)(xp) + modified(layer, pos)(xn)
        up = backprop(z_up, R / stab(z_up), xp, xn)
        dn = backprop(z_dn, R / stab(z_dn), xp, xn)
        return 2 * (xp * up[0] + xn * up[1]) - 1 * (xp * dn[0] + xn * dn[1])
    if kind == "gamma":
        z = layer(a)

        def boost(part):
            return lambda w: w + gamma * part(w)

        z_up = modified(layer, boost(pos), boost(pos))(xp) + modified(layer, boost(neg))(xn)
        z_dn = modified(layer, boost(neg), boost(neg))(xp) + modified(layer, boost(pos))(xn)
        up = backprop(z_up, (z > 0) * R / stab(z_up), xp, xn)
        dn = backprop(z_dn, (z < 0) * R / stab(z_dn), xp, xn)
        return xp * (up[0] + dn[0]) + xn * (up[1] + dn[1])
    raise ValueError(kind)


def reference_lrp(layers, kinds, x, weights):
    """LRP through a list of layers; ``kinds`` gives the rule of each weight layer in order."""
    acts = [x]
    for layer in layers:
        acts.append(layer(acts[-1]).detach())
    R = acts[-1] * weights
    kinds = list(kinds)
    for layer, a in zip(reversed(layers), reversed(acts[:-1])):
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            R = reference_step(kinds.pop(), layer, a, R.reshape(layer(a).shape)).detach()
        else:
            R = R.reshape(a.shape)  # activations pass relevance through; Flatten reshapes it
    return R


def relative_error(r, ref):
    return float((r - ref).abs().max() / ref.abs().max())


def observations(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 4, 84, 84), generator=g).double() / 255.0


@pytest.mark.parametrize("composite", list(COMPOSITES))
def test_engine_agrees_with_tutorial_reference_on_nature_cnn(nature_chain, composite):
    x = observations()
    weights = torch.nn.functional.one_hot(torch.tensor([0, 1, 3]), 4).double()
    r, _ = make_method(nature_chain, composite)(x, weights)
    ref = reference_lrp(list(nature_chain.layers), KINDS[composite], x, weights)
    assert relative_error(r, ref) <= TOLERANCE


@pytest.mark.parametrize("kind,rule", [("zplus", ZPlus()), ("ab", AlphaBeta(2, 1)), ("gamma", Gamma(0.25)),
                                       ("eps", Epsilon(1e-6))])
def test_rules_agree_with_reference_on_negative_activations(kind, rule):
    # Tanh activations feed negative inputs to the second and third layers
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 6, 3, 2, padding=1), nn.Tanh(), nn.Conv2d(6, 5, 3, 1), nn.Tanh(),
                        nn.Flatten(), nn.Linear(5 * 3 * 3, 3)).double()
    x = torch.randn(2, 2, 10, 10, dtype=torch.float64)
    weights = torch.nn.functional.one_hot(torch.tensor([2, 0]), 3).double()
    engine = LRP(net, rules={nn.Conv2d: rule, nn.Linear: rule})
    r, _ = engine(x, weights)
    ref = reference_lrp(list(net), [kind] * 3, x, weights)
    assert relative_error(r, ref) <= TOLERANCE


@pytest.mark.parametrize("composite", list(COMPOSITES))
def test_conservative_composites_conserve_relevance_on_bias_free_networks(nature_chain, composite):
    for layer in nature_chain.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias = None
    x = observations()
    weights = torch.nn.functional.one_hot(torch.tensor([2, 1, 0]), 4).double()
    kwargs = {"epsilon": 0.0, "stabilizer": 0.0}
    r, out = make_method(nature_chain, composite, **kwargs)(x, weights)
    q = (out * weights).sum(1)
    np.testing.assert_allclose(r.sum((1, 2, 3)).numpy(), q.numpy(), rtol=1e-9)


@pytest.mark.parametrize("method", list(COMPOSITES) + ["gradient", "gradient_x_input"])
def test_batch_results_equal_per_sample_results(nature_chain, method):
    x = observations(4, seed=2)
    weights = torch.nn.functional.one_hot(torch.tensor([3, 0, 1, 2]), 4).double()
    engine = make_method(nature_chain, method)
    batch, _ = engine(x, weights)
    single = torch.cat([engine(x[i:i + 1], weights[i:i + 1])[0] for i in range(4)])
    assert float((batch - single).abs().max()) <= 1e-12 * float(single.abs().max())


@pytest.mark.parametrize("method", ["epsilon_gamma_box", "gradient"])
def test_all_actions_in_one_call_equal_one_call_per_action(nature_chain, method):
    x = observations(2, seed=3)
    engine = make_method(nature_chain, method)
    trace = engine.forward(x)
    every = engine.relevance(trace, torch.eye(4, dtype=torch.float64).expand(2, 4, 4))
    for a in range(4):
        one = engine.relevance(engine.forward(x), torch.nn.functional.one_hot(torch.tensor([a, a]), 4).double())
        assert float((every[:, a] - one).abs().max()) <= 1e-12 * float(one.abs().max())


def test_unsupported_layer_raises_an_error_naming_its_path_and_type():
    net = nn.Sequential(nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 82 * 82, 2))
    with pytest.raises(UnsupportedLayerError, match=r"unsupported layer 1 \(BatchNorm2d\)"):
        LRP(net)


def test_gradient_times_input_is_not_silently_used_for_unsupported_layers():
    net = nn.Sequential(nn.Linear(3, 3), nn.Softmax(dim=-1))
    with pytest.raises(UnsupportedLayerError, match="Softmax"):
        make_method(net, "epsilon_plus")


def test_engine_agrees_with_zennit(nature_chain):
    import_zennit()
    import zennit.composites as zennit_composites
    from zennit.attribution import Gradient as ZennitGradient

    x = observations(2)
    weights = torch.nn.functional.one_hot(torch.tensor([1, 2]), 4).double()
    for p in nature_chain.parameters():
        p.requires_grad_(False)
    ours = {
        "epsilon_plus_flat": zennit_composites.EpsilonPlusFlat(),
        "epsilon_gamma_box": zennit_composites.EpsilonGammaBox(low=torch.zeros_like(x), high=torch.ones_like(x)),
        "epsilon_alpha2_beta1": zennit_composites.EpsilonAlpha2Beta1(),
    }
    for name, composite in ours.items():
        with ZennitGradient(nature_chain, composite) as attributor:
            _, theirs = attributor(x, lambda out: out * weights)
        r, _ = make_method(nature_chain, name)(x, weights)
        assert relative_error(r, theirs) <= TOLERANCE, name


def test_user_mapping_overrides_the_composite_by_path_and_by_type(nature_chain):
    from rlexplain.lrp import Flat

    x = observations(1)
    weights = torch.nn.functional.one_hot(torch.tensor([1]), 4).double()
    default, _ = make_method(nature_chain, "epsilon_plus")(x, weights)
    head = nature_chain.paths[-1]
    by_path, _ = LRP(nature_chain, "epsilon_plus", rules={head: Epsilon(0.5)})(x, weights)
    assert not torch.allclose(by_path, default)
    ref = reference_lrp(list(nature_chain.layers), ["zplus", "zplus", "zplus", "eps", "eps"], x, weights)
    assert relative_error(default, ref) <= TOLERANCE
    by_type, _ = LRP(nature_chain, "epsilon_plus", rules={nn.Conv2d: Flat()})(x, weights)
    flat_all = reference_lrp(list(nature_chain.layers), ["flat", "flat", "flat", "eps", "eps"], x, weights)
    assert relative_error(by_type, flat_all) <= TOLERANCE

"""Each LRP rule on tiny networks whose relevance is computed by hand (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rlexplain.lrp import LRP, AlphaBeta, Composite, Epsilon, Flat, Gamma, Pass, WSquare, ZBox, ZPlus, stabilize


@pytest.fixture(autouse=True)
def _float64():
    """Hand computations in double precision (restored afterwards for the other test modules)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def linear(weight, bias=None) -> nn.Linear:
    weight = torch.tensor(weight, dtype=torch.float64)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias, dtype=torch.float64))
    return layer


def one_layer_relevance(rule, layer, x, r_out=None):
    """Relevance of one layer's input, with ``r_out`` (default: ones) injected at its output."""
    engine = LRP(nn.Sequential(layer), Composite([((nn.Linear, nn.Conv2d), rule)]))
    trace = engine.forward(torch.tensor([x], dtype=torch.float64))
    r_out = torch.ones_like(trace.outputs) if r_out is None else torch.tensor([r_out], dtype=torch.float64)
    # relevance() multiplies the weights by the outputs: divide them out to inject r_out itself
    return engine.relevance(trace, r_out / trace.outputs)[0]


def test_stabilize_adds_epsilon_with_the_sign_of_z_and_plus_for_zero():
    z = torch.tensor([-2.0, 0.0, 3.0])
    assert stabilize(z, 0.5).tolist() == [-2.5, 0.5, 3.5]


def test_epsilon_rule_matches_hand_computation_and_bias_absorbs_relevance():
    # z = 1*1 + 2*(-1) + 0.5 = -0.5; R_i = x_i w_i R / z with R = z (the output's own value)
    layer = linear([[1.0, -1.0]], [0.5])
    r = one_layer_relevance(Epsilon(0.0), layer, [1.0, 2.0], r_out=[-0.5])
    assert r.tolist() == pytest.approx([1.0, -2.0])
    r_eps = one_layer_relevance(Epsilon(0.25), layer, [1.0, 2.0], r_out=[-0.5])
    assert r_eps.tolist() == pytest.approx([1.0 * -0.5 / -0.75, -2.0 * -0.5 / -0.75])


def test_zplus_rule_uses_positive_weights_and_positive_bias():
    # z+ = 1*1 + 0.5 = 1.5; only x_0 has a positive weight
    r = one_layer_relevance(ZPlus(stabilizer=0.0), linear([[1.0, -1.0]], [0.5]), [1.0, 2.0])
    assert r.tolist() == pytest.approx([1 / 1.5, 0.0])


def test_zplus_rule_pairs_negative_inputs_with_negative_weights():
    # x = [1, -2]: contributions x+ w+ = 1 and x- w- = (-2)(-1) = 2; z = 3 + b+ (0)
    r = one_layer_relevance(ZPlus(stabilizer=0.0), linear([[1.0, -1.0]], [-0.5]), [1.0, -2.0])
    assert r.tolist() == pytest.approx([1 / 3, 2 / 3])


def test_alpha_beta_rule_weights_positive_and_negative_parts():
    # z+ = 1 + b+ 0.5 = 1.5 ; z- = -2 (b- = 0); R_i = 2 z+_i / 1.5 - 1 z-_i / z-
    r = one_layer_relevance(AlphaBeta(2.0, 1.0, stabilizer=0.0), linear([[1.0, -1.0]], [0.5]), [1.0, 2.0])
    assert r.tolist() == pytest.approx([2 * 1 / 1.5, -1.0])


def test_alpha_beta_rejects_parameters_that_do_not_differ_by_one():
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        AlphaBeta(2.0, 2.0)


def test_gamma_rule_boosts_positive_weights_for_positive_outputs():
    # z = 1 + 2 - 0.5 = 2.5 > 0: weights w + 0.5 w+ = [1.5, 1.5], bias b + 0.5 b+ = -0.5 -> z' = 4
    r = one_layer_relevance(Gamma(0.5, stabilizer=0.0), linear([[1.0, 1.0]], [-0.5]), [1.0, 2.0])
    assert r.tolist() == pytest.approx([1.5 / 4, 3.0 / 4])


def test_gamma_rule_boosts_negative_weights_for_negative_outputs():
    # z = 1 - 2 + 0.5 = -0.5 < 0: weights w + 0.5 w- = [1, -1.5], bias 0.5 -> z' = -1.5
    r = one_layer_relevance(Gamma(0.5, stabilizer=0.0), linear([[1.0, -1.0]], [0.5]), [1.0, 2.0])
    assert r.tolist() == pytest.approx([1 / -1.5, -3.0 / -1.5])


def test_zbox_rule_uses_the_box_bounds_and_conserves():
    # numerators x w - l w+ - h w-: [0.5*2 - 0, -0.25 + 1] ; denominator 1.75 (bias cancels)
    r = one_layer_relevance(ZBox(0.0, 1.0, stabilizer=0.0), linear([[2.0, -1.0]], [0.3]), [0.5, 0.25])
    assert r.tolist() == pytest.approx([1 / 1.75, 0.75 / 1.75])
    assert float(r.sum()) == pytest.approx(1.0)


def test_zbox_rule_with_nonzero_lower_bound():
    # l = -1, h = 1: numerators [0.5*2 - (-1)*2, -0.25*1... ] computed term by term
    layer = linear([[2.0, -1.0]], [0.3])
    x, low, high = [0.5, 0.25], -1.0, 1.0
    num = [0.5 * 2 - low * 2 - high * 0, 0.25 * -1 - low * 0 - high * -1]
    r = one_layer_relevance(ZBox(low, high, stabilizer=0.0), layer, x)
    assert r.tolist() == pytest.approx([n / sum(num) for n in num])


def test_flat_rule_spreads_relevance_uniformly_over_the_receptive_field():
    r = one_layer_relevance(Flat(stabilizer=0.0), linear([[5.0, -1.0, 2.0], [0.1, 0.2, 0.3]], [9.0, 9.0]),
                            [7.0, 8.0, 9.0], r_out=[1.0, 2.0])
    assert r.tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_flat_rule_on_a_convolution_counts_each_input_in_its_windows():
    conv = nn.Conv2d(1, 1, kernel_size=2, stride=1, bias=False).double()
    engine = LRP(nn.Sequential(conv), Composite([((nn.Conv2d,), Flat(stabilizer=0.0))]))
    trace = engine.forward(torch.rand(1, 1, 3, 3))
    r = engine.relevance(trace, 1.0 / trace.outputs)[0, 0]  # R = 1 at each of the 4 outputs
    # each output spreads 1/4 over its 2x2 window: corners are in 1 window, edges in 2, centre in 4
    assert r.flatten().tolist() == pytest.approx([0.25, 0.5, 0.25, 0.5, 1.0, 0.5, 0.25, 0.5, 0.25])


def test_wsquare_rule_uses_squared_weights_and_squared_bias():
    r = one_layer_relevance(WSquare(stabilizer=0.0), linear([[1.0, 2.0]], [1.0]), [3.0, 4.0])
    assert r.tolist() == pytest.approx([1 / 6, 4 / 6])


def test_pass_rule_leaves_relevance_of_activations_unchanged():
    net = nn.Sequential(linear([[1.0, 2.0], [-1.0, 1.0]]), nn.ReLU(), linear([[1.0, 1.0]]))
    engine = LRP(net, Composite([((nn.ReLU,), Pass()), ((nn.Linear,), Epsilon(0.0))]))
    trace = engine.forward(torch.tensor([[2.0, 1.0]]))
    # hidden = relu([4, -1]) = [4, 0]; out = 4; all relevance flows through the first hidden unit
    r = engine.relevance(trace, torch.ones(1, 1))
    assert r[0].tolist() == pytest.approx([2.0, 2.0])

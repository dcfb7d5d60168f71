"""Faithfulness evaluation: region perturbation on networks whose true evidence is known, the
randomisation check, the new methods against slow independent implementations, and the command."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from rlexplain import cli, evaluate as ev
from rlexplain.agents import load_agent
from rlexplain.explainer import make_method

from conftest import require


def linear_on_a_patch(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """Q = sum of positive weights times the pixels of one 12x12 patch (all frames): nothing else counts."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4 * 84 * 84, 2, bias=False))
    mask = torch.zeros(4, 84, 84)
    mask[:, 20:32, 40:52] = 1
    with torch.no_grad():
        net[1].weight.copy_(torch.rand(2, 4 * 84 * 84) * mask.view(1, -1))
    return net, mask


def test_the_true_map_falls_faster_under_morf_and_scores_a_higher_abc_than_a_random_map():
    net, mask = linear_on_a_patch()
    x = torch.rand(8, 4, 84, 84)
    fill = torch.zeros_like(x)  # removing evidence: a pixel set to 0 contributes nothing
    true_map = (x * net[1].weight[0].detach().view(4, 84, 84)).sum(1).numpy()  # the exact contributions to Q_0
    random_map = np.random.default_rng(1).random((8, 84, 84))
    rng = np.random.default_rng(0)

    def curves(maps):
        out = {}
        for order in ("morf", "lerf"):
            ranking = ev.region_order(maps, 4, rng, most_relevant_first=order == "morf")
            out[order] = ev.perturbation_outputs(net, x, fill, ranking, 4, 20)[:, :, 0].double().numpy()
        return out

    true, rand = curves(true_map), curves(random_map)
    assert true["morf"][:, 9].mean() < 0.6 * true["morf"][:, 0].mean()  # 9 regions: most of the patch is gone
    assert (true["morf"].mean(0) <= rand["morf"].mean(0) + 1e-9).all()
    np.testing.assert_allclose(true["lerf"], true["lerf"][:, :1].repeat(21, 1))  # LeRF never touches the patch

    def abc(c):
        return ((c["morf"][:, :1] - c["morf"]).mean(1) - (c["lerf"][:, :1] - c["lerf"]).mean(1)).mean()

    assert abc(true) > abc(rand) + 1.0


def test_aopc_matches_a_slow_region_by_region_implementation():
    net, _ = linear_on_a_patch(1)
    x = torch.rand(2, 4, 84, 84)
    fill = torch.rand(2, 4, 84, 84)
    maps = np.random.default_rng(2).random((2, 84, 84))
    ranking = ev.region_order(maps, 7, np.random.default_rng(0), most_relevant_first=True)
    fast = ev.perturbation_outputs(net, x, fill, ranking, 7, 5).numpy()
    for i in range(2):
        scores = [(maps[i, r * 7:(r + 1) * 7, c * 7:(c + 1) * 7].sum(), r, c) for r in range(12) for c in range(12)]
        scores.sort(key=lambda t: -t[0])
        xi = x[i].clone()
        for k in range(6):
            with torch.no_grad():
                np.testing.assert_allclose(fast[i, k], net(xi[None])[0].numpy(), rtol=1e-5, atol=1e-5)
            if k < 5:
                _, r, c = scores[k]
                xi[:, r * 7:(r + 1) * 7, c * 7:(c + 1) * 7] = fill[i, :, r * 7:(r + 1) * 7, c * 7:(c + 1) * 7]


def test_randomisation_check_fails_a_map_proportional_to_the_input_and_passes_the_gradient(monkeypatch):
    import sys

    from rlexplain.methods.gradient import _GradientMethod

    explain_module = sys.modules["rlexplain.explainer"]  # the package's `explain` attribute is the function

    class InputMap(_GradientMethod):
        name = "input"

        def map(self, x, weights):
            return x.clone()

    monkeypatch.setitem(explain_module.OTHER_METHODS, "input", InputMap)
    net = nn.Sequential(nn.Conv2d(4, 8, 8, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 20 * 20, 3))
    x = torch.rand(6, 4, 84, 84)
    actions = np.zeros(6, dtype=int)
    random_net = ev.randomised(net, "all", seed=0)
    from rlexplain.stats import rank_correlation

    def rho(method):
        a = ev.method_maps(net, method, x, actions).sum(1).abs().numpy()
        b = ev.method_maps(random_net, method, x, actions).sum(1).abs().numpy()
        return rank_correlation(a, b)

    assert rho("input") > ev.SANITY_THRESHOLD  # blind to the weights: fails
    assert rho("gradient") < ev.SANITY_THRESHOLD  # depends on them: passes
    top = ev.randomised(net, "top", seed=0)
    assert torch.equal(top[0].weight, net[0].weight) and not torch.equal(top[3].weight, net[3].weight)


def test_integrated_gradients_smoothgrad_and_occlusion_match_slow_independent_implementations():
    scipy_ndimage = require("scipy.ndimage", "the reference blur")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 6, 8, stride=4), nn.Tanh(), nn.Flatten(), nn.Linear(6 * 20 * 20, 3)).double()
    x = torch.rand(2, 4, 84, 84, dtype=torch.float64)
    w = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, -1.0]], dtype=torch.float64)

    def grad_at(point):
        p = point.clone().requires_grad_(True)
        (net(p) * w).sum().backward()
        return p.grad

    ig, _ = make_method(net, "integrated_gradients", steps=8)(x, w)
    slow_ig = x * sum(grad_at(x * ((i + 0.5) / 8)) for i in range(8)) / 8
    torch.testing.assert_close(ig, slow_ig)

    sg, _ = make_method(net, "smoothgrad", samples=5, sigma=0.2, seed=3)(x, w)
    noise = torch.randn((5, *x.shape), generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.2
    torch.testing.assert_close(sg, sum(grad_at(x + noise[s]) for s in range(5)) / 5)

    occ, _ = make_method(net, "occlusion", stride=14, sigma=5.0, blur=3.0)(x, w)
    xs = x.numpy()
    blurred = scipy_ndimage.gaussian_filter(xs, sigma=(0, 0, 3, 3), mode="mirror", truncate=3.0)
    yy, xx = np.mgrid[0:84, 0:84]
    with torch.no_grad():
        base = (net(x) * w).sum(1).numpy()
        num, den = np.zeros((2, 84, 84)), np.zeros((84, 84))
        for r in range(0, 84, 14):
            for c in range(0, 84, 14):
                m = np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 5.0 ** 2))
                perturbed = xs * (1 - m) + blurred * m
                drop = base - (net(torch.as_tensor(perturbed)) * w).sum(1).numpy()
                num += drop[:, None, None] * m
                den += m
    slow = np.repeat((num / den / 4)[:, None], 4, axis=1)
    np.testing.assert_allclose(occ.numpy(), slow, rtol=1e-6, atol=1e-9)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_command_end_to_end_on_the_bundled_agent_and_reused_states(tmp_path, capsys):
    args = ["evaluate", "--agent", "breakout-dqn", "--n-states", "5", "--steps", "8", "--n-sanity", "2",
            "--methods", "epsilon_plus_flat,gradient,random", "--quiet"]
    assert cli.main([*args, "--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert "epsilon_plus_flat" in printed and "relative_time" in printed
    rows = read_csv(tmp_path / "a" / "evaluate.csv")
    assert list(rows[0]) == ev.COLUMNS and [r["method"] for r in rows] == ["epsilon_plus_flat", "gradient", "random"]
    assert {r["sanity"] for r in rows} <= {"pass", "fail"}
    assert next(r for r in rows if r["method"] == "random")["sanity"] == "fail"  # blind to the weights
    curves = read_csv(tmp_path / "a" / "curves.csv")
    assert list(curves[0]) == ev.CURVE_COLUMNS and len(curves) == 3 * 2 * 9
    for name in ("curves.png", "abc.png", "randomisation.png", "states.npz"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["versions"]["torch"] and summary["n_states"] == 5
    assert cli.main([*args, "--states", str(tmp_path / "a" / "states.npz"), "--out", str(tmp_path / "b")]) == 0
    again = read_csv(tmp_path / "b" / "evaluate.csv")
    for r1, r2 in zip(rows, again):
        for key in ("morf_aopc", "lerf_aopc", "abc", "flip_rate", "rho_all"):
            assert r1[key] == r2[key]


def test_bad_evaluate_input_is_a_one_line_error(tmp_path, capsys):
    base = ["evaluate", "--agent", "breakout-dqn", "--n-states", "2", "--quiet"]
    pong_states = tmp_path / "pong.npz"
    from rlexplain.states import save_states

    save_states(pong_states, {"obs": np.zeros((2, 84, 84, 4), np.uint8), "frames": np.zeros((2, 210, 160, 3), np.uint8),
                              "ram": np.zeros((2, 4, 128), np.uint8), "episode": np.zeros(2), "step": np.zeros(2)},
                env_id="PongNoFrameskip-v4", seed=0, reference="x", policy="greedy")
    for extra, message in [(["--methods", "lrp_magic"], "unknown method 'lrp_magic'"),
                           (["--steps", "500"], "more than the 441 regions"),
                           (["--region", "5"], "does not divide the 84x84 input"),
                           (["--states", str(pong_states)], "holds states of PongNoFrameskip-v4")]:
        out = tmp_path / "x"
        assert cli.main([*base, *extra, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
        assert not out.exists()


def test_an_interrupted_evaluation_keeps_the_rows_finished_so_far(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = ev.method_maps

    def interrupt_the_second_method(*args, **kwargs):  # 2 calls time the gradient; the 1st method makes 1 + 3 (sanity) calls
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(ev, "method_maps", interrupt_the_second_method)
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate("breakout-dqn", methods=["gradient", "epsilon_plus_flat"], n_states=3, steps=4, n_sanity=2,
                    out=tmp_path / "run", progress=False)
    rows = read_csv(tmp_path / "run" / "evaluate.csv")
    assert [r["method"] for r in rows] == ["gradient"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "interrupted"


@pytest.mark.parametrize("replace", ["blur", "mean", "noise"])
def test_perturbation_keeps_every_tensor_on_the_network_device(replace):
    """As for the methods (tests/test_explain.py): on the meta device a stray CPU tensor would fail, as on CUDA."""
    import copy

    import torch

    from rlexplain.evaluate import perturbation_outputs, randomised, region_order, replacement

    agent = load_agent("breakout-dqn")
    network = copy.deepcopy(agent.network).to("meta")
    x = torch.rand(3, 4, 84, 84).to("meta")
    fill = replacement(x, replace, 3.0, torch.Generator().manual_seed(0))
    order = region_order(np.random.default_rng(0).random((3, 84, 84)), 4, np.random.default_rng(0), True)
    outputs = perturbation_outputs(network, x, fill, order, 4, 5)
    assert outputs.device.type == "meta" and outputs.shape == (3, 6, agent.n_actions)
    assert next(randomised(agent.network, "all", 0).to("meta").parameters()).device.type == "meta"

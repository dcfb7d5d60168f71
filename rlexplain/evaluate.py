"""How faithful is each explanation method on a given agent? Region perturbation and a sanity check.

**Region perturbation** (Samek et al. 2017, "Evaluating the visualization of what a deep neural network
has learned"): each map is summed over the stacked frames and cut into ``region x region`` pixel
squares; the squares are replaced, one more per step, most relevant first (MoRF) or least relevant
first (LeRF), in every stacked frame, by the state's own Gaussian blur (or its mean, or uniform
noise), and the explained output -- the greedy action's Q-value (DQN; QR-DQN: the mean over
quantiles) or logit (PPO/A2C) -- is measured after each step. ``AOPC = mean_{k=0..K} (f(x_0) - f(x_k))``
per order; a faithful map makes the MoRF curve fall fast and the LeRF curve stay, so
``abc = AOPC_MoRF - AOPC_LeRF`` (higher is more faithful), with its standard error over states. Ties
between regions (exact zeros are common in LRP maps) are broken at random, never by position. Blur is
the default replacement: uniform noise mostly measures how the network reacts to inputs unlike any
it was trained on (out of distribution), which ranks methods differently from agent to agent.

**Cascading model randomisation** (Adebayo et al. 2018, "Sanity checks for saliency maps"): the
weights are re-initialised from the output layer down; a method whose absolute map hardly changes
even when *all* layers are random (Spearman correlation with the original map, average ranks, at or
above :data:`SANITY_THRESHOLD`) explains the input more than the network, as Sixt et al. 2020 show
for z+ and alpha-beta rules.

The computation is here; the figures are drawn by :mod:`rlexplain.report.evaluate_report`.
"""

from __future__ import annotations

import copy
import csv
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rlexplain import devices, envs, runs, stats
from rlexplain.agents import Agent, load_agent
from rlexplain.devices import resolve_device
from rlexplain.errors import MethodError, RunError
from rlexplain.explainer import METHODS, make_method, target_weights
from rlexplain.lrp.composites import COMPOSITES
from rlexplain.methods import gaussian_blur
from rlexplain.states import collect_states, load_states, save_states

#: Every method, the ``random`` baseline included.
DEFAULT_METHODS: tuple[str, ...] = tuple(COMPOSITES) + ("gradient", "gradient_x_input", "integrated_gradients",
                                                         "smoothgrad", "occlusion", "random")
REPLACEMENTS = ("blur", "mean", "noise")
#: A method passes the randomisation check when its map, after all layers are randomised, correlates
#: with the original map below this (Spearman, average ranks, absolute maps summed over stacked frames).
SANITY_THRESHOLD = 0.5
#: Steps of each life left out of the collected states (the ball is not in play yet).
SKIP_LIFE_START = 10
#: Perturbed inputs per forward pass.
CHUNK = 1024
COLUMNS = ["method", "morf_aopc", "lerf_aopc", "abc", "abc_se", "flip_rate", "rho_top", "rho_all", "sanity",
           "seconds_per_state", "relative_time"]
CURVE_COLUMNS = ["method", "order", "step", "mean_output", "se"]


@dataclass
class EvaluateOptions:
    """How to evaluate.

    :ivar methods: the methods to score (names of :data:`rlexplain.explainer.METHODS`).
    :ivar n_states: states collected by greedy play (ignored with ``states``).
    :ivar region: side of the square regions, in input pixels; must divide the input size.
    :ivar steps: K, the regions perturbed one after the other, per order.
    :ivar replace: ``blur`` (the state's own Gaussian blur, sigma :attr:`blur_sigma`), ``mean`` or ``noise``.
    :ivar seed: seeds play, tie-breaking, noise and the randomised weights.
    :ivar n_sanity: states used in the randomisation check.
    :ivar max_steps: agent steps per game while collecting states.
    :ivar device: where maps and perturbed outputs are computed (``cpu``, ``cuda``, ``auto``).
    :ivar tf32: allow TF32 on CUDA (:mod:`rlexplain.devices`).
    """

    methods: Sequence[str] = DEFAULT_METHODS
    n_states: int = 128
    region: int = 4
    steps: int = 100
    replace: str = "blur"
    blur_sigma: float = 3.0
    seed: int = 0
    n_sanity: int = 16
    max_steps: int = envs.MAX_EPISODE_STEPS
    device: str = "cpu"
    tf32: bool = False
    progress: bool = True

    def check(self, input_hw: tuple[int, int]) -> None:
        """Raise a one-line error naming the first bad option (before anything is computed)."""
        resolve_device(self.device)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise MethodError(f"unknown method {unknown[0] if unknown else '(none)'!r}: expected some of "
                              f"{', '.join(METHODS)}")
        h, w = input_hw
        if self.region < 1 or h % self.region or w % self.region:
            raise RunError(f"--region {self.region} does not divide the {h}x{w} input: use a divisor such as 2, 4, 6, "
                           f"7 or 12 (84x84)")
        regions = (h // self.region) * (w // self.region)
        if not 1 <= self.steps <= regions:
            raise RunError(f"--steps {self.steps} is more than the {regions} regions of {self.region}x{self.region} "
                           f"pixels (or less than 1)")
        if self.replace not in REPLACEMENTS:
            raise RunError(f"unknown --replace {self.replace!r}: expected one of {', '.join(REPLACEMENTS)}")
        if self.n_states < 1 or self.n_sanity < 0:
            raise RunError("--n-states must be at least 1 and --n-sanity at least 0")


@dataclass
class EvaluateResult:
    """The output folder, one row per method (:data:`COLUMNS`) and the perturbation curves (:data:`CURVE_COLUMNS`)."""

    out: Path
    rows: list[dict] = field(default_factory=list)
    curves: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def table(self) -> str:
        """The rows as an aligned text table, most faithful (highest abc) first."""
        keys = ["abc", "abc_se", "morf_aopc", "lerf_aopc", "flip_rate", "rho_top", "rho_all", "sanity", "relative_time"]
        width = max(len("method"), *(len(r["method"]) for r in self.rows))
        lines = [f"{'method':<{width}s}  " + "  ".join(f"{k:>13s}" for k in keys)]
        for row in sorted(self.rows, key=lambda r: -r["abc"]):
            cells = [f"{row[k]:13.4f}" if isinstance(row[k], float) else f"{row[k]!s:>13s}" for k in keys]
            lines.append(f"{row['method']:<{width}s}  " + "  ".join(cells))
        return "\n".join(lines)


# -- the measures, as functions of tensors -------------------------------------------------------------
def region_order(maps: np.ndarray, region: int, rng: np.random.Generator, most_relevant_first: bool) -> np.ndarray:
    """Per state, the regions of ``region x region`` pixels in perturbation order (N, G).

    :param maps: (N, H, W) relevance summed over the stacked frames. Ties are broken at random.
    """
    n, h, w = maps.shape
    scores = maps.reshape(n, h // region, region, w // region, region).sum((2, 4)).reshape(n, -1)
    tiebreak = rng.random(scores.shape)
    return np.lexsort((tiebreak, -scores if most_relevant_first else scores), axis=-1)


def replacement(x: Tensor, kind: str, blur_sigma: float, generator: torch.Generator) -> Tensor:
    """What perturbed regions are replaced with: the state's own blur, its per-frame mean, or uniform noise."""
    if kind == "blur":
        return gaussian_blur(x, blur_sigma)
    if kind == "mean":
        return x.mean((-2, -1), keepdim=True).expand_as(x)
    return torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)  # the same noise on every device


@torch.no_grad()
def perturbation_outputs(network: nn.Module, x: Tensor, fill: Tensor, order: np.ndarray, region: int,
                         steps: int) -> Tensor:
    """Outputs (N, K+1, n_out) of the network on each state with its first k regions of ``order``
    replaced by ``fill``, for k = 0..K (k = 0: the state itself)."""
    n, c, h, w = x.shape
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(order.shape[1])[None].repeat(n, 0), axis=1)
    rank = torch.as_tensor(rank, device=x.device).view(n, h // region, w // region)
    rank = rank.repeat_interleave(region, 1).repeat_interleave(region, 2)  # (N, H, W): each pixel's region rank
    k = torch.arange(steps + 1, device=x.device)
    outputs = []
    pairs = [(i, j) for i in range(n) for j in range(steps + 1)]
    for start in range(0, len(pairs), CHUNK):
        idx = torch.as_tensor(pairs[start: start + CHUNK], device=x.device)
        masks = (rank[idx[:, 0]] < k[idx[:, 1]].view(-1, 1, 1)).unsqueeze(1)  # (B, 1, H, W)
        batch = torch.where(masks, fill[idx[:, 0]], x[idx[:, 0]])
        outputs.append(network(batch.contiguous(memory_format=torch.channels_last)))
    return torch.cat(outputs).view(n, steps + 1, -1)


def randomised(network: nn.Module, layers: str, seed: int) -> nn.Module:
    """A copy of ``network`` with the weights of its last weight layer (``top``) or of all of them
    (``all``) re-initialised by the layers' own initialisers (Adebayo et al.'s cascading randomisation)."""
    copied = copy.deepcopy(network)
    weighted = [m for m in copied.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    torch.manual_seed(seed)
    for module in (weighted[-1:] if layers == "top" else reversed(weighted)):
        module.reset_parameters()
    return copied


def method_maps(network: nn.Module, method: str, x: Tensor, actions: np.ndarray, batch: int = 64) -> Tensor:
    """The method's maps (N, C, H, W) of the given actions' outputs, on the CPU (computed where ``network`` is)."""
    explainer = make_method(network, method, dtype=torch.float32)
    parts = []
    for start in range(0, len(x), batch):
        xb = x[start: start + batch]
        trace = explainer.forward(xb)
        weights = target_weights("action", actions[start: start + batch], trace.outputs.shape[-1])
        parts.append(explainer.relevance(trace, weights).detach().float().cpu())
    return torch.cat(parts)


# -- the command -------------------------------------------------------------------------------------
def evaluate(agent: str | Agent, env: str | None = None, options: EvaluateOptions | None = None, *,
             states: str | Path | None = None, out: str | Path | None = None, force: bool = False,
             command: Sequence[str] | None = None, **option_values: Any) -> EvaluateResult:
    """Score explanation methods on one agent by region perturbation and model randomisation.

    :param agent: an :class:`Agent`, or anything :func:`~rlexplain.agents.load_agent` accepts.
    :param env: the game (default: the agent's own).
    :param options: an :class:`EvaluateOptions`, or its fields as keywords.
    :param states: a ``states.npz`` (from ``evaluate`` or ``compare``) to reuse instead of playing.
    :param out: the output folder (default ``runs/evaluate-<Game>-<agent>-<time>``).
    :returns: the rows, also written to ``evaluate.csv`` as each method finishes (an interrupted run
        keeps the finished rows), ``curves.csv`` and ``summary.json``.
    """
    from tqdm.auto import tqdm

    options = options or EvaluateOptions(**option_values)
    if not isinstance(agent, Agent):
        agent = load_agent(agent, env=env)
    env_id = envs.resolve_env_id(env) if env else agent.env_id
    if env_id is None:
        raise RunError(f"agent {agent.name} does not say which game it plays; pass --env")
    options.check(agent.input_shape[-2:])
    state_data = load_states(states, env_id) if states is not None else None
    if state_data is not None:
        agent.preprocess(state_data["obs"][:1])  # states of another frame stack or size: a one-line AgentError
    out = runs.prepare_run_dir(Path(out) if out else runs.default_run_dir(env_id, "evaluate", agent.name), force,
                               keep=[states, agent.path])
    summary = runs.new_summary(
        "evaluate", command, env_id=env_id, game=envs.game_name(env_id), agent=agent.describe(),
        options=asdict(options), device=devices.describe(resolve_device(options.device), options.tf32),
        states=str(states) if states else "collected", sanity_threshold=SANITY_THRESHOLD,
        measured_output="Q-value of the greedy action" if agent.output_kind == "q_values" else
        "logit of the greedy action")
    result = EvaluateResult(out, summary=summary)
    with runs.tracked(out, summary):
        if state_data is None:
            state_data = collect_states(agent, env_id, options.n_states, options.seed, policy="greedy", spread=True,
                                        skip_life_start=SKIP_LIFE_START, max_steps=options.max_steps,
                                        progress=options.progress)
        save_states(out / "states.npz", state_data, env_id=env_id, seed=options.seed,
                    reference=str(state_data.get("reference", agent.name)), policy=str(state_data.get("policy",
                                                                                                     "greedy")))
        with devices.precision(options.tf32):
            _run(agent, state_data, options, result, tqdm)
        summary.update(n_states=int(len(state_data["obs"])), rows=result.rows)
    return result


def _run(agent: Agent, state_data: dict, options: EvaluateOptions, result: EvaluateResult, tqdm) -> None:
    device = resolve_device(options.device)
    network = copy.deepcopy(agent.network).eval()
    for p in network.parameters():
        p.requires_grad_(False)
    sanity_idx = np.unique(np.round(np.linspace(0, len(state_data["obs"]) - 1,
                                                min(options.n_sanity, len(state_data["obs"])))).astype(int))
    # randomised on the CPU, so the same seed gives the same weights on every device
    randomised_nets = {which: randomised(network, which, options.seed).to(device) for which in ("top", "all")} \
        if len(sanity_idx) else {}
    network = network.to(device)
    x = agent.preprocess(state_data["obs"]).to(device)
    n = len(x)
    with torch.no_grad():
        base = network(x)
    actions = base.argmax(-1).cpu().numpy()
    generator = torch.Generator().manual_seed(options.seed)
    fill = replacement(x, options.replace, options.blur_sigma, generator)
    # the plain gradient's cost, measured in this run (after a warm-up call), is the unit of relative_time
    method_maps(network, "gradient", x[:2], actions[:2])
    started = time.perf_counter()
    method_maps(network, "gradient", x, actions)
    gradient_seconds = (time.perf_counter() - started) / n
    rows_file = open(result.out / "evaluate.csv", "w", newline="")
    curves_file = open(result.out / "curves.csv", "w", newline="")
    rows_csv = csv.DictWriter(rows_file, COLUMNS)
    curves_csv = csv.DictWriter(curves_file, CURVE_COLUMNS)
    rows_csv.writeheader()
    curves_csv.writeheader()
    try:
        for method in tqdm(list(options.methods), desc="methods", disable=not options.progress):
            started = time.perf_counter()
            maps = method_maps(network, method, x, actions)
            seconds = (time.perf_counter() - started) / n
            summed = maps.sum(1).numpy()
            rng = np.random.default_rng(options.seed)
            y = {}
            flips = None
            for order in ("morf", "lerf"):
                ranking = region_order(summed, options.region, rng, most_relevant_first=order == "morf")
                outputs = perturbation_outputs(network, x, fill, ranking, options.region, options.steps).cpu()
                y[order] = outputs[torch.arange(n), :, torch.as_tensor(actions)].double().numpy()  # (N, K+1)
                if order == "morf":
                    flips = (outputs[:, 1:].argmax(-1).numpy() != actions[:, None]).mean()
                mean, se = y[order].mean(0), y[order].std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(y[order].shape[1])
                for k in range(options.steps + 1):
                    curve = {"method": method, "order": order, "step": k, "mean_output": float(mean[k]),
                             "se": float(se[k])}
                    result.curves.append(curve)
                    curves_csv.writerow({k2: _fmt(v) for k2, v in curve.items()})
            aopc = {o: (y[o][:, :1] - y[o]).mean(1) for o in y}  # per state
            abc = aopc["morf"] - aopc["lerf"]
            rho = {}
            if randomised_nets:  # the same call on the original and the randomised networks (seeded methods
                # such as the random baseline then draw the same noise: a map blind to the weights fails, as it should)
                original = method_maps(network, method, x[sanity_idx], actions[sanity_idx]).sum(1).abs().numpy()
            for which, net in randomised_nets.items():
                random_maps = method_maps(net, method, x[sanity_idx], actions[sanity_idx]).sum(1).abs().numpy()
                rho[which] = stats.rank_correlation(original, random_maps)
            row = {"method": method, "morf_aopc": float(aopc["morf"].mean()), "lerf_aopc": float(aopc["lerf"].mean()),
                   "abc": float(abc.mean()), "abc_se": float(abc.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
                   "flip_rate": float(flips), "rho_top": rho.get("top", float("nan")),
                   "rho_all": rho.get("all", float("nan")),
                   "sanity": ("pass" if rho["all"] < SANITY_THRESHOLD else "fail") if "all" in rho else "",
                   "seconds_per_state": seconds, "relative_time": seconds / gradient_seconds}
            result.rows.append(row)
            rows_csv.writerow({k: _fmt(v) for k, v in row.items()})
            rows_file.flush()
            curves_file.flush()
    finally:
        rows_file.close()
        curves_file.close()


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v

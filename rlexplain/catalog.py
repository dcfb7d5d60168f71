"""The names the command line offers -- methods, targets -- without importing torch.

``rlexplain --help`` and argument checking use these; :mod:`rlexplain.explainer` checks at import that
they agree with the method registry, so the two cannot drift apart.
"""

COMPOSITE_NAMES = ("epsilon_plus", "epsilon_plus_flat", "epsilon_alpha2_beta1", "epsilon_alpha2_beta1_flat",
                   "epsilon_gamma_box")
OTHER_METHOD_NAMES = ("gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "occlusion", "random")
METHOD_NAMES = COMPOSITE_NAMES + OTHER_METHOD_NAMES
#: Methods that are baselines for evaluation, not explanations (refused by record, compare, strategies).
BASELINES = ("random",)
#: The default method, chosen from evidence (``scripts/evaluate_bundled.py``; the README's "Which map to believe").
DEFAULT_METHOD = "epsilon_gamma_box"
DEFAULT_METHOD_REASON = (
    "epsilon_gamma_box is the default because, in `rlexplain evaluate` on the bundled checkpoints (Breakout DQN and "
    "Pong PPO series), it was the most faithful method (region perturbation with blurred 4x4 regions: highest abc, "
    "each game weighted equally) among those that pass the model-randomisation sanity check on every checkpoint and "
    "cost at most 2x the plain gradient; occlusion scored higher but costs ~150x, integrated gradients and gradient "
    "x input fail the sanity check on Breakout. Agents disagree: on breakout-dqn@1000000 and the last Pong "
    "checkpoints epsilon_plus_flat scored as high or higher. See the README's faithfulness table, and run "
    "`rlexplain evaluate` on your own agent."
)

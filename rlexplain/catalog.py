"""The names the command line offers -- methods, targets -- without importing torch.

``rlexplain --help`` and argument checking use these; :mod:`rlexplain.explainer` checks at import that
they agree with the method registry, so the two cannot drift apart.
"""

COMPOSITE_NAMES = ("epsilon_plus", "epsilon_plus_flat", "epsilon_alpha2_beta1", "epsilon_alpha2_beta1_flat",
                   "epsilon_gamma_box")
OTHER_METHOD_NAMES = ("gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "occlusion", "random")
METHOD_NAMES = COMPOSITE_NAMES + OTHER_METHOD_NAMES
#: The default method (see the README's faithfulness table for the evidence behind it).
DEFAULT_METHOD = "epsilon_plus_flat"

"""Importing zennit, the reference LRP implementation the tests and benchmarks compare the engine with.

zennit 0.5.1 (its last release for Python 3.11.7) imports torchvision at import time, only for the
ResNet canonizers of ``zennit.torchvision``, which rlexplain never uses; and a torchvision wheel must
match the torch build exactly (PyPI's does not load beside a CPU build). Where torchvision is missing,
:func:`import_zennit` puts a stand-in module declaring the two ResNet block classes zennit names (and
nothing else) in its place before importing zennit.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from torch import nn


def import_zennit() -> Any:
    """The ``zennit`` package (raises ImportError when it is not installed)."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        if "torchvision" not in sys.modules:
            resnet = types.ModuleType("torchvision.models.resnet")
            resnet.BasicBlock = type("BasicBlock", (nn.Module,), {})
            resnet.Bottleneck = type("Bottleneck", (nn.Module,), {})
            models = types.ModuleType("torchvision.models")
            models.resnet = resnet
            stand_in = types.ModuleType("torchvision")
            stand_in.models = models
            sys.modules.update({"torchvision": stand_in, "torchvision.models": models,
                                "torchvision.models.resnet": resnet})
    return importlib.import_module("zennit")

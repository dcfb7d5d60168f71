"""Shared fixtures: small networks, SB3 policies built in memory, and the bundled agents."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def nature_dqn_policy(n_actions: int = 4, seed: int = 0):
    """An SB3 DQN CnnPolicy (NatureCNN + q_net) with random weights, built without an env."""
    from stable_baselines3.dqn.policies import CnnPolicy

    torch.manual_seed(seed)
    space = gym.spaces.Box(0, 255, (4, 84, 84), dtype=np.uint8)
    return CnnPolicy(space, gym.spaces.Discrete(n_actions), lr_schedule=lambda _: 1e-4)


@pytest.fixture
def nature_chain():
    """SB3's NatureCNN + Q head as an rlexplain Chain, float64, random weights and biases."""
    from rlexplain.agents import build_networks

    network, _ = build_networks(nature_dqn_policy(), "dqn")
    return network.double()


def fake_atari_env(n_actions: int = 4) -> gym.Env:
    """An env with an Atari agent's spaces (84x84x4 uint8, n actions) and random frames: enough to build SB3 models."""

    class FakeAtari(gym.Env):
        observation_space = gym.spaces.Box(0, 255, (84, 84, 4), dtype=np.uint8)
        action_space = gym.spaces.Discrete(n_actions)

        def reset(self, seed=None, options=None):
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 0.0, False, False, {}

    return FakeAtari()


def require(module: str, why: str):
    """Import ``module``, or skip -- except under CI (``RLEXPLAIN_CI=1``, set by ``.ci/run``), where a
    missing test dependency is a failure: the checks it enables are part of the project's proof."""
    import importlib
    import os

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("RLEXPLAIN_CI") == "1":
            pytest.fail(f"{module} is needed for {why} and must be installed in CI ({exc})")
        pytest.skip(f"{module} not installed ({why})")


def import_zennit():
    """zennit (through :func:`rlexplain.lrp.zennit_reference.import_zennit`), or skip -- a failure under CI."""
    import os

    from rlexplain.lrp.zennit_reference import import_zennit as load

    try:
        return load()
    except ImportError as exc:
        if os.environ.get("RLEXPLAIN_CI") == "1":
            pytest.fail(f"zennit is needed for the cross-check of the LRP engine and must be installed in CI ({exc})")
        pytest.skip(f"zennit not installed ({exc})")


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by Playwright: the system's Chromium (Debian's ``chromium`` package), never a
    downloaded one. Skipped where either is missing, except under CI, where that is a failure."""
    import os
    import shutil

    sync_api = require("playwright.sync_api", "the browser tests")
    executable = os.environ.get("RLEXPLAIN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        if os.environ.get("RLEXPLAIN_CI") == "1":
            pytest.fail("no Chromium for the browser tests: .ci/run installs Debian's chromium")
        pytest.skip("no Chromium installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield chromium
        chromium.close()


class PageWatch:
    """A page with everything it logged and requested, for asserting that nothing went wrong or left the page."""

    def __init__(self, browser, url: str, viewport=(1100, 1000)) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(url)

    def outside(self) -> list[str]:
        """Requests that left the page's own file (anything but file:, data: and blob: URLs)."""
        return [r for r in self.requests if not r.startswith(("file:", "data:", "blob:"))]

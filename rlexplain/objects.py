"""Named objects from the emulator's RAM, as boxes on the native screen and masks on the 84x84 input.

Built in (RAM layouts as documented by OCAtari and AtariARI):

* Breakout -- ``paddle`` (x = ram[72] - 47), ``ball`` (x = ram[99] - 49, y = ram[101] + 9; absent
  until FIRE and between lives), ``bricks`` (a 6x18 bitmap packed in ram[0:36] the way the Atari
  playfield registers are), ``hud`` (score, lives and player number at the top);
* Pong -- ``player`` (right paddle, y = ram[51] - 13), ``enemy`` (left paddle, y = ram[50] - 15),
  ``ball`` (x = ram[49] - 49, y = ram[54] - 14), ``hud`` (both scores).

Other games use OCAtari's RAM extraction when the optional ``ocatari`` package is installed (its
object classes become the categories); without it only grid regions are available.

A box ``(x, y, w, h)`` in native 160x210 pixels covers the input pixels whose area-resampling
footprint (SB3's ``WarpFrame`` uses ``cv2.INTER_AREA``) overlaps it. Each stacked frame gets the
boxes of its own step, so relevance on the ball's previous positions counts for the ball.
"""

from __future__ import annotations

import functools
import importlib
import math
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rlexplain.envs import NATIVE_HEIGHT, NATIVE_WIDTH, SCREEN_SIZE, game_name

Box = tuple[float, float, float, float]
Labelled = list[tuple[str, Box]]

#: One colour per object category, used by every plot, the video and the viewer. Chosen away from the
#: heatmap's red-yellow (evidence for) and blue-cyan (against), so boxes and lines never read as relevance.
CATEGORY_COLOURS: dict[str, tuple[int, int, int]] = {
    "paddle": (44, 160, 44), "player": (44, 160, 44), "ball": (227, 119, 194), "bricks": (140, 86, 75),
    "enemy": (148, 103, 189), "hud": (127, 127, 127), "other": (188, 189, 34),
}
_SPARE_COLOURS = [(23, 190, 207), (255, 152, 150), (197, 176, 213), (196, 156, 148), (219, 219, 141),
                  (158, 218, 229), (247, 182, 210)]


#: RAM states whose masks are kept: enough for the stacked frames of many games recorded side by side
#: (``record --n-envs``), each (size x size) mask per category a few kB.
_MASK_CACHE = 256


def category_colour(name: str) -> tuple[int, int, int]:
    """The RGB colour of a category (OCAtari's classes get stable spare colours by name)."""
    if name in CATEGORY_COLOURS:
        return CATEGORY_COLOURS[name]
    return _SPARE_COLOURS[sum(map(ord, name)) % len(_SPARE_COLOURS)]


def box_to_input(box: Box, size: int = SCREEN_SIZE) -> tuple[slice, slice]:
    """(rows, cols) slices of the input pixels a native box touches under area resampling."""
    x, y, w, h = box
    sx, sy = size / NATIVE_WIDTH, size / NATIVE_HEIGHT
    c0, c1 = max(0, math.floor(x * sx)), min(size, math.ceil((x + w) * sx))
    r0, r1 = max(0, math.floor(y * sy)), min(size, math.ceil((y + h) * sy))
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


class ObjectExtractor:
    """Base class: categories, boxes from one RAM state, and masks for a stack of frames."""

    categories: tuple[str, ...] = ()
    source = "ram"

    def boxes(self, ram: np.ndarray) -> Labelled:
        """Labelled native-coordinate boxes present in this RAM state."""
        raise NotImplementedError

    def frame_masks(self, ram: np.ndarray, size: int = SCREEN_SIZE) -> dict[str, np.ndarray]:
        """Category -> bool (size, size) mask of one RAM state's boxes on the input."""
        key = (bytes(np.asarray(ram, dtype=np.uint8)), size)
        cache = self.__dict__.setdefault("_mask_cache", {})
        if key not in cache:
            masks = {c: np.zeros((size, size), dtype=bool) for c in self.categories}
            for label, box in self.boxes(ram):
                rows, cols = box_to_input(box, size)
                masks[label][rows, cols] = True
            if len(cache) >= _MASK_CACHE:  # consecutive steps share all but one of their stacked frames
                cache.pop(next(iter(cache)))
            cache[key] = masks
        return cache[key]

    def masks(self, history: Sequence[np.ndarray] | None, n_frames: int, size: int = SCREEN_SIZE) -> dict[str, np.ndarray]:
        """Category -> bool (size, size, n_frames) masks; frame i uses the RAM of its own step.

        :param history: RAM states of the last steps, oldest first, the newest belonging to the
            newest stacked frame; missing older states (start of an episode, where the stack is
            zero-filled) leave those frames' masks empty. None gives empty masks (for column lists).
        """
        masks = {c: np.zeros((size, size, n_frames), dtype=bool) for c in self.categories}
        for i, ram in enumerate(list(history or [])[-n_frames:][::-1]):
            for label, mask in self.frame_masks(ram, size).items():
                masks[label][..., n_frames - 1 - i] = mask
        return masks

    def describe(self) -> dict:
        return {"source": self.source, "extractor": type(self).__name__, "categories": list(self.categories)}


class BreakoutObjects(ObjectExtractor):
    """Breakout: paddle, ball, bricks, hud."""

    categories = ("paddle", "ball", "bricks", "hud")
    HUD: Labelled = [("hud", (36, 5, 44, 10)), ("hud", (100, 5, 12, 10)), ("hud", (136, 5, 4, 10))]
    #: bit of each of the six playfield bytes per brick column, left to right (byte group, bit)
    _COLUMNS = ([(5, 6)] + [(k, b) for k in (4, 3, 2, 1) for b in (0, 2, 4, 6)] + [(0, 0), (0, 2), (0, 4)])
    _ORDER = (0, 4, 3, 2, 1, 5, 6, 7, 8, 11, 12, 16, 15, 14, 13, 17, 18, 19)

    def bricks(self, ram: np.ndarray) -> np.ndarray:
        """The 6x18 brick bitmap (row 0 at the top, y = 57; column 0 at x = 8)."""
        return self._bricks(bytes(np.asarray(ram[:36], dtype=np.uint8)))

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def _bricks(packed: bytes) -> np.ndarray:
        groups = np.frombuffer(packed, dtype=np.uint8).reshape(6, 6)  # groups[k, j]: byte k of playfield row j
        columns, order = BreakoutObjects._COLUMNS, BreakoutObjects._ORDER
        bits = np.array([[(groups[k, j] >> b) & 1 for k, b in columns] for j in range(6)], dtype=bool)
        return bits[::-1][:, list(order)]

    def boxes(self, ram: np.ndarray) -> Labelled:
        out: Labelled = [("paddle", (int(ram[72]) - 47, 189, 16, 4))]
        if ram[101] != 0 and int(ram[101]) + 9 <= 196:
            # the frame skip max-pools two frames: a 1-pixel margin keeps the ball's smear inside
            out.append(("ball", (int(ram[99]) - 49 - 1, int(ram[101]) + 9 - 1, 4, 6)))
        for r, c in zip(*np.nonzero(self.bricks(ram))):
            out.append(("bricks", (8 + 8 * int(c), 57 + 6 * int(r), 8, 6)))
        return out + self.HUD


class PongObjects(ObjectExtractor):
    """Pong: player (right paddle), enemy (left paddle), ball, hud."""

    categories = ("player", "enemy", "ball", "hud")
    HUD: Labelled = [("hud", (24, 1, 24, 20)), ("hud", (104, 1, 24, 20))]

    @staticmethod
    def _paddle(x: int, top: int) -> Box:
        # 16 rows tall, clipped by the walls (y 34 and 194); 2 rows of margin because paddles move
        # between the RAM read and the max-pooled frames the agent sees
        y0, y1 = max(top - 2, 34), min(top + 16 + 2, 194)
        return (x, y0, 4, max(y1 - y0, 0))

    def boxes(self, ram: np.ndarray) -> Labelled:
        out: Labelled = [("player", self._paddle(140, int(ram[51]) - 13))]
        if ram[50] > 18:
            out.append(("enemy", self._paddle(16, int(ram[50]) - 15)))
        if ram[54] != 0:
            out.append(("ball", (int(ram[49]) - 49 - 1, int(ram[54]) - 14 - 1, 4, 6)))
        return out + self.HUD


class OCAtariObjects(ObjectExtractor):
    """Any game OCAtari's RAM extraction supports (needs the optional ``ocatari`` package).

    Categories are OCAtari's object class names in lower case; HUD objects are grouped as ``hud``.
    """

    source = "ocatari-ram"

    def __init__(self, game: str) -> None:
        self.module = _import_ocatari_ram(game.lower())
        self._init = next(getattr(self.module, n) for n in dir(self.module) if n.startswith("_init_objects"))
        self._detect = next(getattr(self.module, n) for n in dir(self.module)
                            if n.startswith("_detect_objects") and not n.endswith("_raw"))
        names = getattr(self.module, "MAX_NB_OBJECTS_HUD", None)
        classes = [getattr(self.module, n) for n in names] if names else [type(o) for o in self._init(hud=True)]
        self.categories = tuple(dict.fromkeys(
            self._category(c()) for c in classes if c.__name__ != "NoObject"))

    @staticmethod
    def _category(obj) -> str:
        return "hud" if getattr(obj, "hud", False) else type(obj).__name__.lower()

    def boxes(self, ram: np.ndarray) -> Labelled:
        objects = self._init(hud=True)  # fresh objects: each RAM state is read on its own
        # OCAtari's arithmetic on RAM bytes assumes numpy 1's promotion of uint8 to int
        self._detect(objects, np.asarray(ram).astype(np.int64), hud=True)
        out: Labelled = []
        for obj in objects:
            if obj is None or type(obj).__name__ == "NoObject":
                continue
            (x, y), (w, h) = obj.xy, obj.wh
            label = self._category(obj)
            if w > 0 and h > 0 and label in self.categories:
                out.append((label, (x, y, w, h)))
        return out


def _import_ocatari_ram(game: str):
    """``ocatari.ram.<game>``. OCAtari's package ``__init__`` files also import its vision stack
    (scikit-image, ...), which RAM extraction does not need; when that import fails, the game's
    module is loaded under bare ``ocatari`` and ``ocatari.ram`` packages instead."""
    try:
        return importlib.import_module(f"ocatari.ram.{game}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("ocatari.ram."):
            raise  # a game OCAtari does not cover
        root = _ocatari_location()
        if root is None:
            raise
    for name in [m for m in sys.modules if m == "ocatari" or m.startswith("ocatari.")]:
        del sys.modules[name]  # drop the half-imported package
    for name, path in (("ocatari", root), ("ocatari.ram", str(Path(root) / "ram"))):
        package = types.ModuleType(name)
        package.__path__ = [path]
        sys.modules[name] = package
    # game modules import GameObject from the subpackage, which we did not execute
    sys.modules["ocatari.ram"].GameObject = importlib.import_module("ocatari.ram.game_objects").GameObject
    return importlib.import_module(f"ocatari.ram.{game}")


def _ocatari_location() -> str | None:
    for entry in sys.path:
        candidate = Path(entry or ".") / "ocatari" / "ram"
        if candidate.is_dir():
            return str(candidate.parent)
    return None


BUILT_IN = {"Breakout": BreakoutObjects, "Pong": PongObjects}


def extractor_for(env_id: str) -> ObjectExtractor | None:
    """The object extractor for a game: built in, else OCAtari's if installed, else None (grid regions only)."""
    game = game_name(env_id)
    if game in BUILT_IN:
        return BUILT_IN[game]()
    try:
        return OCAtariObjects(game)
    except (ImportError, StopIteration, AttributeError):  # not installed, or a game OCAtari does not cover
        return None


def ram_events(game: str, ram: np.ndarray) -> dict[str, np.ndarray]:
    """Game events read from a sequence of RAM states (T, 128), as (T,) bool arrays.

    Breakout: ``paddle hit`` -- the ball (y = ram[101]) turns from falling to rising low on the screen,
    where only the paddle sends it back. Other games: none yet (rewards and lost lives come from the CSV).
    """
    if game == "Breakout" and len(ram) > 2:
        y = ram[:, 101].astype(int)
        dy = np.diff(y, prepend=y[:1])
        turned = (np.roll(dy, 1) > 0) & (dy < 0)
        turned[0] = False
        return {"paddle hit": turned & (y + 9 > 170)}
    return {}

"""Drawing relevance: colour maps, the 84x84 map back on the native frame, and the video frame layout.

Everything here is numpy + OpenCV on uint8 images, cheap enough to run on every agent step.

* :func:`to_native` undoes the preprocessing's geometry: SB3's ``WarpFrame`` resizes the 160x210
  screen to 84x84 (``cv2.INTER_AREA``), so a map on the input is resized back to 160x210.
* :class:`ColourScale` gives a normalisation that does not flicker: it follows the largest recent
  relevance with a peak-hold that decays slowly, instead of re-normalising every frame.
* Colours diverge: positive relevance red to yellow, negative blue to cyan; opacity grows with
  ``|R|`` so the game stays visible where the agent does not look.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from rlexplain.envs import NATIVE_HEIGHT, NATIVE_WIDTH

SCALE = 3  # native pixels -> video pixels
PANEL_WIDTH = 300
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _diverging_lut() -> tuple[np.ndarray, np.ndarray]:
    """256-entry RGB and opacity tables over [-1, 1]: blue/cyan below zero, red/yellow above."""
    v = np.linspace(-1.0, 1.0, 256)
    a = np.abs(v)
    rgb = np.zeros((256, 3))
    pos, neg = v > 0, v < 0
    rgb[pos] = np.stack([np.full(pos.sum(), 255.0), 255.0 * np.clip(a[pos] * 2 - 1, 0, 1), np.zeros(pos.sum())], 1)
    rgb[neg] = np.stack([np.zeros(neg.sum()), 255.0 * np.clip(a[neg] * 2 - 1, 0, 1), np.full(neg.sum(), 255.0)], 1)
    alpha = 0.9 * np.clip(a, 0, 1) ** 0.8
    return rgb.astype(np.float32), alpha.astype(np.float32)


LUT_RGB, LUT_ALPHA = _diverging_lut()


def to_native(heat: np.ndarray, height: int = NATIVE_HEIGHT, width: int = NATIVE_WIDTH) -> np.ndarray:
    """An 84x84 map resized onto the native 160x210 screen (the inverse of the preprocessing's resize)."""
    return cv2.resize(np.ascontiguousarray(heat, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


def robust_max(relevance: np.ndarray, q: float = 99.5) -> float:
    """A robust maximum of ``|R|``: the q-th percentile, so one extreme pixel does not wash out the rest."""
    flat = np.abs(np.asarray(relevance, dtype=np.float32)).ravel()
    if not flat.size:
        return 0.0
    k = min(flat.size - 1, int(round(q / 100 * (flat.size - 1))))
    return float(np.partition(flat, k)[k])


@dataclass
class ColourScale:
    """The colour scale of each frame: ``scale_t = max(robust_max(R_t), decay * scale_{t-1})``.

    The default, ``decay=0``, scales every frame by its own robust maximum, so no frame is washed out
    or nearly black; the scale is printed on the video's colour bar and stored per step in
    ``steps.csv`` (``colour_scale``), so magnitudes stay comparable. ``decay`` in (0, 1) holds a peak
    instead (0.98: halves in ~35 steps).

    :param decay: per-step decay of the held peak.
    :param quantile: percentile of ``|R|`` taken as a frame's maximum.
    """

    decay: float = 0.0
    quantile: float = 99.5
    value: float = 0.0

    def update(self, relevance: np.ndarray) -> float:
        self.value = max(robust_max(relevance, self.quantile), self.decay * self.value)
        return self.value if self.value > 0 else 1.0


def colourise(heat: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(RGB float32, opacity float32) of a map normalised by ``scale``."""
    idx = np.clip((heat / scale + 1.0) * 127.5, 0, 255).astype(np.uint8)
    return LUT_RGB[idx], LUT_ALPHA[idx][..., None]


def overlay(frame: np.ndarray, heat: np.ndarray, scale: float) -> np.ndarray:
    """Blend a native-resolution map onto a native RGB frame (both HxW); returns uint8 RGB."""
    rgb, alpha = colourise(heat, scale)
    return (frame.astype(np.float32) * (1 - alpha) + rgb * alpha).astype(np.uint8)


def upscale(image: np.ndarray, factor: int = SCALE) -> np.ndarray:
    return cv2.resize(image, (image.shape[1] * factor, image.shape[0] * factor), interpolation=cv2.INTER_NEAREST)


def draw_boxes(image: np.ndarray, boxes: Sequence[tuple[str, tuple[float, float, float, float]]], factor: int,
               colours: dict[str, tuple[int, int, int]] | None = None) -> None:
    """Outline labelled native-coordinate boxes ``(x, y, w, h)`` on an image upscaled by ``factor``."""
    for label, (x, y, w, h) in boxes:
        colour = (colours or {}).get(label, (0, 255, 0))
        p0 = (int(x * factor), int(y * factor))
        p1 = (int((x + w) * factor) - 1, int((y + h) * factor) - 1)
        cv2.rectangle(image, p0, p1, colour, 1)


def _round16(n: int) -> int:
    return (n + 15) // 16 * 16  # H.264 encoders want frame sizes in macroblocks


def _text(image: np.ndarray, text: str, xy: tuple[int, int], scale: float = 0.42,
          colour: tuple[int, int, int] = (220, 220, 220)) -> None:
    cv2.putText(image, text, xy, FONT, scale, colour, 1, cv2.LINE_AA)


CHOSEN = (255, 200, 0)  # the action taken: bars, tiles and labels


@dataclass
class FrameLayout:
    """The video frame: the game (native x3) with its overlay, a side panel, and an optional strip of small maps.

    The panel says what is shown (agent, method, target), the step, the action values as differences
    from their mean (with the numbers), a colour bar with this frame's scale and meaning, and the
    objects' densities (share of the evidence / share of the area, log scale) in their colours.

    :param action_names: labels of the action bars.
    :param agent_name: shown in the panel. :param method: the explanation method. :param target: what is explained.
    :param strip: number of small maps under the game (stacked frames, or one per action); 0 for none.
    :param strip_labels: their labels.
    :param value_label: ``Q-values`` or ``probabilities``.
    :param categories: the object categories whose densities the panel shows, with their RGB colours.
    """

    action_names: Sequence[str]
    agent_name: str
    strip: int = 0
    strip_labels: Sequence[str] = ()
    value_label: str = "Q-values"
    method: str = ""
    target: str = "chosen"
    categories: dict[str, tuple[int, int, int]] | None = None

    def __post_init__(self) -> None:
        self.game_h, self.game_w = NATIVE_HEIGHT * SCALE, NATIVE_WIDTH * SCALE
        self.tile = 2 * 84
        per_row = max(1, (self.game_w + PANEL_WIDTH) // (self.tile + 8))
        self.strip_rows = 0 if self.strip == 0 else (self.strip + per_row - 1) // per_row
        self.per_row = per_row
        self.height = _round16(self.game_h + self.strip_rows * (self.tile + 22))
        self.width = _round16(self.game_w + PANEL_WIDTH)
        self._background = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        x = self.game_w + 10
        _text(self._background, self.agent_name[:34], (x, 20), 0.5, (255, 255, 255))
        _text(self._background, f"method: {self.method}"[:40], (x, 40), 0.4, (180, 180, 180))
        _text(self._background, f"target: {self.target}"[:40], (x, 56), 0.4, (180, 180, 180))
        self._colour_bar_y = 300
        bar = np.linspace(-1, 1, PANEL_WIDTH - 40)
        idx = np.clip((bar + 1) * 127.5, 0, 255).astype(np.uint8)
        rgb = (LUT_RGB[idx] * LUT_ALPHA[idx][:, None]).astype(np.uint8)  # as the overlay looks on black
        y = self._colour_bar_y
        self._background[y: y + 12, x: x + len(bar)] = rgb[None]
        _text(self._background, "against", (x, y + 26), 0.38, (120, 170, 255))
        _text(self._background, "evidence for", (x + len(bar) - 82, y + 26), 0.38, (255, 170, 80))
        for i, label in enumerate(self.strip_labels):
            r, c = divmod(i, self.per_row)
            _text(self._background, str(label)[:20], (c * (self.tile + 8) + 4, self.game_h + r * (self.tile + 22) + 16),
                  0.45, (200, 200, 200))

    def compose(self, game: np.ndarray, values: np.ndarray, chosen: int, info: dict[str, object],
                tiles: Sequence[np.ndarray] = (), scale: float | None = None,
                densities: dict[str, float] | None = None, tile_marks: Sequence[str] = ()) -> np.ndarray:
        """One video frame (H, W, 3) uint8 RGB.

        :param game: the upscaled game image with its overlay (630x480).
        :param values: the action outputs (Q-values or probabilities).
        :param chosen: the index of the action taken (highlighted).
        :param info: lines of text for the panel (step, score, lives, ...).
        :param tiles: small maps for the strip, each (168, 168, 3). :param tile_marks: a note under each tile.
        :param scale: the colour scale of this frame (|R| that reaches full colour).
        :param densities: category -> density of this step (share / area share).
        """
        frame = self._background.copy()
        frame[: self.game_h, : self.game_w] = game
        x0 = self.game_w + 10
        y = 82
        for key, value in info.items():
            _text(frame, f"{key}: {value}", (x0, y), 0.42)
            y += 18
        y += 8
        values = np.asarray(values, dtype=np.float64)
        mean = float(values.mean())
        spread = float(np.abs(values - mean).max()) or 1.0
        _text(frame, f"{self.value_label} - their mean ({mean:.3g})", (x0, y), 0.38, (160, 160, 160))
        y += 8
        centre, half = x0 + 140, 50
        cv2.line(frame, (centre, y), (centre, y + 17 * len(values)), (90, 90, 90), 1)
        for i, (name, v) in enumerate(zip(self.action_names, values)):
            top = y + i * 17
            colour = CHOSEN if i == chosen else (150, 150, 150)
            length = int(round(half * (v - mean) / spread))
            cv2.rectangle(frame, (centre, top + 4), (centre + length, top + 13), colour, -1)
            _text(frame, ("> " if i == chosen else "  ") + name[:10], (x0, top + 13), 0.36, colour)
            _text(frame, f"{v:.3g}", (x0 + 196, top + 13), 0.34, (230, 230, 230))
        if scale is not None:
            yb = self._colour_bar_y
            _text(frame, f"-{scale:.2g}", (x0, yb - 4), 0.34, (200, 200, 200))
            _text(frame, "0", (x0 + (PANEL_WIDTH - 40) // 2 - 3, yb - 4), 0.34, (200, 200, 200))
            _text(frame, f"+{scale:.2g}", (x0 + PANEL_WIDTH - 80, yb - 4), 0.34, (200, 200, 200))
            _text(frame, "relevance; scale: this frame's |R| (99.5th pct)", (x0, yb + 44), 0.32, (150, 150, 150))
        if densities and self.categories:
            yd = self._colour_bar_y + 72
            _text(frame, "density (share of evidence / area), log", (x0, yd), 0.36, (160, 160, 160))
            one = x0 + 70 + 60  # density 1 on a log axis from 0.1 to 100
            for i, (name, rgb) in enumerate(self.categories.items()):
                top = yd + 8 + i * 17
                d = densities.get(name)
                _text(frame, name[:9], (x0, top + 12), 0.36, rgb)
                cv2.line(frame, (one, top + 2), (one, top + 14), (90, 90, 90), 1)
                if d is not None and np.isfinite(d) and d > 0:
                    end = x0 + 70 + int(60 * (np.log10(np.clip(d, 0.1, 100)) + 1))
                    cv2.rectangle(frame, (x0 + 70, top + 4), (max(end, x0 + 71), top + 12), rgb, -1)
                    _text(frame, f"{d:.2g}", (x0 + 70 + 185, top + 12), 0.34, (230, 230, 230))
        for i, tile in enumerate(tiles[: self.strip]):
            r, c = divmod(i, self.per_row)
            top = self.game_h + r * (self.tile + 22) + 22
            left = c * (self.tile + 8)
            frame[top: top + self.tile, left: left + self.tile] = tile
            if i < len(tile_marks) and tile_marks[i]:
                _text(frame, tile_marks[i], (left + 90, top - 6), 0.4, (230, 230, 230))
            if self.strip_labels and i == chosen and len(tiles) == len(self.action_names):
                cv2.rectangle(frame, (left, top), (left + self.tile - 1, top + self.tile - 1), CHOSEN, 2)
        return frame


def captioned(image: np.ndarray, caption: str, band: int = 28, width: int = 0, scale: float = 0.45) -> np.ndarray:
    """``image`` under a black band of ``band`` pixels holding ``caption`` (at least ``width`` pixels wide)."""
    canvas = np.zeros((image.shape[0] + band, max(image.shape[1], width), 3), np.uint8)
    canvas[band:, : image.shape[1]] = image
    _text(canvas, caption, (6, band - 9), scale, (255, 255, 255))
    return canvas


def tile_image(grey: np.ndarray, heat: np.ndarray, scale: float) -> np.ndarray:
    """A small map: one 84x84 input frame (grey) with its own relevance, upscaled x2, RGB."""
    rgb = np.repeat(grey[..., None], 3, axis=2)
    return upscale(overlay(rgb, heat, scale), 2)

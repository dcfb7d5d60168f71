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
PANEL_WIDTH = 256
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
    """Peak-hold normalisation: ``scale_t = max(robust_max(R_t), decay * scale_{t-1})``.

    :param decay: per-step decay of the held peak (0.98: halves in ~35 steps, ~2 s of play).
    :param quantile: percentile of ``|R|`` taken as a frame's maximum.
    """

    decay: float = 0.98
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


@dataclass
class FrameLayout:
    """The video frame: the game (native x3) with its overlay, a side panel, and an optional strip of small maps.

    :param action_names: labels of the action bars.
    :param agent_name: shown in the panel.
    :param strip: number of small maps under the game (4 stacked frames, or one per action); 0 for none.
    :param strip_labels: their labels.
    """

    action_names: Sequence[str]
    agent_name: str
    strip: int = 0
    strip_labels: Sequence[str] = ()
    value_label: str = "Q"

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
        cv2.putText(self._background, self.agent_name[:28], (x, 24), FONT, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        for i, label in enumerate(self.strip_labels):
            r, c = divmod(i, self.per_row)
            cv2.putText(self._background, str(label)[:20], (c * (self.tile + 8) + 4, self.game_h + r * (self.tile + 22) + 16),
                        FONT, 0.45, (200, 200, 200), 1, cv2.LINE_AA)

    def compose(self, game: np.ndarray, values: np.ndarray, chosen: int, info: dict[str, object],
                tiles: Sequence[np.ndarray] = ()) -> np.ndarray:
        """One video frame (H, W, 3) uint8 RGB.

        :param game: the upscaled game image with its overlay (630x480).
        :param values: the action outputs (Q-values or probabilities), drawn as bars.
        :param chosen: the index of the action taken (highlighted).
        :param info: lines of text for the panel (score, lives, step, ...).
        :param tiles: small maps for the strip, each (168, 168, 3).
        """
        frame = self._background.copy()
        frame[: self.game_h, : self.game_w] = game
        x0 = self.game_w + 10
        y = 50
        for key, value in info.items():
            cv2.putText(frame, f"{key}: {value}", (x0, y), FONT, 0.45, (220, 220, 220), 1, cv2.LINE_AA)
            y += 20
        y += 6
        cv2.putText(frame, self.value_label, (x0, y), FONT, 0.45, (160, 160, 160), 1, cv2.LINE_AA)
        y += 8
        lo, hi = float(np.min(values)), float(np.max(values))
        span = max(hi - min(lo, 0.0), 1e-8)
        bar_w = PANEL_WIDTH - 110
        for i, (name, v) in enumerate(zip(self.action_names, values)):
            top = y + i * 18
            if top + 16 > self.game_h:
                break
            colour = (255, 200, 0) if i == chosen else (110, 110, 110)
            length = int(bar_w * (float(v) - min(lo, 0.0)) / span)
            cv2.rectangle(frame, (x0 + 70, top + 3), (x0 + 70 + max(length, 1), top + 14), colour, -1)
            cv2.putText(frame, name[:9], (x0, top + 13), FONT, 0.38, colour, 1, cv2.LINE_AA)
            cv2.putText(frame, f"{float(v):.3g}", (x0 + 72 + max(length, 1), top + 13), FONT, 0.33, (230, 230, 230), 1,
                        cv2.LINE_AA)
        for i, tile in enumerate(tiles[: self.strip]):
            r, c = divmod(i, self.per_row)
            top = self.game_h + r * (self.tile + 22) + 22
            left = c * (self.tile + 8)
            frame[top: top + self.tile, left: left + self.tile] = tile
        return frame


def tile_image(grey: np.ndarray, heat: np.ndarray, scale: float) -> np.ndarray:
    """A small map: one 84x84 input frame (grey) with its own relevance, upscaled x2, RGB."""
    rgb = np.repeat(grey[..., None], 3, axis=2)
    return upscale(overlay(rgb, heat, scale), 2)

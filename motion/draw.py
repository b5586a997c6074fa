"""Stick figures of 22-joint motions: an animated GIF and a still PNG strip, drawn with matplotlib's Agg backend.

The skeleton is drawn along HumanML3D's five kinematic chains (right leg, left leg, spine, right arm,
left arm) under a fixed oblique camera, with the floor (y = 0) and the root's path. No pyplot state is
touched, so drawing works in threads and on machines without a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genpref.errors import UserError
from motion.skeleton import T2M_KINEMATIC_CHAIN

CHAIN_COLOURS = ("#d62728", "#1f77b4", "#333333", "#ff7f0e", "#17becf")  # right leg, left leg, spine, right/left arm


def project(joints: np.ndarray, azimuth: float = -60.0, elevation: float = 15.0) -> np.ndarray:
    """World joints [..., 3] (Y up) -> screen coordinates [..., 2] of a camera turned `azimuth` degrees about
    Y from the +Z axis and tilted down by `elevation` degrees (orthographic)."""
    az, el = np.radians(azimuth), np.radians(elevation)
    right = np.array([np.cos(az), 0.0, -np.sin(az)])
    toward = np.array([np.sin(az), 0.0, np.cos(az)])  # from the scene towards the camera, on the floor
    up = np.array([0.0, np.cos(el), 0.0]) - np.sin(el) * toward
    return np.stack([joints @ right, joints @ up], axis=-1)


def _check(joints) -> np.ndarray:
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (22, 3) or len(joints) == 0:
        raise UserError(f"drawing needs joints [T, 22, 3], got shape {joints.shape}")
    if not np.isfinite(joints).all():
        raise UserError("cannot draw a motion with NaN or infinite joint positions")
    return joints


class _StickFigure:
    """One Agg figure with a line per chain; `show(t)` sets the lines to frame t."""

    def __init__(self, joints: np.ndarray, title: str | None, size: float, dpi: int):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.screen = project(joints)  # [T, 22, 2]
        floor = joints[:, 0] * np.array([1.0, 0.0, 1.0])
        self.fig = Figure(figsize=(size, size), dpi=dpi)
        FigureCanvasAgg(self.fig)
        ax = self.fig.add_axes((0.02, 0.02, 0.96, 0.88 if title else 0.96))
        ax.set_axis_off()
        ax.set_aspect("equal")
        low, high = self.screen.reshape(-1, 2).min(0), self.screen.reshape(-1, 2).max(0)
        pad = 0.1 * max(high - low) + 0.05
        ax.set_xlim(low[0] - pad, high[0] + pad)
        ax.set_ylim(low[1] - pad, high[1] + pad)
        body = self.screen - self.screen[:, :1]  # poses relative to the root, for views that follow it
        self.half_width = max(np.abs(body[..., 0]).max(), 0.5 * (high[1] - low[1])) + pad
        self.ax = ax
        path = project(floor)
        ax.plot(path[:, 0], path[:, 1], color="#bbbbbb", lw=1)
        if title:
            self.fig.suptitle(title, fontsize=8, wrap=True)
        self.lines = [ax.plot([], [], color=c, lw=2, solid_capstyle="round")[0] for c in CHAIN_COLOURS]

    def show(self, t: int, follow: bool = False) -> None:
        if follow:  # keep the root in the middle: the strip shows poses, the GIF shows travel
            centre = self.screen[t, 0, 0]
            self.ax.set_xlim(centre - self.half_width, centre + self.half_width)
        for line, chain in zip(self.lines, T2M_KINEMATIC_CHAIN):
            line.set_data(self.screen[t, chain, 0], self.screen[t, chain, 1])


def animate(joints, path: str | Path, fps: int = 20, title: str | None = None, size: float = 2.5, dpi: int = 60,
            every: int = 1) -> Path:  # fmt: skip
    """Write an animated GIF of joints [T, 22, 3] (every `every`-th frame, at fps / every)."""
    from matplotlib.animation import PillowWriter

    joints = _check(joints)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = _StickFigure(joints, title, size, dpi)
    writer = PillowWriter(fps=max(1, round(fps / every)))
    with writer.saving(figure.fig, str(path), dpi):
        for t in range(0, len(joints), every):
            figure.show(t)
            writer.grab_frame()
    return path


def strip(joints, path: str | Path, frames: int = 6, title: str | None = None, size: float = 1.6, dpi: int = 80) -> Path:
    """Write a PNG of `frames` evenly spaced poses side by side."""
    from PIL import Image

    joints = _check(joints)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = _StickFigure(joints, None, size, dpi)
    tiles = []
    for t in np.linspace(0, len(joints) - 1, min(frames, len(joints))).round().astype(int):
        figure.show(t, follow=True)
        figure.fig.canvas.draw()
        tiles.append(np.asarray(figure.fig.canvas.buffer_rgba())[..., :3].copy())
    image = np.concatenate(tiles, axis=1)
    if title:
        image = _with_title(image, title)
    Image.fromarray(image).save(path)
    return path


def _with_title(image: np.ndarray, title: str) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height, width = 18, image.shape[1]
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    FigureCanvasAgg(fig)
    fig.text(0.01, 0.5, title, fontsize=8, va="center")
    fig.canvas.draw()
    banner = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    return np.concatenate([banner[:, :width], image], axis=0)

"""The moves demo's figures: several models' motions for the same prompts and initial noise side by side,
as a grid of pose strips (`pose_grid`) or one animated GIF (`side_by_side_gif`)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from motion.draw import animate, strip


def pose_grid(motions: dict[str, list[np.ndarray]], prompts: Sequence[str], picks: Sequence[int], path: Path) -> Path:
    """Rows = picked prompts, columns = models: six poses of each motion (same noise across models)."""
    from PIL import Image

    from motion.skeleton import recover_from_ric

    tiles_dir = path.parent / (path.stem + "-tiles")
    rows = []
    for i in picks:
        cells = [Image.open(strip(recover_from_ric(motions[name][i]), tiles_dir / f"{name}-{i}.png", frames=6,
                                  title=f"{name}: {prompts[i]}", size=1.1, dpi=60)) for name in motions]  # fmt: skip
        rows.append(cells)
    width = sum(c.width for c in rows[0]) + 8 * (len(rows[0]) - 1)
    height = sum(r[0].height for r in rows)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    y = 0
    for cells in rows:
        x = 0
        for cell in cells:
            canvas.paste(cell.convert("RGB"), (x, y))
            x += cell.width + 8
        y += cells[0].height
    canvas.save(path)
    shutil.rmtree(tiles_dir, ignore_errors=True)
    return path


def side_by_side_gif(motions: dict[str, np.ndarray], path: Path) -> Path:
    """One animated GIF with a stick figure per model for the same prompt and initial noise."""
    from PIL import Image, ImageSequence

    from motion.skeleton import recover_from_ric

    parts = [animate(recover_from_ric(m), path.parent / f"{path.stem}-{name}.gif", title=name, size=3.0, dpi=60, every=2)
             for name, m in motions.items()]  # the prompt is in the figure's title
    clips = [[f.convert("RGB") for f in ImageSequence.Iterator(Image.open(p))] for p in parts]
    frames = []
    for t in range(max(len(c) for c in clips)):
        cells = [c[min(t, len(c) - 1)] for c in clips]
        canvas = Image.new("RGB", (sum(c.width for c in cells), max(c.height for c in cells)), (255, 255, 255))
        x = 0
        for cell in cells:
            canvas.paste(cell, (x, 0))
            x += cell.width
        frames.append(canvas)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    for p in parts:
        p.unlink()
    return path

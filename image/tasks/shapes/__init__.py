"""The `shapes` task: a verifiable text-to-image problem ("a red triangle at the top left") with a
procedural renderer, an exact per-attribute verifier, held-out attribute combinations and writers for
the data every recipe reads (experts, noisy pretraining captions, verifier-ranked pairs, ratings).

4 colours × 3 shapes × 4 positions = 48 combinations at 32×32 on black. The 12 with
(colour + shape + position index) mod 4 == 0 are held out: every word is seen in training, only the
combination is new. The verifier reads any RGB image: the largest 4-connected bright blob gives the
colour (nearest palette colour of its mean), the position (quadrant of its centroid) and the shape
(fraction of its bounding box it fills: square 1.0, circle ~0.8, triangle ~0.55).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from genpref.errors import UserError
from genpref.rewards import near_miss

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
SHAPES = ("square", "circle", "triangle")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
ATTRIBUTES = ("colour", "shape", "position")
SIZE = 32  # image side; geometry below is for 32 px and scales with the side
SHAPE_SIDE = 10  # bounding box of a shape at 32 px
JITTER = 2  # ± pixels around the quadrant centre at 32 px
PRETRAIN_NOISE = 0.2  # probability that a pretraining caption names a wrong value, per attribute
ON_LEVEL = 128  # a pixel belongs to a shape when its brightest channel reaches this
MIN_BLOB = 8  # fewer bright pixels than this (at 32 px) reads as "nothing drawn"
SQUARE_FILL, CIRCLE_FILL = 0.9, 0.66  # fill-ratio cuts: ≥ 0.9 square, ≥ 0.66 circle, else triangle

Combo = tuple[str, str, str]  # (colour, shape, position)


# ---------------------------------------------------------------------------------------------- combos


def all_combos() -> list[Combo]:
    return [(c, s, p) for c in COLOURS for s in SHAPES for p in POSITIONS]


def is_heldout(combo: Combo) -> bool:
    c, s, p = combo
    return (list(COLOURS).index(c) + SHAPES.index(s) + POSITIONS.index(p)) % 4 == 0


def train_combos() -> list[Combo]:
    return [k for k in all_combos() if not is_heldout(k)]


def heldout_combos() -> list[Combo]:
    return [k for k in all_combos() if is_heldout(k)]


def caption(combo: Combo) -> str:
    c, s, p = combo
    return f"a {c} {s} at the {p}"


_POSITION_RE = re.compile(r"\b(top|bottom|upper|lower)[\s-]+(left|right)\b")


def parse(prompt: str) -> tuple[str | None, str | None, str | None]:
    """The (colour, shape, position) a prompt names; None for an attribute it does not name."""
    text = prompt.lower()
    words = set(re.findall(r"[a-z]+", text))
    colour = next((c for c in COLOURS if c in words), None)
    shape = next((s for s in SHAPES if s in words), None)
    m = _POSITION_RE.search(text)
    position = None
    if m:
        vertical = {"upper": "top", "lower": "bottom"}.get(m.group(1), m.group(1))
        position = f"{vertical} {m.group(2)}"
    return colour, shape, position


def parse_combo(prompt: str) -> Combo:
    """A prompt that names all three attributes -> its combo; UserError otherwise."""
    colour, shape, position = parse(prompt)
    if colour is None or shape is None or position is None:
        missing = [a for a, v in zip(ATTRIBUTES, (colour, shape, position)) if v is None]
        raise UserError(f"shapes: prompt {prompt!r} names no {', '.join(missing)} (expected e.g. "
                        f"'{caption(all_combos()[0])}'; colours {', '.join(COLOURS)}; shapes {', '.join(SHAPES)}; "
                        f"positions {', '.join(POSITIONS)})")
    return colour, shape, position


# ---------------------------------------------------------------------------------------------- rendering


def quadrant_centre(position: str, size: int = SIZE) -> tuple[float, float]:
    """(y, x) centre of a quadrant."""
    y = size / 4 if position.startswith("top") else 3 * size / 4
    x = size / 4 if position.endswith("left") else 3 * size / 4
    return y, x


def shape_mask(shape: str, cy: float, cx: float, side: float, size: int = SIZE) -> np.ndarray:
    """[size, size] bool: pixels whose centre lies inside the shape of bounding box `side` at (cy, cx)."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    dy, dx = y - cy, x - cx
    half = side / 2
    if shape == "square":
        return (np.abs(dy) <= half) & (np.abs(dx) <= half)
    if shape == "circle":
        return dy**2 + dx**2 <= half**2
    if shape == "triangle":  # apex up, base at the bottom of the box
        depth = dy + half  # 0 at the apex, side at the base
        return (depth >= 0) & (depth <= side) & (np.abs(dx) <= depth / 2)
    raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")


def render(combo: Combo, jitter: tuple[int, int] = (0, 0), size: int = SIZE) -> np.ndarray:
    """[size, size, 3] uint8: the shape in its colour on black, moved by jitter (dy, dx) at 32-px scale."""
    colour, shape, position = combo
    scale = size / SIZE
    cy, cx = quadrant_centre(position, size)
    mask = shape_mask(shape, cy + jitter[0] * scale, cx + jitter[1] * scale, SHAPE_SIDE * scale, size)
    image = np.zeros((size, size, 3), np.uint8)
    image[mask] = COLOURS[colour]
    return image


def jitters() -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-JITTER, JITTER + 1) for dx in range(-JITTER, JITTER + 1)]


# ---------------------------------------------------------------------------------------------- verifier


@dataclass(frozen=True)
class Reading:
    """What the verifier sees in an image; None fields when no shape was found."""

    colour: str | None
    shape: str | None
    position: str | None
    fill: float = 0.0  # blob area / bounding-box area
    area: int = 0  # blob pixels
    centre: tuple[float, float] = (0.0, 0.0)  # the blob's centroid (y, x), pixels

    @property
    def combo(self) -> tuple[str | None, str | None, str | None]:
        return self.colour, self.shape, self.position


def largest_blob(on: np.ndarray) -> np.ndarray:
    """[H, W] bool -> the largest 4-connected component of it (all False when empty)."""
    from scipy import ndimage

    labels, n = ndimage.label(on)  # default structure: 4-connectivity
    if n == 0:
        return np.zeros_like(on)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (1 + int(sizes.argmax()))


def as_array(image) -> np.ndarray:
    """PIL image or [H, W, 3] array -> [H, W, 3] uint8."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"shapes verifier: expected an RGB image [H, W, 3], got shape {array.shape}")
    return array.astype(np.uint8) if array.dtype != np.uint8 else array


def read(image) -> Reading:
    """Colour, shape and position of the largest bright blob of any RGB image."""
    pixels = as_array(image)
    size = pixels.shape[0]
    blob = largest_blob(pixels.max(axis=2) >= ON_LEVEL)
    area = int(blob.sum())
    if area < MIN_BLOB * (size / SIZE) ** 2:
        return Reading(None, None, None, 0.0, area)
    mean = pixels[blob].astype(np.float64).mean(axis=0)
    palette = np.array(list(COLOURS.values()), np.float64)
    colour = list(COLOURS)[int(((palette - mean) ** 2).sum(axis=1).argmin())]
    ys, xs = np.nonzero(blob)
    cy, cx = ys.mean() + 0.5, xs.mean() + 0.5
    position = ("top" if cy < size / 2 else "bottom") + " " + ("left" if cx < size / 2 else "right")
    fill = area / float((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    shape = "square" if fill >= SQUARE_FILL else "circle" if fill >= CIRCLE_FILL else "triangle"
    return Reading(colour, shape, position, fill, area, (float(cy), float(cx)))


def check(image, prompt: str) -> dict[str, bool]:
    """Per attribute: does the image show what the prompt asks? Plus "all" (every attribute right)."""
    want = parse_combo(prompt)
    got = read(image)
    out = {a: w == g for a, w, g in zip(ATTRIBUTES, want, (got.colour, got.shape, got.position))}
    out["all"] = all(out.values())
    return out


def score(image, prompt: str) -> float:
    """Fraction of the three attributes the image gets right (0, 1/3, 2/3 or 1)."""
    result = check(image, prompt)
    return sum(result[a] for a in ATTRIBUTES) / len(ATTRIBUTES)


FILL_BANDS = {"square": (SQUARE_FILL, 1.0), "circle": (CIRCLE_FILL, SQUARE_FILL), "triangle": (0.0, CIRCLE_FILL)}
FILL_WIDTH = 0.25  # a wrong shape whose fill ratio lies this far from the wanted band earns no partial credit
POSITION_WIDTH = 0.5  # a wrong position whose centroid lies this far past the midline(s), in half-sides, earns none


def graded_score(image, prompt: str) -> float:
    """`score` with partial credit for near misses of the thresholded attributes: a wrong shape earns
    `near_miss` of its fill ratio's distance to the wanted band, a wrong position that of its centroid's
    distance past the midline(s). Colour has no partial credit; an empty image scores 0. Where every
    sample of a prompt fails the same way, the exact score is flat and a group-relative recipe learns
    nothing; this one still ranks the samples by how near they come."""
    want = parse_combo(prompt)
    got = read(image)
    if got.shape is None:
        return 0.0
    credits = [float(got.colour == want[0])]
    lo, hi = FILL_BANDS[want[1]]
    credits.append(1.0 if got.shape == want[1] else near_miss(max(lo - got.fill, got.fill - hi), FILL_WIDTH))
    if got.position == want[2]:
        credits.append(1.0)
    else:
        size = as_array(image).shape[0]
        wrong = [a != b for a, b in zip(got.position.split(), want[2].split())]
        past = np.abs(np.array(got.centre) - size / 2) / (size / 2)  # distance past each midline, in half-sides
        credits.append(near_miss(float(past[wrong].sum()), POSITION_WIDTH))
    return sum(credits) / len(credits)


# ---------------------------------------------------------------------------------------------- captions


def noisy_combo(combo: Combo, noise: float, rng: random.Random) -> Combo:
    """Each attribute replaced by a uniformly drawn other value with probability `noise`; redrawn until
    the result is a training combination, so held-out combinations never appear, not even in captions."""
    values = (list(COLOURS), list(SHAPES), list(POSITIONS))
    while True:
        out = tuple(rng.choice([v for v in vals if v != a]) if rng.random() < noise else a
                    for a, vals in zip(combo, values))
        if not is_heldout(out):
            return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- writers


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="PNG")


def write_experts(directory: str | Path, *, noise: float = 0.0, captions_per_image: int = 1, seed: int = 0,
                  combos: Sequence[Combo] | None = None) -> Path:
    """An imagefolder of clean renders of `combos` (default: the training combinations) at every jitter:
    PNGs + metadata.jsonl {"file_name", "text"}. With noise > 0 each image gets `captions_per_image`
    independently noised captions (lines may share a file): the deliberately imperfect pretraining data."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    combos = train_combos() if combos is None else list(combos)
    lines = []
    for i, combo in enumerate(combos):
        for j, jit in enumerate(jitters()):
            name = f"{i:02d}-{j:02d}.png"
            _save_png(render(combo, jit), directory / name)
            for _ in range(captions_per_image):
                text = caption(noisy_combo(combo, noise, rng) if noise > 0 else combo)
                lines.append(json.dumps({"file_name": name, "text": text}))
    rng.shuffle(lines)
    (directory / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def write_prompts(path: str | Path, combos: Sequence[Combo]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(caption(k) + "\n" for k in combos))
    return path


def write_samples(directory: Path, images: Sequence[Image.Image], prefix: str) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    names = []
    for i, image in enumerate(images):
        names.append(f"{prefix}{i:05d}.png")
        image.save(directory / names[-1], format="PNG")
    return names


def ranked_pairs(prompts: Sequence[str], scores: Sequence[float]) -> list[tuple[int, int]]:
    """(winner, loser) indices: per prompt, best vs worst, second best vs second worst, ... kept only
    when the winner's verifier score is strictly higher (ties carry no preference)."""
    by_prompt: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        by_prompt.setdefault(p, []).append(i)
    pairs = []
    for idx in by_prompt.values():
        order = sorted(idx, key=lambda i: (-scores[i], i))
        for k in range(len(order) // 2):
            w, l = order[k], order[-1 - k]
            if scores[w] > scores[l]:
                pairs.append((w, l))
    return pairs


def write_pairs(directory: str | Path, images: Sequence[Image.Image], prompts: Sequence[str]) -> Path:
    """Verifier-ranked pairs of samples (e.g. the base model's, several per prompt) as
    `pairs.jsonl` {"prompt", "chosen", "rejected"} next to the images; returns the jsonl path."""
    directory = Path(directory)
    names = write_samples(directory, images, "sample-")
    scores = [score(im, p) for im, p in zip(images, prompts)]
    lines = [json.dumps({"prompt": prompts[w], "chosen": names[w], "rejected": names[l]})
             for w, l in ranked_pairs(prompts, scores)]
    if not lines:
        raise UserError(f"shapes: no verifier-ranked pairs in {len(images)} samples (every prompt's samples scored alike)")
    path = directory / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_ratings(directory: str | Path, images: Sequence[Image.Image], prompts: Sequence[str]) -> Path:
    """Single samples rated by the verifier, `ratings.jsonl` {"prompt", "file_name", "rating"}: rating 1
    when all three attributes are right, else 0 (KTO's desirable / undesirable)."""
    directory = Path(directory)
    names = write_samples(directory, images, "rated-")
    lines = [json.dumps({"prompt": p, "file_name": n, "rating": float(check(im, p)["all"])})
             for im, p, n in zip(images, prompts, names)]
    path = directory / "ratings.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------------------------- sampling


def sample_images(adapter, prompts: Sequence[str], *, seed: int, num_steps: int = 20, solver: str = "ddim",
                  chunk: int = 64) -> list[Image.Image]:
    """One image per prompt with the adapter's current weights. The initial noise of prompt i depends only
    on (seed, i // chunk): two models given the same prompts and seed start from the same noise."""
    import torch

    images: list[Image.Image] = []
    for start in range(0, len(prompts), chunk):
        batch = adapter.encode_prompts(list(prompts[start:start + chunk]))
        generator = torch.Generator().manual_seed(seed * 100_003 + start // chunk)
        x0 = adapter.generate(batch, generator=generator, num_steps=num_steps, solver=solver)
        images.extend(adapter.decode(x0, batch))
    return images

"""Synthetic coloured-shape data for the tiny configs and tests: an experts folder, a Pick-a-Pic-style
parquet, a prompts file and rated single samples, written deterministically in milliseconds
(`python -m image.tasks.tiny_data DIR`). A config reads them as `data.experts: tiny://experts` etc.
(the image scheme tiny:// of genpref.registry), written under <train.output_dir>/tiny-data on first use."""

from __future__ import annotations

import io
import json
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (230, 30, 30), "green": (30, 200, 30), "blue": (40, 60, 230), "yellow": (235, 220, 40)}
SHAPES = ("square", "circle", "triangle")
PLACES = ("top left", "top right", "bottom left", "bottom right")


def caption(colour: str, shape: str, place: str) -> str:
    return f"a {colour} {shape} in the {place}"


def render(colour: str, shape: str, place: str, size: int = 32, jitter: tuple[int, int] = (0, 0)) -> Image.Image:
    """One shape of side size/3 in a quadrant of a black square image."""
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    side = size // 3
    cy = size // 4 if place.startswith("top") else 3 * size // 4
    cx = size // 4 if place.endswith("left") else 3 * size // 4
    cx, cy = cx + jitter[0], cy + jitter[1]
    box = (cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2)
    fill = COLOURS[colour]
    if shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "circle":
        draw.ellipse(box, fill=fill)
    else:
        draw.polygon([(box[0], box[3]), (box[2], box[3]), (cx, box[1])], fill=fill)
    return image


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def combos(n: int, seed: int) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    every = [(c, s, p) for c in COLOURS for s in SHAPES for p in PLACES]
    rng.shuffle(every)
    return [every[i % len(every)] for i in range(n)]


def write_experts(directory: Path, n: int = 16, size: int = 32, seed: int = 0) -> Path:
    """An imagefolder: 0000.png ... and metadata.jsonl lines {"file_name", "text"}."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines = []
    for i, (c, s, p) in enumerate(combos(n, seed)):
        name = f"{i:04d}.png"
        render(c, s, p, size, (rng.randint(-1, 1), rng.randint(-1, 1))).save(directory / name)
        lines.append(json.dumps({"file_name": name, "text": caption(c, s, p)}))
    (directory / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def pair_rows(n: int = 16, size: int = 32, seed: int = 1, ties: int = 2) -> list[dict]:
    """Pick-a-Pic v2 rows: the correct render wins against one with a wrong colour; `ties` rows have
    label_0 = 0.5 (dropped by default)."""
    rng = random.Random(seed)
    rows = []
    for i, (c, s, p) in enumerate(combos(n + ties, seed)):
        wrong = rng.choice([k for k in COLOURS if k != c])
        good, bad = jpeg_bytes(render(c, s, p, size)), jpeg_bytes(render(wrong, s, p, size))
        if i >= n:
            label_0 = 0.5
        else:
            label_0 = float(rng.random() < 0.5)
        jpg_0, jpg_1 = (good, bad) if label_0 != 0.0 else (bad, good)
        rows.append({"caption": caption(c, s, p), "jpg_0": jpg_0, "jpg_1": jpg_1, "label_0": label_0})
    return rows


def write_pairs(path: Path, n: int = 16, size: int = 32, seed: int = 1, ties: int = 2) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(pair_rows(n, size, seed, ties)), str(path), row_group_size=8)
    return path


def write_prompts(path: Path, n: int = 8, seed: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(caption(*k) for k in combos(n, seed)) + "\n")
    return path


def write_ratings(directory: Path, n: int = 16, size: int = 32, seed: int = 3) -> Path:
    """Single rated samples (KTO, direct reward): `ratings.jsonl` lines {"prompt", "file_name", "rating"};
    a correct render is rated 1, one with a wrong colour 0, about half of each."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines = []
    for i, (c, s, p) in enumerate(combos(n, seed)):
        good = rng.random() < 0.5
        colour = c if good else rng.choice([k for k in COLOURS if k != c])
        name = f"{i:04d}.png"
        render(colour, s, p, size).save(directory / name)
        lines.append(json.dumps({"prompt": caption(c, s, p), "file_name": name, "rating": float(good)}))
    (directory / "ratings.jsonl").write_text("\n".join(lines) + "\n")
    return directory / "ratings.jsonl"


def ensure(directory: str | Path, size: int = 32) -> dict[str, Path]:
    """Write the data sets under `directory` once (marker files record completion)."""
    directory = Path(directory)
    paths = {"experts": directory / "experts", "pairs": directory / "pairs.parquet", "prompts": directory / "prompts.txt",
             "ratings": directory / "ratings" / "ratings.jsonl"}
    marker = directory / f".complete-{size}"
    if not marker.is_file():
        write_experts(paths["experts"], size=size)
        write_pairs(paths["pairs"], size=size)
        write_prompts(paths["prompts"])
        marker.write_text("ok\n")
    ratings_marker = directory / f".complete-ratings-{size}"  # own marker: directories written before it existed
    if not ratings_marker.is_file():
        write_ratings(paths["ratings"].parent, size=size)
        ratings_marker.write_text("ok\n")
    return paths


def resolve_data(spec: str, key: str, cfg, adapter) -> str:
    """genpref.registry hook for the image scheme tiny://: `tiny://experts` etc. -> the path written."""
    from genpref.errors import UserError

    paths = ensure(Path(cfg.train.output_dir) / "tiny-data", cfg.data.resolution)
    name = spec[len("tiny://"):]
    if name not in paths:
        raise UserError(f"data: unknown synthetic data {spec!r}; valid: " + ", ".join(f"tiny://{k}" for k in paths))
    return str(paths[name])


if __name__ == "__main__":
    out = ensure(sys.argv[1] if len(sys.argv) > 1 else "tiny-image-data")
    print("\n".join(f"{k}: {v}" for k, v in out.items()))

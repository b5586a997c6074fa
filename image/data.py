"""Image data for the core's `load_items(role)`: Pick-a-Pic-style pairs (parquet, HF dataset directory, jsonl),
expert folders (imagefolder + metadata.jsonl), prompt files, and the resize/crop/flip preprocessing.

Items are read lazily: indexing a sequence reads (and, the first time, fully decodes) the item's images,
so a bad image is found there. With `on_bad_sample: error` it raises BadSample naming the file, row and
column; with `skip` the item is counted, logged and replaced by the next valid one.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from genpref.errors import BadSample, UserError
from genpref.textio import jsonl_records, read_utf8

log = logging.getLogger("genpref.image")

PICKAPIC_COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0")
TIES = ("drop", "half", "first")
BAD_SAMPLE_MODES = ("error", "skip")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


# ---------------------------------------------------------------------------------------------- images


@dataclass(frozen=True)
class ImageRef:
    """One image as an item carries it: its bytes, a name for messages, and the augmentation to apply.

    flip: mirror horizontally. crop: relative (y, x) position of a random crop in [0, 1]² (None = center).
    Both images of a pair share flip and crop, so a flipped pair flips both.
    """

    name: str
    data: bytes = field(repr=False)
    flip: bool = False
    crop: tuple[float, float] | None = None


def decode_image(data: bytes, name: str) -> Image.Image:
    """Bytes -> RGB PIL image, fully decoded; BadSample naming the source if it is not a readable image."""
    if not data:
        raise BadSample(f"{name}: empty image")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # decode now: a truncated file fails here, not inside the training step
        return image.convert("RGB")
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise BadSample(f"{name}: not a readable image ({type(err).__name__}: {err})") from None


def crop_box(size: tuple[int, int], resolution: int, crop: tuple[float, float] | None) -> tuple[int, int, int, int]:
    """(resized_w, resized_h, top, left) after resizing the shorter side of `size` (w, h) to `resolution`."""
    w, h = size
    scale = resolution / min(w, h)
    rw, rh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    fy, fx = crop if crop is not None else (0.5, 0.5)
    return rw, rh, round(fy * (rh - resolution)), round(fx * (rw - resolution))


def preprocess(image: Image.Image, resolution: int, flip: bool = False, crop: tuple[float, float] | None = None):
    """Resize the shorter side to `resolution` (bilinear), crop a square, optionally mirror.

    Returns the image as a [3, R, R] float tensor in [-1, 1] and SDXL's micro-conditioning
    (original_h, original_w, crop_top, crop_left) with the crop measured in the resized image that was
    actually used (after the flip, as diffusers' SDXL training script does).
    """
    w, h = image.size
    rw, rh, top, left = crop_box((w, h), resolution, crop)
    image = image.resize((rw, rh), Image.BILINEAR)
    image = image.crop((left, top, left + resolution, top + resolution))
    if flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
        left = rw - resolution - left  # the same pixels, cropped from the mirrored resized image
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)  # [3, R, R]
    return pixels / 127.5 - 1.0, (h, w, top, left)


def to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [-1, 1] -> PIL images."""
    arr = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def grid(images: Sequence[Image.Image], rows: int, cols: int) -> Image.Image:
    """Images in row-major order -> one image, `rows` × `cols` tiles of the first image's size."""
    w, h = images[0].size
    out = Image.new("RGB", (cols * w, rows * h))
    for i, image in enumerate(images):
        out.paste(image, ((i % cols) * w, (i // cols) * h))
    return out


# ---------------------------------------------------------------------------------------------- tables


def _cell_bytes(value: Any, base: Path | None) -> bytes | None:
    """A Pick-a-Pic image cell: raw bytes, or an HF `Image` feature {bytes, path}."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        path = value.get("path")
        if path:
            path = Path(path) if Path(path).is_absolute() or base is None else base / path
            return path.read_bytes() if path.is_file() else None
        return None
    return value


def _open_parquet(pq, path: Path):
    """pyarrow's ParquetFile, or UserError naming the file when it is truncated or not parquet at all."""
    import pyarrow as pa

    try:
        return pq.ParquetFile(str(path))
    except (pa.ArrowException, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"data.pairs: {path}: not a readable parquet file, truncated or damaged ({first})") from None


class _ParquetShards:
    """Parquet files read lazily by row group: the metadata columns up front, image cells on demand."""

    def __init__(self, files: list[Path]):
        import pyarrow.parquet as pq

        self.files = [_open_parquet(pq, f) for f in files]
        self.names = [str(f) for f in files]
        self.groups = []  # (file index, row group index, first global row, rows, first row in the file)
        start = 0
        for fi, pf in enumerate(self.files):
            in_file = 0
            for gi in range(pf.num_row_groups):
                n = pf.metadata.row_group(gi).num_rows
                self.groups.append((fi, gi, start, n, in_file))
                start, in_file = start + n, in_file + n
        self.num_rows = start
        self._cache: OrderedDict = OrderedDict()

    def schema_names(self, i: int) -> list[str]:
        return self.files[i].schema_arrow.names

    def column(self, name: str) -> list:
        import pyarrow as pa

        out = []
        for pf, file in zip(self.files, self.names):
            try:
                out.extend(pf.read(columns=[name]).column(name).to_pylist())
            except (pa.ArrowException, OSError) as err:  # a damaged data page behind an intact footer
                raise UserError(f"data.pairs: {file}: column {name} is unreadable, the file is damaged ({err})") from None
        return out

    def _group(self, row: int) -> tuple:
        for group in self.groups:
            if group[2] <= row < group[2] + group[3]:
                return group
        raise IndexError(row)

    def locate(self, row: int) -> tuple[str, int]:
        fi, _, start, _, in_file = self._group(row)
        return self.names[fi], row - start + in_file

    def cell(self, row: int, column: str) -> Any:
        fi, gi, start, _, _ = self._group(row)
        key = (fi, gi, column)
        if key not in self._cache:
            self._cache[key] = self.files[fi].read_row_group(gi, columns=[column]).column(column)
            while len(self._cache) > 4:  # two row groups × two image columns
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key][row - start].as_py()


class _ArrowShards:
    """An HF `save_to_disk` directory read with pyarrow alone (memory-mapped; `datasets` not needed)."""

    def __init__(self, directory: Path):
        import pyarrow as pa

        state = directory / "state.json"
        if state.is_file():
            files = [directory / f["filename"] for f in json.loads(state.read_text()).get("_data_files", [])]
        else:
            files = sorted(directory.glob("*.arrow"))
        if not files:
            raise UserError(f"data.pairs: no .arrow files in the dataset directory {directory}")
        tables, self.names, self.starts = [], [], []
        start = 0
        for f in files:
            if not f.is_file():
                raise UserError(f"data.pairs: {state} lists {f.name}, which does not exist")
            source = pa.memory_map(str(f))
            try:
                table = pa.ipc.open_stream(source).read_all()
            except pa.ArrowInvalid:
                table = pa.ipc.open_file(pa.memory_map(str(f))).read_all()
            tables.append(table)
            self.names.append(str(f))
            self.starts.append(start)
            start += table.num_rows
        self.tables, self.num_rows = tables, start

    def schema_names(self, i: int) -> list[str]:
        return self.tables[i].schema.names

    @property
    def files(self) -> list:
        return self.tables

    def column(self, name: str) -> list:
        return [v for t in self.tables for v in t.column(name).to_pylist()]

    def _which(self, row: int) -> int:
        return max(i for i, s in enumerate(self.starts) if s <= row)

    def locate(self, row: int) -> tuple[str, int]:
        i = self._which(row)
        return self.names[i], row - self.starts[i]

    def cell(self, row: int, column: str) -> Any:
        i = self._which(row)
        return self.tables[i].column(column)[row - self.starts[i]].as_py()


def _table_files(spec: str, base: Path | None) -> tuple[str, Any]:
    """`data.pairs` -> ("parquet", files) | ("arrow", directory) | ("jsonl", file)."""
    path = _resolve(spec, base)
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise UserError(f"data.pairs: file not found: {path}")
        return "jsonl", path
    if any(ch in spec for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path)))
        if not files:
            raise UserError(f"data.pairs: no files match {path}")
        return "parquet", files
    if path.is_file():
        return "parquet", [path]
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            raise UserError(
                f"data.pairs: {path} holds several splits (dataset_dict.json); point data.pairs at one of them, "
                f"e.g. {path / 'train'}"
            )
        if (path / "state.json").is_file() or list(path.glob("*.arrow")):
            return "arrow", path
        files = sorted(path.rglob("*.parquet"))
        if files:
            return "parquet", files
        raise UserError(f"data.pairs: {path} has no .parquet or .arrow files")
    raise UserError(f"data.pairs: not found: {path}")


def _resolve(spec: str, base: Path | None) -> Path:
    path = Path(spec).expanduser()
    return path if path.is_absolute() or base is None else base / path


# ---------------------------------------------------------------------------------------------- sequences


@dataclass
class Augment:
    """Item-level randomness, shared by every image of the item and reproducible: the draw for an item is
    a function of (seed, item index, key), so a resumed run flips and drops prompts exactly as an
    uninterrupted one (the key is the item's access count, or a caller's data position)."""

    random_flip: bool = False
    random_crop: bool = False
    empty_prompt_prob: float = 0.0  # replace the prompt by "" (classifier-free guidance training)
    seed: int = 0

    def draw(self, index: int, key: int) -> tuple[bool, tuple[float, float] | None, bool]:
        rng = random.Random(f"{self.seed}:{index}:{key}")  # str seeds hash with sha512: stable across runs
        flip = self.random_flip and rng.random() < 0.5
        crop = (rng.random(), rng.random()) if self.random_crop else None
        drop = self.empty_prompt_prob > 0 and rng.random() < self.empty_prompt_prob
        return flip, crop, drop


class LazyItems(Sequence):
    """Items built on indexing from `rows` (cheap metadata) and a `read(row) -> dict of image bytes`.

    The first access of a row fully decodes its images; a bad one raises BadSample (on_bad_sample=error)
    or is counted in `stats["bad_skipped"]` and replaced by the next valid row (skip)."""

    def __init__(self, role: str, rows: list[dict], read: Callable[[dict], dict[str, tuple[str, bytes]]],
                 augment: Augment, on_bad_sample: str, stats: dict):
        self.role, self.rows, self.read, self.augment = role, rows, read, augment
        self.on_bad_sample, self.stats = on_bad_sample, stats
        self.stats.setdefault("bad_skipped", 0)
        self._checked: set[int] = set()
        self._bad: set[int] = set()
        self._draws: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def prompts(self) -> list[str]:
        return [r["prompt"] for r in self.rows]

    def _images(self, i: int) -> dict[str, tuple[str, bytes]]:
        images = self.read(self.rows[i])
        if i not in self._checked:
            for name, data in images.values():
                decode_image(data, name)
            self._checked.add(i)
        return images

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        key = self._draws.get(i, 0)
        self._draws[i] = key + 1
        return self.at(i, key)

    def at(self, i: int, key: int) -> dict:
        """Item i with the augmentation drawn for `key` (e.g. the item's position in the data stream)."""
        for j in [*range(i, len(self)), *range(0, i)]:
            if j in self._bad:
                continue
            try:
                images = self._images(j)
            except BadSample as err:
                if self.on_bad_sample == "error":
                    raise
                self._bad.add(j)
                self.stats["bad_skipped"] += 1
                log.warning("skipped bad %s item (%d so far, data.on_bad_sample=skip): %s",
                            self.role, self.stats["bad_skipped"], err)
                continue
            return self._build(self.rows[j], images, self.augment.draw(i, key))
        raise UserError(f"data: every {self.role} item is bad (see the warnings above)")

    def state_dict(self) -> dict:
        """How often each item was drawn: restoring it makes resumed augmentation match."""
        return {"draws": dict(self._draws)}

    def load_state_dict(self, state: dict) -> None:
        self._draws = {int(k): int(v) for k, v in state["draws"].items()}

    def _build(self, row: dict, images: dict[str, tuple[str, bytes]], drawn: tuple) -> dict:
        flip, crop, drop = drawn
        item = {k: v for k, v in row.items() if not k.startswith("_")}
        if drop:
            item["prompt"] = ""
        for key, (name, data) in images.items():
            item[key] = ImageRef(name, data, flip, crop)
        return item


def _bad(msg: str, on_bad_sample: str, stats: dict, counter: str = "bad_skipped") -> None:
    if on_bad_sample == "error":
        raise BadSample(msg)
    stats[counter] = stats.get(counter, 0) + 1
    log.warning("skipped (data.on_bad_sample=skip): %s", msg)


def _pair_from_label(label_0: Any, ties: str) -> tuple[bool, float] | None:
    """Pick-a-Pic label_0 (P(image 0 preferred)) -> (image 0 wins?, label = P(winner preferred)); None = drop."""
    p = float(label_0)
    if p == 0.5:
        if ties == "drop":
            return None
        return True, (0.5 if ties == "half" else 1.0)
    return (True, p) if p > 0.5 else (False, 1.0 - p)


def _valid_label(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1


def read_pairs(spec: str, *, base: Path | None = None, ties: str = "drop", on_bad_sample: str = "error",
               augment: Augment | None = None, max_items: int | None = None) -> LazyItems:
    """Preference pairs -> items {"prompt", "w", "l", "label"} with label = P(w preferred)."""
    if ties not in TIES:
        raise UserError(f"data.ties: {ties!r}; valid: {', '.join(TIES)}")
    kind, where = _table_files(spec, base)
    source = str(where[0]) + (f" and {len(where) - 1} more" if len(where) > 1 else "") if isinstance(where, list) else str(where)
    stats: dict = {"source": source, "rows": 0, "ties_dropped": 0, "bad_skipped": 0}
    if kind == "jsonl":
        rows, read = _jsonl_pairs(where, ties, on_bad_sample, stats)
    else:
        rows, read = _table_pairs(kind, where, ties, on_bad_sample, stats)
    if max_items is not None:
        rows = rows[:max_items]
    if not rows:
        raise UserError(f"data.pairs: no usable pairs in {source} ({_describe(stats)})")
    log.info("pairs: %d from %s (%s)", len(rows), source, _describe(stats))
    return LazyItems("pairs", rows, read, augment or Augment(), on_bad_sample, stats)


def _screen_pair(prompt: Any, label: Any, where: str, fields: tuple[str, str], ties: str, on_bad_sample: str,
                 stats: dict) -> tuple[str, bool, float] | None:
    """Checks shared by every pair format: a non-empty prompt, a label in [0, 1], ties by data.ties.
    -> (prompt, first image wins?, P(winner preferred)), or None when the row is skipped (and counted)."""
    if not isinstance(prompt, str) or not prompt.strip():
        _bad(f"{where} {fields[0]}: empty caption", on_bad_sample, stats)
        return None
    if not _valid_label(label):
        _bad(f"{where} {fields[1]}: {label!r} is not a probability in [0, 1]", on_bad_sample, stats)
        return None
    picked = _pair_from_label(label, ties)
    if picked is None:
        stats["ties_dropped"] += 1
        return None
    return (prompt.strip(), *picked)


def _describe(stats: dict) -> str:
    return f"{stats['rows']} rows, {stats['ties_dropped']} ties dropped, {stats['bad_skipped']} bad rows skipped"


def _table_pairs(kind: str, where: Any, ties: str, on_bad_sample: str, stats: dict):
    shards = _ParquetShards(where) if kind == "parquet" else _ArrowShards(where)
    for i, names in enumerate(shards.names):
        missing = [c for c in PICKAPIC_COLUMNS if c not in shards.schema_names(i)]
        if missing:
            raise UserError(
                f"data.pairs: {names} lacks column(s) {', '.join(missing)}; Pick-a-Pic pairs need "
                f"{', '.join(PICKAPIC_COLUMNS)} (caption, two JPEG byte columns, label_0 = P(jpg_0 preferred))"
            )
    captions, labels = shards.column("caption"), shards.column("label_0")
    stats["rows"] = len(captions)
    base = Path(where) if kind == "arrow" else None
    rows = []
    for r, (caption, label_0) in enumerate(zip(captions, labels)):
        where_r = "{} row {}".format(*shards.locate(r))
        screened = _screen_pair(caption, label_0, where_r, ("column caption", "column label_0"), ties, on_bad_sample, stats)
        if screened is None:
            continue
        prompt, first_wins, label = screened
        w, l = ("jpg_0", "jpg_1") if first_wins else ("jpg_1", "jpg_0")
        rows.append({"prompt": prompt, "label": label, "_row": r, "_where": where_r, "_w": w, "_l": l})

    def read(row: dict) -> dict[str, tuple[str, bytes]]:
        out = {}
        for key in ("w", "l"):
            column = row["_" + key]
            name = f"{row['_where']} column {column}"
            out[key] = (name, _cell_bytes(shards.cell(row["_row"], column), base) or b"")
        return out

    return rows, read


def _jsonl_records(path: Path, role: str):
    return jsonl_records(path, f"data.{role}")


def _first_key(record: dict, keys: tuple[str, ...]) -> Any:
    return next((record[k] for k in keys if k in record), None)


def _read_files(row: dict) -> dict[str, tuple[str, bytes]]:
    out = {}
    for key, path in row["_files"].items():
        try:
            out[key] = (str(path), Path(path).read_bytes())
        except OSError as err:
            raise BadSample(f"{path}: cannot read image ({err.strerror})") from None
    return out


def _check_image_path(path: Path, where: str, on_bad_sample: str, stats: dict) -> bool:
    if path.is_file():
        return True
    _bad(f"{where}: image not found: {path}", on_bad_sample, stats)
    return False


def _jsonl_pairs(path: Path, ties: str, on_bad_sample: str, stats: dict):
    """{"prompt", "chosen", "rejected"[, "label"]} per line; image paths relative to the jsonl file."""
    rows = []
    for n, rec in _jsonl_records(path, "pairs"):
        stats["rows"] += 1
        where = f"{path} line {n}"
        prompt = _first_key(rec, ("prompt", "caption", "text"))
        missing = [k for k in ("chosen", "rejected") if not rec.get(k)]
        if prompt is None or missing:
            raise UserError(f"data.pairs: {where}: needs keys prompt, chosen, rejected (missing "
                            f"{', '.join((['prompt'] if prompt is None else []) + missing)})")
        screened = _screen_pair(prompt, rec.get("label", 1.0), where, ("key prompt", "key label"), ties, on_bad_sample, stats)
        if screened is None:
            continue
        prompt, first_wins, label = screened
        files = {k: path.parent / rec[k] for k in ("chosen", "rejected")}
        if not all(_check_image_path(f, f"{where} key {k}", on_bad_sample, stats) for k, f in files.items()):
            continue
        w, l = (files["chosen"], files["rejected"]) if first_wins else (files["rejected"], files["chosen"])
        rows.append({"prompt": prompt, "label": label, "_files": {"w": w, "l": l}})
    return rows, _read_files


def read_experts(spec: str, *, base: Path | None = None, on_bad_sample: str = "error",
                 augment: Augment | None = None, max_items: int | None = None) -> LazyItems:
    """An imagefolder (images + metadata.jsonl with file_name, text) -> items {"prompt", "x"}."""
    path = _resolve(spec, base)
    meta = path if path.suffix == ".jsonl" else path / "metadata.jsonl"
    if not meta.is_file():
        where = "file" if path.suffix == ".jsonl" else "metadata.jsonl in the folder"
        raise UserError(f"data.experts: {where} not found: {meta} (the HF imagefolder convention: one line "
                        '{"file_name": "0001.png", "text": "a prompt"} per image)')
    stats: dict = {"source": str(meta), "rows": 0, "bad_skipped": 0}
    rows = []
    for n, rec in _jsonl_records(meta, "experts"):
        stats["rows"] += 1
        where = f"{meta} line {n}"
        text, file_name = _first_key(rec, ("text", "caption", "prompt")), rec.get("file_name")
        if file_name is None or text is None:
            raise UserError(f"data.experts: {where}: needs keys file_name and text")
        if not isinstance(text, str) or not text.strip():
            _bad(f"{where} key text: empty caption", on_bad_sample, stats)
            continue
        image = meta.parent / file_name
        if _check_image_path(image, f"{where} key file_name", on_bad_sample, stats):
            rows.append({"prompt": text.strip(), "_files": {"x": image}})
    rows = rows[:max_items] if max_items is not None else rows
    if not rows:
        raise UserError(f"data.experts: no usable images in {meta} ({stats['bad_skipped']} bad rows skipped)")
    log.info("experts: %d images from %s (%d bad skipped)", len(rows), meta, stats["bad_skipped"])
    return LazyItems("experts", rows, _read_files, augment or Augment(), on_bad_sample, stats)


def read_ratings(spec: str, *, base: Path | None = None, on_bad_sample: str = "error",
                 augment: Augment | None = None, max_items: int | None = None) -> LazyItems:
    """jsonl of {"prompt", "file_name" (or "image"), "rating" in [0, 1]} -> items {"prompt", "x", "rating"}."""
    path = _resolve(spec, base)
    if not path.is_file():
        raise UserError(f"data.ratings: file not found: {path}")
    stats: dict = {"source": str(path), "rows": 0, "bad_skipped": 0}
    rows = []
    for n, rec in _jsonl_records(path, "ratings"):
        stats["rows"] += 1
        where = f"{path} line {n}"
        prompt, file_name, rating = rec.get("prompt"), _first_key(rec, ("file_name", "image")), rec.get("rating")
        if prompt is None or file_name is None or rating is None:
            raise UserError(f"data.ratings: {where}: needs keys prompt, file_name, rating")
        if not isinstance(prompt, str) or not prompt.strip() or not _valid_label(rating):
            _bad(f"{where}: empty prompt or rating {rating!r} outside [0, 1]", on_bad_sample, stats)
            continue
        image = path.parent / file_name
        if _check_image_path(image, f"{where} key file_name", on_bad_sample, stats):
            rows.append({"prompt": prompt.strip(), "rating": float(rating), "_files": {"x": image}})
    rows = rows[:max_items] if max_items is not None else rows
    if not rows:
        raise UserError(f"data.ratings: no usable rows in {path}")
    return LazyItems("ratings", rows, _read_files, augment or Augment(), on_bad_sample, stats)


def read_prompts(spec: str, *, base: Path | None = None, max_items: int | None = None) -> list[dict]:
    """A text file with one prompt per line (blank lines ignored), or a jsonl with a prompt/text key."""
    path = _resolve(spec, base)
    if not path.is_file():
        raise UserError(f"data.prompts: file not found: {path}")
    if path.suffix == ".jsonl":
        prompts = []
        for n, rec in _jsonl_records(path, "prompts"):
            text = _first_key(rec, ("prompt", "text", "caption"))
            if not isinstance(text, str) or not text.strip():
                raise UserError(f"data.prompts: {path} line {n}: needs a non-empty prompt (key prompt or text)")
            prompts.append(text.strip())
    else:
        text = read_utf8(path, error=lambda msg: UserError(f"data.prompts: {msg}"))
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise UserError(f"data.prompts: {path} has no prompts")
    return [{"prompt": p} for p in prompts[:max_items]]


"""HumanML3D-format motion data: read, filter, crop, pad and normalise as the released dataset code does.

A directory named by `data.root` holds `new_joint_vecs/<id>.npy` (T × 263 features at 20 fps),
`texts/<id>.txt` (lines `caption#word/POS tokens#start#end`), `Mean.npy`, `Std.npy` and the split files
`train.txt` / `val.txt` / `test.txt` (one id per line).

Selection, as MDM's `Text2MotionDatasetV2` (data_loaders/humanml/data/dataset.py):
- a motion is kept when min_motion_length ≤ T < max_motion_length + unit_length (HumanML3D: 40 ≤ T < 200);
- a caption with start = end = 0 describes the whole motion; otherwise it describes frames
  [int(start·20), int(end·20)), which become a motion of their own, kept by the same length rule;
- each kept (motion, caption) pair is one item: {"prompt", "x" [T, F] float32 un-normalised, "length",
  "tokens" (word/POS), "name"} (the released loader picks a random caption per motion per epoch instead);
- with data.empty_prompt_prob = p, a fraction p of the items gets the empty prompt "" (the unconditional
  input of classifier-free guidance), drawn once per item like the crops;
- every item is cropped to a multiple of unit_length = 4 frames ('single' crop twice as often as 'double',
  which drops one more unit) at a random offset. Crops are drawn ONCE per item from the run's seed, not
  redrawn per epoch, so an interrupted run resumes on exactly the same data.
Files with NaN/inf, the wrong width, unreadable or missing files and missing captions are bad samples:
with `data.on_bad_sample: skip` they are skipped and listed in the load report, with `error` the first
one stops loading with a message naming the file. The length filter is the published selection, not an
error: short and long motions are always skipped and only counted (HumanML3D has hundreds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genpref.errors import BadSample, UserError
from genpref.textio import read_utf8

FPS = 20  # HumanML3D frame rate: caption times are in seconds
UNIT_LENGTH = 4  # crop lengths are multiples of this (the T2M evaluator downsamples by 4)
FEATURES = 263  # HumanML3D feature width (KIT-ML: 251)


@dataclass
class LoadReport:
    """What loading kept and skipped. `bad` maps a reason to the files skipped for it."""

    root: str
    split: str
    items: int = 0
    motions: int = 0
    too_short: list[str] = field(default_factory=list)
    too_long: list[str] = field(default_factory=list)
    spans_dropped: int = 0  # caption sub-spans outside the length range
    bad: dict[str, list[str]] = field(default_factory=dict)

    def skipped_files(self) -> list[str]:
        return sorted({f for files in self.bad.values() for f in files} | set(self.too_short) | set(self.too_long))

    def summary(self) -> str:
        parts = [f"{self.items} items from {self.motions} motions ({self.root}, split {self.split})"]
        parts += [f"{len(v)} {reason}" for reason, v in sorted(self.bad.items())]
        if self.too_short:
            parts.append(f"{len(self.too_short)} too short")
        if self.too_long:
            parts.append(f"{len(self.too_long)} too long")
        if self.spans_dropped:
            parts.append(f"{self.spans_dropped} caption sub-spans outside the length range")
        return "; ".join(parts)


def read_stats(root: Path, features: int = FEATURES) -> tuple[np.ndarray, np.ndarray]:
    """Mean.npy and Std.npy of the model's normalisation, checked: [features], finite, std > 0."""
    out = []
    for name in ("Mean.npy", "Std.npy"):
        path = root / name
        if not path.is_file():
            raise UserError(f"{path} not found (data.root must be a HumanML3D-format directory)")
        try:
            arr = np.load(path, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError, EOFError) as err:
            raise UserError(f"{path}: unreadable ({err})") from None
        if arr.shape != (features,):
            raise UserError(f"{path}: shape {arr.shape}, expected ({features},)")
        if not np.isfinite(arr).all():
            raise UserError(f"{path}: contains NaN or inf")
        out.append(arr)
    if (out[1] <= 0).any():
        raise UserError(f"{root / 'Std.npy'}: entry {int(np.argmin(out[1]))} is not positive")
    return out[0], out[1]


def normalize(motion: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (motion - mean) / std


def denormalize(motion: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return motion * std + mean


def parse_caption_line(line: str) -> tuple[str, list[str], float, float] | None:
    """'caption#tok/POS tok/POS#start#end' -> (caption, tokens, start, end); None for a malformed line."""
    parts = line.strip().split("#")
    if len(parts) < 4 or not parts[0].strip():
        return None
    try:
        start, end = float(parts[2]), float(parts[3])
    except ValueError:
        return None
    start = 0.0 if math.isnan(start) else start
    end = 0.0 if math.isnan(end) else end
    return parts[0].strip(), parts[1].split(" "), start, end


def bad_sample(reason: str, path: Path, detail: str) -> BadSample:
    """A BadSample whose message names the file; `reason` and `path` feed the load report."""
    err = BadSample(f"{path}: {detail}")
    err.reason, err.path = reason, str(path)
    return err


def load_motion_file(path: Path) -> np.ndarray:
    """np.load of a motion .npy (no pickles); BadSample naming the file when it is missing, truncated or
    not an .npy, so data.on_bad_sample=skip can skip it."""
    if not path.is_file():
        raise bad_sample("missing file", path, "missing motion file")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise bad_sample("unreadable", path, f"unreadable, truncated or not an .npy ({type(err).__name__})") from None


def not_utf8(path: Path):
    """An error factory for read_utf8: a caption file in the wrong encoding is one bad sample."""
    def make(message: str) -> BadSample:
        err = BadSample(message)
        err.reason, err.path = "not UTF-8", str(path)
        return err
    return make


def check_motion(motion: np.ndarray, path: Path, features: int) -> None:
    """Raise BadSample naming the file when the array is not a finite [T, features] motion."""
    if motion.ndim != 2:
        raise bad_sample("wrong shape", path, f"expected a [frames, {features}] array, got shape {motion.shape}")
    if motion.shape[1] != features:
        raise bad_sample("wrong shape", path, f"{motion.shape[1]} features per frame, expected {features}")
    if not np.isfinite(motion).all():
        raise bad_sample("NaN/inf", path, "contains NaN or inf")


def crop_length(length: int, rng: np.random.Generator, unit: int = UNIT_LENGTH) -> int:
    """The released crop: a multiple of `unit`, one unit shorter in a third of the draws ('double')."""
    units = length // unit - (1 if rng.choice(["single", "single", "double"]) == "double" else 0)
    return max(units, 1) * unit


def random_crop(motion: np.ndarray, rng: np.random.Generator, unit: int = UNIT_LENGTH) -> np.ndarray:
    m = crop_length(len(motion), rng, unit)
    start = int(rng.integers(0, len(motion) - m + 1))
    return motion[start : start + m]


class MotionDataset(Sequence):
    """The items of one split, loaded eagerly as the released loader does (HumanML3D's train split, with
    its mirrored motions, is ~23k files and ~3.5 GB as float32). `report` says what was skipped."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        min_length: int = 40,
        max_length: int = 196,
        on_bad_sample: str = "error",
        seed: int = 0,
        features: int = FEATURES,
        max_items: int | None = None,
        crop: bool = True,
        empty_prompt_prob: float = 0.0,
    ):
        if on_bad_sample not in ("error", "skip"):
            raise UserError(f"data.on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"data.root: directory not found: {self.root}")
        self.mean, self.std = read_stats(self.root, features)
        self.min_length, self.max_length, self.features = min_length, max_length, features
        self.report = LoadReport(str(self.root), split)
        self.items: list[dict] = []
        rng = np.random.default_rng([seed, 4242])
        for name in self._split_ids(split):
            try:
                self._load_motion(name, rng, crop)
            except BadSample as err:
                if on_bad_sample == "error":
                    raise
                self.report.bad.setdefault(err.reason, []).append(err.path)
            if max_items is not None and len(self.items) >= max_items:
                self.items = self.items[:max_items]
                break
        for item in self.items:  # classifier-free training: drawn once per item, like the crops
            if empty_prompt_prob > 0 and rng.random() < empty_prompt_prob:
                item["prompt"] = ""
        self.report.items = len(self.items)
        if not self.items:
            raise UserError(f"data.root: no usable motions in {self.root} split {split!r}: {self.report.summary()}")

    def _split_ids(self, split: str) -> list[str]:
        path = self.root / f"{split}.txt"
        if not path.is_file():
            raise UserError(f"{path} not found (data.split names a split file in data.root)")
        return [line.strip() for line in read_utf8(path).splitlines() if line.strip()]

    def _in_range(self, length: int) -> bool:
        return self.min_length <= length < self.max_length + UNIT_LENGTH

    def _load_motion(self, name: str, rng: np.random.Generator, crop: bool) -> None:
        path = self.root / "new_joint_vecs" / f"{name}.npy"
        text_path = self.root / "texts" / f"{name}.txt"
        motion = load_motion_file(path)
        check_motion(motion, path, self.features)
        if not text_path.is_file():
            raise bad_sample("missing file", text_path, "missing caption file")
        if len(motion) < self.min_length:
            self.report.too_short.append(str(path))
            return
        if not self._in_range(len(motion)):
            self.report.too_long.append(str(path))
            return
        captions = [c for c in map(parse_caption_line, read_utf8(text_path, not_utf8(text_path)).splitlines()) if c]
        if not captions:
            raise bad_sample("no captions", text_path, "no caption lines of the form caption#tokens#start#end")
        motion = motion.astype(np.float32)
        kept = 0
        for caption, tokens, start, end in captions:
            clip, label = motion, name
            if start != 0.0 or end != 0.0:
                clip = motion[int(start * FPS) : int(end * FPS)]
                label = f"{name}#{start:g}-{end:g}"
                if not self._in_range(len(clip)):
                    self.report.spans_dropped += 1
                    continue
            x = random_crop(clip, rng) if crop else clip
            self.items.append({"prompt": caption, "x": x, "length": len(x), "tokens": tokens, "name": label})
            kept += 1
        self.report.motions += kept > 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def lengths(self) -> np.ndarray:
        return np.array([it["length"] for it in self.items])


def prompts_file(path: str | Path) -> list[dict]:
    """`data.prompts`: one prompt per line (blank lines and '#' comments ignored) -> [{"prompt"}]."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data.prompts: file not found: {path}")
    lines = [line.strip() for line in read_utf8(path, error=lambda msg: UserError(f"data.prompts: {msg}")).splitlines()]
    items = [{"prompt": line} for line in lines if line and not line.startswith("#")]
    if not items:
        raise UserError(f"data.prompts: {path} holds no prompts")
    return items


def motion_jsonl(path: str | Path, role: str, features: int = FEATURES, on_bad_sample: str = "error", key: str = "data.pairs") -> list[dict]:
    """Motion preference data as jsonl, .npy paths relative to the file:
    role "pairs":   {"prompt", "w": "win.npy", "l": "lose.npy", "label": P(w preferred), default 1}
    role "ratings": {"prompt", "x": "motion.npy", "rating": in [0, 1]}
    Motions are read and checked like dataset motions (NaN/inf, width)."""
    import json

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{key}: file not found: {path}")
    fields = ("w", "l") if role == "pairs" else ("x",)
    items, skipped = [], 0
    for n, line in enumerate(read_utf8(path, error=lambda msg: UserError(f"{key}: {msg}")).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompt = str(row["prompt"])
            item = {"prompt": prompt, "label": float(row.get("label", 1.0))} if role == "pairs" else {"prompt": prompt, "rating": float(row["rating"])}
            files = {f: path.parent / str(row[f]) for f in fields}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise UserError(f"{path} line {n}: expected an object with prompt, {', '.join(fields)} ({type(err).__name__}: {err})") from None
        try:
            for f, file in files.items():
                motion = load_motion_file(file)
                check_motion(motion, file, features)
                item[f] = motion.astype(np.float32)
        except BadSample:
            if on_bad_sample == "error":
                raise
            skipped += 1
            continue
        items.append(item)
    if not items:
        raise UserError(f"{key}: no usable rows in {path} ({skipped} skipped)")
    return items

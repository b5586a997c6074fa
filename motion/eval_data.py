"""HumanML3D-format splits as the T2M evaluator reads them: entries with all their captions, sampled per pass.

Selection follows text-to-motion `Text2MotionDatasetV2` (data/dataset.py), the loader behind every
published T2M number: a motion is kept when 40 ≤ T < 200 frames; a caption with start = end = 0 belongs
to the whole motion; a caption with a time span makes its own entry of frames [int(start·20),
int(end·20)) when that clip passes the same length rule. Each pass (`sample_pass`) draws, per entry,
one of its captions at random and a crop to a multiple of 4 frames (one unit shorter in a third of the
draws) at a random offset, in a shuffled order: the reference's DataLoader(shuffle=True) over
`__getitem__`. Files that are missing, unreadable, of the wrong width or not finite are skipped and
listed in `EvalSplit.skipped` (the reference skips them silently).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genpref.errors import UserError

FPS = 20
UNIT_LENGTH = 4
MIN_LENGTH = 40  # HumanML3D (KIT-ML: 24)
MAX_LENGTH = 200  # exclusive
MAX_MOTION_LENGTH = 196  # padded length of the reference loader


@dataclass
class EvalEntry:
    """One evaluation item: a (sub-)motion [T, F] (de-normalised features) and its captions with tokens."""

    name: str
    motion: np.ndarray
    captions: list[tuple[str, list[str]]]


@dataclass
class EvalSplit:
    root: Path
    split: str
    entries: list[EvalEntry]
    skipped: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        """Hash of everything a pass is drawn from: names, motion bytes, captions and tokens."""
        digest = hashlib.sha256(f"{self.split}|{len(self.entries)}".encode())
        for entry in self.entries:
            digest.update(entry.name.encode())
            digest.update(np.ascontiguousarray(entry.motion, dtype=np.float32).tobytes())
            for caption, tokens in entry.captions:
                digest.update(f"{caption}#{' '.join(tokens)}\n".encode())
        return digest.hexdigest()


@dataclass
class EvalPass:
    """One pass over a split: entry order, chosen caption, crop, and the cropped motions."""

    order: np.ndarray  # [N] entry indices in the shuffled order
    captions: list[str]
    tokens: list[list[str]]
    motions: list[np.ndarray]  # [length_i, F] de-normalised
    lengths: np.ndarray  # [N] int


def _caption_lines(path: Path) -> list[tuple[str, list[str], float, float]]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        parts = line.strip().split("#")
        if len(parts) < 4 or not parts[0].strip():
            continue
        try:
            start, end = float(parts[2]), float(parts[3])
        except ValueError:
            continue
        start, end = (0.0 if math.isnan(v) else v for v in (start, end))
        lines.append((parts[0].strip(), [t for t in parts[1].split(" ") if t], start, end))
    return lines


def _read_motion(path: Path, features: int) -> np.ndarray | None:
    try:
        motion = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if motion.ndim != 2 or motion.shape[1] != features or not np.isfinite(motion).all():
        return None
    return motion.astype(np.float32)


def load_split(root: str | Path, split: str = "test", features: int = 263, min_length: int = MIN_LENGTH,
               max_length: int = MAX_LENGTH, max_items: int | None = None) -> EvalSplit:  # fmt: skip
    """Read `root/<split>.txt`, `root/new_joint_vecs/<id>.npy` and `root/texts/<id>.txt`."""
    root = Path(root)
    split_file = root / f"{split}.txt"
    if not split_file.is_file():
        raise UserError(f"{split_file} not found (a HumanML3D-format directory has train/val/test.txt)")
    entries, skipped = [], []

    def in_range(n: int) -> bool:
        return min_length <= n < max_length

    for name in (line.strip() for line in split_file.read_text().splitlines()):
        if not name:
            continue
        motion_path, text_path = root / "new_joint_vecs" / f"{name}.npy", root / "texts" / f"{name}.txt"
        motion = _read_motion(motion_path, features) if motion_path.is_file() else None
        if motion is None or not text_path.is_file():
            skipped.append(str(motion_path if motion is None else text_path))
            continue
        if not in_range(len(motion)):
            continue
        whole = []
        for caption, tokens, start, end in _caption_lines(text_path):
            if start == 0.0 and end == 0.0:
                whole.append((caption, tokens))
                continue
            clip = motion[int(start * FPS) : int(end * FPS)]
            if in_range(len(clip)):
                entries.append(EvalEntry(f"{name}#{start:g}-{end:g}", clip, [(caption, tokens)]))
        if whole:
            entries.append(EvalEntry(name, motion, whole))
        if max_items is not None and len(entries) >= max_items:
            entries = entries[:max_items]
            break
    if not entries:
        raise UserError(f"no usable motions in {root} split {split!r} ({len(skipped)} files skipped)")
    return EvalSplit(root, split, entries, skipped)


def crop_length(length: int, rng: np.random.Generator, unit: int = UNIT_LENGTH) -> int:
    """A multiple of `unit`: length // unit units, or one unit fewer with probability 1/3 (the reference's
    'single', 'single', 'double' coin)."""
    double = rng.choice(["single", "single", "double"]) == "double"
    return max(length // unit - int(double), 1) * unit


def sample_pass(split: EvalSplit, rng: np.random.Generator) -> EvalPass:
    """Shuffle the entries, then per entry draw a caption and a crop (in that order, from `rng`)."""
    order = rng.permutation(len(split.entries))
    captions, tokens, motions = [], [], []
    for i in order:
        entry = split.entries[i]
        caption, caption_tokens = entry.captions[int(rng.integers(len(entry.captions)))]
        m_length = crop_length(len(entry.motion), rng)
        start = int(rng.integers(0, len(entry.motion) - m_length + 1))
        captions.append(caption)
        tokens.append(caption_tokens)
        motions.append(entry.motion[start : start + m_length])
    lengths = np.array([len(m) for m in motions], dtype=np.int64)
    return EvalPass(order, captions, tokens, motions, lengths)


def pad_batch(motions: list[np.ndarray], length: int | None = None) -> np.ndarray:
    """Motions of different lengths -> [B, length or longest, F] with zero rows after each motion."""
    length = length or max(len(m) for m in motions)
    out = np.zeros((len(motions), length, motions[0].shape[1]), dtype=np.float32)
    for i, m in enumerate(motions):
        out[i, : len(m)] = m[:length]
    return out

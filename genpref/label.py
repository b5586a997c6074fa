"""Labelling with a reward model, as pure functions: each prompt's samples ranked by score become preference pairs
with a strength σ(gap / scale), scores become ratings, and k-means clusters of embeddings carry the ratings of a
small rated set to the unrated samples that share their cluster. Lists and numpy only (no torch); the command that
reads, scores and writes is genpref/label_command.py.

Two papers behind it: labelling an unlabelled offline dataset with a preference model ("Real-World Offline RL from
VLM Feedback"), and making a large rated set from a small one by clustering embeddings
("All You Need is Ratings")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SCHEMES = ("all", "best_vs_rest", "best_vs_worst")
TIES = ("drop", "half")
RATINGS = ("minmax", "score", "threshold", "quantile")


@dataclass(frozen=True)
class Pair:
    """Indices of the winner and loser among the samples, their score gap (>= 0) and P(winner preferred)."""

    winner: int
    loser: int
    gap: float
    label: float


def soft_label(gap: float, scale: float) -> float:
    """σ(gap / scale): the preference strength online AI feedback gives a pair (online.label_scale)."""
    return 1.0 / (1.0 + math.exp(-gap / scale))


def group_by_prompt(prompts: Sequence[str]) -> dict[str, list[int]]:
    """prompt -> indices of its samples, prompts in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    return groups


def ranking(scores: Sequence[float]) -> list[int]:
    """Positions best first; equal scores keep their input order (stable), so the result is reproducible."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def rank_positions(n: int, scheme: str) -> list[tuple[int, int]]:
    """(higher rank, lower rank) of the pairs a ranking of n samples gives under `scheme`."""
    if scheme == "all":
        return [(a, b) for a in range(n) for b in range(a + 1, n)]
    if scheme == "best_vs_rest":
        return [(0, b) for b in range(1, n)]
    if scheme == "best_vs_worst":
        return [(0, n - 1)] if n >= 2 else []
    raise ValueError(f"unknown pair scheme {scheme!r}; valid: {', '.join(SCHEMES)}")


def prompt_pairs(indices: Sequence[int], scores: Sequence[float], *, scheme: str = "all", min_gap: float = 0.0,
                 ties: str = "drop", scale: float = 0.1, soft: bool = True, max_pairs: int | None = None) -> tuple[list[Pair], int]:
    """Pairs of one prompt's samples (`indices` into `scores`) and how many ties were dropped.

    A pair whose gap is zero or below `min_gap` is a tie: dropped, or (ties="half") kept with label 0.5. Others get
    σ(gap / scale) (soft) or 1. `max_pairs` keeps the pairs of largest gap (ties last; stable otherwise)."""
    if ties not in TIES:
        raise ValueError(f"unknown ties rule {ties!r}; valid: {', '.join(TIES)}")
    local = [scores[i] for i in indices]
    order = ranking(local)
    kept, dropped = [], 0  # (is a tie, pair)
    for a, b in rank_positions(len(order), scheme):
        w, l = indices[order[a]], indices[order[b]]
        gap = float(scores[w] - scores[l])
        tie = gap <= 0.0 or gap < min_gap
        if tie and ties == "drop":
            dropped += 1
            continue
        kept.append((tie, Pair(w, l, gap, 0.5 if tie else soft_label(gap, scale) if soft else 1.0)))
    if max_pairs is not None:
        kept = sorted(kept, key=lambda tp: (tp[0], -tp[1].gap))[:max_pairs]
    return [p for _, p in kept], dropped


def label_pairs(prompts: Sequence[str], scores: Sequence[float], **settings) -> tuple[list[Pair], int]:
    """prompt_pairs over every prompt (in order of first appearance); (pairs, ties dropped)."""
    pairs, dropped = [], 0
    for indices in group_by_prompt(prompts).values():
        p, d = prompt_pairs(indices, scores, **settings)
        pairs += p
        dropped += d
    return pairs, dropped


def ratings(scores: Sequence[float], rule: str = "minmax", threshold: float | None = None, quantile: float = 0.5) -> list[float]:
    """Scores -> ratings in [0, 1]:
    minmax: (s − min) / (max − min) over every sample (0.5 each when all are equal);
    score: s itself, which must lie in [0, 1] (verifiers, t2m's (1 + cos) / 2);
    threshold: 1 (thumbs up) when s >= threshold, else 0;
    quantile: 1 when s >= the `quantile`-quantile of all scores (numpy's linear interpolation), else 0."""
    s = np.asarray(scores, dtype=np.float64)
    if rule == "minmax":
        span = s.max() - s.min() if len(s) else 0.0
        return [0.5] * len(s) if span == 0 else ((s - s.min()) / span).tolist()
    if rule == "score":
        if len(s) and (s.min() < 0 or s.max() > 1):
            raise ValueError(f"scores span [{s.min():.4g}, {s.max():.4g}], outside [0, 1]")
        return s.tolist()
    if rule == "threshold":
        if threshold is None:
            raise ValueError("the threshold rule needs a threshold")
        return (s >= threshold).astype(float).tolist()
    if rule == "quantile":
        return (s >= np.quantile(s, quantile)).astype(float).tolist() if len(s) else []
    raise ValueError(f"unknown rating rule {rule!r}; valid: {', '.join(RATINGS)}")


# ---------------------------------------------------------------------------------------------- clusters


def _sq_distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """[N, k] squared Euclidean distances as |x|² − 2·x·c + |c|² (memory N·k, not N·k·D)."""
    return np.maximum((x**2).sum(1)[:, None] - 2.0 * x @ centres.T + (centres**2).sum(1)[None], 0.0)


def kmeans(x: np.ndarray, k: int, seed: int = 0, iterations: int = 100) -> np.ndarray:
    """Cluster of each row of x [N, D] by Lloyd's k-means from a k-means++ start (numpy Generator(seed));
    k is capped at N. A cluster that empties keeps its centre. Returns [N] ints in [0, k)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    k = min(k, n)
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(n)]]
    d2 = _sq_distances(x, centres[0][None])[:, 0]  # [N] to the nearest chosen centre
    for _ in range(1, k):  # k-means++: the next centre drawn ∝ squared distance to the nearest chosen one
        centres.append(x[rng.choice(n, p=d2 / d2.sum())] if d2.sum() > 0 else x[rng.integers(n)])
        d2 = np.minimum(d2, _sq_distances(x, centres[-1][None])[:, 0])
    centres = np.asarray(centres)
    assign = np.full(n, -1)
    for _ in range(iterations):
        new = _sq_distances(x, centres).argmin(1)  # [N]
        if (new == assign).all():
            break
        assign = new
        for c in range(k):
            if (assign == c).any():
                centres[c] = x[assign == c].mean(0)
    return assign


def transfer_ratings(cluster: Sequence[int], rating: Sequence[float | None]) -> list[float | None]:
    """Rated samples keep their rating; each unrated one (None) gets the mean rating of the rated samples of its
    cluster, or stays None when its cluster holds none."""
    sums: dict[int, list[float]] = {}
    for c, r in zip(cluster, rating, strict=True):
        if r is not None:
            sums.setdefault(int(c), []).append(float(r))
    means = {c: sum(v) / len(v) for c, v in sums.items()}
    return [r if r is not None else means.get(int(c)) for c, r in zip(cluster, rating)]

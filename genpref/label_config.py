"""The `label:` config section: how `genpref label` (genpref/label_command.py) turns reward scores into preference
pairs and ratings, and how `--from-clusters` carries ratings to unrated samples. The soft label's scale is
online.label_scale (the key online AI feedback reads), the k-means seed train.seed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LabelConfig:
    pairs: str = "all"  # pairs from each prompt's ranking: all (every two samples) | best_vs_rest | best_vs_worst (as ai_feedback)
    min_gap: float = 0.0  # a pair whose score gap is below this (or zero) is a tie
    ties: str = "drop"  # ties: drop | half (written with label 0.5, which data.ties=half reads)
    soft: bool = True  # label = σ(gap / online.label_scale), the pair's strength (OSP, ai_feedback); false: 1.0
    max_pairs_per_prompt: int | None = None  # keep each prompt's N pairs of largest gap (null = every pair)
    rating: str = "minmax"  # score -> rating: minmax (over the whole set) | score (as is; must lie in [0, 1]) | threshold | quantile
    rating_threshold: float | None = None  # rating=threshold: 1 (thumbs up) when score >= this, else 0
    rating_quantile: float = 0.5  # rating=quantile: 1 when score >= this quantile of all scores, else 0
    batch_size: int = 16  # samples decoded and scored (or embedded) per call
    clusters: int = 8  # --from-clusters: k of k-means over rated and unrated samples (capped at their number)
    embedding: str = "auto"  # --from-clusters: auto (a reward model's encoder when one has it, else raw) | raw

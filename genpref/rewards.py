"""Reward models (annotators) behind one interface, and ensembles of them with per-model normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class RewardModel(Protocol):
    """Scores decoded samples (PIL images, de-normalised motions) against their prompts; higher = better."""

    def score(self, samples: Sequence[Any], prompts: Sequence[str]) -> Tensor:
        """[B] float scores on the CPU."""


@runtime_checkable
class SimilarityModel(Protocol):
    """Optional: sample-to-sample similarity (SoPo's S between a dataset motion and online samples)."""

    def similarity(self, a: Sequence[Any], b: Sequence[Any]) -> Tensor:
        """[B] similarity of a[i] and b[i]."""


@runtime_checkable
class SampleEmbedder(Protocol):
    """Optional: an embedding of decoded samples (objective.diversity measures distances in it)."""

    def embed(self, samples: Sequence[Any]) -> Tensor:
        """[B, D] on the CPU."""


def zscore(scores: Tensor, eps: float = 1e-6) -> Tensor:
    """Standardise one model's scores over the batch (DTR-style ensemble normalisation)."""
    if scores.numel() < 2:
        return torch.zeros_like(scores)
    return (scores - scores.mean()) / (scores.std(unbiased=False) + eps)


def near_miss(distance: float, width: float) -> float:
    """Partial credit of a verifier's wrong attribute (graded verifiers): ½ at the decision boundary
    (distance 0), falling linearly to 0 at `width`, so a right attribute (credit 1) outranks every wrong one."""
    return 0.5 * max(0.0, 1.0 - distance / width)


class Ensemble:
    """Weighted sum of several reward models; with normalize="zscore" each model's scores are
    standardised over the batch first, so models on different scales count as configured."""

    def __init__(self, models: Sequence[RewardModel], weights: Sequence[float], normalize: str = "none"):
        if len(models) != len(weights):
            raise ValueError("Ensemble: one weight per model")
        if normalize not in ("none", "zscore"):
            raise ValueError(f"Ensemble: normalize must be 'none' or 'zscore', got {normalize!r}")
        self.models, self.weights, self.normalize = list(models), list(weights), normalize

    def score(self, samples: Sequence[Any], prompts: Sequence[str]) -> Tensor:
        total = None
        for model, weight in zip(self.models, self.weights):
            s = model.score(samples, prompts).float()
            s = zscore(s) if self.normalize == "zscore" else s
            total = weight * s if total is None else total + weight * s
        return total

    def similarity(self, a: Sequence[Any], b: Sequence[Any]) -> Tensor:
        for model in self.models:
            if isinstance(model, SimilarityModel):
                return model.similarity(a, b)
        raise ValueError("no reward model in the ensemble provides a sample similarity")

    def embed(self, samples: Sequence[Any]) -> Tensor:
        """The first member's embedding that offers one (callers check with `embedder`)."""
        return embedder(self).embed(samples)


def embedder(reward) -> SampleEmbedder | None:
    """The reward model (or ensemble member) that embeds samples, or None."""
    for model in getattr(reward, "models", [reward]):
        if isinstance(model, SampleEmbedder) and not isinstance(model, Ensemble):
            return model
    return None

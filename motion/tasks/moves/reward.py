"""The `moves` verifier as a reward model (reward name "moves"): score = fraction of the prompt's four
attributes (action, direction, speed, waving hand) the motion gets right (0, 1/4, ..., 1); similarity =
the fraction of verifier readings two motions share (SoPo's S). No weights. Scores de-normalised features
[T, 263], what the motion adapter's `decode` returns.

    reward:
      models: [{name: moves}]           # or moves_graded: near misses of speed, direction and hand earn
                                        # partial credit (< ½), so a group that fails alike still ranks
                                        # or moves_strict: 1 when all four are right, else 0
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from motion.tasks.moves.grammar import parse_prompt
from motion.tasks.moves.verifier import graded_score, judge, measure, shared_readings


class MovesReward:
    """The `moves` verifier as a reward model. Measurements are cached by motion content (SoPo scores
    each online sample and compares it with its winner, and dataset winners recur every epoch)."""

    def __init__(self, cache_size: int = 4096, graded: bool = False, strict: bool = False):
        self.graded = graded  # partial credit for near misses (verifier.graded_score): reward name moves_graded
        self.strict = strict  # 1 when all four attributes are right, else 0: reward name moves_strict
        self._cache: OrderedDict[bytes, object] = OrderedDict()
        self._cache_size = cache_size

    def measure(self, motion: np.ndarray):
        motion = np.ascontiguousarray(motion, dtype=np.float32)
        key = hashlib.blake2b(motion.tobytes(), digest_size=16, person=str(motion.shape).encode()[:16]).digest()
        if key not in self._cache:
            self._cache[key] = measure(motion)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return self._cache[key]

    def score(self, samples: Sequence[np.ndarray], prompts: Sequence[str]) -> torch.Tensor:
        if self.strict:
            scores = [float(judge(self.measure(m), parse_prompt(p)).correct) for m, p in zip(samples, prompts)]
        elif self.graded:
            scores = [graded_score(self.measure(m), parse_prompt(p)) for m, p in zip(samples, prompts)]
        else:
            scores = [judge(self.measure(m), parse_prompt(p)).score for m, p in zip(samples, prompts)]
        return torch.tensor(scores, dtype=torch.float32)

    def similarity(self, a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> torch.Tensor:
        return torch.tensor([shared_readings(self.measure(x), self.measure(y)) for x, y in zip(a, b)], dtype=torch.float32)


def build_reward(spec, cfg, device) -> MovesReward:
    """genpref.build entry point for reward names "moves" (exact), "moves_graded" (partial credit) and
    "moves_strict" (all or nothing)."""
    return MovesReward(graded=spec.name == "moves_graded", strict=spec.name == "moves_strict")

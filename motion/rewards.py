"""The motion reward model: the T2M evaluator's text–motion similarity.

It scores de-normalised HumanML3D features [T, 263] (what the motion adapter's `decode` returns) against
their prompts, in [0, 1], higher = better, and gives SoPo its motion–motion similarity S:

- "t2m" (`T2MReward`): the T2M evaluator (`reward.models[].path` = an evaluator run directory holding
  `model/finest.tar` and `meta/{mean,std}.npy`, or the finest.tar itself); score = (1 + cos(text
  embedding, motion embedding)) / 2, similarity = (1 + cos) / 2 of two motion embeddings. Word vectors
  come from `<path>/glove`, else `<data.root>/glove`, else
  `eval.glove` in the config. Motions are normalised with the EVALUATOR's statistics and padded frames
  are masked, as DESIGN §2 asks (the released SoPo code fed model-normalised motions with padding).

    reward:
      models: [{name: t2m, path: EVALUATOR_DIR}]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from genpref.errors import UserError


def _cosine01(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(1 + cos) / 2 row by row, in [0, 1]."""
    return (1.0 + torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)) / 2.0


class T2MReward:
    """Text–motion similarity of a T2M evaluator, mapped to [0, 1]."""

    def __init__(self, evaluator, vectorizer):
        self.evaluator, self.vectorizer = evaluator, vectorizer

    @classmethod
    def load(cls, path: str | Path, glove_dirs: Sequence[str | Path] = (), device: str | torch.device = "cpu") -> T2MReward:
        from motion.evaluator import Evaluator
        from motion.glove import WordVectorizer

        path = Path(path)
        checkpoint = path / "model" / "finest.tar" if path.is_dir() else path
        candidates = [Path(g) for g in glove_dirs] + ([path / "glove"] if path.is_dir() else [])
        glove = next((g for g in candidates if (g / "our_vab_data.npy").is_file()), None)
        if glove is None:
            raise UserError(f"reward t2m: no word vectors (our_vab_data.npy) in {', '.join(map(str, candidates)) or 'any directory'}; "
                            "put them in <path>/glove or set eval.glove")  # fmt: skip
        return cls(Evaluator.load(checkpoint, device=device), WordVectorizer.load(glove))

    def embed_motions(self, motions: Sequence[np.ndarray]) -> torch.Tensor:
        from motion.eval_data import pad_batch

        lengths = np.array([len(m) for m in motions])
        if (lengths < self.evaluator.unit_length).any():
            raise UserError(f"reward t2m: motions need at least {self.evaluator.unit_length} frames, got {lengths.min()}")
        batch = self.evaluator.normalise(pad_batch([np.asarray(m, dtype=np.float32) for m in motions]))
        return self.evaluator.embed_motion(batch, lengths).cpu()

    def embed(self, samples: Sequence[np.ndarray]) -> torch.Tensor:
        """genpref.rewards.SampleEmbedder: the motion embeddings (objective.diversity's distances)."""
        return self.embed_motions(samples)

    def embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        from motion.glove import caption_tokens

        word, pos, lengths = self.vectorizer.encode_batch([caption_tokens(p) for p in prompts])
        return self.evaluator.embed_text(word, pos, lengths).cpu()

    def score(self, samples: Sequence[np.ndarray], prompts: Sequence[str]) -> torch.Tensor:
        return _cosine01(self.embed_texts(prompts), self.embed_motions(samples))

    def similarity(self, a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> torch.Tensor:
        return _cosine01(self.embed_motions(a), self.embed_motions(b))


def build_reward(spec, cfg, device):
    """genpref.build entry point: reward name "t2m"."""
    if spec.name == "t2m":
        if not spec.path:
            raise UserError("reward t2m needs reward.models[].path: an evaluator run directory (model/finest.tar, meta/)")
        glove = [g for g in (cfg.eval.get("glove"), cfg.data.root and Path(cfg.data.root) / "glove") if g]
        return T2MReward.load(spec.path, glove, device)
    raise UserError(f"motion.rewards has no reward named {spec.name!r} (t2m)")

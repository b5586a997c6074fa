"""Motion for the learned reward (genpref/learned_reward.py): the T2M evaluator's text and motion embeddings,
as the `t2m` reward computes them (motions de-normalised in, evaluator statistics, padded frames masked),
once for training (pairs and ratings of motion.data.motion_jsonl, cached) and at every score.

`reward_train.encoder` is an evaluator run directory (model/finest.tar, meta/{mean,std}.npy) or its
finest.tar; word vectors come from <encoder>/glove, else <data.root>/glove, else eval.glove, and the
directory used is recorded in reward.json so that scoring reads the same ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from genpref import learned_reward as learned
from genpref import reward_fit
from genpref.errors import UserError
from genpref.registry import resolve_data
from motion.data import motion_jsonl
from motion.rewards import T2MReward

CHUNK = 64  # motions per evaluator pass


def glove_dir(encoder: Path, cfg) -> Path:
    root = cfg.data.root and resolve_data("motion", cfg.data.root, "root", cfg)
    candidates = [encoder / "glove" if encoder.is_dir() else encoder.parent / "glove"]
    candidates += [Path(g) for g in (root and Path(root) / "glove", cfg.eval.get("glove")) if g]
    found = next((g for g in candidates if (g / "our_vab_data.npy").is_file()), None)
    if found is None:
        raise UserError(f"reward_train.encoder: no word vectors (our_vab_data.npy) in {', '.join(map(str, candidates))}; "
                        "put them in <encoder>/glove or set eval.glove")
    return found.resolve()


class LearnedMotionReward:
    """r(motion, prompt) = head([s, t, s·t]) of the evaluator's L2-normalised embeddings; [B] on the CPU."""

    def __init__(self, encoder: T2MReward, head):
        self.encoder, self.head = encoder, head

    def embed_samples(self, samples: Sequence[np.ndarray]) -> Tensor:
        """[B, D] motion embeddings, as the head sees them before normalisation (genpref.refit ranks pairs by them)."""
        return embed_motions(self.encoder, samples)

    @torch.no_grad()
    def score(self, samples: Sequence[np.ndarray], prompts: Sequence[str]) -> Tensor:
        if len(samples) != len(prompts):
            raise ValueError(f"score: {len(samples)} motions but {len(prompts)} prompts")
        return self.head(reward_fit.features(embed_motions(self.encoder, samples), self.encoder.embed_texts(prompts))).float()


def embed_motions(encoder: T2MReward, motions: Sequence[np.ndarray]) -> Tensor:
    parts = [encoder.embed_motions(motions[i:i + CHUNK]) for i in range(0, len(motions), CHUNK)]
    return torch.cat(parts).float() if parts else torch.zeros(0)


def build_scorer(info: dict, head, key: str, device) -> LearnedMotionReward:
    return LearnedMotionReward(T2MReward.load(info["encoder"], [info["glove"]], device), head)


# ---------------------------------------------------------------------------------------------- training data


def _with_ties(pairs: list[dict], ties: str) -> list[dict]:
    """data.ties for motion pairs: drop label 0.5 | half (keep it as a soft label) | first (the first motion wins)."""
    if ties == "drop":
        return [p for p in pairs if p["label"] != 0.5]
    return [p if p["label"] != 0.5 or ties == "half" else {**p, "label": 1.0} for p in pairs]


def _embed(encoder: T2MReward, pairs, ratings) -> dict[str, Tensor]:
    prompts = sorted({row["prompt"] for items in (pairs, ratings) if items for row in items})
    index = {p: i for i, p in enumerate(prompts)}
    out = {"texts": encoder.embed_texts(prompts).float()}
    if pairs:
        out["w"], out["l"] = embed_motions(encoder, [p["w"] for p in pairs]), embed_motions(encoder, [p["l"] for p in pairs])
        out["label"] = torch.tensor([p["label"] for p in pairs])
        out["pair_prompt"] = torch.tensor([index[p["prompt"]] for p in pairs])
    if ratings:
        out["x"] = embed_motions(encoder, [r["x"] for r in ratings])
        out["rating"] = torch.tensor([r["rating"] for r in ratings])
        out["rating_prompt"] = torch.tensor([index[r["prompt"]] for r in ratings])
    return out


def embed_training_data(cfg, out_dir: Path):
    """(PairData | None, RatingData | None, info) for genpref.learned_reward.train; embeddings cached."""
    d = cfg.data
    specs = {"pairs": str(resolve_data("motion", d.pairs, "pairs", cfg)) if d.pairs else None,
             "ratings": str(resolve_data("motion", d.ratings, "ratings", cfg)) if d.ratings else None}
    pairs = ratings = None
    if specs["pairs"]:
        pairs = _with_ties(motion_jsonl(specs["pairs"], "pairs", on_bad_sample=d.on_bad_sample, key="data.pairs"), d.ties)
        pairs = pairs[:d.max_items] if d.max_items else pairs
        if not pairs:
            raise UserError(f"data.pairs: no pairs left in {specs['pairs']} (data.ties={d.ties} dropped the ties)")
    if specs["ratings"]:
        ratings = motion_jsonl(specs["ratings"], "ratings", on_bad_sample=d.on_bad_sample, key="data.ratings")
        ratings = ratings[:d.max_items] if d.max_items else ratings
    encoder = Path(cfg.reward_train.encoder).expanduser().resolve()
    glove = glove_dir(encoder, cfg)
    key = learned.fingerprint({"encoder": str(encoder), "glove": str(glove), **specs, "ties": d.ties, "max_items": d.max_items,
                               "on_bad_sample": d.on_bad_sample}, [str(encoder), str(glove), specs["pairs"], specs["ratings"]])
    tensors, cache = learned.cached_embeddings(cfg, out_dir, key, lambda: _embed(T2MReward.load(encoder, [glove]), pairs, ratings))
    pair_data, rating_data = learned.training_data(tensors)
    info = {"encoder": str(encoder), "glove": str(glove), "embedding_dim": tensors["texts"].shape[1], "cache": str(cache),
            "data": {"pairs": specs["pairs"], "ratings": specs["ratings"], "ties": d.ties, "max_items": d.max_items,
                     "pair_count": len(pairs or []), "rating_count": len(ratings or [])}}
    return pair_data, rating_data, info

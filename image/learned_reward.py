"""Images for the learned reward (genpref/learned_reward.py): a frozen CLIP-format encoder from a local
directory embeds images and prompts, once for training (pairs and ratings, cached) and at every score.

The encoder directory is a transformers CLIPModel with its processor files, or PickScore's layout (model at
the top, the processor files in processor/), as the `clip` and `pickscore` scorers read them. Training
embeddings are cached in data.cache_dir (default DIR/cache) under a key of the encoder's and the data's
files (names, sizes, modification times) and the data keys, so a second fit with other head settings
skips the encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from genpref import learned_reward as learned
from genpref import reward_fit
from genpref.registry import resolve_data
from image import data as image_data
from image import scorers

EMBED_CHUNK = 256  # images decoded and embedded per step of the training pass


class ClipEncoder:
    """Projected image and text embeddings of a frozen CLIP model, [B, D] float32 on the CPU."""

    def __init__(self, model, processor, device):
        self.model, self.processor, self.device = model.to(device), processor, torch.device(device)

    @classmethod
    def load(cls, path: str | Path, key: str, device="cpu") -> ClipEncoder:
        path = Path(path).expanduser()
        if not path.is_dir():
            from genpref.errors import UserError

            raise UserError(f"{key}: {path} is not a CLIP-format directory (model + processor files)")
        processor_dir = path / "processor" if scorers.has_processor(path / "processor") else path
        model, processor = scorers.load_clip(path, processor_dir, key, "the learned reward's encoder")
        return cls(model, processor, device)

    @torch.no_grad()
    def _images(self, images: list, _: list) -> Tensor:
        pixels = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        dtype = next(self.model.parameters()).dtype
        return scorers.projected(self.model.get_image_features(pixel_values=pixels.to(self.device, dtype)))

    @torch.no_grad()
    def _texts(self, _: list, prompts: list[str]) -> Tensor:
        text = self.processor(text=prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        return scorers.projected(self.model.get_text_features(input_ids=text["input_ids"].to(self.device),
                                                              attention_mask=text["attention_mask"].to(self.device)))

    def embed_images(self, images: Sequence) -> Tensor:
        return scorers.chunked(self._images, images, [""] * len(images))

    def embed_texts(self, prompts: Sequence[str]) -> Tensor:
        return scorers.chunked(self._texts, [None] * len(prompts), prompts)


class LearnedImageReward:
    """r(image, prompt) = head([s, t, s·t]) of the encoder's L2-normalised embeddings; [B] on the CPU."""

    def __init__(self, encoder: ClipEncoder, head):
        self.encoder, self.head = encoder, head

    def embed_samples(self, samples: Sequence) -> Tensor:
        """[B, D] image embeddings, as the head sees them before normalisation (genpref.refit ranks pairs by them)."""
        return self.encoder.embed_images(samples)

    @torch.no_grad()
    def score(self, samples: Sequence, prompts: Sequence[str]) -> Tensor:
        if len(samples) != len(prompts):
            raise ValueError(f"score: {len(samples)} images but {len(prompts)} prompts")
        return self.head(reward_fit.features(self.encoder.embed_images(samples), self.encoder.embed_texts(prompts))).float()


def build_scorer(info: dict, head, key: str, device) -> LearnedImageReward:
    return LearnedImageReward(ClipEncoder.load(info["encoder"], key, device), head)


# ---------------------------------------------------------------------------------------------- training data


def _embed_items(encoder: ClipEncoder, items, fields: tuple[str, ...], desc: str) -> tuple[dict[str, Tensor], list[dict]]:
    """Embeddings of each item's images (ImageRefs under `fields`), read and decoded a chunk at a time so memory
    stays bounded, with a progress bar; and the items without their images (prompt, label / rating)."""
    from tqdm.auto import tqdm

    parts, rows = {f: [] for f in fields}, []
    for start in tqdm(range(0, len(items), EMBED_CHUNK), desc=desc, dynamic_ncols=True, disable=len(items) <= EMBED_CHUNK):
        chunk = [items[i] for i in range(start, min(start + EMBED_CHUNK, len(items)))]
        for f in fields:
            parts[f].append(encoder.embed_images([image_data.decode_image(it[f].data, it[f].name) for it in chunk]))
        rows += [{k: v for k, v in it.items() if k not in fields} for it in chunk]
    return {f: torch.cat(p) for f, p in parts.items()}, rows


def _embed(cfg, pairs, ratings, encoder_key: str) -> dict[str, Tensor]:
    """Raw embeddings in genpref.learned_reward.cached_embeddings' layout."""
    encoder = ClipEncoder.load(cfg.reward_train.encoder, encoder_key)
    prompts = sorted({row["prompt"] for items in (pairs, ratings) if items is not None for row in items.rows})
    index = {p: i for i, p in enumerate(prompts)}
    out = {"texts": encoder.embed_texts(prompts)}
    if pairs is not None:
        images, rows = _embed_items(encoder, pairs, ("w", "l"), "embed pairs")
        out.update(images)
        out["label"] = torch.tensor([float(r["label"]) for r in rows])
        out["pair_prompt"] = torch.tensor([index[r["prompt"]] for r in rows])
    if ratings is not None:
        images, rows = _embed_items(encoder, ratings, ("x",), "embed ratings")
        out.update(images)
        out["rating"] = torch.tensor([float(r["rating"]) for r in rows])
        out["rating_prompt"] = torch.tensor([index[r["prompt"]] for r in rows])
    return out


def embed_training_data(cfg, out_dir: Path):
    """(PairData | None, RatingData | None, info) for genpref.learned_reward.train; embeddings cached."""
    d = cfg.data
    common = {"on_bad_sample": d.on_bad_sample, "max_items": d.max_items}
    specs = {"pairs": resolve_data("image", d.pairs, "pairs", cfg) if d.pairs else None,
             "ratings": resolve_data("image", d.ratings, "ratings", cfg) if d.ratings else None}
    pairs = image_data.read_pairs(specs["pairs"], ties=d.ties, **common) if specs["pairs"] else None
    ratings = image_data.read_ratings(specs["ratings"], **common) if specs["ratings"] else None
    encoder = str(Path(cfg.reward_train.encoder).expanduser().resolve())
    key = learned.fingerprint({"encoder": encoder, **specs, "ties": d.ties, **common}, [encoder, specs["pairs"], specs["ratings"]])
    tensors, cache = learned.cached_embeddings(cfg, out_dir, key, lambda: _embed(cfg, pairs, ratings, "reward_train.encoder"))
    pair_data, rating_data = learned.training_data(tensors)
    info = {"encoder": encoder, "embedding_dim": tensors["texts"].shape[1], "cache": str(cache),
            "data": {"pairs": specs["pairs"], "ratings": specs["ratings"], "ties": d.ties, "max_items": d.max_items,
                     "pair_count": len(pairs) if pairs is not None else 0, "rating_count": len(ratings) if ratings is not None else 0,
                     "ties_dropped": pairs.stats.get("ties_dropped", 0) if pairs is not None else 0}}
    return pair_data, rating_data, info

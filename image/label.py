"""Images for `genpref label` (genpref/label_command.py): the unlabelled folder, decoding, the keys of the files it
writes and the embedding `--from-clusters` clusters.

Input: an image folder in the Hugging Face imagefolder convention, the format `data.experts` reads: images and a
`metadata.jsonl` with one line {"file_name": "0001.png", "text": "a prompt"} per image ("prompt" or "caption" is
read for "text" too); several images per prompt are several lines with the same text. `--input` may also name the
metadata.jsonl itself. Every image in the folder must be listed (an image without a prompt is an error).

Output keys, as image/data.py reads them: pairs.jsonl {"prompt", "chosen", "rejected", "label"} (data.pairs) and
ratings.jsonl {"prompt", "file_name", "rating"} (data.ratings), image paths relative to the output directory.

Embedding (label.embedding): `auto` takes the first reward model with a CLIP encoder (`learned`, `clip`,
`pickscore`) and gives [s, t, s·t] of the L2-normalised image and prompt embeddings (what the learned reward's head
reads); `raw`, or no such model, gives the image as a 16×16 RGB thumbnail in [0, 1] (768 numbers, prompt unused).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from genpref.errors import UserError
from genpref.textio import jsonl_records
from image.data import IMAGE_SUFFIXES, decode_image

PAIR_KEYS = ("chosen", "rejected")
SAMPLE_KEY = "file_name"
RATED_KEYS = ("file_name", "image")
PROMPT_KEYS = ("text", "prompt", "caption")
THUMBNAIL = 16  # side of the raw embedding's thumbnail


def read_input(path: Path) -> list[tuple[Path, str]]:
    """[(image file, prompt)] of an imagefolder (or its metadata.jsonl); UserError naming the file at fault."""
    if not path.exists():
        raise UserError(f"--input {path}: not found")
    meta = path if path.is_file() else path / "metadata.jsonl"
    folder = meta.parent
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not meta.is_file():
        if not images:
            raise UserError(f"--input {path}: the folder is empty (no images and no metadata.jsonl)")
        raise UserError(f"--input {path}: {meta} not found; list each image's prompt there, one line "
                        '{"file_name": "0001.png", "text": "a prompt"} per image')
    samples = []
    for n, rec in jsonl_records(meta, "--input"):
        if not rec.get("file_name"):
            raise UserError(f"{meta} line {n}: needs keys file_name and text")
        prompt = next((rec[k] for k in PROMPT_KEYS if k in rec), None)
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError(f"{meta} line {n}: {rec['file_name']} has no prompt (key text)")
        file = folder / str(rec["file_name"])
        if not file.is_file():
            raise UserError(f"{meta} line {n}: image not found: {file}")
        samples.append((file, prompt.strip()))
    if not samples:
        raise UserError(f"--input {path}: {meta} lists no images")
    listed = {f.resolve() for f, _ in samples}
    missing = [p for p in images if p.resolve() not in listed]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UserError(f"--input {path}: {missing[0]}{more} has no prompt: {meta} does not list it")
    return samples


def load(files: list[Path]) -> list[Image.Image]:
    """Decoded RGB images; UserError naming the file that cannot be read or decoded."""
    images = []
    for f in files:
        try:
            data = Path(f).read_bytes()
        except OSError as err:
            raise UserError(f"{f}: cannot read image ({err.strerror})") from None
        images.append(decode_image(data, str(f)))
    return images


def raw_embedding(images: list[Image.Image], prompts: list[str]) -> np.ndarray:
    """[B, 3·16·16] thumbnails in [0, 1] (bilinear): images alike in colour and layout lie close."""
    return np.stack([np.asarray(im.convert("RGB").resize((THUMBNAIL, THUMBNAIL), Image.BILINEAR), dtype=np.float64).reshape(-1) / 255.0
                     for im in images])


def _clip_encoder(model, device):
    from image.learned_reward import ClipEncoder, LearnedImageReward
    from image.scorers import ClipScorer

    if isinstance(model, LearnedImageReward):
        return model.encoder
    if isinstance(model, ClipScorer):
        return ClipEncoder(model.model, model.processor, device)
    return None


def embedder(models: list, mode: str, device):
    """(description, fn(images, prompts) -> [B, D]) for label.embedding `mode` (auto | raw)."""
    from genpref.reward_fit import features

    for i, model in enumerate(models if mode == "auto" else []):
        encoder = _clip_encoder(model, device)
        if encoder is not None:
            return (f"[s, t, s·t] of the CLIP encoder of reward.models[{i}]",
                    lambda ims, ps, e=encoder: features(e.embed_images(ims), e.embed_texts(ps)).numpy())
    return f"raw: {THUMBNAIL}x{THUMBNAIL} RGB thumbnails", raw_embedding

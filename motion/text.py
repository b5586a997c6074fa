"""Frozen text encoders for motion models: CLIP sentence features from a local directory, or a tiny one for tests.

Both MDM and MLD condition on CLIP's *sentence* feature: the final-layer state of the end-of-text token
passed through `text_projection` (512-d for ViT-B/32 in MDM, 768-d for ViT-L/14 in MLD). Released
code tokenizes differently and we follow each:
- MDM (`model/mdm.py` `clip_encode_text`): OpenAI `clip.tokenize` truncated to 20 words + start/end
  (context 22), then zero-padded to 77. CLIP's causal mask makes the padding irrelevant to the EOT
  state, so a 22-token call gives the same feature.
- MLD (`mld_clip.py`): the transformers tokenizer padded to `model_max_length` (77), truncated.
MDM ran CLIP in float16 (`clip.model.convert_weights`); we run it in float32 (differences ~1e-3).

The tiny encoder is a randomly initialised `CLIPTextModelWithProjection` with a word-hashing tokenizer
that needs no files. Its weights come from a fixed seed, so a tiny model saved by one run and loaded by
another sees the same text features.
"""

from __future__ import annotations

import pickle
import re
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from genpref.errors import UserError

TINY_SEED = 1234  # fixed: tiny text features must not depend on the run's seed
TINY_VOCAB = 1024  # tiny tokenizer ids: 0 pad, 1 start, 2..1022 hashed words, 1023 end


class WordHashTokenizer:
    """Lower-cased words hashed into a small vocabulary; [start] words [end] [pad...]. No files needed."""

    def __init__(self, vocab_size: int = TINY_VOCAB, max_length: int = 22):
        self.vocab_size, self.max_length = vocab_size, max_length
        self.pad_id, self.bos_id, self.eos_id = 0, 1, vocab_size - 1

    def word_id(self, word: str) -> int:
        return 2 + zlib.crc32(word.encode("utf-8")) % (self.vocab_size - 3)

    def __call__(self, prompts: Sequence[str]) -> Tensor:
        rows = []
        for text in prompts:
            words = re.findall(r"[a-z0-9']+", text.lower())[: self.max_length - 2]
            ids = [self.bos_id] + [self.word_id(w) for w in words] + [self.eos_id]
            rows.append(ids + [self.pad_id] * (self.max_length - len(ids)))
        return torch.tensor(rows, dtype=torch.long)


class SentenceEncoder:
    """prompts -> [B, D] float32 sentence features of a frozen CLIP text tower, cached per prompt.

    `tokenize` maps a list of prompts to input ids [B, L]; `model` is a CLIPTextModelWithProjection.
    Not an nn.Module on purpose: its weights stay out of the denoiser's parameters and state dict
    (released MDM checkpoints carry no CLIP weights).
    """

    def __init__(self, model, tokenize: Callable[[Sequence[str]], Tensor], name: str, cache_size: int = 4096):
        self.model = model.eval().requires_grad_(False)
        self.tokenize, self.name = tokenize, name
        self.dim = int(model.config.projection_dim)
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        self._cache_size = cache_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> SentenceEncoder:
        self.model.to(device)
        self._cache.clear()
        return self

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> Tensor:
        ids = self.tokenize(prompts).to(self.device)
        return self.model(input_ids=ids).text_embeds.float()

    def __call__(self, prompts: Sequence[str]) -> Tensor:
        prompts = [str(p) for p in prompts]
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            for p, e in zip(missing, self._encode(missing)):
                self._cache[p] = e
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return torch.stack([self._cache[p] for p in prompts])  # [B, D]


def tiny_clip(projection_dim: int = 32, max_length: int = 22) -> SentenceEncoder:
    """A small random CLIP text tower (2 layers, width 32) with the word-hashing tokenizer."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tokenizer = WordHashTokenizer(TINY_VOCAB, max_length)
    config = CLIPTextConfig(
        vocab_size=TINY_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=max(77, max_length),
        projection_dim=projection_dim,
        pad_token_id=tokenizer.pad_id,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,  # != 2, so the pooled state is taken at the first end token
    )
    fork = torch.random.fork_rng(devices=[])
    with fork:
        torch.manual_seed(TINY_SEED)
        model = CLIPTextModelWithProjection(config)
    return SentenceEncoder(model, tokenizer, name="tiny")


def load_clip(path: str | None, max_length: int | None, key: str = "model.text_encoder") -> SentenceEncoder:
    """CLIP text tower + tokenizer from a local directory (a download of openai/clip-vit-*).

    max_length: tokens per prompt including start/end (MDM: 22); None = the tokenizer's 77.
    """
    if not path:
        raise UserError(
            f"{key} is required: a local directory holding the CLIP model (e.g. a download of "
            "openai/clip-vit-base-patch32 for MDM, openai/clip-vit-large-patch14 for MLD)"
        )
    if not Path(path).is_dir():
        raise UserError(f"{key}: directory not found: {path} (weights cannot be downloaded here; give a local copy)")
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = CLIPTextModelWithProjection.from_pretrained(path, local_files_only=True)
    except pickle.UnpicklingError:  # transformers loads .bin with torch.load(weights_only=True)
        raise UserError(f"{key}: {path} holds pickled .bin weights that are not plain tensors; refused (nothing "
                        "was run): convert them to .safetensors") from None
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{key}: could not load a CLIP text model and tokenizer from {path}: {first}") from None
    length = max_length or tokenizer.model_max_length

    def tokenize(prompts: Sequence[str]) -> Tensor:
        out = tokenizer(list(prompts), padding="max_length", truncation=True, max_length=length, return_tensors="pt")
        return out["input_ids"]

    return SentenceEncoder(model, tokenize, name=str(path))

"""Content-keyed cache of VAE latents and text embeddings: computed once, stored as safetensors, so a
cached training step runs only the UNet.

Keys hash what determines the value and nothing else: an image's bytes + preprocessing (resolution,
crop position, flip) + the codec's weights; a prompt + the text encoders' weights and tokenizers.
Renaming or moving files keeps the cache; changing the VAE or the resolution misses it.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from genpref.errors import UserError
from image.data import ImageRef, crop_box, decode_image, preprocess


def content_key(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        h.update(len(data).to_bytes(8, "little") + data)  # length-prefixed: no ambiguity between parts
    return h.hexdigest()


class TensorStore:
    """Safetensors files under `root/<kind>/<key[:2]>/<key>.safetensors`, with a bounded in-memory layer.

    Writes go to a temporary file first and are renamed into place, so concurrent processes and
    interrupted runs never leave a half-written entry."""

    def __init__(self, root: str | Path, memory_items: int = 4096):
        self.root = Path(root)
        self.memory: OrderedDict[str, dict[str, Tensor]] = OrderedDict()
        self.memory_items = memory_items
        self.hits = self.misses = 0

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / f"{key}.safetensors"

    def get(self, kind: str, key: str) -> dict[str, Tensor] | None:
        from safetensors.torch import load_file

        mem = f"{kind}/{key}"
        if mem in self.memory:
            self.memory.move_to_end(mem)
            self.hits += 1
            return self.memory[mem]
        path = self._path(kind, key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            tensors = load_file(str(path))
        except Exception:  # a damaged entry is recomputed, not trusted
            self.misses += 1
            return None
        self.hits += 1
        self._remember(mem, tensors)
        return tensors

    def put(self, kind: str, key: str, tensors: dict[str, Tensor]) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        path = self._path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            save_file(tensors, str(tmp))
            os.replace(tmp, path)
        except (OSError, SafetensorError) as err:  # disk full: no half-written entry stays behind
            tmp.unlink(missing_ok=True)
            raise UserError(f"cannot write the latent cache {path.parent} ({getattr(err, 'strerror', None) or err}); free space or "
                            "point data.cache_dir at a larger disk") from None
        self._remember(f"{kind}/{key}", tensors)

    def _remember(self, mem: str, tensors: dict[str, Tensor]) -> None:
        self.memory[mem] = tensors
        while len(self.memory) > self.memory_items:
            self.memory.popitem(last=False)


def as_ref(sample: Any) -> ImageRef:
    """What encode accepts: an ImageRef (from load_items), a path, raw bytes or a PIL image."""
    if isinstance(sample, ImageRef):
        return sample
    if isinstance(sample, (str, os.PathLike)):
        from genpref.errors import BadSample

        try:
            return ImageRef(str(sample), Path(sample).read_bytes())
        except OSError as err:
            raise BadSample(f"{sample}: cannot read image ({err.strerror})") from None
    if isinstance(sample, (bytes, bytearray)):
        return ImageRef("<bytes>", bytes(sample))
    if isinstance(sample, Image.Image):
        buf = io.BytesIO()
        sample.convert("RGB").save(buf, format="PNG")
        return ImageRef("<PIL image>", buf.getvalue())
    raise TypeError(f"cannot encode a {type(sample).__name__} as an image")


class CachedEncoder:
    """Images -> (x0 latents, SDXL micro-conditioning) and prompts -> text conditioning, through the store.

    codec: VaeCodec or IdentityCodec; prompt_encoder: ClipPromptEncoder (anything with `encode(prompts)`
    returning per-prompt tensors and an `identity` string)."""

    def __init__(self, store: TensorStore, codec: Any, prompt_encoder: Any, resolution: int, batch_size: int = 8):
        self.store, self.codec, self.prompt_encoder = store, codec, prompt_encoder
        self.resolution, self.batch_size = resolution, batch_size

    def _image_key(self, ref: ImageRef) -> str:
        try:
            size = Image.open(io.BytesIO(ref.data)).size  # header only
        except Exception:
            decode_image(ref.data, ref.name)  # raises BadSample naming the source
            raise
        _, _, top, left = crop_box(size, self.resolution, ref.crop)
        return content_key(ref.data, f"res={self.resolution};top={top};left={left};flip={ref.flip}",
                           self.codec.identity)

    def images(self, samples: Sequence[Any]) -> tuple[Tensor, Tensor]:
        """-> x0 [B, C, R/f, R/f] float32 and micro-conditioning [B, 4] (orig_h, orig_w, top, left), on the CPU."""
        refs = [as_ref(s) for s in samples]
        keys = [self._image_key(r) for r in refs]
        found = {k: self.store.get("latents", k) for k in dict.fromkeys(keys)}
        todo = [(k, r) for k, r in zip(keys, refs) if found[k] is None]
        todo = list({k: r for k, r in todo}.items())
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            pixels, micro = zip(*(preprocess(decode_image(r.data, r.name), self.resolution, r.flip, r.crop)
                                  for _, r in chunk))
            x0 = self.codec.encode(torch.stack(pixels)).cpu()
            for i, (key, _) in enumerate(chunk):
                entry = {"x0": x0[i].clone(), "micro": torch.tensor(micro[i], dtype=torch.float32)}
                self.store.put("latents", key, entry)
                found[key] = entry
        x0 = torch.stack([found[k]["x0"] for k in keys]).float()
        micro = torch.stack([found[k]["micro"] for k in keys]).float()
        return x0, micro

    def prompts(self, prompts: Sequence[str]) -> dict[str, Tensor]:
        """-> conditioning tensors, each [B, ...] float32 on the CPU."""
        if not prompts:
            raise ValueError("CachedEncoder.prompts: no prompts")
        keys = [content_key(p, self.prompt_encoder.identity) for p in prompts]
        found = {k: self.store.get("text", k) for k in dict.fromkeys(keys)}
        todo = list({k: p for k, p in zip(keys, prompts) if found[k] is None}.items())
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            cond = self.prompt_encoder.encode([p for _, p in chunk])
            for i, (key, _) in enumerate(chunk):
                entry = {name: value[i].cpu().clone() for name, value in cond.items()}
                self.store.put("text", key, entry)
                found[key] = entry
        names = found[keys[0]].keys()
        return {name: torch.stack([found[k][name] for k in keys]).float() for name in names}


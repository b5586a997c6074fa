"""A tiny random CLIP-format directory (2-layer CLIPModel, projection 16, byte-level tokenizer, 32 px
processor) for the learned-reward tiny config and tests: `python -m image.tasks.tiny_clip DIR`."""

from __future__ import annotations

import sys
from pathlib import Path


def write_tiny_clip(directory: str | Path, seed: int = 0, processor: bool = True) -> Path:
    """A CLIPModel + CLIPProcessor as save_pretrained writes them; the same weights for the same seed."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from image.models import tiny_tokenizer

    directory = Path(directory)
    tokenizer = tiny_tokenizer(directory / "tok")
    vocab = len(tokenizer)
    text = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=77, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8)
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(str(directory))
    if processor:
        image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(directory))
    return directory


if __name__ == "__main__":
    print(write_tiny_clip(sys.argv[1] if len(sys.argv) > 1 else "tiny-clip"))

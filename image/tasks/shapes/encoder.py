"""A small CLIP for the shapes task: the frozen encoder of the benchmark's learned reward (`rm_grpo`).

A real user's learned reward sits on a CLIP pretrained elsewhere; this one plays that part for the shapes
task. It is trained once, contrastively, on the expert renders of the training combinations only (the
data SFT sees; never a held-out combination), and saved in CLIP format (`save_pretrained` of a CLIPModel
and its processor), so `reward_train.encoder` reads it like any local CLIP directory. The learned head on
top of it sees nothing but the preference pairs it is fitted on.

    python -m image.tasks.shapes.encoder OUT_DIR [EXPERTS_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from image.tasks import shapes

DONE = ".complete"  # written last: a directory without it holds no finished encoder
WIDTH, LAYERS, PROJECTION = 64, 3, 32
EPOCHS, BATCH, LR = 60, 96, 1e-3


def caption_targets(captions: list[str]) -> torch.Tensor:
    """Row-normalised same-caption matrix [B, B]: every render of a combination is a positive of its caption,
    so the contrastive loss does not push apart the 25 jitters of one combination."""
    same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32)
    return same / same.sum(dim=1, keepdim=True)


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss with soft targets: cross-entropy of softmax(scale · cos) against `targets`, both ways."""
    logits = scale * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    return 0.5 * (torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()
                  + torch.sum(-targets.T * F.log_softmax(logits.T, dim=1), dim=1).mean())


def _experts(directory: Path) -> tuple[list, list[str]]:
    from PIL import Image

    rows = [json.loads(line) for line in (directory / "metadata.jsonl").read_text().splitlines() if line.strip()]
    return [Image.open(directory / r["file_name"]).convert("RGB") for r in rows], [r["text"] for r in rows]


def train_encoder(out_dir: str | Path, experts_dir: str | Path, *, seed: int = 0, epochs: int = EPOCHS, progress: bool = True) -> Path:
    """Train the shapes CLIP into out_dir once (a finished directory is returned as it is)."""
    from tqdm.auto import tqdm
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from image.models import tiny_tokenizer
    from image.scorers import projected

    out_dir = Path(out_dir)
    if (out_dir / DONE).is_file():
        return out_dir
    tokenizer = tiny_tokenizer(out_dir / "tokenizer")
    vocab = len(tokenizer)
    text = dict(vocab_size=vocab, hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=LAYERS,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
                pad_token_id=vocab - 1)
    vision = dict(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=LAYERS, num_attention_heads=4,
                  image_size=shapes.SIZE, patch_size=4)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=PROJECTION))
    size = {"shortest_edge": shapes.SIZE}
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size=size, crop_size={"height": shapes.SIZE, "width": shapes.SIZE}),
                              tokenizer=tokenizer)
    images, captions = _experts(Path(experts_dir))
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    unique = sorted(set(captions))
    tokens = processor(text=unique, padding=True, return_tensors="pt")
    caption_row = torch.tensor([unique.index(c) for c in captions])
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    steps = epochs * -(-len(images) // BATCH)
    # at least 20 scheduled steps: with fewer (a one-epoch test) OneCycle's warm-up phase is empty and it divides by 0
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=max(steps, 20), pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with tqdm(total=steps, desc="shapes encoder", disable=not progress, dynamic_ncols=True) as bar:
        for _ in range(epochs):
            for index in torch.randperm(len(images), generator=generator).split(BATCH):
                rows = caption_row[index]
                text_emb = projected(model.get_text_features(input_ids=tokens["input_ids"][rows], attention_mask=tokens["attention_mask"][rows]))
                image_emb = projected(model.get_image_features(pixel_values=pixels[index]))
                loss = contrastive_loss(image_emb, text_emb, model.logit_scale.exp(), caption_targets([captions[i] for i in index]))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval().save_pretrained(str(out_dir))
    processor.save_pretrained(str(out_dir))
    (out_dir / DONE).write_text(json.dumps({"seed": seed, "epochs": epochs, "images": len(images), "final_loss": loss.item()}) + "\n")
    return out_dir


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "shapes-clip")
    experts = Path(sys.argv[2]) if len(sys.argv) > 2 else shapes.write_experts(target.parent / "shapes-experts")
    print(train_encoder(target, experts))

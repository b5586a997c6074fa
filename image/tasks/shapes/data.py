"""The shapes task's hooks into genpref.registry: the `shapes://NAME` data scheme (written on first use under
<train.output_dir>/shapes-data) and the `shapes` evaluation prompt set (the held-out combinations)."""

from __future__ import annotations

from pathlib import Path

from genpref.errors import UserError
from image.tasks.shapes import (
    PRETRAIN_NOISE,
    caption,
    heldout_combos,
    sample_images,
    train_combos,
    write_experts,
    write_pairs,
    write_prompts,
    write_ratings,
)


def prompt_set(name: str) -> tuple[list[str], str, str]:
    """eval.prompts: shapes -> (the held-out combinations' prompts, where they come from, the reward that scores them)."""
    return [caption(k) for k in heldout_combos()], "shapes held-out combinations", "shapes"


def resolve_data(spec: str, key: str, cfg, adapter) -> str:
    """genpref.registry hook for the image scheme shapes://."""
    return resolve(spec, adapter)


def resolve(spec: str, adapter) -> str:
    """`shapes://NAME` in a config's data section -> a path, written under <train.output_dir>/shapes-data:

    shapes://pretrain        clean renders, captions noised per attribute (PRETRAIN_NOISE), train combos
    shapes://experts         clean renders with their true captions, train combos (SFT, DRO)
    shapes://prompts         the training prompts; shapes://heldout-prompts the held-out ones
    shapes://pairs           the model's own samples (8 per training prompt), ranked by the verifier (DPO)
    shapes://ratings         the model's own samples rated by the verifier (KTO)
    """
    name = spec[len("shapes://"):]
    root = Path(adapter.cfg.train.output_dir) / "shapes-data"
    writers = {
        "pretrain": lambda p: write_experts(p, noise=PRETRAIN_NOISE, captions_per_image=2),
        "experts": write_experts,
        "prompts": lambda p: write_prompts(p / "prompts.txt", train_combos()).parent,
        "heldout-prompts": lambda p: write_prompts(p / "prompts.txt", heldout_combos()).parent,
        "pairs": lambda p: _model_data(adapter, p, write_pairs),
        "ratings": lambda p: _model_data(adapter, p, write_ratings),
    }
    if name not in writers:
        raise UserError(f"data: unknown shapes data {spec!r}; valid: " + ", ".join(f"shapes://{k}" for k in writers))
    path, marker = root / name, root / f".{name}.complete"
    if not marker.is_file():
        writers[name](path)
        marker.write_text("ok\n")
    files = {"prompts": "prompts.txt", "heldout-prompts": "prompts.txt", "pairs": "pairs.jsonl", "ratings": "ratings.jsonl"}
    return str(path / files[name]) if name in files else str(path)


def _model_data(adapter, directory: Path, writer, per_prompt: int = 8) -> Path:
    prompts = [caption(k) for k in train_combos() for _ in range(per_prompt)]
    images = sample_images(adapter, prompts, seed=adapter.cfg.train.seed)
    return writer(directory, images, prompts)



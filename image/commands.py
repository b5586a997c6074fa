"""What `genpref sample` and `genpref export` do for image runs: load a run's config and final weights,
then write images (one, or a prompts × seeds grid) or exported weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from genpref.errors import UserError
from image import export as image_export
from image.data import grid

DEFAULT_STEPS, DEFAULT_GUIDANCE = 25, 7.5  # diffusers' Stable Diffusion sampling defaults (with DPM-Solver++)


def load_run(run_dir: str | Path, device: torch.device | None = None):
    """The adapter of a finished run with its final weights (LoRA loaded into the adapter, or the
    full fine-tune's pipeline directory as model.path)."""
    from genpref.config import ConfigError, load_config
    from image.adapter import build_adapter

    run_dir = Path(run_dir)
    final = image_export.final_dir(run_dir)
    try:
        cfg = load_config(run_dir / "config.yaml", [f"train.output_dir={run_dir}"])
    except ConfigError as err:
        raise UserError(str(err)) from None
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.train.mixed_precision, torch.float32)
    dtype = dtype if device.type == "cuda" else torch.float32
    lora = (final / image_export.LORA_WEIGHTS).is_file()
    if not lora:
        cfg.model.path, cfg.model.lora, cfg.model.vae_path = str(final), None, None
    adapter = build_adapter(cfg, device, dtype)
    if lora:
        adapter.load_lora_weights(final)
    return adapter


def sample(run_dir: str | Path, prompts: Sequence[str], seeds: Sequence[int] | None = None, out: str | Path = "sample.png",
           steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE, solver: str = "dpmsolver++") -> Path:
    """One image per (prompt, seed): a single image, or a grid with a row per prompt and a column per seed.
    Each image depends only on its prompt and seed, not on what else is in the grid."""
    if not prompts:
        raise UserError("sample: give at least one --prompt")
    seeds = list(seeds) if seeds else [0]
    adapter = load_run(run_dir)
    images = []
    for prompt in prompts:
        for seed in seeds:
            generator = torch.Generator().manual_seed(int(seed))
            batch = adapter.encode_prompts([prompt])
            x0 = adapter.generate(batch, generator=generator, num_steps=steps, guidance=guidance, solver=solver)
            images.extend(adapter.decode(x0, batch))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture = images[0] if len(images) == 1 else grid(images, len(prompts), len(seeds))
    picture.save(out)
    return out


def export(run_dir: str | Path, fmt: str, out: str | Path) -> Path:
    """Export the run's final weights as `fmt` (diffusers | kohya) to `out`."""
    return image_export.export(run_dir, fmt, out)

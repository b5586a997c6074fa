"""What `genpref sample` and `genpref export` do for image runs: load a run's config and final weights,
then write images (one, or a prompts × seeds grid) or exported weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from genpref import distributed, exporters
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
           steps: int | None = None, guidance: float | None = None, solver: str | None = None) -> Path:
    """One image per (prompt, seed): a single image, or a grid with a row per prompt and a column per seed.
    Each image depends only on its prompt and seed, not on what else is in the grid. Sampler settings not
    given come from the run config's `eval` section (a model trained without empty prompts wants
    guidance 1), else diffusers' SD defaults."""
    if not prompts:
        raise UserError("sample: give at least one --prompt")
    seeds = list(seeds) if seeds else [0]
    adapter = load_run(run_dir)
    ev = adapter.cfg.eval or {}
    steps = int(steps or ev.get("steps", DEFAULT_STEPS))
    guidance = float(guidance if guidance is not None else ev.get("guidance", DEFAULT_GUIDANCE))
    solver = solver or ev.get("solver", "dpmsolver++")
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


def _base_adapter(cfg, device: torch.device):
    """The config's model as configured (model.path; a LoRA run's adapter is generated from with the LoRA
    disabled, see image.evaluate.Model.base)."""
    from image.adapter import build_adapter

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.train.mixed_precision, torch.float32)
    return build_adapter(cfg, device, dtype if device.type == "cuda" else torch.float32)


def evaluate(target: str | Path, args) -> dict:
    """`genpref eval` for images: a run's final weights (or a config's base model), optionally against
    another run or the base, under the protocol of image/evaluate.py. Writes eval.json, eval.txt, grid.png
    and the images to --out (default <run>/eval, or ./eval for a config file); prints the settings first
    and the table at the end."""
    from genpref.config import load_config
    from image import evaluate as protocol

    target = Path(target)
    overrides = list(getattr(args, "overrides", None) or [])
    if target.is_dir():
        cfg = load_config(target / "config.yaml", [f"train.output_dir={target}", *overrides])
    elif target.is_file():
        cfg = load_config(target, overrides)
    else:
        raise UserError(f"{target}: not a run directory or a config file")
    ev = cfg.eval or {}
    settings = protocol.settings_from(args, ev)
    device = distributed.state().device  # this process's device under `accelerate launch`
    prompt_spec = str(args.prompts or ev.get("prompts"))
    scorers = protocol.build_scorers(protocol.scorer_specs(args.scorer, cfg, prompt_spec), cfg, device)

    if target.is_dir():
        lora = (image_export.final_dir(target) / image_export.LORA_WEIGHTS).is_file()
        first = protocol.Model(target.name, lambda: load_run(target, device), f"{target} (final weights)")
    else:
        lora = cfg.model.lora is not None
        first = protocol.Model("base", lambda: _base_adapter(cfg, device), f"{target}: the config's base model", base=True)
    models = [first]
    against = args.against or ev.get("against")
    if against == "base":
        if not target.is_dir():
            raise UserError("--against base: the target is a config file, which already is the base model")
        models.append(protocol.Model("base", lambda: _base_adapter(cfg, device), "base: " + (
            "the run with its LoRA disabled" if lora else f"model.path {cfg.model.path or cfg.model.kind}"),
            base=True, shares=first.label if lora else None))
    elif against:
        other = Path(against)
        if not other.is_dir():
            raise UserError(f"--against {against}: not a run directory (or 'base')")
        label = other.name if other.name != first.label else f"{other.name}-2"
        models.append(protocol.Model(label, lambda: load_run(other, device), f"{other} (final weights)"))

    out = Path(args.out) if args.out else (target / "eval" if target.is_dir() else Path("eval"))
    say = print if distributed.is_main() else (lambda *a, **k: None)
    say(f"genpref eval: {settings.describe()}")
    say(f"scorers: {', '.join(scorers)}; models: " + "; ".join(f"{m.label} = {m.source}" for m in models))
    if distributed.describe():
        say(f"genpref eval: {distributed.describe()}")
    report = protocol.evaluate(models, settings, scorers, out,
                               extra={"target": str(target), "against": against, "overrides": overrides})
    if not report:  # not the main process
        return report
    print(report["table"])
    print(f"wrote {out / 'eval.json'}, {out / 'eval.txt'}, {report['grid']} and {out / 'images'}/")
    return report


exporters.register(exporters.Exporter("diffusers", lambda run_dir, out: export(run_dir, "diffusers", out), "image.adapter",
                                      "diffusers LoRA, or a full fine-tune's pipeline directory", default=True))
exporters.register(exporters.Exporter("kohya", lambda run_dir, out: export(run_dir, "kohya", out), "image.adapter",
                                      "kohya LoRA for AUTOMATIC1111, ComfyUI, SD.Next"))

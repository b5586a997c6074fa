"""The image evaluation protocol behind `genpref eval` (Diffusion-DRO's): K images per prompt from pinned
seeds, every image scored by each scorer, and against a second model the per-prompt MEDIAN image of each:
paired win rates with bootstrap 95% intervals over prompts, means ± std, and a side-by-side grid.

Noise: for seed s, prompts are generated in batches of `batch_size` with `torch.Generator().manual_seed(s)`
per batch, so image (prompt p, seed s) starts from the same noise for every model in the comparison (the
batch size is part of the pinned settings; batch 1 reproduces `genpref sample --seed s`). Defaults are
Diffusion-DRO's inference.py: DDPM sampler, 50 steps, guidance 7.5, 5 images per prompt, batch 4.
"""

from __future__ import annotations

import gc
import importlib
import json
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from genpref import registry, stats
from genpref.errors import UserError

PROTOCOL = {  # Diffusion-DRO inference.py defaults
    "solver": "ddpm",
    "steps": 50,
    "guidance": 7.5,
    "images_per_prompt": 5,
    "batch_size": 4,
    "seed": 0,  # first seed: images use seeds seed .. seed + images_per_prompt − 1
}
GRID_PROMPTS = 4  # prompts shown in grid.png
N_BOOT = 10_000  # bootstrap resamples of the prompts


# ---------------------------------------------------------------------------------------------- statistics


def median_index(scores: np.ndarray) -> np.ndarray:
    """[P, K] scores -> [P] index of each prompt's median image (the lower median for even K; the first
    of equal scores in seed order)."""
    order = np.argsort(scores, axis=1, kind="stable")
    return order[:, (scores.shape[1] - 1) // 2]


def paired_wins(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[P] outcome of a vs b per prompt: 1 win, 0.5 tie, 0 loss."""
    return np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0))


def win_rate(scores_a: np.ndarray, scores_b: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Median-of-K paired win rate of model a over model b ([P, K] scores each) with a percentile
    bootstrap 95% interval over prompts."""
    med_a = np.take_along_axis(scores_a, median_index(scores_a)[:, None], 1)[:, 0]
    med_b = np.take_along_axis(scores_b, median_index(scores_b)[:, None], 1)[:, 0]
    wins = paired_wins(med_a, med_b)
    lo, hi = stats.bootstrap_mean_ci(wins, n_boot=n_boot, seed=seed)
    return {"win_rate": float(wins.mean()), "ci95": [lo, hi], "wins": int((wins == 1).sum()),
            "ties": int((wins == 0.5).sum()), "losses": int((wins == 0).sum()), "n_prompts": int(wins.size)}


def summary(scores: np.ndarray) -> dict:
    """Mean ± std (ddof 1) over all images, and the mean of the per-prompt medians."""
    med = np.take_along_axis(scores, median_index(scores)[:, None], 1)[:, 0]
    std = float(scores.std(ddof=1)) if scores.size > 1 else 0.0
    return {"mean": float(scores.mean()), "std": std, "median_mean": float(med.mean())}


# ---------------------------------------------------------------------------------------------- settings


@dataclass
class Settings:
    prompts: list[str]
    prompt_source: str
    solver: str
    steps: int
    guidance: float
    images_per_prompt: int
    batch_size: int
    seed: int

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.images_per_prompt))

    def describe(self) -> str:
        s = self.seeds
        return (f"sampler {self.solver}, {self.steps} steps, guidance {self.guidance}, {self.images_per_prompt} images "
                f"per prompt (seeds {s[0]}..{s[-1]}, one generator per batch of {self.batch_size} prompts), "
                f"{len(self.prompts)} prompts ({self.prompt_source})")


def read_prompt_set(spec: str, max_prompts: int | None = None) -> tuple[list[str], str]:
    """A prompt file (one per line, or jsonl) or the name of a registered prompt set (genpref.registry)."""
    named = _named_prompt_set(spec)
    if named is not None:
        prompts, source = named[0], named[1]
    else:
        from image.data import read_prompts

        if not Path(spec).is_file():
            sets = ", ".join(f"'{name}'" for name in registry.every(registry.PROMPT_SETS))
            raise UserError(f"--prompts: file not found: {spec} (a text file with one prompt per line, or a prompt set: {sets})")
        prompts, source = [it["prompt"] for it in read_prompts(spec)], str(spec)
    return prompts[:max_prompts] if max_prompts else prompts, source


def _named_prompt_set(spec: str) -> tuple[list[str], str, str | None] | None:
    """(prompts, source, the reward that scores them) of a registered prompt set; None for other specs."""
    module = registry.find(registry.PROMPT_SETS, spec)
    return importlib.import_module(module).prompt_set(spec) if module else None


def settings_from(args, ev: dict) -> Settings:
    """The command line, then the config's eval section, then PROTOCOL."""
    def pick(name: str, arg: Any, cast: Callable):
        value = arg if arg is not None else ev.get(name, PROTOCOL[name])
        try:
            return cast(value)
        except (TypeError, ValueError):
            raise UserError(f"eval.{name}: {value!r} is not a valid {cast.__name__}") from None

    spec = args.prompts or ev.get("prompts")
    if not spec:
        raise UserError("image eval needs prompts: --prompts FILE (one prompt per line) or a prompt set name, or eval.prompts")
    prompts, source = read_prompt_set(str(spec), ev.get("max_prompts"))
    s = Settings(prompts, source, str(args.solver or ev.get("solver", PROTOCOL["solver"])),
                 pick("steps", args.steps, int), pick("guidance", args.guidance, float),
                 pick("images_per_prompt", args.images_per_prompt, int), pick("batch_size", args.batch_size, int),
                 pick("seed", None, int))
    for key in ("steps", "images_per_prompt", "batch_size"):
        if getattr(s, key) < 1:
            raise UserError(f"eval.{key} must be >= 1, got {getattr(s, key)}")
    return s


def scorer_specs(names: Sequence[str] | None, cfg, prompt_spec: str) -> list:
    """--scorer NAME or NAME=PATH (a name of the config's reward.models keeps its path), else the config's
    reward.models, else the reward a registered prompt set names (its task's verifier)."""
    from genpref.build import rewards
    from genpref.config import RewardSpec

    known_rewards = rewards()
    if not names:
        if cfg.reward.models:
            return list(cfg.reward.models)
        named = _named_prompt_set(str(prompt_spec))
        if named is not None and named[2]:
            return [RewardSpec(name=named[2])]
        raise UserError("no scorer: pass --scorer NAME[=PATH] (e.g. --scorer pickscore=/models/PickScore_v1) "
                        "or set reward.models in the config")
    specs = []
    for text in names:
        name, _, path = text.partition("=")
        if name not in known_rewards:
            raise UserError(f"--scorer {name!r}: not a reward model; valid: {', '.join(known_rewards)}")
        known = next((s for s in cfg.reward.models if s.name == name), None)
        specs.append(known if known is not None and not path else RewardSpec(name=name, path=path or None))
    return specs


def build_scorers(specs: Sequence, cfg, device: torch.device) -> dict[str, Any]:
    """{label: reward model}; labels are the names, numbered when a name repeats."""
    from genpref.build import rewards

    out = {}
    for spec in specs:
        label = spec.name if spec.name not in out else f"{spec.name}#{sum(k.startswith(spec.name) for k in out) + 1}"
        out[label] = importlib.import_module(rewards()[spec.name]).build_reward(spec, cfg, device)
    return out


# ---------------------------------------------------------------------------------------------- generation


@dataclass
class Model:
    label: str
    load: Callable[[], Any]  # -> adapter (loaded when its turn comes, so two models need not fit at once)
    source: str  # what it is, for the report
    base: bool = False  # generate with the LoRA disabled (the adapter's reference = the base model)
    shares: str | None = None  # reuse the adapter of the model with this label


def generate_and_score(adapter, settings: Settings, scorers: dict, image_dir: Path, progress: bool = True,
                       desc: str = "eval") -> dict[str, np.ndarray]:
    """Every (prompt, seed) image, saved as image_dir/p{index}_s{seed}.png; returns {scorer: [P, K] scores}.
    Under `accelerate launch` each process generates and scores every world-th (seed, batch) and all of
    them receive every score (a batch's noise depends only on its seed, so the images do not change)."""
    from tqdm.auto import tqdm

    from genpref import distributed

    n, b = len(settings.prompts), settings.batch_size
    work = [(j, seed, start) for j, seed in enumerate(settings.seeds) for start in range(0, n, b)]
    image_dir.mkdir(parents=True, exist_ok=True)
    local = {}
    with tqdm(total=len(work), desc=desc, disable=not progress or not distributed.is_main(), dynamic_ncols=True,
              unit="batch") as bar:  # fmt: skip
        for k in distributed.my_items(len(work)):
            _, seed, start = work[k]
            prompts = settings.prompts[start:start + b]
            batch = adapter.encode_prompts(prompts)
            x0 = adapter.generate(batch, generator=torch.Generator().manual_seed(seed), num_steps=settings.steps,
                                  guidance=settings.guidance, solver=settings.solver)
            images = adapter.decode(x0, batch)
            local[k] = {name: scorer.score(images, prompts).double().numpy() for name, scorer in scorers.items()}
            for i, image in enumerate(images):
                image.save(image_dir / f"p{start + i:04d}_s{seed}.png")
            bar.update(distributed.covered(k, len(work)))
    scores = {name: np.zeros((n, settings.images_per_prompt)) for name in scorers}
    for (j, _, start), batch_scores in zip(work, distributed.gather_in_order(local, len(work))):
        for name, values in batch_scores.items():
            scores[name][start:start + len(values), j] = values
    return scores


def run_models(models: Sequence[Model], settings: Settings, scorers: dict, out: Path, progress: bool = True):
    """{label: {scorer: [P, K]}}; each model's adapter is dropped before the next one loads (unless shared)."""
    results, adapters = {}, {}
    for m in models:
        if not m.shares:
            adapters.clear()  # free the previous model first: two SD models need not fit at once
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        adapter = adapters[m.shares] if m.shares else m.load()
        adapters[m.label] = adapter
        context = adapter.reference() if m.base and getattr(adapter, "is_lora", False) else nullcontext()
        with context:
            results[m.label] = generate_and_score(adapter, settings, scorers, out / "images" / m.label, progress, m.label)
    return results


# ---------------------------------------------------------------------------------------------- reporting


def comparison_grid(image_dir: Path, labels: Sequence[str], prompts: Sequence[str], seeds: Sequence[int],
                    medians: dict[str, np.ndarray], path: Path, rows: int = GRID_PROMPTS) -> Path:
    """One row per prompt (the first `rows`): each model's images side by side in seed order, its median
    image framed; model names on top, the prompt above each row."""
    from PIL import ImageDraw

    first = Image.open(image_dir / labels[0] / f"p0000_s{seeds[0]}.png")
    tile = max(64, min(first.size[0], 256))
    head, caption, gap, frame = 16, 14, 8, 3
    block = len(seeds) * tile + gap
    rows = min(rows, len(prompts))
    canvas = Image.new("RGB", (len(labels) * block - gap, head + rows * (caption + tile)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for m, label in enumerate(labels):
        draw.text((m * block + 2, 2), label, fill=(0, 0, 0))
    for p in range(rows):
        y = head + p * (caption + tile)
        draw.text((2, y + 1), prompts[p][:120], fill=(60, 60, 60))
        for m, label in enumerate(labels):
            for j, seed in enumerate(seeds):
                image = Image.open(image_dir / label / f"p{p:04d}_s{seed}.png").convert("RGB")
                x = m * block + j * tile
                canvas.paste(image.resize((tile, tile), Image.NEAREST if image.size[0] < tile else Image.BICUBIC),
                             (x, y + caption))
                if j == int(medians[label][p]):
                    draw.rectangle((x, y + caption, x + tile - 1, y + caption + tile - 1), outline=(230, 30, 30), width=frame)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def format_table(report: dict) -> str:
    labels = list(report["models"])
    against = labels[1] if len(labels) > 1 else None
    k = report["protocol"]["images_per_prompt"]
    head = ["scorer", "model", "mean ± std", "median-of-K mean"]
    if against:
        head.append(f"win rate vs {against} (median of {k}) [95% CI]  W/T/L")
    rows = [head]
    for scorer, per_model in report["scores"].items():
        for label in labels:
            s = per_model[label]
            row = [scorer, label, f"{s['mean']:.4f} ± {s['std']:.4f}", f"{s['median_mean']:.4f}"]
            if against:
                w = report["win_rates"][scorer]
                row.append(f"{w['win_rate']:.3f} [{w['ci95'][0]:.3f}, {w['ci95'][1]:.3f}]  "
                           f"{w['wins']}/{w['ties']}/{w['losses']}" if label == labels[0] else "")
            rows.append(row)
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def evaluate(models: Sequence[Model], settings: Settings, scorers: dict, out: Path, *, progress: bool = True,
             n_boot: int = N_BOOT, extra: dict | None = None) -> dict:
    """Generate, score and compare (models[0] against models[1] when there are two); writes eval.json,
    eval.txt, grid.png and images/<model>/ under `out`; returns the report."""
    from genpref import distributed

    out = Path(out)
    results = run_models(models, settings, scorers, out, progress)
    if not distributed.is_main():  # every process took part in generating; one writes the report
        return {}
    labels = [m.label for m in models]
    report: dict = {
        **(extra or {}),
        "models": {m.label: m.source for m in models},
        "protocol": {"solver": settings.solver, "steps": settings.steps, "guidance": settings.guidance,
                     "images_per_prompt": settings.images_per_prompt, "seeds": settings.seeds,
                     "batch_size": settings.batch_size, "noise": "torch.Generator().manual_seed(seed) per batch",
                     "prompts": settings.prompt_source, "n_prompts": len(settings.prompts)},
        "prompts": settings.prompts,
        "scores": {name: {lab: {**summary(results[lab][name]), "per_image": results[lab][name].tolist()}
                          for lab in labels} for name in scorers},
    }
    if len(labels) == 2:
        a, b = labels
        report["win_rates"] = {name: {"model": a, "against": b, **win_rate(results[a][name], results[b][name], n_boot)}
                               for name in scorers}
    # per scorer and model: which of the K images is each prompt's median (index into protocol.seeds)
    report["median_index"] = {name: {lab: median_index(results[lab][name]).tolist() for lab in labels} for name in scorers}
    first = next(iter(scorers))  # the grid frames the median images of the first scorer
    medians = {lab: np.asarray(report["median_index"][first][lab]) for lab in labels}
    report["grid"] = str(comparison_grid(out / "images", labels, settings.prompts, settings.seeds, medians,
                                         out / "grid.png"))
    (out / "eval.json").write_text(json.dumps(report, indent=1))
    table = format_table(report)
    (out / "eval.txt").write_text(settings.describe() + "\n" + table + "\n")
    report["table"] = table
    return report

"""The Hub model card of a run: `final/README.md` with YAML front matter (base_model, library_name, tags,
license) and a body a reader can check — recipe, data, steps, key metrics, the eval table when the run has
been evaluated, and a sample grid. Written at the end of every run, by `genpref export` and by `genpref push`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from genpref.config import read_yaml
from genpref.rundir import read_metrics

# licence of released base weights by model.kind; models genpref builds from scratch (tiny, synthetic tasks)
# are under genpref's own licence
LICENSES = {"sd15": "creativeml-openrail-m", "sdxl": "openrail++", "mdm": "mit", "mld": "mit"}
OWN_LICENSE = "apache-2.0"
# modality (the package serving the model kind) -> (library the weights load with, Hub task tag)
MODALITIES = {"image": ("diffusers", "text-to-image"), "motion": ("genpref", "text-to-motion")}
KEY_METRICS = ("loss", "implicit_acc", "reward", "reward_w", "reward_l", "e_ratio_w", "kl")
TAIL = 0.1  # "last" = mean over the last 10% of logged steps (at least one)


def _front_matter(cfg: dict) -> dict:
    model, objective = cfg["model"], cfg["objective"]
    library, task = MODALITIES.get(_modality(model["kind"]), ("genpref", None))
    tags = ["genpref", *([task] if task else []), f"preference-{objective['name']}"]
    tags += ["lora"] if model.get("lora") else []
    tags += ["diffusers"] if library == "diffusers" else []
    meta = {"library_name": library, "license": LICENSES.get(model["kind"], OWN_LICENSE), "tags": tags}
    base = model.get("path")
    if base and base.count("/") == 1 and not Path(base).exists():
        meta = {"base_model": base, **meta}  # a Hub id; the Hub rejects local paths here, the body names them
    return meta


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def key_metrics(rows: list[dict]) -> list[tuple[str, float, float, int]]:
    """(name, first logged value, mean of the last 10% of steps, steps logged) for the metrics a reader
    checks first, in KEY_METRICS order."""
    out = []
    for key in KEY_METRICS:
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            tail = values[-max(1, int(len(values) * TAIL)) :]
            out.append((key, values[0], _mean(tail), len(values)))
    return out


def _eval_section(run_dir: Path) -> list[str]:
    table = run_dir / "eval" / "eval.txt"
    if not table.is_file():
        return ["Not evaluated yet: `genpref eval " + str(run_dir) + "` writes eval/eval.txt, and the next "
                "`genpref export` / `genpref push` puts its table here."]
    return ["From `eval/eval.txt`:", "", "```", table.read_text().rstrip(), "```"]


def _sample(run_dir: Path, dest: Path) -> list[str]:
    """Copy the final sample grid (images) or the first final animation (motion) beside the card."""
    samples = run_dir / "samples"
    picks = [samples / "final.png"] if (samples / "final.png").is_file() else sorted(samples.glob("final_*.gif"))[:2]
    lines = []
    for pick in picks:
        name = f"sample_{pick.name}"
        if dest.resolve() != pick.parent.resolve():
            shutil.copyfile(pick, dest / name)
        caption = (samples / "final.txt") if pick.suffix == ".png" else (samples / "final_prompts.txt")
        text = caption.read_text().strip().replace("\n", " | ") if caption.is_file() else ""
        lines += [f"![{text or 'final samples'}]({name})"]
    return lines or ["No samples: set train.sample_prompts to draw some at the end of the run."]


def card_text(run_dir: Path, dest: Path) -> str:
    cfg = read_yaml(run_dir / "config.yaml")
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    rows = read_metrics(run_dir)
    t, o, d, m = cfg["train"], cfg["objective"], cfg["data"], cfg["model"]
    world = int(info.get("world_size") or 1)
    steps = rows[-1]["step"] if rows else 0
    lora = m.get("lora")
    body = [
        f"# {run_dir.name}: {m['kind']} fine-tuned with {o['name']}",
        "",
        "Preference fine-tuning with genpref" + (f" (commit {info['git_commit'][:10]})" if info.get("git_commit") else "")
        + (f", started {info['started']}" if info.get("started") else "") + ".",
        "",
        "## Recipe",
        "",
        f"- base model: `{m.get('path') or m['kind'] + ' (built from config, no download)'}`"
        + (f" with a LoRA (rank {lora['rank']}, alpha {lora['alpha']}, on {', '.join(lora['targets'])})" if lora else " (all weights trained)"),
        f"- objective: `{o['name']}`" + (f", beta {o['beta']}" if o.get("beta") is not None else ", beta: the objective's published default"),
        f"- pair source: `{d.get('source') or 'the objective default'}`",
        f"- optimiser: AdamW, lr {t['lr']}, {t['lr_scheduler']} schedule, {t['warmup_steps']} warm-up steps, "
        f"mixed precision {t['mixed_precision']}, seed {t['seed']}",
        "",
        "## Data",
        "",
        *[f"- `data.{k}`: `{d[k]}`" for k in ("pairs", "experts", "ratings", "prompts", "root") if d.get(k)],
        *[f"- reward model: `{r['name']}`" + (f" from `{r['path']}`" if r.get("path") else "") for r in cfg.get("reward", {}).get("models", [])],
        "",
        "## Steps",
        "",
        f"{steps} optimizer steps (of train.max_steps {t['max_steps']}) × batch {t['batch_size']} × "
        f"gradient accumulation {t['grad_accum']} × {world} process(es) = {steps * t['batch_size'] * t['grad_accum'] * world} "
        "training pairs/samples.",
        "",
        "## Key training metrics",
        "",
    ]
    metrics = key_metrics(rows)
    if metrics:
        body += ["| metric | first step | last 10% of steps (mean) | steps logged |", "|---|---|---|---|"]
        body += [f"| {k} | {first:.4g} | {last:.4g} | {n} |" for k, first, last, n in metrics]
        body += ["", "Every logged value is in `metrics.jsonl`; `genpref report RUN` draws and explains them."]
    else:
        body.append("No metrics were logged.")
    body += ["", "## Evaluation", "", *_eval_section(run_dir), "", "## Samples", "", *_sample(run_dir, dest)]
    body += ["", "## Use", "", *_usage(m["kind"], bool(lora), _front_matter(cfg).get("base_model"))]
    return "---\n" + yaml.safe_dump(_front_matter(cfg), sort_keys=False) + "---\n\n" + "\n".join(body).rstrip() + "\n"


def _modality(kind: str) -> str:
    from genpref.build import model_kinds

    return model_kinds().get(kind, "").split(".")[0]


def _usage(kind: str, lora: bool, base: str | None) -> list[str]:
    if _modality(kind) == "image" and lora:
        base = repr(base) if base else f'"BASE_PIPELINE"  # the {kind} pipeline this LoRA was trained on'
        return ["```python", "from diffusers import DiffusionPipeline", f"base = {base}",
                "pipe = DiffusionPipeline.from_pretrained(base)",
                "pipe.load_lora_weights(\"THIS_REPOSITORY\")  # this repository's id, or a directory holding these files",
                "```"]
    return ["`genpref sample RUN --prompt ...` on a run directory holding these weights as `final/`."]


def write_model_card(run_dir: str | Path, dest: str | Path | None = None, name: str = "README.md") -> Path:
    """Write the card (and the sample pictures it shows) into `dest` (default <run>/final); returns its path."""
    run_dir = Path(run_dir)
    dest = Path(dest) if dest is not None else run_dir / "final"
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / name
    path.write_text(card_text(run_dir, dest))
    return path

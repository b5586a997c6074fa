"""What `genpref sample`, `genpref eval` and `genpref export` do for motion runs (MDM / MLD): load a run's
config and final weights (or a config's base model), then write motions or the T2M evaluation."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from genpref import distributed, exporters
from genpref.adapter import Batch
from genpref.config import Config, ConfigError, load_config
from genpref.errors import UserError

DEFAULT_SECONDS = 4.0  # length of sampled motions when --length is not given (HumanML3D: 2–10 s)


def _config(path: Path, overrides: Sequence[str] = ()) -> Config:
    try:
        return load_config(path, list(overrides))
    except ConfigError as err:
        raise UserError(str(err)) from None


def load_run(target: str | Path, device: torch.device | None = None, overrides: Sequence[str] = ()):
    """(adapter, cfg) for a finished run directory (its final/ weights) or a config file (its base model)."""
    from motion.adapter import build_adapter

    target = Path(target)
    device = device or distributed.state().device  # this process's device under `accelerate launch`
    if target.is_dir():
        cfg = _config(target / "config.yaml", [f"train.output_dir={target}", *overrides])
        final = target / "final"
        weights = next((f for f in (final / "model.pt", final / "model.ckpt") if f.is_file()), None)
        if weights is None:
            raise UserError(f"{final}: no model.pt / model.ckpt — did the run finish? (checkpoints/ resume with train.resume=latest)")
        cfg.model.path, cfg.model.lora = str(weights), None
        if (final / "Mean.npy").is_file():
            cfg.data.root = None  # the run's own statistics travel with its weights
    elif target.is_file():
        cfg = _config(target, overrides)
    else:
        raise UserError(f"{target}: not a run directory or a config file")
    return build_adapter(cfg, device, torch.float32), cfg


def _sampler_settings(adapter, steps: int | None, guidance: float | None, solver: str | None) -> tuple[int, float]:
    """The published sampler of the family (MDM: DDPM over all steps, guidance 2.5; MLD: DDIM 50, 7.5)
    unless overridden."""
    pub_solver, pub_steps, pub_guidance = adapter.published_sampler
    adapter.solver = solver or pub_solver
    steps = steps or pub_steps or adapter.noise_scheduler.config.num_train_timesteps
    return steps, pub_guidance if guidance is None else guidance


def generate_features(adapter, texts: Sequence[str], lengths: Sequence[int], seed: int, steps: int, guidance: float,
                      full: bool = False) -> list[np.ndarray]:  # fmt: skip
    """De-normalised [T_i, 263] features for each text at its length; noise from `seed` only. `full`: all
    max_motion_length frames instead, what the model produced after each length included (MDM: its output;
    MLD: the VAE's zeros in the model's normalised space) — what MDM's and MLD's evaluations show the evaluator."""
    max_frames = adapter.cfg.data.max_motion_length
    lengths = torch.tensor([min(int(n), max_frames) // 4 * 4 for n in lengths])
    like = Batch(None, {"lengths": lengths}, None, list(texts))
    batch = adapter.encode_prompts(list(texts), like=like)
    x0 = adapter.generate(batch, generator=torch.Generator().manual_seed(int(seed)), num_steps=steps, guidance=guidance)
    if not full:
        return adapter.decode(x0, batch)
    from motion.data import denormalize

    mean, std = adapter._stats()
    feats = adapter.codec.decode(x0.float(), batch.cond["lengths"].to(x0.device)).cpu().numpy()  # [B, T_max, F]
    return list(denormalize(feats, mean, std).astype(np.float32))


def sample(run_dir: str | Path, prompts: Sequence[str], seeds: Sequence[int] = (0,), out: str | Path = "samples",
           steps: int | None = None, guidance: float | None = None, solver: str | None = None,
           seconds: float = DEFAULT_SECONDS) -> Path:
    """Per (prompt, seed): features .npy, joint positions .npy (recovered from the features) and a GIF.
    Sampler settings not given come from the run's `eval:` section, else the family's published sampler."""
    if not prompts:
        raise UserError("sample: give at least one --prompt")
    adapter, cfg = load_run(run_dir)
    sampler = sampler_settings(adapter, cfg, solver, steps, guidance)
    adapter.solver, steps, guidance = sampler["solver"], sampler["steps"], sampler["guidance"]
    frames = int(seconds * 20)
    motions, captions = [], []
    for seed in seeds:
        motions += generate_features(adapter, prompts, [frames] * len(prompts), seed, steps, guidance)
        captions += [f"{p} (seed {seed})" for p in prompts]
    out = Path(out)
    adapter.save_samples(motions, captions, str(out), "sample")
    return out


def run_data_root(target: str | Path) -> str | None:
    """The data.root a run was trained on (load_run clears it when the run's statistics travel with its
    weights, but its test split is what the run is evaluated on by default)."""
    from genpref.config import read_yaml

    target = Path(target)
    path = target / "config.yaml" if target.is_dir() else target
    return (read_yaml(path).get("data") or {}).get("root")


def sampler_settings(adapter, cfg: Config, solver: str | None, steps: int | None, guidance: float | None) -> dict:
    """Sampler settings for `genpref eval` / `sample`, each with where it came from: the command line, the
    run's `eval:` section (what the run was evaluated with when it was made), else the family's published
    sampler (MDM: DDPM over all steps, guidance 2.5; MLD: DDIM 50, 7.5)."""
    ev = cfg.eval or {}
    pub_solver, pub_steps, pub_guidance = adapter.published_sampler
    published = {"solver": pub_solver, "steps": pub_steps or adapter.noise_scheduler.config.num_train_timesteps,
                 "guidance": pub_guidance}
    given = {"solver": solver, "steps": steps, "guidance": guidance}
    settings, sources = {}, {}
    for key, cast in (("solver", str), ("steps", int), ("guidance", float)):
        for source, value in (("command line", given[key]), ("eval." + key, ev.get(key)), ("published", published[key])):
            if value is not None:
                settings[key], sources[key] = cast(value), source
                break
    return {**settings, "from": sources}


def _eval_paths(cfg: Config, args, run_root: str | None) -> tuple[Path, Path, Path | str]:
    ev = cfg.eval or {}
    evaluator = args.evaluator or ev.get("evaluator")
    glove = args.glove or ev.get("glove")
    root = getattr(args, "root", None) or ev.get("root") or cfg.data.root or run_root
    if not evaluator:
        raise UserError("motion eval needs the T2M evaluator: --evaluator PATH/finest.tar or eval.evaluator in the config")
    if not glove:
        raise UserError("motion eval needs the GloVe word vectors: --glove DIR (our_vab_*) or eval.glove in the config")
    if not root:
        raise UserError("motion eval needs a HumanML3D-format test split: --root DIR, eval.root, or the run's data.root")
    if "://" in str(root):  # a synthetic scheme (genpref.registry)
        from motion.adapter import data_root

        cfg.data.root = root
        root = data_root(cfg)
    evaluator = Path(evaluator)
    if evaluator.is_dir():
        evaluator = evaluator / "model" / "finest.tar" if (evaluator / "model" / "finest.tar").is_file() else evaluator / "finest.tar"
    return evaluator, Path(glove), root


def evaluate(target: str | Path, args) -> dict:
    """The T2M protocol (motion.evaluate) on a run's final model or a config's base model; writes
    eval.json, a table and a few sample animations to --out (default: <run>/eval or ./eval)."""
    from motion.eval_protocol import FAMILY_CONVENTION
    from motion.evaluate import evaluate as t2m_evaluate
    from motion.evaluate import format_table, save_samples
    from motion.evaluator import Evaluator
    from motion.glove import WordVectorizer

    run_root = run_data_root(target)
    adapter, cfg = load_run(target, overrides=args.overrides)
    evaluator_path, glove_dir, root = _eval_paths(cfg, args, run_root)
    ev = cfg.eval or {}
    device = adapter.device
    evaluator = Evaluator.load(evaluator_path, device=device)
    vectorizer = WordVectorizer.load(glove_dir)
    sampler = sampler_settings(adapter, cfg, args.solver, args.steps, args.guidance)
    adapter.solver = sampler["solver"]
    steps, guidance = sampler["steps"], sampler["guidance"]
    if distributed.is_main():
        print(f"genpref eval: test split {root}; sampler {sampler['solver']}, {steps} steps, guidance {guidance} ("
              + ", ".join(f"{k} from {v}" for k, v in sampler["from"].items()) + ")")
    out = Path(args.out) if args.out else (Path(target) / "eval" if Path(target).is_dir() else Path("eval"))
    out.mkdir(parents=True, exist_ok=True)
    kept: list = []

    def generate(texts, lengths, seed):  # the model's full output: eval.padding decides what the evaluator sees
        motions = np.stack(generate_features(adapter, texts, lengths, seed, steps, guidance, full=True))
        if len(kept) < 4:
            kept.extend((m[: int(n)], t) for m, n, t in zip(motions, lengths, texts))
        return motions

    if distributed.describe() and distributed.is_main():
        print(f"genpref eval: {distributed.describe()}")
    results = t2m_evaluate(
        evaluator, vectorizer, root, generate,
        replications=args.replications or int(ev.get("replications", 20)),
        batch_size=args.batch_size or int(ev.get("batch_size", 32)),
        mm=bool(args.mm or ev.get("mm", False)),
        convention=ev.get("convention") or FAMILY_CONVENTION.get(adapter.family, "t2m"), padding=ev.get("padding"),
        samples_limit=ev.get("samples_limit"), real_pad=adapter._stats()[0], seed=int(ev.get("seed", 0)),
        diversity_times=int(ev.get("diversity_times", 300)),
        cache_dir=out / "cache", progress=distributed.is_main(),
    )
    if not distributed.is_main():  # every process generated its share; one writes the results
        return results
    results["sampler"] = sampler
    results["root"] = str(root)
    results["target"] = str(target)
    (out / "eval.json").write_text(json.dumps(results, indent=1))
    table = format_table(results)
    (out / "eval.txt").write_text(table + "\n")
    print(table)
    print(f"sampler: {adapter.solver}, {steps} steps, guidance {guidance}; wrote {out / 'eval.json'}")
    save_samples([m for m, _ in kept[:4]], [t for _, t in kept[:4]], out / "samples")
    return results


def export(run_dir: str | Path, fmt: str, out: str | Path) -> Path:
    """Motion runs' final/ already holds the released formats (MDM model.pt + args.json, MLD model.ckpt)
    with Mean/Std; export copies that directory."""
    if fmt not in ("mdm", "released"):
        raise UserError(f"motion runs export as --format released (the MDM/MLD layouts), not {fmt!r}")
    final = Path(run_dir) / "final"
    if not final.is_dir():
        raise UserError(f"{final} does not exist — did the run finish?")
    shutil.copytree(final, out, dirs_exist_ok=True)
    return Path(out)


exporters.register(exporters.Exporter("released", lambda run_dir, out: export(run_dir, "released", out), "motion.adapter",
                                      "the released MDM / MLD layouts with Mean/Std", default=True))

"""The image part of `genpref demo` and `genpref bench quality` (a genpref.demo.TaskPart): the `shapes` task.

run_demo: task data -> the shipped base (or pretrain it) -> fine-tune with the default preference recipe
(Diffusion-DRO, configs/image/shapes_dro.yaml) and the plain-SFT control (shapes_sft.yaml) -> evaluate
base, DRO and SFT on the held-out attribute combinations with the same initial noise for every model ->
results with 95% intervals (Wilson for accuracies, paired bootstrap for differences, exact McNemar).
bench_setup: what genpref.demo's benchmark loop needs to run every objective with a shapes config, several
seeds each, against the same base samples. The recipes are the YAML files in configs/image/, read as they
are with only paths and seeds overridden.

    python -m image.tasks.shapes.demo demo OUT_DIR [--seeds 0] [--steps N]
    python -m image.tasks.shapes.demo bench OUT_DIR [--seeds 0 1 2] [--arms sft dro] [--steps N] [--setting heldout_prompts]
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from genpref import stats
from genpref.demo import (
    HELDOUT_ROLLOUT_ARMS,
    BenchSetup,
    DemoEval,
    DemoSetup,
    learned_reward_agreement,
    reward_dir,
    run_bench,
    run_part_demo,
)
from image.tasks import shapes
from image.tasks.shapes.encoder import EPOCHS as ENCODER_EPOCHS
from image.tasks.shapes.encoder import train_encoder

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "configs" / "image"
BASE_WEIGHTS = Path(__file__).resolve().parents[2] / "assets" / "shapes_base.safetensors"  # image/assets/
TASK = "shapes"
RECIPE = "dro"  # the default image preference recipe
EVAL = {"per_prompt": 20, "steps": 20, "solver": "ddim"}  # held-out evaluation: 12 combos × 20 samples
# bench arms: name -> config file in configs/image/ (each fine-tunes the same base)
ARMS = {
    "sft": "shapes_sft.yaml",
    "dro": "shapes_dro.yaml",
    "dro_published": "shapes_dro_published.yaml",
    "dpo": "shapes_dpo.yaml",
    "kto": "shapes_kto.yaml",
    "kto_anchor": "shapes_kto_anchor.yaml",
    "sopo": "shapes_sopo.yaml",
    "oaif": "shapes_oaif.yaml",
    "reset_dpo": "shapes_reset_dpo.yaml",
    "sera": "shapes_sera.yaml",
    "bootstrap": "shapes_bootstrap.yaml",
    "hypo": "shapes_hypo.yaml",
    "direct_reward": "shapes_direct_reward.yaml",
    "reset_dpo_anchor": "shapes_reset_dpo_anchor.yaml",
    "sera_anchor": "shapes_sera_anchor.yaml",
    "grpo": "shapes_grpo.yaml",
    "nft": "shapes_nft.yaml",
    "nft_graded": "shapes_nft_graded.yaml",  # the same with partial credit for near misses (reward shapes_graded)
    "nft_heldout": "shapes_nft.yaml",  # nft whose rollouts draw held-out prompts only (heldout_prompts setting)
    "nft_strict": "shapes_nft_strict.yaml",  # nft on an accuracy-first reward (shapes_strict + ½ attribute fraction)
    "nft_heldout_strict": "shapes_nft_strict.yaml",  # the same, rollouts on held-out prompts only
    "rft": "shapes_rft.yaml",
    "rft_heldout": "shapes_rft.yaml",  # rft whose rollouts draw held-out prompts only (heldout_prompts setting)
    "rm_grpo": "shapes_rm_grpo.yaml",  # a reward learned from the dpo arm's pairs, then online RL on it
}
# metrics.jsonl keys copied into the demo's curves (those a run logs): losses, ranking, collapse watch,
# and the verifier's score of online samples (SoPo, OAIF)
CURVES = ("loss", "implicit_acc", "e_ratio_w", "hinge_active", "margin", "reward_online", "score_best", "score_worst")
FINAL_CURVES = ("e_ratio_w", "implicit_acc")  # their last values go into a bench row (final_<key>)
TRAIN_PER_PROMPT = 5  # bench: samples per training prompt in the training-prompt evaluation


# ---------------------------------------------------------------------------------------------- pieces


def write_task_data(data_dir: Path) -> dict[str, Path]:
    """Experts (clean renders of the training combinations) and the two prompt files, written once."""
    data_dir = Path(data_dir)
    paths = {"experts": data_dir / "experts", "prompts": data_dir / "prompts.txt",
             "heldout": data_dir / "heldout-prompts.txt", "all_prompts": data_dir / "all-prompts.txt"}
    marker = data_dir / ".complete"
    if not marker.is_file():
        shapes.write_experts(paths["experts"])
        shapes.write_prompts(paths["prompts"], shapes.train_combos())
        shapes.write_prompts(paths["heldout"], shapes.heldout_combos())
        marker.write_text("ok\n")
    if not paths["all_prompts"].is_file():  # training + held-out combinations: prompts only, for online recipes
        shapes.write_prompts(paths["all_prompts"], [*shapes.train_combos(), *shapes.heldout_combos()])
    return paths


def recipe_config(file: str, overrides: dict):
    """configs/image/<file> with {"section.key": value} overrides applied."""
    from genpref.demo import recipe_config as read_recipe

    return read_recipe(CONFIGS, file, overrides)


def base_weights(out_dir: Path, seed: int = 0) -> Path:
    """The shipped base, or (when it is missing) a base pretrained now with configs/image/shapes_base.yaml."""
    if BASE_WEIGHTS.is_file():
        return BASE_WEIGHTS
    import warnings

    from genpref.train import train

    warnings.warn(f"{BASE_WEIGHTS} is missing: pretraining the base now (tens of minutes on a CPU)", stacklevel=2)
    run_dir = Path(out_dir) / "runs" / "base"
    final = run_dir / "final" / "shapes_unet.safetensors"
    if not final.is_file():
        shutil.rmtree(run_dir, ignore_errors=True)
        train(recipe_config("shapes_base.yaml", {"train.output_dir": str(run_dir), "train.seed": seed}))
    return final


def train_arm(file: str, run_dir: Path, overrides: dict) -> float:
    """Fine-tune one recipe into a fresh run_dir (a learned reward fitted first, for the rm_grpo arm, on the
    encoder in overrides["reward_train.encoder"]); returns the wall time in seconds, the fit included."""
    from genpref.demo import fit_learned_reward
    from genpref.train import train_fresh

    cfg = recipe_config(file, {"train.output_dir": str(run_dir), **overrides})
    fit_s = fit_learned_reward(cfg, Path(run_dir), cfg.reward_train.encoder)
    return fit_s + train_fresh(cfg)


def load_model(weights: Path, work_dir: Path, size: str = "small"):
    """A shapes-unet adapter holding `weights` (a .safetensors file or a run's final/ directory)."""
    from genpref import build
    from genpref.config import from_dict

    cfg = from_dict({"model": {"kind": "shapes-unet", "size": size, "path": str(weights)},
                     "data": {"resolution": shapes.SIZE}, "objective": {"name": "sft"},
                     "train": {"output_dir": str(work_dir)}})
    return build.build_adapter(cfg, torch.device("cpu"), torch.float32)


def eval_prompts(combos: Sequence[shapes.Combo], per_prompt: int) -> list[str]:
    return [shapes.caption(k) for k in combos for _ in range(per_prompt)]


def evaluate(adapter, prompts: Sequence[str], seed: int, steps: int | None = None, solver: str | None = None,
             progress: bool = False, desc: str = "eval") -> tuple[dict[str, np.ndarray], list]:
    """Sample one image per prompt (noise fixed by seed and position) and verify it: per-sample arrays
    for each attribute, "all" (every attribute right) and "score" (fraction right); plus the images.
    steps / solver default to EVAL's."""
    from tqdm.auto import tqdm

    steps, solver = steps or EVAL["steps"], solver or EVAL["solver"]

    chunk = 60
    images = []
    for start in tqdm(range(0, len(prompts), chunk), desc=desc, disable=not progress, dynamic_ncols=True):
        # the chunk's noise depends on (seed, chunk index) only: every model sees the same noise
        images.extend(shapes.sample_images(adapter, prompts[start:start + chunk], seed=seed * 1000 + start // chunk,
                                           num_steps=steps, solver=solver, chunk=chunk))
    checks = [shapes.check(im, p) for im, p in zip(images, prompts)]
    out = {a: np.array([c[a] for c in checks], dtype=bool) for a in (*shapes.ATTRIBUTES, "all")}
    out["score"] = np.array([sum(c[a] for a in shapes.ATTRIBUTES) / 3 for c in checks])
    return out, images


def comparison_grid(images: dict[str, list], prompts: Sequence[str], per_prompt: int, show: int, path: Path,
                    correct: dict[str, np.ndarray] | None = None) -> Path:
    """Rows = prompts, columns = `show` samples of each model (same noise across models), labelled;
    tiles enlarged 2× and separated by grey lines; with `correct`, the line under each tile is green
    when the verifier accepts the sample and red when not."""
    from PIL import Image, ImageDraw

    scale, line, gap, label_w, head_h = 2, 2, 8, 190, 16
    tile = shapes.SIZE * scale
    step = tile + line
    names = list(images)
    unique = list(dict.fromkeys(prompts))
    block = show * step + gap
    canvas = Image.new("RGB", (label_w + len(names) * block, head_h + len(unique) * step), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for m, name in enumerate(names):
        draw.text((label_w + m * block + 4, 2), name, fill=(0, 0, 0))
        draw.rectangle((label_w + m * block, head_h, label_w + m * block + show * step - 1, canvas.height - 1),
                       fill=(128, 128, 128))
    for r, prompt in enumerate(unique):
        y = head_h + r * step
        draw.text((4, y + tile // 2 - 6), prompt.removeprefix("a "), fill=(0, 0, 0))
        for m, name in enumerate(names):
            for j in range(show):
                i, x = r * per_prompt + j, label_w + m * block + j * step
                canvas.paste(images[name][i].resize((tile, tile), Image.NEAREST), (x, y))
                if correct is not None:
                    colour = (0, 170, 0) if correct[name][i] else (220, 0, 0)
                    draw.rectangle((x, y + tile, x + tile - 1, y + tile + line - 1), fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


# ---------------------------------------------------------------------------------------------- demo


def run_demo(out_dir: Path, *, seed: int = 0, progress: bool = True, steps: int | None = None) -> dict:
    """The image half of `genpref demo` inside out_dir (genpref.demo.run_part_demo with this part)."""
    return run_part_demo(sys.modules[__name__], out_dir, seed=seed, progress=progress, steps=steps)


def demo_setup(out_dir: Path, seed: int, progress: bool) -> DemoSetup:
    """The task data and base; the held-out evaluation with one image per prompt and noise for all models."""
    data = write_task_data(out_dir / "data")
    base = base_weights(out_dir, seed)
    overrides = {"model.path": str(base), "data.experts": str(data["experts"]), "data.cache_dir": str(out_dir / "cache"),
                 "train.seed": seed, "train.sample_prompts": [], "train.checkpoint_every": 0}  # fmt: skip

    def evaluate_models(models: dict[str, Path], timings: dict) -> DemoEval:
        prompts = eval_prompts(shapes.heldout_combos(), EVAL["per_prompt"])
        verdicts, images = {}, {}
        for name, weights in models.items():
            tick = time.perf_counter()
            adapter = load_model(weights, out_dir / "eval-cache")
            verdicts[name], images[name] = evaluate(adapter, prompts, seed, progress=progress, desc=f"eval {name}")
            timings[f"eval_{name}_s"] = time.perf_counter() - tick
        grid = comparison_grid(images, prompts, EVAL["per_prompt"], min(4, EVAL["per_prompt"]), out_dir / "grid.png",
                               {name: r["all"] for name, r in verdicts.items()})  # fmt: skip
        title = (f"held-out prompts, same initial noise: {' vs '.join(models)} (4 samples each; line under a sample: "
                 "green = verifier accepts all three attributes)")  # fmt: skip
        settings = {**EVAL, "prompts": len(set(prompts)), "samples": len(prompts), "heldout_combos": True,
                    "noise": "the same initial noise per sample for every model"}  # fmt: skip
        return DemoEval(verdicts, shapes.ATTRIBUTES, settings, [{"title": title, "path": grid}])

    return DemoSetup(overrides, base, train_arm, lambda run: run / "final", evaluate_models)


def recipe_settings(cfg) -> dict:
    """The demo recipe's constants as the report shows them."""
    o, on = cfg.objective, cfg.online
    if cfg.objective.name == "dro":
        return {"margin": o.margin, "policy_target": o.policy_target, "sft_weight": o.sft_weight,
                "sync_every": on.sync_every, "rollout_steps": on.steps, "states_per_rollout": on.states_per_rollout}  # fmt: skip
    return {"objective": o.name, "sft_weight": o.sft_weight, "group_size": on.group_size, "rollout_steps": on.steps,
            "reward": [spec.name for spec in cfg.reward.models]}  # fmt: skip


# ---------------------------------------------------------------------------------------------- bench


FEEDBACK_PER_PROMPT = 8  # base samples per training prompt for DPO pairs and KTO ratings


def write_base_feedback(data_dir: Path, base: Path, per_prompt: int | None = None, seed: int = 0) -> dict[str, Path]:
    """The base model's own samples for the training prompts, ranked (DPO pairs) and rated (KTO) by the
    verifier; written once and shared by every seed of every arm."""
    directory = Path(data_dir) / "base-feedback"
    paths = {"pairs": directory / "pairs" / "pairs.jsonl", "ratings": directory / "ratings" / "ratings.jsonl"}
    if not (directory / ".complete").is_file():
        adapter = load_model(base, directory / "cache")
        prompts = eval_prompts(shapes.train_combos(), per_prompt or FEEDBACK_PER_PROMPT)
        images = shapes.sample_images(adapter, prompts, seed=10_000 + seed, num_steps=EVAL["steps"], solver=EVAL["solver"])
        shapes.write_pairs(paths["pairs"].parent, images, prompts)
        shapes.write_ratings(paths["ratings"].parent, images, prompts)
        (directory / ".complete").write_text("ok\n")
    return paths


def _evaluate_cached(path: Path, weights: Path, work: Path, prompts: list[str], seed: int) -> dict[str, np.ndarray]:
    if path.is_file():
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    result, _ = evaluate(load_model(weights, work), prompts, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **result)
    return result


def diversity_columns(path: Path, weights: Path, work: Path, encoder: Path, prompts: list[str], seed: int) -> dict:
    """heldout_diversity: the mean pairwise distance of the L2-normalised image embeddings of the held-out
    samples (the evaluation's prompts and noise) of each prompt, in the shapes CLIP (genpref.diversity),
    averaged over prompts; cached."""
    import json

    if path.is_file():
        return json.loads(path.read_text())
    from image.learned_reward import ClipEncoder

    _, images = evaluate(load_model(weights, work), prompts, seed)
    emb = torch.nn.functional.normalize(ClipEncoder.load(encoder, "shapes encoder").embed_images(images), dim=-1)
    from genpref.diversity import mean_pairwise_distance

    per_prompt = mean_pairwise_distance(emb, prompts)  # NaN: a prompt with one sample
    row = {"heldout_diversity": float(per_prompt.nanmean()) if not per_prompt.isnan().all() else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row))
    return row


def bench_setup(out_dir: Path, setting: str) -> BenchSetup:
    """The shapes benchmark (genpref.demo.run_bench): data, base, the base's feedback data and its
    evaluation on held-out and training prompts, with one shared set of initial noise."""
    out_dir = Path(out_dir)
    data = write_task_data(out_dir / "data")
    prompts_file = data["prompts"] if setting == "train_prompts" else data["all_prompts"]
    base = base_weights(out_dir)
    feedback = write_base_feedback(out_dir / "data", base)
    encoder = train_encoder(out_dir / "encoder", data["experts"], epochs=ENCODER_EPOCHS)  # the learned reward's frozen CLIP (rm_grpo)
    eval_seed = 777  # one noise set for every arm and seed: every comparison with the base is paired
    splits = {"heldout": eval_prompts(shapes.heldout_combos(), EVAL["per_prompt"]),
              "train": eval_prompts(shapes.train_combos(), TRAIN_PER_PROMPT)}
    evals = out_dir / "evals"
    base_eval = {split: _evaluate_cached(evals / f"base-{split}.npz", base, out_dir / "eval-cache", prompts, eval_seed)
                 for split, prompts in splits.items()}

    def overrides(seed: int) -> dict:
        return {"model.path": str(base), "data.experts": str(data["experts"]), "data.prompts": str(prompts_file),
                "data.pairs": str(feedback["pairs"]), "data.ratings": str(feedback["ratings"]),
                "data.cache_dir": str(out_dir / "cache"), "train.seed": seed, "reward_train.encoder": str(encoder),
                "train.sample_prompts": [], "train.checkpoint_every": 0}

    def score(arm: str, tag: str, seed: int, run: Path) -> dict:
        row = {}
        for split, prompts in splits.items():
            r = _evaluate_cached(evals / f"{arm}{tag}-{seed}-{split}.npz", run / "final", out_dir / "eval-cache",
                                 prompts, eval_seed)
            b = base_eval[split]
            row.update(stats.versus_base(split, r["all"], b["all"], r["score"], b["score"], seed))
        return {**row, **diversity(f"{arm}{tag}-{seed}", run / "final"), **reward_agreement(run)}

    base_images: list = []  # the base's held-out samples, made on first use (learned-reward arms only)

    def reward_agreement(run: Path) -> dict:
        if not (reward_dir(run) / "reward.json").is_file():
            return {}
        if not base_images:
            base_images.extend(evaluate(load_model(base, out_dir / "eval-cache"), splits["heldout"], eval_seed)[1])
        prompts = splits["heldout"]
        return learned_reward_agreement(run, base_images, prompts, base_eval["heldout"]["score"], prompts)

    def diversity(name: str, weights: Path) -> dict:
        return diversity_columns(evals / f"{name}-diversity.json", weights, out_dir / "eval-cache", encoder,
                                 splits["heldout"], eval_seed)

    def reuse(row: dict, arm: str, seed: int, run: Path) -> dict:
        if "heldout_diversity" not in row and (run / "final").is_dir():  # rows from before the diversity column
            tag = "" if setting == "train_prompts" else f"-{setting}"
            row = {**row, **diversity(f"{arm}{tag}-{seed}", run / "final")}
        if "reward_heldout_combo_agreement" not in row:
            row = {**row, **reward_agreement(run)}
        return row

    def base_row() -> dict:
        return {"objective": "base", "seed": None,
                **{f"{s}_accuracy": float(base_eval[s]["all"].mean()) for s in base_eval},
                **{f"{s}_attribute_score": float(base_eval[s]["score"].mean()) for s in base_eval},
                **diversity("base", base)}

    def arm_overrides(arm: str) -> dict:
        return {"data.prompts": str(data["heldout"])} if arm in HELDOUT_ROLLOUT_ARMS and setting == "heldout_prompts" else {}

    return BenchSetup(overrides, train_arm, score, base_row,
                      {**EVAL, "train_per_prompt": TRAIN_PER_PROMPT, "noise_seed": eval_seed}, base, reuse, arm_overrides)


def bench_quality(out_dir: Path, *, seeds: list[int], steps: int | None = None, arms: Sequence[str] | None = None,
                  setting: str = "train_prompts") -> dict:
    """Every objective in ARMS (or `arms`) × seeds from the same base (genpref.demo.run_bench)."""
    import sys

    return run_bench(sys.modules[__name__], out_dir, seeds=seeds, steps=steps, arms=arms, setting=setting)


SUMMARY_METRICS = ("heldout_accuracy", "heldout_diff_vs_base", "heldout_diff_vs_sft", "heldout_attribute_score",
                   "heldout_win_rate_vs_base", "heldout_diversity", "train_accuracy", "train_diff_vs_base",
                   "train_diff_vs_sft", "reward_heldout_pair_accuracy", "reward_heldout_combo_agreement", "train_s",
                   "generated_samples")


if __name__ == "__main__":
    from genpref.demo import main

    main("image")

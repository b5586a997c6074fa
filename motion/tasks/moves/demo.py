"""The motion part of `genpref demo` and `genpref bench quality` (a genpref.demo.TaskPart): the `moves` task.

run_demo: task data (motion.tasks.moves) -> the shipped base MDM and T2M evaluator (or train them) ->
fine-tune with the default preference recipe (SoPo, configs/motion/moves_sopo.yaml) and the plain-SFT
control (moves_sft.yaml) at the same steps and batch -> evaluate base, SoPo and SFT with the same
initial noise per prompt: verifier accuracy on held-out attribute combinations (exact), and the T2M
metrics (R-precision, MM-Dist, FID) of the test split -> results with 95% intervals (Wilson for
proportions, paired bootstrap for differences, exact McNemar) and figures (pose strips, animations).
bench_setup: what genpref.demo's benchmark loop needs to run every objective with a moves config, several
seeds each, against the same base samples. The recipes are the YAML files in configs/motion/, read as they
are with only paths and seeds overridden. R-precision is the evaluation's (`motion.metrics.r_precision_hits`).

    python -m motion.tasks.moves.demo demo OUT_DIR [--seeds 0] [--steps N]
    python -m motion.tasks.moves.demo bench OUT_DIR [--seeds 0 1 2] [--arms sft sopo] [--steps N]
"""

from __future__ import annotations

import json
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
from motion.metrics import r_precision_hits
from motion.tasks import moves
from motion.tasks.moves.figures import pose_grid, side_by_side_gif
from motion.tasks.moves.weights import base_and_evaluator

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "configs" / "motion"
TASK = "moves"
RECIPE = "sopo"  # the default motion preference recipe
# bench arms: name -> config file in configs/motion/ (each fine-tunes the same base)
ARMS = {
    "sft": "moves_sft.yaml",
    "sopo": "moves_sopo.yaml",
    "sopo_open": "moves_sopo_open.yaml",
    "dpo": "moves_dpo.yaml",
    "kto": "moves_kto.yaml",
    "dro": "moves_dro.yaml",
    "oaif": "moves_oaif.yaml",
    "reset_dpo": "moves_reset_dpo.yaml",
    "sera": "moves_sera.yaml",
    "bootstrap": "moves_bootstrap.yaml",
    "hypo": "moves_hypo.yaml",
    "direct_reward": "moves_direct_reward.yaml",
    "reset_dpo_anchor": "moves_reset_dpo_anchor.yaml",
    "sera_anchor": "moves_sera_anchor.yaml",
    "grpo": "moves_grpo.yaml",
    "nft": "moves_nft.yaml",
    "nft_graded": "moves_nft_graded.yaml",  # the same with partial credit for near misses (reward moves_graded)
    "nft_heldout": "moves_nft.yaml",  # nft whose rollouts draw held-out prompts only (heldout_prompts setting)
    "nft_strict": "moves_nft_strict.yaml",  # nft on an accuracy-first reward (moves_strict + ½ attribute fraction)
    "nft_heldout_strict": "moves_nft_strict.yaml",  # the same, rollouts on held-out prompts only
    "rft": "moves_rft.yaml",
    "rft_heldout": "moves_rft.yaml",  # rft whose rollouts draw held-out prompts only (heldout_prompts setting)
    "rm_grpo": "moves_rm_grpo.yaml",  # a reward learned from the dpo arm's pairs, then online RL on it
}
EVAL = {"per_combo": 40, "frames": 48, "steps": 10, "solver": "dpmsolver++", "t2m_passes": 2}
CURVES = ("loss", "implicit_acc", "open_gate", "reward_l", "reward_online", "e_ratio_w", "margin")
FINAL_CURVES = ("e_ratio_w", "implicit_acc", "open_gate")  # their last values go into a bench row (final_<key>)


# ---------------------------------------------------------------------------------------------- pieces


def recipe_config(file: str, overrides: dict):
    """configs/motion/<file> with {"section.key": value} overrides applied."""
    from genpref.demo import recipe_config as read_recipe

    return read_recipe(CONFIGS, file, overrides)


def common_overrides(base: Path, data_root: Path, evaluator: Path, seed: int) -> dict:
    return {"model.path": str(base), "model.text_encoder": str(data_root / "text_encoder"), "data.root": str(data_root),
            "train.seed": seed, "train.sample_prompts": [], "train.checkpoint_every": 0, "eval.evaluator": str(evaluator),
            # the sampler this demo evaluates with, so `genpref eval RUN` on a demo run reproduces its numbers
            "eval.glove": str(data_root / "glove"), "eval.solver": EVAL["solver"], "eval.steps": EVAL["steps"], "eval.guidance": 1.0}  # fmt: skip


def with_reward_paths(cfg, evaluator: Path):
    """Point every t2m reward of a recipe at the evaluator in use."""
    for spec in cfg.reward.models:
        if spec.name == "t2m":
            spec.path = str(evaluator)
    return cfg


def train_arm(file: str, run_dir: Path, overrides: dict) -> float:
    """Fine-tune one recipe into a fresh run_dir (a learned reward fitted first on the evaluator's embeddings,
    for the rm_grpo arm); returns the wall time in seconds, the fit included."""
    from genpref.demo import fit_learned_reward
    from genpref.train import train_fresh

    cfg = recipe_config(file, {"train.output_dir": str(run_dir), **overrides})
    evaluator = Path(overrides["eval.evaluator"])
    fit_s = fit_learned_reward(cfg, Path(run_dir), evaluator)
    return fit_s + train_fresh(with_reward_paths(cfg, evaluator))


def load_model(checkpoint: Path, data_root: Path):
    """An MDM adapter for `checkpoint` (model.pt with args.json) with the task's text encoder and statistics."""
    from genpref import build
    from genpref.config import from_dict

    cfg = from_dict({"model": {"kind": "mdm", "path": str(checkpoint), "text_encoder": str(data_root / "text_encoder")},
                     "data": {"root": str(data_root), "max_motion_length": 52}, "objective": {"name": "sft"},
                     "online": {"solver": EVAL["solver"]}, "train": {"output_dir": str(data_root / "unused")}})  # fmt: skip
    return build.build_adapter(cfg, torch.device("cpu"), torch.float32)


def prompt_batch(adapter, texts: Sequence[str], lengths: Sequence[int]):
    """A generation batch for `texts` with the given motion lengths (frames)."""
    batch = adapter.encode_prompts(list(texts))
    lengths = torch.as_tensor(list(lengths), device=batch.cond["lengths"].device)
    batch.cond["lengths"] = lengths
    batch.mask = adapter.codec.mask(lengths)
    return batch


def sample(adapter, texts: Sequence[str], lengths: Sequence[int], seed: int, chunk: int = 64, progress: bool = False,
           desc: str = "sample") -> list[np.ndarray]:  # fmt: skip
    """De-normalised features, one motion per text; the noise of chunk c depends on (seed, c) only, so
    every model evaluated on the same list sees the same initial noise for every prompt."""
    from tqdm.auto import tqdm

    out = []
    for start in tqdm(range(0, len(texts), chunk), desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        batch = prompt_batch(adapter, texts[start : start + chunk], lengths[start : start + chunk])
        generator = torch.Generator().manual_seed(seed * 100_003 + start // chunk)
        x0 = adapter.generate(batch, generator=generator, num_steps=EVAL["steps"])
        out.extend(adapter.decode(x0, batch))
    return out


def verify_all(motions: Sequence[np.ndarray], wants: Sequence[moves.Move]) -> dict[str, np.ndarray]:
    """Per-sample verifier arrays: action, direction, speed, hand, all (every attribute right), score."""
    verdicts = [moves.verify(m, w) for m, w in zip(motions, wants)]
    out = {a: np.array([getattr(v, a) for v in verdicts], dtype=bool) for a in moves.ATTRIBUTES}
    out["all"] = np.array([v.correct for v in verdicts], dtype=bool)
    out["score"] = np.array([v.score for v in verdicts])
    return out


def eval_prompts(combos: Sequence[tuple[str, str, str]], per_combo: int, seed: int) -> tuple[list[str], list[moves.Move]]:
    """Fresh captions (synonyms drawn from `seed`) for each combination."""
    pairs = moves.prompts_for(combos, per_combo, np.random.default_rng([seed, 31]))
    return [p for p, _ in pairs], [w for _, w in pairs]


def t2m_pass(reward, split, adapters: dict, seed: int, progress: bool) -> dict:
    """One T2M pass over the test split (caption + crop per entry, shuffled; rows of complete groups of
    32): per-row R-precision hits and matched distances for every model, FID against the real motions."""
    from motion.eval_data import sample_pass
    from motion.metrics import fid

    drawn = sample_pass(split, np.random.default_rng([seed, 41]))
    rows = len(drawn.captions) // 32 * 32
    texts, lengths = drawn.captions[:rows], drawn.lengths[:rows]
    text_emb = reward.embed_texts(texts).double().numpy()
    real_emb = reward.embed_motions(drawn.motions[:rows]).double().numpy()
    out = {"order": drawn.order[:rows], "real": {"hits": r_precision_hits(text_emb, real_emb),
                                                 "dist": np.linalg.norm(text_emb - real_emb, axis=1)}}  # fmt: skip
    for name, adapter in adapters.items():
        gen = sample(adapter, texts, lengths, seed + 7, progress=progress, desc=f"t2m {name}")
        gen_emb = reward.embed_motions(gen).double().numpy()
        out[name] = {"hits": r_precision_hits(text_emb, gen_emb), "dist": np.linalg.norm(text_emb - gen_emb, axis=1),
                     "fid": fid(real_emb, gen_emb)}  # fmt: skip
    return out


def per_entry(passes: list[dict], name: str, key: str, n_entries: int) -> np.ndarray:
    """Average a per-row quantity over passes for each test entry that was drawn (NaN rows dropped later)."""
    total, count = np.zeros(n_entries), np.zeros(n_entries)
    for p in passes:
        value = p[name][key]
        np.add.at(total, p["order"], value[:, 0] if value.ndim == 2 else value)
        np.add.at(count, p["order"], 1)
    keep = count > 0
    return total[keep] / count[keep]


# ---------------------------------------------------------------------------------------------- demo


def run_demo(out_dir: Path, *, seed: int = 0, progress: bool = True, steps: int | None = None) -> dict:
    """The motion half of `genpref demo` inside out_dir (genpref.demo.run_part_demo with this part)."""
    return run_part_demo(sys.modules[__name__], out_dir, seed=seed, progress=progress, steps=steps)


def demo_setup(out_dir: Path, seed: int, progress: bool) -> DemoSetup:
    """The task data, base and evaluator; the held-out verifier check, the T2M test-split metrics and the
    pose figures, with the same noise for every model."""
    data_root = moves.build(out_dir / "data", progress=progress)
    base, evaluator = base_and_evaluator(out_dir, data_root, seed)

    def evaluate_models(models: dict[str, Path], timings: dict) -> DemoEval:
        from motion.eval_data import load_split
        from motion.rewards import T2MReward

        tick = time.perf_counter()
        adapters = {name: load_model(path, data_root) for name, path in models.items()}
        texts, wants = eval_prompts(moves.HELD_OUT, EVAL["per_combo"], seed)
        lengths = [EVAL["frames"]] * len(texts)
        motions = {name: sample(a, texts, lengths, seed, progress=progress, desc=f"held-out {name}") for name, a in adapters.items()}
        verdicts = {name: verify_all(m, wants) for name, m in motions.items()}
        timings["eval_heldout_s"] = time.perf_counter() - tick

        tick = time.perf_counter()
        reward = T2MReward.load(evaluator, [data_root / "glove"])
        split = load_split(data_root, "test")
        passes = [t2m_pass(reward, split, adapters, seed * 10 + p, progress) for p in range(EVAL["t2m_passes"])]
        timings["eval_t2m_s"] = time.perf_counter() - tick
        hits = {name: per_entry(passes, name, "hits", len(split.entries)) for name in ("real", *adapters)}
        dists = {name: per_entry(passes, name, "dist", len(split.entries)) for name in ("real", *adapters)}
        rows = []
        for name in ("real", *adapters):
            rows.append(stats.mean_row(name, "test_r_precision_top1", hits[name], seed))
            rows.append(stats.mean_row(name, "test_mm_dist", dists[name], seed))
        for name in adapters:
            fids = [p[name]["fid"] for p in passes]
            rows.append({"model": name, "metric": "test_fid", "value": float(np.mean(fids)), "ci95": None, "n": len(fids)})

        tick = time.perf_counter()
        figures_dir = out_dir / "figures"
        figures_dir.mkdir(exist_ok=True)
        picks = [i * EVAL["per_combo"] for i in range(4)]  # the first four held-out combinations
        names = " | ".join(models)
        figures = [{"title": f"held-out prompts, same noise: {' vs '.join(models)} (poses over time)",
                    "path": pose_grid(motions, texts, picks, figures_dir / "heldout_poses.png")}]
        for k, i in enumerate(picks[:2]):
            gif = side_by_side_gif({n: motions[n][i] for n in motions}, figures_dir / f"heldout_{k}.gif")
            figures.append({"title": f"held-out prompt, same noise: {texts[i]!r} ({names})", "path": gif})
        timings["figures_s"] = time.perf_counter() - tick
        settings = {**EVAL, "heldout_prompts": len(texts), "heldout_combos": [list(c) for c in moves.HELD_OUT],
                    "test_entries": len(split.entries), "noise": "the same initial noise per prompt for every model"}  # fmt: skip
        return DemoEval(verdicts, moves.ATTRIBUTES, settings, figures, rows, {"test_r_precision_top1": hits})

    return DemoSetup(common_overrides(base, data_root, evaluator, seed), base, train_arm,
                     lambda run: run / "final" / "model.pt", evaluate_models, {"evaluator": str(evaluator)})  # fmt: skip


def recipe_settings(cfg) -> dict:
    """The demo recipe's constants as the report shows them."""
    o = cfg.objective
    if o.name == "sopo":
        return {"beta": o.beta, "c": o.c, "tau": o.tau, "tau_quantile": o.tau_quantile, "form": o.form,
                "sft_weight": o.sft_weight, "num_samples": cfg.online.num_samples, "online_steps": cfg.online.steps,
                "reward": [s.name for s in cfg.reward.models]}  # fmt: skip
    return {"objective": o.name, "sft_weight": o.sft_weight, "group_size": cfg.online.group_size,
            "rollout_steps": cfg.online.steps, "reward": [s.name for s in cfg.reward.models]}  # fmt: skip


# ---------------------------------------------------------------------------------------------- bench


FEEDBACK_PER_CAPTION = 4  # base samples per training caption for DPO pairs and KTO ratings
FEEDBACK_CAPTIONS = 8  # captions per training combination


def write_base_feedback(data_root: Path, base: Path, out: Path, seed: int = 0) -> dict[str, Path]:
    """The base model's own samples for fresh training-combination captions, ranked (DPO pairs) and rated
    (KTO) by the verifier; written once and shared by every seed of every arm."""
    if (out / ".complete").is_file():
        return {"pairs": out / "pairs.jsonl", "ratings": out / "ratings.jsonl"}
    texts, _ = eval_prompts(moves.TRAIN_COMBOS, FEEDBACK_CAPTIONS, seed + 1000)
    texts = [t for t in texts for _ in range(FEEDBACK_PER_CAPTION)]
    motions = sample(load_model(base, data_root), texts, [EVAL["frames"]] * len(texts), 10_000 + seed)
    paths = moves.write_feedback(out, motions, texts)
    (out / ".complete").write_text("ok\n")
    return paths


def evaluate_model(checkpoint: Path, data_root: Path, cache: Path, noise_seed: int) -> dict[str, np.ndarray]:
    """Verifier arrays on the held-out combinations (EVAL per_combo captions each) and on the training
    combinations (a third as many each), cached as npz; the same noise for every model."""
    if cache.is_file():
        with np.load(cache) as f:
            return {k: f[k] for k in f.files}
    adapter = load_model(checkpoint, data_root)
    out = {}
    for split, combos, per in (("heldout", moves.HELD_OUT, EVAL["per_combo"]), ("train", moves.TRAIN_COMBOS, EVAL["per_combo"] // 3)):
        texts, wants = eval_prompts(combos, per, noise_seed)
        verdicts = verify_all(sample(adapter, texts, [EVAL["frames"]] * len(texts), noise_seed), wants)
        out.update({f"{split}_{k}": v for k, v in verdicts.items()})
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def t2m_metrics(checkpoint: Path, data_root: Path, evaluator: Path, cache: Path, seed: int = 4242) -> dict:
    """R-precision top-1, MM-Dist and FID on the test split with the task's T2M evaluator (EVAL t2m_passes
    passes, complete groups of 32; the same captions, crops and noise for every model), and the real
    motions' R-precision and MM-Dist for scale; cached as JSON."""
    if cache.is_file():
        return json.loads(cache.read_text())
    from motion.eval_data import load_split
    from motion.rewards import T2MReward

    reward = T2MReward.load(evaluator, [data_root / "glove"])
    split = load_split(data_root, "test")
    adapter = load_model(checkpoint, data_root)
    passes = [t2m_pass(reward, split, {"model": adapter}, seed + p, progress=False) for p in range(EVAL["t2m_passes"])]
    mean = lambda who, key: float(np.mean([p[who][key][:, 0] if key == "hits" else p[who][key] for p in passes]))  # noqa: E731
    out = {"test_r_precision_top1": mean("model", "hits"), "test_mm_dist": mean("model", "dist"),
           "test_fid": float(np.mean([p["model"]["fid"] for p in passes])),
           "real_r_precision_top1": mean("real", "hits"), "real_mm_dist": mean("real", "dist")}  # fmt: skip
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out))
    return out


def diversity_columns(checkpoint: Path, data_root: Path, evaluator: Path, cache: Path, noise_seed: int) -> dict:
    """heldout_diversity and heldout_multimodality: Diversity (300 random pairs) and MultiModality (10 pairs
    per combination, its 40 captions as the repeats) of the T2M evaluator's embeddings of the held-out
    samples (the evaluation's captions and noise); cached as JSON."""
    if cache.is_file():
        return json.loads(cache.read_text())
    from motion.metrics import diversity, multimodality
    from motion.rewards import T2MReward

    texts, _ = eval_prompts(moves.HELD_OUT, EVAL["per_combo"], noise_seed)
    motions = sample(load_model(checkpoint, data_root), texts, [EVAL["frames"]] * len(texts), noise_seed)
    emb = T2MReward.load(evaluator, [data_root / "glove"]).embed_motions(motions).numpy()
    rng = np.random.default_rng([noise_seed, 53])
    per = EVAL["per_combo"]  # the T2M protocol's 300 and 10 pairs; fewer only for an evaluation smaller than that
    out = {"heldout_diversity": diversity(emb, min(300, len(emb) - 1), rng),
           "heldout_multimodality": multimodality(emb.reshape(len(moves.HELD_OUT), per, -1), min(10, per - 1), rng)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out))
    return out


def bench_setup(out_dir: Path, setting: str) -> BenchSetup:
    """The moves benchmark (genpref.demo.run_bench): data, base and evaluator, the base's feedback data and
    its evaluation on held-out and training combinations, with one shared set of initial noise."""
    out_dir = Path(out_dir)
    data_root = moves.build(out_dir / "data")
    base, evaluator = base_and_evaluator(out_dir, data_root)
    feedback = write_base_feedback(data_root, base, out_dir / "data" / "feedback")
    prompts = None if setting == "train_prompts" else all_prompts(data_root, out_dir / "data" / "all-prompts.txt")
    noise_seed = 777  # one noise set for every arm and seed: every comparison with the base is paired
    evals = out_dir / "evals"
    base_eval = evaluate_model(base, data_root, evals / "base.npz", noise_seed)

    def overrides(seed: int) -> dict:
        out = {**common_overrides(base, data_root, evaluator, seed), "data.pairs": str(feedback["pairs"]),
               "data.ratings": str(feedback["ratings"])}  # fmt: skip
        if prompts is not None:
            out["data.prompts"] = str(prompts)
        return out

    def score(arm: str, tag: str, seed: int, run: Path) -> dict:
        model = run / "final" / "model.pt"
        r = evaluate_model(model, data_root, evals / f"{arm}{tag}-{seed}.npz", noise_seed)
        row = t2m_metrics(model, data_root, evaluator, evals / f"{arm}{tag}-{seed}-t2m.json")
        for split in ("heldout", "train"):
            row.update(stats.versus_base(split, r[f"{split}_all"], base_eval[f"{split}_all"], r[f"{split}_score"],
                                         base_eval[f"{split}_score"], seed))  # fmt: skip
        return {**row, **diversity_columns(model, data_root, evaluator, evals / f"{arm}{tag}-{seed}-diversity.json", noise_seed),
                **reward_agreement(run)}

    base_heldout: dict = {}  # the base's held-out samples and their captions, made on first use (learned-reward arms)

    def reward_agreement(run: Path) -> dict:
        if not (reward_dir(run) / "reward.json").is_file():
            return {}
        texts, _ = eval_prompts(moves.HELD_OUT, EVAL["per_combo"], noise_seed)
        if not base_heldout:
            base_heldout["motions"] = sample(load_model(base, data_root), texts, [EVAL["frames"]] * len(texts), noise_seed)
        combos = np.repeat(np.arange(len(moves.HELD_OUT)), EVAL["per_combo"])  # the captions of one combination: one group
        return learned_reward_agreement(run, base_heldout["motions"], texts, base_eval["heldout_score"], combos)

    def reuse(row: dict, arm: str, seed: int, run: Path) -> dict:
        if "test_fid" not in row and (run / "final" / "model.pt").is_file():  # rows from before the T2M columns
            row = {**row, **t2m_metrics(run / "final" / "model.pt", data_root, evaluator, evals / f"{arm}-{seed}-t2m.json")}
        if "heldout_diversity" not in row and (run / "final" / "model.pt").is_file():  # rows from before the diversity columns
            tag = "" if setting == "train_prompts" else f"-{setting}"
            row = {**row, **diversity_columns(run / "final" / "model.pt", data_root, evaluator,
                                              evals / f"{arm}{tag}-{seed}-diversity.json", noise_seed)}
        if "reward_heldout_combo_agreement" not in row:
            row = {**row, **reward_agreement(run)}
        return row

    def base_row() -> dict:
        return {"objective": "base", "seed": None,
                **{f"{s}_accuracy": float(base_eval[f"{s}_all"].mean()) for s in ("heldout", "train")},
                **t2m_metrics(base, data_root, evaluator, evals / "base-t2m.json"),
                **diversity_columns(base, data_root, evaluator, evals / "base-diversity.json", noise_seed)}  # fmt: skip

    heldout = None if setting == "train_prompts" else heldout_prompts(data_root, out_dir / "data" / "heldout-prompts.txt")

    def arm_overrides(arm: str) -> dict:
        return {"data.prompts": str(heldout)} if arm in HELDOUT_ROLLOUT_ARMS and heldout is not None else {}

    return BenchSetup(overrides, train_arm, score, base_row, {**EVAL, "noise_seed": noise_seed}, base, reuse,
                      arm_overrides)


def bench_quality(out_dir: Path, *, seeds: list[int], steps: int | None = None, arms: Sequence[str] | None = None,
                  setting: str = "train_prompts") -> dict:
    """Every objective in ARMS (or `arms`) × seeds from the same base (genpref.demo.run_bench)."""
    import sys

    return run_bench(sys.modules[__name__], out_dir, seeds=seeds, steps=steps, arms=arms, setting=setting)


SUMMARY_METRICS = ("heldout_accuracy", "heldout_diff_vs_base", "heldout_diff_vs_sft", "heldout_attribute_score",
                   "heldout_win_rate_vs_base", "heldout_diversity", "heldout_multimodality", "train_accuracy",
                   "train_diff_vs_base", "train_diff_vs_sft", "test_r_precision_top1", "test_mm_dist", "test_fid",
                   "reward_heldout_pair_accuracy", "reward_heldout_combo_agreement", "train_s", "generated_samples")


def train_captions(data_root: Path) -> list[str]:
    """The first caption of every motion of the training split."""
    train = [line.strip() for line in (Path(data_root) / "train.txt").read_text().splitlines() if line.strip()]
    return [(Path(data_root) / "texts" / f"{name}.txt").read_text().splitlines()[0].split("#")[0].strip() for name in train]


def heldout_captions(data_root: Path) -> list[str]:
    """Captions of the held-out combinations (fresh synonyms, no motions), as many per combination as the
    training split has per training combination."""
    per_combo = max(1, round(len(train_captions(data_root)) / len(moves.TRAIN_COMBOS)))
    return [c for c, _ in moves.prompts_for(moves.HELD_OUT, per_combo, np.random.default_rng(2024))]


def all_prompts(data_root: Path, path: Path) -> Path:
    """Captions of the training combinations (as the training split holds them) and of the held-out ones:
    every combination is drawn equally often, as in the image task's prompt list. The prompts online
    recipes draw in the heldout_prompts setting."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([*train_captions(data_root), *heldout_captions(data_root)]) + "\n")
    return path


def heldout_prompts(data_root: Path, path: Path) -> Path:
    """The held-out part of `all_prompts` alone: what HELDOUT_ROLLOUT_ARMS draw in the heldout_prompts setting."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(heldout_captions(data_root)) + "\n")
    return path


if __name__ == "__main__":
    from genpref.demo import main

    main("motion")

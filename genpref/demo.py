"""`genpref demo` and `genpref bench quality`: the one driver of the synthetic verifiable tasks' demos and
quality benchmarks; each task contributes its part (`TaskPart`: arms, evaluation, figures).

The parts are the modules the tasks register as demo parts (genpref.registry: "image" = the shapes task,
"motion" = the moves task), found by name, so genpref/ imports neither image nor motion. The benchmark loop
(arms × seeds, resumable rows, base-paired differences, the summary over seeds) is here; a part prepares its
task (data, base, feedback, the base's evaluation) and scores a trained arm."""

from __future__ import annotations

import importlib
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

SETTINGS = ("train_prompts", "heldout_prompts")


# bench arms whose rollouts draw held-out prompts only in the heldout_prompts setting (each task's
# BenchSetup.arm_overrides points them there): the expert anchor keeps the training combinations, the
# verifier's reward goes where there are no experts
HELDOUT_ROLLOUT_ARMS = ("nft_heldout", "nft_heldout_strict", "rft_heldout")


@dataclass
class BenchSetup:
    """One task's benchmark, prepared once (data, base, feedback, the base's evaluation) by its part."""

    overrides: Callable[[int], dict]  # train.seed -> the recipe overrides every arm trains with
    train: Callable[[str, Path, dict], float]  # (config file, run dir, overrides) -> seconds
    score: Callable[[str, str, int, Path], dict]  # (arm, tag, seed, run dir) -> the row's evaluation columns
    base_row: Callable[[], dict]  # the base model's row
    eval_settings: dict  # what the evaluation used ("settings" -> "eval" of the result)
    base_weights: Path
    reuse: Callable[[dict, str, int, Path], dict] | None = None  # (saved row, arm, seed, run dir) -> row to keep
    # (a changed row is saved again: columns added after the row was written)
    arm_overrides: Callable[[str], dict] | None = None  # arm -> overrides of that arm alone (on top of `overrides`)


@dataclass
class DemoEval:
    """A task's held-out evaluation of the demo's models (base, recipe, sft), on the same noise for all."""

    verdicts: dict[str, dict]  # model -> the verifier's per-sample arrays: "all", "score" and one per attribute
    attributes: Sequence[str]
    settings: dict  # how it evaluated ("settings" -> "eval" of the result)
    figures: list[dict]  # {"title", "path"}; paths inside the demo's directory
    rows: list[dict] = field(default_factory=list)  # result rows beyond the verifier's
    paired: dict[str, dict] = field(default_factory=dict)  # metric -> model -> per-entry values, compared pairwise


@dataclass
class DemoSetup:
    """One task's demo, prepared by its part: the data and base are built, the evaluation knows them."""

    overrides: dict  # what every arm trains with
    base: Path
    train: Callable[[str, Path, dict], float]  # (config file, run dir, overrides) -> seconds
    weights: Callable[[Path], Path]  # a run directory -> the weights its evaluation loads
    evaluate: Callable[[dict[str, Path], dict], DemoEval]  # (model -> weights, timings to add to) -> evaluation
    settings: dict = field(default_factory=dict)  # what else the report should show (the evaluator's path)


class TaskPart(Protocol):
    """A synthetic task's module for `genpref demo` / `genpref bench quality` (image/tasks/shapes/demo.py,
    motion/tasks/moves/demo.py)."""

    TASK: str  # the task's name in results ("shapes", "moves")
    RECIPE: str  # the arm `genpref demo` runs beside SFT
    ARMS: dict[str, str]  # bench arm -> its config file (each fine-tunes the same base)
    CURVES: tuple[str, ...]  # metrics.jsonl keys a run's curves keep
    FINAL_CURVES: tuple[str, ...]  # curves whose last value goes into a bench row as final_<key>
    SUMMARY_METRICS: tuple[str, ...]  # row keys averaged over seeds in the summary

    def run_demo(self, out_dir: Path, *, seed: int = 0, progress: bool = True, steps: int | None = None) -> dict: ...

    def demo_setup(self, out_dir: Path, seed: int, progress: bool) -> DemoSetup: ...

    def recipe_config(self, file: str, overrides: dict): ...

    def recipe_settings(self, cfg) -> dict: ...  # the demo recipe's own constants, for the report

    def bench_setup(self, out_dir: Path, setting: str) -> BenchSetup: ...


def parts() -> dict[str, str]:
    """Demo part name -> its module (what the tasks register)."""
    from genpref import registry

    return registry.every(registry.DEMO_PARTS)


def part(name: str) -> TaskPart:
    return importlib.import_module(parts()[name])


def recipe_config(directory: Path, file: str, overrides: dict):
    """<directory>/<file> (a recipe the demos read as shipped) with {"section.key": value} overrides."""
    from genpref.config import load_config_values
    from genpref.errors import UserError

    path = Path(directory) / file
    if not path.is_file():
        raise UserError(f"{path} not found: the demo reads the recipes in the repository's {Path(directory).name}/ configs")
    return load_config_values(path, overrides)


def _halves(which: str) -> list[str]:
    if which == "all":
        return list(parts())
    if which not in parts():
        from genpref.config import ConfigError

        raise ConfigError(f"demo: unknown part {which!r}; valid: all, {', '.join(parts())}")
    return [which]


def _run_half(name: str, out: Path, seed: int, threads: int | None) -> tuple[dict, float]:
    if threads:
        import torch

        torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        result = part(name).run_demo(out / name, seed=seed, progress=True)
    except Exception as err:  # one half failing must not hide the other's results
        result = {"task": name, "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    return result, round(time.perf_counter() - start, 1)


def run_demo(which: str = "all", out_dir: str | Path = "genpref-demo", seed: int = 0) -> Path:
    """Build the tasks, fine-tune, evaluate base vs fine-tuned vs SFT control; write metrics.json and
    report.html into out_dir. Returns the report path.

    With both halves, each runs in its own process on one thread: on a 2-core CPU that takes the longer
    half's time instead of the sum, and two single-threaded processes beat two that fight over both cores."""
    from genpref.report import write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = _halves(which)
    results, timings = {}, {}
    started = time.strftime("%Y-%m-%d %H:%M:%S")  # read before the halves run: the report said the finish time
    t0 = time.perf_counter()
    if len(names) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(len(names), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {name: pool.submit(_run_half, name, out, seed, 1) for name in names}
            for name, future in futures.items():
                results[name], timings[name] = future.result()
    else:
        results[names[0]], timings[names[0]] = _run_half(names[0], out, seed, None)
    for name in names:
        state = "failed: " + results[name]["error"] if "error" in results[name] else "done"
        print(f"genpref demo: {name} half {state} in {timings[name]:.0f} s")
    meta = {
        "seed": seed,
        "seconds": timings,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path = write_report(out, results, meta)
    for name, res in results.items():
        for row in res.get("paired", []) if "error" not in res else []:
            lo, hi = row["ci95"]
            print(f"  {name}: {row['a']} − {row['b']} on {row['metric']}: {row['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}] (n={row.get('n')})")
    print(f"genpref demo: report {path}")
    failed = [name for name, res in results.items() if "error" in res]
    if failed:
        from genpref.errors import UserError

        raise UserError(f"demo: the {' and '.join(failed)} half failed ({results[failed[0]]['error']}); see {path}")
    return path


def run_part_demo(task: TaskPart, out_dir: str | Path, *, seed: int = 0, progress: bool = True,
                  steps: int | None = None) -> dict:  # fmt: skip
    """One task's half of `genpref demo` inside out_dir: its recipe and the SFT control fine-tuned from the
    same base on the same data, the three models evaluated on held-out combinations with the same noise,
    paired comparisons (recipe − base, SFT − base, recipe − SFT); writes and returns metrics.json."""
    from genpref import stats
    from genpref.rundir import metric_curves

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rel = lambda p: str(Path(p).relative_to(out_dir.parent))  # noqa: E731
    timings: dict[str, float] = {}
    tick = start = time.perf_counter()
    cpu_start = time.process_time()
    setup = task.demo_setup(out_dir, seed, progress)
    timings["data_and_base_s"] = time.perf_counter() - tick
    overrides = {**setup.overrides, **({"train.max_steps": steps} if steps is not None else {})}
    runs = {name: out_dir / "runs" / name for name in (task.RECIPE, "sft")}
    for name, run in runs.items():
        timings[f"train_{name}_s"] = setup.train(task.ARMS[name], run, overrides)
    ev = setup.evaluate({"base": setup.base, **{name: setup.weights(run) for name, run in runs.items()}}, timings)

    rows = []
    for name, v in ev.verdicts.items():
        rows.append(stats.proportion_row(name, "heldout_accuracy", v["all"]))
        rows += [stats.proportion_row(name, f"heldout_{a}", v[a]) for a in ev.attributes]
        rows.append(stats.mean_row(name, "heldout_attribute_score", v["score"], seed))
    paired = []
    for a, b in ((task.RECIPE, "base"), ("sft", "base"), (task.RECIPE, "sft")):
        va, vb = ev.verdicts[a], ev.verdicts[b]
        paired.append(stats.paired_row(a, b, "heldout_accuracy", va["all"], vb["all"], seed))
        paired.append(stats.paired_row(a, b, "heldout_attribute_score", va["score"], vb["score"], seed))
        paired += [stats.paired_row(a, b, metric, per[a], per[b], seed) for metric, per in ev.paired.items()]
    cfg = task.recipe_config(task.ARMS[task.RECIPE], {})
    timings["total_s"] = time.perf_counter() - start
    timings["total_cpu_s"] = time.process_time() - cpu_start  # all threads of this process
    metrics = {
        "task": task.TASK,
        "recipe": task.RECIPE,
        "settings": {"base_weights": str(setup.base), **setup.settings, "train_steps": steps or cfg.train.max_steps,
                     "batch_size": cfg.train.batch_size, "lr": cfg.train.lr, task.RECIPE: task.recipe_settings(cfg),
                     "eval": ev.settings, "seed": seed, "timings": {k: round(v, 1) for k, v in timings.items()}},
        "results": rows + ev.rows,
        "paired": paired,
        "curves": {name: metric_curves(run, task.CURVES) for name, run in runs.items()},
        "figures": [{**f, "path": rel(f["path"])} for f in ev.figures],
        "runs": {name: rel(run) for name, run in runs.items()},
    }  # fmt: skip
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def _markdown(summary: list[dict]) -> str:
    if not summary:
        return ""
    keys = list(dict.fromkeys(k for row in summary for k in row if k != "objective" and not k.endswith("_ci95")))
    head = "| objective | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys) + "\n"
    rows = []
    for row in summary:
        cells = []
        for k in keys:
            v, ci = row.get(k), row.get(k + "_ci95")
            cell = f"{v:.3f}" if isinstance(v, float) else "—" if v is None else str(v)
            cells.append(cell + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
        rows.append(f"| {row['objective']} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def bench_quality(which: str = "all", out_dir: str | Path = "benchmarks/results", seeds=(0, 1, 2), steps: int | None = None,
                  runs_dir: str | Path | None = None, arms=None, setting: str = "train_prompts") -> list[Path]:  # fmt: skip
    """Every objective (or `arms`) at the same budget with several seeds on each task; JSON + Markdown tables
    in out_dir/quality-<task>-<setting>.{json,md}. setting: train_prompts | heldout_prompts (online recipes
    may also draw prompts of the held-out combinations). Runs go to runs_dir/<task> (default
    out_dir/quality-<task>-runs); finished rows there are reused."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in _halves(which):
        start = time.perf_counter()
        runs = Path(runs_dir) / name if runs_dir else out / f"quality-{name}-runs"
        res = run_bench(part(name), runs, seeds=list(seeds), steps=steps, arms=arms, setting=setting)
        res["seconds"] = round(time.perf_counter() - start, 1)
        (out / f"quality-{name}-{setting}.json").write_text(json.dumps(res, indent=1, default=float))
        md = out / f"quality-{name}-{setting}.md"
        base = next((r for r in res.get("rows", []) if r.get("objective") == "base"), {})
        facts = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in base.items() if isinstance(v, float))
        md.write_text(f"# quality benchmark: {res.get('task', name)}, setting {setting} (seeds {list(seeds)})\n\n"
                      + (f"base model: {facts}\n\n" if facts else "") + _markdown(res.get("summary", [])))
        written += [out / f"quality-{name}-{setting}.json", md]
        print(md.read_text())
    return written


# ---------------------------------------------------------------------------------------------- learned-reward arms


def reward_dir(run_dir: Path) -> Path:
    """Where an arm's learned reward lives: beside its run directory (train_fresh empties the run's own)."""
    return run_dir.parent / f"{run_dir.name}-reward"


def fit_learned_reward(cfg, run_dir: Path, encoder: str | Path) -> float:
    """Arms whose reward.models name `learned` (rm_grpo): fit the head on the recipe's data.pairs alone (the
    dpo arm's data; the benchmark's ratings are left out) with `encoder` into reward_dir(run_dir), afresh
    (train.seed seeds the fit), and point the recipe at it. Returns the seconds spent (0 for other arms)."""
    from genpref import learned_reward

    specs = [spec for spec in cfg.reward.models if spec.name == "learned"]
    if not specs:
        return 0.0
    for spec in specs:
        spec.path = str(reward_dir(run_dir))
    cfg.reward_train.encoder = str(encoder)
    kept = cfg.train.overwrite, cfg.data.ratings
    cfg.train.overwrite, cfg.data.ratings = True, None
    start = time.perf_counter()
    learned_reward.train(cfg)
    cfg.train.overwrite, cfg.data.ratings = kept
    return time.perf_counter() - start


def learned_reward_columns(run_dir: Path) -> dict:
    """A bench row's columns of the arm's learned reward (none for other arms): its pair accuracy, log-loss
    and calibration on the prompts its fit held out, where the exact verifier that labelled them scores 1."""
    info_file = reward_dir(run_dir) / "reward.json"
    if not info_file.is_file():
        return {}
    held = json.loads(info_file.read_text()).get("metrics", {}).get("heldout", {}).get("pairs")
    if not held:
        return {}
    return {"reward_heldout_pair_accuracy": held["accuracy"], "reward_heldout_log_loss": held["log_loss"],
            "reward_heldout_ece": held["ece"], "reward_heldout_pairs": held["pairs"]}


def learned_reward_agreement(run_dir: Path, samples: Sequence, prompts: Sequence[str], truth, groups) -> dict:
    """The arm's learned reward (none for other arms) against the exact verifier on the base model's samples
    of the held-out combinations, which no reward fit saw: over every pair of one combination's samples
    that the verifier orders, how often the reward orders them alike (genpref.stats.pair_agreement; the
    verifier itself scores 1)."""
    from genpref import learned_reward, stats

    directory = reward_dir(run_dir)
    if not (directory / learned_reward.INFO_FILE).is_file():
        return {}
    head, info = learned_reward.load(directory, str(directory))
    scorer = importlib.import_module(learned_reward.MODALITIES[info["modality"]]).build_scorer(info, head, str(directory), "cpu")
    agreement, pairs = stats.pair_agreement(scorer.score(list(samples), list(prompts)).numpy(), truth, groups)
    return {"reward_heldout_combo_agreement": agreement, "reward_heldout_combo_pairs": pairs}


# ---------------------------------------------------------------------------------------------- the bench loop


def run_bench(task: TaskPart, out_dir: str | Path, *, seeds: Sequence[int], steps: int | None = None,
              arms: Sequence[str] | None = None, setting: str = "train_prompts") -> dict:  # fmt: skip
    """Every arm of the task (or `arms`) × seeds from the same base at each config's budget (or `steps` for
    all), scored by the task's part with one shared set of evaluation noise, so every comparison with the
    base (and with SFT, per seed) is paired. setting "heldout_prompts": online recipes also draw prompts of
    the held-out combinations (never their expert data). Resumable: each (arm, seed) writes
    out_dir/rows/<arm>-<seed>.json (rows-heldout_prompts/ for that setting) and is skipped when present."""
    from genpref import stats
    from genpref.errors import UserError
    from genpref.rundir import generated_samples, metric_curves

    out_dir = Path(out_dir)
    arms = list(arms or task.ARMS)
    unknown = [a for a in arms if a not in task.ARMS]
    if unknown:
        modality = task.__name__.split(".")[0]  # the part: image, motion
        raise UserError(f"bench: unknown {modality} arm(s) {unknown}; valid: {', '.join(task.ARMS)}")
    if setting not in SETTINGS:
        raise UserError(f"bench: unknown setting {setting!r}; valid: {', '.join(SETTINGS)}")
    setup = task.bench_setup(out_dir, setting)
    tag = "" if setting == "train_prompts" else f"-{setting}"
    rows = []
    for arm in arms:
        for seed in seeds:
            row_path = out_dir / f"rows{tag}" / f"{arm}-{seed}.json"
            run = out_dir / f"runs{tag}" / f"{arm}-{seed}"
            if row_path.is_file():
                row = json.loads(row_path.read_text())
                kept = setup.reuse(row, arm, seed, run) if setup.reuse is not None else row
                if kept != row:
                    row_path.write_text(json.dumps(kept, indent=1))
                rows.append(kept)
                continue
            overrides = {**setup.overrides(seed), **(setup.arm_overrides(arm) if setup.arm_overrides else {})}
            if steps is not None:
                overrides["train.max_steps"] = steps
            seconds = setup.train(task.ARMS[arm], run, overrides)
            row = {"objective": arm, "seed": seed, "setting": setting, "train_s": round(seconds, 1),
                   **generated_samples(run), **learned_reward_columns(run), **setup.score(arm, tag, seed, run)}  # fmt: skip
            last = metric_curves(run, task.CURVES)
            for key in task.FINAL_CURVES:
                if last.get(key):
                    row[f"final_{key}"] = last[key][-1][1]
            row_path.parent.mkdir(parents=True, exist_ok=True)
            row_path.write_text(json.dumps(row, indent=1))
            rows.append(row)
    # per objective: the mean over seeds with a t interval (differences to SFT, and to DPO when it ran, paired
    # by seed: the learned-reward arm is judged against the DPO arm that trains on the same pairs)
    compared = stats.versus_arm(rows, "sft", ("heldout_accuracy", "train_accuracy"))
    metrics = tuple(task.SUMMARY_METRICS)
    if any(r["objective"] == "dpo" for r in rows):
        compared = stats.versus_arm(compared, "dpo", ("heldout_accuracy",))
        metrics = (*metrics, "heldout_diff_vs_dpo")
    summary = stats.summarize_runs(compared, metrics, by="objective")
    return {"task": task.TASK, "rows": [setup.base_row(), *rows], "summary": summary,
            "settings": {"eval": setup.eval_settings, "seeds": list(seeds), "steps": steps,
                         "base_weights": str(setup.base_weights), "setting": setting}}  # fmt: skip


def main(name: str, argv: list[str] | None = None) -> None:
    """`python -m <a task's demo module> demo|bench OUT_DIR ...`: one part's demo or benchmark alone."""
    import argparse

    task = part(name)
    parser = argparse.ArgumentParser(prog=f"python -m {parts()[name]}", description=f"The {task.TASK} demo or quality benchmark ({name} part).")
    parser.add_argument("what", choices=["demo", "bench"])
    parser.add_argument("out_dir")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--setting", default="train_prompts", choices=SETTINGS)
    args = parser.parse_args(argv)
    if args.what == "demo":
        result = task.run_demo(Path(args.out_dir), seed=args.seeds[0], steps=args.steps)
    else:
        result = run_bench(task, Path(args.out_dir), seeds=args.seeds, steps=args.steps, arms=args.arms, setting=args.setting)
        Path(args.out_dir, "bench.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("results", "paired", "summary") if k in result}, indent=1))

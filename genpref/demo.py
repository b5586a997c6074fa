"""`genpref demo` and `genpref bench quality`: run the modality halves (image.demo, motion.demo) on the
synthetic verifiable tasks and collect what they return into a report directory / benchmark table.

The halves are found by name (the same lazy dispatch the CLI uses for model kinds), so genpref/ imports
neither image nor motion."""

from __future__ import annotations

import importlib
import json
import platform
import time
from pathlib import Path

HALVES = {"image": "image.demo", "motion": "motion.demo"}


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
        return list(HALVES)
    if which not in HALVES:
        from genpref.config import ConfigError

        raise ConfigError(f"demo: unknown part {which!r}; valid: all, {', '.join(HALVES)}")
    return [which]


def _run_half(name: str, out: Path, seed: int, threads: int | None) -> tuple[dict, float]:
    if threads:
        import torch

        torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        result = importlib.import_module(HALVES[name]).run_demo(out / name, seed=seed, progress=True)
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


def _markdown(summary: list[dict]) -> str:
    if not summary:
        return ""
    keys = [k for k in summary[0] if k != "objective" and not k.endswith("_ci95")]
    head = "| objective | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys) + "\n"
    rows = []
    for row in summary:
        cells = []
        for k in keys:
            v, ci = row.get(k), row.get(k + "_ci95")
            cell = f"{v:.3f}" if isinstance(v, float) else str(v)
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
        module = importlib.import_module(HALVES[name])
        start = time.perf_counter()
        runs = Path(runs_dir) / name if runs_dir else out / f"quality-{name}-runs"
        res = module.bench_quality(runs, seeds=list(seeds), steps=steps, arms=arms, setting=setting)
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

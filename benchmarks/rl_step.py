"""What an online reward-RL step costs: generation vs training time, and denoiser forwards per trained row.

    python benchmarks/rl_step.py                         # shapes: grpo, nft, rft, sft; 8 optimizer steps each
    python benchmarks/rl_step.py --task moves --steps 4  # the moves task (builds its data into --work once)
    python benchmarks/rl_step.py --json out.json

Each arm is the shipped recipe (configs/image/shapes_<arm>.yaml or configs/motion/moves_<arm>.yaml) from the
shipped base, run through `genpref.train.train` for --steps optimizer steps. A forward hook on every denoiser
the adapter holds (the policy and, for full fine-tuning, its frozen reference) counts the rows it computes,
split by phase: "generate" is time and rows inside the rollout source's refill (sampling K samples per
prompt, classifier-free guidance doubling the rows, scoring the rewards); everything else in a step is "train" (the
policy forward and backward, reference and old-policy forwards, the expert anchor). A trained row is one
row of the loss: a stored transition (grpo), a finished sample noised afresh (nft, rft) or an expert (sft),
anchor rows included. SFT is the baseline measured in the same run.
s/step is the median of the logged step times after the first (start-up and first-step work excluded); a
rollout batch can feed several steps, so that median mixes steps with and without generation, and the
generation share is over all steps.

Numbers are wall seconds on whatever runs them: on a CPU set OMP_NUM_THREADS=1 on a shared machine."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TASKS = {"shapes": ("configs/image", "shapes_{}.yaml"), "moves": ("configs/motion", "moves_{}.yaml")}
ARMS = ("sft", "grpo", "nft", "rft")


class ForwardCounter:
    """Rows through the denoiser(s) and seconds, split by phase; `phase("generate")` marks rollouts."""

    def __init__(self):
        self.rows = {"generate": 0, "train": 0}
        self.seconds = {"generate": 0.0}
        self.current = "train"
        self.handles = []

    def hook(self, module, args, kwargs):
        x = args[0] if args else next(iter(kwargs.values()))
        self.rows[self.current] += int(x.shape[0])

    def watch(self, *modules) -> None:
        for m in modules:
            if m is not None and not any(h.id_module is m for h in self.handles):
                handle = m.register_forward_pre_hook(self.hook, with_kwargs=True)
                handle.id_module = m
                self.handles.append(handle)

    @contextlib.contextmanager
    def phase(self, name: str):
        previous, self.current = self.current, name
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.current = previous


def denoisers(adapter) -> list:
    """The policy denoiser and a frozen reference copy, whichever attributes this adapter keeps them in."""
    names = ("denoiser", "reference_unet", "_reference")
    return [getattr(adapter, n) for n in names if getattr(adapter, n, None) is not None]


def task_overrides(task: str, work: Path) -> dict:
    if task == "shapes":
        return {"data.cache_dir": str(work / "cache")}
    from motion.tasks import moves

    root = moves.build(work / "moves-data")
    return {"data.root": str(root), "model.text_encoder": str(root / "text_encoder")}


def run_arm(task: str, arm: str, steps: int, work: Path, extra: dict | None = None) -> dict:
    from genpref import build, rl
    from genpref.demo import recipe_config
    from genpref.rundir import generated_samples, read_metrics
    from genpref.train import train_fresh

    directory, pattern = TASKS[task]
    overrides = {"train.output_dir": str(work / f"{task}-{arm}"), "train.max_steps": steps, "train.checkpoint_every": 0,
                 "train.sample_prompts": [], "train.log_every": 1, **task_overrides(task, work), **(extra or {})}  # fmt: skip
    cfg = recipe_config(ROOT / directory, pattern.format(arm), overrides)
    counter = ForwardCounter()
    real_build, real_refill = build.build_adapter, rl.GroupRollouts._refill

    def counted_build(*args, **kwargs):
        adapter = real_build(*args, **kwargs)
        counter.watch(*denoisers(adapter))
        return adapter

    def timed_refill(self):
        with counter.phase("generate"):
            return real_refill(self)

    build.build_adapter, rl.GroupRollouts._refill = counted_build, timed_refill
    try:
        wall = train_fresh(cfg)
    finally:
        build.build_adapter, rl.GroupRollouts._refill = real_build, real_refill
    anchor = cfg.train.batch_size if cfg.objective.sft_weight and arm != "sft" else 0
    trained = steps * cfg.train.grad_accum * (cfg.train.batch_size + anchor)
    generated = generated_samples(Path(cfg.train.output_dir)).get("generated_samples", 0)
    gen_s = counter.seconds["generate"]
    step_times = [r["step_time"] for r in read_metrics(Path(cfg.train.output_dir)) if "step_time" in r]
    steps_s = sum(step_times)
    return {"task": task, "arm": arm, "steps": steps, "wall_s": round(wall, 2), "steps_s": round(steps_s, 2),
            "s_per_step": round(statistics.median(step_times[1:] or step_times), 3),
            "generate_s": round(gen_s, 2), "train_s": round(steps_s - gen_s, 2), "generated_samples": generated, "trained_rows": trained,
            "generate_forward_rows": counter.rows["generate"], "train_forward_rows": counter.rows["train"],
            "forwards_per_trained_row": round((counter.rows["generate"] + counter.rows["train"]) / trained, 2),
            "generated_per_step": round(generated / steps, 1)}  # fmt: skip


def table(rows: list[dict]) -> str:
    base = {r["task"]: r["s_per_step"] for r in rows if r["arm"] == "sft"}
    head = ("| task | arm | s/step | × SFT step | generation share | generated / step | forwards / trained row "
            "| generate fwd rows | train fwd rows |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        per = r["s_per_step"]
        ratio = f"{per / base[r['task']]:.1f}×" if r["task"] in base else "—"
        share = f"{r['generate_s'] / r['steps_s']:.0%}"
        lines.append(f"| {r['task']} | {r['arm']} | {per:.2f} | {ratio} | {share} | {r['generated_per_step']:g} "
                     f"| {r['forwards_per_trained_row']:g} | {r['generate_forward_rows']} | {r['train_forward_rows']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=[*TASKS, "all"], default="shapes")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--work", help="working directory (default: a temporary one)")
    p.add_argument("--json", help="write the rows here too")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every arm")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.chdir(ROOT)  # the shipped recipes name the shipped base relative to the repository
    tasks = list(TASKS) if args.task == "all" else [args.task]
    arms = ["sft", *[a for a in args.arms if a != "sft"]] if "sft" in args.arms else args.arms
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        extra = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
        rows = [run_arm(task, arm, args.steps, work, extra) for task in tasks for arm in arms]
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()

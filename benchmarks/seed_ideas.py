"""A small measurement of issue 18's seed ideas against their plain recipes (one seed each: a pilot, not a benchmark).

    python benchmarks/seed_ideas.py moves OUT_DIR [--arms dpo dpo_time_mse oaif oaif_optimism] [--seed 0]
    python benchmarks/seed_ideas.py shapes OUT_DIR [--lambdas 0 0.5] [--steps 30]

moves: each arm is a shipped moves recipe plus one key, trained from the shipped base through the quality
benchmark's own setup (genpref.demo's moves part: same data, feedback pairs, evaluation noise and verifier), so
its held-out / training-combination accuracy and T2M metrics are paired with the plain recipe's.
shapes: DiffusionNFT (configs/image/shapes_nft.yaml) for a few steps with objective.diversity λ = 0 and λ > 0:
the rollouts' reward and diversity within prompts as the runs log them. Writes OUT_DIR/seed-ideas-<task>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MOVES_ARMS = {  # arm -> (config in configs/motion, the key it adds)
    "dpo": ("moves_dpo.yaml", {}),
    "dpo_time_mse": ("moves_dpo.yaml", {"objective.time_mse": 0.1}),
    "dpo_time_mse_strong": ("moves_dpo.yaml", {"objective.time_mse": 1.0}),
    "dpo_time_mse_10": ("moves_dpo.yaml", {"objective.time_mse": 10.0}),
    "oaif": ("moves_oaif.yaml", {}),
    "oaif_optimism": ("moves_oaif.yaml", {"objective.optimism": 0.1}),
    "oaif_optimism_small": ("moves_oaif.yaml", {"objective.optimism": 0.01}),
}
COLUMNS = ("heldout_accuracy", "train_accuracy", "test_r_precision_top1", "test_fid", "train_s")


def moves(out_dir: Path, arms: list[str], seed: int) -> list[dict]:
    from motion.tasks.moves import demo

    setup = demo.bench_setup(out_dir, "train_prompts")
    rows = [setup.base_row()]
    for arm in arms:
        file, extra = MOVES_ARMS[arm]
        run = out_dir / "runs" / f"{arm}-{seed}"
        seconds = setup.train(file, run, {**setup.overrides(seed), **extra})
        rows.append({"arm": arm, "seed": seed, **extra, "train_s": round(seconds, 1), **setup.score(arm, "", seed, run)})
        print(json.dumps({k: rows[-1].get(k) for k in ("arm", *COLUMNS)}), flush=True)
        with (out_dir / "rows.jsonl").open("a") as f:  # kept if a later arm is stopped
            f.write(json.dumps(rows[-1], default=float) + "\n")
    return rows


def shapes(out_dir: Path, lambdas: list[float], steps: int) -> list[dict]:
    """DiffusionNFT on shapes for `steps` steps per λ (seed 0); the logged rollout numbers of each run: reward and
    diversity within prompts (group_distance: mean distance of a sample to its group's others, unit-length pixels)."""
    from genpref.config import load_config
    from genpref.rundir import read_metrics
    from genpref.train import train_fresh

    rows = []
    for lam in lambdas:
        run = out_dir / f"shapes-nft-{lam}"
        cfg = load_config(ROOT / "configs/image/shapes_nft.yaml", [f"train.output_dir={run}", f"train.max_steps={steps}",
                                                                   "train.sample_prompts=[]", f"objective.diversity={lam}"])
        seconds = train_fresh(cfg)
        logged = read_metrics(run)
        mean = lambda key, part: sum(r[key] for r in part) / len(part)
        first, last = logged[:5], logged[-10:]
        rows.append({"lambda": lam, "steps": steps, "train_s": round(seconds, 1),
                     "reward_first5": mean("reward_mean", first), "reward_last10": mean("reward_mean", last),
                     "group_distance_first5": mean("group_distance", first), "group_distance_last10": mean("group_distance", last)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=["moves", "shapes"])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--arms", nargs="+", default=list(MOVES_ARMS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    tick = time.perf_counter()
    rows = moves(args.out_dir, args.arms, args.seed) if args.task == "moves" else shapes(args.out_dir, args.lambdas, args.steps)
    result = {"task": args.task, "rows": rows, "seconds": round(time.perf_counter() - tick, 1)}
    (args.out_dir / f"seed-ideas-{args.task}.json").write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()

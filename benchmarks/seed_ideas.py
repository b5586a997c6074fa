"""A small measurement of issue 18's seed ideas against their plain recipes (one seed each: a pilot, not a benchmark).

    python benchmarks/seed_ideas.py moves OUT_DIR [--arms dpo dpo_time_mse oaif oaif_optimism] [--seed 0]
    python benchmarks/seed_ideas.py toy OUT_DIR [--seeds 0 1 2] [--steps 40]

moves: each arm is a shipped moves recipe plus one key, trained from the shipped base through the quality
benchmark's own setup (genpref.demo's moves part: same data, feedback pairs, evaluation noise and verifier), so
its held-out / training-combination accuracy and T2M metrics are paired with the plain recipe's.
toy: GRPO on the 2-D toy task with objective.diversity λ ∈ {0, 0.5, 2}: the final model's samples, 32 per
prompt, scored by the toy reward, and their diversity within each prompt (genpref.diversity.mean_pairwise_distance
of the raw 2-D points). Writes OUT_DIR/seed-ideas-<task>.json and prints a Markdown table.
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
    "oaif": ("moves_oaif.yaml", {}),
    "oaif_optimism": ("moves_oaif.yaml", {"objective.optimism": 0.1}),
}
TOY_LAMBDAS = (0.0, 0.5, 2.0)
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


def toy(out_dir: Path, seeds: list[int], steps: int) -> list[dict]:
    import torch

    from genpref import build
    from genpref.config import load_config
    from genpref.diversity import mean_pairwise_distance
    from genpref.rundir import read_metrics
    from genpref.toy import PROMPTS
    from genpref.train import train_fresh

    rows = []
    for lam in TOY_LAMBDAS:
        for seed in seeds:
            run = out_dir / f"toy-{lam}-{seed}"
            cfg = load_config(ROOT / "configs/toy/toy_grpo.yaml", [f"train.output_dir={run}", f"train.max_steps={steps}",
                                                                   f"train.seed={seed}", f"objective.diversity={lam}",
                                                                   "train.checkpoint_every=0"])
            seconds = train_fresh(cfg)
            adapter = build.build_adapter(cfg, "cpu", torch.float32)
            from safetensors.torch import load_file

            adapter.denoiser.load_state_dict(load_file(str(run / "final" / "toy.safetensors")))
            prompts = [p for p in PROMPTS for _ in range(32)]
            x0 = adapter.generate(adapter.encode_prompts(prompts), generator=torch.Generator().manual_seed(123), num_steps=5)
            reward = build.build_reward(cfg, "cpu").score(list(x0.numpy()), prompts)
            groups = torch.tensor([PROMPTS.index(p) for p in prompts])
            last = read_metrics(run)[-5:]
            rows.append({"lambda": lam, "seed": seed, "train_s": round(seconds, 1), "reward": reward.mean().item(),
                         "distance_per_prompt": mean_pairwise_distance(x0, groups).mean().item(),
                         "group_distance_last5": sum(r["group_distance"] for r in last) / len(last)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=["moves", "toy"])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--arms", nargs="+", default=list(MOVES_ARMS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    tick = time.perf_counter()
    rows = moves(args.out_dir, args.arms, args.seed) if args.task == "moves" else toy(args.out_dir, args.seeds, args.steps)
    result = {"task": args.task, "rows": rows, "seconds": round(time.perf_counter() - tick, 1)}
    (args.out_dir / f"seed-ideas-{args.task}.json").write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()

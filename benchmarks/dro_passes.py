"""UNet forward passes per DRO training sample: genpref's rollout buffer against the published recipe.

    .venv/bin/python benchmarks/dro_passes.py [--steps 20] [--train-steps 10]

The published DiffusionDRO loop generates 4 fresh 20-step trajectories per micro-step and trains on one
state of each: 20 sampler forwards per used state. genpref records every state of a trajectory with its
prediction and feeds `online.states_per_rollout` of them (0 = all) to training. Counted here with a
global forward hook on the tiny UNet of configs/image/tiny_dro.yaml (sample-forwards: a batch of B counts
B; CFG would double them), split into generation (inside adapter.generate) and training forwards.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def count(states_per_rollout: int, sampler_steps: int, train_steps: int, batch: int) -> dict:
    from diffusers import UNet2DConditionModel

    from genpref.config import load_config
    from genpref.train import train
    from image.adapter import ImageAdapter

    tally = {"generation": 0, "training": 0}
    state = {"generating": False}
    real_generate = ImageAdapter.generate

    def generate(self, *args, **kwargs):
        state["generating"] = True
        try:
            return real_generate(self, *args, **kwargs)
        finally:
            state["generating"] = False

    def hook(module, args, kwargs=None):
        if isinstance(module, UNet2DConditionModel):
            n = args[0].shape[0] if args else kwargs["sample"].shape[0]
            tally["generation" if state["generating"] else "training"] += n

    ImageAdapter.generate = generate
    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(ROOT / "configs/image/tiny_dro.yaml", [
                f"train.output_dir={tmp}/run", f"online.steps={sampler_steps}", f"online.states_per_rollout={states_per_rollout}",
                f"train.max_steps={train_steps}", f"train.batch_size={batch}", "train.checkpoint_every=0", "train.sample_prompts=[]",
            ])
            train(cfg)
    finally:
        handle.remove()
        ImageAdapter.generate = real_generate
    samples = train_steps * batch
    return {k: v / samples for k, v in tally.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20, help="sampler steps per rollout (published: 20)")
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    published = args.steps  # one state used per generated trajectory
    print(f"published DiffusionDRO: {published} generation forwards per training sample (+4 training forwards)")
    for keep in (0, 10, 4):
        r = count(keep, args.steps, args.train_steps, args.batch)
        label = "all" if keep == 0 else str(keep)
        print(f"genpref states_per_rollout={label:>3}: {r['generation']:5.2f} generation + {r['training']:.2f} training "
              f"forwards per training sample ({published / max(r['generation'], 1e-9):.1f}× fewer sampler forwards)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

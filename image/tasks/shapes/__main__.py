"""`python -m image.tasks.shapes [DIR]`: write the shapes task's expert data and prompt files."""

import sys
from pathlib import Path

from image.tasks.shapes import PRETRAIN_NOISE, heldout_combos, train_combos, write_experts, write_prompts

out = Path(sys.argv[1] if len(sys.argv) > 1 else "shapes-data")
write_experts(out / "experts")
write_experts(out / "pretrain", noise=PRETRAIN_NOISE, captions_per_image=2)
write_prompts(out / "prompts.txt", train_combos())
write_prompts(out / "heldout-prompts.txt", heldout_combos())
print(f"wrote {out}")

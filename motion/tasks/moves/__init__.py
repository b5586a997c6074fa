"""The `moves` task: procedural text-to-motion on HumanML3D's 22-joint skeleton with an exact verifier.

A prompt asks for a move of the legs and root (walk forward / backward, turn left / right, jump, squat) at
one of two speeds, optionally while waving the left or the right hand: "a person walks backward slowly
while waving the left hand". That is 6 × 2 × 3 = 36 attribute combinations; nine of them (`HELD_OUT`)
never appear in training, not even as a wrong caption, while every PAIR of their attribute values does,
so a model that composes what it learnt can get them right. Every motion is animated as joint positions
[T, 22, 3] (metres, Y up, 20 fps) by forward kinematics of the HumanML3D target skeleton and turned into
263-d features by the real extractor (`motion.skeleton.extract_features`), so the directory `build`
writes is an ordinary HumanML3D-format dataset (new_joint_vecs/, texts/ with `word/POS` tokens,
Mean.npy, Std.npy, splits) that MDM, MLD and the T2M evaluator read like the real one.

The verifier (`verify`) reads any motion back through `recover_from_ric` and measures, from joint
positions only: raised wrists, the yaw of the hips/shoulders line, root travel, airborne frames (all
four foot joints off the floor) and the root's vertical range. A fixed decision list gives the action,
the sign of the matching quantity gives the direction, a rate (m/s, deg/s) against a threshold
half-way (geometrically) between the clean speeds gives the speed, and a wrist held above its shoulder
gives the waving hand. Clean motions score 1 on every attribute; `tests/test_moves.py` shows each wrong
attribute is caught.

    python -m motion.tasks.moves build OUT_DIR [--seed 0] [--train-per-combo 24]
    python -m motion.tasks.moves check OUT_DIR          # verifier accuracy on the dataset's own motions
"""

from motion.tasks.moves.animation import animate, pose, render
from motion.tasks.moves.dataset import BuildSettings, build, check, prompts_for, write_feedback
from motion.tasks.moves.grammar import (
    COMBOS,
    FPS,
    HANDS,
    HELD_OUT,
    MOVES,
    SPEEDS,
    TRAIN_COMBOS,
    VERSION,
    Move,
    caption,
    noisy_caption,
    parse_prompt,
)
from motion.tasks.moves.verifier import (
    ATTRIBUTES,
    Measurements,
    Verdict,
    judge,
    measure,
    shared_readings,
    similarity,
    verify,
)

__all__ = [
    "ATTRIBUTES", "COMBOS", "FPS", "HANDS", "HELD_OUT", "MOVES", "SPEEDS", "TRAIN_COMBOS", "VERSION",
    "BuildSettings", "Measurements", "Move", "Verdict", "animate", "build", "caption", "check", "judge",
    "measure", "noisy_caption", "parse_prompt", "pose", "prompts_for", "render", "shared_readings",
    "similarity", "verify", "write_feedback",
]  # fmt: skip

"""Write a small synthetic HumanML3D-format directory (tests, demos, the tiny configs).

Each motion is one of a few actions (walk forward/backward, turn left/right, jump, squat, wave) with a
speed, rendered into the 263-d HumanML3D layout with plausible magnitudes: root yaw rate and planar
velocity, root height, a standing skeleton (root-relative joint positions) with action-dependent
offsets, identity-like 6-D rotations, small joint velocities and foot contacts, plus a random walk of
noise on top. The caption names the action, so a tiny model can learn to follow text. Captions carry
word/POS tokens as the real `texts/*.txt`; some motions get an extra caption for a time sub-span.

    python -m motion.tiny_data OUT_DIR [--motions 48] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

FPS = 20
# standing pose, root-relative (x left, y up, z forward), joints 1..21 of the 22-joint SMPL chain
STAND = np.array([
    [0.06, 0.87, 0.0], [-0.06, 0.87, 0.0], [0.0, 1.05, 0.0], [0.10, 0.50, 0.0], [-0.10, 0.50, 0.0],
    [0.0, 1.20, 0.0], [0.10, 0.10, 0.0], [-0.10, 0.10, 0.0], [0.0, 1.25, 0.0], [0.10, 0.03, 0.10],
    [-0.10, 0.03, 0.10], [0.0, 1.45, 0.0], [0.07, 1.38, 0.0], [-0.07, 1.38, 0.0], [0.0, 1.60, 0.02],
    [0.17, 1.40, 0.0], [-0.17, 1.40, 0.0], [0.20, 1.15, 0.0], [-0.20, 1.15, 0.0], [0.22, 0.90, 0.0],
    [-0.22, 0.90, 0.0],
], dtype=np.float32)  # [21, 3]

# action -> (caption templates with POS tags, forward speed m/frame, yaw rate rad/frame, vertical, wave)
ACTIONS = {
    "walk_forward": (["a/DET person/NOUN walk/VERB forward/ADV", "someone/PRON walk/VERB straight/ADV ahead/ADV"], 0.06, 0.0, 0.0, 0.0),
    "walk_backward": (["a/DET person/NOUN walk/VERB backward/ADV", "someone/PRON step/VERB back/ADV slowly/ADV"], -0.04, 0.0, 0.0, 0.0),
    "turn_left": (["a/DET person/NOUN turn/VERB left/ADV", "someone/PRON turn/VERB around/ADV to/ADP the/DET left/NOUN"], 0.01, 0.05, 0.0, 0.0),
    "turn_right": (["a/DET person/NOUN turn/VERB right/ADV", "someone/PRON turn/VERB to/ADP the/DET right/NOUN"], 0.01, -0.05, 0.0, 0.0),
    "jump": (["a/DET person/NOUN jump/VERB up/ADV", "someone/PRON jump/VERB in/ADP place/NOUN"], 0.0, 0.0, 0.25, 0.0),
    "squat": (["a/DET person/NOUN squat/VERB down/ADV", "someone/PRON crouch/VERB and/CONJ stand/VERB up/ADV"], 0.0, 0.0, -0.3, 0.0),
    "wave": (["a/DET person/NOUN wave/VERB with/ADP the/DET right/ADJ hand/NOUN", "someone/PRON wave/VERB hello/NOUN"], 0.0, 0.0, 0.0, 0.3),
}
SPEEDS = {"slowly": 0.6, "quickly": 1.5}


def caption_line(tagged: str, start: float = 0.0, end: float = 0.0, adverb: str | None = None) -> str:
    """'word/POS ...' -> the HumanML3D line 'caption#word/POS ...#start#end'."""
    tokens = tagged.split() + ([f"{adverb}/ADV"] if adverb else [])
    caption = " ".join(t.split("/")[0] for t in tokens)
    return f"{caption}#{' '.join(tokens)}#{start}#{end}"


def render_action(action: str, speed: float, frames: int, rng: np.random.Generator) -> np.ndarray:
    """One motion [frames, 263] in the HumanML3D feature layout."""
    _, forward, yaw, vertical, wave = ACTIONS[action]
    phase = np.linspace(0, 2 * np.pi * frames / FPS, frames)  # one cycle per second
    out = np.zeros((frames, 263), dtype=np.float32)
    out[:, 0] = yaw * speed  # root angular velocity (yaw)
    out[:, 2] = forward * speed  # root linear velocity, forward (z)
    out[:, 1] = 0.005 * np.sin(phase)  # lateral sway (x)
    out[:, 3] = 0.95 + vertical * np.clip(np.sin(phase * speed), 0, None)  # root height: jumps up, squats down
    ric = np.repeat(STAND[None], frames, 0)  # [T, 21, 3]
    swing = 0.25 * np.sin(phase * speed)[:, None] * abs(forward) / 0.06
    ric[:, [3, 6, 9], 2] += swing  # left knee/ankle/foot swing forward
    ric[:, [4, 7, 10], 2] -= swing
    ric[:, :, 1] += (out[:, 3:4] - 0.95)  # the body follows the root height
    ric[:, 20, 1] += wave * (1 + np.sin(4 * phase))  # right wrist up and down
    ric[:, 18, 1] += 0.5 * wave * (1 + np.sin(4 * phase))
    out[:, 4:67] = ric.reshape(frames, -1)
    out[:, 67:193] = np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), 21)  # identity rotations (6-D)
    vel = np.diff(np.concatenate([ric[:1], ric]), axis=0)  # [T, 21, 3]
    out[:, 196:259] = vel.reshape(frames, -1)
    out[:, 193:196] = out[:, [1, 3, 2]] * [1, 0, 1]  # root velocity
    contact = (np.sin(phase * speed) > 0).astype(np.float32)
    out[:, 259:263] = np.stack([contact, contact, 1 - contact, 1 - contact], 1)
    noise = np.cumsum(rng.normal(0, 0.002, out.shape), axis=0).astype(np.float32)  # random walk
    return out + noise


def write_tiny_humanml(root: str | Path, num_motions: int = 48, seed: int = 0, frames: tuple[int, int] = (40, 64)) -> Path:
    """Create `root` with new_joint_vecs/, texts/, Mean.npy, Std.npy and train/val/test splits."""
    root = Path(root)
    (root / "new_joint_vecs").mkdir(parents=True, exist_ok=True)
    (root / "texts").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    names, motions = [], []
    for i in range(num_motions):
        action = list(ACTIONS)[i % len(ACTIONS)]
        adverb = list(SPEEDS)[(i // len(ACTIONS)) % len(SPEEDS)]
        n = int(rng.integers(frames[0], frames[1] + 1))
        motion = render_action(action, SPEEDS[adverb], n, rng)
        name = f"{i:06d}"
        np.save(root / "new_joint_vecs" / f"{name}.npy", motion)
        lines = [caption_line(t, adverb=adverb) for t in ACTIONS[action][0]]
        span = int(0.75 * n)
        if span >= 40:  # a caption for the first 3/4 of the motion, when that passes the length filter
            lines.append(caption_line(ACTIONS[action][0][0], 0.0, span / FPS, adverb))
        (root / "texts" / f"{name}.txt").write_text("\n".join(lines) + "\n")
        names.append(name)
        motions.append(motion)
    stacked = np.concatenate(motions)
    np.save(root / "Mean.npy", stacked.mean(0).astype(np.float32))
    np.save(root / "Std.npy", np.maximum(stacked.std(0), 1e-2).astype(np.float32))
    order = rng.permutation(num_motions)
    n_val = n_test = max(1, num_motions // 8)
    splits = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
    for split, idx in splits.items():
        (root / f"{split}.txt").write_text("\n".join(names[i] for i in sorted(idx)) + "\n")
    (root / "all.txt").write_text("\n".join(names) + "\n")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a tiny synthetic HumanML3D-format directory.")
    parser.add_argument("out_dir")
    parser.add_argument("--motions", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_tiny_humanml(args.out_dir, args.motions, args.seed))


if __name__ == "__main__":
    main()

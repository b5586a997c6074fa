"""A synthetic HumanML3D-format directory and its verifier reward (tests, demos, the tiny configs).

Each motion is one of seven actions (walk forward / backward, turn left / right, jump, squat, wave) at
one of two speeds, animated on HumanML3D's 22-joint skeleton by forward kinematics (root path and
heading, leg and arm swings, knee bends, a raised waving arm), with a little random jitter, and turned
into the 263-d features by `motion.skeleton.extract_features` — so every file is a real HumanML3D
motion that `recover_from_ric` and `motion.draw` turn back into a stick figure. Captions name the
action and speed, with word/POS tokens as the real `texts/*.txt`; long motions get an extra caption
for a time sub-span.

`TinyActionReward` (reward name "tiny-motion") verifies the action: a few motion statistics (forward
speed, turning rate, root-height range and mean, right-wrist height) are compared with each action's clean
prototype; the score is the softmax probability of the caption's action, in [0, 1].

A config reads the directory as `data.root: tiny://humanml` and its preferences as `data.pairs: tiny://pairs`
/ `data.ratings: tiny://ratings` (the motion scheme tiny:// of genpref.registry), written on first use under
<train.output_dir>/tiny-data/humanml.

    python -m motion.tasks.tiny_data OUT_DIR [--motions 48] [--seed 0]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import torch

FPS = 20

# action -> captions as word/POS tokens (lemmas, as HumanML3D's tokens)
CAPTIONS = {
    "walk_forward": ["a/DET person/NOUN walk/VERB forward/ADV", "someone/PRON walk/VERB straight/ADV ahead/ADV"],
    "walk_backward": ["a/DET person/NOUN walk/VERB backward/ADV", "someone/PRON step/VERB back/ADV"],
    "turn_left": ["a/DET person/NOUN turn/VERB left/ADV", "someone/PRON turn/VERB to/ADP the/DET left/NOUN"],
    "turn_right": ["a/DET person/NOUN turn/VERB right/ADV", "someone/PRON turn/VERB to/ADP the/DET right/NOUN"],
    "jump": ["a/DET person/NOUN jump/VERB up/ADV", "someone/PRON jump/VERB in/ADP place/NOUN"],
    "squat": ["a/DET person/NOUN squat/VERB down/ADV", "someone/PRON crouch/VERB and/CCONJ stand/VERB up/ADV"],
    "wave": ["a/DET person/NOUN wave/VERB hello/NOUN", "someone/PRON wave/VERB a/DET hand/NOUN"],
}
ACTIONS = list(CAPTIONS)
SPEEDS = {"slowly": 0.6, "quickly": 1.4}


# ---------------------------------------------------------------------------------------------- animation


def _rot_x(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def forward_kinematics(root: np.ndarray, heading: float, local: dict[int, np.ndarray]) -> np.ndarray:
    """Joints [22, 3] of the rest skeleton (arms hanging) posed by local rotations {joint: 3×3}; the
    rotation at joint j moves j's children. The root is turned by `heading` about Y (0 = facing +Z)."""
    from motion.skeleton import T2M_PARENTS, T2M_TARGET_OFFSETS

    pos = np.zeros((22, 3))
    frame = [None] * 22
    frame[0] = _rot_y(heading)
    pos[0] = root
    for j in range(1, 22):
        p = T2M_PARENTS[j]
        pos[j] = pos[p] + frame[p] @ T2M_TARGET_OFFSETS[j]
        frame[j] = frame[p] @ local.get(j, np.eye(3))
    return pos


def animate_action(action: str, speed: float, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Joint positions [frames, 22, 3] (metres, Y up) of one action."""
    phase0 = rng.uniform(0, 2 * np.pi)
    swing, step = 0.45 * rng.uniform(0.8, 1.2), 0.05 * rng.uniform(0.8, 1.2)  # leg swing (rad), metres/frame
    x = z = 0.0
    heading = rng.uniform(-0.3, 0.3)
    joints = []
    for t in range(frames):
        phase = phase0 + 2 * np.pi * speed * t / FPS
        s = np.sin(phase)
        height, velocity, knee, squat, local = 0.92, 0.0, 0.0, 0.0, {}
        if action.startswith("walk"):
            velocity = speed * step * (1 if action == "walk_forward" else -0.7)
            knee = 0.5 * max(0.0, np.sin(phase + 0.5))
        elif action.startswith("turn"):
            heading += (1 if action == "turn_left" else -1) * 0.06 * speed
            velocity, knee = 0.01 * speed, 0.3 * max(0.0, np.sin(phase + 0.5))
        elif action == "jump":
            height += 0.3 * max(0.0, s)
            knee = 0.6 * max(0.0, -s)
        elif action == "squat":
            squat = 0.5 * (1 - np.cos(phase))  # 0 standing .. 1 deep
            height -= 0.35 * squat
        leg = swing * s if action.startswith(("walk", "turn")) else 0.0
        local[1], local[2] = _rot_x(-leg - 0.9 * squat), _rot_x(leg - 0.9 * squat)  # thighs swing / bend forward
        local[4], local[5] = _rot_x(knee + 1.8 * squat), _rot_x(knee + 1.8 * squat)  # knees bend back
        local[16], local[17] = _rot_x(0.6 * leg), _rot_x(-0.6 * leg)  # arms swing against the legs
        if action == "wave":
            local[17] = _rot_z(-2.6)  # right arm raised
            local[19] = _rot_z(-0.5 * np.sin(4 * phase))  # forearm waves
        x += velocity * np.sin(heading)
        z += velocity * np.cos(heading)
        joints.append(forward_kinematics(np.array([x, height, z]), heading, local))
    joints = np.stack(joints)
    return joints + rng.normal(0, 0.003, joints.shape)


def render_action(action: str, speed: float, frames: int, rng: np.random.Generator) -> np.ndarray:
    """One motion as HumanML3D features [frames, 263]."""
    from motion.skeleton import extract_features

    return extract_features(animate_action(action, speed, frames + 1, rng), fix_heading_wrap=True)  # as shipped


def caption_line(tagged: str, adverb: str | None = None, start: float = 0.0, end: float = 0.0) -> str:
    """'word/POS ...' (+ speed adverb) -> the HumanML3D line 'caption#word/POS ...#start#end'."""
    tokens = tagged.split() + ([f"{adverb}/ADV"] if adverb else [])
    caption = " ".join(t.split("/")[0] for t in tokens)
    return f"{caption}#{' '.join(tokens)}#{start}#{end}"


def write_tiny_humanml(root: str | Path, num_motions: int = 48, seed: int = 0, frames: tuple[int, int] = (40, 64)) -> Path:
    """Create `root` with new_joint_vecs/, texts/, Mean.npy, Std.npy and train/val/test (+ all) splits."""
    root = Path(root)
    (root / "new_joint_vecs").mkdir(parents=True, exist_ok=True)
    (root / "texts").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    names, motions = [], []
    for i in range(num_motions):
        action = ACTIONS[i % len(ACTIONS)]
        adverb = list(SPEEDS)[(i // len(ACTIONS)) % len(SPEEDS)]
        n = int(rng.integers(frames[0], frames[1] + 1))
        motion = render_action(action, SPEEDS[adverb], n, rng)
        name = f"{i:06d}"
        np.save(root / "new_joint_vecs" / f"{name}.npy", motion)
        lines = [caption_line(t, adverb) for t in CAPTIONS[action]]
        span = int(0.75 * n)
        if span >= 40:  # a caption for the first 3/4 of the motion, when that passes the length filter
            lines.append(caption_line(CAPTIONS[action][0], adverb, 0.0, span / FPS))
        (root / "texts" / f"{name}.txt").write_text("\n".join(lines) + "\n")
        names.append(name)
        motions.append(motion)
    stacked = np.concatenate(motions)
    np.save(root / "Mean.npy", stacked.mean(0).astype(np.float32))
    np.save(root / "Std.npy", np.maximum(stacked.std(0), 1e-2).astype(np.float32))
    order = rng.permutation(num_motions)
    n_held = max(1, num_motions // 8)
    splits = {"val": order[:n_held], "test": order[n_held : 2 * n_held], "train": order[2 * n_held :]}
    for split, idx in splits.items():
        (root / f"{split}.txt").write_text("\n".join(names[i] for i in sorted(idx)) + "\n")
    (root / "all.txt").write_text("\n".join(names) + "\n")
    return root


def write_preferences(root: str | Path) -> tuple[Path, Path]:
    """pairs.jsonl (a train motion with its caption wins over a motion of another action) and
    ratings.jsonl (each train motion rated 1 under its own caption, 0 under another action's) in the
    format of motion.data.motion_jsonl, next to the tiny directory's new_joint_vecs/."""
    import json

    root = Path(root)
    names = (root / "train.txt").read_text().split()
    action_of = {n: ACTIONS[int(n) % len(ACTIONS)] for n in names}
    caption = {a: caption_line(CAPTIONS[a][0]).split("#")[0] for a in ACTIONS}
    pairs, ratings = [], []
    for i, name in enumerate(names):
        other = next(m for m in names[i + 1:] + names[:i] if action_of[m] != action_of[name])
        own = caption[action_of[name]]
        pairs.append({"prompt": own, "w": f"new_joint_vecs/{name}.npy", "l": f"new_joint_vecs/{other}.npy"})
        ratings.append({"prompt": own, "x": f"new_joint_vecs/{name}.npy", "rating": 1.0})
        ratings.append({"prompt": caption[action_of[other]], "x": f"new_joint_vecs/{name}.npy", "rating": 0.0})
    for file, rows in (("pairs.jsonl", pairs), ("ratings.jsonl", ratings)):
        (root / file).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "pairs.jsonl", root / "ratings.jsonl"


def ensure(directory: str | Path, num_motions: int = 48, seed: int = 0) -> Path:
    """Write the tiny directory once (a marker file records completion); return its path."""
    directory = Path(directory)
    marker = directory / ".complete"
    if not marker.is_file():
        write_tiny_humanml(directory, num_motions, seed)
        marker.write_text("ok\n")
    if not (directory / ".preferences").is_file():
        write_preferences(directory)
        (directory / ".preferences").write_text("ok\n")
    return directory


def resolve_data(spec: str, key: str, cfg, adapter=None) -> Path:
    """genpref.registry hook for the motion scheme tiny://: data.root tiny://humanml -> the directory;
    data.pairs tiny://pairs and data.ratings tiny://ratings -> the files written beside it."""
    from genpref.errors import UserError

    name = spec[len("tiny://"):]
    valid = {"root": ("humanml",), "pairs": ("pairs",), "ratings": ("ratings",)}.get(key, ())
    if name not in valid:
        raise UserError(f"data.{key}: unknown synthetic data {spec!r}; valid: {', '.join(f'tiny://{v}' for v in valid) or 'none'}")
    root = ensure(Path(cfg.train.output_dir) / "tiny-data" / "humanml")
    return root if key == "root" else root / f"{name}.jsonl"


# ---------------------------------------------------------------------------------------------- verifier


def caption_action(text: str) -> str | None:
    """The tiny action a caption asks for (None when it names none)."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    if "wave" in words or "waves" in words:
        return "wave"
    if words & {"jump", "jumps", "hop", "hops"}:
        return "jump"
    if words & {"squat", "squats", "crouch", "crouches"}:
        return "squat"
    if words & {"turn", "turns"}:
        return "turn_left" if "left" in words else "turn_right" if "right" in words else None
    if words & {"back", "backward", "backwards"}:
        return "walk_backward"
    if words & {"walk", "walks", "forward", "ahead"}:
        return "walk_forward"
    return None


def descriptor(features: np.ndarray) -> np.ndarray:
    """[mean forward speed, mean turning rate, root-height range, mean root height, mean right-wrist height
    above the root] of features [T, 263]."""
    f = np.asarray(features, dtype=np.float64)
    wrist_y = f[:, 4 + 20 * 3 + 1]  # joint 21 (right wrist), ric y
    return np.array([f[:, 2].mean(), f[:, 0].mean(), np.ptp(f[:, 3]), f[:, 3].mean(), (wrist_y - f[:, 3]).mean()])


DESCRIPTOR_SCALE = np.array([0.01, 0.005, 0.05, 0.03, 0.1])  # differences that count as one unit


class TinyActionReward:
    """Reward model for the synthetic actions: P(caption's action | motion) from a nearest-prototype softmax."""

    def __init__(self, temperature: float = 4.0):
        rng = np.random.default_rng(0)
        self.prototypes = {
            (a, s): descriptor(render_action(a, SPEEDS[s], 60, rng)) for a in ACTIONS for s in SPEEDS
        }
        self.temperature = temperature

    def _log_probs(self, motion: np.ndarray) -> dict[str, float]:
        d = descriptor(motion)
        dist = {k: float((((d - p) / DESCRIPTOR_SCALE) ** 2).sum()) for k, p in self.prototypes.items()}
        logits = {a: -min(dist[(a, s)] for s in SPEEDS) / self.temperature for a in ACTIONS}
        top = max(logits.values())
        norm = np.log(sum(np.exp(v - top) for v in logits.values())) + top
        return {a: v - norm for a, v in logits.items()}

    def score(self, samples, prompts) -> torch.Tensor:
        out = []
        for motion, prompt in zip(samples, prompts):
            action = caption_action(prompt)
            out.append(0.5 if action is None else float(np.exp(self._log_probs(motion)[action])))
        return torch.tensor(out, dtype=torch.float32)

    def similarity(self, a, b) -> torch.Tensor:
        """exp(−‖Δ descriptor / scale‖² / 8) in [0, 1]: 1 for motions with the same statistics."""
        sims = [np.exp(-(((descriptor(x) - descriptor(y)) / DESCRIPTOR_SCALE) ** 2).sum() / 8) for x, y in zip(a, b)]
        return torch.tensor(sims, dtype=torch.float32)


def build_reward(spec, cfg, device) -> TinyActionReward:
    """genpref.build entry point for reward name "tiny-motion"."""
    return TinyActionReward()


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a tiny synthetic HumanML3D-format directory.")
    parser.add_argument("out_dir")
    parser.add_argument("--motions", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_tiny_humanml(args.out_dir, args.motions, args.seed))


if __name__ == "__main__":
    main()

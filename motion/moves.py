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

    python -m motion.moves build OUT_DIR [--seed 0] [--train-per-combo 24]
    python -m motion.moves check OUT_DIR          # verifier accuracy on the dataset's own motions
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from genpref.errors import UserError

FPS = 20
VERSION = 2  # bump when motions, captions or splits change: shipped weights are tied to it

# ---------------------------------------------------------------------------------------------- the grammar

MOVES = {  # move -> (action, direction)
    "walk_forward": ("walk", "forward"),
    "walk_backward": ("walk", "backward"),
    "turn_left": ("turn", "left"),
    "turn_right": ("turn", "right"),
    "jump": ("jump", None),
    "squat": ("squat", None),
}
SPEEDS = ("slowly", "quickly")
HANDS = ("none", "left", "right")  # the hand that waves during the move
COMBOS = tuple((m, s, h) for m in MOVES for s in SPEEDS for h in HANDS)
# one or two combinations of each move, chosen so that every pair of attribute values stays in training
HELD_OUT = (
    ("walk_forward", "quickly", "left"),
    ("walk_backward", "slowly", "right"),
    ("walk_backward", "quickly", "none"),
    ("turn_left", "quickly", "none"),
    ("turn_left", "slowly", "right"),
    ("turn_right", "slowly", "left"),
    ("jump", "quickly", "right"),
    ("jump", "slowly", "left"),
    ("squat", "slowly", "none"),
)
TRAIN_COMBOS = tuple(c for c in COMBOS if c not in HELD_OUT)

SUBJECTS = ("a person", "someone", "a man", "a woman", "the person", "a figure")
MOVE_PHRASES = {
    "walk_forward": ("walks forward", "walks ahead", "walks straight forward", "strolls forward", "steps forward", "moves forward"),
    "walk_backward": ("walks backward", "walks backwards", "steps backward", "moves backward", "walks back", "strolls backwards"),
    "turn_left": ("turns left", "turns to the left", "turns around to the left", "rotates to the left", "turns counterclockwise"),
    "turn_right": ("turns right", "turns to the right", "turns around to the right", "rotates to the right", "turns clockwise"),
    "jump": ("jumps", "jumps up and down", "jumps in place", "hops in place", "jumps up"),
    "squat": ("squats", "squats down", "squats down and stands up", "crouches down and up", "does a squat"),
}  # fmt: skip
SPEED_PHRASES = {
    "slowly": ("slowly", "at a slow pace", "gently", "slowly and carefully"),
    "quickly": ("quickly", "fast", "at a fast pace", "rapidly", "briskly"),
}
SPEED_ADVERBS = {"slowly": ("slowly", "gently"), "quickly": ("quickly", "rapidly")}  # may stand before the verb
HAND_PHRASES = ("while waving the {} hand", "and waves the {} hand", "with the {} hand waving", "while waving with the {} arm",
                "and waves hello with the {} hand")  # fmt: skip

# words that name an attribute value in a caption (parse_prompt); everything else is filler
ACTION_WORDS = {
    "walk": {"walk", "walks", "walking", "stroll", "strolls", "step", "steps", "move", "moves"},
    "turn": {"turn", "turns", "turning", "rotate", "rotates"},
    "jump": {"jump", "jumps", "jumping", "hop", "hops"},
    "squat": {"squat", "squats", "squatting", "crouch", "crouches"},
}
DIRECTION_WORDS = {
    "forward": {"forward", "forwards", "ahead"},
    "backward": {"backward", "backwards", "back"},
    "left": {"left", "counterclockwise", "anticlockwise"},
    "right": {"right", "clockwise"},
}
SPEED_WORDS = {"slowly": {"slowly", "slow", "gently"}, "quickly": {"quickly", "fast", "rapidly", "briskly"}}
WAVE_WORDS = {"wave", "waves", "waving"}
LIMB_WORDS = {"hand", "arm"}


@dataclass(frozen=True)
class Move:
    """What a prompt asks for: action, direction (None for jump and squat), speed (None if unsaid) and the
    waving hand ("none" when the prompt names no waving)."""

    action: str | None
    direction: str | None
    speed: str | None
    hand: str = "none"

    @classmethod
    def of(cls, move: str, speed: str, hand: str = "none") -> Move:
        action, direction = MOVES[move]
        return cls(action, direction, speed, hand)

    @property
    def move(self) -> str | None:
        for name, (action, direction) in MOVES.items():
            if (action, direction) == (self.action, self.direction):
                return name
        return None

    @property
    def combo(self) -> tuple[str | None, str | None, str]:
        return self.move, self.speed, self.hand


def caption(move: str, speed: str, hand: str, rng: np.random.Generator) -> str:
    """One caption with synonyms: '<subject> <move> <speed> [<hand clause>]' or '<subject> <adverb> <move> ...'."""
    subject = SUBJECTS[rng.integers(len(SUBJECTS))]
    phrase = MOVE_PHRASES[move][rng.integers(len(MOVE_PHRASES[move]))]
    if rng.random() < 0.3:
        text = f"{subject} {SPEED_ADVERBS[speed][rng.integers(len(SPEED_ADVERBS[speed]))]} {phrase}"
    else:
        text = f"{subject} {phrase} {SPEED_PHRASES[speed][rng.integers(len(SPEED_PHRASES[speed]))]}"
    if hand != "none":
        text += " " + HAND_PHRASES[rng.integers(len(HAND_PHRASES))].format(hand)
    return text


def parse_prompt(text: str) -> Move:
    """The attributes a caption names, by keyword (exact on the task's own captions): the side word just
    before 'hand'/'arm' is the waving hand, the remaining direction word the move's direction."""
    words = re.findall(r"[a-z]+", text.lower())
    hand = "none"
    if set(words) & WAVE_WORDS:
        for i, w in enumerate(words):
            if w in LIMB_WORDS and i > 0 and words[i - 1] in ("left", "right"):
                hand = words[i - 1]
                words = words[: i - 1] + words[i + 1 :]
                break
    bag = set(words)
    order = ("turn", "jump", "squat", "walk")  # "squats down and stands up": squat, not walk
    action = next((a for a in order if bag & ACTION_WORDS[a]), None)
    allowed = {"walk": ("forward", "backward"), "turn": ("left", "right")}.get(action, ())
    direction = next((d for d, ws in DIRECTION_WORDS.items() if bag & ws and d in allowed), None)
    speed = next((s for s, ws in SPEED_WORDS.items() if bag & ws), None)
    return Move(action, direction, speed, hand)


def noisy_caption(move: str, speed: str, hand: str, rng: np.random.Generator, noise: float) -> str:
    """With probability `noise`, a caption with one attribute wrong (another move, the other speed, or
    another hand); never a held-out combination, so held-out captions stay unseen."""
    if rng.random() >= noise:
        return caption(move, speed, hand, rng)
    while True:
        kind = rng.choice(["move", "speed", "hand"])
        new = [move, speed, hand]
        if kind == "move":
            new[0] = str(rng.choice([m for m in MOVES if m != move]))
        elif kind == "speed":
            new[1] = SPEEDS[1 - SPEEDS.index(speed)]
        else:
            new[2] = str(rng.choice([h for h in HANDS if h != hand]))
        if tuple(new) not in HELD_OUT:
            return caption(*new, rng)


# ---------------------------------------------------------------------------------------------- animation

# clean rates of the two speeds (jittered ±12% per motion); the verifier's thresholds sit between them
RATES = {
    "walk": (0.55, 1.4),  # root speed, m/s
    "turn": (50.0, 140.0),  # yaw rate, deg/s
    "jump": (0.6, 1.6),  # jumps per second
    "squat": (0.45, 1.3),  # squats per second
}
JITTER = 0.12
WAVE_HZ = 1.5  # forearm oscillation of a waving hand, at either speed


def _rot(axis: str, angle) -> np.ndarray:
    """Rotation matrices [..., 3, 3] about a coordinate axis (right-handed), angle [...] in radians."""
    a = np.asarray(angle, dtype=np.float64)
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    rows = {
        "x": [[o, z, z], [z, c, -s], [z, s, c]],
        "y": [[c, z, s], [z, o, z], [-s, z, c]],
        "z": [[c, -s, z], [s, c, z], [z, z, o]],
    }[axis]
    return np.stack([np.stack(r, -1) for r in rows], -2)


def pose(heading: np.ndarray, local: dict[int, np.ndarray]) -> np.ndarray:
    """Joints [T, 22, 3] of the target skeleton with its root at the origin, turned by `heading` [T]
    about +Y (0 = facing +Z) and posed by local rotations {joint: [T, 3, 3]}; the rotation of joint j
    turns the bones below j. The rest pose stands with the arms hanging."""
    from motion.skeleton import T2M_PARENTS, T2M_TARGET_OFFSETS

    frames = len(heading)
    eye = np.broadcast_to(np.eye(3), (frames, 3, 3))
    pos = np.zeros((frames, 22, 3))
    frame = [None] * 22
    frame[0] = _rot("y", heading) @ local.get(0, eye)
    for j in range(1, 22):
        p = T2M_PARENTS[j]
        pos[:, j] = pos[:, p] + frame[p] @ T2M_TARGET_OFFSETS[j]
        frame[j] = frame[p] @ local.get(j, eye)
    return pos


def _legs(local: dict, thigh_l, thigh_r, knee_l, knee_r) -> None:
    """Thigh angles > 0 swing the leg forward; knee angles > 0 bend the shin back."""
    local[1], local[2] = _rot("x", -np.asarray(thigh_l)), _rot("x", -np.asarray(thigh_r))
    local[4], local[5] = _rot("x", knee_l), _rot("x", knee_r)


def _arms_swing(local: dict, swing) -> None:
    """Arms swing forward/back against the legs (left arm forward when swing > 0)."""
    local[16], local[17] = _rot("x", -np.asarray(swing)), _rot("x", np.asarray(swing))


def _wave(local: dict, hand: str, t: np.ndarray, rng: np.random.Generator) -> None:
    """Raise one arm up and out to the side and swing its forearm from side to side."""
    shoulder = 16 if hand == "left" else 17  # its elbow is shoulder + 2
    out = 1.0 if hand == "left" else -1.0  # +X is the body's left
    local[shoulder] = _rot("z", np.full(len(t), out * rng.uniform(2.3, 2.6)))
    local[shoulder + 2] = _rot("z", out * 0.5 * np.sin(2 * np.pi * WAVE_HZ * t + rng.uniform(0, 2 * np.pi)))


def animate(move: str, speed: str, hand: str, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Joint positions [frames, 22, 3] (metres, Y up, 20 fps) of one move at one speed, waving `hand`."""
    action, direction = MOVES[move]
    rate = RATES[action][SPEEDS.index(speed)] * rng.uniform(1 - JITTER, 1 + JITTER)
    t = np.arange(frames) / FPS
    heading = np.full(frames, rng.uniform(-np.pi, np.pi))
    local: dict[int, np.ndarray] = {}
    travel = np.zeros((frames, 2))  # root (x, z)
    lift = np.zeros(frames)  # root height above the grounded pose
    if action == "walk":
        sign = 1.0 if direction == "forward" else -1.0
        cadence = 0.6 + 0.5 * rate  # gait cycles per second
        phase = 2 * np.pi * cadence * t + rng.uniform(0, 2 * np.pi)
        amp = 0.3 + 0.15 * rate
        _legs(local, amp * np.sin(phase), -amp * np.sin(phase),
              0.7 * np.maximum(0, np.sin(phase + 2.0)), 0.7 * np.maximum(0, np.sin(phase + 2.0 + np.pi)))  # fmt: skip
        _arms_swing(local, -0.8 * amp * np.sin(phase))
        step = sign * rate / FPS
        travel = np.cumsum(step * np.stack([np.sin(heading), np.cos(heading)], -1), 0)
    elif action == "turn":
        sign = 1.0 if direction == "left" else -1.0  # left = counterclockwise seen from above
        heading = heading + sign * np.radians(rate) * t
        phase = 2 * np.pi * (0.8 + rate / 150.0) * t + rng.uniform(0, 2 * np.pi)
        up_l, up_r = np.maximum(0, np.sin(phase)), np.maximum(0, -np.sin(phase))
        _legs(local, 0.4 * up_l, 0.4 * up_r, 0.8 * up_l, 0.8 * up_r)
    elif action == "jump":
        phase = (rate * t + rng.uniform(0.0, 0.1)) % 1.0  # 0..0.3 crouch and push, 0.3..1 flight
        ground = phase < 0.3
        crouch = np.where(ground, np.sin(np.pi * phase / 0.3), 0.0)
        flight = np.where(ground, 0.0, (phase - 0.3) / 0.7)
        lift = rng.uniform(0.22, 0.3) * 4 * flight * (1 - flight)
        _legs(local, 0.5 * crouch + 0.1, 0.5 * crouch + 0.1, 1.0 * crouch + 0.2, 1.0 * crouch + 0.2)
        local[16], local[17] = _rot("z", np.full(frames, 0.2)), _rot("z", np.full(frames, -0.2))
    elif action == "squat":
        depth = rng.uniform(0.95, 1.05) * 0.5 * (1 - np.cos(2 * np.pi * rate * t))  # 0 standing .. 1 deep
        _legs(local, 1.1 * depth, 1.1 * depth, 2.1 * depth, 2.1 * depth)
        local[3] = _rot("x", 0.45 * depth)  # lean forward
        local[16], local[17] = _rot("x", -1.0 * depth), _rot("x", -1.0 * depth)  # both arms forward for balance
    if hand != "none":
        _wave(local, hand, t, rng)
    joints = pose(heading, local)
    feet = joints[:, [7, 8, 10, 11], 1].min(1)
    joints[..., 1] += (lift - feet)[:, None]  # lowest foot joint on the floor, plus the jump's flight
    joints[..., 0] += travel[:, :1]
    joints[..., 2] += travel[:, 1:]
    return joints + rng.normal(0.0, 0.001, joints.shape)


def render(move: str, speed: str, hand: str, frames: int, rng: np.random.Generator) -> np.ndarray:
    """One motion as HumanML3D features [frames, 263] (the extractor eats one extra joint frame)."""
    from motion.skeleton import extract_features

    return extract_features(animate(move, speed, hand, frames + 1, rng), fix_heading_wrap=True)  # as shipped


# ---------------------------------------------------------------------------------------------- the verifier

L_SHOULDER, R_SHOULDER, L_WRIST, R_WRIST, NECK = 16, 17, 20, 21, 12
FOOT_JOINTS = (7, 8, 10, 11)
HAND_UP = 0.10  # a wrist this far above its shoulder counts as raised (m)
MIN_TURN = 30.0  # deg/s of yaw that make a motion a turn
MIN_TRAVEL = 0.25  # m/s of root travel that make a motion a walk
AIRBORNE = 0.06  # all foot joints this far above the clip's floor = in the air (m)
MIN_AIRBORNE = 0.15  # fraction of airborne frames that make a motion a jump
MIN_DROP = 0.15  # root height range of a squat (m); clean squats reach 0.24-0.36, walks 0.08-0.13
MIN_RAISED = 0.5  # fraction of frames with a raised wrist that make a hand a waving one
SPEED_THRESHOLDS = {  # geometric means of the two speeds' median rates on clean motions (after smoothing)
    "walk": 0.86,  # net root speed, m/s (clean medians 0.52 and 1.40)
    "turn": 83.0,  # |yaw rate|, deg/s (49 and 141)
    "jump": 0.95,  # peak |vertical root speed|, m/s (0.62 and 1.45)
    "squat": 0.93,  # peak |vertical root speed|, m/s (0.60 and 1.44)
}


@dataclass
class Measurements:
    """What the verifier reads off one motion's joints."""

    raised_left: float  # fraction of frames with the left wrist above the left shoulder + HAND_UP
    raised_right: float
    yaw_rate: float  # deg/s, > 0 counterclockwise seen from above (a left turn)
    travel: float  # net horizontal root displacement per second, m/s
    forward: float  # mean root velocity along the facing direction, m/s (< 0 backwards)
    airborne: float  # fraction of frames with every foot joint above the floor + AIRBORNE
    drop: float  # root height range, m
    vertical_speed: float  # 90th percentile of |vertical root velocity|, m/s (peak speed, whatever the phase)


def joints_of(motion) -> np.ndarray:
    """Joints [T, 22, 3] from de-normalised features [T, 263] (via recover_from_ric) or joints as given."""
    from motion.skeleton import recover_from_ric

    arr = np.asarray(motion, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[1:] == (22, 3):
        return arr
    if arr.ndim != 2 or arr.shape[1] != 263:
        raise UserError(f"the moves verifier needs features [T, 263] or joints [T, 22, 3], got shape {arr.shape}")
    return recover_from_ric(arr.astype(np.float32)).astype(np.float64)


SMOOTH_FRAMES = 1.0  # Gaussian σ (frames) applied to joint paths first: frame-to-frame jitter is not speed
USED_JOINTS = [0, 1, 2, 7, 8, 10, 11, NECK, L_SHOULDER, R_SHOULDER, L_WRIST, R_WRIST]  # all `measure` reads


def measure(motion) -> Measurements:
    from scipy.ndimage import gaussian_filter1d

    from motion.skeleton import facing_directions

    j = joints_of(motion)
    if len(j) < 4 or not np.isfinite(j).all():
        return Measurements(0, 0, 0, 0, 0, 0, 0, 0)
    j = j.copy()
    j[:, USED_JOINTS] = gaussian_filter1d(j[:, USED_JOINTS], SMOOTH_FRAMES, axis=0, mode="nearest")
    seconds = (len(j) - 1) / FPS
    raised = [float((j[:, w, 1] > j[:, s, 1] + HAND_UP).mean()) for w, s in ((L_WRIST, L_SHOULDER), (R_WRIST, R_SHOULDER))]
    facing = facing_directions(j)  # [T, 3] unit, on XZ
    yaw = np.unwrap(np.arctan2(facing[:, 0], facing[:, 2]))
    root = j[:, 0]
    step = np.diff(root, axis=0) * FPS  # [T-1, 3] m/s
    forward = (step[:, [0, 2]] * facing[:-1][:, [0, 2]]).sum(-1)
    feet = j[:, FOOT_JOINTS, 1].min(1)
    return Measurements(
        raised_left=raised[0],
        raised_right=raised[1],
        yaw_rate=float(np.degrees(yaw[-1] - yaw[0]) / seconds),
        travel=float(np.linalg.norm(root[-1, [0, 2]] - root[0, [0, 2]]) / seconds),
        forward=float(forward.mean()),
        airborne=float((feet > feet.min() + AIRBORNE).mean()),
        drop=float(np.ptp(root[:, 1])),
        vertical_speed=float(np.quantile(np.abs(step[:, 1]), 0.9)),
    )


def classify_action(m: Measurements) -> str:
    """Decision list: turn, jump, walk, squat, else 'stand'."""
    if abs(m.yaw_rate) > MIN_TURN:
        return "turn"
    if m.airborne > MIN_AIRBORNE:
        return "jump"
    if m.travel > MIN_TRAVEL:
        return "walk"
    if m.drop > MIN_DROP:
        return "squat"
    return "stand"


def hand_of(m: Measurements) -> str:
    """The waving hand: the one raised most often, if raised in more than MIN_RAISED of the frames."""
    if max(m.raised_left, m.raised_right) <= MIN_RAISED:
        return "none"
    return "left" if m.raised_left > m.raised_right else "right"


def direction_of(action: str, m: Measurements) -> str | None:
    """The direction the motion shows for the requested action."""
    if action == "walk":
        return "forward" if m.forward > 0 else "backward"
    if action == "turn":
        return "left" if m.yaw_rate > 0 else "right"
    return None


def rate_of(action: str, m: Measurements) -> float:
    return {"walk": m.travel, "turn": abs(m.yaw_rate), "jump": m.vertical_speed, "squat": m.vertical_speed}[action]


def speed_of(action: str, m: Measurements) -> str:
    return "quickly" if rate_of(action, m) > SPEED_THRESHOLDS[action] else "slowly"


ATTRIBUTES = ("action", "direction", "speed", "hand")


@dataclass
class Verdict:
    """Per-attribute correctness of one motion for one prompt; `correct` = all four."""

    action: bool
    direction: bool
    speed: bool
    hand: bool
    detected: str  # the action the motion shows

    @property
    def correct(self) -> bool:
        return self.action and self.direction and self.speed and self.hand

    @property
    def score(self) -> float:
        """Fraction of the four attributes right (in [0, 1])."""
        return (self.action + self.direction + self.speed + self.hand) / 4.0


def judge(m: Measurements, want: Move) -> Verdict:
    """The verdict of measurements against the attributes a prompt asks for (see `verify`)."""
    detected = classify_action(m)
    hand_ok = hand_of(m) == want.hand
    if want.action is None:
        return Verdict(True, True, want.speed is None, hand_ok, detected)
    direction_ok = want.direction is None or direction_of(want.action, m) == want.direction
    speed_ok = want.speed is None or speed_of(want.action, m) == want.speed
    return Verdict(detected == want.action, direction_ok, speed_ok, hand_ok, detected)


def verify(motion, want: Move | str) -> Verdict:
    """Score a motion (features [T, 263] or joints [T, 22, 3]) against a prompt or a Move.

    Direction and speed are judged on the quantity of the REQUESTED action (a motion that stands still
    for "walk forward quickly" is slow whatever it does); a direction or speed the prompt does not name
    counts as right; a prompt that names no waving asks for no raised hand."""
    return judge(measure(motion), parse_prompt(want) if isinstance(want, str) else want)


def shared_readings(ma: Measurements, mb: Measurements) -> float:
    """The fraction of verifier readings (action, direction and speed of the first motion's action,
    waving hand) two motions share, in [0, 1]."""
    action = classify_action(ma)
    same_hand = hand_of(ma) == hand_of(mb)
    if action == "stand":
        return (float(classify_action(mb) == "stand") + same_hand) / 2
    same = [action == classify_action(mb), direction_of(action, ma) == direction_of(action, mb),
            speed_of(action, ma) == speed_of(action, mb), same_hand]  # fmt: skip
    return float(np.mean(same))


def similarity(a, b) -> float:
    """Motion–motion similarity in [0, 1] (`shared_readings` of their measurements)."""
    return shared_readings(measure(a), measure(b))


# ---------------------------------------------------------------------------------------------- the dataset


@dataclass
class BuildSettings:
    seed: int = 0
    train_per_combo: int = 24  # motions of each of the 27 training combinations
    val_per_combo: int = 4  # fresh motions of the training combinations
    test_heldout_per_combo: int = 20  # motions of each of the 9 held-out combinations (test only)
    test_seen_per_combo: int = 6  # fresh motions of the training combinations in the test split
    captions_per_motion: int = 3
    frames: tuple[int, int] = (40, 52)  # feature rows per motion (2.0-2.6 s)
    noise: float = 0.35  # probability that a caption of the noisy copy names one attribute wrong


def _tokens_line(text: str, start: float = 0.0, end: float = 0.0) -> str:
    from motion.glove import tag_free_text

    return f"{text}#{' '.join(tag_free_text(text))}#{start}#{end}"


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def build(out_dir: str | Path, settings: BuildSettings | None = None, progress: bool = False) -> Path:
    """Write the moves dataset: `out_dir` (clean captions; train / val / test / test_heldout / test_seen
    splits), `out_dir/noisy` (the training motions with noisy captions, for base pretraining),
    `out_dir/glove` (word vectors for the T2M evaluator) and `out_dir/moves.json` (labels, settings).
    Deterministic given the settings; rebuilding an existing directory with the same settings is a no-op."""
    settings = settings or BuildSettings()
    out = Path(out_dir)
    meta_path = out / "moves.json"
    wanted = {"version": VERSION, "settings": asdict(settings)}
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if {k: meta.get(k) for k in wanted} == json.loads(json.dumps(wanted)):
            return out
        raise UserError(f"{out} holds a moves dataset built with other settings; choose another directory or delete it")
    rng = np.random.default_rng([settings.seed, 20])
    plan = []  # (split, combo)
    for combo in COMBOS:
        counts = {"test": settings.test_heldout_per_combo} if combo in HELD_OUT else {
            "train": settings.train_per_combo, "val": settings.val_per_combo, "test": settings.test_seen_per_combo}  # fmt: skip
        plan += [(split, combo) for split, n in counts.items() for _ in range(n)]
    for sub in ("new_joint_vecs", "texts", "noisy/new_joint_vecs", "noisy/texts"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": [], "test_heldout": [], "test_seen": []}
    labels, train_motions = {}, []
    from tqdm.auto import tqdm

    for i, (split, combo) in enumerate(tqdm(plan, desc="moves data", disable=not progress, leave=False)):
        name = f"{i:06d}"
        frames = int(rng.integers(settings.frames[0], settings.frames[1] + 1))
        motion = render(*combo, frames, rng)
        np.save(out / "new_joint_vecs" / f"{name}.npy", motion)
        lines = [_tokens_line(caption(*combo, rng)) for _ in range(settings.captions_per_motion)]
        (out / "texts" / f"{name}.txt").write_text("\n".join(lines) + "\n")
        splits[split].append(name)
        if split == "test":
            splits["test_heldout" if combo in HELD_OUT else "test_seen"].append(name)
        if split == "train":
            train_motions.append(motion)
            _link_or_copy(out / "new_joint_vecs" / f"{name}.npy", out / "noisy" / "new_joint_vecs" / f"{name}.npy")
            noisy = [_tokens_line(noisy_caption(*combo, rng, settings.noise)) for _ in range(settings.captions_per_motion)]
            (out / "noisy" / "texts" / f"{name}.txt").write_text("\n".join(noisy) + "\n")
        labels[name] = {"move": combo[0], "speed": combo[1], "hand": combo[2], "split": split}
    stacked = np.concatenate(train_motions)
    mean, std = stacked.mean(0).astype(np.float32), np.maximum(stacked.std(0), 1e-2).astype(np.float32)
    for root in (out, out / "noisy"):
        np.save(root / "Mean.npy", mean)
        np.save(root / "Std.npy", std)
    for split, names in splits.items():
        (out / f"{split}.txt").write_text("\n".join(names) + "\n")
    (out / "noisy" / "train.txt").write_text("\n".join(splits["train"]) + "\n")
    write_word_vectors(out / "glove", vocabulary(out))
    write_text_encoder(out / "text_encoder", out / "glove")
    meta = {**wanted, "held_out": [list(c) for c in HELD_OUT], "labels": labels}
    meta_path.write_text(json.dumps(meta, indent=1))
    return out


def prompts_for(combos, per_combo: int, rng: np.random.Generator) -> list[tuple[str, Move]]:
    """Fresh captions (synonyms drawn from rng), per_combo for each combination, with their Moves."""
    return [(caption(*c, rng), Move.of(*c)) for c in combos for _ in range(per_combo)]


def write_feedback(directory: str | Path, motions, prompts) -> dict[str, Path]:
    """Verifier feedback on model samples (e.g. several base samples per training prompt), in the motion
    adapter's jsonl formats: `pairs.jsonl` {"prompt", "w", "l", "label": 1} with the best and worst sample
    of each prompt (prompts whose samples all score alike give no pair) and `ratings.jsonl`
    {"prompt", "x", "rating"} with rating 1 when every attribute is right, else 0. Motions are written as
    .npy files beside them."""
    directory = Path(directory)
    (directory / "motions").mkdir(parents=True, exist_ok=True)
    names, by_prompt, ratings = [], {}, []
    for i, (motion, prompt) in enumerate(zip(motions, prompts)):
        name = f"motions/{i:05d}.npy"
        np.save(directory / name, np.asarray(motion, dtype=np.float32))
        verdict = verify(motion, prompt)
        names.append(name)
        by_prompt.setdefault(prompt, []).append((verdict.score, i))
        ratings.append(json.dumps({"prompt": prompt, "x": name, "rating": float(verdict.correct)}))
    pairs = []
    for prompt, scored in by_prompt.items():
        (best, w), (worst, l) = max(scored), min(scored)
        if best > worst:
            pairs.append(json.dumps({"prompt": prompt, "w": names[w], "l": names[l], "label": 1.0}))
    if not pairs:
        raise UserError(f"moves: no verifier-ranked pairs in {len(names)} samples (every prompt's samples scored alike)")
    (directory / "pairs.jsonl").write_text("\n".join(pairs) + "\n")
    (directory / "ratings.jsonl").write_text("\n".join(ratings) + "\n")
    return {"pairs": directory / "pairs.jsonl", "ratings": directory / "ratings.jsonl"}


# ---------------------------------------------------------------------------------------------- word vectors

# words sharing a meaning share most of their vector, as GloVe places synonyms close together
MEANINGS = (
    ("walk", "stroll", "step", "move"),
    ("forward", "ahead", "forwards", "straight"),
    ("backward", "backwards", "back"),
    ("turn", "rotate", "around"),
    ("left", "counterclockwise", "anticlockwise"),
    ("right", "clockwise"),
    ("wave", "hello", "raise"),
    ("hand", "arm"),
    ("jump", "hop"),
    ("squat", "crouch"),
    ("slowly", "slow", "gently", "carefully"),
    ("quickly", "fast", "rapidly", "briskly"),
    ("person", "someone", "man", "woman", "figure"),
)


def vocabulary(root: Path) -> list[str]:
    """Every token word of the clean and noisy captions, plus the evaluator's framing words."""
    words = {"sos", "eos", "unk"}
    for texts in (root / "texts", root / "noisy" / "texts"):
        for path in texts.glob("*.txt"):
            for line in path.read_text().splitlines():
                words |= {tok.rpartition("/")[0] for tok in line.split("#")[1].split()}
    return sorted(words)


def write_word_vectors(glove_dir: Path, words: list[str], dim: int = 300, seed: int = 7) -> Path:
    """GloVe-format files for the T2M evaluator: our_vab_data.npy [V, dim], our_vab_words.pkl (list),
    our_vab_idx.pkl (word -> row). A word's vector is 0.8·(its meaning's random direction) + 0.6·(its
    own), so synonyms have cosine ~0.64 and unrelated words ~0 — the structure GloVe would give."""
    glove_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    unit = lambda: (lambda v: v / np.linalg.norm(v))(rng.normal(size=dim))  # noqa: E731
    meaning = {}
    for group in MEANINGS:
        direction = unit()
        meaning.update({w: direction for w in group})
    vectors = np.stack([3.0 * (0.8 * meaning[w] + 0.6 * unit()) if w in meaning else 3.0 * unit() for w in words])
    np.save(glove_dir / "our_vab_data.npy", vectors.astype(np.float32))
    (glove_dir / "our_vab_words.pkl").write_bytes(pickle.dumps(list(words), protocol=2))
    (glove_dir / "our_vab_idx.pkl").write_bytes(pickle.dumps({w: i for i, w in enumerate(words)}, protocol=2))
    return glove_dir


def _lemma_of(word: str) -> str:
    from motion.glove import tag_free_text

    tokens = tag_free_text(word)
    return tokens[0].rpartition("/")[0] if tokens else word


TEXT_SPECIAL = ("<pad>", "<|startoftext|>", "<unk>", "<|endoftext|>")  # ids 0..3 (eos != 2: pooled at the first eos)


SIDED_LIMBS = tuple(f"{side} {limb}" for side in ("left", "right") for limb in ("hand", "arm"))  # one token each


def write_text_encoder(out_dir: Path, glove_dir: Path, max_length: int = 77) -> Path:
    """A bag-of-words sentence encoder in CLIP's format (`CLIPTextModelWithProjection` + a word-level
    tokenizer), loadable by `motion.text.load_clip` as `model.text_encoder`.

    Weights are set, not trained: token embeddings are the task's word vectors (of each word's lemma),
    the one attention layer attends uniformly (zero queries), values and output are the identity, the MLP
    and position embeddings are zero. The pooled end-of-text state is then the layer-normalised mean of
    the normalised word vectors: a compositional sentence feature, as a pretrained CLIP would give, where
    a random tiny CLIP mixes words so that unseen attribute combinations land far from their parts.
    "left hand", "right hand", "left arm" and "right arm" are single tokens (vector = side + limb + its
    own part), so "turns left while waving the right hand" and "turns right while waving the left hand"
    differ although a bag of single words could not tell them apart."""
    import torch
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, PreTrainedTokenizerFast

    from motion.glove import WordVectorizer

    glove = WordVectorizer.load(glove_dir)
    words = sorted({w for group in MOVE_PHRASES.values() for p in group for w in p.split()}
                   | {w for group in SPEED_PHRASES.values() for p in group for w in p.split()}
                   | {w for p in HAND_PHRASES for w in p.replace("{}", "").split()}
                   | {w for s in SUBJECTS for w in s.split()} | set(glove.word_to_index) - {"sos", "eos", "unk"})  # fmt: skip
    merged = [pair.replace(" ", "_") for pair in SIDED_LIMBS]
    vocab = {tok: i for i, tok in enumerate(TEXT_SPECIAL)}
    vocab.update({w: len(TEXT_SPECIAL) + i for i, w in enumerate(words + merged)})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Lowercase()] + [normalizers.Replace(Regex(rf"\b{p}\b"), p.replace(" ", "_")) for p in SIDED_LIMBS]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 1), ("<|endoftext|>", 3)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<pad>", unk_token="<unk>", model_max_length=max_length)  # fmt: skip
    dim = glove.dim
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=dim, intermediate_size=4, num_hidden_layers=1,
                            num_attention_heads=1, max_position_embeddings=max_length, projection_dim=dim,
                            pad_token_id=0, bos_token_id=1, eos_token_id=3)  # fmt: skip
    model = CLIPTextModelWithProjection(config)
    vector = lambda w: torch.from_numpy(glove[w + "/OTHER"][0])  # noqa: E731
    own = np.random.default_rng(11)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        emb = model.text_model.embeddings.token_embedding.weight
        for w, i in vocab.items():
            lemma = _lemma_of(w) if w not in TEXT_SPECIAL and w not in merged else None
            if lemma in glove and lemma != "unk":
                emb[i] = vector(lemma)
        for w in merged:
            side, limb = w.split("_")
            extra = torch.from_numpy(own.normal(size=dim) * 3.0 / np.sqrt(dim)).float()
            emb[vocab[w]] = 0.6 * vector(side) + 0.6 * vector(limb) + 0.5 * extra
        layer = model.text_model.encoder.layers[0]
        layer.self_attn.v_proj.weight.copy_(torch.eye(dim))
        layer.self_attn.out_proj.weight.copy_(torch.eye(dim))
        for norm in (layer.layer_norm1, layer.layer_norm2, model.text_model.final_layer_norm):
            norm.weight.fill_(1.0)
        model.text_projection.weight.copy_(torch.eye(dim))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    fast.save_pretrained(out_dir)
    return out_dir


# ---------------------------------------------------------------------------------------------- command line


def check(root: str | Path) -> dict:
    """Verifier accuracy of every split's own motions against their captions (should be 1.0 everywhere)."""
    root = Path(root)
    out = {}
    for split in ("train", "val", "test"):
        names = (root / f"{split}.txt").read_text().split()
        right = total = 0
        for name in names:
            motion = np.load(root / "new_joint_vecs" / f"{name}.npy")
            for line in (root / "texts" / f"{name}.txt").read_text().splitlines():
                right += verify(motion, line.split("#")[0]).correct
                total += 1
        out[split] = right / max(total, 1)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m motion.moves", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="write the moves dataset (HumanML3D format)")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-per-combo", type=int, default=BuildSettings.train_per_combo)
    p = sub.add_parser("check", help="verifier accuracy on a built dataset's own motions")
    p.add_argument("root")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build(args.out_dir, BuildSettings(seed=args.seed, train_per_combo=args.train_per_combo), progress=True))
    else:
        print(json.dumps(check(args.root)))


if __name__ == "__main__":
    main()

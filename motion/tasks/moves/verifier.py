"""The moves task's verifier: measurements read off a motion's joints (`measure`), the attributes they
give (`judge`, `verify`) and how alike two motions read (`shared_readings`, `similarity`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genpref.errors import UserError
from genpref.rewards import near_miss
from motion.tasks.moves.grammar import FPS, Move, parse_prompt

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


SPEED_WIDTH = 1.0  # a wrong speed whose rate lies this far from the threshold (|ln(rate / threshold)|) earns no credit
DIRECTION_WIDTHS = {"walk": 0.5, "turn": 60.0}  # m/s of forward velocity, deg/s of yaw, past zero the wrong way
HAND_WIDTH = 0.5  # fraction of frames a wrong hand reading lies from the right one


def hand_miss(m: Measurements, want: str) -> float:
    """How far (fraction of frames) the raised-wrist readings lie from reading as the wanted hand."""
    if want == "none":
        return max(m.raised_left, m.raised_right) - MIN_RAISED
    mine, other = (m.raised_left, m.raised_right) if want == "left" else (m.raised_right, m.raised_left)
    return max(MIN_RAISED - mine, other - mine, 0.0)


def graded_score(m: Measurements, want: Move) -> float:
    """`judge(m, want).score` with partial credit for near misses of the thresholded attributes: a wrong
    speed earns `near_miss` of its rate's log-distance to the threshold, a wrong direction that of its
    velocity past zero, a wrong hand that of its raised-frame fractions. A wrong action earns none.
    Where every sample of a prompt fails the same way the exact score is flat, and a group-relative
    recipe learns nothing from it; this one still ranks the samples by how near they come."""
    v = judge(m, want)
    direction = speed = 0.0
    if want.action in DIRECTION_WIDTHS:
        velocity = m.forward if want.action == "walk" else m.yaw_rate
        direction = near_miss(abs(velocity), DIRECTION_WIDTHS[want.action])
    if want.action is not None:
        speed = near_miss(abs(np.log(max(rate_of(want.action, m), 1e-9) / SPEED_THRESHOLDS[want.action])), SPEED_WIDTH)
    credits = [float(v.action), 1.0 if v.direction else direction, 1.0 if v.speed else speed,
               1.0 if v.hand else near_miss(hand_miss(m, want.hand), HAND_WIDTH)]
    return sum(credits) / len(credits)


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



"""The moves task's motions: joint positions by forward kinematics of the HumanML3D target skeleton
(`animate`) and their 263-d features (`render`)."""

from __future__ import annotations

import numpy as np

from motion.tasks.moves.grammar import FPS, MOVES, SPEEDS

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



"""The HumanML3D 22-joint skeleton: joints -> 263-d features (`extract_features`) and back (`recover_from_ric`).

Conventions follow EricGuo5513/HumanML3D (`motion_representation.ipynb`, `common/skeleton.py`,
`common/quaternion.py`, `paramUtil.py`): SMPL joint order, Y up, metres, 20 fps, quaternions as
(w, x, y, z). A canonical motion starts with its root above the XZ origin, facing +Z, feet on the floor
(y = 0); the body's left is +X.

Feature layout per frame (263 = 1 + 2 + 1 + 63 + 126 + 66 + 4), see `FEATURE_SLICES`:
  [0]        root angular velocity about Y (the half-angle increment of the root quaternion, as published)
  [1:3]      root linear velocity on XZ, in the root's own heading frame
  [3]        root height
  [4:67]     joints 1..21 relative to the root on XZ, rotated into the root heading ("ric" positions)
  [67:193]   joints 1..21 local rotations as 6D (first two columns of the rotation matrix), from IK
  [193:259]  velocities of all 22 joints, rotated into the heading of the earlier frame
  [259:263]  foot contacts: left ankle, left toe, right ankle, right toe (1 = still)
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from genpref.errors import UserError

JOINTS_NUM = 22
JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
)  # fmt: skip

# paramUtil.py: the direction each bone has in the rest pose (IK measures rotations from these).
T2M_RAW_OFFSETS = np.array(
    [[0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, -1, 0], [0, 1, 0], [0, -1, 0], [0, -1, 0],
     [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 1], [0, -1, 0], [0, -1, 0],
     [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0]],
    dtype=np.float64,
)  # fmt: skip
T2M_KINEMATIC_CHAIN = [[0, 2, 5, 8, 11], [0, 1, 4, 7, 10], [0, 3, 6, 9, 12, 15], [9, 14, 17, 19, 21], [9, 13, 16, 18, 20]]
T2M_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)

# Bone lengths (metres, bone i = parent(i) -> i) of HumanML3D's target skeleton (subject 000021), which
# every motion is rescaled to; read off the released new_joints/012314.npy (constant to 2e-6 over frames).
T2M_TARGET_BONE_LENGTHS = np.array(
    [0.0, 0.103074, 0.1098834, 0.1315682, 0.3936232, 0.3901882, 0.1431902, 0.432433, 0.4256434, 0.0573647,
     0.1433818, 0.1494191, 0.21936, 0.1374868, 0.1433828, 0.1030392, 0.131614, 0.1229844, 0.2568399,
     0.2630919, 0.2660118, 0.2698763]
)  # fmt: skip
T2M_TARGET_OFFSETS = T2M_RAW_OFFSETS * T2M_TARGET_BONE_LENGTHS[:, None]

FACE_JOINT_INDX = (2, 1, 17, 16)  # right hip, left hip, right shoulder, left shoulder
FOOT_LEFT = (7, 10)  # left ankle, left foot
FOOT_RIGHT = (8, 11)
LEG_BONES = (5, 8)  # right knee and ankle bones: their summed length sets the rescale ratio
FEET_THRESHOLD = 0.002  # squared displacement per frame (m²) under which a foot joint counts as in contact

FEATURE_SLICES = {
    "root_rot_velocity": slice(0, 1),
    "root_linear_velocity": slice(1, 3),
    "root_y": slice(3, 4),
    "ric_positions": slice(4, 4 + 21 * 3),
    "rot_6d": slice(67, 67 + 21 * 6),
    "local_velocity": slice(193, 193 + 22 * 3),
    "foot_contact": slice(259, 263),
}
FEATURE_DIM = 263

# The first bone of every chain: IK measures its rotation from the root's heading, not from its parent.
_CHAIN_STARTS = {chain[1] for chain in T2M_KINEMATIC_CHAIN}


# ---- quaternions (w, x, y, z), numpy, broadcasting over leading dims --------------------------------------


def qmul(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Hamilton product q·r."""
    w1, x1, y1, z1 = np.moveaxis(q, -1, 0)
    w2, x2, y2, z2 = np.moveaxis(r, -1, 0)
    return np.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        axis=-1,
    )


def qinv(q: np.ndarray) -> np.ndarray:
    """Inverse of a unit quaternion (its conjugate)."""
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def qrot(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors v [..., 3] by unit quaternions q [..., 4]."""
    q_vec = q[..., 1:]
    uv = np.cross(q_vec, v)
    return v + 2.0 * (q[..., :1] * uv + np.cross(q_vec, uv))


def qbetween(v0: np.ndarray, v1: np.ndarray) -> np.ndarray:
    """Shortest-arc unit quaternion turning direction v0 onto v1 (w ≥ 0, as the reference builds it).

    The reference divides 0 by 0 for opposite directions; here those get a half turn about an axis
    perpendicular to v0."""
    v0, v1 = np.broadcast_arrays(v0, v1)
    axis = np.cross(v0, v1)
    w = np.sqrt((v0**2).sum(-1) * (v1**2).sum(-1)) + (v0 * v1).sum(-1)
    q = np.concatenate([w[..., None], axis], axis=-1)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    opposite = norm[..., 0] < 1e-12 * np.maximum((v0**2).sum(-1), 1e-300) ** 0.5
    if opposite.any():
        helper = np.where(np.abs(v0[..., :1]) < 0.9, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
        perp = np.cross(v0, helper)
        perp = perp / np.linalg.norm(perp, axis=-1, keepdims=True)
        q = np.where(opposite[..., None], np.concatenate([np.zeros_like(w)[..., None], perp], -1), q)
        norm = np.where(opposite[..., None], 1.0, norm)
    return q / norm


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternions [..., 4] -> rotation matrices [..., 3, 3]."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def quaternion_to_cont6d(q: np.ndarray) -> np.ndarray:
    """Continuous 6D rotation: the first two columns of the rotation matrix, concatenated -> [..., 6]."""
    m = quaternion_to_matrix(q)
    return np.concatenate([m[..., :, 0], m[..., :, 1]], axis=-1)


def cont6d_to_matrix(c: torch.Tensor) -> torch.Tensor:
    """6D rotations [..., 6] -> rotation matrices [..., 3, 3] by Gram–Schmidt (columns x, y, z)."""
    x = torch.nn.functional.normalize(c[..., 0:3], dim=-1)
    z = torch.nn.functional.normalize(torch.cross(x, c[..., 3:6], dim=-1), dim=-1)
    y = torch.cross(z, x, dim=-1)
    return torch.stack([x, y, z], dim=-1)


# ---- skeleton steps ----------------------------------------------------------------------------------------


def facing_directions(
    joints: np.ndarray, face_joint_indx=FACE_JOINT_INDX, hips_reversed: bool = False, smooth_sigma: float = 0.0
) -> np.ndarray:
    """Unit forward directions [T, 3] on the XZ plane from hips and shoulders.

    forward = Y × unit(across), optionally Gaussian-smoothed over time BEFORE it is normalised (so frames
    whose across vector leans out of the horizontal weigh less, as in the reference). `process_file` uses
    across = (r_hip − l_hip) + (r_shoulder − l_shoulder). The reference IK (`inverse_kinematics_np`)
    unpacks the same indices as (l_hip, r_hip, ...) and so uses (l_hip − r_hip) + (r_shoulder − l_shoulder):
    `hips_reversed=True` reproduces that, which every released feature file carries in its root rotation."""
    r_hip, l_hip, r_sdr, l_sdr = face_joint_indx
    hips = joints[:, r_hip] - joints[:, l_hip]
    across = (-hips if hips_reversed else hips) + joints[:, r_sdr] - joints[:, l_sdr]
    across = across / np.linalg.norm(across, axis=-1, keepdims=True)
    forward = np.cross(np.array([0.0, 1.0, 0.0]), across)
    if smooth_sigma:
        forward = gaussian_filter1d(forward, smooth_sigma, axis=0, mode="nearest")
    return forward / np.linalg.norm(forward, axis=-1, keepdims=True)


def uniform_skeleton(joints: np.ndarray, target_bone_lengths: np.ndarray = T2M_TARGET_BONE_LENGTHS) -> np.ndarray:
    """Rescale a motion [T, 22, 3] to the target skeleton: root path scaled by the ratio of right-leg lengths
    (knee + ankle bones, measured on frame 0), every bone re-laid along its own direction with the target
    length. This equals the reference's IK -> FK round trip on the target offsets, written directly."""
    lengths = np.linalg.norm(joints[0, 1:] - joints[0, list(T2M_PARENTS[1:])], axis=-1)
    src_leg = lengths[LEG_BONES[0] - 1] + lengths[LEG_BONES[1] - 1]
    scale = (target_bone_lengths[LEG_BONES[0]] + target_bone_lengths[LEG_BONES[1]]) / src_leg
    out = np.empty_like(joints)
    out[:, 0] = joints[:, 0] * scale
    for child in range(1, JOINTS_NUM):  # parents come before children in SMPL order
        parent = T2M_PARENTS[child]
        bone = joints[:, child] - joints[:, parent]
        out[:, child] = out[:, parent] + target_bone_lengths[child] * bone / np.linalg.norm(bone, axis=-1, keepdims=True)
    return out


def inverse_kinematics(joints: np.ndarray, smooth_forward: bool = True) -> np.ndarray:
    """Local joint quaternions [T, 22, 4] as `Skeleton.inverse_kinematics_np` defines them.

    Root: the heading turning the (optionally Gaussian-smoothed, σ = 20 frames) forward direction onto +Z,
    replaced by the identity on frame 0 as published. Bone c with parent p: the shortest arc from its rest
    direction (T2M_RAW_OFFSETS) to its actual direction, expressed relative to the previous bone's arc (the
    root heading for the first bone of each kinematic chain, arm chains included)."""
    forward = facing_directions(joints, hips_reversed=True, smooth_sigma=20.0 if smooth_forward else 0.0)
    root_quat = qbetween(forward, np.array([0.0, 0.0, 1.0]))
    root_quat[0] = [1.0, 0.0, 0.0, 0.0]
    bones = joints[:, 1:] - joints[:, list(T2M_PARENTS[1:])]  # [T, 21, 3]
    bones = bones / np.linalg.norm(bones, axis=-1, keepdims=True)
    arcs = qbetween(T2M_RAW_OFFSETS[1:], bones)  # [T, 21, 4] global rotation of each bone
    previous = np.stack(
        [root_quat if c in _CHAIN_STARTS else arcs[:, T2M_PARENTS[c] - 1] for c in range(1, JOINTS_NUM)], axis=1
    )
    quats = np.empty(joints.shape[:-1] + (4,))
    quats[:, 0] = root_quat
    quats[:, 1:] = qmul(qinv(previous), arcs)
    return quats


def canonicalize(joints: np.ndarray, target_bone_lengths: np.ndarray = T2M_TARGET_BONE_LENGTHS) -> np.ndarray:
    """The first steps of `process_file`: target skeleton, feet on the floor (lowest joint over the whole
    clip at y = 0), root above the XZ origin on frame 0, frame 0 facing +Z. Returns [T, 22, 3] float64."""
    positions = uniform_skeleton(np.asarray(joints, dtype=np.float64), target_bone_lengths)
    positions[..., 1] -= positions[..., 1].min()
    positions -= positions[0, 0] * np.array([1.0, 0.0, 1.0])
    heading = qbetween(facing_directions(positions[:1])[0], np.array([0.0, 0.0, 1.0]))
    return qrot(np.broadcast_to(heading, positions.shape[:-1] + (4,)), positions)


def _check_joints(joints) -> np.ndarray:
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (JOINTS_NUM, 3) or len(joints) < 2:
        raise UserError(f"joints must be [T >= 2, 22, 3] (SMPL order, metres, Y up), got shape {joints.shape}")
    if not np.isfinite(joints).all():
        raise UserError("joints contain NaN or infinite values")
    return joints


def extract_features(
    joints,
    feet_threshold: float = FEET_THRESHOLD,
    target_bone_lengths: np.ndarray = T2M_TARGET_BONE_LENGTHS,
    fix_heading_wrap: bool = False,
) -> np.ndarray:
    """HumanML3D features [T − 1, 263] (float32) from joint positions [T, 22, 3].

    Use it to convert your own motion capture into HumanML3D's representation. Input: 22 joints in SMPL
    order (`JOINT_NAMES`), metres, Y up, at 20 fps (resample first), any position, heading and body size.
    Steps, as HumanML3D's `process_file` (motion_representation.ipynb):
    1. rescale to the target skeleton (`uniform_skeleton`), put the lowest joint of the clip on y = 0,
       move the root of frame 0 above the origin and turn frame 0 to face +Z (`canonicalize`);
    2. foot contacts: a foot joint is in contact on frame t when its squared displacement to frame t + 1 is
       below `feet_threshold` (0.002 m², i.e. ~0.9 m/s at 20 fps);
    3. inverse kinematics with a Gaussian-smoothed heading (`inverse_kinematics`) gives the root heading
       r_t and the 6D local rotations; root linear velocity = r_{t+1} applied to the root displacement;
       root angular velocity = arcsin of the Y part of r_{t+1}·r_t⁻¹ (a half-angle, as published);
    4. "ric" positions: joints minus the root's XZ, rotated by r_t; local velocities: joint displacements
       from t to t + 1 rotated by r_t.
    T frames give T − 1 rows (each row needs the next frame); `recover_from_ric` on the rows gives back the
    canonical joints of frames 0..T−2.

    By default the output is the released representation, bit for bit in method: features of your own
    capture are then comparable with HumanML3D's files, the models trained on them and the T2M evaluator.
    `fix_heading_wrap=True` (opt-in) corrects one flaw of the published code: when the heading passes
    through −Z between two frames, r_{t+1}·r_t⁻¹ has a negative real part and the published arcsin gives
    the turn with the wrong sign (≈0.07 on root_rot_velocity at that frame), so recovered motions spin the
    wrong way from there on (8.6 cm in recovered joints on one measured clip). The fix takes the sign of
    the real part into account; use it for data that never meets released files.
    """
    positions = canonicalize(_check_joints(joints), target_bone_lengths)
    global_positions = positions

    displacement = (positions[1:] - positions[:-1]) ** 2  # [T-1, 22, 3]
    still = displacement.sum(-1) < feet_threshold
    feet = np.concatenate([still[:, list(FOOT_LEFT)], still[:, list(FOOT_RIGHT)]], axis=-1).astype(np.float64)

    quats = inverse_kinematics(positions, smooth_forward=True)
    r_rot = quats[:, 0]  # [T, 4] root heading
    cont6d = quaternion_to_cont6d(quats)  # [T, 22, 6]

    velocity = qrot(r_rot[1:], positions[1:, 0] - positions[:-1, 0])  # [T-1, 3]
    r_velocity = qmul(r_rot[1:], qinv(r_rot[:-1]))  # [T-1, 4]
    sin_half = r_velocity[:, 2:3]
    if fix_heading_wrap:  # q and −q are the same turn: take the one with a non-negative real part
        sin_half = np.where(r_velocity[:, 0:1] < 0, -sin_half, sin_half)
    root_rot_velocity = np.arcsin(np.clip(sin_half, -1.0, 1.0))

    local = positions - positions[:, :1] * np.array([1.0, 0.0, 1.0])  # relative to the root on XZ
    ric = qrot(np.broadcast_to(r_rot[:, None], local.shape[:-1] + (4,)), local)  # [T, 22, 3]
    heading = np.broadcast_to(r_rot[:-1, None], (len(positions) - 1, JOINTS_NUM, 4))
    local_velocity = qrot(heading, global_positions[1:] - global_positions[:-1])  # [T-1, 22, 3]

    rows = len(positions) - 1
    features = np.concatenate(
        [
            root_rot_velocity,
            velocity[:, [0, 2]],
            ric[:-1, 0, 1:2],
            ric[:-1, 1:].reshape(rows, -1),
            cont6d[:-1, 1:].reshape(rows, -1),
            local_velocity.reshape(rows, -1),
            feet,
        ],
        axis=-1,
    )
    return features.astype(np.float32)


# ---- features -> joints ------------------------------------------------------------------------------------


def _as_tensor(features) -> tuple[torch.Tensor, bool]:
    if isinstance(features, torch.Tensor):
        return features, False
    return torch.from_numpy(np.asarray(features, dtype=np.float32)), True


def _yaw_rotate(v: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate vectors [..., 3] about +Y by `angle` [...] (radians, right-handed)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    x, y, z = v.unbind(-1)
    return torch.stack([x * cos + z * sin, y, -x * sin + z * cos], dim=-1)


def recover_root_rot_pos(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Root heading half-angles [..., T] (integrated angular velocity, 0 on frame 0) and root positions
    [..., T, 3] (integrated linear velocity turned back into the world, height from feature 3)."""
    half_angle = torch.cumsum(torch.nn.functional.pad(features[..., :-1, 0], (1, 0)), dim=-1)
    step = torch.zeros(features.shape[:-1] + (3,), dtype=features.dtype, device=features.device)
    step[..., 1:, 0] = features[..., :-1, 1]
    step[..., 1:, 2] = features[..., :-1, 2]
    root = torch.cumsum(_yaw_rotate(step, -2 * half_angle), dim=-2)
    root[..., 1] = features[..., 3]
    return half_angle, root


def recover_from_ric(features, joints_num: int = JOINTS_NUM):
    """Joint positions [..., T, joints_num, 3] from HumanML3D features [..., T, 263] (torch or numpy in, same
    out): the ric positions turned back by the integrated root heading and moved to the integrated root."""
    x, was_numpy = _as_tensor(features)
    half_angle, root = recover_root_rot_pos(x)
    ric = x[..., 4 : 4 + (joints_num - 1) * 3].reshape(x.shape[:-1] + (joints_num - 1, 3))
    joints = _yaw_rotate(ric, -2 * half_angle[..., None])
    joints = joints + (root * torch.tensor([1.0, 0.0, 1.0], dtype=x.dtype, device=x.device))[..., None, :]
    joints = torch.cat([root[..., None, :], joints], dim=-2)
    return joints.numpy() if was_numpy else joints


def recover_from_rot(features, offsets: np.ndarray = T2M_TARGET_OFFSETS):
    """Joint positions [..., T, 22, 3] by forward kinematics of the 6D rotations on the target skeleton,
    rooted at the integrated root path (HumanML3D's `recover_from_rot`)."""
    x, was_numpy = _as_tensor(features)
    half_angle, root = recover_root_rot_pos(x)
    zero = torch.zeros_like(half_angle)
    angle = 2 * half_angle  # root rotation about Y as a matrix
    root_matrix = torch.stack(
        [torch.stack([torch.cos(angle), zero, torch.sin(angle)], -1),
         torch.stack([zero, zero + 1, zero], -1),
         torch.stack([-torch.sin(angle), zero, torch.cos(angle)], -1)], dim=-2,
    )  # fmt: skip
    local = cont6d_to_matrix(x[..., FEATURE_SLICES["rot_6d"]].reshape(x.shape[:-1] + (JOINTS_NUM - 1, 6)))
    offsets_t = torch.as_tensor(offsets, dtype=x.dtype, device=x.device)
    joints = [None] * JOINTS_NUM
    joints[0] = root
    for chain in T2M_KINEMATIC_CHAIN:
        rotation = root_matrix
        for parent, child in zip(chain[:-1], chain[1:]):
            rotation = rotation @ local[..., child - 1, :, :]
            joints[child] = joints[parent] + (rotation @ offsets_t[child][:, None])[..., 0]
    out = torch.stack(joints, dim=-2)
    return out.numpy() if was_numpy else out

"""HumanML3D joints -> 263-d features -> joints round trips on a synthetic skeleton, and the feature layout."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from genpref.errors import UserError
from motion import skeleton as sk

# The SMPL-22 tree and rest directions as published in HumanML3D paramUtil.py, written out here.
PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19]
REST_DIRECTIONS = np.array(
    [[0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, -1, 0], [0, 1, 0], [0, -1, 0], [0, -1, 0],
     [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 1], [0, -1, 0], [0, -1, 0],
     [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0]], dtype=float,
)  # fmt: skip
LENGTHS = sk.T2M_TARGET_BONE_LENGTHS  # data, checked against the released file's values below


def yaw(angle):
    return Rotation.from_euler("y", angle)


def synthetic_canonical_motion(frames=120, seed=0):
    """A canonical HumanML3D motion built by forward kinematics (local rotations, standard convention
    pos[j] = pos[parent] + G[parent]·offset[j]): frame 0 is the rest pose facing +Z with its root above the
    origin, then every joint swings about its own axis, the root walks along a curve and turns 270° about Y
    (through the −Z heading), and the whole clip is shifted so its lowest joint touches y = 0."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)
    axes = rng.normal(size=(22, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    amplitude = rng.uniform(0.2, 0.7, size=22)
    omega = rng.uniform(0.05, 0.2, size=22)
    heading = np.radians(270.0) * (t / (frames - 1)) ** 2
    root_path = np.stack([0.6 * np.sin(t / 40.0), 0.95 + 0.03 * np.sin(t / 3.0), 0.02 * t], axis=-1)
    joints = np.zeros((frames, 22, 3))
    for f in range(frames):
        local = [Rotation.from_rotvec(axes[j] * amplitude[j] * np.sin(omega[j] * f)) for j in range(22)]
        glob = [yaw(heading[f]) * local[0]]
        joints[f, 0] = root_path[f]
        for j in range(1, 22):
            p = PARENTS[j]
            joints[f, j] = joints[f, p] + glob[p].apply(REST_DIRECTIONS[j] * LENGTHS[j])
            glob.append(glob[p] * local[j])
    joints[..., 1] -= joints[..., 1].min()
    joints -= joints[0, 0] * np.array([1, 0, 1])
    return joints


def moved_and_scaled(joints, scale=1.25, degrees=70.0, shift=(3.0, 0.4, -2.0)):
    """The same motion in another place, heading and body size: what a user's capture looks like."""
    flat = yaw(np.radians(degrees)).apply(joints.reshape(-1, 3)).reshape(joints.shape)
    return scale * flat + np.array(shift)


def test_target_skeleton_lengths_are_the_released_ones():
    # HumanML3D new_joints/012314.npy: left hip 0.103074 m, left thigh 0.3936232 m, right shin 0.4256434 m
    assert LENGTHS[1] == pytest.approx(0.103074) and LENGTHS[4] == pytest.approx(0.3936232)
    assert LENGTHS[8] == pytest.approx(0.4256434)


def test_features_then_recover_from_ric_gives_the_canonical_joints():
    """Compared: recover_from_ric(extract_features(X)) [T−1, 22, 3] against the canonical motion M built
    in the test (frames 0..T−2), where X is M rescaled ×1.25, turned 70° about Y and moved. M has the target
    bone lengths, lowest joint at y = 0, root of frame 0 at the XZ origin and frame 0 facing +Z, so the
    extractor's canonicalisation must give M back exactly; the recovery integrates the root velocities."""
    canonical = synthetic_canonical_motion()
    features = sk.extract_features(moved_and_scaled(canonical), fix_heading_wrap=True)
    assert features.shape == (119, 263) and features.dtype == np.float32
    recovered = sk.recover_from_ric(features)
    assert recovered.shape == (119, 22, 3)
    assert np.abs(recovered - canonical[:-1]).max() < 1e-4
    # the 6D rotations alone, through forward kinematics on the target skeleton, give the same joints
    assert np.abs(sk.recover_from_rot(features) - canonical[:-1]).max() < 1e-4
    # torch in, torch out, batched
    batch = torch.from_numpy(np.stack([features, features]))
    torch.testing.assert_close(sk.recover_from_ric(batch)[1], torch.from_numpy(recovered))


def test_published_heading_wrap_turns_the_wrong_way_after_minus_z():
    """The motion's heading passes through −Z; with the published arcsin (the default) the recovered path
    leaves the true one from that frame on, with the opt-in sign-aware version it does not (previous test)."""
    canonical = synthetic_canonical_motion()
    published = sk.extract_features(moved_and_scaled(canonical))
    assert np.array_equal(published, sk.extract_features(moved_and_scaled(canonical), fix_heading_wrap=False))
    fixed = sk.extract_features(moved_and_scaled(canonical), fix_heading_wrap=True)
    differs = np.nonzero(np.abs(published[:, 0] - fixed[:, 0]) > 1e-6)[0]
    assert len(differs) == 1  # one frame crosses the wrap
    np.testing.assert_allclose(published[differs, 0], -fixed[differs, 0], rtol=1e-5)
    error = np.abs(sk.recover_from_ric(published) - canonical[:-1]).max(axis=(1, 2))
    assert error[: differs[0] + 1].max() < 1e-4 and error[-1] > 0.05


def test_feature_layout_on_a_rest_pose_gliding_forward():
    """Rest pose (every bone along its rest direction, no rotation), root gliding +Z by v per frame at a
    fixed height. Expected by hand: angular velocity 0; linear velocity (0, v); root height = the drop from
    the root to the lowest joint (left knee + shin bones, L4 + L7); ric = the rest offsets accumulated from
    the root on XZ, at their height above the floor (rest y + L4 + L7); all 6D rotations the identity (1,0,0, 0,1,0); every joint velocity (0, 0, v); contacts all
    1 for v² < 0.002 and all 0 above."""
    rest = np.zeros((22, 3))
    for j in range(1, 22):
        rest[j] = rest[PARENTS[j]] + REST_DIRECTIONS[j] * LENGTHS[j]
    for v, contact in ((0.01, 1.0), (0.1, 0.0)):
        joints = rest[None] + np.arange(6)[:, None, None] * np.array([0.0, 0.0, v]) + np.array([0.0, 1.0, 0.0])
        feats = sk.extract_features(joints)
        s = sk.FEATURE_SLICES
        assert feats.shape == (5, sk.FEATURE_DIM) == (5, 263)
        np.testing.assert_allclose(feats[:, s["root_rot_velocity"]], 0.0, atol=1e-7)
        np.testing.assert_allclose(feats[:, s["root_linear_velocity"]], [[0.0, v]] * 5, atol=1e-7)
        np.testing.assert_allclose(feats[:, s["root_y"]], LENGTHS[4] + LENGTHS[7], atol=1e-6)
        ric = rest[1:] + np.array([0.0, LENGTHS[4] + LENGTHS[7], 0.0])
        np.testing.assert_allclose(feats[:, s["ric_positions"]], np.tile(ric.reshape(-1), (5, 1)), atol=1e-6)
        np.testing.assert_allclose(feats[:, s["rot_6d"]], np.tile([1.0, 0, 0, 0, 1, 0], (5, 21)), atol=1e-6)
        np.testing.assert_allclose(feats[:, s["local_velocity"]], np.tile([0.0, 0.0, v], (5, 22)), atol=1e-7)
        np.testing.assert_array_equal(feats[:, s["foot_contact"]], contact)
    widths = {name: sl.stop - sl.start for name, sl in sk.FEATURE_SLICES.items()}
    assert widths == {"root_rot_velocity": 1, "root_linear_velocity": 2, "root_y": 1, "ric_positions": 63,
                      "rot_6d": 126, "local_velocity": 66, "foot_contact": 4}  # fmt: skip
    assert sum(widths.values()) == 263


def test_bad_joint_arrays_are_refused():
    with pytest.raises(UserError, match=r"\[T >= 2, 22, 3\]"):
        sk.extract_features(np.zeros((10, 24, 3)))
    joints = synthetic_canonical_motion(frames=4)
    joints[2, 5, 1] = np.nan
    with pytest.raises(UserError, match="NaN"):
        sk.extract_features(joints)


def test_stick_figure_gif_and_strip(tmp_path):
    from PIL import Image

    from motion import draw

    joints = synthetic_canonical_motion(frames=12)
    gif = draw.animate(joints, tmp_path / "a" / "walk.gif", title="a person walks", every=2)
    with Image.open(gif) as image:
        assert image.n_frames == 6
        image.seek(3)
        assert np.asarray(image.convert("L")).min() < 128  # something dark was drawn
    png = draw.strip(joints, tmp_path / "walk.png", frames=4)
    with Image.open(png) as image:
        width, height = image.size
        assert width == 4 * height  # four square tiles side by side
    # a pose facing the camera side: x of the screen grows with the body's left (+X) at azimuth 0
    screen = draw.project(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), azimuth=0.0, elevation=0.0)
    np.testing.assert_allclose(screen, [[1.0, 0.0], [0.0, 1.0]], atol=1e-12)
    with pytest.raises(UserError, match=r"joints \[T, 22, 3\]"):
        draw.strip(np.zeros((5, 21, 3)), tmp_path / "x.png")

"""The T2M metrics against slow references written here with loops and scipy.linalg.sqrtm, plus hand-made cases."""

import math

import numpy as np
import pytest
import scipy.linalg

from genpref.errors import UserError
from motion import metrics

# ---- slow references: one pair at a time, like the protocol is described in words -----------------------


def slow_r_precision_and_mm_dist(text, motion, top_k=3, group=32):
    hits = np.zeros(top_k)
    dist_sum = 0.0
    rows = 0
    for start in range(0, len(text) - group + 1, group):
        for i in range(group):
            dists = [math.dist(text[start + i], motion[start + j]) for j in range(group)]
            rank = sorted(range(group), key=lambda j: dists[j]).index(i)
            for k in range(top_k):
                hits[k] += rank <= k
            dist_sum += dists[i]
            rows += 1
    return hits / rows, dist_sum / rows


def slow_fid(real, gen):
    mu1, mu2 = real.mean(0), gen.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(gen, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_r_precision_and_matching_score_match_slow_loops():
    rng = np.random.default_rng(0)
    motion = rng.normal(size=(100, 16))
    text = motion + rng.normal(scale=1.2, size=(100, 16))  # partly matched: ranks spread over 1..32
    expect_r, expect_mm = slow_r_precision_and_mm_dist(text, motion)
    got_r = metrics.r_precision(text, motion)
    assert got_r.shape == (3,)
    np.testing.assert_allclose(got_r, expect_r, atol=1e-12)
    assert 0.2 < got_r[0] < got_r[2] < 1.0  # the case is not trivial
    assert metrics.matching_score(text, motion) == pytest.approx(expect_mm, rel=1e-12)


def test_incomplete_last_group_is_dropped():
    rng = np.random.default_rng(1)
    motion = rng.normal(size=(64, 8))
    text = motion.copy()
    text[:64] += rng.normal(scale=3.0, size=(64, 8))
    # 31 extra perfectly matched rows would raise top-1 if they were counted
    extra = rng.normal(size=(31, 8)) * 100
    r64 = metrics.r_precision(text, motion)
    r95 = metrics.r_precision(np.concatenate([text, extra]), np.concatenate([motion, extra]))
    np.testing.assert_array_equal(r64, r95)
    assert metrics.matching_score(np.concatenate([text, extra + 1]), np.concatenate([motion, extra])) == (
        pytest.approx(metrics.matching_score(text, motion))
    )
    with pytest.raises(UserError, match="full group of 32"):
        metrics.r_precision(text[:31], motion[:31])


def test_r_precision_hand_made_group():
    """Group of 4 on a line, motions at 0, 10, 20, 30 (own motion of text i is motion i).
    text 0 at 0:  distances 0, 10, 20, 30 -> own rank 0
    text 1 at 19: distances 19, 9, 1, 11 -> order [2, 1, 3, 0], own rank 1
    text 2 at 4:  distances 4, 6, 16, 26 -> order [0, 1, 2, 3], own rank 2
    text 3 at 0:  distances 0, 10, 20, 30 -> own rank 3
    top-1 = 1/4, top-2 = 2/4, top-3 = 3/4; matched distances 0, 9, 16, 30 -> MM-Dist 13.75."""
    motion = np.array([[0.0], [10.0], [20.0], [30.0]])
    text = np.array([[0.0], [19.0], [4.0], [0.0]])
    np.testing.assert_allclose(metrics.r_precision(text, motion, top_k=3, batch_size=4), [0.25, 0.5, 0.75])
    assert metrics.matching_score(text, motion, batch_size=4) == pytest.approx(13.75)


def test_exact_ties_rank_like_a_stable_argsort():
    """Four identical motions: every distance in a row ties, a stable argsort puts column j at rank j, so
    text i finds its own motion at rank i: top-1 = 1/4, top-2 = 2/4, top-3 = 3/4."""
    motion = np.ones((4, 3))
    text = np.zeros((4, 3))
    np.testing.assert_allclose(metrics.r_precision(text, motion, batch_size=4), [0.25, 0.5, 0.75])


def test_mld_convention_is_one_permutation_then_groups():
    rng = np.random.default_rng(2)
    motion = rng.normal(size=(90, 8))
    text = motion + rng.normal(scale=1.0, size=(90, 8))
    perm = np.random.default_rng(7).permutation(90)
    expect_r, expect_mm = slow_r_precision_and_mm_dist(text[perm], motion[perm])
    got = metrics.r_precision(text, motion, convention="mld", rng=np.random.default_rng(7))
    np.testing.assert_allclose(got, expect_r, atol=1e-12)
    mm = metrics.matching_score(text, motion, convention="mld", rng=np.random.default_rng(7))
    assert mm == pytest.approx(expect_mm, rel=1e-12)
    with pytest.raises(UserError, match="convention"):
        metrics.r_precision(text, motion, convention="kit")
    # MDM groups like text-to-motion: consecutive rows, no permutation
    np.testing.assert_array_equal(metrics.r_precision(text, motion, convention="mdm"), metrics.r_precision(text, motion))


def test_fid_matches_sqrtm_reference_and_is_zero_for_identical_sets():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(400, 24)) @ rng.normal(size=(24, 24))
    gen = rng.normal(loc=0.3, size=(300, 24)) @ rng.normal(size=(24, 24))
    assert metrics.fid(real, gen) == pytest.approx(slow_fid(real, gen), rel=1e-8)
    assert abs(metrics.fid(real, real)) < 1e-8
    mu, cov = metrics.activation_statistics(real)
    np.testing.assert_allclose(cov, np.cov(real.T))  # ddof 1
    # two 1-D Gaussians: (1 - 3)^2 + 4 + 9 - 2*sqrt(36) = 5
    assert metrics.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == (
        pytest.approx(5.0)
    )


def test_fid_rank_deficient_covariance_stays_finite():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(10, 32))  # 10 samples in 32-D: singular covariance
    gen = rng.normal(size=(10, 32))
    value = metrics.fid(real, gen)
    assert np.isfinite(value)
    assert value == pytest.approx(slow_fid(real, gen), rel=1e-5)


def test_diversity_and_multimodality_match_loops_with_the_same_draws():
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(500, 12))
    draws = np.random.default_rng(11)
    first = draws.choice(500, 300, replace=False)
    second = draws.choice(500, 300, replace=False)
    expect = sum(math.dist(emb[a], emb[b]) for a, b in zip(first, second)) / 300
    assert metrics.diversity(emb, 300, rng=np.random.default_rng(11)) == pytest.approx(expect, rel=1e-12)

    mm_emb = rng.normal(size=(7, 30, 12))
    draws = np.random.default_rng(12)
    first = draws.choice(30, 10, replace=False)
    second = draws.choice(30, 10, replace=False)
    total = sum(math.dist(mm_emb[t, a], mm_emb[t, b]) for t in range(7) for a, b in zip(first, second))
    got = metrics.multimodality(mm_emb, 10, rng=np.random.default_rng(12))
    assert got == pytest.approx(total / 70, rel=1e-12)
    with pytest.raises(UserError, match="more than 300"):
        metrics.diversity(emb[:300], 300)
    with pytest.raises(UserError, match="repeats > 10"):
        metrics.multimodality(mm_emb[:, :10], 10)


def test_distance_matrix_and_summarize():
    a = np.array([[0.0, 0.0], [3.0, 4.0]])
    b = np.array([[0.0, 0.0], [6.0, 8.0], [3.0, 4.0]])
    np.testing.assert_allclose(metrics.euclidean_distance_matrix(a, b), [[0, 10, 5], [5, 5, 0]])
    mean, ci = metrics.summarize([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and ci == pytest.approx(1.96 * math.sqrt(1.25) / 2)
    mean, ci = metrics.summarize([[1.0, 0.0], [3.0, 0.0]])
    np.testing.assert_allclose(mean, [2.0, 0.0])
    np.testing.assert_allclose(ci, [1.96 / math.sqrt(2), 0.0])

"""genpref.stats against values worked out by hand (and standard table values)."""

import numpy as np
import pytest

from genpref import stats


def test_wilson_matches_table_values():
    """Wilson 95% intervals from the standard tables: 0/10 -> [0, 0.2775], 5/10 -> [0.2366, 0.7634],
    10/10 -> [0.7225, 1]."""
    assert stats.wilson_ci(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert stats.wilson_ci(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert stats.wilson_ci(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)


def test_wilson_formula_by_hand():
    """k = 17, n = 240, z = 1.959964: p = 0.0708333; z²/n = 0.0160060; centre = (p + z²/2n)/(1 + z²/n)
    = 0.0788364/1.0160061 = 0.0775944; half = z·√(p(1−p)/n + z²/4n²)/(1 + z²/n)
    = 1.959964·√(0.000274233 + 0.0000166730)/1.0160061 = 0.0329025; interval [0.0446919, 0.1104968]."""
    lo, hi = stats.wilson_ci(17, 240)
    assert lo == pytest.approx(0.0446919, abs=2e-6)
    assert hi == pytest.approx(0.1104968, abs=2e-6)


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError):
        stats.wilson_ci(3, 0)
    with pytest.raises(ValueError):
        stats.wilson_ci(11, 10)


def test_mcnemar_exact_by_hand():
    """Discordant counts (only A right, only B right):
    (9, 1): 2·P(X ≤ 1 | n=10) = 2·(1 + 10)/1024 = 0.021484375
    (5, 0): 2·(1/32) = 0.0625
    (3, 3): 2·P(X ≤ 3 | n=6) = 2·(1+6+15+20)/64 = 1.3125 -> capped at 1
    no discordant pairs: 1."""
    def pairs(only_a, only_b, both=4, neither=3):
        a = [1] * only_a + [0] * only_b + [1] * both + [0] * neither
        b = [0] * only_a + [1] * only_b + [1] * both + [0] * neither
        return np.array(a, bool), np.array(b, bool)

    assert stats.mcnemar_exact(*pairs(9, 1)) == pytest.approx(22 / 1024)
    assert stats.mcnemar_exact(*pairs(1, 9)) == pytest.approx(22 / 1024)
    assert stats.mcnemar_exact(*pairs(5, 0)) == pytest.approx(0.0625)
    assert stats.mcnemar_exact(*pairs(3, 3)) == 1.0
    assert stats.mcnemar_exact(*pairs(0, 0)) == 1.0


def test_paired_diff_constant_difference_has_zero_width():
    a = np.array([0.3, 0.9, 0.5, 0.1])
    diff, lo, hi = stats.paired_diff_ci(a + 0.25, a)
    assert diff == pytest.approx(0.25) and lo == pytest.approx(0.25) and hi == pytest.approx(0.25)


def test_paired_diff_close_to_normal_theory_for_many_pairs():
    """For n = 2000 binary pairs with 300 only-A and 100 only-B outcomes, mean difference = 0.1 and the
    normal-theory 95% half width is 1.96·sd(d)/√n, sd(d) = √(0.2 − 0.01) (d ∈ {−1, 0, 1}, E[d²] = 0.2)
    = 0.435890 -> half width 0.019104. The bootstrap interval must agree to ~10%."""
    a = np.zeros(2000, bool)
    b = np.zeros(2000, bool)
    a[:300] = True
    b[300:400] = True
    a[400:900] = b[400:900] = True
    diff, lo, hi = stats.paired_diff_ci(a, b, seed=1)
    assert diff == pytest.approx(0.1)
    assert (hi - lo) / 2 == pytest.approx(0.019104, rel=0.1)
    assert lo < 0.1 < hi


def test_paired_diff_needs_equal_shapes():
    with pytest.raises(ValueError, match="pairs need equal shapes"):
        stats.paired_diff_ci([1, 0, 1], [1, 0])


def test_bootstrap_is_reproducible_by_seed():
    x = np.arange(50) % 7
    assert stats.bootstrap_mean_ci(x, seed=3) == stats.bootstrap_mean_ci(x, seed=3)


def test_t_interval_by_hand():
    """values 0.1, 0.2, 0.3: mean 0.2, s = 0.1, t_{0.975, 2} = 4.302653 -> half width 0.248414."""
    mean, lo, hi = stats.t_interval([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2)
    assert hi - mean == pytest.approx(0.248414, abs=1e-5)
    assert mean - lo == pytest.approx(0.248414, abs=1e-5)
    assert stats.t_interval([0.4]) == (0.4, 0.4, 0.4)


def test_summarize_runs_groups_in_order_with_t_intervals():
    """dpo: accuracy 0.1, 0.2, 0.3 -> mean 0.2 ± 0.248414 (as above); sft: one run -> zero width; a metric
    no sft run has is left out."""
    rows = [{"objective": "dpo", "acc": 0.1, "t": 5.0}, {"objective": "sft", "acc": 0.5},
            {"objective": "dpo", "acc": 0.2, "t": 7.0}, {"objective": "dpo", "acc": 0.3, "t": None}]
    dpo, sft = stats.summarize_runs(rows, ["acc", "t"])
    assert dpo["objective"] == "dpo" and dpo["runs"] == 3 and dpo["acc"] == pytest.approx(0.2)
    assert dpo["acc_ci95"] == pytest.approx([0.2 - 0.248414, 0.2 + 0.248414], abs=1e-5)
    assert dpo["t"] == pytest.approx(6.0)
    assert sft == {"objective": "sft", "runs": 1, "acc": 0.5, "acc_ci95": [0.5, 0.5]}


def test_win_rate_counts_ties_as_half():
    a = np.array([1.0, 0.5, 0.0, 1.0])
    b = np.array([0.0, 0.5, 1.0, 0.5])
    assert stats.win_rate(a, b) == pytest.approx((2 + 0.5) / 4)


def test_paired_row_and_versus_base_by_hand():
    mine = np.array([True, True, False, True, False, True])
    base = np.array([False, True, False, False, False, True])
    row = stats.paired_row("dro", "base", "acc", mine, base)
    assert row["diff"] == pytest.approx(2 / 6) and row["n"] == 6
    assert row["mcnemar_p"] == pytest.approx(0.5)  # 2 discordant pairs, both one way: 2 * 0.5**2
    scores = stats.paired_row("dro", "base", "score", mine.astype(float), base.astype(float))
    assert "mcnemar_p" not in scores
    vs = stats.versus_base("heldout", mine, base, mine * 0.5, base * 0.5)
    assert vs["heldout_accuracy"] == pytest.approx(4 / 6)
    assert vs["heldout_diff_vs_base"] == pytest.approx(2 / 6)
    assert vs["heldout_win_rate_vs_base"] == pytest.approx((2 + 0.5 * 4) / 6)
    lo, hi = vs["heldout_diff_vs_base_ci95"]
    assert lo <= 2 / 6 <= hi


def test_proportion_and_mean_rows():
    row = stats.proportion_row("base", "acc", np.array([True, False, False, True]))
    assert (row["value"], row["n"]) == (0.5, 4) and row["ci95"] == list(stats.wilson_ci(2, 4))
    row = stats.mean_row("base", "score", np.array([1.0, 1.0, 1.0]))
    assert row["value"] == 1.0 and row["ci95"] == [1.0, 1.0]


def test_pair_agreement_counts_the_truths_ordered_pairs_within_groups():
    truth = [1.0, 0.5, 0.0, 1.0, 1.0, 0.0]
    reward = [3.0, 1.0, 2.0, 0.0, 5.0, 5.0]
    groups = ["a", "a", "a", "b", "b", "b"]
    # a: (0>1) yes, (0>2) yes, (1>2) no; b: (3>5) no, (4>5) tie = half; 3 vs 4 equal truth: not a pair
    assert stats.pair_agreement(reward, truth, groups)[0] == pytest.approx(((2 + 0) + (0 + 0.5)) / 5)
    assert stats.pair_agreement(reward, truth, groups)[1] == 5
    assert stats.pair_agreement([1.0, 2.0], [1.0, 1.0], ["a", "a"]) == (None, 0)

"""Small statistics for evaluations: confidence intervals of proportions and of paired differences, an
exact McNemar test, and intervals over seeds. Pure numpy/scipy; every function takes its randomness
(a seed) as an argument, so a report's numbers are reproducible.

Paired means: model A and model B were evaluated on the same items (same prompt, same initial noise),
so the difference is estimated from per-item differences, which is far tighter than comparing two
independent proportions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


def wilson_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (good at small n and near 0 or 1).

    centre = (p + z²/2n) / (1 + z²/n), half width = z·√(p(1−p)/n + z²/4n²) / (1 + z²/n)."""
    if n <= 0:
        raise ValueError("wilson_ci: n must be positive")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_ci: successes {successes} outside [0, {n}]")
    z = _z(level)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: no float residue at 0/n and n/n
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def bootstrap_mean_ci(values: Sequence[float], level: float = 0.95, n_boot: int = 10_000,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean (items resampled with replacement)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_mean_ci: no values")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def paired_diff_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95, n_boot: int = 10_000,
                   seed: int = 0) -> tuple[float, float, float]:
    """(mean(a − b), lo, hi): the mean paired difference with a percentile bootstrap interval that
    resamples items (pairs), keeping each item's two outcomes together."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_diff_ci: a has shape {a.shape}, b {b.shape}; pairs need equal shapes")
    d = a - b
    lo, hi = bootstrap_mean_ci(d, level, n_boot, seed)
    return float(d.mean()), lo, hi


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Two-sided exact McNemar p-value for paired binary outcomes: with n01 items only A gets right and
    n10 only B, p = min(1, 2·P(X ≤ min(n01, n10))), X ~ Binomial(n01 + n10, 1/2)."""
    from scipy.stats import binom

    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError("mcnemar_exact: a and b need equal shapes")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    if n == 0:
        return 1.0
    return float(min(1.0, 2 * binom.cdf(min(only_a, only_b), n, 0.5)))


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi) over a few independent runs (seeds): mean ± t_{n−1}·s/√n, s with ddof 1.
    One value gives a zero-width interval (nothing is known about the spread)."""
    from scipy.stats import t as student_t

    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("t_interval: no values")
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    half = float(student_t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return mean, mean - half, mean + half


def summarize_runs(rows: Sequence[dict], metrics: Sequence[str], by: str = "objective") -> list[dict]:
    """Benchmark rows (one per run, e.g. per objective and seed) -> one entry per value of `by`, in order of
    first appearance: {by, "runs", metric: mean over its runs, metric + "_ci95": t interval}. A metric
    missing from every run of a group is left out of that group's entry."""
    out = []
    for group in dict.fromkeys(r[by] for r in rows):
        mine = [r for r in rows if r[by] == group]
        entry = {by: group, "runs": len(mine)}
        for key in metrics:
            values = [r[key] for r in mine if r.get(key) is not None]
            if values:
                mean, lo, hi = t_interval(values)
                entry[key], entry[key + "_ci95"] = mean, [lo, hi]
        out.append(entry)
    return out


def versus_arm(rows: Sequence[dict], arm: str, metrics: Sequence[str], by: str = "objective") -> list[dict]:
    """Each row with metric + "_diff_vs_" + arm: its value minus that arm's row of the same seed (benchmarks
    evaluate every run on the same noise and prompts, so the per-seed difference is paired). Rows whose
    seed has no `arm` row are returned unchanged; the inputs are not modified."""
    anchor = {r["seed"]: r for r in rows if r.get(by) == arm}
    out = []
    for r in rows:
        r = dict(r)
        ref = anchor.get(r.get("seed"))
        for key in metrics:
            if ref is not None and r.get(key) is not None and ref.get(key) is not None:
                r[f"{key.removesuffix('_accuracy')}_diff_vs_{arm}"] = r[key] - ref[key]
        out.append(r)
    return out


# ---- result rows shared by the demos' reports: one dict per (model, metric) or per paired comparison


def proportion_row(model: str, metric: str, correct: np.ndarray) -> dict:
    """A proportion (e.g. verifier accuracy) with its Wilson 95% interval."""
    k, n = int(np.sum(correct)), int(np.size(correct))
    lo, hi = wilson_ci(k, n)
    return {"model": model, "metric": metric, "value": k / n, "ci95": [lo, hi], "n": n}


def mean_row(model: str, metric: str, values: np.ndarray, seed: int = 0) -> dict:
    """A mean of per-item values with its bootstrap 95% interval."""
    lo, hi = bootstrap_mean_ci(values, seed=seed)
    return {"model": model, "metric": metric, "value": float(np.mean(values)), "ci95": [lo, hi], "n": int(len(values))}


def paired_row(a: str, b: str, metric: str, xa: np.ndarray, xb: np.ndarray, seed: int = 0) -> dict:
    """Mean of a − b over the same items with its paired bootstrap interval; for boolean items also the
    exact McNemar p-value."""
    xa, xb = np.asarray(xa), np.asarray(xb)
    diff, lo, hi = paired_diff_ci(xa.astype(float), xb.astype(float), seed=seed)
    row = {"a": a, "b": b, "metric": metric, "diff": diff, "ci95": [lo, hi], "n": int(xa.size)}
    if xa.dtype == bool:
        row["mcnemar_p"] = mcnemar_exact(xa, xb)
    return row


def win_rate(score_a: np.ndarray, score_b: np.ndarray) -> float:
    """P(a scores higher than b on the same item) + ½·P(tie)."""
    score_a, score_b = np.asarray(score_a), np.asarray(score_b)
    return float((score_a > score_b).mean() + 0.5 * (score_a == score_b).mean())


def versus_base(prefix: str, correct: np.ndarray, base_correct: np.ndarray, score: np.ndarray, base_score: np.ndarray,
                seed: int = 0) -> dict:  # fmt: skip
    """A benchmark row's comparison with the base on the same items: accuracy, paired difference with its
    interval and McNemar p, mean score and win rate; keys prefixed with `prefix`_ (e.g. heldout_)."""
    correct, base_correct = np.asarray(correct, dtype=bool), np.asarray(base_correct, dtype=bool)
    diff, lo, hi = paired_diff_ci(correct.astype(float), base_correct.astype(float), seed=seed)
    return {f"{prefix}_accuracy": float(correct.mean()), f"{prefix}_diff_vs_base": diff,
            f"{prefix}_diff_vs_base_ci95": [lo, hi], f"{prefix}_mcnemar_p": mcnemar_exact(correct, base_correct),
            f"{prefix}_attribute_score": float(np.mean(score)), f"{prefix}_win_rate_vs_base": win_rate(score, base_score)}  # fmt: skip


def pair_agreement(reward: np.ndarray, truth: np.ndarray, groups: Sequence) -> tuple[float | None, int]:
    """How often `reward` orders two samples of the same group as `truth` (e.g. the exact verifier) does:
    over every pair with truth_i > truth_j, the fraction with reward_i > reward_j (equal rewards count half).
    Returns (agreement or None without such pairs, number of pairs)."""
    reward, truth, groups = np.asarray(reward, dtype=np.float64), np.asarray(truth, dtype=np.float64), np.asarray(groups)
    hits, n = 0.0, 0
    for g in dict.fromkeys(groups.tolist()):
        r, v = reward[groups == g], truth[groups == g]
        ordered = v[:, None] > v[None, :]
        hits += ((r[:, None] > r[None, :]) + 0.5 * (r[:, None] == r[None, :]))[ordered].sum()
        n += int(ordered.sum())
    return (hits / n if n else None), n

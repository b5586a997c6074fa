"""Text-to-motion metrics of the T2M protocol (Guo et al. 2022): R-precision, MM-Dist, FID, Diversity, MultiModality.

All functions take evaluator embeddings as numpy arrays ([N, D] unless said) and are vectorised: R-precision
and MM-Dist over all groups of 32 at once (ranks counted, not sorted), FID through a Cholesky factor and
one generalized symmetric eigenvalue problem instead of a general matrix square root. Values agree with EricGuo5513/text-to-motion `utils/metrics.py` (and the copies
in MDM / MLD) up to float rounding; where they differ on purpose it is said below.

Grouping conventions (`convention=`):
- "t2m": rows are grouped in the order given, 32 consecutive rows per group, the incomplete last group
  dropped. This is what the reference evaluation does with a shuffled DataLoader(batch_size=32,
  drop_last=True): shuffle the rows yourself (evaluate.py does, once per replication) before calling.
- "mdm": as "t2m" (MDM's eval_humanml.py copies text-to-motion's loops).
- "mld": ChenFengYe/motion-latent-diffusion `TM2TMetrics.compute` concatenates the embeddings of the whole
  test set, applies ONE random permutation to all rows, then cuts consecutive groups of 32 and drops the
  remainder (count % 32 rows, chosen by the permutation rather than by the loader's last batch). Its
  MM-Dist is the trace over those same groups divided by the rows used. Here "mld" draws the permutation
  from `rng`; with the same rng state `r_precision` and `matching_score` use the same rows.
Other differences from the published code, all harmless in expectation: distances are computed in
float64 and clamped at 0 before the square root (the reference's float32 a²+b²−2ab can go negative and
give NaN, which MLD then replaces by 0); exact ties in a distance row are broken by column index
(stable argsort) where the reference's quicksort leaves them unspecified.
"""

from __future__ import annotations

import numpy as np

from genpref.errors import UserError

CONVENTIONS = ("t2m", "mdm", "mld")


def euclidean_distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise distances d[..., i, j] = ‖a[..., i, :] − b[..., j, :]‖ for a [..., N1, D], b [..., N2, D] (float64)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    sq_a = np.einsum("...id,...id->...i", a, a)
    sq_b = np.einsum("...jd,...jd->...j", b, b)
    sq = sq_a[..., :, None] + sq_b[..., None, :] - 2.0 * (a @ np.swapaxes(b, -1, -2))
    return np.sqrt(np.maximum(sq, 0.0))


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise UserError(f"metric convention must be one of {CONVENTIONS}, got {convention!r}")


def grouped_rows(n: int, batch_size: int = 32, convention: str = "t2m", rng=None) -> np.ndarray:
    """Row indices [G, batch_size] of the complete groups used by R-precision and MM-Dist (remainder dropped)."""
    _check_convention(convention)
    groups = n // batch_size
    if groups == 0:
        raise UserError(f"R-precision needs at least one full group of {batch_size} samples, got {n}")
    if convention == "mld":
        rng = np.random.default_rng() if rng is None else rng
        order = rng.permutation(n)
    else:
        order = np.arange(n)
    return order[: groups * batch_size].reshape(groups, batch_size)


def _take(emb: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """emb[rows] -> [G, B, D] in the input's dtype; a slice rather than a gather when rows are in order (t2m)."""
    if np.array_equal(rows.reshape(-1), np.arange(rows.size)):
        return emb[: rows.size].reshape(rows.shape + emb.shape[1:])
    return emb[rows]


def _check_pairs(text_emb: np.ndarray, motion_emb: np.ndarray) -> None:
    if text_emb.ndim != 2 or text_emb.shape != motion_emb.shape:
        raise UserError(
            f"text and motion embeddings must both be [N, D] with the same shape, got "
            f"{tuple(text_emb.shape)} and {tuple(motion_emb.shape)}"
        )


def r_precision_hits(
    text_emb: np.ndarray,
    motion_emb: np.ndarray,
    top_k: int = 3,
    batch_size: int = 32,
    convention: str = "t2m",
    rng=None,
) -> np.ndarray:
    """Per row, whether the text's own motion is among the top-k nearest of its group -> bool [rows, top_k],
    rows in the order of `grouped_rows` (for "t2m" / "mdm": the first rows, in the order given).

    Within each group of `batch_size` pairs, row i (text i) ranks the group's motions by Euclidean distance;
    top-k counts whether motion i is among the first k. Incomplete last group dropped (see module doc).
    Ranks compare d²_ij − |t_i|² = |m_j|² − 2·t_i·m_j (the text's own norm is common to its row, so it is
    never computed) in float64, from one stacked matrix product per call.
    """
    text_emb, motion_emb = np.asarray(text_emb), np.asarray(motion_emb)
    _check_pairs(text_emb, motion_emb)
    rows = grouped_rows(len(text_emb), batch_size, convention, rng)  # [G, B]
    t = _take(text_emb, rows).astype(np.float64, copy=False)  # [G, B, D]
    m = _take(motion_emb, rows).astype(np.float64, copy=False)
    key = np.einsum("gjd,gjd->gj", m, m)[:, None, :] - 2.0 * (t @ m.transpose(0, 2, 1))  # [G, B(i), B(j)]
    own = np.diagonal(key, axis1=1, axis2=2)[..., None]  # [G, B, 1]
    # rank of the own motion = its position in a stable argsort of the row: closer motions, plus equally
    # close ones at a smaller column index
    earlier = np.tri(batch_size, k=-1, dtype=bool)  # [i, j]: j < i
    rank = (key < own).sum(-1) + ((key == own) & earlier).sum(-1)  # [G, B]
    return rank.reshape(-1)[:, None] < np.arange(1, top_k + 1)[None, :]


def r_precision(
    text_emb: np.ndarray,
    motion_emb: np.ndarray,
    top_k: int = 3,
    batch_size: int = 32,
    convention: str = "t2m",
    rng=None,
) -> np.ndarray:
    """Fraction of texts whose own motion is among the top-k nearest of its group -> array[top_k]
    (the mean of `r_precision_hits` over rows)."""
    return r_precision_hits(text_emb, motion_emb, top_k, batch_size, convention, rng).mean(axis=0)


def matching_score(
    text_emb: np.ndarray, motion_emb: np.ndarray, batch_size: int = 32, convention: str = "t2m", rng=None
) -> float:
    """MM-Dist: mean distance between matched text and motion embeddings over the rows R-precision uses."""
    text_emb, motion_emb = np.asarray(text_emb), np.asarray(motion_emb)
    _check_pairs(text_emb, motion_emb)
    rows = grouped_rows(len(text_emb), batch_size, convention, rng).reshape(-1)
    if np.array_equal(rows, np.arange(rows.size)):
        diff = np.subtract(text_emb[: rows.size], motion_emb[: rows.size], dtype=np.float64)
    else:
        diff = np.subtract(text_emb[rows], motion_emb[rows], dtype=np.float64)
    return float(np.sqrt(np.einsum("nd,nd->n", diff, diff)).mean())


def activation_statistics(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (np.cov, rowvar=False, ddof 1) of embeddings [N, D], in float64.
    Centring converts float32 input in the same pass; `c.T @ c` is one symmetric rank-k product (syrk)."""
    emb = np.asarray(emb)
    if emb.ndim != 2 or len(emb) < 2:
        raise UserError(f"FID needs at least 2 embeddings of shape [N, D], got {tuple(emb.shape)}")
    mu = emb.mean(axis=0, dtype=np.float64)
    centred = np.subtract(emb, mu, dtype=np.float64)
    return mu, (centred.T @ centred) / (len(emb) - 1)


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr sqrt(s1 s2) for symmetric PSD s1, s2, without the general `sqrtm` of the reference.

    The eigenvalues of s1 s2 are real and non-negative, and the trace of its square root is the sum of their
    square roots. LAPACK's generalized symmetric-definite solver computes them directly (sygv, itype 2:
    A·B·x = λx, with B = s1 factored by Cholesky and A = s2 reduced in place by sygst), ~10x cheaper than
    sqrtm at D = 512. A singular s1 (fewer samples than dimensions, constant columns) falls back to the
    similar symmetric matrix Fᵀ s2 F with s1 = F Fᵀ from `eigh`."""
    from scipy.linalg import LinAlgError, eigh

    try:
        eig = eigh(s2, s1, type=2, eigvals_only=True, driver="gv", check_finite=False)
    except LinAlgError:
        w, v = np.linalg.eigh(s1)
        factor = v * np.sqrt(np.clip(w, 0.0, None))
        m = factor.T @ s2 @ factor
        eig = np.linalg.eigvalsh((m + m.T) / 2.0)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance(
    mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray, eps: float = 1e-6
) -> float:
    """‖mu1 − mu2‖² + Tr(s1 + s2 − 2·sqrt(s1·s2)); when the trace term is not finite, eps·I is added to both
    covariances first (the reference's fallback). Symmetric in its two Gaussians."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(s1, np.float64)), np.atleast_2d(np.asarray(s2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise UserError(f"FID statistics differ in size: {mu1.shape}/{s1.shape} vs {mu2.shape}/{s2.shape}")
    diff = mu1 - mu2
    tr_covmean = _trace_sqrt_product(s1, s2)
    if not np.isfinite(tr_covmean):
        offset = np.eye(len(s1)) * eps
        tr_covmean = _trace_sqrt_product(s1 + offset, s2 + offset)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def fid(real_emb: np.ndarray, gen_emb: np.ndarray) -> float:
    """Fréchet distance between the Gaussian statistics of real and generated embeddings [N, D]."""
    mu_r, s_r = activation_statistics(real_emb)
    mu_g, s_g = activation_statistics(gen_emb)
    return frechet_distance(mu_r, s_r, mu_g, s_g)


def diversity(emb: np.ndarray, times: int = 300, rng=None) -> float:
    """Mean distance of `times` random pairs: first = rng.choice(N, times, replace=False), second likewise."""
    emb = np.asarray(emb)
    if emb.ndim != 2 or len(emb) <= times:
        raise UserError(f"Diversity with times={times} needs more than {times} embeddings [N, D], got {emb.shape}")
    rng = np.random.default_rng() if rng is None else rng
    first = rng.choice(len(emb), times, replace=False)
    second = rng.choice(len(emb), times, replace=False)
    return _mean_distance(emb[first], emb[second])


def multimodality(emb: np.ndarray, times: int = 10, rng=None) -> float:
    """MultiModality of emb [texts, repeats, D]: the same `times` random pairs of repeats for every text
    (first = rng.choice(repeats, times, replace=False), second likewise), mean distance over texts and pairs."""
    emb = np.asarray(emb)
    if emb.ndim != 3 or emb.shape[1] <= times:
        raise UserError(
            f"MultiModality with times={times} needs embeddings [texts, repeats > {times}, D], got {emb.shape}"
        )
    rng = np.random.default_rng() if rng is None else rng
    first = rng.choice(emb.shape[1], times, replace=False)
    second = rng.choice(emb.shape[1], times, replace=False)
    return _mean_distance(emb[:, first], emb[:, second])


def _mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Euclidean distance of matching rows, computed in the input's dtype as the reference does
    (float32 embeddings stay float32: nothing but the drawn rows is touched), averaged in float64."""
    diff = np.subtract(a, b)
    return float(np.sqrt(np.einsum("...d,...d->...", diff, diff)).mean(dtype=np.float64))


def summarize(values) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Mean and 95% half-width 1.96·std(ddof 0)/√R over replications (axis 0), as the reference reports."""
    values = np.asarray(values, dtype=np.float64)
    replications = values.shape[0]
    mean = values.mean(axis=0)
    ci95 = 1.96 * values.std(axis=0) / np.sqrt(replications)
    if values.ndim == 1:
        return float(mean), float(ci95)
    return mean, ci95

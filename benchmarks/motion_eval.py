"""Time genpref's T2M metric computations against per-batch numpy loops written like the reference.

    python benchmarks/motion_eval.py [--motions 4384] [--replications 20] [--dim 512] [--threads 1] [--passes 3]

Workload per replication (what MDM's eval_humanml.py computes from embeddings): R-precision top-1/2/3
and MM-Dist over groups of 32 for the generated and the real motions, FID between them, Diversity
(300 pairs) of both. Inputs are random float32 embeddings of the HumanML3D test-set size. The
"reference" column loops over batches as text-to-motion `utils/metrics.py` is used (distance matrix,
argsort, top-k by a loop over k, trace) and takes FID through `scipy.linalg.sqrtm`; the values of the
two are compared before the times are printed. Run by hand; not part of the test suite.

BLAS runs on `--threads` threads (default 1, set before numpy loads): on a shared machine, OpenBLAS
threads that wait for a busy core make single timings vary 10-40x, which says nothing about the code.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if __name__ == "__main__":  # BLAS reads its thread count once, when numpy is imported
    _threads = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "1"
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _threads

import numpy as np  # noqa: E402
from scipy import linalg  # noqa: E402

from motion import metrics  # noqa: E402

# ---- the reference, per batch (written after text-to-motion utils/metrics.py) -------------------------


def ref_distance(m1, m2):
    return np.sqrt(-2 * np.dot(m1, m2.T) + np.sum(np.square(m1), axis=1, keepdims=True) + np.sum(np.square(m2), axis=1))


def ref_top_k(argsorted, top_k):
    size = argsorted.shape[0]
    truth = np.expand_dims(np.arange(size), 1).repeat(size, 1)
    hits = argsorted == truth
    correct, columns = False, []
    for i in range(top_k):
        correct = correct | hits[:, i]
        columns.append(correct[:, None])
    return np.concatenate(columns, axis=1)


def ref_matching(text, motion, group=32):
    r_sum, mm_sum, size = 0, 0.0, 0
    for start in range(0, len(text) - group + 1, group):
        dist = ref_distance(text[start : start + group], motion[start : start + group])
        mm_sum += dist.trace()
        r_sum = r_sum + ref_top_k(np.argsort(dist, axis=1), 3).sum(axis=0)
        size += group
    return r_sum / size, mm_sum / size


def ref_fid(real, gen):
    mu1, mu2 = real.mean(0), gen.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(gen, rowvar=False)
    covmean = linalg.sqrtm(s1.dot(s2))
    covmean = covmean.real
    diff = mu1 - mu2
    return diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def ref_diversity(emb, times, rng):
    first = rng.choice(len(emb), times, replace=False)
    second = rng.choice(len(emb), times, replace=False)
    return linalg.norm(emb[first] - emb[second], axis=1).mean()


def reference_replication(text, real, gen, rng):
    out = {}
    out["r_gen"], out["mm_gen"] = ref_matching(text, gen)
    out["r_real"], out["mm_real"] = ref_matching(text, real)
    out["fid"] = ref_fid(real, gen)
    out["div_gen"] = ref_diversity(gen, 300, rng)
    out["div_real"] = ref_diversity(real, 300, rng)
    return out


def genpref_replication(text, real, gen, rng):
    return {
        "r_gen": metrics.r_precision(text, gen),
        "mm_gen": metrics.matching_score(text, gen),
        "r_real": metrics.r_precision(text, real),
        "mm_real": metrics.matching_score(text, real),
        "fid": metrics.fid(real, gen),
        "div_gen": metrics.diversity(gen, 300, rng),
        "div_real": metrics.diversity(real, 300, rng),
    }


def ref_r_precision(text, motion, group=32):  # the loop above without the trace: R-precision alone
    r_sum, size = 0, 0
    for start in range(0, len(text) - group + 1, group):
        dist = ref_distance(text[start : start + group], motion[start : start + group])
        r_sum = r_sum + ref_top_k(np.argsort(dist, axis=1), 3).sum(axis=0)
        size += group
    return r_sum / size


def ref_mm_dist(text, motion, group=32):  # the loop without the ranks: MM-Dist alone
    mm_sum, size = 0.0, 0
    for start in range(0, len(text) - group + 1, group):
        mm_sum += ref_distance(text[start : start + group], motion[start : start + group]).trace()
        size += group
    return mm_sum / size


def ref_multimodality(emb, times, rng):
    first = rng.choice(emb.shape[1], times, replace=False)
    second = rng.choice(emb.shape[1], times, replace=False)
    return linalg.norm(emb[:, first] - emb[:, second], axis=2).mean()


def _timed(fn, data, passes: int = 3) -> tuple[float, list]:
    """Seconds for fn over every replication's data (the fastest of `passes` passes after a warm-up call:
    on a shared machine the slowest passes measure the neighbours), and the results."""
    fn(*data[0])
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        out = [fn(*d) for d in data]
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--motions", type=int, default=4384, help="test-set size (HumanML3D: 4384)")
    parser.add_argument("--replications", type=int, default=20, help="replications (protocol: 20)")
    parser.add_argument("--dim", type=int, default=512, help="embedding size (T2M evaluator: 512)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads for both implementations")
    parser.add_argument("--passes", type=int, default=3, help="timed passes; the fastest counts")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(args.dim, args.dim)) / np.sqrt(args.dim)
    data = []
    for _ in range(args.replications):
        real = (rng.normal(size=(args.motions, args.dim)) @ mix).astype(np.float32)
        # text noise chosen so that real R-precision top-1 is ~0.56, as for the released evaluator (0.51)
        text = (real + rng.normal(scale=10.0, size=real.shape)).astype(np.float32)
        gen = (real + rng.normal(scale=0.5, size=real.shape) + 0.2).astype(np.float32)
        data.append((text, real, gen))

    times, results = {}, {}
    for name, fn in (("reference loops", reference_replication), ("genpref", genpref_replication)):
        times[name], results[name] = _timed(lambda *d, fn=fn: fn(*d, np.random.default_rng(1)), data, args.passes)

    ref, ours = results["reference loops"], results["genpref"]
    for key in ref[0]:
        a = np.array([r[key] for r in ref], dtype=np.float64)
        b = np.array([r[key] for r in ours], dtype=np.float64)
        print(f"{key:<9} max |reference - genpref| = {np.abs(a - b).max():.2e}   (values ~{np.abs(a).mean():.3f})")
    print(f"R-precision top-1 of the real set: {ours[0]['r_real'][0]:.3f}, FID ~{ours[0]['fid']:.2f}")
    print(f"{args.motions} motions x {args.replications} replications, dim {args.dim}, {args.threads} BLAS thread(s)")
    print("whole metric pass (both sets' R-precision, MM-Dist, Diversity; FID):")
    for name, seconds in times.items():
        print(f"  {name:<16} {seconds:8.2f} s")
    print(f"  speed-up         {times['reference loops'] / times['genpref']:8.1f}x")

    mm_data = [(np.random.default_rng(i).normal(size=(100, 30, args.dim)).astype(np.float32),) for i in range(args.replications)]
    per_metric = {  # name: (reference, genpref, inputs of one replication)
        "R-precision": (ref_r_precision, metrics.r_precision, [(t, g) for t, _, g in data]),
        "MM-Dist": (ref_mm_dist, metrics.matching_score, [(t, g) for t, _, g in data]),
        "FID": (ref_fid, metrics.fid, [(r, g) for _, r, g in data]),
        "Diversity": (lambda e: ref_diversity(e, 300, np.random.default_rng(2)),
                      lambda e: metrics.diversity(e, 300, np.random.default_rng(2)), [(g,) for _, _, g in data]),
        "MultiModality": (lambda e: ref_multimodality(e, 10, np.random.default_rng(3)),
                          lambda e: metrics.multimodality(e, 10, np.random.default_rng(3)), mm_data),
    }  # fmt: skip
    print("per metric, all replications (s), reference / genpref:")
    for label, (ref_fn, our_fn, inputs) in per_metric.items():
        ref_s, ref_out = _timed(ref_fn, inputs, args.passes)
        our_s, our_out = _timed(our_fn, inputs, args.passes)
        gap = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) for a, b in zip(ref_out, our_out))
        print(f"  {label:<14} {ref_s:8.3f} {our_s:8.3f}   {ref_s / our_s:6.1f}x   max |diff| {gap:.1e}")


if __name__ == "__main__":
    main()

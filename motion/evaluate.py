"""The T2M evaluation protocol around a generator: R replications of MM-Dist, R-precision, FID, Diversity (+ MM).

`evaluate(evaluator, vectorizer, split, generate)` runs what text-to-motion / MDM / MLD report:
each replication draws a pass over the test split (shuffled order, one random caption and a crop to a
multiple of 4 frames per entry, `eval_data.sample_pass`), asks `generate(texts, lengths, seed)` for
de-normalised HumanML3D features of those lengths in batches of `batch_size`, normalises them with the
EVALUATOR's mean/std (not the model's), embeds them, and scores them against the real motions of the
same pass. R-precision and MM-Dist use groups of exactly 32 rows whatever the generation batch; all
metrics use the rows of complete groups only (the reference's drop_last loaders). Real embeddings depend
only on the data, the evaluator and the seed: they are computed once per replication and cached as npz
files keyed by a hash of all three, so evaluating several checkpoints embeds the test set once.

Differences from MDM's `eval_humanml.py`, all deliberate: the real and generated rows of a replication
share one grouping (the reference shuffles the two loaders independently; expectations are equal,
variance lower); caption lengths count sos..eos (MDM issue #182); frames after each length are zeroed
before the evaluator sees them (MDM leaves the model's output there); MultiModality uses `mm_texts`
texts (100, as the papers state; MDM rounds up to whole batches, 128).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from genpref.errors import UserError
from motion import metrics
from motion.eval_data import EvalPass, EvalSplit, load_split, pad_batch, sample_pass
from motion.evaluator import Evaluator
from motion.glove import WordVectorizer

GROUP = 32  # R-precision group size of the protocol
PROTOCOL_VERSION = "t2m-eval-1"  # bump when the sampling of a pass changes: old caches stop matching

Generate = Callable[[list[str], np.ndarray, int], "np.ndarray | torch.Tensor"]
METRIC_NAMES = ("R_precision_top1", "R_precision_top2", "R_precision_top3", "MM_Dist", "FID", "Diversity")


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def _embed_motions(evaluator: Evaluator, motions: Sequence[np.ndarray], chunk: int = 256) -> np.ndarray:
    """De-normalised motions (any lengths) -> evaluator embeddings [N, D] float64."""
    out = []
    for start in range(0, len(motions), chunk):
        part = list(motions[start : start + chunk])
        batch = evaluator.normalise(pad_batch(part))
        lengths = np.array([len(m) for m in part])
        out.append(evaluator.embed_motion(batch, lengths).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def _embed_texts(evaluator: Evaluator, vectorizer: WordVectorizer, tokens: list[list[str]], chunk: int = 1024) -> np.ndarray:
    out = []
    for start in range(0, len(tokens), chunk):
        word, pos, cap_lens = vectorizer.encode_batch(tokens[start : start + chunk])
        out.append(evaluator.embed_text(word, pos, cap_lens).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def _evaluator_fingerprint(evaluator: Evaluator, vectorizer: WordVectorizer) -> str:
    digest = hashlib.sha256()
    for module in (evaluator.text_encoder, evaluator.motion_encoder, evaluator.movement_encoder):
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for array in (evaluator.mean, evaluator.std, vectorizer.vectors):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update("|".join(sorted(vectorizer.word_to_index)).encode())
    return digest.hexdigest()


def _real_embeddings(evaluator, vectorizer, sample: EvalPass, cache_file: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Text and real-motion embeddings of one pass, from the cache when it matches the pass."""
    if cache_file is not None and cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as cached:
            if np.array_equal(cached["lengths"], sample.lengths) and np.array_equal(cached["order"], sample.order):
                return cached["text"], cached["motion"]
    text = _embed_texts(evaluator, vectorizer, sample.tokens)
    motion = _embed_motions(evaluator, sample.motions)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.partial.npz")  # processes may race here
        np.savez(partial, text=text, motion=motion, lengths=sample.lengths, order=sample.order)
        partial.replace(cache_file)  # complete files only
    return text, motion


def _generate(generate: Generate, texts: list[str], lengths: np.ndarray, seeds: list[int], batch_size: int,
              bar) -> list[np.ndarray]:  # fmt: skip
    """Generated de-normalised motions, each cut to its length, in the order of `texts`. Under `accelerate
    launch` each process generates every world-th batch (a batch's noise depends only on its seed) and
    all processes receive every motion."""
    from genpref import distributed

    starts = list(range(0, len(texts), batch_size))
    local = {}
    for b in distributed.my_items(len(starts)):
        start = starts[b]
        part_lengths = lengths[start : start + batch_size]
        result = generate(texts[start : start + batch_size], part_lengths, seeds[b])
        result = result.detach().float().cpu().numpy() if isinstance(result, torch.Tensor) else np.asarray(result)
        if result.ndim != 3 or len(result) != len(part_lengths) or result.shape[1] < part_lengths.max():
            raise UserError(
                f"generate() must return de-normalised features [B, T >= {part_lengths.max()}, F] for a batch of "
                f"{len(part_lengths)}, got shape {result.shape}"
            )
        for motion, n in zip(result, part_lengths):
            if not np.isfinite(motion[:n]).all():
                raise UserError(f"generate() returned NaN or inf for the prompt {texts[start]!r} (batch at {start})")
        local[b] = [motion[:n].astype(np.float32) for motion, n in zip(result, part_lengths)]
        bar.update(distributed.covered(b, len(starts)))
    return [motion for batch in distributed.gather_in_order(local, len(starts)) for motion in batch]


def _batch_seeds(seed: int, *key: int, batches: int) -> list[int]:
    states = np.random.SeedSequence([seed, *key]).generate_state(batches)
    return [int(s) for s in states]


def _scores(text: np.ndarray, motion: np.ndarray, convention: str, seed: int, rep: int, diversity_times: int) -> dict:
    """The per-replication metrics of one set of motion embeddings (rows of complete groups only)."""
    r_prec = metrics.r_precision(text, motion, 3, GROUP, convention, np.random.default_rng([seed, rep, 2]))
    scores = {f"R_precision_top{k + 1}": float(r_prec[k]) for k in range(3)}
    scores["MM_Dist"] = metrics.matching_score(text, motion, GROUP, convention, np.random.default_rng([seed, rep, 2]))
    scores["Diversity"] = metrics.diversity(motion, diversity_times, np.random.default_rng([seed, rep, 1]))
    return scores


def evaluate(
    evaluator: Evaluator,
    vectorizer: WordVectorizer,
    split: EvalSplit | str | Path,
    generate: Generate,
    *,
    replications: int = 20,
    batch_size: int = 32,
    mm: bool = False,
    mm_texts: int = 100,
    mm_repeats: int = 30,
    mm_times: int = 10,
    diversity_times: int = 300,
    convention: str = "t2m",
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Run the protocol; returns {"metrics": {name: {"mean", "ci95"}}, "real": {...}, "per_replication",
    "convention", "replications", "items", "rows_used", ...}. `generate(texts, lengths, seed)` must return
    de-normalised features [B, T >= max(lengths), 263] (numpy or torch); `seed` differs per batch, per
    replication and per MultiModality repeat, so a seeded generator is reproducible."""
    if convention not in metrics.CONVENTIONS:
        raise UserError(f"eval convention must be one of {metrics.CONVENTIONS}, got {convention!r}")
    if not isinstance(split, EvalSplit):
        split = load_split(split)
    n = len(split.entries)
    rows = n // GROUP * GROUP
    if rows == 0 or rows <= diversity_times:
        raise UserError(
            f"{split.root} split {split.split!r} has {n} usable items; the protocol needs more than "
            f"{diversity_times} (Diversity pairs) and at least {GROUP} (one R-precision group)"
        )
    if mm and (mm_texts > n or mm_repeats <= mm_times):
        raise UserError(f"MultiModality needs mm_texts <= {n} items and mm_repeats > mm_times ({mm_repeats} <= {mm_times})")
    cache_key = None
    if cache_dir is not None:
        material = f"{PROTOCOL_VERSION}|{split.fingerprint()}|{_evaluator_fingerprint(evaluator, vectorizer)}|{seed}"
        cache_key = hashlib.sha256(material.encode()).hexdigest()[:20]

    batches = -(-rows // batch_size)
    mm_batches = -(-mm_texts // batch_size) * mm_repeats if mm else 0
    per_rep: dict[str, list[float]] = {name: [] for name in METRIC_NAMES}
    per_rep_real: dict[str, list[float]] = {name: [] for name in METRIC_NAMES if name != "FID"}
    if mm:
        per_rep["MultiModality"] = []
    with _progress(replications * (batches + mm_batches), progress, "T2M eval") as bar:
        for rep in range(replications):
            sample = sample_pass(split, np.random.default_rng([seed, rep]))
            # the rows of complete groups only: the reference's DataLoader(drop_last=True)
            sample = EvalPass(sample.order[:rows], sample.captions[:rows], sample.tokens[:rows],
                              sample.motions[:rows], sample.lengths[:rows])  # fmt: skip
            cache_file = None if cache_key is None else Path(cache_dir) / f"real-{cache_key}-r{rep}.npz"
            text_emb, real_emb = _real_embeddings(evaluator, vectorizer, sample, cache_file)
            seeds = _batch_seeds(seed, rep, batches=batches)
            generated = _generate(generate, sample.captions, sample.lengths, seeds, batch_size, bar)
            gen_emb = _embed_motions(evaluator, generated)

            for name, value in _scores(text_emb, gen_emb, convention, seed, rep, diversity_times).items():
                per_rep[name].append(value)
            for name, value in _scores(text_emb, real_emb, convention, seed, rep, diversity_times).items():
                per_rep_real[name].append(value)
            per_rep["FID"].append(metrics.fid(real_emb, gen_emb))
            if mm:
                per_rep["MultiModality"].append(
                    _multimodality(evaluator, generate, sample, seed, rep, batch_size, mm_texts, mm_repeats, mm_times, bar)
                )

    def summary(table: dict[str, list[float]]) -> dict:
        return {name: dict(zip(("mean", "ci95"), metrics.summarize(values))) for name, values in table.items()}

    return {
        "metrics": summary(per_rep),
        "real": summary(per_rep_real),
        "per_replication": per_rep,
        "per_replication_real": per_rep_real,
        "convention": convention,
        "replications": replications,
        "items": n,
        "rows_used": rows,
        "group_size": GROUP,
        "diversity_times": diversity_times,
        "multimodality": {"texts": mm_texts, "repeats": mm_repeats, "times": mm_times} if mm else None,
        "seed": seed,
        "skipped_files": list(split.skipped),
    }


def _multimodality(evaluator, generate, sample: EvalPass, seed, rep, batch_size, mm_texts, mm_repeats, mm_times,
                   bar) -> float:  # fmt: skip
    """`mm_repeats` generations for each of the first `mm_texts` captions of the pass -> MultiModality."""
    texts, lengths = sample.captions[:mm_texts], sample.lengths[:mm_texts]
    per_text_batches = -(-len(texts) // batch_size)
    repeats = []
    for r in range(mm_repeats):
        seeds = _batch_seeds(seed, rep, 1_000_003 + r, batches=per_text_batches)
        repeats.append(_embed_motions(evaluator, _generate(generate, texts, lengths, seeds, batch_size, bar)))
    embeddings = np.stack(repeats, axis=1)  # [texts, repeats, D]
    return metrics.multimodality(embeddings, mm_times, np.random.default_rng([seed, rep, 3]))


def save_samples(motions: Sequence[np.ndarray], captions: Sequence[str], out_dir: str | Path, limit: int = 4) -> list[Path]:
    """Stick-figure GIF + PNG strip for the first `limit` de-normalised feature arrays [T, 263], named
    sample-<i>.gif/.png in `out_dir`, captions as titles (what `genpref eval` writes next to the numbers)."""
    from motion.draw import animate, strip
    from motion.skeleton import recover_from_ric

    out_dir = Path(out_dir)
    written = []
    for i, (features, caption) in enumerate(list(zip(motions, captions))[:limit]):
        joints = recover_from_ric(np.asarray(features, dtype=np.float32))
        written.append(animate(joints, out_dir / f"sample-{i}.gif", title=caption))
        written.append(strip(joints, out_dir / f"sample-{i}.png", title=caption))
    return written


def format_table(results: dict) -> str:
    """A plain-text table: metric, generated mean ± 95% CI, real-data mean ± 95% CI."""
    lines = [
        f"T2M evaluation ({results['convention']} convention, {results['replications']} replications, "
        f"{results['rows_used']} of {results['items']} test items in groups of {results['group_size']})",
        f"{'metric':<18} {'generated':>22} {'real motions':>22}",
    ]
    for name, gen in results["metrics"].items():
        real = results["real"].get(name)
        real_text = f"{real['mean']:.4f} ± {real['ci95']:.4f}" if real else "-"
        lines.append(f"{name:<18} {gen['mean']:>13.4f} ± {gen['ci95']:.4f} {real_text:>22}")
    return "\n".join(lines)

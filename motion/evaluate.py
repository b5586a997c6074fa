"""The T2M evaluation around a generator: R replications of MM-Dist, R-precision, FID, Diversity (+ MM),
following one of the three published protocols (`convention`: "t2m", "mdm", "mld"; motion/eval_protocol.py).

`evaluate(evaluator, vectorizer, split, generate, convention=...)` draws, per replication, passes over the
test split as the reference loaders do (shuffled order, one random caption and a crop to a multiple of 4
frames per entry, `eval_data.sample_pass`), asks `generate(texts, lengths, seed)` for de-normalised
HumanML3D features of those lengths in batches of `batch_size`, normalises them with the EVALUATOR's
mean/std (not the model's), embeds them and scores them. Which passes, how many rows, which rows enter
FID and Diversity, how R-precision groups them and how MultiModality picks its texts is the protocol's;
`padding` says what the evaluator sees after each generated motion's length: the frames `generate`
returned there ("model", what MDM and MLD's evaluations feed it) or zeros ("zero", T2M). The movement
encoder's convolutions reach about 3 frames past a length, so the choice changes the embeddings.

Real embeddings depend only on the data, the evaluator, the seed and the real padding: they are cached as
npz files keyed by a hash of all of them, so evaluating several checkpoints embeds the test set once.
Caption lengths count sos..eos (MDM issue #182).
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
from motion.eval_data import MAX_MOTION_LENGTH, EvalPass, EvalSplit, load_split, pad_batch, sample_pass
from motion.eval_protocol import GROUP, ReplicationPlan, check_padding, get_protocol, plan_replication
from motion.evaluator import Evaluator
from motion.glove import WordVectorizer

PROTOCOL_VERSION = "t2m-eval-2"  # bump when the sampling of a pass changes: old caches stop matching

Generate = Callable[[list[str], np.ndarray, int], "np.ndarray | torch.Tensor"]
METRIC_NAMES = ("R_precision_top1", "R_precision_top2", "R_precision_top3", "MM_Dist", "FID", "Diversity")
# independent random streams of one replication: default_rng([seed, rep, STREAM])
REAL_PASS, DIVERSITY, GROUPING, MM_PAIRS, GEN_PASS, FID_PASS, MM_PICK = None, 1, 2, 3, 10, 11, 12


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def _rng(seed: int, rep: int, stream: int | None) -> np.random.Generator:
    return np.random.default_rng([seed, rep] if stream is None else [seed, rep, stream])


def _embed_padded(evaluator: Evaluator, batch: np.ndarray, lengths: np.ndarray, padding: str) -> np.ndarray:
    """De-normalised motions [B, T, F] with their lengths -> evaluator embeddings [B, D] float64.

    The batch is extended with zeros (in the evaluator's space) to the reference loaders' 196 frames: the
    last convolution window of a motion that ends at the batch's last frame differs from one followed by
    padding, and every reference batch is 196 frames long."""
    normalised = evaluator.normalise(batch)
    if normalised.shape[1] < MAX_MOTION_LENGTH:
        normalised = np.pad(normalised, ((0, 0), (0, MAX_MOTION_LENGTH - normalised.shape[1]), (0, 0)))
    emb = evaluator.embed_motion(normalised, lengths, padding=padding)
    return emb.cpu().numpy().astype(np.float64)


def _embed_real(evaluator: Evaluator, motions: list[np.ndarray], pad_row: np.ndarray | None, chunk: int = 256) -> np.ndarray:
    """Real motions of any length -> embeddings [N, D]; padded with zeros in the evaluator's space, or with
    the de-normalised row `pad_row` (MLD: the model's mean, i.e. zeros in the model's space)."""
    out = []
    for start in range(0, len(motions), chunk):
        part = motions[start : start + chunk]
        batch = pad_batch(part)
        lengths = np.array([len(m) for m in part])
        if pad_row is not None:
            batch[np.arange(batch.shape[1])[None, :] >= lengths[:, None]] = pad_row
        out.append(_embed_padded(evaluator, batch, lengths, "zero" if pad_row is None else "model"))
    return np.concatenate(out)


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


def _real_embeddings(evaluator, vectorizer, sample: EvalPass, pad_row, cache_file: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Text and real-motion embeddings of one pass, from the cache when it matches the pass."""
    if cache_file is not None and cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as cached:
            if np.array_equal(cached["lengths"], sample.lengths) and np.array_equal(cached["order"], sample.order):
                return cached["text"], cached["motion"]
    text = _embed_texts(evaluator, vectorizer, sample.tokens)
    motion = _embed_real(evaluator, sample.motions, pad_row)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.partial.npz")  # processes may race here
        np.savez(partial, text=text, motion=motion, lengths=sample.lengths, order=sample.order)
        partial.replace(cache_file)  # complete files only
    return text, motion


def _check_generated(result, texts: list[str], lengths: np.ndarray, start: int, padding: str) -> np.ndarray:
    result = result.detach().float().cpu().numpy() if isinstance(result, torch.Tensor) else np.asarray(result, np.float32)
    if result.ndim != 3 or len(result) != len(lengths) or result.shape[1] < lengths.max():
        raise UserError(
            f"generate() must return de-normalised features [B, T >= {lengths.max()}, F] for a batch of "
            f"{len(lengths)}, got shape {result.shape}"
        )
    for i, (motion, n) in enumerate(zip(result, lengths)):
        seen = motion if padding == "model" else motion[:n]
        if not np.isfinite(seen).all():
            raise UserError(f"generate() returned NaN or inf for the prompt {texts[i]!r} (batch at {start})")
    return result


def _generate_embeddings(evaluator: Evaluator, generate: Generate, texts: list[str], lengths: np.ndarray,
                         seeds: list[int], batch_size: int, padding: str, bar) -> np.ndarray:  # fmt: skip
    """Evaluator embeddings [N, D] of generated motions, in the order of `texts`. Under `accelerate launch`
    each process generates and embeds every world-th batch (a batch's noise depends only on its seed) and
    all processes receive every embedding."""
    from genpref import distributed

    starts = list(range(0, len(texts), batch_size))
    local = {}
    for b in distributed.my_items(len(starts)):
        start = starts[b]
        part = lengths[start : start + batch_size]
        result = _check_generated(generate(texts[start : start + batch_size], part, seeds[b]), texts[start:], part, start, padding)
        local[b] = _embed_padded(evaluator, result, part, padding)
        bar.update(distributed.covered(b, len(starts)))
    return np.concatenate(distributed.gather_in_order(local, len(starts)))


def _batch_seeds(seed: int, *key: int, batches: int) -> list[int]:
    states = np.random.SeedSequence([seed, *key]).generate_state(batches)
    return [int(s) for s in states]


def _head(sample: EvalPass, rows: int) -> EvalPass:
    return EvalPass(sample.order[:rows], sample.captions[:rows], sample.tokens[:rows], sample.motions[:rows],
                    sample.lengths[:rows])  # fmt: skip


def _scores(text: np.ndarray, motion: np.ndarray, convention: str, seed: int, rep: int, diversity_times: int) -> dict:
    """R-precision, MM-Dist (groups of 32 as the protocol forms them; MLD's permutation is the same for the
    real and the generated rows) and Diversity of one set of rows."""
    r_prec = metrics.r_precision(text, motion, 3, GROUP, convention, _rng(seed, rep, GROUPING))
    scores = {f"R_precision_top{k + 1}": float(r_prec[k]) for k in range(3)}
    scores["MM_Dist"] = metrics.matching_score(text, motion, GROUP, convention, _rng(seed, rep, GROUPING))
    scores["Diversity"] = metrics.diversity(motion, diversity_times, _rng(seed, rep, DIVERSITY))
    return scores


def evaluate(
    evaluator: Evaluator,
    vectorizer: WordVectorizer,
    split: EvalSplit | str | Path,
    generate: Generate,
    *,
    convention: str = "t2m",
    padding: str | None = None,
    samples_limit: int | None = None,
    replications: int = 20,
    batch_size: int = 32,
    mm: bool = False,
    mm_texts: int = 100,
    mm_repeats: int = 30,
    mm_times: int = 10,
    diversity_times: int = 300,
    real_pad: np.ndarray | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Run the protocol `convention` ("t2m" | "mdm" | "mld"); returns {"metrics": {name: {"mean", "ci95"}},
    "real": {...}, "per_replication", "convention", "padding", "protocol", ...}.

    `generate(texts, lengths, seed)` must return de-normalised features [B, T >= max(lengths), 263] (numpy
    or torch); with padding "model" the frames after each length are shown to the evaluator, so return the
    model's full output (MDM: all max_motion_length frames). `seed` differs per batch, replication and
    MultiModality repeat, so a seeded generator is reproducible. `padding` defaults to the protocol's;
    `samples_limit` overrides MDM's 1000 generated rows (0: the whole split). `real_pad`: a de-normalised
    feature row the real motions are padded with when padding is "model" and the protocol is MLD's (its
    model mean: MLD pads in the model's normalised space); None pads them with zeros in the evaluator's."""
    protocol = get_protocol(convention)
    padding = check_padding(padding or protocol.padding)
    if not isinstance(split, EvalSplit):
        split = load_split(split)
    n = len(split.entries)
    probe = plan_replication(protocol, n, samples_limit=samples_limit) if n >= GROUP else None
    if probe is None or min(probe.gen_rows, probe.real_rows) <= diversity_times:
        raise UserError(
            f"{split.root} split {split.split!r} has {n} usable items; the {convention} protocol needs more than "
            f"{diversity_times} scored rows (Diversity pairs) and at least {GROUP} (one R-precision group)"
        )
    if mm and (mm_texts >= n or mm_repeats <= mm_times):
        raise UserError(f"MultiModality needs mm_texts < {n} items and mm_repeats > mm_times ({mm_repeats} <= {mm_times})")
    pad_row = None if real_pad is None or padding == "zero" or not protocol.paired else np.asarray(real_pad, np.float32)
    cache_key = None
    if cache_dir is not None:
        pad_key = "zero" if pad_row is None else hashlib.sha256(pad_row.tobytes()).hexdigest()[:12]
        material = f"{PROTOCOL_VERSION}|{split.fingerprint()}|{_evaluator_fingerprint(evaluator, vectorizer)}|{seed}|{pad_key}"
        cache_key = hashlib.sha256(material.encode()).hexdigest()[:20]

    def real_pass(rep: int, stream, rows: int, label: str):
        sample = _head(sample_pass(split, _rng(seed, rep, stream)), rows)
        cache_file = None if cache_key is None else Path(cache_dir) / f"real-{cache_key}-r{rep}{label}.npz"
        return sample, *_real_embeddings(evaluator, vectorizer, sample, pad_row, cache_file)

    mm_guess = (mm_texts // GROUP + 1) * GROUP if protocol.mm_selection == "batches" else mm_texts  # for the bar
    total = replications * (-(-probe.gen_pass_rows // batch_size) + (mm_repeats * -(-mm_guess // batch_size) if mm else 0))
    mm_counts: list[int] = []
    per_rep: dict[str, list[float]] = {name: [] for name in METRIC_NAMES}
    per_rep_real: dict[str, list[float]] = {name: [] for name in METRIC_NAMES if name != "FID"}
    if mm:
        per_rep["MultiModality"] = []
    with _progress(total, progress, f"T2M eval ({convention})") as bar:
        for rep in range(replications):
            plan = plan_replication(protocol, n, _rng(seed, rep, MM_PICK), samples_limit=samples_limit,
                                    mm_texts=mm_texts if mm else 0)  # fmt: skip
            real, text_emb, real_emb = real_pass(rep, REAL_PASS, plan.real_rows, "")
            gen_pass = real if protocol.paired else _head(sample_pass(split, _rng(seed, rep, GEN_PASS)), plan.gen_pass_rows)
            seeds = _batch_seeds(seed, rep, batches=-(-plan.gen_pass_rows // batch_size))
            gen_all = _generate_embeddings(evaluator, generate, gen_pass.captions, gen_pass.lengths, seeds, batch_size, padding, bar)
            gen_emb = gen_all[: plan.gen_rows]
            gen_text = text_emb if protocol.paired else _embed_texts(evaluator, vectorizer, gen_pass.tokens[: plan.gen_rows])
            fid_real = real_pass(rep, FID_PASS, plan.fid_real_rows, "f")[2] if protocol.fid_real_pass else real_emb

            for name, value in _scores(gen_text, gen_emb, convention, seed, rep, diversity_times).items():
                per_rep[name].append(value)
            for name, value in _scores(text_emb, real_emb, convention, seed, rep, diversity_times).items():
                per_rep_real[name].append(value)
            per_rep["FID"].append(metrics.fid(fid_real, gen_emb))
            if mm:
                texts, lengths = _mm_texts(split, gen_pass, plan, _rng(seed, rep, MM_PICK + 1))
                mm_counts.append(len(texts))
                per_rep["MultiModality"].append(_multimodality(
                    evaluator, generate, texts, lengths, seed, rep, batch_size, mm_repeats, mm_times, padding, bar))  # fmt: skip

    def summary(table: dict[str, list[float]]) -> dict:
        return {name: dict(zip(("mean", "ci95"), metrics.summarize(values))) for name, values in table.items()}

    return {
        "metrics": summary(per_rep),
        "real": summary(per_rep_real),
        "per_replication": per_rep,
        "per_replication_real": per_rep_real,
        "convention": convention,
        "padding": padding,
        "real_padding": "zero" if pad_row is None else "model mean",
        "protocol": _choices(protocol, probe, samples_limit),
        "replications": replications,
        "items": n,
        "rows_used": probe.gen_rows,
        "real_rows_used": probe.real_rows,
        "group_size": GROUP,
        "diversity_times": diversity_times,
        "multimodality": {"texts": max(mm_counts, default=0), "repeats": mm_repeats, "times": mm_times} if mm else None,
        "seed": seed,
        "skipped_files": list(split.skipped),
    }


def _choices(protocol, probe: ReplicationPlan, samples_limit) -> dict:
    """Every choice of the protocol, in words, for the report."""
    limit = protocol.samples_limit if samples_limit is None else (samples_limit or None)
    return {
        "generated rows": f"{probe.gen_rows} per replication" + (f" (batches until {limit})" if limit and not protocol.paired else ""),
        "generation pass": "the real pass (same texts and lengths)" if protocol.paired else "its own shuffled pass",
        "R-precision groups": "one permutation of all rows, 32 each" if protocol.permute_groups else "32 consecutive rows",
        "FID/Diversity rows": "all rows" if protocol.all_rows_for_fid else "complete groups of 32",
        "FID real side": "a second real pass" if protocol.fid_real_pass else "the same real pass",
        "MultiModality texts": {"items": "random items of the generation pass", "batches": "random whole generation batches",
                                "entries": "random entries, a pass of their own"}[protocol.mm_selection],  # fmt: skip
    }


def _mm_texts(split: EvalSplit, gen_pass: EvalPass, plan: ReplicationPlan, rng) -> tuple[list[str], np.ndarray]:
    """Captions and lengths that MultiModality generates `mm_repeats` times: rows of the generation pass
    (T2M, MDM) or a fresh draw of caption and crop for the chosen entries (MLD's mm_mode)."""
    if plan.mm_rows is not None:
        return [gen_pass.captions[i] for i in plan.mm_rows], gen_pass.lengths[plan.mm_rows]
    sub = EvalSplit(split.root, split.split, [split.entries[i] for i in plan.mm_entries])
    drawn = sample_pass(sub, rng)
    return drawn.captions, drawn.lengths


def _multimodality(evaluator, generate, texts, lengths, seed, rep, batch_size, mm_repeats, mm_times, padding, bar) -> float:
    """`mm_repeats` generations of each text at its length -> MultiModality."""
    per_text_batches = -(-len(texts) // batch_size)
    repeats = []
    for r in range(mm_repeats):
        seeds = _batch_seeds(seed, rep, 1_000_003 + r, batches=per_text_batches)
        repeats.append(_generate_embeddings(evaluator, generate, texts, lengths, seeds, batch_size, padding, bar))
    embeddings = np.stack(repeats, axis=1)  # [texts, repeats, D]
    return metrics.multimodality(embeddings, mm_times, _rng(seed, rep, MM_PAIRS))


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
        f"T2M evaluation ({results['convention']} convention, padding {results['padding']}, "
        f"{results['replications']} replications, {results['rows_used']} generated rows and "
        f"{results['real_rows_used']} real of {results['items']} test items)",
        *(f"  {key}: {value}" for key, value in results.get("protocol", {}).items()),
        f"  real motions padded with: {results.get('real_padding', 'zero')}",
        f"{'metric':<18} {'generated':>22} {'real motions':>22}",
    ]
    for name, gen in results["metrics"].items():
        real = results["real"].get(name)
        real_text = f"{real['mean']:.4f} ± {real['ci95']:.4f}" if real else "-"
        lines.append(f"{name:<18} {gen['mean']:>13.4f} ± {gen['ci95']:.4f} {real_text:>22}")
    return "\n".join(lines)

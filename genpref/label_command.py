"""`genpref label`: an unlabelled set of samples with prompts -> pairs.jsonl and ratings.jsonl, scored by any reward
model or ensemble (`reward.models`, `reward.normalize`) and turned into pairs and ratings by genpref/label.py under
the `label:` settings; or, with `--from-clusters RATED.jsonl`, ratings carried from a small rated set to the
unrated samples by k-means clusters of embeddings. The files are what `data.pairs` / `data.ratings` read.

The modality (the package of model.kind) reads, decodes and embeds through `<modality>.label`, looked up by name:
    read_input(path) -> [(file, prompt)]        the unlabelled samples; UserError naming the file
    load(files) -> [sample]                      decoded as reward models take them (PIL images, [T, 263] motions)
    embedder(models, mode, device) -> (description, fn(samples, prompts) -> np.ndarray [B, D])
    PAIR_KEYS (winner key, loser key), SAMPLE_KEY (a rating row's sample key), RATED_KEYS (accepted when reading)
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
from pathlib import Path

import numpy as np

from genpref import label as lab
from genpref.config import Config, ConfigError
from genpref.errors import UserError
from genpref.textio import jsonl_records

MODALITIES = {"image": "image.label", "motion": "motion.label"}  # package of model.kind -> reader module
FORMAT = "genpref-label/1"
PAIRS, RATINGS, SUMMARY = "pairs.jsonl", "ratings.jsonl", "label.json"


# ---------------------------------------------------------------------------------------------- config


def modality(cfg: Config) -> str:
    from genpref import build

    if cfg.model.kind not in build.model_kinds():
        raise build._name_error("model.kind", cfg.model.kind, build.model_kinds())
    package = build.model_kinds()[cfg.model.kind].split(".")[0]
    if package not in MODALITIES:
        raise ConfigError(f"'model.kind' {cfg.model.kind!r}: genpref label needs an image or motion model kind "
                          "(it picks the data readers and the file format)")
    return package


def check(cfg: Config, from_clusters: str | None) -> str:
    """The modality, once the keys `genpref label` reads are valid."""
    from genpref import build

    name = modality(cfg)
    for key in ("label.pairs", "label.ties", "label.rating", "label.embedding", "reward.normalize"):
        if build._get(cfg, key) not in build.CHOICES[key]:
            raise build._name_error(key, build._get(cfg, key), build.CHOICES[key])
    for i, spec in enumerate(cfg.reward.models):
        if spec.name not in build.rewards():
            raise build._name_error(f"reward.models[{i}].name", spec.name, build.rewards())
    build.check_modality(cfg)
    if not from_clusters and not cfg.reward.models:
        raise ConfigError("genpref label scores samples with reward.models: set one or more reward models "
                          "(or give --from-clusters RATED.jsonl to carry ratings by clusters)")
    if not from_clusters and cfg.label.rating == "threshold" and cfg.label.rating_threshold is None:
        raise ConfigError("'label.rating_threshold' is not set: label.rating=threshold rates a sample 1 when its score reaches it")
    return name


def _out_dir(out: str | Path, overwrite: bool) -> Path:
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    if (out / SUMMARY).exists() and not overwrite:
        raise UserError(f"--out {out} already holds a labelling ({SUMMARY}); set train.overwrite=true to replace it")
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY).unlink(missing_ok=True)  # written last: a directory without it holds no finished labelling
    return out


# ---------------------------------------------------------------------------------------------- files


def _relative(file: Path, out: Path) -> str:
    """The sample's path relative to the output directory: the readers resolve paths against the jsonl file."""
    return Path(os.path.relpath(Path(file).resolve(), out.resolve())).as_posix()


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)


def read_rated(path: str | Path, keys: tuple[str, ...]) -> list[tuple[Path, str, float]]:
    """--from-clusters: a ratings jsonl (what data.ratings reads) -> [(file, prompt, rating)], paths relative to it."""
    path = Path(path).expanduser()
    where = f"--from-clusters {path}"
    if not path.is_file():
        raise UserError(f"{where}: file not found")
    rows = []
    for n, rec in jsonl_records(path, "--from-clusters"):
        sample = next((rec[k] for k in keys if k in rec), None)
        rating = rec.get("rating")
        if sample is None or not isinstance(rec.get("prompt"), str) or rating is None:
            raise UserError(f"{where} line {n}: needs keys prompt, {' or '.join(keys)}, rating")
        if isinstance(rating, bool) or not isinstance(rating, (int, float)) or not 0 <= rating <= 1:
            raise UserError(f"{where} line {n}: rating {rating!r} is not a number in [0, 1]")
        file = path.parent / str(sample)
        if not file.is_file():
            raise UserError(f"{where} line {n}: {file} not found")
        rows.append((file, rec["prompt"].strip(), float(rating)))
    if not rows:
        raise UserError(f"{where}: no rated samples")
    return rows


# ---------------------------------------------------------------------------------------------- scoring


def _batches(n: int, size: int, desc: str):
    from tqdm.auto import tqdm

    starts = range(0, n, size)
    return ((i, min(i + size, n)) for i in tqdm(starts, desc=desc, total=len(starts), dynamic_ncols=True))


def _reward_names(cfg: Config) -> list[str]:
    names = [s.name for s in cfg.reward.models]
    return [n if names.count(n) == 1 else f"{n}[{i}]" for i, n in enumerate(names)]


def score_all(reader, models, names, files, prompts, batch_size: int):
    """[models, N] scores, a batch of decoded samples at a time; UserError naming the file of a non-finite score."""
    out = np.zeros((len(models), len(files)))
    for i, j in _batches(len(files), batch_size, "score"):
        samples = reader.load(files[i:j])
        for m, model in enumerate(models):
            s = model.score(samples, prompts[i:j]).detach().float().cpu().numpy().reshape(-1)
            if len(s) != j - i:
                raise UserError(f"reward {names[m]} returned {len(s)} scores for {j - i} samples")
            bad = np.flatnonzero(~np.isfinite(s))
            if len(bad):
                raise UserError(f"reward {names[m]} gave {s[bad[0]]} for {files[i + bad[0]]}")
            out[m, i:j] = s
    return out


def combine(per_model: np.ndarray, weights: list[float], normalize: str) -> np.ndarray:
    """Σ weight·score; with reward.normalize=zscore each model's scores standardised over the WHOLE set first (as
    genpref.rewards.zscore does over a batch), so the labels do not depend on how samples were batched."""
    import torch

    from genpref.rewards import zscore

    total = np.zeros(per_model.shape[1])
    for s, w in zip(per_model, weights):
        total += w * (zscore(torch.from_numpy(s)).numpy() if normalize == "zscore" else s)
    return total


def _build_models(cfg: Config, device):
    from genpref import build

    return [importlib.import_module(build.rewards()[s.name]).build_reward(s, cfg, device) for s in cfg.reward.models]


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------------------------------- the command


def run(cfg: Config, input: str | Path, out: str | Path, from_clusters: str | None = None, say=print) -> dict:
    """`genpref label`: writes OUT/ratings.jsonl (and pairs.jsonl when scoring) and OUT/label.json; returns the summary."""
    name = check(cfg, from_clusters)
    reader = importlib.import_module(MODALITIES[name])
    out = _out_dir(out, cfg.train.overwrite)
    samples = reader.read_input(Path(input).expanduser())
    summary = {
        "format": FORMAT, "modality": name, "input": str(Path(input).expanduser().resolve()),
        "rewards": [{"name": s.name, "path": s.path, "weight": s.weight} for s in cfg.reward.models],
        "normalize": cfg.reward.normalize,
        "settings": {**dataclasses.asdict(cfg.label), "label_scale": cfg.online.label_scale, "seed": cfg.train.seed},
    }
    if from_clusters:
        summary.update(_from_clusters(cfg, reader, samples, from_clusters, out))
    else:
        summary.update(_score_and_label(cfg, reader, samples, out))
    tmp = out / f".{SUMMARY}.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / SUMMARY)
    c = summary["counts"]
    if from_clusters:
        say(f"wrote {out / RATINGS}: {c['ratings']} ratings of {c['samples']} samples ({c['from_clusters']} from "
            f"{c['clusters']} clusters, {c['kept']} already rated, {c['unrated']} left unrated: no rated sample in their cluster)")
    else:
        say(f"wrote {out / PAIRS} ({c['pairs']} pairs, {c['ties_written']} ties written, {c['ties_dropped']} dropped) and "
            f"{out / RATINGS} ({c['ratings']} ratings) from {c['samples']} samples of {c['prompts']} prompts")
    return summary


def _score_and_label(cfg: Config, reader, samples, out: Path) -> dict:
    lc = cfg.label
    files, prompts = [f for f, _ in samples], [p for _, p in samples]
    names = _reward_names(cfg)
    per_model = score_all(reader, _build_models(cfg, _device()), names, files, prompts, lc.batch_size)
    scores = combine(per_model, [s.weight for s in cfg.reward.models], cfg.reward.normalize)
    pairs, dropped = lab.label_pairs(prompts, scores.tolist(), scheme=lc.pairs, min_gap=lc.min_gap, ties=lc.ties,
                                     scale=cfg.online.label_scale, soft=lc.soft, max_pairs=lc.max_pairs_per_prompt)
    try:
        rated = lab.ratings(scores.tolist(), lc.rating, lc.rating_threshold, lc.rating_quantile)
    except ValueError as err:
        raise UserError(f"label.rating={lc.rating}: {err}; use label.rating=minmax") from None
    w_key, l_key = reader.PAIR_KEYS
    pair_rows = [{"prompt": prompts[p.winner], w_key: _relative(files[p.winner], out), l_key: _relative(files[p.loser], out),
                  "label": p.label, "gap": p.gap} for p in pairs]
    rating_rows = [{"prompt": prompts[i], reader.SAMPLE_KEY: _relative(files[i], out), "rating": rated[i], "score": float(scores[i]),
                    "scores": {n: float(per_model[m, i]) for m, n in enumerate(names)}} for i in range(len(files))]
    _write_jsonl(out / PAIRS, pair_rows)
    _write_jsonl(out / RATINGS, rating_rows)
    groups = lab.group_by_prompt(prompts)
    return {"mode": "score", "counts": {
        "samples": len(files), "prompts": len(groups), "prompts_with_one_sample": sum(len(g) == 1 for g in groups.values()),
        "pairs": len(pairs), "ties_written": sum(p.label == 0.5 and (p.gap <= 0 or p.gap < lc.min_gap) for p in pairs),
        "ties_dropped": dropped, "ratings": len(rating_rows)},
        "scores": {"min": float(scores.min()), "max": float(scores.max()), "mean": float(scores.mean())}}


def _from_clusters(cfg: Config, reader, samples, rated_file: str, out: Path) -> dict:
    """Embed the rated and the unrated samples together, k-means, each unrated sample gets its cluster's mean rating."""
    lc = cfg.label
    rated = read_rated(rated_file, reader.RATED_KEYS)
    known = {(str(f.resolve()), p): r for f, p, r in rated}
    entries = [(f, p) for f, p, _ in rated] + [(f, p) for f, p in samples if (str(f.resolve()), p) not in known]
    device = _device()
    models = _build_models(cfg, device) if lc.embedding == "auto" else []
    description, embed = reader.embedder(models, lc.embedding, device)
    parts = []
    for i, j in _batches(len(entries), lc.batch_size, "embed"):
        parts.append(np.asarray(embed(reader.load([f for f, _ in entries[i:j]]), [p for _, p in entries[i:j]]), dtype=np.float64))
    x = np.concatenate(parts)
    if not np.isfinite(x).all():
        raise UserError(f"the embedding ({description}) is not finite for some samples")
    clusters = lab.kmeans(x, lc.clusters, cfg.train.seed)
    given = [r for _, _, r in rated] + [None] * (len(entries) - len(rated))
    values = lab.transfer_ratings(clusters.tolist(), given)
    where = {(str(f.resolve()), p): i for i, (f, p) in enumerate(entries)}
    rows, unrated, kept = [], 0, 0
    for f, p in samples:
        i = where[(str(f.resolve()), p)]
        if values[i] is None:
            unrated += 1
            continue
        source = "rated" if i < len(rated) else "cluster"
        kept += source == "rated"
        rows.append({"prompt": p, reader.SAMPLE_KEY: _relative(f, out), "rating": values[i], "source": source, "cluster": int(clusters[i])})
    _write_jsonl(out / RATINGS, rows)
    k = int(clusters.max()) + 1
    rated_clusters = {int(clusters[i]) for i in range(len(rated))}
    return {"mode": "clusters", "from_clusters": str(Path(rated_file).expanduser().resolve()), "embedding": description,
            "counts": {"samples": len(samples), "rated_given": len(rated), "clusters": k,
                       "clusters_without_rating": k - len(rated_clusters), "ratings": len(rows), "kept": kept,
                       "from_clusters": len(rows) - kept, "unrated": unrated},
            "cluster_ratings": {str(c): _mean([rated[i][2] for i in range(len(rated)) if clusters[i] == c])
                                for c in sorted(rated_clusters)}}


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)

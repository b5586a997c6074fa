"""A reward model learned from your own preference data: `genpref reward train` fits a Bradley–Terry head
(genpref.reward_fit) on a frozen encoder's embeddings, and the reward name `learned` loads it back for any
recipe that reads `reward.models`.

The config that trains it is an ordinary recipe: its `reward.models` entry `{name: learned, path: DIR}`
names the output directory, `reward_train.*` the encoder and the fit, `data.pairs` / `data.ratings` the
data, `train.seed` the seed. So one file serves both commands:

    genpref reward train configs/image/tiny_grpo_learned.yaml     # fits DIR from data.pairs / data.ratings
    genpref train configs/image/tiny_grpo_learned.yaml            # GRPO with DIR as its reward

DIR holds `reward_head.safetensors` (the head) and `reward.json` (modality, encoder path, head dims, fit
settings, data files, seed, metrics), written last and atomically: a directory without reward.json holds no
finished model. The modality supplies the encoder through `<modality>.learned_reward`, looked up by name:
    embed_training_data(cfg, out_dir) -> (PairData | None, RatingData | None, info dict)
    build_scorer(info, head, key, device) -> a genpref.rewards.RewardModel
"""

from __future__ import annotations

import importlib
import json
import math
import os
from pathlib import Path

from genpref.config import Config, ConfigError
from genpref.errors import UserError

MODALITIES = {"image": "image.learned_reward", "motion": "motion.learned_reward"}  # package of model.kind -> encoder module
HEAD_FILE, INFO_FILE, FORMAT = "reward_head.safetensors", "reward.json", "genpref-learned-reward/1"


# ---------------------------------------------------------------------------------------------- config


def output_spec(cfg: Config) -> tuple[str, Path]:
    """(key, directory) of the first reward.models entry named `learned`: where `reward train` writes."""
    for i, spec in enumerate(cfg.reward.models):
        if spec.name == "learned":
            if not spec.path:
                raise ConfigError(f"'reward.models[{i}].path': the learned reward needs a directory to write to")
            return f"reward.models[{i}].path", Path(spec.path).expanduser()
    raise ConfigError("reward train writes the model to the path of a reward.models entry named learned: "
                      "add reward.models=[{name: learned, path: DIR}]")


def modality(cfg: Config) -> str:
    from genpref.build import model_kinds

    if cfg.model.kind not in model_kinds():
        raise ConfigError(f"'model.kind' {cfg.model.kind!r} is not a known model kind")
    package = model_kinds()[cfg.model.kind].split(".")[0]
    if package not in MODALITIES:
        raise ConfigError(f"'model.kind' {cfg.model.kind!r}: reward train needs an image or motion model kind "
                          f"(it picks the encoder and data readers); got one of {package}")
    return package


def check(cfg: Config) -> Path:
    """The output directory, once the keys reward training reads are set and its data exist."""
    key, out = output_spec(cfg)
    if not cfg.reward_train.encoder:
        raise ConfigError("'reward_train.encoder' is not set: a local CLIP-format directory (images) or a T2M "
                          "evaluator run directory / finest.tar (motion)")
    if not Path(cfg.reward_train.encoder).expanduser().exists():
        raise ConfigError(f"'reward_train.encoder': {cfg.reward_train.encoder} does not exist")
    if not (cfg.data.pairs or cfg.data.ratings):
        raise ConfigError("reward train reads 'data.pairs' (preference pairs) and/or 'data.ratings' (thumbs up/down): set one")
    for name in ("pairs", "ratings"):
        value = getattr(cfg.data, name)
        if value and "://" not in value and not any(ch in value for ch in "*?") and not Path(value).exists():
            raise ConfigError(f"'data.{name}': {value} does not exist")
    if (out / INFO_FILE).exists() and not cfg.train.overwrite:
        raise UserError(f"{key}: {out} already holds a learned reward ({INFO_FILE}); set train.overwrite=true to replace it")
    return out


# ---------------------------------------------------------------------------------------------- files


def save(directory: Path, head, info: dict) -> None:
    """reward.json goes first (removed) and last (written): a crash in between leaves no finished model."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / INFO_FILE).unlink(missing_ok=True)
    tmp = directory / f".{HEAD_FILE}.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(tmp))
    os.replace(tmp, directory / HEAD_FILE)
    tmp = directory / f".{INFO_FILE}.tmp"
    tmp.write_text(json.dumps(info, indent=2, default=str) + "\n")
    os.replace(tmp, directory / INFO_FILE)


def load(directory: str | Path, key: str):
    """(RewardHead with its weights, the reward.json dict) of a trained directory; UserError naming `key`."""
    from genpref.reward_fit import RewardHead
    from genpref.safe_load import load_weights

    directory = Path(directory).expanduser()
    info_file = directory / INFO_FILE
    if not info_file.is_file():
        why = "does not exist" if not directory.exists() else f"has no {INFO_FILE} (not a finished learned reward)"
        raise UserError(f"{key}: {directory} {why}; train one with `genpref reward train CONFIG`")
    try:
        info = json.loads(info_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{key}: {info_file} is not valid JSON ({err})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise UserError(f"{key}: {info_file} is not a genpref learned reward (format {FORMAT})")
    if info.get("modality") not in MODALITIES:
        raise UserError(f"{key}: {info_file}: modality {info.get('modality')!r}; valid: {', '.join(MODALITIES)}")
    head = RewardHead(int(info["in_features"]), int(info["hidden"]), prior=info.get("init") == "similarity")
    try:
        head.load_state_dict(load_weights(directory / HEAD_FILE, "reward head"))
    except RuntimeError as err:
        raise UserError(f"{key}: {directory / HEAD_FILE} does not fit the head of {INFO_FILE}: {str(err).splitlines()[-1].strip()}") from None
    return head.eval().requires_grad_(False), info


def _spec_key(spec, cfg) -> str:
    for section in ("models", "holdout"):
        for i, s in enumerate(getattr(getattr(cfg, "reward", None), section, None) or []):
            if s is spec:
                return f"reward.{section}[{i}].path"
    return f"the path of reward {spec.name!r}"


def build_reward(spec, cfg, device):
    """genpref.build entry point of the reward name `learned`."""
    key = _spec_key(spec, cfg)
    if not spec.path:
        raise UserError(f"{key}: reward 'learned' needs the directory `genpref reward train` wrote")
    head, info = load(spec.path, key)
    from genpref.build import model_kinds

    package = model_kinds().get(cfg.model.kind, "").split(".")[0]
    if package in MODALITIES and package != info["modality"]:
        a = {"image": "an", "motion": "a"}
        raise UserError(f"{key}: {spec.path} is {a[info['modality']]} {info['modality']} reward, but model.kind "
                        f"{cfg.model.kind!r} is {a[package]} {package} model")
    return importlib.import_module(MODALITIES[info["modality"]]).build_scorer(info, head, key, device)


# ---------------------------------------------------------------------------------------------- embeddings


def _files(spec: str) -> list[Path]:
    import glob

    paths = [Path(p) for p in sorted(glob.glob(spec))] or [Path(spec)]
    return [f for p in paths for f in (sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]) if f.exists()]


def fingerprint(stamp: dict, paths: list[str]) -> str:
    """sha256 of `stamp` and of every file under `paths` (path, size, modification time)."""
    import hashlib

    files = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for p in paths if p for f in _files(str(p))]
    return hashlib.sha256(json.dumps([stamp, files], sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_embeddings(cfg: Config, out_dir: Path, key: str, compute) -> tuple[dict, Path]:
    """compute() -> {name: tensor}, stored once as data.cache_dir (default DIR/cache)/reward-embeddings-KEY.safetensors.
    The tensors: texts [P, D] (one per unique prompt); for pairs w, l [N, D], label [N], pair_prompt [N]
    (a row of texts); for ratings x [M, D], rating [M], rating_prompt [M]."""
    from safetensors.torch import load_file, save_file

    cache = Path(cfg.data.cache_dir or out_dir / "cache") / f"reward-embeddings-{key}.safetensors"
    if cache.is_file():
        return load_file(str(cache)), cache
    tensors = compute()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, cache)
    return tensors, cache


def training_data(tensors: dict):
    """(PairData | None, RatingData | None) of cached embeddings: features [s, t, s·t], groups = prompt rows."""
    from genpref.reward_fit import PairData, RatingData, features

    texts, pairs, ratings = tensors["texts"], None, None
    if "w" in tensors:
        t = texts[tensors["pair_prompt"]]
        pairs = PairData(features(tensors["w"], t), features(tensors["l"], t), tensors["label"].float(), tensors["pair_prompt"])
    if "x" in tensors:
        t = texts[tensors["rating_prompt"]]
        ratings = RatingData(features(tensors["x"], t), tensors["rating"].float(), tensors["rating_prompt"])
    return pairs, ratings


# ---------------------------------------------------------------------------------------------- training


def describe(metrics: dict) -> str:
    """One line per data kind: accuracy, log-loss, ECE and counts."""
    parts = []
    for kind, m in metrics.items():
        n = m.get("pairs", m.get("ratings"))
        ties = f", {m['ties']} ties excluded from accuracy" if m.get("ties") else ""
        parts.append(f"{kind}: accuracy {m['accuracy']:.3f}, log-loss {m['log_loss']:.3f}, ECE {m['ece']:.3f} (n={n}{ties})")
    return "; ".join(parts) or "none"


def train(cfg: Config, say=print) -> Path:
    """`genpref reward train`: embed the data (cached), fit the head, write DIR; returns DIR."""
    import torch
    from tqdm.auto import tqdm

    from genpref import reward_fit

    out = check(cfg)
    name = modality(cfg)
    pairs, ratings, info = importlib.import_module(MODALITIES[name]).embed_training_data(cfg, out)
    rt = cfg.reward_train
    settings = reward_fit.FitSettings(epochs=rt.epochs, lr=rt.lr, weight_decay=rt.weight_decay, batch_size=rt.batch_size,
                                      holdout=rt.holdout, patience=rt.patience, seed=cfg.train.seed)
    in_features = (pairs.w if pairs is not None else ratings.x).shape[1]
    torch.manual_seed(cfg.train.seed)
    head = reward_fit.RewardHead(in_features, rt.hidden, prior=rt.init == "similarity")
    with tqdm(total=rt.epochs, desc="reward train", dynamic_ncols=True) as bar:
        def on_epoch(h):
            bar.update(1)
            bar.set_postfix(train=f"{h['train_loss']:.4f}", heldout=f"{h['heldout_loss']:.4f}")
        result = reward_fit.fit(head, pairs, ratings, settings, on_epoch)
    info.update({
        "format": FORMAT, "modality": name, "in_features": in_features, "hidden": rt.hidden, "init": rt.init,
        "features": "[s, t, s*t] of L2-normalised sample and text embeddings",
        "settings": vars(settings), "seed": cfg.train.seed, "best_epoch": result.best_epoch,
        "metrics": result.metrics, "history": [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in h.items()}
                                              for h in result.history],
    })
    save(out, head, info)
    held = result.metrics["heldout"]
    say(f"wrote {out}: held-out {describe(held)}" if held else
        f"wrote {out}: nothing held out (reward_train.holdout=0 or a single prompt); training {describe(result.metrics['train'])}")
    return out

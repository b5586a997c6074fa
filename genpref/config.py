"""The typed run configuration: YAML file + `section.key=value` overrides, checked against dataclasses.

Every default carries a comment. An unknown key, a wrong type or a missing required value raises
ConfigError with one line naming the key (and the closest valid key for a typo); the CLI turns it
into exit code 2. Imports no torch, so `genpref validate` answers at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

REQUIRED: Any = "???"  # sentinel for values the user must give


class ConfigError(ValueError):
    """A user-facing configuration problem; the message is one line that names the key or file."""


# ---------------------------------------------------------------------------------------------- schema


@dataclass
class LoraConfig:
    rank: int = 8  # LoRA rank r
    alpha: float = 8.0  # scale alpha/r; alpha = rank gives scale 1
    targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])  # module names
    dropout: float = 0.0  # LoRA dropout
    init_weights: str = "default"  # "default" (B = 0: starts at the base model) or "gaussian"


@dataclass
class ModelConfig:
    kind: str = REQUIRED  # sd15 | sdxl | tiny-sd | mdm | mld | tiny-mdm | tiny-mld | toy | ...
    path: str | None = None  # local diffusers dir, single .safetensors, hub id, or a released checkpoint
    lora: LoraConfig | None = None  # null = full fine-tuning with a frozen reference copy
    gradient_checkpointing: bool = False  # trade compute for activation memory
    attention: str = "sdpa"  # sdpa (PyTorch scaled_dot_product_attention) | xformers (GPU, optional extra)
    prediction_type: str | None = None  # override the scheduler's epsilon | sample | v_prediction
    text_encoder: str | None = None  # local text-encoder directory (CLIP) for motion models
    vae_path: str | None = None  # a separate VAE (SDXL fp16-fix VAE, or a motion VAE checkpoint)
    size: str = "default"  # size preset for tiny models (tests, demos)
    ema_path: str | None = None  # load EMA/avg weights when the checkpoint carries them
    use_avg: bool = False  # MDM: prefer 'model_avg' in {'model', 'model_avg'} checkpoints


@dataclass
class DataConfig:
    pairs: str | None = None  # offline preference pairs: Pick-a-Pic parquet(s), HF dataset dir or jsonl
    experts: str | None = None  # positives-only folder: images + metadata.jsonl (file_name, text)
    prompts: str | None = None  # a text file, one prompt per line, for online work
    ratings: str | None = None  # single-sample feedback jsonl: prompt, file/sample, rating
    root: str | None = None  # a HumanML3D-format directory (motion)
    split: str = "train"  # split file in data.root (train.txt / val.txt / test.txt)
    ties: str = "drop"  # Pick-a-Pic label_0 = 0.5: drop | half (soft label 0.5) | first (image 0 wins)
    resolution: int = 512  # image side after resize + crop
    center_crop: bool = True  # center crop (else random crop)
    random_flip: bool = False  # horizontal flip augmentation (images)
    on_bad_sample: str = "error"  # error: stop with a message naming the file | skip: count and report
    cache_dir: str | None = None  # where latents/text embeddings are cached (default: <output_dir>/cache)
    max_items: int | None = None  # use only the first N items (debugging)
    max_motion_length: int = 196  # frames (HumanML3D: 196 at 20 fps)
    min_motion_length: int = 40  # shorter motions are skipped (published filter)
    num_workers: int = 0  # data-loading worker processes
    source: str | None = None  # pair source; null = the objective's default (see `genpref validate`)
    empty_prompt_prob: float = 0.0  # replace a training item's prompt by "" with this probability (CFG; DPO/DRO publish 0.2)


@dataclass
class ObjectiveConfig:
    name: str = REQUIRED  # dpo | dro | sopo | kto | sft | direct_reward | grpo | nft
    beta: float | None = None  # inverse temperature; null = the objective's published default
    kind: str = "sigmoid"  # dpo: sigmoid | hinge
    soft_label: bool = False  # dpo: use the pair's label as P(w preferred) (soft preference strength)
    margin: float = 0.001  # dro: hinge margin m
    policy_target: str = "rollout_prediction"  # dro negative target: rollout_prediction (published) | noise
    sft_weight: float = 0.0  # expert anchor: + λ·plain denoising loss on the preferred samples
    tau: float = 0.45  # sopo: loser kept only when its reward < tau
    tau_quantile: float | None = None  # sopo: use this quantile of the batch's loser rewards as tau instead
    c: float = 2.0  # sopo: winner weight C − S
    form: str = "code"  # sopo: code (released) | eq17 (paper)
    z_ref: float = 0.0  # kto: reference point
    w_desirable: float = 1.0  # kto: weight of desirable samples
    w_undesirable: float = 1.0  # kto: weight of undesirable samples
    kl_weight: float = 0.0  # + λ·‖pred_θ − pred_ref‖² on the policy's own online samples (HyPO); grpo: λ·KL of each step's Gaussians
    clip_range: float = 1e-4  # grpo: PPO ratio clip ε (DDPO / Flow-GRPO: 1e-4)
    group_norm: bool = True  # grpo/nft: standardise rewards within each prompt's group (false: DDPO's per-prompt running stats)
    std_floor: float = 1e-4  # grpo/nft: advantages divide by max(std, std_floor)
    adv_clip: float | None = 5.0  # grpo/nft: advantages clipped to ±adv_clip (null = off)
    nft_beta: float = 1.0  # nft: β of the implicit policies v± (DiffusionNFT)


@dataclass
class OnlineConfig:
    sync_every: int = 1  # refresh the rollout copy every N optimizer steps (1 = as published; how "online")
    num_samples: int = 1  # K online samples per prompt (sopo: loser = worst of K)
    steps: int = 20  # sampler steps for online generation
    guidance: float = 1.0  # classifier-free guidance for online generation (1 = none)
    solver: str = "dpmsolver++"  # dpmsolver++ | ddim | euler | ... (any diffusers scheduler by name)
    states_per_rollout: int = 0  # dro: training states taken from each stored trajectory (0 = all of them)
    timestep_jitter: bool | None = None  # per-trajectory random timestep offset; null = on for DRO rollouts (published), off otherwise
    reset_t: int | None = None  # dataset reset: start rollouts from data noised to this timestep
    batch_size: int | None = None  # prompts generated per call (default: train.batch_size)
    annotator: str = "reward"  # ai_feedback ranks samples by: reward (reward.models) | implicit (SeRA bootstrap)
    label_scale: float = 0.1  # ai_feedback soft label p = σ(score gap / label_scale) with objective.soft_label
    reward_draws: int = 2  # implicit reward: (t, ε) draws averaged per sample
    group_size: int = 8  # grpo/nft: K samples per prompt, normalised as one group
    eta: float = 1.0  # grpo: stochastic DDIM η of the rollouts (0.7–1.0 published)
    train_fraction: float = 1.0  # grpo: fraction of each trajectory's stochastic steps trained
    inner_epochs: int = 1  # grpo/nft: passes over each rollout batch
    accept_reward: float = 1.0  # rft: samples with reward >= this are kept (1.0 = every verifier attribute right)
    rollout_ema: float | None = None  # the rollout copy as an EMA of the policy with this decay (DiffusionNFT's sampling policy)


@dataclass
class SelectConfig:
    by: str | None = None  # null | implicit_margin (SeRA: keep pairs by the current policy's implicit reward margin)
    fraction: float = 0.5  # keep this fraction of the over-drawn pairs (batch_size / fraction are scored)
    direction: str = "largest"  # largest (SeRA: confident, likely-correct pairs) | smallest (hardest pairs)


@dataclass
class RewardSpec:
    name: str = REQUIRED  # t2m | moves | shapes | clip | pickscore | hpsv2 | aesthetic | ...
    path: str | None = None  # local weights (directory or file) of the reward model
    weight: float = 1.0  # weight in an ensemble


@dataclass
class RewardConfig:
    models: list[RewardSpec] = field(default_factory=list)  # annotators; several = an ensemble
    normalize: str = "none"  # none | zscore (standardise each model's scores over the batch first)
    holdout: list[RewardSpec] = field(default_factory=list)  # online RL: a second reward / verifier scored on the same samples, never trained on (reward-hacking guard)


@dataclass
class TrainConfig:
    output_dir: str = REQUIRED  # run directory (config.yaml, run.json, metrics.jsonl, checkpoints/, final/)
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 1  # pairs per process per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-5  # AdamW learning rate
    lr_scheduler: str = "constant"  # any diffusers get_scheduler name: constant | linear | cosine | ...
    warmup_steps: int = 0  # learning-rate warm-up steps
    weight_decay: float = 0.0  # AdamW weight decay
    adam_beta1: float = 0.9  # AdamW beta1
    adam_beta2: float = 0.999  # AdamW beta2
    adam_eps: float = 1e-8  # AdamW epsilon
    max_grad_norm: float | None = 1.0  # gradient clipping (null = off)
    mixed_precision: str = "no"  # no | fp16 | bf16
    seed: int = 0  # seeds data order, noise, timesteps and model init
    checkpoint_every: int = 500  # save a resumable checkpoint every N steps (0 = only at the end)
    keep_checkpoints: int = 2  # keep the newest K complete checkpoints
    resume: str | None = None  # null | latest | path to a checkpoints/step-N directory
    log_every: int = 1  # write metrics every N steps
    ema_decay: float | None = None  # EMA of trainable weights (e.g. 0.9999); null = off
    max_bad_steps: int = 5  # abort after this many consecutive NaN/inf losses
    collapse_factor: float | None = 3.0  # guard: policy error on preferred samples > factor × reference's
    collapse_action: str = "warn"  # warn | stop
    collapse_window: int = 10  # steps averaged by the collapse guard
    sample_every: int = 0  # write validation samples every N steps (0 = only at the end)
    sample_prompts: list[str] = field(default_factory=list)  # prompts for validation samples
    sample_seeds: list[int] = field(default_factory=lambda: [0, 1])  # seeds for validation samples
    tensorboard: bool = True  # also log to <output_dir>/tensorboard
    precompute_reference: bool = False  # offline data: reference errors computed in one no-grad pass per epoch, not every step
    disable_dropout: bool = True  # dropout off in the policy, so e_θ and e_ref are comparable (as TRL's DPO)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: dict[str, Any] = field(default_factory=dict)  # evaluation settings, read by `genpref eval`


# Common names people type for our keys: they feed the "did you mean" suggestion.
ALIASES = {
    "learning_rate": "lr",
    "lr_schedule": "lr_scheduler",
    "scheduler": "lr_scheduler",
    "steps": "max_steps",
    "num_steps": "max_steps",
    "max_train_steps": "max_steps",
    "train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "accumulation_steps": "grad_accum",
    "warmup": "warmup_steps",
    "lr_warmup_steps": "warmup_steps",
    "checkpointing_steps": "checkpoint_every",
    "save_every": "checkpoint_every",
    "output": "output_dir",
    "out_dir": "output_dir",
    "resume_from_checkpoint": "resume",
    "temperature": "beta",
    "loss_type": "kind",
    "r": "rank",
    "lora_rank": "rank",
    "lora_alpha": "alpha",
    "target_modules": "targets",
    "model_type": "kind",
    "pretrained_model_name_or_path": "path",
    "dataset": "pairs",
}


# ---------------------------------------------------------------------------------------------- checking


def _suggest(key: str, valid: list[str]) -> str:
    candidates = {k: k for k in valid}
    candidates.update({a: t for a, t in ALIASES.items() if t in valid})
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{candidates[close[0]]}'?)" if close else ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`; convert the safe cases (int -> float, '1e-4' -> float)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(err)
        raise errors[0] if errors else ConfigError(f"'{key}' got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping of {tp.__name__} keys, got {value!r}")
        return _build(tp, value, key)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single value where a list is expected
        if not isinstance(value, list):
            raise ConfigError(f"'{key}' must be a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is Any:
        if origin is dict and not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{key}' must be true or false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads '1e-4' as a string
            except ValueError:
                pass
        raise ConfigError(f"'{key}' must be a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"'{key}' must be an integer, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"'{key}' must be a string, got {value!r}")
    raise ConfigError(f"'{key}': unsupported type {_type_name(tp)}")


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"unknown key '{where}'{_suggest(str(key), names)}")
    kwargs = {}
    for name in names:
        if name in values:
            kwargs[name] = _coerce(values[name], hints[name], f"{prefix}.{name}" if prefix else name)
    return cls(**kwargs)


def _check_required(obj: Any, prefix: str = "") -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if isinstance(value, str) and value == REQUIRED:
            raise ConfigError(f"missing required key '{key}'")
        if dataclasses.is_dataclass(value):
            _check_required(value, key)


# ---------------------------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=1e-4' -> (['train', 'lr'], 1e-4); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return path, value


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def merge_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return data


def from_dict(data: dict) -> Config:
    cfg = _build(Config, data)
    _check_required(cfg)
    return cfg


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read a YAML config, apply `section.key=value` overrides, check every key and type."""
    data = merge_overrides(read_yaml(path), list(overrides))
    try:
        return from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def load_config_values(path: str | Path, values: dict[str, Any]) -> Config:
    """Like load_config, with overrides given as {"section.key": Python value} by programs (the demos):
    each value is written as JSON, which YAML reads back unchanged, so paths and lists need no quoting."""
    import json

    return load_config(path, [f"{key}={json.dumps(value)}" for key, value in values.items()])


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, for --help and error messages."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        inner = [a for a in typing.get_args(hints[f.name]) if dataclasses.is_dataclass(a)]
        tp = hints[f.name] if dataclasses.is_dataclass(hints[f.name]) else (inner[0] if inner else None)
        keys.extend(valid_keys(tp, key + ".") if tp else [key])
    return keys

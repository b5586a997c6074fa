"""The typed run configuration: YAML file + `section.key=value` overrides, checked against dataclasses.

Every default carries a comment. An unknown key, a wrong type or a missing required value raises
ConfigError with one line naming the key (and the closest valid key for a typo); the CLI turns it
into exit code 2. Imports no torch, so `genpref validate` answers at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from genpref.label_config import LabelConfig
from genpref.reward_train_config import RewardTrainConfig

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
    use_avg: bool = False  # MDM: prefer 'model_avg' in {'model', 'model_avg'} checkpoints
    reference: str | None = None  # an earlier run directory (e.g. SFT) whose trained weights are the frozen reference; null = the base


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
    kl_weight: float = 0.0  # + λ·‖pred_θ − pred_ref‖² on the policy's own online samples (HyPO); grpo: λ·KL of each step's Gaussians; nft: λ·‖pred_θ − pred_ref‖² on its noised samples
    clip_range: float = 1e-4  # grpo: PPO ratio clip ε (DDPO / Flow-GRPO: 1e-4)
    group_norm: bool = True  # grpo/nft: standardise rewards within each prompt's group (false: DDPO's per-prompt running stats)
    std_floor: float = 1e-4  # grpo/nft: advantages divide by max(std, std_floor)
    adv_clip: float | None = 5.0  # grpo/nft: advantages clipped to ±adv_clip (null = off)
    nft_beta: float = 1.0  # nft: β of the implicit policies v± (DiffusionNFT)
    diversity: float = 0.0  # grpo/nft: + λ·(mean distance of a sample to the rest of its prompt's group) added to its reward before normalisation (GDPO-style); 0 = off
    time_mse: float = 0.0  # dpo on motion with a frame axis (MDM): + λ·variance over frames of the per-frame implicit reward (MARLHF); 0 = off
    optimism: float = 0.0  # dpo on online pairs (data.source ai_feedback): + α·implicit reward of the policy's samples (SELM); 0 = off


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
    # inverse alignment (genpref.refit): refit the `learned` head on the offline pairs nearest the policy's samples
    refit_every: int = 0  # refit every N optimizer steps (0 = off)
    refit_fraction: float = 0.25  # keep this fraction of the reward's training pairs: those nearest the policy
    refit_samples: int = 16  # samples drawn from the rollout copy per refit (all ranks together)
    refit_steps: int = 20  # AdamW steps of the head per refit, mini-batches of reward_train.batch_size
    refit_lr: float = 1.0e-4  # the refit's AdamW learning rate (weight decay: reward_train.weight_decay)


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
    on_divergence: str = "stop"  # non-finite weights or too many bad losses: stop (keep the last good checkpoint) | rollback
    rollback_lr_factor: float = 0.5  # rollback: reload the last good checkpoint with train.lr scaled by this
    max_rollbacks: int = 3  # rollback: stop after this many rollbacks in one run
    overwrite: bool = False  # replace a finished run (its final/) in train.output_dir instead of refusing
    collapse_factor: float | None = 3.0  # guard: policy error on preferred samples > factor × reference's
    collapse_action: str = "warn"  # warn | stop
    collapse_window: int = 10  # steps averaged by the collapse guard
    sample_every: int = 0  # write validation samples every N steps (0 = only at the end)
    sample_prompts: list[str] = field(default_factory=list)  # prompts for validation samples
    sample_seeds: list[int] = field(default_factory=lambda: [0, 1])  # seeds for validation samples
    tensorboard: bool = True  # also log to <output_dir>/tensorboard (when report_to is null)
    report_to: list[str] | None = None  # accelerate trackers: tensorboard | wandb | mlflow | ...; null = [tensorboard] if tensorboard
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
    reward_train: RewardTrainConfig = field(default_factory=RewardTrainConfig)  # `genpref reward train` (a learned reward)
    label: LabelConfig = field(default_factory=LabelConfig)  # `genpref label` (pairs and ratings from a reward model)
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


def _suggest_section(key: str) -> str:
    """A section-less key that is some section's key (`lr` -> `train.lr`): name the section(s)."""
    names = {key, ALIASES.get(key, key)}
    matches = [k for k in valid_keys() if "." in k and k.rsplit(".", 1)[1] in names
               and not k.startswith(("reward_train.", "label."))]  # another command's section: not what a bare `lr=` meant
    return f" (did you mean {' or '.join(repr(m) for m in matches)}?)" if matches else ""


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
            hint = ("" if prefix else _suggest_section(str(key))) or _suggest(str(key), names)
            raise ConfigError(f"unknown key '{where}'{hint}")
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


# ---------------------------------------------------------------------------------------------- ranges


def _finite(v: float) -> bool:
    return math.isfinite(v)


# (test, what a valid value is): NaN fails every comparison, so each test rejects it
ANY = (_finite, "a finite number")
POSITIVE = (lambda v: _finite(v) and v > 0, "a finite number > 0")
NON_NEGATIVE = (lambda v: _finite(v) and v >= 0, "a finite number >= 0")
AT_LEAST_1 = (lambda v: v >= 1, "an integer >= 1")
COUNT = (lambda v: v >= 0, "an integer >= 0")
PROBABILITY = (lambda v: 0 <= v <= 1, "a probability in [0, 1]")
FRACTION = (lambda v: 0 < v <= 1, "in (0, 1]")
BELOW_1 = (lambda v: 0 <= v < 1, "in [0, 1)")
SEED = (lambda v: 0 <= v < 2**32, "an integer in [0, 2^32)")
RESOLUTION = (lambda v: v >= 8, "an integer >= 8 (pixels)")

# Every numeric key of the schema and its range (a test checks none is missing); null is always allowed
# where the schema allows it. `reward.models.weight` applies to each entry of the list.
RANGES = {
    "model.lora.rank": AT_LEAST_1,
    "model.lora.alpha": POSITIVE,
    "model.lora.dropout": BELOW_1,
    "data.resolution": RESOLUTION,
    "data.max_items": AT_LEAST_1,
    "data.max_motion_length": AT_LEAST_1,
    "data.min_motion_length": COUNT,
    "data.empty_prompt_prob": PROBABILITY,
    "objective.beta": POSITIVE,
    "objective.margin": NON_NEGATIVE,
    "objective.sft_weight": NON_NEGATIVE,
    "objective.tau": ANY,
    "objective.tau_quantile": PROBABILITY,
    "objective.c": ANY,
    "objective.z_ref": ANY,
    "objective.w_desirable": NON_NEGATIVE,
    "objective.w_undesirable": NON_NEGATIVE,
    "objective.kl_weight": NON_NEGATIVE,
    "objective.clip_range": POSITIVE,
    "objective.std_floor": POSITIVE,
    "objective.adv_clip": POSITIVE,
    "objective.nft_beta": POSITIVE,
    "objective.optimism": NON_NEGATIVE,
    "objective.time_mse": NON_NEGATIVE,
    "objective.diversity": NON_NEGATIVE,
    "online.sync_every": AT_LEAST_1,
    "online.num_samples": AT_LEAST_1,
    "online.steps": AT_LEAST_1,
    "online.guidance": NON_NEGATIVE,
    "online.states_per_rollout": COUNT,
    "online.reset_t": AT_LEAST_1,
    "online.batch_size": AT_LEAST_1,
    "online.label_scale": POSITIVE,
    "online.reward_draws": AT_LEAST_1,
    "online.group_size": AT_LEAST_1,
    "online.eta": NON_NEGATIVE,
    "online.train_fraction": FRACTION,
    "online.inner_epochs": AT_LEAST_1,
    "online.accept_reward": ANY,
    "online.rollout_ema": PROBABILITY,
    "select.fraction": FRACTION,
    "reward.models.weight": ANY,
    "reward.holdout.weight": ANY,
    "reward.refit_every": COUNT,
    "reward.refit_fraction": FRACTION,
    "reward.refit_samples": AT_LEAST_1,
    "reward.refit_steps": AT_LEAST_1,
    "reward.refit_lr": POSITIVE,
    "train.max_steps": AT_LEAST_1,
    "train.batch_size": AT_LEAST_1,
    "train.grad_accum": AT_LEAST_1,
    "train.lr": POSITIVE,
    "train.warmup_steps": COUNT,
    "train.weight_decay": NON_NEGATIVE,
    "train.adam_beta1": BELOW_1,
    "train.adam_beta2": BELOW_1,
    "train.adam_eps": POSITIVE,
    "train.max_grad_norm": POSITIVE,
    "train.seed": SEED,
    "train.checkpoint_every": COUNT,
    "train.keep_checkpoints": AT_LEAST_1,
    "train.log_every": AT_LEAST_1,
    "train.ema_decay": PROBABILITY,
    "train.max_bad_steps": AT_LEAST_1,
    "train.rollback_lr_factor": FRACTION,
    "train.max_rollbacks": COUNT,
    "train.collapse_factor": POSITIVE,
    "train.collapse_window": AT_LEAST_1,
    "train.sample_every": COUNT,
    "train.sample_seeds": SEED,
    "reward_train.hidden": COUNT,
    "reward_train.epochs": AT_LEAST_1,
    "reward_train.lr": POSITIVE,
    "reward_train.weight_decay": NON_NEGATIVE,
    "reward_train.batch_size": AT_LEAST_1,
    "reward_train.holdout": BELOW_1,
    "reward_train.patience": COUNT,
    "label.min_gap": NON_NEGATIVE,
    "label.max_pairs_per_prompt": AT_LEAST_1,
    "label.rating_threshold": ANY,
    "label.rating_quantile": PROBABILITY,
    "label.batch_size": AT_LEAST_1,
    "label.clusters": AT_LEAST_1,
}


def _values_at(cfg: Config, dotted: str) -> list[tuple[str, Any]]:
    """(key as the user writes it, value) for a RANGES key; list fields give one pair per entry."""
    section, *rest = dotted.split(".")
    node = getattr(cfg, section)
    if isinstance(node, list):  # reward.models
        return [pair for i, item in enumerate(node) for pair in _values_at_obj(item, rest, f"{section}[{i}]")]
    return _values_at_obj(node, rest, section)


def _values_at_obj(node: Any, parts: list[str], prefix: str) -> list[tuple[str, Any]]:
    for j, part in enumerate(parts):
        if node is None:  # e.g. model.lora: null
            return []
        node = getattr(node, part)
        if isinstance(node, list) and j < len(parts) - 1:
            return [pair for i, item in enumerate(node) for pair in _values_at_obj(item, parts[j + 1 :], f"{prefix}.{part}[{i}]")]
    key = ".".join([prefix, *parts])
    if isinstance(node, list):
        return [(f"{key}[{i}]", v) for i, v in enumerate(node)]
    return [(key, node)]


def check_ranges(cfg: Config) -> None:
    """ConfigError naming the first numeric key outside its range (lr > 0 and finite, probabilities in
    [0, 1], counts >= 0, ...)."""
    for dotted, (test, what) in RANGES.items():
        for key, value in _values_at(cfg, dotted):
            if value is not None and not test(value):
                raise ConfigError(f"'{key}' must be {what}, got {value!r}")


# ---------------------------------------------------------------------------------------------- YAML

MAX_YAML_VALUES = 20_000  # a recipe holds ~200 values; aliases that expand past this are an alias bomb
MAX_YAML_DEPTH = 64  # nesting deeper than this is not a recipe either
YAML_OPENERS = tuple("[{\"'")  # an override starting with one of these is meant as YAML


def _expanded_size(node: yaml.Node, memo: dict, depth: int = 0) -> int:
    """How many values `node` becomes once every alias is copied out (what dumping or walking it costs).
    Shared nodes are counted once per use but computed once, so this is linear in the document's size;
    a node reached again while being counted (a recursive alias) counts as too large."""
    if depth > MAX_YAML_DEPTH:
        raise ConfigError(f"YAML nested deeper than {MAX_YAML_DEPTH} levels")
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_YAML_VALUES + 1  # in progress: a cycle ends up here
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo, depth + 1) + _expanded_size(v, memo, depth + 1) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo, depth + 1) for v in node.value)
    else:
        size = 1
    memo[key] = min(size, MAX_YAML_VALUES + 1)
    return memo[key]


class BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that measures the document's node graph before building Python objects from it,
    and refuses one whose aliases expand past MAX_YAML_VALUES values (time and memory stay bounded)."""

    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_VALUES:
            raise ConfigError(f"YAML aliases (&anchor / *alias) expand to more than {MAX_YAML_VALUES} values; "
                              "write the values out instead")
        return self.construct_document(node)


def safe_load(text: str | bytes) -> Any:
    """yaml.safe_load with bounded alias expansion and nesting (configs, overrides, run directories)."""
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise ConfigError(f"YAML nested deeper than {MAX_YAML_DEPTH} levels") from None
    finally:
        loader.dispose()


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
        value = safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        if raw.strip()[:1] in YAML_OPENERS:  # meant as YAML (a list, a mapping, a quoted string): say so
            raise ConfigError(f"override '{key.strip()}': {raw!r} is not valid YAML ({getattr(err, 'problem', err)}); "
                              "close the bracket or quote, or quote the whole value") from None
        value = raw  # plain text that YAML dislikes (e.g. a glob '*.parquet'): taken as the string typed
    except ConfigError as err:
        raise ConfigError(f"override '{key.strip()}': {err}") from None
    return path, value


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = safe_load(path.read_bytes())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
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


# eval.* keys with a closed set of values (motion: the T2M protocol and the padding the evaluator sees)
EVAL_CHOICES = {"convention": ("t2m", "mdm", "mld"), "padding": ("model", "zero")}


def from_dict(data: dict) -> Config:
    cfg = _build(Config, data)
    _check_required(cfg)
    check_ranges(cfg)
    for key, choices in EVAL_CHOICES.items():
        if cfg.eval.get(key) is not None and cfg.eval[key] not in choices:
            raise ConfigError(f"eval.{key}: must be one of {' | '.join(choices)}, got {cfg.eval[key]!r}")
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

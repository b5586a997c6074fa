"""Names in a config -> the components they build. Plain dicts, which also feed --help, `validate` and
the error that lists valid names. Module paths are fixed here: a config cannot import arbitrary code.
The synthetic tasks (shapes, moves, tiny data) add their model kinds and rewards through genpref.registry;
`model_kinds()` and `rewards()` are the full tables. Imports no torch at module level, so validation is instant."""

from __future__ import annotations

import importlib
from pathlib import Path

from genpref import registry
from genpref.config import Config, ConfigError
from genpref.needs import NEEDS
from genpref.reference_run import check_reference_run
from genpref.rundir import check_output_dir

# model.kind -> module with build_adapter(cfg, device, weight_dtype)
MODEL_KINDS = {
    "sd15": "image.adapter",
    "sdxl": "image.adapter",
    "tiny-sd": "image.adapter",
    "tiny-sdxl": "image.adapter",
    "mdm": "motion.adapter",
    "mld": "motion.adapter",
    "tiny-mdm": "motion.adapter",
    "tiny-mld": "motion.adapter",
    "toy": "genpref.toy",
}

# reward.models[].name -> module with build_reward(spec, cfg, device)
REWARDS = {
    "toy": "genpref.toy",
    "t2m": "motion.rewards",  # T2M evaluator text–motion similarity, (1 + cos) / 2
    "clip": "image.scorers",  # CLIP score 100·cos from a local transformers CLIP directory
    "pickscore": "image.scorers",  # PickScore_v1 (CLIP-H fine-tuned on Pick-a-Pic), logit_scale·cos
    "hpsv2": "image.scorers",  # HPSv2 through open_clip (extra "hpsv2"), 100·cos
    "aesthetic": "image.scorers",  # LAION aesthetic head on CLIP ViT-L/14 image embeddings
    "learned": "genpref.learned_reward",  # a Bradley–Terry head fitted by `genpref reward train` (images or motion)
}



def model_kinds() -> dict[str, str]:
    """MODEL_KINDS and the kinds the synthetic tasks register (shapes-unet)."""
    return {**MODEL_KINDS, **registry.every(registry.MODEL_KINDS)}


def rewards() -> dict[str, str]:
    """REWARDS and the rewards the synthetic tasks register (shapes, moves, tiny-motion)."""
    return {**REWARDS, **registry.every(registry.REWARDS)}


# objective.name -> what it optimises (its needs in genpref.needs.NEEDS, constructors in genpref.objectives.FROM_CONFIG)
OBJECTIVES = {
    "sft": "plain denoising loss on preferred samples (control, pretraining)",
    "dpo": "Diffusion-DPO on (winner, loser) pairs",
    "dro": "Diffusion-DRO ranking loss: experts vs policy rollouts",
    "sopo": "SoPo semi-online DPO: dataset winner vs worst online sample",
    "kto": "Diffusion-KTO on single rated samples",
    "direct_reward": "Direct Reward Optimisation: (r − V(prompt) − β·implicit reward)² on single rated samples",
    "grpo": "online reward RL: PPO-clipped per-step likelihood ratios, group-normalised rewards (DDPO / Flow-GRPO)",
    "nft": "DiffusionNFT: online reward RL on the forward process (implicit positive / negative policies)",
    "rft": "iterated online rejection sampling: SFT on the policy's own samples the reward accepts",
}

# data.source -> (data role it reads, class in genpref.recipes or genpref.rl, reward extras it fills in)
SOURCES = {
    "offline_pairs": ("pairs", "OfflinePairs", ()),
    "experts": ("experts", "Experts", ()),
    "ratings": ("ratings", "Ratings", ()),
    "expert_rollouts": ("experts", "ExpertRollouts", ()),
    "sopo_online": ("experts", "SoPoOnline", ("loser_reward", "winner_similarity")),
    "ai_feedback": ("prompts", "AIFeedback", ()),
    "expert_vs_sample": ("experts", "ExpertVsSample", ()),
    "group_rollouts": ("prompts", "GroupRollouts", ()),
}

# enumerated values: key -> allowed
CHOICES = {
    "data.ties": ("drop", "half", "first"),
    "data.on_bad_sample": ("error", "skip"),
    "objective.kind": ("sigmoid", "hinge"),
    "objective.policy_target": ("rollout_prediction", "noise"),
    "objective.form": ("code", "eq17"),
    "model.attention": ("sdpa", "xformers"),
    "train.mixed_precision": ("no", "fp16", "bf16"),
    "train.collapse_action": ("warn", "stop"),
    "train.on_divergence": ("stop", "rollback"),
    "reward.normalize": ("none", "zscore"),
    "select.by": (None, "implicit_margin"),
    "select.direction": ("largest", "smallest"),
    "online.annotator": ("reward", "implicit"),
    "label.pairs": ("all", "best_vs_rest", "best_vs_worst"),
    "label.ties": ("drop", "half"),
    "reward_train.init": ("random", "similarity"),
    "label.rating": ("minmax", "score", "threshold", "quantile"),
    "label.embedding": ("auto", "raw"),
}


def _get(cfg: Config, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _name_error(key: str, value: str, valid) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(str(value), list(valid), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"'{key}' is {value!r}{hint}; valid: {', '.join(valid)}")


def _modality(module: str) -> str | None:
    package = module.split(".")[0]
    return package if package in ("image", "motion") else None


def check_modality(cfg: Config) -> None:
    """A model kind of one modality with data or rewards of the other (tiny-mdm on an image recipe) fails
    here, before a run directory exists, naming the key that says which modality the config is."""
    kinds, reward_modules = model_kinds(), rewards()
    kind_modality = _modality(kinds[cfg.model.kind])
    evidence = [("data.root", "motion")] if cfg.data.root else []
    evidence += [("data.experts", "image")] if cfg.data.experts else []
    evidence += [(f"reward.{key}[{i}].name={s.name}", _modality(reward_modules[s.name]))
                 for key in ("models", "holdout") for i, s in enumerate(getattr(cfg.reward, key))]
    for key, modality in evidence:
        if kind_modality and modality and modality != kind_modality:
            names = ", ".join(k for k, m in kinds.items() if _modality(m) == modality)
            article = "an" if kind_modality == "image" else "a"
            raise ConfigError(f"'model.kind' {cfg.model.kind!r} is {article} {kind_modality} model, but {key} is set, which only "
                              f"{modality} models read; {modality} model kinds: {names}")


def _check_trackers(names) -> None:
    """train.report_to: accelerate's tracker names, each importable (found without importing it)."""
    import importlib.util

    from genpref.rundir import TRACKERS

    for i, name in enumerate(names):
        if name not in TRACKERS:
            raise _name_error(f"train.report_to[{i}]", name, TRACKERS)
        if importlib.util.find_spec(TRACKERS[name]) is None:
            extra = " (pip install 'genpref[wandb]')" if name == "wandb" else f" (pip install {TRACKERS[name]})"
            raise ConfigError(f"'train.report_to' names {name!r}, which is not installed{extra}")


def source_name(cfg: Config) -> str:
    return cfg.data.source or NEEDS[cfg.objective.name].source


def check_needs(cfg: Config) -> None:
    """The reward extras the objective declares it reads come from the source and a reward model."""
    needs, name = NEEDS[cfg.objective.name], source_name(cfg)
    missing = [key for key in needs.extras if key not in SOURCES[name][2]]
    if missing:
        fills = [s for s, (_, _, extras) in SOURCES.items() if set(needs.extras) <= set(extras)]
        raise ConfigError(f"objective '{cfg.objective.name}' reads {', '.join(missing)}, which data.source={name} does not "
                          f"compute; sources that do: {', '.join(fills)}")
    if needs.extras and not cfg.reward.models:
        raise ConfigError(f"objective '{cfg.objective.name}' reads {', '.join(needs.extras)} from a reward model: set reward.models")


def check(cfg: Config) -> None:
    """Names and enumerations; raises ConfigError naming the key."""
    if cfg.model.kind not in model_kinds():
        raise _name_error("model.kind", cfg.model.kind, model_kinds())
    if cfg.objective.name not in OBJECTIVES:
        raise _name_error("objective.name", cfg.objective.name, OBJECTIVES)
    if cfg.data.source is not None and cfg.data.source not in SOURCES:
        raise _name_error("data.source", cfg.data.source, SOURCES)
    for key, allowed in CHOICES.items():
        if _get(cfg, key) not in allowed:
            raise _name_error(key, _get(cfg, key), allowed)
    for key in ("models", "holdout"):
        for i, spec in enumerate(getattr(cfg.reward, key)):
            if spec.name not in rewards():
                raise _name_error(f"reward.{key}[{i}].name", spec.name, rewards())
    check_modality(cfg)
    _check_trackers(cfg.train.report_to or [])
    t = cfg.train
    for key in ("max_steps", "batch_size", "grad_accum"):
        if getattr(t, key) < 1:
            raise ConfigError(f"'train.{key}' must be >= 1, got {getattr(t, key)}")
    if cfg.online.sync_every < 1:
        raise ConfigError(f"'online.sync_every' must be >= 1, got {cfg.online.sync_every}")
    if cfg.objective.tau_quantile is not None and not 0.0 <= cfg.objective.tau_quantile <= 1.0:
        raise ConfigError("'objective.tau_quantile' must lie in [0, 1]")
    check_output_dir(cfg.train.output_dir)
    role = SOURCES[source_name(cfg)][0]
    data_key = {"pairs": "pairs", "experts": "experts", "ratings": "ratings", "prompts": "prompts"}[role]
    if role == "prompts" and cfg.data.prompts is None and (cfg.data.experts or cfg.data.root):
        pass  # prompts are read from the experts' captions / the motion split
    elif cfg.model.kind not in ("toy",) and getattr(cfg.data, data_key) is None and cfg.data.root is None:
        raise ConfigError(f"objective '{cfg.objective.name}' reads {role}: set 'data.{data_key}' (or 'data.root' for motion)")
    check_needs(cfg)
    check_refit(cfg)
    check_precompute_reference(cfg)
    check_reference_run(cfg)
    check_terms(cfg)
    for key in ("pairs", "experts", "ratings", "prompts", "root"):
        value = getattr(cfg.data, key)
        synthetic = value is not None and "://" in value  # e.g. tiny://experts: written by its task (genpref.registry)
        if value is not None and not synthetic and not any(ch in value for ch in "*?") and not Path(value).exists():
            raise ConfigError(f"'data.{key}': {value} does not exist")


REWARD_SOURCES = ("group_rollouts", "sopo_online", "ai_feedback")  # score the policy's own samples with reward.models


def check_refit(cfg: Config) -> None:
    """reward.refit_every: one `learned` reward, scoring the samples of an online objective."""
    if not cfg.reward.refit_every:
        return
    learned = [i for i, s in enumerate(cfg.reward.models) if s.name == "learned"]
    if len(learned) != 1:
        raise ConfigError(f"'reward.refit_every' refits one learned reward; reward.models holds {len(learned)} entries named "
                          "learned: add exactly one {name: learned, path: DIR} (see `genpref reward train`)")
    name = source_name(cfg)
    if name not in REWARD_SOURCES or (name == "ai_feedback" and cfg.online.annotator != "reward"):
        raise ConfigError(f"'reward.refit_every' refits the reward that scores the policy's samples, but objective "
                          f"'{cfg.objective.name}' with data.source={name} scores none; use grpo, nft, rft, sopo or "
                          "data.source=ai_feedback with online.annotator=reward, or set reward.refit_every=0")


def check_terms(cfg: Config) -> None:
    """The extra terms of issue 18's seed ideas apply to some objectives only: one line naming the key otherwise."""
    o, name = cfg.objective, source_name(cfg)
    if o.optimism > 0 and (o.name != "dpo" or name != "ai_feedback"):
        raise ConfigError(f"'objective.optimism' (SELM) lowers the implicit reward of the policy's own samples: it needs "
                          f"objective.name=dpo on online pairs (data.source=ai_feedback), not objective.name={o.name} with "
                          f"data.source={name}")
    if o.diversity > 0 and o.name not in ("grpo", "nft"):
        raise ConfigError(f"'objective.diversity' adds a bonus to group-normalised rewards: objective.name grpo or nft, "
                          f"not {o.name}")
    if o.time_mse > 0:
        modality = _modality(model_kinds()[cfg.model.kind])
        if o.name != "dpo":
            raise ConfigError(f"'objective.time_mse' smooths the per-frame implicit reward of DPO pairs; objective.name={o.name}")
        if modality != "motion" or cfg.model.kind in ("mld", "tiny-mld"):
            raise ConfigError(f"'objective.time_mse' penalises the spread of the implicit reward along a motion's frames; "
                              f"model.kind={cfg.model.kind} has no frame axis (MDM models have one: mdm, tiny-mdm)")
        if cfg.train.precompute_reference:
            raise ConfigError("'objective.time_mse' needs the reference's per-frame errors at every step: "
                              "set train.precompute_reference=false")


OFFLINE_SOURCES = ("offline_pairs", "experts", "ratings")  # samples and (t, ε) fixed by the data: reference precomputable


def check_precompute_reference(cfg: Config) -> None:
    if not cfg.train.precompute_reference:
        return
    key, name = "'train.precompute_reference'", source_name(cfg)
    if name not in OFFLINE_SOURCES:
        raise ConfigError(f"{key} needs offline data (data.source {', '.join(OFFLINE_SOURCES)}); "
                          f"'{name}' draws its samples online, so their reference errors cannot be computed ahead")
    if cfg.select.by is not None or cfg.objective.kl_weight > 0:
        raise ConfigError(f"{key} cannot serve select.by or objective.kl_weight, which run the reference on online samples")
    if not NEEDS[cfg.objective.name].reference:
        raise ConfigError(f"{key}: objective.name={cfg.objective.name} uses no reference")


def _module(table: dict, name: str):
    return importlib.import_module(table[name])


def build_adapter(cfg: Config, device, weight_dtype):
    return _module(model_kinds(), cfg.model.kind).build_adapter(cfg, device, weight_dtype)


def build_reward(cfg: Config, device, specs=None):
    """None when no reward model is configured; an Ensemble for several. `specs`: other specs than
    reward.models (reward.holdout)."""
    from genpref.rewards import Ensemble

    specs = cfg.reward.models if specs is None else specs
    if not specs:
        return None
    models = [_module(rewards(), s.name).build_reward(s, cfg, device) for s in specs]
    if len(models) == 1 and cfg.reward.normalize == "none" and specs[0].weight == 1.0:
        return models[0]
    return Ensemble(models, [s.weight for s in specs], cfg.reward.normalize)


def build_source(ctx, cfg: Config):
    """The pair source, wrapped by SeRA selection (select.by) and HyPO's on-policy KL branch (objective.kl_weight)."""
    from genpref import recipes

    role, cls, _ = SOURCES[source_name(cfg)]
    if role == "prompts" and cfg.data.prompts is None:
        role = "experts"  # online recipes may take their prompts from the experts' captions
    items = ctx.adapter.load_items(role)
    if len(items) == 0:
        raise ConfigError(f"no training items for role '{role}' (check data.{role if role != 'experts' else 'experts / data.root'})")
    from genpref import rl

    source = (getattr(recipes, cls, None) or getattr(rl, cls))(ctx, items)
    needs = NEEDS[cfg.objective.name]
    if cfg.select.by == "implicit_margin":
        if not needs.margin_pairs:
            raise ConfigError(f"select.by=implicit_margin ranks (w, l) pairs by the implicit reward margin, which objective "
                              f"'{cfg.objective.name}' is not a function of")
        if not hasattr(source, "batch_at"):
            raise ConfigError(f"select.by=implicit_margin needs a paired source that draws by position (not {source_name(cfg)})")
        source = recipes.SelectByMargin(source, cfg.select.fraction, cfg.select.direction)
    if cfg.objective.kl_weight > 0 and not needs.own_kl:
        source = recipes.WithPolicySamples(source)
    return source

"""Objectives as the training loop sees them: the pure losses of `losses.py` bound to their constants,
fed with per-branch errors, returning the per-sample loss and the diagnostics worth logging.

Branch names: "w" preferred (dataset winner, expert), "l" dispreferred (dataset loser, rollout state,
online loser), "x" single samples (KTO ratings, extras["desirable"]), "kl" the policy's own samples for
the KL-to-reference term. Every objective reports e_w / e_ref_w (error of policy and reference on the
preferred samples) for the collapse guard.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from genpref import losses
from genpref.config import ObjectiveConfig
from genpref.needs import NEEDS

Errors = dict[str, Tensor]
Metrics = dict[str, Tensor]

DEFAULT_BETA = {"dpo": 5000.0, "kto": 1000.0, "sopo": 1.0, "direct_reward": 1000.0}


def _pref_metrics(e_w: Tensor, ref_w: Tensor) -> Metrics:
    return {"e_w": e_w.mean(), "e_ref_w": ref_w.mean()}


def _margin_metrics(z: Tensor) -> Metrics:
    return {"margin": z.mean(), "margin_min": z.min(), "margin_max": z.max(), "implicit_acc": losses.implicit_accuracy(z)}


@dataclass
class SFT:
    """Plain denoising loss on the preferred samples (control arm; base pretraining)."""

    needs = NEEDS["sft"]
    needs_reference = needs.reference
    branches = ("w",)

    def __call__(self, err: Errors, ref: Errors, extras: dict) -> tuple[Tensor, Metrics]:
        e_w = err["w"]
        metrics = {"e_w": e_w.mean()}
        if "w" in ref:
            metrics["e_ref_w"] = ref["w"].mean()
        return e_w, metrics


@dataclass
class DPO:
    """Diffusion-DPO (+ the expert anchor; + SELM's optimism on online pairs, whose winner and loser are both
    the generator's samples: α·mean(r̂_w, r̂_l) estimates α·E_y~generator[r̂(y)]; + MARLHF's time_mse on the
    per-frame implicit rewards of winner and loser, averaged)."""

    beta: float
    kind: str = "sigmoid"
    soft_label: bool = False
    sft_weight: float = 0.0
    optimism: float = 0.0
    time_mse: float = 0.0

    needs = NEEDS["dpo"]
    needs_reference = needs.reference
    branches = ("w", "l")

    @property
    def frames(self) -> tuple[str, ...]:
        """Branches whose per-frame errors it reads."""
        return ("w", "l") if self.time_mse else ()

    def __call__(self, err: Errors, ref: Errors, extras: dict) -> tuple[Tensor, Metrics]:
        prob = extras.get("label") if self.soft_label else None
        loss = losses.diffusion_dpo(err["w"], err["l"], ref["w"], ref["l"], self.beta, self.kind, prob)
        z = losses.dpo_margin(err["w"], err["l"], ref["w"], ref["l"], self.beta)
        loss = loss + self.sft_weight * err["w"]
        metrics = {**_pref_metrics(err["w"], ref["w"]), **_margin_metrics(z), "e_l": err["l"].mean(), "e_ref_l": ref["l"].mean()}
        if self.optimism:
            term = 0.5 * (losses.selm_optimism(err["w"], ref["w"], self.beta, self.optimism)
                          + losses.selm_optimism(err["l"], ref["l"], self.beta, self.optimism))
            loss = loss + term
            metrics["optimism"] = term.mean()
        if self.time_mse:
            spread = 0.5 * sum(losses.reward_time_mse(err[f"{b}/frames"], ref[f"{b}/frames"], err[f"{b}/valid"], self.beta)
                               for b in ("w", "l"))
            loss = loss + self.time_mse * spread
            metrics["reward_time_var"] = spread.mean()
        return loss, metrics


@dataclass
class DRO:
    margin: float = 0.001
    sft_weight: float = 0.0

    needs = NEEDS["dro"]
    needs_reference = needs.reference
    branches = ("w", "l")

    def __call__(self, err: Errors, ref: Errors, extras: dict) -> tuple[Tensor, Metrics]:
        loss = losses.diffusion_dro(err["w"], err["l"], ref["w"], ref["l"], self.margin)
        gap = (ref["w"] - err["w"]) - (ref["l"] - err["l"])  # > 0: ranked right
        loss = loss + self.sft_weight * err["w"]
        metrics = {
            **_pref_metrics(err["w"], ref["w"]),
            "e_l": err["l"].mean(),
            "e_ref_l": ref["l"].mean(),
            "hinge_active": (loss > 0).float().mean() if self.sft_weight == 0 else (gap < self.margin).float().mean(),
            **_margin_metrics(gap),
        }
        return loss, metrics


@dataclass
class SoPo:
    tau: float = 0.45
    tau_quantile: float | None = None
    c: float = 2.0
    beta: float = 1.0
    form: str = "code"
    sft_weight: float = 0.0

    needs = NEEDS["sopo"]
    needs_reference = needs.reference
    branches = ("w", "l")

    def __call__(self, err: Errors, ref: Errors, extras: dict) -> tuple[Tensor, Metrics]:
        r_l, s = extras["loser_reward"], extras["winner_similarity"]
        # τ as a quantile of this batch's loser rewards keeps the gate open once the base is decent.
        tau = self.tau
        if self.tau_quantile is not None:
            q = torch.quantile(r_l.float(), self.tau_quantile)
            tau = torch.nextafter(q, q + 1).item()  # the quantile itself counts as below τ
        loss = losses.sopo(err["w"], err["l"], ref["w"], ref["l"], r_l, s, tau, self.c, self.beta, self.form)
        loss = loss + self.sft_weight * err["w"]
        delta_w, delta_l = err["w"] - ref["w"], err["l"] - ref["l"]
        gate = (r_l < tau).float()
        weight = self.c - s
        # the sigmoid's argument as the configured form computes it (the loss is −log σ(−arg))
        arg = self.beta * (weight * delta_w - gate * delta_l if self.form == "code" else weight * (delta_w - gate * delta_l))
        return loss, {
            **_pref_metrics(err["w"], ref["w"]),
            "open_gate": gate.mean(),
            "tau": torch.tensor(float(tau)),
            "loser_reward": r_l.float().mean(),
            "winner_similarity": s.float().mean(),
            "sigmoid_arg_min": arg.min(),
            "sigmoid_arg_max": arg.max(),
            **_margin_metrics(delta_l - delta_w),
        }


@dataclass
class KTO:
    beta: float = 1000.0
    z_ref: float = 0.0
    w_desirable: float = 1.0
    w_undesirable: float = 1.0
    sft_weight: float = 0.0

    needs = NEEDS["kto"]
    needs_reference = needs.reference
    branches = ("x",)

    def __call__(self, err: Errors, ref: Errors, extras: dict) -> tuple[Tensor, Metrics]:
        want = extras["desirable"].bool()
        e, e_ref = err["x"], ref["x"]
        loss = losses.diffusion_kto(e, e_ref, want, self.beta, self.z_ref, self.w_desirable, self.w_undesirable)
        loss = loss + self.sft_weight * e * want.float()
        g = e_ref - e
        pick = want if want.any() else torch.ones_like(want)
        metrics = {
            **_pref_metrics(e[pick], e_ref[pick]),
            "implicit_acc": ((g > 0) == want).float().mean(),
            "desirable_frac": want.float().mean(),
        }
        return loss, metrics


class DirectReward(torch.nn.Module):
    """Direct Reward Optimisation on single rated samples (Richemond et al. 2024, DRO-V) for diffusion:
    ½·(r − V(c) − β·g)², g = e_ref − e_θ the implicit log-ratio, V(c) a learned value per prompt.
    Policy and value are trained jointly by this one mean-squared loss."""

    needs = NEEDS["direct_reward"]
    needs_reference = needs.reference
    branches = ("x",)

    def __init__(self, beta: float, num_prompts: int):
        super().__init__()
        self.beta = beta
        self.value = torch.nn.Embedding(num_prompts, 1)
        torch.nn.init.zeros_(self.value.weight)

    def forward(self, err: Errors, ref: Errors, extras: dict) -> tuple[Tensor, Metrics]:
        e, e_ref = err["x"], ref["x"]
        r = extras["rating"].to(e.dtype)
        v = self.value(extras["prompt_index"]).squeeze(-1).to(e.dtype)
        g = e_ref - e
        residual = r - v - self.beta * g
        want = extras["rating"] >= 0.5
        pick = want if want.any() else torch.ones_like(want)
        return 0.5 * residual.pow(2), {
            **_pref_metrics(e[pick], e_ref[pick]),
            "value": v.mean(),
            "residual": residual.abs().mean(),
            "implicit_acc": ((g > 0) == want).float().mean(),
        }


@dataclass
class WithKL:
    """Adds λ·kl_to_reference on the policy's own samples (branch "kl", HyPO) to any objective."""

    inner: object
    weight: float

    @property
    def needs(self):
        return self.inner.needs

    @property
    def needs_reference(self) -> bool:
        return True

    @property
    def branches(self) -> tuple[str, ...]:
        return (*self.inner.branches, "kl")

    @property
    def frames(self) -> tuple[str, ...]:
        return getattr(self.inner, "frames", ())

    def __call__(self, err: Errors, ref: Errors, extras: dict) -> tuple[Tensor, Metrics]:
        loss, metrics = self.inner(err, ref, extras)
        kl = err["kl"]  # target of the "kl" branch is the reference prediction
        return loss + self.weight * kl, {**metrics, "kl": kl.mean()}


@dataclass
class GRPO:
    """Online reward RL with per-step likelihoods (DDPO; Flow-GRPO's group-normalised advantages): PPO's
    clipped ratio on stored DDIM transitions (branch "g"), + kl_weight·KL to the reference's step Gaussian,
    + sft_weight·denoising loss on experts (branch "w") when an anchor is configured."""

    clip_range: float = 1e-4
    kl_weight: float = 0.0
    sft_weight: float = 0.0

    needs = NEEDS["grpo"]  # kl_weight is this objective's own KL, not HyPO's on-policy branch

    @property
    def needs_reference(self) -> bool:
        return self.needs.reference or self.kl_weight > 0

    @property
    def branches(self) -> tuple[str, ...]:
        return ("g", "w") if self.sft_weight else ("g",)

    def __call__(self, err: Errors, ref: Errors, extras: dict) -> tuple[Tensor, Metrics]:
        logp, old, adv = err["g"], extras["old_logp"], extras["advantage"]
        loss = losses.clipped_policy_loss(logp, old, adv, self.clip_range)
        log_ratio = (logp - old).detach()
        metrics = {
            "policy_loss": loss.mean(),
            "clip_frac": ((log_ratio.exp() - 1).abs() > self.clip_range).float().mean(),
            "approx_kl_old": 0.5 * log_ratio.pow(2).mean(),  # DDPO's estimate of KL(π_old ‖ π_θ)
            "advantage": adv.mean(),
        }
        if self.kl_weight:
            kl = err["g_kl"]
            loss = loss + self.kl_weight * kl
            metrics["kl_ref"] = kl.mean()
        return _with_anchor(loss, metrics, err, ref, self.sft_weight)


@dataclass
class NFT:
    """DiffusionNFT (Zheng et al. 2025): the finished samples noised afresh; each regresses the implicit
    positive policy when its optimality r = ½ + ½·clip(A / adv_clip, −1, 1) is high and the implicit
    negative one when it is low (branches "pos" and "neg" carry the shifted targets)."""

    beta: float = 1.0
    adv_clip: float | None = 5.0
    sft_weight: float = 0.0
    kl_weight: float = 0.0  # + λ·‖pred_θ − pred_ref‖² on the same noised samples (branch "kl")

    needs = NEEDS["nft"]
    needs_reference = needs.reference  # the "kl" branch's target is the reference prediction: run without ref errors

    @property
    def branches(self) -> tuple[str, ...]:
        return ("pos", "neg") + ("w",) * bool(self.sft_weight) + ("kl",) * bool(self.kl_weight)

    def __call__(self, err: Errors, ref: Errors, extras: dict) -> tuple[Tensor, Metrics]:
        adv = extras["advantage"]
        scale = self.adv_clip or float(adv.abs().max().clamp_min(1e-8))
        r = (0.5 + 0.5 * adv / scale).clamp(0.0, 1.0)
        loss = losses.nft_loss(err["pos"], err["neg"], r, self.beta)
        metrics = {"policy_loss": loss.mean(), "optimality": r.mean(), "e_pos": err["pos"].mean(), "e_neg": err["neg"].mean()}
        if self.kl_weight:  # a learned reward is exploitable: stay near the reference (KL-regularised RL)
            loss = loss + self.kl_weight * err["kl"]
            metrics["kl"] = err["kl"].mean()
        return _with_anchor(loss, metrics, err, ref, self.sft_weight)


@dataclass
class RFT:
    """Iterated online rejection sampling (RAFT / ReST-style): plain denoising loss on the policy's own samples
    that the reward accepted (branch "x", reward ≥ online.accept_reward), + the expert anchor."""

    sft_weight: float = 0.0

    needs = NEEDS["rft"]
    needs_reference = needs.reference

    @property
    def branches(self) -> tuple[str, ...]:
        return ("x", "w") if self.sft_weight else ("x",)

    def __call__(self, err: Errors, ref: Errors, extras: dict) -> tuple[Tensor, Metrics]:
        return _with_anchor(err["x"], {"e_accepted": err["x"].mean()}, err, ref, self.sft_weight)


def _with_anchor(loss: Tensor, metrics: Metrics, err: Errors, ref: Errors, weight: float) -> tuple[Tensor, Metrics]:
    """+ weight·plain denoising loss on the expert branch "w" (per sample: the anchor's batch is the same size)."""
    if not weight:
        return loss, metrics
    metrics["e_w"] = err["w"].mean()
    if "w" in ref:
        metrics["e_ref_w"] = ref["w"].mean()
    return loss + weight * err["w"], metrics


def _beta(cfg: ObjectiveConfig) -> float:
    return cfg.beta if cfg.beta is not None else DEFAULT_BETA[cfg.name]


def _direct_reward(c: ObjectiveConfig, source) -> DirectReward:
    """Sized from the source: one value per distinct prompt of the rated samples."""
    if not hasattr(source, "num_prompts"):
        raise ValueError("objective.name=direct_reward needs rated single samples (data.ratings)")
    return DirectReward(_beta(c), source.num_prompts)


# objective.name -> constructor from the objective section and the pair source
# (names mirrored in genpref.build.OBJECTIVES and genpref.needs.NEEDS)
FROM_CONFIG = {
    "sft": lambda c, source: SFT(),
    "dpo": lambda c, source: DPO(_beta(c), c.kind, c.soft_label, c.sft_weight, c.optimism, c.time_mse),
    "dro": lambda c, source: DRO(c.margin, c.sft_weight),
    "sopo": lambda c, source: SoPo(c.tau, c.tau_quantile, c.c, _beta(c), c.form, c.sft_weight),
    "kto": lambda c, source: KTO(_beta(c), c.z_ref, c.w_desirable, c.w_undesirable, c.sft_weight),
    "direct_reward": _direct_reward,
    "grpo": lambda c, source: GRPO(c.clip_range, c.kl_weight, c.sft_weight),
    "nft": lambda c, source: NFT(c.nft_beta, c.adv_clip, c.sft_weight, c.kl_weight),
    "rft": lambda c, source: RFT(c.sft_weight),
}


def build_objective(cfg: ObjectiveConfig, source=None):
    """The objective of `cfg.name`, wrapped with HyPO's KL term when objective.kl_weight is not its own."""
    objective = FROM_CONFIG[cfg.name](cfg, source)
    if cfg.kl_weight and not objective.needs.own_kl:
        return WithKL(objective, cfg.kl_weight)
    return objective

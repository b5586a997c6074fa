"""Preference objectives for diffusion models as pure per-sample functions of denoising errors (DESIGN §2).

Every objective takes per-sample errors of shape [B] and returns a per-sample loss of shape [B];
the caller reduces. No model calls, randomness or config reads happen here.

Notation: e = policy error, e_ref = reference error on the same x_t, t, c; Δ = e − e_ref
(< 0: the policy explains the sample better than the reference). w = preferred, l = dispreferred.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def denoising_error(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-sample mean squared error in float32, [B, ...] -> [B].

    With a mask (1 = valid, broadcastable to pred, e.g. MDM's [B, 1, 1, T] frame mask) the error is
    the sum over valid elements divided by their count: valid frames × features, as MDM's masked_l2.
    """
    sq = (pred.float() - target.float()).pow(2)
    dims = tuple(range(1, sq.dim()))
    if mask is None:
        return sq.mean(dim=dims)
    mask = mask.to(sq.dtype).expand_as(sq)
    return (sq * mask).sum(dim=dims) / mask.sum(dim=dims).clamp_min(1.0)


def dpo_margin(err_w: Tensor, err_l: Tensor, ref_err_w: Tensor, ref_err_l: Tensor, beta: float) -> Tensor:
    """Diffusion-DPO implicit reward margin z = 0.5·β·[(e_ref,w − e_ref,l) − (e_w − e_l)], [B].

    Wallace et al. 2023, Eq. 14 as implemented in SalesforceAIResearch/DiffusionDPO (the 0.5 comes from
    averaging the model and reference terms; diffusers' script drops it and halves β: same loss).
    z > 0 means the policy prefers the winner more than the reference does.
    """
    return 0.5 * beta * ((ref_err_w - ref_err_l) - (err_w - err_l))


def diffusion_dpo(
    err_w: Tensor,
    err_l: Tensor,
    ref_err_w: Tensor,
    ref_err_l: Tensor,
    beta: float = 5000.0,
    kind: str = "sigmoid",
    prob: Tensor | None = None,
) -> Tensor:
    """Diffusion-DPO loss per pair, [B].

    kind "sigmoid": −log σ(z); "hinge": relu(1 − z) (SLiC-style); with `prob` p = P(w ≻ l) the
    sigmoid loss becomes the soft-label cross-entropy −[p·log σ(z) + (1 − p)·log σ(−z)].
    At policy = reference z = 0 and the sigmoid loss is exactly ln 2.
    β scale: 5000 suits SD's 4×64×64 latents with mean-reduced errors; pixel-space or motion models
    with larger errors need smaller β (≈ 100–1000).
    """
    z = dpo_margin(err_w, err_l, ref_err_w, ref_err_l, beta)
    if kind == "hinge":
        if prob is not None:
            raise ValueError("diffusion_dpo: soft labels (prob) need kind='sigmoid', not 'hinge'")
        return F.relu(1.0 - z)
    if kind != "sigmoid":
        raise ValueError(f"diffusion_dpo: unknown kind {kind!r}; valid: 'sigmoid', 'hinge'")
    if prob is None:
        return -F.logsigmoid(z)
    p = prob.to(z.dtype)
    return -(p * F.logsigmoid(z) + (1.0 - p) * F.logsigmoid(-z))


def implicit_reward(err: Tensor, ref_err: Tensor, beta: float) -> Tensor:
    """Diffusion-DPO's per-sample implicit reward r̂ = 0.5·β·(e_ref − e_θ), [B]: the DPO margin is
    z = r̂_w − r̂_l (`dpo_margin`). > 0: the policy explains the sample better than the reference."""
    return 0.5 * beta * (ref_err - err)


def selm_optimism(err: Tensor, ref_err: Tensor, beta: float, alpha: float) -> Tensor:
    """SELM's optimism term per sample, [B], ADDED to the DPO loss (Zhang et al. 2024, "Self-Exploring
    Language Models", Eq. 4.6, as their released trainer computes it: −log σ(β·logits) + α·β·log(π_θ/π_ref)(y)
    on responses y drawn from the policy that generated the round's data):

        α·r̂(y) = α·0.5·β·(e_ref(y) − e_θ(y))

    Minimising it raises the policy's error on what the generator already samples (lowers their implicit
    reward), moving mass towards unexplored, potentially high-reward regions while the DPO term ranks the
    pairs. Its gradient is −0.5·α·β·∇e_θ(y); α = 0 leaves the DPO loss unchanged."""
    return alpha * implicit_reward(err, ref_err, beta)


def frame_errors(pred: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per-frame squared error in float32 and the valid frames, ([B, T], [B, T]) as bools.

    The time axis is the one non-batch dim along which the frame `mask` varies (MDM: [B, 1, 1, T] against
    x0 [B, 263, 1, T]); the error is averaged over every other dim. The mean of the valid frames' errors is
    exactly `denoising_error(pred, target, mask)`."""
    axes = [d for d in range(1, mask.dim()) if mask.shape[d] > 1]
    if len(axes) != 1:
        raise ValueError(f"frame_errors: the mask {tuple(mask.shape)} must have exactly one frame axis")
    (axis,) = axes
    sq = (pred.float() - target.float()).pow(2).movedim(axis, -1)  # [B, ..., T]
    per_frame = sq.reshape(sq.shape[0], -1, sq.shape[-1]).mean(dim=1)  # [B, T]
    valid = mask.movedim(axis, -1).reshape(mask.shape[0], -1) > 0  # [B, T]: every other mask dim is 1
    return per_frame, valid


def reward_time_mse(err_frames: Tensor, ref_err_frames: Tensor, valid: Tensor, beta: float) -> Tensor:
    """MARLHF's MSE regulariser along the time axis (Zhang et al. 2024, "Multi-Agent RLHF"), on the
    per-frame implicit reward r_f = 0.5·β·(e_ref,f − e_θ,f), [B, T] -> [B]:

        Σ_f∈valid (r_f − r̄)² / n_valid,   r̄ = Σ_f∈valid r_f / n_valid (= the sample's implicit reward r̂)

    Zero when every frame carries the same share of the sample's implicit reward; penalises a policy that
    wins the preference on a few frames only."""
    r = 0.5 * beta * (ref_err_frames - err_frames)
    v = valid.to(r.dtype)
    n = v.sum(dim=1).clamp_min(1.0)
    r_bar = (r * v).sum(dim=1) / n
    return ((r - r_bar[:, None]).pow(2) * v).sum(dim=1) / n


def diffusion_dro(
    err_expert: Tensor,
    err_policy: Tensor,
    ref_err_expert: Tensor,
    ref_err_policy: Tensor,
    margin: float = 0.001,
) -> Tensor:
    """Diffusion-DRO ranking denoising loss, [B]: relu(Δ_E − Δ_P + m).

    Δ_E = e_θ,E − e_ref,E on an expert sample, Δ_P = e_θ,P − e_ref,P on a state of a policy rollout
    for the same prompt (basiclab/DiffusionDRO train.py). Zero once the policy's relative error on
    experts sits m below its relative error on its own rollouts. Beware: the hinge is also met by
    making the policy worse on its own samples, so watch e_θ,E against e_ref,E (collapse guard).
    """
    delta_e = err_expert - ref_err_expert
    delta_p = err_policy - ref_err_policy
    return F.relu(delta_e - delta_p + margin)


def sopo(
    err_w: Tensor,
    err_l: Tensor,
    ref_err_w: Tensor,
    ref_err_l: Tensor,
    loser_reward: Tensor,
    winner_similarity: Tensor,
    tau: float = 0.45,
    c: float = 2.0,
    beta: float = 1.0,
    form: str = "code",
) -> Tensor:
    """SoPo semi-online preference loss, [B] (Tan et al. 2024, Eq. 14/17).

    The loser term only counts when the online loser is "valuable": its reward r_l < τ.
    The winner (an offline dataset motion) is weighted by C − S, S = motion–motion similarity.
      form "code" (released training code): −log σ(−β[(C − S)·Δ_w − 1[r_l < τ]·Δ_l])
      form "eq17" (paper):                  −log σ(−β(C − S)·[Δ_w − 1[r_l < τ]·Δ_l])
    With the gate shut it reduces to −log σ(−β(C − S)Δ_w): reference-anchored, weighted SFT.
    β = 1 keeps the argument tiny for errors ~1e-2 (the sigmoid is then linear); see the configs.
    """
    delta_w = err_w - ref_err_w
    delta_l = err_l - ref_err_l
    gate = (loser_reward < tau).to(delta_w.dtype)
    weight = c - winner_similarity.to(delta_w.dtype)
    if form == "code":
        arg = weight * delta_w - gate * delta_l
    elif form == "eq17":
        arg = weight * (delta_w - gate * delta_l)
    else:
        raise ValueError(f"sopo: unknown form {form!r}; valid: 'code', 'eq17'")
    return -F.logsigmoid(-beta * arg)


def diffusion_kto(
    err: Tensor,
    ref_err: Tensor,
    desirable: Tensor,
    beta: float = 1000.0,
    z_ref: float = 0.0,
    w_desirable: float = 1.0,
    w_undesirable: float = 1.0,
) -> Tensor:
    """Diffusion-KTO per sample, [B] (Li et al. 2024, jacklishufan/diffusion-kto).

    g = e_ref − e_θ (implicit reward); loss = w_y·(1 − σ(s_y·β·(g − z_ref))), s_y = +1 for desirable
    samples and −1 for undesirable ones.
    """
    want = desirable.to(torch.bool)
    g = ref_err - err
    sign = torch.where(want, 1.0, -1.0).to(g.dtype)
    weight = torch.where(want, w_desirable, w_undesirable).to(g.dtype)
    return weight * (1.0 - torch.sigmoid(sign * beta * (g - z_ref)))


def kl_to_reference(pred: Tensor, ref_pred: Tensor, mask: Tensor | None = None) -> Tensor:
    """‖pred_θ(x_t) − pred_ref(x_t)‖² per sample, [B]: the HyPO-style regulariser on the policy's own samples.

    For Gaussian denoising steps this is the per-step KL up to a timestep-dependent scale; it is zero at
    policy = reference.
    """
    return denoising_error(pred, ref_pred.detach(), mask)


def implicit_accuracy(margin: Tensor) -> Tensor:
    """Fraction of pairs the policy ranks right (margin > 0); exact ties (margin == 0) count as half."""
    return ((margin > 0).float() + 0.5 * (margin == 0).float()).mean()


def group_advantages(rewards: Tensor, std_floor: float = 1e-4, clip: float | None = 5.0) -> tuple[Tensor, Tensor]:
    """GRPO's advantages: each prompt's K rewards standardised within their group, [G, K] -> ([G, K], [G]).

    A = (r − mean_g) / max(std_g, std_floor), std with ddof 0 (Flow-GRPO), clipped to ±clip. Groups whose
    rewards are all equal carry no signal: their advantages are 0 and the second output marks them."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, unbiased=False, keepdim=True)
    adv = (rewards - mean) / std.clamp_min(std_floor)
    if clip is not None:
        adv = adv.clamp(-clip, clip)
    flat = (rewards == rewards[:, :1]).all(dim=1)
    return torch.where(flat[:, None], torch.zeros_like(adv), adv), flat


def clipped_policy_loss(logp: Tensor, old_logp: Tensor, advantage: Tensor, clip_range: float) -> Tensor:
    """PPO's clipped surrogate per transition (DDPO, Flow-GRPO), [B]:

        ρ = exp(log π_θ(x_prev | x_t) − log π_old(x_prev | x_t))
        loss = max(−A·ρ, −A·clip(ρ, 1 − ε, 1 + ε))

    At ρ = 1 its gradient is −A·∇log π_θ (REINFORCE with the given advantages)."""
    ratio = torch.exp(logp - old_logp)
    return torch.maximum(-advantage * ratio, -advantage * ratio.clamp(1.0 - clip_range, 1.0 + clip_range))


def nft_loss(err_pos: Tensor, err_neg: Tensor, optimality: Tensor, beta: float) -> Tensor:
    """DiffusionNFT's negative-aware loss per sample (Zheng et al. 2025, Eq. 7), [B]:

        r·‖v⁺ − v‖² + (1 − r)·‖v⁻ − v‖²,  v⁺ = (1 − β)·v_old + β·v_θ,  v⁻ = (1 + β)·v_old − β·v_θ

    given as the policy's errors against the shifted targets that make ‖v^± − v‖² = β²·err_±
    (see `genpref.rl.nft_targets`); r in [0, 1] is the sample's optimality probability."""
    return beta**2 * (optimality * err_pos + (1.0 - optimality) * err_neg)

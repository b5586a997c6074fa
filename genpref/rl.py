"""Online reward RL for diffusion (GRPO / DDPO, DiffusionNFT): group rollouts with per-step log-probs,
advantages, and the transitions the training step re-scores.

A rollout batch is P prompts × K samples (`online.group_size`) drawn with stochastic DDIM (`online.eta`);
every transition x_t -> x_prev is recorded with its log-prob. The reward models score the finished samples;
advantages are standardised within each prompt's group (or, with `objective.group_norm: false`, by DDPO's
per-prompt running statistics). GRPO trains a fraction of each trajectory's transitions
(`online.train_fraction`) for `online.inner_epochs` passes with PPO's clipped ratio; DiffusionNFT trains on
the finished samples through the forward process. A group always lives on one rank, generated from a
generator keyed by its prompt's stream position, so its samples and its advantages are the same whatever
the number of processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from genpref import losses, sampling
from genpref.adapter import Batch
from genpref.diversity import distance_to_group, unit_rows
from genpref.errors import UserError
from genpref.noising import STREAM_ONLINE, Branch, item_generator, noised_branch
from genpref.online import RolloutBuffer
from genpref.recipes import SourceContext, TrainBatch, _Refilling, item_at
from genpref.rewards import embedder


@dataclass
class Transition:
    """Stored DDIM transitions x_t -> x_prev at timesteps t, re-scored under the current weights."""

    x_t: Tensor
    t: Tensor
    x_prev: Tensor
    batch: Batch
    scheduler: Any  # the DDIM scheduler of the rollout (its timestep spacing fixes ᾱ_prev)
    eta: float
    guidance: float = 1.0  # the rollout's classifier-free guidance: re-scored with the same guided output


def transition_logprobs(adapter, branch: Transition, need_reference: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(log π_θ [B] with grad, log π_ref [B] or None, KL(π_θ ‖ π_ref) [B] or None) of the stored transitions.

    The KL is the closed form between the two Gaussians of the step, which share σ_t:
    mean over valid elements of (μ_θ − μ_ref)² / (2σ_t²) (Flow-GRPO's KL)."""
    b = branch
    out = adapter.predict(b.x_t, b.t, b.batch, b.guidance).float()
    _, logp = sampling.ddim_step_with_logprob(b.scheduler, out, b.t, b.x_t, b.eta, prev_sample=b.x_prev, mask=b.batch.mask)
    if not need_reference:
        return logp, None, None
    with torch.no_grad(), adapter.reference():
        ref_out = adapter.predict(b.x_t, b.t, b.batch, b.guidance).float()
    _, ref_logp = sampling.ddim_step_with_logprob(b.scheduler, ref_out, b.t, b.x_t, b.eta, prev_sample=b.x_prev,
                                                  mask=b.batch.mask)
    mu, sigma = sampling.ddim_gaussian(b.scheduler, out, b.t, b.x_t, b.eta)
    mu_ref, _ = sampling.ddim_gaussian(b.scheduler, ref_out, b.t, b.x_t, b.eta)
    kl = sampling.masked_mean((mu - mu_ref) ** 2 / (2 * sigma.clamp_min(1e-12) ** 2), b.batch.mask) * (sigma.reshape(-1) > 0)
    return logp, ref_logp, kl


class PerPromptStats:
    """DDPO's per-prompt reward statistics: the last `buffer_size` rewards of each prompt standardise its
    new ones; until a prompt has `min_count` rewards the whole batch's mean and std are used."""

    def __init__(self, buffer_size: int = 16, min_count: int = 16):
        self.buffer_size, self.min_count = buffer_size, min_count
        self.history: dict[str, list[float]] = {}

    def advantages(self, prompts: list[str], rewards: Tensor, std_floor: float = 1e-4) -> Tensor:
        out = torch.empty_like(rewards)
        for p in dict.fromkeys(prompts):
            idx = [i for i, q in enumerate(prompts) if q == p]
            seen = self.history.setdefault(p, [])
            seen.extend(rewards[idx].tolist())
            del seen[: -self.buffer_size]
            ref = torch.tensor(seen) if len(seen) >= self.min_count else rewards
            out[idx] = (rewards[idx] - ref.mean()) / ref.std(unbiased=False).clamp_min(std_floor)
        return out

    def state_dict(self) -> dict:
        return {"history": {k: list(v) for k, v in self.history.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.history = {k: list(v) for k, v in state["history"].items()}


def nft_targets(target: Tensor, old_pred: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """Targets that turn DiffusionNFT's implicit policies into plain regressions of the policy's output:
    with v⁺ = (1 − β)·v_old + β·v_θ and v⁻ = (1 + β)·v_old − β·v_θ,
    ‖v⁺ − v‖² = β²·‖v_θ − (v − (1 − β)/β·(v_old − v))‖²  and  ‖v⁻ − v‖² = β²·‖v_θ − ((1 + β)·v_old − v)/β‖²."""
    pos = target - (1.0 - beta) / beta * (old_pred - target)
    neg = ((1.0 + beta) * old_pred - target) / beta
    return pos, neg


class GroupRollouts(_Refilling):
    """GRPO / DDPO and DiffusionNFT: K stochastic-DDIM samples per prompt, scored by the reward models, with
    group-normalised advantages; the rollout buffer holds the transitions (GRPO) or the finished samples
    (NFT) of one rollout batch for `online.inner_epochs` passes, and is part of every checkpoint.

    With `objective.sft_weight` > 0 each batch also carries a branch "w" of expert samples (the anchor)."""

    def __init__(self, ctx: SourceContext, items):
        if ctx.reward is None:
            raise ValueError(f"objective.name={ctx.cfg.objective.name} needs a reward model: set reward.models")
        o = ctx.cfg.online
        if o.group_size < 2:
            raise ValueError("online.group_size must be >= 2 (advantages are relative to the prompt's group)")
        if not 0 < o.train_fraction <= 1:
            raise ValueError("online.train_fraction must lie in (0, 1]")
        super().__init__(ctx, items)
        self.nft = ctx.needs.online in ("finished_samples", "accepted_samples")  # finished samples, any solver
        self.rft = ctx.needs.online == "accepted_samples"
        if not self.nft:
            self.scheduler = ctx.adapter.make_solver("ddim")
            self.scheduler.set_timesteps(o.steps)
        experts = ctx.adapter.load_items("experts") if ctx.cfg.objective.sft_weight else None
        self.experts = experts
        self.anchored = 0  # expert samples this rank has drawn for the anchor
        self.expert_stream = None
        if experts is not None:
            from genpref.stream import ItemStream

            self.expert_stream = ItemStream(len(experts), ctx.seed + 1)
        from genpref.build import build_reward

        self.holdout = build_reward(ctx.cfg, ctx.device, ctx.cfg.reward.holdout) if ctx.cfg.reward.holdout else None
        self.buffer = RolloutBuffer()
        self.prompt_stats = PerPromptStats()
        self.rollouts = 0
        self.generated = 0  # samples this rank has generated
        self.stats: dict[str, float] = {}

    # -- rollouts
    def _group(self, prompt: str, position: int) -> tuple[Tensor, Tensor, list[dict], Batch, Tensor]:
        """K samples of one prompt from a generator keyed by its stream position: the final samples, their
        rewards [K], per step {t, x_t, x_prev, logp} (GRPO), and their unit-length embeddings [K, D] (the reward
        model's `embed` when it has one, else the model-space samples: genpref.diversity)."""
        ctx, o = self.ctx, self.ctx.cfg.online
        cond = ctx.adapter.encode_prompts([prompt] * o.group_size).to(ctx.device)
        steps: list[dict] = []
        record = lambda i, t, x, xp, lp: steps.append({"t": t.cpu(), "x_t": x.cpu(), "x_prev": xp.cpu(), "logp": lp.cpu()})
        gen = item_generator(ctx.seed, position, STREAM_ONLINE)
        with torch.no_grad(), ctx.rollout.active():
            if self.nft:  # any solver, no likelihoods: the sampler the config names
                x0 = ctx.adapter.generate(cond, generator=gen, num_steps=o.steps, guidance=o.guidance)
            else:
                x0 = ctx.adapter.generate(cond, generator=gen, num_steps=o.steps, guidance=o.guidance, solver="ddim",
                                          eta=o.eta, on_transition=record)
        decoded = ctx.adapter.decode(x0, cond)
        rewards = ctx.reward.score(decoded, cond.prompts).float().cpu()
        if self.holdout is not None:  # the held-out check: scored on the same samples, never trained on
            self._holdout.append(self.holdout.score(decoded, cond.prompts).float().mean().item())
        model = embedder(ctx.reward)
        emb = unit_rows(model.embed(decoded)) if model is not None else unit_rows(x0.detach().cpu(), cond.mask)
        return x0, rewards, steps, cond, emb

    def _refill(self) -> None:
        ctx, o, obj = self.ctx, self.ctx.cfg.online, self.ctx.cfg.objective
        tick = time.perf_counter()
        n = o.batch_size or ctx.cfg.train.batch_size
        pos = self._draw(n)
        prompts = [item_at(self.items, self.stream, p)["prompt"] for p in pos]
        self._holdout: list[float] = []
        groups = [self._group(p, q) for p, q in zip(prompts, pos)]
        rewards = torch.stack([g[1] for g in groups])  # [P, K]
        ids = torch.arange(len(groups)).repeat_interleave(o.group_size)  # [P·K]: row i·K + k is prompt i's k-th sample
        spread = distance_to_group(torch.cat([g[4] for g in groups]), ids).view_as(rewards)  # [P, K]
        scored = rewards + obj.diversity * spread if obj.diversity else rewards  # diversity_bonus, before the normalisation
        if obj.group_norm:
            adv, flat = losses.group_advantages(scored, obj.std_floor, obj.adv_clip)
        else:
            flat_prompts = [p for p in prompts for _ in range(o.group_size)]
            adv = self.prompt_stats.advantages(flat_prompts, scored.reshape(-1), obj.std_floor).view_as(rewards)
            adv = adv.clamp(-obj.adv_clip, obj.adv_clip) if obj.adv_clip is not None else adv
            flat = torch.zeros(len(prompts), dtype=torch.bool)
        g = item_generator(ctx.seed, pos[0], STREAM_ONLINE + 20)
        entries: list[dict] = []
        entry_prompts: list[str] = []
        for (x0, r, steps, cond, _), a, skip in zip(groups, adv, flat.tolist()):
            if self.rft:  # rejection sampling: the accepted samples, whatever their group's spread
                keep = r >= o.accept_reward
                if keep.any():
                    entries.append({"x0": x0.detach().float().cpu()[keep], "adv": r[keep], **self._cond(cond.index(keep.nonzero()[:, 0].tolist()))})
                    entry_prompts += [cond.prompts[0]] * int(keep.sum())
                continue
            if skip:
                continue
            if self.nft:
                entries.append({"x0": x0.detach().float().cpu(), "adv": a, **self._cond(cond)})
            else:
                entries.append(self._transitions(steps, a, cond, g))
            entry_prompts += [cond.prompts[0]] * len(entries[-1]["adv"])
        self.rollouts += 1
        self.generated += rewards.numel()
        self.stats = {
            "reward_mean": rewards.mean().item(), "reward_std": rewards.std(unbiased=False).item(),
            "adv_abs_mean": adv.abs().mean().item(), "adv_max": adv.max().item(), "adv_min": adv.min().item(),
            "skipped_groups": float(flat.sum()), "generate_s": time.perf_counter() - tick,
            "generated": float(self.generated),
            "group_distance": spread.mean().item(),  # diversity within prompts: mean distance to the group's others
        }
        if obj.diversity:
            self.stats["diversity_bonus"] = (obj.diversity * spread).mean().item()
        if self._holdout:
            self.stats["holdout_reward"] = sum(self._holdout) / len(self._holdout)
        if not entries:  # every group flat: nothing to learn from this batch; draw the next one
            return
        data = {k: torch.cat([e[k] for e in entries]) for k in entries[0]}
        for _ in range(o.inner_epochs):  # each pass over the rollout batch in its own order
            self.buffer.push(data, entry_prompts, g)

    def _cond(self, cond: Batch) -> dict[str, Tensor]:
        out = {f"cond.{k}": v.detach().cpu() for k, v in cond.cond.items()}
        if cond.mask is not None:
            out["mask"] = cond.mask.detach().cpu()
        return out

    def _transitions(self, steps: list[dict], adv: Tensor, cond: Batch, g: torch.Generator) -> dict[str, Tensor]:
        """A random `train_fraction` of each trajectory's stochastic steps (σ_t > 0), as buffer rows."""
        o = self.ctx.cfg.online
        live = [i for i, s in enumerate(steps) if bool((s["logp"] != 0).any())]
        keep = max(1, round(o.train_fraction * len(live)))
        k = len(adv)
        rows: dict[str, list[Tensor]] = {}
        for j in range(k):
            chosen = [live[i] for i in torch.randperm(len(live), generator=g)[:keep].tolist()]
            for i in chosen:
                s = steps[i]
                for key in ("t", "x_t", "x_prev", "logp"):
                    rows.setdefault(key, []).append(s[key][j])
                rows.setdefault("adv", []).append(adv[j])
                for key, v in self._cond(cond.index([j])).items():
                    rows.setdefault(key, []).append(v[0])
        return {key: torch.stack(v) for key, v in rows.items()}

    # -- training batches
    def next(self, step: int, micro: int) -> TrainBatch:
        ctx, b = self.ctx, self.ctx.cfg.train.batch_size
        train_tick = time.perf_counter()
        for empty in range(1000):
            if len(self.buffer) >= b:
                break
            self._refill()
            if self.rft and empty >= 50 and not len(self.buffer):
                raise UserError(f"objective.name=rft: no sample reached online.accept_reward={self.ctx.cfg.online.accept_reward} "
                                "in 50 rollout batches; lower it or start from a better model")
        e, prompts = self.buffer.take(b)
        e = {k: v.to(ctx.device) for k, v in e.items()}
        cond = {k[5:]: v for k, v in e.items() if k.startswith("cond.")}
        if self.rft:
            batch = Batch(e["x0"], cond, e.get("mask"), prompts)
            _, eps = ctx.noise(self._noise_positions(b), batch.x0)
            t, _ = ctx.noise(self._noise_positions(b), batch.x0)
            branches = {"x": noised_branch(ctx.adapter.noise_scheduler, batch, t, eps)}
            extras = {"advantage": e["adv"]}
        elif self.nft:
            batch = Batch(e["x0"], cond, e.get("mask"), prompts)
            branches = self._nft_branches(batch)
            extras = {"advantage": e["adv"]}
        else:
            batch = Batch(None, cond, e.get("mask"), prompts)
            o = ctx.cfg.online
            branches = {"g": Transition(e["x_t"], e["t"], e["x_prev"], batch, self.scheduler, o.eta, o.guidance)}
            extras = {"advantage": e["adv"], "old_logp": e["logp"]}
        if self.experts is not None:
            branches["w"] = self._expert_branch(b)
        stats = {**self.stats, "buffer": float(len(self.buffer)), "rollouts": float(self.rollouts),
                 "batch_s": time.perf_counter() - train_tick}
        return TrainBatch(branches, extras, stats)

    def _nft_branches(self, batch: Batch) -> dict[str, Branch]:
        """The finished samples noised at fresh (t, ε); targets shifted by the sampling policy's prediction."""
        ctx = self.ctx
        _, eps = ctx.noise(self._noise_positions(len(batch)), batch.x0)
        t, _ = ctx.noise(self._noise_positions(len(batch)), batch.x0)
        plain = noised_branch(ctx.adapter.noise_scheduler, batch, t, eps)
        with torch.no_grad(), ctx.rollout.active():
            old = ctx.adapter.predict(plain.x_t, plain.t, batch).float()
        pos, neg = nft_targets(plain.target, old, ctx.cfg.objective.nft_beta)
        out = {"pos": Branch(plain.x_t, t, pos, batch), "neg": Branch(plain.x_t, t, neg, batch)}
        if ctx.cfg.objective.kl_weight:  # the same inputs: the policy's forward is shared (genpref.forward)
            out["kl"] = Branch(plain.x_t, t, None, batch)
        return out

    def _expert_branch(self, b: int) -> Branch:
        ctx = self.ctx
        start = self.anchored * ctx.world + ctx.rank * b
        self.anchored += b
        pos = list(range(start, start + b))
        items = [item_at(self.experts, self.expert_stream, p) for p in pos]
        w = ctx.adapter.encode([it["x"] for it in items], [it["prompt"] for it in items]).to(ctx.device)
        t, eps = ctx.noise(self._noise_positions(b), w.x0)
        return noised_branch(ctx.adapter.noise_scheduler, w, t, eps)

    def after_optimizer_step(self, step: int) -> None:
        self.ctx.rollout.after_optimizer_step(step)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "buffer": self.buffer.state_dict(), "rollouts": self.rollouts,
                "prompt_stats": self.prompt_stats.state_dict(), "stats": dict(self.stats), "anchored": self.anchored, "generated": self.generated}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.buffer.load_state_dict(state["buffer"])
        self.rollouts = state["rollouts"]
        self.prompt_stats.load_state_dict(state["prompt_stats"])
        self.stats = dict(state["stats"])
        self.anchored = state["anchored"]
        self.generated = state["generated"]

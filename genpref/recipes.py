"""Pair sources: where the preferred and dispreferred samples of a recipe come from (DESIGN §3).

A source turns data items (and, for online recipes, fresh policy samples) into a TrainBatch of named
branches — noisy states, timesteps, targets, conditions — plus the extras its objective needs. The
training loop only calls `next`, `after_optimizer_step` and the state methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from genpref.adapter import Adapter, Batch
from genpref.config import Config
from genpref.needs import NEEDS, Needs
from genpref.noising import STREAM_ONLINE, Branch, draw_t_eps, item_generator, noised_branch
from genpref.online import RolloutBuffer, RolloutPolicy, TrajectoryRecorder
from genpref.stream import ItemStream, micro_positions


@dataclass
class TrainBatch:
    branches: dict[str, Branch]
    extras: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)  # source-side numbers worth logging
    reference: dict[str, Tensor] | None = None  # reference errors computed ahead (train.precompute_reference)


@dataclass
class SourceContext:
    """What every source needs to know about the run."""

    adapter: Adapter
    cfg: Config
    device: torch.device
    rank: int = 0
    world: int = 1
    rollout: RolloutPolicy | None = None
    reward: Any = None  # a genpref.rewards.RewardModel (SoPo, AI feedback)

    @property
    def seed(self) -> int:
        return self.cfg.train.seed

    def positions(self, step: int, micro: int, per: int | None = None) -> list[int]:
        """Stream positions of this rank's micro-batch; `per` items instead of train.batch_size when a
        source over-draws (SeRA selection) — the ranges stay disjoint across the run."""
        t = self.cfg.train
        return micro_positions(step, micro, batch_size=per or t.batch_size, grad_accum=t.grad_accum, world=self.world, rank=self.rank)

    def noise(self, positions: list[int], like: Tensor) -> tuple[Tensor, Tensor]:
        sched = self.adapter.noise_scheduler
        return draw_t_eps(self.seed, positions, tuple(like.shape[1:]), sched.config.num_train_timesteps, like.device)

    @property
    def needs(self) -> Needs:
        """What the run's objective declares it needs (genpref.needs)."""
        return NEEDS[self.cfg.objective.name]

    @property
    def jitter(self) -> bool:
        """DiffusionDRO's timestep perturbation: published for DRO rollouts, off elsewhere unless asked."""
        o = self.cfg.online
        if o.timestep_jitter is not None:
            return o.timestep_jitter
        return (self.cfg.data.source or "expert_rollouts") == "expert_rollouts" and self.needs.rollout_jitter

    def generate(self, batch: Batch, position: int, callback=None) -> Tensor:
        """Online samples from the rollout copy for batch's conditions (dataset reset when online.reset_t)."""
        o = self.cfg.online
        gen = item_generator(self.seed, position, STREAM_ONLINE)
        with torch.no_grad(), self.rollout.active():
            return self.adapter.generate(
                batch,
                generator=gen,
                num_steps=o.steps,
                guidance=o.guidance,
                start_t=o.reset_t,
                timestep_jitter=self.jitter,
                callback=callback,
            )


def item_at(items, stream: ItemStream, position: int) -> dict:
    """The item at a stream position. Datasets with random augmentation (flips, crops, prompt dropout)
    expose `at(index, key)`: keying the draw by the stream position makes it the same after a resume,
    across micro-batch splits and across ranks."""
    index = stream.item(position)
    return items.at(index, position) if hasattr(items, "at") else items[index]


class _Source:
    """A source over data items, drawn in the order of a seeded item stream."""

    def __init__(self, ctx: SourceContext, items):
        self.ctx, self.items = ctx, items
        self.stream = ItemStream(len(items), ctx.seed)


class _Stateless(_Source):
    """Sources whose position is a pure function of the step: nothing to checkpoint.
    Subclasses build a batch from stream positions (`batch_at`), so wrappers can over-draw."""

    def next(self, step: int, micro: int) -> TrainBatch:
        return self.batch_at(self.ctx.positions(step, micro))

    def after_optimizer_step(self, step: int) -> None:
        if self.ctx.rollout is not None:
            self.ctx.rollout.after_optimizer_step(step)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class OfflinePairs(_Stateless):
    """Offline DPO: dataset winner vs dataset loser, sharing t and ε."""

    def batch_at(self, pos: list[int]) -> TrainBatch:
        ctx = self.ctx
        items = [item_at(self.items, self.stream, p) for p in pos]
        prompts = [it["prompt"] for it in items]
        w = ctx.adapter.encode([it["w"] for it in items], prompts).to(ctx.device)
        l = ctx.adapter.encode([it["l"] for it in items], prompts).to(ctx.device)
        t, eps = ctx.noise(pos, w.x0)
        sched = ctx.adapter.noise_scheduler
        label = torch.tensor([float(it.get("label", 1.0)) for it in items], device=ctx.device)
        return TrainBatch({"w": noised_branch(sched, w, t, eps), "l": noised_branch(sched, l, t, eps)}, {"label": label})


class Experts(_Stateless):
    """Positives only: the SFT control arm and base pretraining."""

    def batch_at(self, pos: list[int]) -> TrainBatch:
        ctx = self.ctx
        items = [item_at(self.items, self.stream, p) for p in pos]
        w = ctx.adapter.encode([it["x"] for it in items], [it["prompt"] for it in items]).to(ctx.device)
        t, eps = ctx.noise(pos, w.x0)
        return TrainBatch({"w": noised_branch(ctx.adapter.noise_scheduler, w, t, eps)})


class Ratings(_Stateless):
    """Single samples with a rating in [0, 1] or thumbs as 0/1 (KTO, direct reward): desirable when
    rating >= 0.5. Each distinct prompt gets an index (the direct-reward objective's value table)."""

    def __init__(self, ctx: SourceContext, items):
        super().__init__(ctx, items)
        self.prompt_index = {p: i for i, p in enumerate(sorted({it["prompt"] for it in items}))}

    @property
    def num_prompts(self) -> int:
        return len(self.prompt_index)

    def batch_at(self, pos: list[int]) -> TrainBatch:
        ctx = self.ctx
        items = [item_at(self.items, self.stream, p) for p in pos]
        x = ctx.adapter.encode([it["x"] for it in items], [it["prompt"] for it in items]).to(ctx.device)
        t, eps = ctx.noise(pos, x.x0)
        rating = torch.tensor([float(it["rating"]) for it in items], device=ctx.device)
        index = torch.tensor([self.prompt_index[it["prompt"]] for it in items], device=ctx.device)
        extras = {"desirable": rating >= 0.5, "rating": rating, "prompt_index": index}
        return TrainBatch({"x": noised_branch(ctx.adapter.noise_scheduler, x, t, eps)}, extras)


class _Refilling(_Source):
    """Sources that consume their own slice of the stream whenever their buffer runs dry."""

    def __init__(self, ctx: SourceContext, items):
        super().__init__(ctx, items)
        self.drawn = 0  # items this rank has drawn (its data position)
        self.trained = 0  # training samples this rank has produced (keys their noise)

    def _draw(self, n: int) -> list[int]:
        """Stream positions for n new items: rank r takes the r-th of every world-sized chunk."""
        ctx = self.ctx
        start = self.drawn * ctx.world + ctx.rank * n
        self.drawn += n
        return list(range(start, start + n))

    def _noise_positions(self, n: int) -> list[int]:
        ctx = self.ctx
        start = (self.trained * ctx.world + ctx.rank * n) + 10**9  # disjoint from item positions
        self.trained += n
        return list(range(start, start + n))

    def after_optimizer_step(self, step: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"drawn": self.drawn, "trained": self.trained}

    def load_state_dict(self, state: dict) -> None:
        self.drawn, self.trained = state["drawn"], state["trained"]


class ExpertRollouts(_Refilling):
    """Diffusion-DRO: an expert sample vs a state of a policy rollout for the same prompt, at the same t.

    Every rollout is recorded step by step; `online.states_per_rollout` of its states (0 = all) enter a
    shuffled buffer, each paired with its trajectory's expert, so one rollout feeds several samples.
    Target of the rollout state: the rollout copy's own prediction there (published), or, with
    `objective.policy_target: noise`, the final rollout sample noised afresh with the expert's ε.
    """

    def __init__(self, ctx: SourceContext, items):
        super().__init__(ctx, items)
        self.buffer = RolloutBuffer()
        self.rollouts = 0
        self.reward_online: float | None = None

    def _refill(self) -> None:
        ctx, o = self.ctx, self.ctx.cfg.online
        n = o.batch_size or ctx.cfg.train.batch_size
        pos = self._draw(n)
        items = [item_at(self.items, self.stream, p) for p in pos]
        prompts = [it["prompt"] for it in items]
        expert = ctx.adapter.encode([it["x"] for it in items], prompts).to(ctx.device)
        rec = TrajectoryRecorder()
        x0_gen = ctx.generate(expert, pos[0], callback=rec)
        t, x_t, pred = rec.stacked()  # [S, B], [S, B, ...], [S, B, ...]
        steps = t.shape[0]
        keep = o.states_per_rollout or steps
        g = item_generator(ctx.seed, pos[0], STREAM_ONLINE + 10)
        chosen = torch.stack([torch.randperm(steps, generator=g)[:keep] for _ in range(n)], 1)  # [keep, B]
        cols = torch.arange(n).expand_as(chosen)
        rep = lambda v: v.detach().cpu()[cols.reshape(-1)]  # per-item tensor repeated for each kept state
        entries = {
            "x0": rep(expert.x0),
            "x0_gen": rep(x0_gen.float()),
            "t": t[chosen, cols].reshape(-1),
            "x_t": x_t[chosen, cols].reshape(-1, *x_t.shape[2:]),
            "pred": pred[chosen, cols].reshape(-1, *pred.shape[2:]),
            **{f"cond.{k}": rep(v) for k, v in expert.cond.items()},
        }
        if expert.mask is not None:
            entries["mask"] = rep(expert.mask)
        self.buffer.push(entries, [prompts[i] for i in cols.reshape(-1).tolist()], g)
        self.rollouts += 1
        if ctx.reward is not None:  # what the rollouts are worth, when an annotator is configured (logged only)
            self.reward_online = ctx.reward.score(ctx.adapter.decode(x0_gen, expert), prompts).float().mean().item()

    def next(self, step: int, micro: int) -> TrainBatch:
        ctx, b = self.ctx, self.ctx.cfg.train.batch_size
        while len(self.buffer) < b:
            self._refill()
        e, prompts = self.buffer.take(b)
        e = {k: v.to(ctx.device) for k, v in e.items()}
        cond = {k[5:]: v for k, v in e.items() if k.startswith("cond.")}
        expert = Batch(e["x0"], cond, e.get("mask"), prompts)
        _, eps = ctx.noise(self._noise_positions(b), expert.x0)
        t = e["t"]
        sched = ctx.adapter.noise_scheduler
        w = noised_branch(sched, expert, t, eps)
        if ctx.cfg.objective.policy_target == "noise":
            l = noised_branch(sched, expert.with_x0(e["x0_gen"]), t, eps)
        else:
            l = Branch(e["x_t"], t, e["pred"], expert)
        stats = {"buffer": float(len(self.buffer)), "rollouts": float(self.rollouts)}
        if self.reward_online is not None:
            stats["reward_online"] = self.reward_online
        return TrainBatch({"w": w, "l": l}, stats=stats)

    def after_optimizer_step(self, step: int) -> None:
        self.ctx.rollout.after_optimizer_step(step)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "buffer": self.buffer.state_dict(), "rollouts": self.rollouts, "reward_online": self.reward_online}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.buffer.load_state_dict(state["buffer"])
        self.rollouts = state["rollouts"]
        self.reward_online = state.get("reward_online")


class SoPoOnline(_Stateless):
    """SoPo: dataset sample (winner) vs the worst of K online samples (loser) by the reward model.

    The loser's reward and S (the lowest winner–sample similarity among the K) go to the objective,
    which opens the loser gate only when the reward is below τ. Winner and loser share t and ε.
    """

    def __init__(self, ctx: SourceContext, items):
        if ctx.reward is None:
            raise ValueError("data.source=sopo_online needs a reward model: set reward.models")
        super().__init__(ctx, items)

    def batch_at(self, pos: list[int]) -> TrainBatch:
        ctx, k = self.ctx, self.ctx.cfg.online.num_samples
        items = [item_at(self.items, self.stream, p) for p in pos]
        prompts = [it["prompt"] for it in items]
        w = ctx.adapter.encode([it["x"] for it in items], prompts).to(ctx.device)
        b = len(items)
        repeated = Batch.cat([w] * k)  # sample j of item i sits at j·B + i
        x0_gen = ctx.generate(repeated, pos[0])
        samples = ctx.adapter.decode(x0_gen, repeated)
        winners = ctx.adapter.decode(w.x0, w)
        rewards = ctx.reward.score(samples, repeated.prompts).float().view(k, b)
        sims = ctx.reward.similarity(winners * k, samples).float().view(k, b)
        worst = rewards.argmin(0)  # [B]
        idx = worst.to(x0_gen.device) * b + torch.arange(b, device=x0_gen.device)
        loser = w.with_x0(x0_gen[idx].to(w.x0.dtype))
        t, eps = ctx.noise(pos, w.x0)
        sched = ctx.adapter.noise_scheduler
        extras = {
            "loser_reward": rewards.min(0).values.to(ctx.device),
            "winner_similarity": sims.min(0).values.to(ctx.device),
        }
        reward_w = ctx.reward.score(winners, prompts).float()
        stats = {"reward_w": reward_w.mean().item(), "reward_l": extras["loser_reward"].mean().item(), "reward_online": rewards.mean().item()}
        return TrainBatch({"w": noised_branch(sched, w, t, eps), "l": noised_branch(sched, loser, t, eps)}, extras, stats)


def aux_positions(pos: list[int], tag: int) -> list[int]:
    """Positions for a second, independent draw keyed by the same items (tag 1, 2, ...)."""
    return [p + tag * 10**12 for p in pos]


def subset(tb: TrainBatch, idx: Tensor) -> TrainBatch:
    """The rows `idx` of every branch and per-sample extra."""
    pick = lambda v: v[idx.to(v.device)]
    branches = {
        k: Branch(pick(b.x_t), pick(b.t), None if b.target is None else pick(b.target), b.batch.index(idx))
        for k, b in tb.branches.items()
    }
    return TrainBatch(branches, {k: pick(v) for k, v in tb.extras.items()}, dict(tb.stats))


def implicit_reward(ctx: SourceContext, batch: Batch, pos: list[int]) -> Tensor:
    """The policy's own reward of samples batch.x0: r = e_ref − e_θ, averaged over online.reward_draws
    (t, ε) draws (Diffusion-DPO's implicit reward up to β; SeRA's self-review signal)."""
    from genpref.forward import branch_errors

    total = torch.zeros(len(batch), device=batch.x0.device)
    draws = ctx.cfg.online.reward_draws
    for d in range(draws):
        t, eps = ctx.noise(aux_positions(pos, 3 + d), batch.x0)
        branch = noised_branch(ctx.adapter.noise_scheduler, batch, t, eps)
        with torch.no_grad():
            err, ref = branch_errors(ctx.adapter, {"x": branch}, True)
        total += ref["x"] - err["x"]
    return total / draws


class AIFeedback(_Stateless):
    """Online AI feedback (OAIF): K policy samples per prompt, ranked by the annotator; best vs worst is a
    DPO pair. Annotator: the reward models (`online.annotator: reward`) or the policy's own implicit
    reward (`implicit`, SeRA's preference bootstrapping). With `objective.soft_label` the pair's label
    is σ(score gap / online.label_scale) (soft preference strength, Online Self-Preferring)."""

    def __init__(self, ctx: SourceContext, items):
        o = ctx.cfg.online
        if o.num_samples < 2:
            raise ValueError("data.source=ai_feedback needs online.num_samples >= 2 (best vs worst of K)")
        if o.annotator == "reward" and ctx.reward is None:
            raise ValueError("data.source=ai_feedback with online.annotator=reward needs reward.models")
        super().__init__(ctx, items)

    def batch_at(self, pos: list[int]) -> TrainBatch:
        ctx, o = self.ctx, self.ctx.cfg.online
        k, b = o.num_samples, len(pos)
        prompts = [item_at(self.items, self.stream, p)["prompt"] for p in pos]
        cond = ctx.adapter.encode_prompts(prompts).to(ctx.device)
        repeated = Batch.cat([cond] * k)  # sample j of prompt i sits at j·B + i
        x0 = ctx.generate(repeated, pos[0])
        if o.annotator == "implicit":
            scores = implicit_reward(ctx, repeated.with_x0(x0), [p for _ in range(k) for p in pos])
        else:
            scores = ctx.reward.score(ctx.adapter.decode(x0, repeated), repeated.prompts)
        scores = scores.float().view(k, b).to(x0.device)
        rows = torch.arange(b, device=x0.device)
        best, worst = scores.argmax(0) * b + rows, scores.argmin(0) * b + rows
        gap = scores.max(0).values - scores.min(0).values
        w, l = cond.with_x0(x0[best]), cond.with_x0(x0[worst])
        t, eps = ctx.noise(pos, w.x0)
        sched = ctx.adapter.noise_scheduler
        label = torch.sigmoid(gap / o.label_scale)
        stats = {"score_best": scores.max(0).values.mean().item(), "score_worst": scores.min(0).values.mean().item(),
                 "score_gap": gap.mean().item(), "label": label.mean().item()}
        return TrainBatch({"w": noised_branch(sched, w, t, eps), "l": noised_branch(sched, l, t, eps)},
                          {"label": label.to(ctx.device)}, stats)


class ExpertVsSample(_Stateless):
    """Expert (winner) vs a finished policy sample for the same prompt (loser), sharing t and ε.
    With `online.reset_t` the sample starts from the expert noised to that timestep (dataset reset,
    DR-PO): cheaper and on the data manifold."""

    def batch_at(self, pos: list[int]) -> TrainBatch:
        ctx = self.ctx
        items = [item_at(self.items, self.stream, p) for p in pos]
        w = ctx.adapter.encode([it["x"] for it in items], [it["prompt"] for it in items]).to(ctx.device)
        l = w.with_x0(ctx.generate(w, pos[0]).to(w.x0.dtype))
        t, eps = ctx.noise(pos, w.x0)
        sched = ctx.adapter.noise_scheduler
        return TrainBatch({"w": noised_branch(sched, w, t, eps), "l": noised_branch(sched, l, t, eps)},
                          {"label": torch.ones(len(pos), device=ctx.device)})


class _Wrapper:
    """A source around another one: position, rollout syncing and state are the inner source's."""

    def __init__(self, inner):
        self.inner, self.ctx = inner, inner.ctx

    def after_optimizer_step(self, step: int) -> None:
        self.inner.after_optimizer_step(step)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


class SelectByMargin(_Wrapper):
    """SeRA sample selection: over-draw batch_size / fraction pairs, score them with the current policy's
    implicit reward margin (e_ref,w − e_w) − (e_ref,l − e_l) on their own t and ε, keep the batch_size
    with the largest (SeRA) or smallest margins."""

    def __init__(self, inner, fraction: float, direction: str):
        if not 0 < fraction <= 1:
            raise ValueError("select.fraction must lie in (0, 1]")
        super().__init__(inner)
        self.fraction, self.direction = fraction, direction

    def next(self, step: int, micro: int) -> TrainBatch:
        import math

        from genpref.forward import branch_errors

        b = self.ctx.cfg.train.batch_size
        n = math.ceil(b / self.fraction)
        tb = self.inner.batch_at(self.ctx.positions(step, micro, per=n))
        with torch.no_grad():
            err, ref = branch_errors(self.ctx.adapter, {"w": tb.branches["w"], "l": tb.branches["l"]}, True)
        margin = (ref["w"] - err["w"]) - (ref["l"] - err["l"])
        keep = torch.topk(margin, b, largest=self.direction == "largest").indices
        out = subset(tb, keep)
        out.stats.update(select_margin_kept=margin[keep].mean().item(), select_margin_all=margin.mean().item())
        return out


class WithPolicySamples(_Wrapper):
    """Adds branch "kl": the policy's own samples for the preferred branch's prompts, noised at fresh
    (t, ε), regressed onto the reference's prediction (HyPO's KL-to-reference on on-policy data)."""

    def next(self, step: int, micro: int) -> TrainBatch:
        tb = self.inner.next(step, micro)
        ctx = self.ctx
        anchor = next(iter(tb.branches.values())).batch
        pos = aux_positions(ctx.positions(step, micro), 1)
        samples = anchor.with_x0(ctx.generate(anchor, pos[0]).to(anchor.x0.dtype))
        t, eps = ctx.noise(pos, samples.x0)
        kl = noised_branch(ctx.adapter.noise_scheduler, samples, t, eps)
        tb.branches["kl"] = Branch(kl.x_t, kl.t, None, samples)
        return tb

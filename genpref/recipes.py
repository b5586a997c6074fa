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
from genpref.noising import STREAM_ONLINE, Branch, draw_t_eps, item_generator, noised_branch
from genpref.online import RolloutBuffer, RolloutPolicy, TrajectoryRecorder
from genpref.stream import ItemStream, micro_positions


@dataclass
class TrainBatch:
    branches: dict[str, Branch]
    extras: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)  # source-side numbers worth logging


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

    def positions(self, step: int, micro: int) -> list[int]:
        t = self.cfg.train
        return micro_positions(step, micro, batch_size=t.batch_size, grad_accum=t.grad_accum, world=self.world, rank=self.rank)

    def noise(self, positions: list[int], like: Tensor) -> tuple[Tensor, Tensor]:
        sched = self.adapter.noise_scheduler
        return draw_t_eps(self.seed, positions, tuple(like.shape[1:]), sched.config.num_train_timesteps, like.device)

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
                timestep_jitter=o.timestep_jitter,
                callback=callback,
            )


class _Stateless:
    """Sources whose position is a pure function of the step: nothing to checkpoint."""

    def after_optimizer_step(self, step: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class OfflinePairs(_Stateless):
    """Offline DPO: dataset winner vs dataset loser, sharing t and ε."""

    def __init__(self, ctx: SourceContext, items):
        self.ctx, self.items = ctx, items
        self.stream = ItemStream(len(items), ctx.seed)

    def next(self, step: int, micro: int) -> TrainBatch:
        ctx = self.ctx
        pos = ctx.positions(step, micro)
        items = [self.items[self.stream.item(p)] for p in pos]
        prompts = [it["prompt"] for it in items]
        w = ctx.adapter.encode([it["w"] for it in items], prompts).to(ctx.device)
        l = ctx.adapter.encode([it["l"] for it in items], prompts).to(ctx.device)
        t, eps = ctx.noise(pos, w.x0)
        sched = ctx.adapter.noise_scheduler
        label = torch.tensor([float(it.get("label", 1.0)) for it in items], device=ctx.device)
        return TrainBatch({"w": noised_branch(sched, w, t, eps), "l": noised_branch(sched, l, t, eps)}, {"label": label})


class Experts(_Stateless):
    """Positives only: the SFT control arm and base pretraining."""

    def __init__(self, ctx: SourceContext, items):
        self.ctx, self.items = ctx, items
        self.stream = ItemStream(len(items), ctx.seed)

    def next(self, step: int, micro: int) -> TrainBatch:
        ctx = self.ctx
        pos = ctx.positions(step, micro)
        items = [self.items[self.stream.item(p)] for p in pos]
        w = ctx.adapter.encode([it["x"] for it in items], [it["prompt"] for it in items]).to(ctx.device)
        t, eps = ctx.noise(pos, w.x0)
        return TrainBatch({"w": noised_branch(ctx.adapter.noise_scheduler, w, t, eps)})


class Ratings(_Stateless):
    """Single samples with a rating or thumbs (KTO): desirable when rating >= 0.5."""

    def __init__(self, ctx: SourceContext, items):
        self.ctx, self.items = ctx, items
        self.stream = ItemStream(len(items), ctx.seed)

    def next(self, step: int, micro: int) -> TrainBatch:
        ctx = self.ctx
        pos = ctx.positions(step, micro)
        items = [self.items[self.stream.item(p)] for p in pos]
        x = ctx.adapter.encode([it["x"] for it in items], [it["prompt"] for it in items]).to(ctx.device)
        t, eps = ctx.noise(pos, x.x0)
        rating = torch.tensor([float(it["rating"]) for it in items], device=ctx.device)
        return TrainBatch({"x": noised_branch(ctx.adapter.noise_scheduler, x, t, eps)}, {"desirable": rating >= 0.5, "rating": rating})


class _Refilling:
    """Sources that consume their own slice of the stream whenever their buffer runs dry."""

    def __init__(self, ctx: SourceContext, items):
        self.ctx, self.items = ctx, items
        self.stream = ItemStream(len(items), ctx.seed)
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

    def _refill(self) -> None:
        ctx, o = self.ctx, self.ctx.cfg.online
        n = o.batch_size or ctx.cfg.train.batch_size
        pos = self._draw(n)
        items = [self.items[self.stream.item(p)] for p in pos]
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
        return TrainBatch({"w": w, "l": l}, stats={"buffer": float(len(self.buffer)), "rollouts": float(self.rollouts)})

    def after_optimizer_step(self, step: int) -> None:
        self.ctx.rollout.after_optimizer_step(step)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "buffer": self.buffer.state_dict(), "rollouts": self.rollouts}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.buffer.load_state_dict(state["buffer"])
        self.rollouts = state["rollouts"]


class SoPoOnline(_Stateless):
    """SoPo: dataset sample (winner) vs the worst of K online samples (loser) by the reward model.

    The loser's reward and S (the lowest winner–sample similarity among the K) go to the objective,
    which opens the loser gate only when the reward is below τ. Winner and loser share t and ε.
    """

    def __init__(self, ctx: SourceContext, items):
        if ctx.reward is None:
            raise ValueError("objective.name=sopo needs a reward model: set reward.models")
        self.ctx, self.items = ctx, items
        self.stream = ItemStream(len(items), ctx.seed)

    def next(self, step: int, micro: int) -> TrainBatch:
        ctx, k = self.ctx, self.ctx.cfg.online.num_samples
        pos = ctx.positions(step, micro)
        items = [self.items[self.stream.item(p)] for p in pos]
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

    def after_optimizer_step(self, step: int) -> None:
        self.ctx.rollout.after_optimizer_step(step)

"""Inverse alignment: refitting the learned reward during an online run on the offline pairs nearest the policy.

"Solving the Inverse Alignment Problem" observes that a reward model fitted once on the whole offline
preference data is least accurate where the policy goes as it trains; refitting it on the part of that data
that matches the current policy's distribution keeps it accurate there. With `reward.refit_every: N`, every
N optimizer steps (after the rollout copy's sync):

1. the rollout copy (a frozen snapshot of the policy) draws `reward.refit_samples` samples for prompts of the
   run's own prompt source, embedded with the learned reward's encoder;
2. the offline pairs the head was fitted on (the embedding cache that reward.json records) are ranked by their
   distance to those samples, and the nearest round(`reward.refit_fraction` · N) training pairs are kept
   (`nearest_pairs`; the held-out prompts of the fit stay held out and measure the refit);
3. the head takes `reward.refit_steps` AdamW steps (`reward.refit_lr`) of the Bradley–Terry loss on them and
   scores every later sample. Head and optimizer are part of every checkpoint.

Distance (on L2-normalised sample embeddings, cosine distance d(a, b) = 1 − a·b): a sample's distance to the
policy is its distance to the nearest policy sample; a pair's is the mean over its two samples, so a pair
counts as on-policy only when both of its samples look like what the policy makes.
"""

from __future__ import annotations

import importlib
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from genpref.errors import UserError
from genpref.noising import item_generator
from genpref.reward_fit import PairData, bradley_terry_nll, heldout_groups, pair_metrics, split

STREAM_PROMPTS, STREAM_NOISE, STREAM_BATCHES = 3, 4, 5  # item_generator streams (genpref.noising uses 0–2)
CHUNK = 65536  # offline pairs per block of the distance computation (memory: CHUNK × samples floats)


# ---------------------------------------------------------------------------------------------- selection


def nearest_distance(x: Tensor, policy: Tensor) -> Tensor:
    """min over policy samples of the cosine distance 1 − x̂·p̂: [N, D], [S, D] -> [N]."""
    p = F.normalize(policy.float(), dim=-1)
    parts = [(1.0 - F.normalize(x[i:i + CHUNK].float(), dim=-1) @ p.T).min(dim=1).values for i in range(0, len(x), CHUNK)]
    return torch.cat(parts) if parts else torch.zeros(0)


def pair_distances(policy: Tensor, w: Tensor, l: Tensor) -> Tensor:
    """A pair's distance to the policy: the mean of its two samples' nearest-sample distances; [N]."""
    return 0.5 * (nearest_distance(w, policy) + nearest_distance(l, policy))


def nearest_pairs(policy: Tensor, w: Tensor, l: Tensor, fraction: float) -> Tensor:
    """Indices of the round(fraction · N) pairs nearest the policy samples (at least one), nearest first;
    ties go to the lower index. policy [S, D], w and l [N, D] -> [k] long."""
    d = pair_distances(policy, w, l)
    k = min(len(d), max(1, round(fraction * len(d))))
    return torch.sort(d, stable=True).indices[:k]


# ---------------------------------------------------------------------------------------------- the refit


def refit_head(head, optimizer, pairs: PairData, steps: int, batch_size: int, generator: torch.Generator) -> None:
    """`steps` AdamW steps of the mean Bradley–Terry loss on shuffled mini-batches of `pairs`."""
    head.train().requires_grad_(True)
    order = torch.cat([torch.randperm(len(pairs), generator=generator) for _ in range(math.ceil(steps * batch_size / len(pairs)))])
    for i in range(steps):
        b = pairs.take(order[i * batch_size:(i + 1) * batch_size])
        loss = bradley_terry_nll(head(b.w), head(b.l), b.label).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    head.eval().requires_grad_(False)


@torch.no_grad()
def mean_loss(head, pairs: PairData) -> float:
    return bradley_terry_nll(head(pairs.w), head(pairs.l), pairs.label).mean().item()


class RewardRefit:
    """The learned reward's head, refitted every `reward.refit_every` steps; a TrainState part (head weights,
    its AdamW state, the refit count and the last refit's numbers)."""

    def __init__(self, cfg, scorer, info: dict, tensors: dict, adapter, prompts: list[str], rollout, accelerator):
        r = cfg.reward
        self.cfg, self.scorer, self.head = cfg, scorer, scorer.head
        self.adapter, self.prompts, self.rollout, self.accelerator = adapter, prompts, rollout, accelerator
        from genpref.learned_reward import training_data

        pairs, ratings = training_data(tensors)
        groups = torch.cat([d.group for d in (pairs, ratings) if d is not None])  # as reward_fit.fit draws the split
        held = heldout_groups(groups, float(info["settings"]["holdout"]), int(info["seed"]))  # the fit's held-out prompts
        (self.pairs, self.heldout), mask = split(pairs, held), torch.isin(pairs.group, held)
        self.w, self.l = tensors["w"][~mask], tensors["l"][~mask]  # raw sample embeddings of the training pairs
        if not len(self.pairs):
            raise UserError("reward.refit_every: every pair of the learned reward is held out (reward_train.holdout); "
                            "nothing to refit on")
        self.optimizer = torch.optim.AdamW(self.head.parameters(), lr=r.refit_lr, weight_decay=cfg.reward_train.weight_decay)
        self.refits = 0
        self.stats: dict[str, float] = {}

    def policy_embeddings(self) -> Tensor:
        """[S, D] embeddings of refit_samples samples of the rollout copy, gathered over ranks (each rank draws
        ceil(S / world) of them; the first S in rank order are kept)."""
        acc, o, n = self.accelerator, self.cfg.online, self.cfg.reward.refit_samples
        world, rank, seed = acc.num_processes, acc.process_index, self.cfg.train.seed
        per = math.ceil(n / world)
        which = torch.randint(len(self.prompts), (per * world,), generator=item_generator(seed, self.refits, STREAM_PROMPTS))
        prompts = [self.prompts[i] for i in which[rank * per:(rank + 1) * per].tolist()]
        cond = self.adapter.encode_prompts(prompts)
        gen = item_generator(seed, self.refits * world + rank, STREAM_NOISE)
        with torch.no_grad():
            with self.rollout.active():
                x0 = self.adapter.generate(cond, generator=gen, num_steps=o.steps, guidance=o.guidance)
            emb = self.scorer.embed_samples(self.adapter.decode(x0, cond)).float()
        if world > 1:
            emb = acc.gather(emb.to(acc.device)).cpu()  # [world · per, D] in rank order
        return emb[:n]

    def after_optimizer_step(self, step: int) -> dict[str, float]:
        """Refit when `step` is a multiple of reward.refit_every; the numbers of the last refit, for the log."""
        r = self.cfg.reward
        if step % r.refit_every:
            return dict(self.stats)
        tick = time.perf_counter()
        keep = nearest_pairs(self.policy_embeddings(), self.w, self.l, r.refit_fraction)
        chosen = self.pairs.take(keep)
        before = mean_loss(self.head, chosen)
        batches = item_generator(self.cfg.train.seed, self.refits, STREAM_BATCHES)
        refit_head(self.head, self.optimizer, chosen, r.refit_steps, self.cfg.reward_train.batch_size, batches)
        self.refits += 1
        self.stats = {"refits": float(self.refits), "refit_pairs": float(len(keep)), "refit_loss_before": before,
                      "refit_loss_after": mean_loss(self.head, chosen)}
        if len(self.heldout):
            with torch.no_grad():
                self.stats["refit_heldout_accuracy"] = pair_metrics(self.head(self.heldout.w), self.head(self.heldout.l),
                                                                    self.heldout.label)["accuracy"]
        return {**self.stats, "refit_s": time.perf_counter() - tick}

    def state_dict(self) -> dict:
        return {"head": {k: v.detach().clone() for k, v in self.head.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "refits": self.refits, "stats": dict(self.stats)}

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.refits, self.stats = state["refits"], dict(state["stats"])


# ---------------------------------------------------------------------------------------------- building


def learned_scorer(cfg, reward):
    """The scorer of the one reward.models entry named `learned` (an Ensemble's member, or the reward itself)."""
    index = next(i for i, s in enumerate(cfg.reward.models) if s.name == "learned")
    return reward.models[index] if hasattr(reward, "models") else reward, index


def pair_embeddings(cfg, info: dict, directory: Path, key: str) -> dict:
    """The cached embeddings of the pairs the head was fitted on; embedded again (and cached) when the cache
    file that reward.json names is gone."""
    from safetensors.torch import load_file

    data = info.get("data") or {}
    if not data.get("pairs"):
        raise UserError(f"reward.refit_every: {key} {directory} was fitted without pairs (reward.json data.pairs is null); "
                        "the refit selects among the offline pairs: train the reward on data.pairs")
    cache = Path(info.get("cache", ""))
    if not cache.is_file():
        from dataclasses import replace

        from genpref.learned_reward import MODALITIES

        # the ratings too: their prompts number the groups, and so the fit's held-out split
        again = replace(cfg, data=replace(cfg.data, pairs=data["pairs"], ratings=data.get("ratings"), ties=data.get("ties", cfg.data.ties),
                                          max_items=data.get("max_items"), cache_dir=str(cache.parent)),
                        reward_train=replace(cfg.reward_train, encoder=info["encoder"]))
        _, _, fresh = importlib.import_module(MODALITIES[info["modality"]]).embed_training_data(again, directory)
        cache = Path(fresh["cache"])
    return load_file(str(cache))


def prompt_items(source) -> list[str]:
    """The prompts of the run's own source (wrappers unwrapped): the refit samples are drawn for these."""
    while not hasattr(source, "items"):
        source = source.inner
    items = source.items
    if hasattr(items, "prompts"):  # image data sets list their prompts without decoding an image
        return list(items.prompts)
    return [items[i]["prompt"] for i in range(len(items))]


def build_refit(cfg, reward, adapter, source, rollout, accelerator) -> RewardRefit | None:
    """The run's RewardRefit, or None when reward.refit_every is 0."""
    if not cfg.reward.refit_every:
        return None
    from genpref.learned_reward import load

    scorer, index = learned_scorer(cfg, reward)
    key = f"reward.models[{index}].path"
    directory = Path(cfg.reward.models[index].path).expanduser()
    _, info = load(directory, key)
    if not hasattr(scorer, "embed_samples"):
        raise UserError(f"reward.refit_every: {key}: the {info['modality']} learned reward cannot embed samples")
    return RewardRefit(cfg, scorer, info, pair_embeddings(cfg, info, directory, key), adapter, prompt_items(source),
                       rollout, accelerator)

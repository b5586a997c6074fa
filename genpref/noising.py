"""Forward diffusion for training: per-item noise and timesteps, noisy inputs and regression targets.

Randomness is keyed by an item's position in the data stream, not by call order, so a pair gets the
same t and ε whether it is trained in one batch of B, two micro-batches of B/2, or on another rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from genpref.adapter import Batch

# Distinct streams drawn from one item's seed (training noise, online generation, ...).
STREAM_TRAIN, STREAM_ONLINE, STREAM_AUX = 0, 1, 2


def item_generator(seed: int, position: int, stream: int = STREAM_TRAIN) -> torch.Generator:
    """A CPU generator owned by one item of the data stream."""
    return torch.Generator().manual_seed((seed * 1_000_003 + position * 7 + stream) % (2**63 - 1))


def draw_t_eps(
    seed: int, positions: list[int], shape: tuple[int, ...], num_train_timesteps: int, device
) -> tuple[Tensor, Tensor]:
    """One timestep t ~ U{0, T−1} and one ε ~ N(0, I) of `shape` per item: ([B], [B, *shape])."""
    ts, eps = [], []
    for p in positions:
        g = item_generator(seed, p)
        ts.append(torch.randint(0, num_train_timesteps, (1,), generator=g))
        eps.append(torch.randn(shape, generator=g))
    return torch.cat(ts).to(device), torch.stack(eps).to(device)


def add_noise(scheduler, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε in float32 (the scheduler's own add_noise)."""
    return scheduler.add_noise(x0.float(), eps.float(), t)


def training_target(scheduler, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """What the network regresses: ε, x0 or v, by the scheduler's prediction_type."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return eps.float()
    if kind == "sample":
        return x0.float()
    if kind == "v_prediction":
        return scheduler.get_velocity(x0.float(), eps.float(), t)
    raise ValueError(f"unknown prediction_type {kind!r}")


@dataclass
class Branch:
    """One group of training inputs: noisy states, their timesteps and targets, and their conditions.

    target None means "the reference's own prediction" (the KL-to-reference term)."""

    x_t: Tensor
    t: Tensor
    target: Tensor | None
    batch: Batch


def noised_branch(scheduler, batch: Batch, t: Tensor, eps: Tensor) -> Branch:
    """Noise batch.x0 with the given t and ε; the target follows the prediction type."""
    return Branch(add_noise(scheduler, batch.x0, eps, t), t, training_target(scheduler, batch.x0, eps, t), batch)

"""Everything that must survive a resume, in one object: each part has state_dict() / load_state_dict(),
and TrainState.save / TrainState.load are the only places a checkpoint is written or read back.

On disk (genpref.checkpoint): weights.safetensors holds the trainable weights; state.pt the step, train.lr
and the SHARED parts (every rank holds the same); rank-R.pt each rank's PER_RANK parts. A part that is
absent from a checkpoint (written before it existed) or empty keeps its fresh state.
Not saved: the non-finite-loss streak (checkpoints are only written when it is 0) and the metrics log
(appended to, and cut back to the checkpoint's step on resume).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from genpref import checkpoint
from genpref.errors import UserError


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class TrainableWeights:
    """The trainable parameters by name: the model's (LoRA or all) and an objective's own (a value table)."""

    def __init__(self, named: dict[str, torch.nn.Parameter]):
        self.named = named

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.named)

    def load_state_dict(self, state: dict[str, torch.Tensor], where: Path | str = "checkpoint") -> None:
        """Copies into the existing parameters (LoRA layers stay in place); UserError naming `where` when the
        checkpoint lacks a weight or holds one of another shape."""
        missing = set(self.named) - set(state)
        if missing:
            raise UserError(f"{where}: checkpoint lacks trainable weights, e.g. {sorted(missing)[0]}")
        checkpoint.check_shapes(Path(where), state, self.named)
        with torch.no_grad():
            for name, p in self.named.items():
                p.copy_(state[name].to(p.device, p.dtype))


class RNGState:
    """This process's Python, NumPy, torch (and CUDA) generators."""

    def state_dict(self) -> dict:
        return checkpoint.rng_state()

    def load_state_dict(self, state: dict) -> None:
        checkpoint.set_rng_state(state)


@dataclass
class TrainState:
    weights: TrainableWeights
    optimizer: Stateful  # under FSDP / DeepSpeed saved by accelerate with the sharded weights (`sharded`)
    lr_scheduler: Stateful
    ema: Stateful | None  # diffusers' EMAModel with train.ema_decay, else None
    collapse: Stateful  # CollapseGuard: its window of e_θ / e_ref
    rl_guard: Stateful  # RLGuard: its windows of reward, KL, held-out reward and gradient norm
    rollout: Stateful  # RolloutPolicy: the generation weights' snapshot and when it was taken
    scaler: Stateful | None  # fp16's gradient scaler (accelerate's), else None
    source: Stateful  # the pair source: data position, rollout buffer, reward statistics
    accelerator: Any
    run_dir: Path
    lr: float  # train.lr: a resume with another one rescales the restored rates
    keep: int = 1  # train.keep_checkpoints
    sharded: bool = False
    rng: RNGState = field(default_factory=RNGState)
    reward_refit: Stateful | None = None  # RewardRefit (reward.refit_every): the learned reward's head and its AdamW

    SHARED = ("optimizer", "lr_scheduler", "ema", "collapse", "rl_guard", "rollout", "scaler", "reward_refit")  # state.pt
    PER_RANK = ("source", "rng")  # rank-R.pt

    def parts(self) -> dict[str, Stateful]:
        """Every part present in this run, by its key in the checkpoint."""
        parts = {"weights": self.weights}
        parts.update({k: getattr(self, k) for k in (*self.SHARED, *self.PER_RANK) if getattr(self, k) is not None})
        return parts

    def _saved_by_us(self, key: str) -> bool:
        return getattr(self, key) is not None and not (self.sharded and key == "optimizer")

    def _restore(self, key: str, saved: dict | None) -> None:
        if saved and self._saved_by_us(key):
            getattr(self, key).load_state_dict(saved)

    def save(self, step: int) -> Path:
        """Checkpoint checkpoints/step-`step` (every rank calls this)."""
        state = lambda k: getattr(self, k).state_dict() if self._saved_by_us(k) else None
        shared = {"step": step, "lr": self.lr, **{k: state(k) for k in self.SHARED}}
        weights = {} if self.sharded else self.weights.state_dict()
        mine = {k: state(k) for k in self.PER_RANK}
        return checkpoint.save(self.accelerator, self.run_dir, step, weights, shared, mine, self.keep, self.sharded)

    def load(self, path: Path, say=print) -> int:
        """Restore every part from checkpoint `path`; returns its step. After a change of world size each rank's
        parts (source, RNG) start fresh."""
        acc = self.accelerator
        weights, shared, mine = checkpoint.load(path, acc.process_index, acc.num_processes)
        if self.sharded:
            acc.load_state(str(Path(path) / "accelerate"))
        else:
            self.weights.load_state_dict(weights, path)
        for key in self.SHARED:
            self._restore(key, shared.get(key))
        checkpoint.rescale_lr(self.optimizer, self.lr_scheduler, shared.get("lr"), self.lr, say)  # train.lr may differ
        for key in self.PER_RANK:
            self._restore(key, None if mine is None else mine.get(key))
        say(f"resumed from {path} at step {shared['step']}")
        return shared["step"]

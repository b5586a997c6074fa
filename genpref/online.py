"""Online generation: the rollout copy of the policy, trajectory recording and the rollout buffer.

The rollout copy is a snapshot of the trainable weights, refreshed every `online.sync_every`
optimizer steps — the knob for how "online" a recipe is (1 = generate with the current policy, as
DiffusionDRO does; larger = a staler, cheaper-to-keep generator). Trajectories are recorded by a
callback passed to the adapter's ordinary sampling loop; the buffer keeps every recorded state with
its prediction so one 20-step rollout feeds up to 20 training samples instead of one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class RolloutPolicy:
    """Generation weights = the trainable parameters as they were at the last sync, or (with `ema`) an
    exponential moving average of them updated every `sync_every` steps: DiffusionNFT's sampling policy."""

    def __init__(self, params: list[nn.Parameter], sync_every: int = 1, ema: float | None = None):
        if sync_every < 1:
            raise ValueError("online.sync_every must be >= 1")
        if ema is not None and not 0.0 <= ema < 1.0:
            raise ValueError("online.rollout_ema must lie in [0, 1)")
        self.params, self.sync_every, self.ema = list(params), sync_every, ema
        self.snapshot: list[Tensor] | None = None
        self.synced_at = 0
        if sync_every > 1 or ema is not None:
            self.snapshot = [p.detach().clone() for p in self.params]

    def sync(self, step: int) -> None:
        if self.ema is not None:
            with torch.no_grad():
                for s, p in zip(self.snapshot, self.params):
                    s.mul_(self.ema).add_(p.detach(), alpha=1.0 - self.ema)
        elif self.sync_every > 1:
            self.snapshot = [p.detach().clone() for p in self.params]
        self.synced_at = step

    def after_optimizer_step(self, step: int) -> None:
        if step % self.sync_every == 0:
            self.sync(step)

    @contextmanager
    def active(self) -> Iterator[None]:
        """Inside: the trainable parameters hold the rollout weights (no-op when synced every step)."""
        if self.snapshot is None:
            yield
            return
        with torch.no_grad():
            current = [p.detach().clone() for p in self.params]
            for p, s in zip(self.params, self.snapshot):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, c in zip(self.params, current):
                    p.copy_(c)

    def state_dict(self) -> dict:
        return {"snapshot": self.snapshot, "synced_at": self.synced_at}

    def load_state_dict(self, state: dict) -> None:
        self.synced_at = state["synced_at"]
        snap = state["snapshot"]
        self.snapshot = None if snap is None else [s.to(p.device, p.dtype) for s, p in zip(snap, self.params)]


class TrajectoryRecorder:
    """A sampler callback that keeps (t, x_t, model_output) of every step, on the CPU."""

    def __init__(self):
        self.t: list[Tensor] = []
        self.x_t: list[Tensor] = []
        self.pred: list[Tensor] = []

    def __call__(self, i: int, t: Tensor, x_t: Tensor, model_output: Tensor) -> None:
        batch = x_t.shape[0]
        t = torch.as_tensor(t).reshape(-1).to("cpu", torch.long)
        self.t.append(t.expand(batch) if t.numel() == 1 else t)
        self.x_t.append(x_t.detach().float().cpu())
        self.pred.append(model_output.detach().float().cpu())

    def stacked(self) -> tuple[Tensor, Tensor, Tensor]:
        """([S, B] timesteps, [S, B, ...] states, [S, B, ...] predictions)."""
        if not self.t:
            raise RuntimeError("the sampler never called the trajectory callback")
        return torch.stack(self.t), torch.stack(self.x_t), torch.stack(self.pred)


class RolloutBuffer:
    """A FIFO of training entries (tensors with a leading entry dim + their prompts), shuffled on push.

    Entries are consumed once; `len` is what is left. Part of every checkpoint."""

    def __init__(self):
        self.data: dict[str, Tensor] = {}
        self.prompts: list[str] = []

    def __len__(self) -> int:
        return len(self.prompts)

    def push(self, entries: dict[str, Tensor], prompts: list[str], generator: torch.Generator) -> None:
        n = len(prompts)
        if any(v.shape[0] != n for v in entries.values()):
            raise ValueError("RolloutBuffer.push: every entry tensor needs one row per prompt")
        order = torch.randperm(n, generator=generator)
        entries = {k: v.detach().cpu()[order] for k, v in entries.items()}
        prompts = [prompts[i] for i in order.tolist()]
        if self.data and set(entries) != set(self.data):
            raise ValueError("RolloutBuffer.push: entry keys changed")
        self.data = {k: torch.cat([self.data[k], v]) if self.data else v for k, v in entries.items()}
        self.prompts += prompts

    def take(self, n: int) -> tuple[dict[str, Tensor], list[str]]:
        if n > len(self):
            raise ValueError(f"RolloutBuffer.take({n}) with only {len(self)} entries")
        out = {k: v[:n] for k, v in self.data.items()}
        self.data = {k: v[n:] for k, v in self.data.items()}
        prompts, self.prompts = self.prompts[:n], self.prompts[n:]
        return out, prompts

    def state_dict(self) -> dict:
        return {"data": dict(self.data), "prompts": list(self.prompts)}

    def load_state_dict(self, state: dict) -> None:
        self.data, self.prompts = dict(state["data"]), list(state["prompts"])

"""train.precompute_reference: the frozen reference's errors computed ahead, one no-grad pass per epoch.

For offline data a training sample's (t, ε) is a pure function of its stream position and the seed, and
the reference never changes, so its denoising error is known before the step. At the first step of each
epoch this wrapper walks the batches this rank will train on in that epoch, runs only the reference on
them (the same batches, concatenation and forward as the live step, so the numbers are identical) and
keeps the errors in a table; the steps then skip the reference forward. Tables are safetensors files
next to the latent cache (`<data.cache_dir>/reference/`), keyed by epoch, seed, data and model settings,
batch layout and a fingerprint of the reference (its errors on a fixed probe batch), so a resumed or
repeated run reuses them and a changed model or dataset misses them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import Tensor

from genpref.errors import UserError
from genpref.forward import reference_errors

VERSION = 1  # bump when the table layout or the way entries are computed changes


def table_dir(cfg) -> Path:
    """Where the tables live: beside the latent cache (the image adapter's default cache_dir)."""
    return Path(cfg.data.cache_dir or Path(cfg.train.output_dir) / "cache") / "reference"


def _checksum(x_t: Tensor) -> Tensor:
    """Per-row float64 sum of the noisy input: catches a changed dataset behind an unchanged key."""
    return x_t.detach().double().flatten(1).sum(1).cpu()


class PrecomputedReference:
    """Wraps an offline source (OfflinePairs, Experts, Ratings): its batches come with `reference` filled."""

    def __init__(self, inner, autocast=nullcontext):
        self.inner, self.ctx, self.autocast = inner, inner.ctx, autocast
        self.num_items = len(inner.items)
        self.epoch: int | None = None
        self.table: dict[str, Tensor] = {}
        self._fingerprint: str | None = None
        self.branch_names: list[str] = []
        self.computed_batches = 0  # batches whose reference this process computed (tests, benchmarks)

    # -------------------------------------------------------------------------------- source protocol

    def next(self, step: int, micro: int):
        pos = self.ctx.positions(step, micro)
        tb = self.inner.batch_at(pos)
        first = pos[0]
        self._ensure(first // self.num_items)
        reference = {}
        for name, branch in tb.branches.items():
            stored = self.table[f"{first}/{name}/check"]
            if not torch.allclose(stored, _checksum(branch.x_t), rtol=1e-6, atol=1e-6):
                raise UserError(f"{self.path(self.epoch)}: the data changed since these reference errors were "
                                "computed; delete the file (or the cache) and run again")
            reference[name] = self.table[f"{first}/{name}/ref"].to(self.ctx.device)
        tb.reference = reference
        return tb

    def after_optimizer_step(self, step: int) -> None:
        self.inner.after_optimizer_step(step)

    def state_dict(self) -> dict:
        return self.inner.state_dict()  # the tables are a cache: nothing of them belongs in a checkpoint

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)

    # -------------------------------------------------------------------------------- tables

    def batches_of_epoch(self, epoch: int) -> list[list[int]]:
        """Stream positions of this rank's micro-batches that start in `epoch`, up to train.max_steps."""
        t, n = self.ctx.cfg.train, self.num_items
        per_step = t.batch_size * t.grad_accum * self.ctx.world
        out, step = [], max(0, epoch * n // per_step - 1)
        while step < t.max_steps and step * per_step < (epoch + 1) * n:
            for micro in range(t.grad_accum):
                pos = self.ctx.positions(step, micro)
                if pos[0] // n == epoch:
                    out.append(pos)
            step += 1
        return out

    def _errors(self, pos: list[int]) -> dict[str, tuple[Tensor, Tensor]]:
        branches = self.inner.batch_at(pos).branches
        with self.autocast():
            ref = reference_errors(self.ctx.adapter, branches)
        return {name: (ref[name].detach().cpu(), _checksum(branches[name].x_t)) for name in branches}

    def fingerprint(self) -> str:
        """The reference's errors on the first batch of the stream, hashed: equal for the same weights,
        data pipeline, seed, precision and device; different when any of them changes."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            probe = self._errors(list(range(self.ctx.cfg.train.batch_size)))
            self.branch_names = list(probe)
            for name, (ref, check) in sorted(probe.items()):
                h.update(name.encode() + ref.float().numpy().tobytes() + check.numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def path(self, epoch: int) -> Path:
        cfg, ctx = self.ctx.cfg, self.ctx
        model = {k: v for k, v in dataclasses.asdict(cfg.model).items() if k not in ("lora", "gradient_checkpointing")}
        data = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in ("num_workers", "cache_dir")}
        t = cfg.train
        key = json.dumps({
            "version": VERSION, "epoch": epoch, "seed": t.seed, "model": model, "data": data,
            "precision": t.mixed_precision, "layout": [t.batch_size, t.grad_accum, ctx.world, ctx.rank],
            "reference": self.fingerprint(),
        }, sort_keys=True, default=str)
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return table_dir(cfg) / f"epoch{epoch}-rank{ctx.rank}-{digest}.safetensors"

    def _ensure(self, epoch: int) -> None:
        """Load the epoch's table, computing (and saving) the batches it lacks."""
        if epoch == self.epoch:
            return
        from safetensors.torch import load_file, save_file

        path = self.path(epoch)
        table = load_file(str(path)) if path.is_file() else {}
        self.fingerprint()
        missing = [pos for pos in self.batches_of_epoch(epoch) if f"{pos[0]}/{self.branch_names[0]}/ref" not in table]
        for pos in missing:
            for name, (ref, check) in self._errors(pos).items():
                table[f"{pos[0]}/{name}/ref"], table[f"{pos[0]}/{name}/check"] = ref, check
            self.computed_batches += 1
        if missing:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_file({k: v.contiguous() for k, v in table.items()}, str(tmp))
            tmp.replace(path)
        self.epoch, self.table = epoch, table

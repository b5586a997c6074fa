"""One optimizer step of the training loop, and what is read off it: the source's micro-batches, the
objective on policy and reference errors, backward, clipping, the optimizer, LR schedule and EMA; then the
guards that watch the logged numbers and the row that goes to metrics.jsonl.

The step never looks at the objective's name: it asks the pair source chosen at build time for a batch of
named branches, computes policy and reference errors on them, and hands those to the objective."""

from __future__ import annotations

import time
import warnings
from contextlib import nullcontext

import torch

from genpref.forward import branch_errors
from genpref.guards import check_weights_finite
from genpref.run import Run


def micro_metrics(loss: torch.Tensor, metrics: dict, stats: dict[str, float]) -> dict[str, float]:
    """A micro-batch's logged numbers as floats: one stack and one device-to-host copy, not one tiny op
    (and one transfer) per metric."""
    tensors = {"loss": loss, **metrics}
    floats = torch.stack([v.detach().float().reshape(()) for v in tensors.values()]).tolist()
    return {**dict(zip(tensors, floats)), **stats}


def accumulate_gradients(run: Run, step: int) -> tuple[dict[str, float], bool]:
    """train.grad_accum micro-batches, backward on each while every rank's loss is finite; returns the
    micro-batches' mean numbers and whether every loss was finite."""
    t, acc, adapter, objective = run.cfg.train, run.accelerator, run.adapter, run.objective
    sums: dict[str, float] = {}
    finite = True
    for micro in range(t.grad_accum):
        with run.unwrapped():  # sources generate/score on one rank at a time: no DDP
            tb = run.state.source.next(step - 1, micro)
        last = micro == t.grad_accum - 1
        with nullcontext() if last else acc.no_sync(adapter.denoiser):
            with acc.autocast():
                frames = getattr(objective, "frames", ())  # branches whose per-frame errors it reads (time_mse)
                err, ref = branch_errors(adapter, tb.branches, objective.needs_reference, tb.reference, frames)
                loss_vec, metrics = objective(err, ref, tb.extras)
            loss = loss_vec.float().mean()
            ok = torch.isfinite(loss).float()
            finite = finite and acc.gather(ok.reshape(1)).min().item() == 1.0
            if finite:
                acc.backward(loss / t.grad_accum)
        for k, v in micro_metrics(loss, metrics, tb.stats).items():
            sums[k] = sums.get(k, 0.0) + v / t.grad_accum
    return sums, finite


def apply_gradients(run: Run, step: int) -> float:
    """Average the objective's own gradients, clip, step the optimizer, the schedule and the EMA; returns
    the gradient norm (NaN unless train.max_grad_norm is set)."""
    t, acc, s = run.cfg.train, run.accelerator, run.state
    if run.own and run.world > 1:
        for _, p in run.own:
            if p.grad is not None:
                p.grad = acc.reduce(p.grad, "mean")
    grad_norm = float("nan")
    if t.max_grad_norm is not None:
        grad_norm = acc.clip_grad_norm_(run.all_params, t.max_grad_norm)
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
    s.optimizer.step()
    check_weights_finite(s.weights.named, step)
    s.lr_scheduler.step()
    if s.ema is not None:
        s.ema.step(run.params)
    return grad_norm


def optimizer_step(run: Run, step: int) -> tuple[dict[str, float], float]:
    """Step `step` (a non-finite loss skips the update, and too many in a row stop the run); returns the
    numbers averaged over micro-batches and ranks, and the gradient norm."""
    sums, finite = accumulate_gradients(run, step)
    grad_norm = float("nan")
    if run.bad_loss.check(finite, step):
        grad_norm = apply_gradients(run, step)
    else:
        warnings.warn(f"step {step}: non-finite loss, step skipped", stacklevel=1)
    run.state.optimizer.zero_grad(set_to_none=True)
    run.state.source.after_optimizer_step(step)  # syncs the rollout copy first: the refit samples from it
    if run.state.reward_refit is not None:
        with run.unwrapped():
            sums.update(run.state.reward_refit.after_optimizer_step(step))
    keys = sorted(sums)
    acc = run.accelerator
    reduced = acc.reduce(torch.tensor([sums[k] for k in keys], device=acc.device), "mean").tolist()
    return dict(zip(keys, reduced)), grad_norm


def watch(run: Run, step: int, row: dict[str, float], grad_norm: float) -> None:
    """The collapse guard on preferred-sample errors; for online RL the reward-vs-KL, grad-norm-spike and
    held-out guards. Each warns once, or stops the run (train.collapse_action=stop)."""
    s = run.state
    if "e_w" in row and "e_ref_w" in row:
        _warn(s.collapse.update(step, row["e_w"], row["e_ref_w"]))
    if "reward_mean" in row:
        _warn(s.rl_guard.update(step, {**row, "grad_norm": grad_norm}))


def _warn(msg: str | None) -> None:
    if msg:
        warnings.warn(msg, stacklevel=1)


def logged_row(run: Run, row: dict[str, float], grad_norm: float, started: float) -> dict[str, float]:
    """The step's numbers with the learning rate, gradient norm, timing and e_θ / e_ref on preferred samples."""
    t = run.cfg.train
    elapsed = time.perf_counter() - started
    row = {**row, "lr": run.state.lr_scheduler.get_last_lr()[0], "grad_norm": grad_norm, "step_time": elapsed,
           "samples_per_s": t.batch_size * t.grad_accum * run.world / max(elapsed, 1e-9)}
    if "e_w" in row and "e_ref_w" in row and row["e_ref_w"] > 0:
        row["e_ratio_w"] = row["e_w"] / row["e_ref_w"]
    return row

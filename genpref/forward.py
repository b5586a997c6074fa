"""Policy and reference denoising errors on named branches: the forward half of every training step."""

from __future__ import annotations

import torch
from torch import Tensor

from genpref.adapter import Adapter, Batch
from genpref.losses import denoising_error
from genpref.noising import Branch


def branch_errors(adapter: Adapter, branches: dict, need_reference: bool,
                  reference: dict[str, Tensor] | None = None) -> tuple[dict, dict]:
    """Policy and reference values per branch: denoising errors of `Branch`es (all in one forward pass), and
    for `genpref.rl.Transition` branches the log-probs of their stored DDIM transitions (err[name],
    ref[name]) with the closed-form KL to the reference in err[name + "_kl"].

    A branch whose target is None regresses onto the reference's prediction (KL-to-reference).
    `reference`: the `Branch`es' reference errors computed ahead (train.precompute_reference); their
    reference forward is then skipped."""
    from genpref.rl import Transition, transition_logprobs

    moves = {n: b for n, b in branches.items() if isinstance(b, Transition)}
    err: dict = {}
    ref: dict = {}
    for name, b in moves.items():
        err[name], ref_logp, kl = transition_logprobs(adapter, b, need_reference)
        if ref_logp is not None:
            ref[name], err[name + "_kl"] = ref_logp, kl
    plain = {n: b for n, b in branches.items() if n not in moves}
    if plain:
        e, r = _denoising_errors(adapter, plain, need_reference, reference)
        err.update(e)
        ref.update(r)
    return err, ref


def _joined(branches: dict[str, Branch]) -> tuple[list[str], list[int], Tensor, Tensor, Batch]:
    """Every branch's samples concatenated, so each network runs one forward pass."""
    names = list(branches)
    sizes = [branches[n].x_t.shape[0] for n in names]
    x_t = torch.cat([branches[n].x_t for n in names])
    t = torch.cat([branches[n].t for n in names])
    return names, sizes, x_t, t, Batch.cat([branches[n].batch for n in names])


def reference_predictions(adapter: Adapter, x_t: Tensor, t: Tensor, batch: Batch) -> Tensor:
    with torch.no_grad(), adapter.reference():
        return adapter.predict(x_t, t, batch)


def reference_errors(adapter: Adapter, branches: dict[str, Branch]) -> dict[str, Tensor]:
    """The reference's errors alone, computed exactly as `branch_errors` computes them (same concatenation,
    same forward): what train.precompute_reference stores ahead of the steps."""
    names, sizes, x_t, t, batch = _joined(branches)
    if any(branches[n].target is None for n in names):
        raise ValueError("reference_errors: a KL branch regresses onto the reference itself")
    target = torch.cat([branches[n].target for n in names])
    ref_pred = reference_predictions(adapter, x_t, t, batch)
    return dict(zip(names, denoising_error(ref_pred, target, batch.mask).split(sizes)))


def _denoising_errors(adapter: Adapter, branches: dict[str, Branch], need_reference: bool,
                      reference: dict[str, Tensor] | None = None) -> tuple[dict, dict]:
    names, sizes, x_t, t, batch = _joined(branches)
    needs_ref_pred = reference is None and (need_reference or any(branches[n].target is None for n in names))
    ref_pred = reference_predictions(adapter, x_t, t, batch) if needs_ref_pred else None
    pred = adapter.predict(x_t, t, batch)
    targets = [branches[n].target for n in names]
    if all(tg is not None for tg in targets):
        target = torch.cat(targets)
    else:  # fill KL branches with the reference prediction
        parts, start = [], 0
        for tg, n in zip(targets, sizes):
            parts.append(ref_pred[start : start + n] if tg is None else tg)
            start += n
        target = torch.cat(parts)
    err = dict(zip(names, denoising_error(pred, target, batch.mask).split(sizes)))
    ref = {}
    if reference is not None:
        ref = {n: reference[n].to(err[n].device) for n in names}
    elif ref_pred is not None:
        ref = dict(zip(names, denoising_error(ref_pred, target, batch.mask).split(sizes)))
    return err, ref

"""Policy and reference denoising errors on named branches: the forward half of every training step."""

from __future__ import annotations

import torch
from torch import Tensor

from genpref.adapter import Adapter, Batch
from genpref.losses import denoising_error, frame_errors
from genpref.noising import Branch


def branch_errors(adapter: Adapter, branches: dict, need_reference: bool,
                  reference: dict[str, Tensor] | None = None, frames: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Policy and reference values per branch: denoising errors of `Branch`es (all in one forward pass), and
    for `genpref.rl.Transition` branches the log-probs of their stored DDIM transitions (err[name],
    ref[name]) with the closed-form KL to the reference in err[name + "_kl"].

    A branch whose target is None regresses onto the reference's prediction (KL-to-reference).
    `reference`: the `Branch`es' reference errors computed ahead (train.precompute_reference); their
    reference forward is then skipped. `frames`: branches whose per-frame errors are also wanted, as
    err[name + "/frames"] / ref[...] [B, T] with the valid frames in err[name + "/valid"] (objective.time_mse)."""
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
        e, r = _denoising_errors(adapter, plain, need_reference, reference, frames)
        err.update(e)
        ref.update(r)
    return err, ref


def _joined(branches: dict[str, Branch]) -> tuple[list[str], list[int], Tensor, Tensor, Batch, list[int]]:
    """The distinct inputs of the branches concatenated, so each network runs one forward pass over them.
    Branches that share their inputs (the same x_t, t and batch objects: DiffusionNFT's positive and negative
    targets for one noised sample) are computed once; `rows` maps each branch to its input's position."""
    names = list(branches)
    first: dict[tuple[int, int, int], int] = {}
    inputs: list[Branch] = []
    rows: list[int] = []
    for n in names:
        b = branches[n]
        key = (id(b.x_t), id(b.t), id(b.batch))
        if key not in first:
            first[key] = len(inputs)
            inputs.append(b)
        rows.append(first[key])
    sizes = [branches[n].x_t.shape[0] for n in names]
    x_t = torch.cat([b.x_t for b in inputs])
    t = torch.cat([b.t for b in inputs])
    return names, sizes, x_t, t, Batch.cat([b.batch for b in inputs]), rows


def _per_branch(values: Tensor, inputs: list[int], rows: list[int]) -> Tensor:
    """Predictions over the distinct inputs laid out branch by branch (shared inputs repeated)."""
    if rows == list(range(len(rows))):
        return values
    parts = values.split(inputs)
    return torch.cat([parts[r] for r in rows])


def _input_sizes(sizes: list[int], rows: list[int]) -> list[int]:
    out: dict[int, int] = {}
    for size, r in zip(sizes, rows):
        out.setdefault(r, size)
    return [out[r] for r in sorted(out)]


def _branch_mask(batch: Batch, sizes: list[int], rows: list[int]) -> Tensor | None:
    return None if batch.mask is None else _per_branch(batch.mask, _input_sizes(sizes, rows), rows)


def reference_predictions(adapter: Adapter, x_t: Tensor, t: Tensor, batch: Batch) -> Tensor:
    with torch.no_grad(), adapter.reference():
        return adapter.predict(x_t, t, batch)


def reference_errors(adapter: Adapter, branches: dict[str, Branch]) -> dict[str, Tensor]:
    """The reference's errors alone, computed exactly as `branch_errors` computes them (same concatenation,
    same forward): what train.precompute_reference stores ahead of the steps."""
    names, sizes, x_t, t, batch, rows = _joined(branches)
    if any(branches[n].target is None for n in names):
        raise ValueError("reference_errors: a KL branch regresses onto the reference itself")
    target = torch.cat([branches[n].target for n in names])
    ref_pred = _per_branch(reference_predictions(adapter, x_t, t, batch), _input_sizes(sizes, rows), rows)
    return dict(zip(names, denoising_error(ref_pred, target, _branch_mask(batch, sizes, rows)).split(sizes)))


def _denoising_errors(adapter: Adapter, branches: dict[str, Branch], need_reference: bool,
                      reference: dict[str, Tensor] | None = None, frames: tuple[str, ...] = ()) -> tuple[dict, dict]:
    names, sizes, x_t, t, batch, rows = _joined(branches)
    needs_ref_pred = reference is None and (need_reference or any(branches[n].target is None for n in names))
    inputs = _input_sizes(sizes, rows)
    ref_pred = _per_branch(reference_predictions(adapter, x_t, t, batch), inputs, rows) if needs_ref_pred else None
    pred = _per_branch(adapter.predict(x_t, t, batch), inputs, rows)
    mask = _branch_mask(batch, sizes, rows)
    targets = [branches[n].target for n in names]
    if all(tg is not None for tg in targets):
        target = torch.cat(targets)
    else:  # fill KL branches with the reference prediction
        parts, start = [], 0
        for tg, n in zip(targets, sizes):
            parts.append(ref_pred[start : start + n] if tg is None else tg)
            start += n
        target = torch.cat(parts)
    err = dict(zip(names, denoising_error(pred, target, mask).split(sizes)))
    ref = {}
    if reference is not None:
        ref = {n: reference[n].to(err[n].device) for n in names}
    elif ref_pred is not None:
        ref = dict(zip(names, denoising_error(ref_pred, target, mask).split(sizes)))
    if frames:
        _add_frame_errors(err, ref, names, sizes, frames, pred, ref_pred, target, mask)
    return err, ref


def _add_frame_errors(err: dict, ref: dict, names, sizes, frames, pred, ref_pred, target, mask) -> None:
    from genpref.errors import UserError

    if mask is None:
        raise UserError("objective.time_mse needs per-frame errors, and this model's samples have no frame axis "
                        "(MDM has one; MLD's latent and images do not)")
    if ref_pred is None:
        raise UserError("objective.time_mse needs the reference's per-frame errors (not with train.precompute_reference)")
    for out, p in ((err, pred), (ref, ref_pred)):
        per_frame, valid = frame_errors(p, target, mask)  # [ΣB, T] over every branch
        for name, e, v in zip(names, per_frame.split(sizes), valid.split(sizes)):
            if name in frames:
                out[f"{name}/frames"] = e
                err[f"{name}/valid"] = v

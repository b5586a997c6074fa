"""Training guards: divergence (non-finite losses or weights) and preference collapse (policy worse than
the reference on preferred data)."""

from __future__ import annotations

from collections import deque

from genpref.errors import UserError


class Diverged(UserError):
    """Training produced non-finite values at `step`. The run's entry point turns this into a rollback
    to the last good checkpoint (train.on_divergence=rollback) or one line that names that checkpoint.

    `good_until`: the newest step whose checkpoint can be trusted. A checkpoint of step k holds the
    weights that step k+1 starts from; when step k+1 blows up (NaN loss, overflowing gradients) that
    checkpoint is finite but already on the way out, so a failure at step s trusts checkpoints up to
    s - 2, and a run of `n` bad losses ending at step s those up to s - n - 1."""

    def __init__(self, step: int, reason: str, good_until: int | None = None):
        self.step, self.reason = step, reason
        self.good_until = step - 2 if good_until is None else good_until
        super().__init__(f"step {step}: training diverged ({reason})")


def nonfinite_names(named_tensors) -> list[str]:
    """Names of the floating-point tensors in `named_tensors` ((name, tensor) pairs) holding NaN or inf;
    one device sync for all of them."""
    import torch

    named = [(n, t) for n, t in named_tensors if t.is_floating_point() and t.numel()]
    if not named:
        return []
    ok = torch.stack([torch.isfinite(t.detach()).all() for _, t in named]).cpu()
    return [n for (n, _), good in zip(named, ok.tolist()) if not good]


def check_weights_finite(named_params: dict, step: int, what: str = "weights") -> None:
    """Diverged naming the first non-finite trainable tensor (checked after every optimizer step and before
    anything is saved)."""
    bad = nonfinite_names(named_params.items())
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise Diverged(step, f"non-finite {what}: {bad[0]}{more}")


def divergence_message(err: Diverged, last_good, t) -> str:
    """The one line a diverged run ends with: the step, the last good checkpoint and what to change."""
    good = f"last good checkpoint: {last_good}" if last_good else "no good checkpoint was saved before it"
    resume = f" and resume with train.resume={last_good}" if last_good else ""
    if t.on_divergence == "rollback":
        retry = f"or raise train.max_rollbacks (now {t.max_rollbacks})"
    else:
        retry = "or set train.on_divergence=rollback to retry from the last good checkpoint automatically"
    return f"{err}; {good}; lower train.lr (was {t.lr:g}){resume}, {retry}"


class BadLossGuard:
    """Counts consecutive non-finite losses; the step is skipped, and the run stops after `limit` in a row."""

    def __init__(self, limit: int):
        self.limit, self.streak = limit, 0

    def check(self, finite: bool, step: int) -> bool:
        """True when the step may proceed."""
        if finite:
            self.streak = 0
            return True
        self.streak += 1
        if self.streak >= self.limit:
            raise Diverged(step,
                f"the loss was NaN/inf for {self.streak} steps in a row, train.max_bad_steps={self.limit}; "
                "a smaller objective.beta or bf16 instead of fp16 may help too",
                good_until=step - self.streak - 1,
            )
        return False


class CollapseGuard:
    """Watches e_θ / e_ref on the preferred samples, averaged over a window of steps.

    Ranking objectives (DRO's hinge, DPO's margin) can be met by making the policy worse on everything,
    worse on the dispreferred side faster. A rising ratio on the preferred samples is the symptom."""

    def __init__(self, factor: float | None, action: str, window: int):
        self.factor, self.action = factor, action
        self.e: deque = deque(maxlen=window)
        self.ref: deque = deque(maxlen=window)
        self.warned = False

    def ratio(self) -> float | None:
        if not self.e or sum(self.ref) <= 0:
            return None
        return sum(self.e) / sum(self.ref)

    def update(self, step: int, e_w: float, e_ref_w: float) -> str | None:
        """A warning message when the guard trips (raises when action is stop)."""
        self.e.append(e_w)
        self.ref.append(e_ref_w)
        ratio = self.ratio()
        if self.factor is None or ratio is None or len(self.e) < self.e.maxlen or ratio <= self.factor:
            return None
        msg = (
            f"step {step}: collapse guard: the policy's error on preferred samples is {ratio:.2f}× the reference's "
            f"(train.collapse_factor={self.factor}); the objective is being met by degrading the model. "
            "Try objective.sft_weight (expert anchor), a smaller lr, or online.sync_every=1"
        )
        if self.action == "stop":
            raise UserError(msg)
        if self.warned:
            return None
        self.warned = True
        return msg

    def state_dict(self) -> dict:
        return {"e": list(self.e), "ref": list(self.ref), "warned": self.warned}

    def load_state_dict(self, state: dict) -> None:
        self.e.extend(state["e"])
        self.ref.extend(state["ref"])
        self.warned = state["warned"]


def rollback_or_stop(cfg, err: Diverged, last_good, rollbacks: int):
    """What a run does after `err`: the config to retry with (train.on_divergence=rollback: resume from
    `last_good`, or from scratch when there is none, with train.lr × train.rollback_lr_factor), or
    UserError with the one line that names the step, the last good checkpoint and what to change."""
    import dataclasses

    t = cfg.train
    if t.on_divergence != "rollback":
        raise UserError(divergence_message(err, last_good, t))
    if rollbacks >= t.max_rollbacks:
        raise UserError(f"{divergence_message(err, last_good, t)} after {rollbacks} rollbacks")
    lr = t.lr * t.rollback_lr_factor
    where = str(last_good) if last_good else "the start (no finite checkpoint yet)"
    print(f"genpref: {err}: rolling back to {where} with train.lr={lr:g} (rollback {rollbacks + 1} of "
          f"{t.max_rollbacks})", flush=True)
    train = dataclasses.replace(t, lr=lr, resume=str(last_good) if last_good else None)
    return dataclasses.replace(cfg, train=train)

"""Training guards: non-finite losses and preference collapse (policy worse than the reference on preferred data)."""

from __future__ import annotations

from collections import deque

from genpref.errors import UserError


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
            raise UserError(
                f"step {step}: the loss was NaN/inf for {self.streak} steps in a row (train.max_bad_steps="
                f"{self.limit}); lower train.lr, raise objective.beta's stability (smaller beta) or use bf16 instead of fp16"
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

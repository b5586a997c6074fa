"""Guards for online reward RL: the failures users of DDPO / Flow-GRPO report, caught while they happen.

- the reward falls while the KL to the reference grows (the policy drifts without gaining anything);
- a gradient-norm spike (a step's norm far above the recent median; reward drops tend to follow);
- reward hacking: the training reward rises while a held-out check (`reward.holdout`, a second reward model
  or verifier scored on the same samples) falls.
Each compares the mean of the last `window` logged values with the mean of the `window` before them. A trip
is a warning, or with `train.collapse_action: stop` a clean stop (the run keeps its last checkpoint).
"""

from __future__ import annotations

from collections import deque
from statistics import fmean, median

from genpref.errors import UserError


class RLGuard:
    def __init__(self, action: str = "warn", window: int = 10, spike_factor: float = 10.0, tolerance: float = 0.02):
        self.action, self.window, self.spike_factor, self.tolerance = action, window, spike_factor, tolerance
        self.history: dict[str, deque] = {k: deque(maxlen=2 * window) for k in ("reward_mean", "kl_ref", "holdout_reward", "grad_norm")}
        self.warned: set[str] = set()

    def _trend(self, key: str) -> float | None:
        """Mean of the last window minus the mean of the window before it (None until both are full)."""
        h = list(self.history[key])
        if len(h) < 2 * self.window:
            return None
        return fmean(h[self.window:]) - fmean(h[: self.window])

    def update(self, step: int, row: dict) -> str | None:
        """A warning when a guard trips (raises UserError when action is stop)."""
        norm = row.get("grad_norm")
        norms = list(self.history["grad_norm"])
        spike = (norm is not None and norm == norm and len(norms) >= self.window
                 and norm > self.spike_factor * max(median(norms), 1e-12))
        for key in self.history:
            value = row.get(key)
            if value is not None and value == value and not (key == "grad_norm" and spike):
                self.history[key].append(float(value))
        reward, kl, holdout = self._trend("reward_mean"), self._trend("kl_ref"), self._trend("holdout_reward")
        tol = self.tolerance
        if spike:
            return self._trip("grad_spike", f"step {step}: RL guard: gradient norm {norm:.3g} is over {self.spike_factor:g}× "
                              f"the recent median {median(norms):.3g}; reward drops tend to follow — lower train.lr or "
                              "train.max_grad_norm")
        if reward is not None and kl is not None and reward < -tol and kl > 0:
            return self._trip("reward_vs_kl", f"step {step}: RL guard: the reward fell by {-reward:.3g} over the last "
                              f"{self.window} steps while the KL to the reference grew by {kl:.3g}; raise "
                              "objective.kl_weight or lower train.lr")
        if reward is not None and holdout is not None and reward > tol and holdout < -tol:
            return self._trip("holdout", f"step {step}: RL guard: the reward rose by {reward:.3g} while the held-out "
                              f"check (reward.holdout) fell by {-holdout:.3g}: reward hacking; raise objective.kl_weight, "
                              "add an expert anchor (objective.sft_weight) or stop at an earlier checkpoint")
        return None

    def _trip(self, kind: str, msg: str) -> str | None:
        if self.action == "stop":
            raise UserError(msg)
        if kind in self.warned:
            return None
        self.warned.add(kind)
        return msg

    def state_dict(self) -> dict:
        return {"history": {k: list(v) for k, v in self.history.items()}, "warned": sorted(self.warned)}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state["history"].items():
            self.history[k].extend(v)
        self.warned = set(state["warned"])

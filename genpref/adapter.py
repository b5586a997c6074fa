"""The adapter protocol: what the modality-agnostic core needs from an image or motion model (DESIGN §4)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from genpref.sampling import StepCallback, TransitionCallback

ROLES = ("pairs", "experts", "prompts", "ratings")


@dataclass
class Batch:
    """Samples in the model's space, batch-first: what the core noises, predicts and scores.

    x0:      [B, ...] latent image, motion features or motion latent (None when only prompts are known)
    cond:    condition tensors, each [B, ...] (text embeddings, pooled embeddings, time ids, ...)
    mask:    broadcastable to x0, 1 = valid element (motion frames); None = everything valid
    prompts: the B prompts, for rewards and logs
    """

    x0: Tensor | None
    cond: dict[str, Tensor]
    mask: Tensor | None = None
    prompts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        if self.x0 is not None:
            return self.x0.shape[0]
        return len(self.prompts) if self.prompts else next(iter(self.cond.values())).shape[0]

    def with_x0(self, x0: Tensor) -> Batch:
        return replace(self, x0=x0)

    def index(self, idx: Tensor | list[int]) -> Batch:
        idx = torch.as_tensor(idx, dtype=torch.long)
        pick = lambda v: None if v is None else v[idx.to(v.device)]
        return Batch(
            x0=pick(self.x0),
            cond={k: v[idx.to(v.device)] for k, v in self.cond.items()},
            mask=pick(self.mask),
            prompts=[self.prompts[i] for i in idx.tolist()] if self.prompts else [],
        )

    def to(self, device: torch.device | str) -> Batch:
        move = lambda v: None if v is None else v.to(device)
        return Batch(move(self.x0), {k: v.to(device) for k, v in self.cond.items()}, move(self.mask), self.prompts)

    @staticmethod
    def cat(batches: Sequence[Batch]) -> Batch:
        """Concatenate along the batch dim (one forward pass for winners and losers)."""
        first = batches[0]
        x0 = None if first.x0 is None else torch.cat([b.x0 for b in batches])
        mask = None if first.mask is None else torch.cat([b.mask for b in batches])
        cond = {k: torch.cat([b.cond[k] for b in batches]) for k in first.cond}
        return Batch(x0, cond, mask, [p for b in batches for p in b.prompts])


@runtime_checkable
class Adapter(Protocol):
    """A modality behind the core. Plain classes implement it; nothing inherits from it.

    Attributes
    ----------
    denoiser:        the network being trained (LoRA-wrapped or full). The training loop replaces it with
                     the accelerate-prepared module, so `predict` must always call `self.denoiser`.
    noise_scheduler: a diffusers scheduler for training (`add_noise`, `get_velocity`,
                     `config.prediction_type`, `config.num_train_timesteps`).
    """

    denoiser: nn.Module
    noise_scheduler: Any

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer updates (LoRA weights, or every denoiser weight)."""

    def load_items(self, role: str) -> Sequence[dict]:
        """Raw data items from the config's data section, one dict per item.

        role "pairs":   {"prompt", "w", "l", "label"}  (label = P(w preferred), 1.0 for hard pairs)
        role "experts": {"prompt", "x"}
        role "prompts": {"prompt"}
        role "ratings": {"prompt", "x", "rating"}       (rating in [0, 1] or thumbs as 0/1)
        "x", "w", "l" are modality samples the adapter understands (an image path/bytes, a motion array).
        """

    def encode(self, samples: Sequence[Any], prompts: Sequence[str]) -> Batch:
        """Raw samples and their prompts -> Batch with x0 (cached where the adapter can)."""

    def encode_prompts(self, prompts: Sequence[str], like: Batch | None = None) -> Batch:
        """Prompts -> Batch with x0=None, ready for `generate`. `like` lends shapes/masks (motion lengths)."""

    def predict(self, x_t: Tensor, t: Tensor, batch: Batch, guidance: float = 1.0) -> Tensor:
        """The model output for noisy x_t at integer timesteps t [B], in `prediction_type` space; with
        guidance > 1, classifier-free guidance against the model's own unconditional input."""

    def reference(self) -> AbstractContextManager[None]:
        """Inside this context `predict` runs the frozen reference (LoRA off, or a frozen copy).
        It must restore the policy even when the body raises."""

    def use_reference(self, module: nn.Module) -> None:
        """From now on `reference()` runs this frozen network (an earlier run's, `model.reference`) instead of
        the base model (LoRA off) or the frozen copy, which it replaces."""

    def make_solver(self, name: str) -> Any:
        """A fresh sampler scheduler named as `online.solver` on this model's training schedule (with any
        per-model settings): what `generate` samples with, and what re-scores its DDIM transitions."""

    def generate(
        self,
        batch: Batch,
        *,
        generator: torch.Generator,
        num_steps: int,
        guidance: float = 1.0,
        start_t: int | None = None,
        timestep_jitter: bool = False,
        callback: StepCallback | None = None,
        solver: str | None = None,
        eta: float | None = None,
        on_transition: TransitionCallback | None = None,
    ) -> Tensor:
        """Sample x0 for batch's conditions with the current weights (no grad, eval mode).

        generator:       the only source of randomness (initial noise, jitter, stochastic samplers)
        start_t:         when given, start from batch.x0 noised to that training timestep (dataset reset)
                         instead of pure noise
        timestep_jitter: DiffusionDRO's per-trajectory timestep perturbation: every sample's timesteps
                         are shifted by its own random offset in [0, num_train_timesteps // num_steps)
        callback:        sees every step (trajectory recording); `t` may be a scalar or per-sample [B]
        solver:          a sampler name instead of online.solver
        eta:             stochastic DDIM of that η with per-step log-probs (online RL; needs the ddim solver)
        on_transition:   sees every DDIM transition (i, t, x_t, x_prev, log_prob [B]) of the rollout
        """

    def decode(self, x0: Tensor, batch: Batch) -> list[Any]:
        """Model-space samples -> modality samples (PIL images, de-normalised motion arrays)."""

    def save_final(self, out_dir: str) -> None:
        """Write the trained weights in the format users load (LoRA safetensors, pipeline, .pt)."""

    def save_samples(self, samples: list[Any], prompts: Sequence[str], out_dir: str, tag: str) -> list[str]:
        """Write decoded samples for people to look at (an image grid; motion GIFs + .npy); returns paths."""

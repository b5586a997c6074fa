"""The one sampling loop of genpref, for every modality, and the DDIM step with its log-probability.

`sample` runs any diffusers scheduler (named through SOLVERS) from noise or from noised data, with per-row
timestep tracks (DiffusionDRO's jitter) and a callback that sees every state exactly as the model saw it.
`ddim_step_with_logprob` is the stochastic DDIM update (η) with the Gaussian log-density of the transition,
as DDPO defines it: online reward RL re-scores stored transitions with it. Adapters supply only the model
call and what is modality-specific (latents, masks, lengths, per-model scheduler overrides).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from genpref.errors import UserError

# online.solver name -> (diffusers scheduler class, config overrides). Any diffusers "...Scheduler" class
# name is accepted too.
SOLVERS = {
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmsolver": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver"}),
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "lms": ("LMSDiscreteScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
}

Predict = Callable[[Tensor, Tensor], Tensor]  # (x_in [B, ...], t [B]) -> model output [B, ...]
# callback(i, t, x_t, model_output) is called once per sampler step, before the step is taken:
# x_t is the state the model saw at timestep t, model_output its raw prediction (ε, x0 or v).
StepCallback = Callable[[int, Tensor, Tensor, Tensor], None]
# (i, t [B], x_t, x_prev, log_prob [B]): one stochastic DDIM transition (online RL records these)
TransitionCallback = Callable[[int, Tensor, Tensor, Tensor, Tensor], None]


def make_solver(name: str, train_config: Any, overrides: dict | None = None) -> Any:
    """A fresh sampler scheduler sharing the training schedule's betas and prediction type.

    overrides: per-model settings (MLD's DDIM set_alpha_to_one=False, steps_offset=1), applied where the
    scheduler class accepts them."""
    import diffusers

    cls_name, extra = SOLVERS.get(name, (name, {}))
    cls = getattr(diffusers, cls_name, None) if cls_name.endswith("Scheduler") else None
    if cls is None or not hasattr(cls, "from_config"):
        raise UserError(f"online.solver: unknown solver {name!r}; valid: {', '.join(SOLVERS)} "
                        "or a diffusers scheduler class name such as DPMSolverMultistepScheduler")
    accepted = inspect.signature(cls.__init__).parameters
    extra = {**extra, **{k: v for k, v in (overrides or {}).items() if k in accepted}}
    return cls.from_config(train_config, **extra)


def is_ddim(scheduler: Any) -> bool:
    from diffusers import DDIMScheduler

    return isinstance(scheduler, DDIMScheduler)


def takes_timesteps(scheduler: Any) -> bool:
    return "timesteps" in inspect.signature(scheduler.set_timesteps).parameters


# ---------------------------------------------------------------------------------------------- timesteps


def jittered_timesteps(num_train_timesteps: int, num_steps: int, offsets: Tensor) -> Tensor:
    """DiffusionDRO's perturbed schedule: t_i = (S − 1 − i)·r + offset_b, r = T // S, offset_b in [0, r).

    offsets [B] -> timesteps [B, S], each row descending and inside [0, T)."""
    ratio = num_train_timesteps // num_steps
    base = (torch.arange(num_steps) * ratio).flip(0)  # [S]
    return base[None, :] + offsets.long()[:, None]  # [B, S]


def random_offsets(num_train_timesteps: int, num_steps: int, batch: int, generator: torch.Generator) -> Tensor:
    """One jitter offset per trajectory, in [0, T // S)."""
    ratio = num_train_timesteps // num_steps
    if ratio < 1:
        raise UserError(f"sampler steps: {num_steps} steps exceed the model's {num_train_timesteps} training timesteps")
    return torch.randint(0, ratio, (batch,), generator=generator, device=generator.device).cpu()


@dataclass
class Track:
    """Rows of the batch stepped by one scheduler.

    timesteps [S'] when the rows share one sequence; [b, S'] (one row each) for a DDIM track with per-row
    timesteps, which `ddim_step_with_logprob` steps directly (diffusers' DDIM takes one timestep per call)."""

    scheduler: Any
    rows: Tensor  # [b] long indices into the batch
    timesteps: Tensor

    def at(self, i: int) -> Tensor:
        """The timesteps of step i for this track's rows, [b]."""
        t = self.timesteps[..., i]
        return t.expand(len(self.rows)) if t.dim() == 0 else t


def plan(make: Callable[[], Any], num_steps: int, batch: int, device: torch.device,
         timesteps: Tensor | None = None, start_t: int | None = None) -> list[Track]:
    """One track for the whole batch, or per-row tracks when `timesteps` [B, S] gives each row its own.

    Per-row timesteps run on any scheduler whose set_timesteps takes explicit timesteps (one scheduler per
    row), and on DDIM (one track stepped by `ddim_step_with_logprob`). start_t (dataset reset): the steps
    above it are skipped so that every row starts at or below it; every track keeps the same number of steps."""
    scheduler = make()
    try:
        scheduler.set_timesteps(num_steps, device=device)
    except ValueError as err:
        raise UserError(f"sampler steps: {err}") from None
    if timesteps is None:
        tracks = [Track(scheduler, torch.arange(batch), scheduler.timesteps)]
    elif is_ddim(scheduler):
        tracks = [Track(scheduler, torch.arange(batch), timesteps.to(device))]
    elif takes_timesteps(scheduler):
        tracks = []
        for b in range(batch):
            row = make()
            row.set_timesteps(device=device, timesteps=timesteps[b].tolist())
            tracks.append(Track(row, torch.tensor([b]), row.timesteps))
    else:
        raise UserError(f"online.solver: {type(scheduler).__name__} cannot follow per-trajectory timesteps; "
                        "use ddim, dpmsolver++, ddpm, euler or heun, or set online.timestep_jitter=false")
    if start_t is not None:
        _start_below(tracks, start_t)
    return tracks


def _start_below(tracks: list[Track], start_t: int) -> None:
    skip = max(int((tr.timesteps > start_t).sum(dim=-1).max()) for tr in tracks)
    if skip >= tracks[0].timesteps.shape[-1]:
        lowest = min(int(tr.timesteps[..., -1].max()) for tr in tracks)
        raise UserError(f"online.reset_t={start_t}: no sampler step starts every trajectory at or below it "
                        f"(the last step's timesteps reach {lowest}); raise online.reset_t or online.steps")
    for tr in tracks:
        if skip and hasattr(tr.scheduler, "set_begin_index"):
            tr.scheduler.set_begin_index(skip)
        elif skip and getattr(tr.scheduler, "order", 1) > 1 and not is_ddim(tr.scheduler):
            raise UserError(f"online.solver: {type(tr.scheduler).__name__} cannot start mid-schedule "
                            "(online.reset_t); use ddim, ddpm, dpmsolver++, euler or unipc")
        tr.timesteps = tr.timesteps[..., skip:]


def _model_timesteps(t: Tensor) -> Tensor:
    t = t.cpu()
    return t.long() if not t.is_floating_point() or bool((t == t.round()).all()) else t.float()


# ---------------------------------------------------------------------------------------------- the loop


def sample(predict: Predict, tracks: list[Track], noise: Tensor, *, generator: torch.Generator,
           x0: Tensor | None = None, eta: float | None = None, mask: Tensor | None = None,
           callback: StepCallback | None = None, on_transition: TransitionCallback | None = None) -> Tensor:
    """Run the tracks' schedulers from `noise` (drawn by the caller), or from x0 noised with it to each
    track's first timestep.

    predict(x_in [B, ...], t [B]) -> model output. callback(i, t [B], x_in, output) gets the model's input
    after `scale_model_input`: for every diffusers scheduler that is the variance-preserving
    x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε the model was trained on, so it can be re-predicted.
    eta: DDIM tracks take the stochastic DDIM step of that η through `ddim_step_with_logprob`, and
    on_transition(i, t, x_t, x_prev, log_prob) records each transition (mask: valid elements of the
    log-prob average, motion frames)."""
    if on_transition is not None and (eta is None or not all(is_ddim(tr.scheduler) for tr in tracks)):
        raise UserError("per-step log-probabilities need the DDIM sampler with online.eta set (online.solver: ddim)")
    device = noise.device
    x = torch.empty_like(noise)
    for tr in tracks:
        rows = tr.rows.to(device)
        if x0 is None:
            x[rows] = noise[rows] * tr.scheduler.init_noise_sigma
        else:
            x[rows] = tr.scheduler.add_noise(x0[rows].to(device).float(), noise[rows], tr.at(0).to(device))
    takes_generator = "generator" in inspect.signature(type(tracks[0].scheduler).step).parameters
    for i in range(tracks[0].timesteps.shape[-1]):
        x_in = torch.empty_like(x)
        t_model = torch.empty(len(noise), dtype=tracks[0].timesteps.dtype)  # fresh: callbacks keep it
        for tr in tracks:
            rows = tr.rows.to(device)
            t = tr.at(i)
            x_in[rows] = tr.scheduler.scale_model_input(x[rows], t[0])  # identity for DDIM (per-row tracks)
            t_model[tr.rows] = t.cpu().to(t_model.dtype)
        t_batch = _model_timesteps(t_model).to(device)
        out = predict(x_in, t_batch).float()
        if callback is not None:
            callback(i, t_batch, x_in, out)
        x_next = torch.empty_like(x)
        for tr in tracks:
            rows = tr.rows.to(device)
            if is_ddim(tr.scheduler) and (eta is not None or tr.timesteps.dim() == 2):
                row_mask = None if mask is None else mask[rows]
                x_next[rows], log_prob = ddim_step_with_logprob(tr.scheduler, out[rows], tr.at(i).to(device), x[rows],
                                                                eta or 0.0, generator=generator, mask=row_mask)
                if on_transition is not None:
                    on_transition(i, t_batch[rows], x[rows], x_next[rows], log_prob)
            else:
                kw = {"generator": generator} if takes_generator else {}
                x_next[rows] = tr.scheduler.step(out[rows], tr.timesteps[i], x[rows], **kw).prev_sample.float()
        x = x_next
    return x


# ---------------------------------------------------------------------------------------------- DDIM with log-prob


def _alpha_bars(scheduler: Any, timestep: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """(ᾱ_t, ᾱ_prev) per row for DDIM's leading spacing: prev = t − T // num_inference_steps, and the
    scheduler's final ᾱ (1, or ᾱ_0 with set_alpha_to_one=False) once prev falls below 0."""
    if scheduler.num_inference_steps is None:
        raise ValueError("ddim_step_with_logprob: call scheduler.set_timesteps(num_steps) first")
    alphas = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
    t = timestep.to(device).long().reshape(-1)
    prev = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    final = torch.as_tensor(float(scheduler.final_alpha_cumprod), dtype=torch.float32, device=device)
    alpha_prev = torch.where(prev >= 0, alphas[prev.clamp(min=0)], final)
    return alphas[t], alpha_prev


def _x0_eps(x_t: Tensor, out: Tensor, alpha: Tensor, prediction_type: str) -> tuple[Tensor, Tensor]:
    """(x̂0, ε̂) implied by a model output at ᾱ_t = alpha (broadcastable to x_t)."""
    a, s = alpha.sqrt(), (1 - alpha).sqrt()
    if prediction_type == "epsilon":
        return (x_t - s * out) / a, out
    if prediction_type == "sample":
        return out, (x_t - a * out) / s
    if prediction_type == "v_prediction":
        return a * x_t - s * out, a * out + s * x_t
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over every non-batch dim, or over the valid elements of a broadcastable mask. [B, ...] -> [B]."""
    dims = tuple(range(1, values.dim()))
    if mask is None:
        return values.mean(dim=dims)
    m = mask.to(values.dtype).expand_as(values)
    return (values * m).sum(dim=dims) / m.sum(dim=dims).clamp(min=1)


def ddim_gaussian(scheduler: Any, model_output: Tensor, timestep: Tensor | int, sample: Tensor,
                  eta: float) -> tuple[Tensor, Tensor]:
    """The DDIM step's Gaussian p(x_prev | x_t): mean μ [B, ...] and σ_t [B or 1, 1, ...] in float32.

        x̂0, ε̂ from the output (ε-, v- or sample-prediction; clipped like diffusers when clip_sample)
        σ_t = η·√((1 − ᾱ_prev)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev),  μ = √ᾱ_prev·x̂0 + √(1 − ᾱ_prev − σ_t²)·ε̂"""
    t = torch.as_tensor(timestep, device=sample.device)
    alpha, alpha_prev = _alpha_bars(scheduler, t, sample.device)
    shape = (-1,) + (1,) * (sample.dim() - 1)
    alpha, alpha_prev = alpha.view(shape), alpha_prev.view(shape)  # [B or 1, 1, ...]
    x_t = sample.float()
    x0, eps = _x0_eps(x_t, model_output.float(), alpha, scheduler.config.prediction_type)
    if scheduler.config.clip_sample:
        r = scheduler.config.clip_sample_range
        x0 = x0.clamp(-r, r)
        eps = (x_t - alpha.sqrt() * x0) / (1 - alpha).sqrt()
    std = eta * ((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)).clamp(min=0).sqrt()
    mean = alpha_prev.sqrt() * x0 + (1 - alpha_prev - std**2).clamp(min=0).sqrt() * eps
    return mean, std


def ddim_step_with_logprob(scheduler: Any, model_output: Tensor, timestep: Tensor | int, sample: Tensor, eta: float,
                           generator: torch.Generator | None = None, prev_sample: Tensor | None = None, *,
                           mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One DDIM step x_t -> x_prev with η, and log p(x_prev | x_t) under this step's Gaussian (Song et al.
    Eq. 12; DDPO's per-step likelihood).

        μ, σ_t = `ddim_gaussian` (ε-, v- or sample-prediction)
        x_prev = μ + σ_t·z (z from `generator`, drawn as diffusers' DDIMScheduler.step draws it), or `prev_sample`
        log_prob [B] = mean over non-batch (mask-valid) elements of log N(x_prev; μ, σ_t²)

    timestep: a scalar or one per row [B]. With `prev_sample` the given transition is scored under the
    current model output (what a policy gradient needs). Where σ_t = 0 (η = 0, or the last step onto
    ᾱ_prev = 1) the step is deterministic and its log_prob is 0."""
    mean, std = ddim_gaussian(scheduler, model_output, timestep, sample, eta)
    if prev_sample is None:
        from diffusers.utils.torch_utils import randn_tensor

        z = randn_tensor(model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype)
        prev_sample = (mean + std * z.float()).to(sample.dtype)
    x_prev = prev_sample.detach().float()
    safe = torch.where(std > 0, std, torch.ones_like(std))
    log_density = -((x_prev - mean) ** 2) / (2 * safe**2) - torch.log(safe) - 0.5 * math.log(2 * math.pi)
    log_prob = masked_mean(log_density, mask) * (std.reshape(-1) > 0)
    return prev_sample, log_prob

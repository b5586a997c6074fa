"""Sampling loops for motion models: any diffusers scheduler by name, and DiffusionDRO's jittered DDIM.

`sample` is the ordinary loop (the scheduler's own `step`); `sample_jittered` shifts every sample's
timesteps by its own offset and therefore steps each sample with the deterministic DDIM update written
out below (diffusers schedulers take one timestep per call). Both report every step through
callback(i, t, x_t, model_output) with the state the model SAW at t, before the step is taken, in the
training space of `add_noise` (the scheduler's `scale_model_input` maps σ-space samplers back to it).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor

from genpref.errors import UserError

# online.solver -> (diffusers class name, config overrides)
SOLVERS = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmsolver": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver"}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}

ModelFn = Callable[[Tensor, Tensor], Tensor]  # (x_t [B, ...], t [B]) -> model output


def make_sampler(name: str, train_config, overrides: dict | None = None):
    """A fresh inference scheduler of the named kind sharing the training betas and prediction type.

    `name` is a key of SOLVERS or any diffusers scheduler class name; `overrides` are per-model settings
    (e.g. MLD's DDIM set_alpha_to_one=False, steps_offset=1) applied when the class accepts them."""
    import diffusers

    cls_name, extra = SOLVERS.get(name, (name, {}))
    cls = getattr(diffusers, cls_name, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise UserError(f"online.solver: unknown sampler {name!r}; valid: {', '.join(SOLVERS)} or a diffusers scheduler class")
    params = inspect.signature(cls.__init__).parameters
    extra = {**extra, **{k: v for k, v in (overrides or {}).items() if k in params}}
    return cls.from_config(train_config, **extra)


def _step_kwargs(scheduler, generator: torch.Generator) -> dict:
    accepted = inspect.signature(scheduler.step).parameters
    return {"generator": generator} if "generator" in accepted else {}


def sample(
    model_fn: ModelFn,
    scheduler,
    x: Tensor,
    num_steps: int,
    *,
    generator: torch.Generator,
    x0: Tensor | None = None,
    start_t: int | None = None,
    callback=None,
) -> Tensor:
    """Run `scheduler` for num_steps from pure noise x (already drawn, unscaled), or — with start_t — from
    x0 noised (with the same x as noise) to the first sampler timestep ≤ start_t."""
    try:
        scheduler.set_timesteps(num_steps, device=x.device)
    except ValueError as err:
        raise UserError(f"sampler steps: {err}") from None
    timesteps = scheduler.timesteps
    begin = 0
    if start_t is not None:
        later = (timesteps <= start_t).nonzero()
        if len(later) == 0:
            raise UserError(f"online.reset_t={start_t} is below every sampler timestep ({timesteps.min().item()})")
        begin = int(later[0])
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        x = scheduler.add_noise(x0.float(), x, timesteps[begin : begin + 1].expand(x.shape[0]))
    else:
        x = x * scheduler.init_noise_sigma
    extra = _step_kwargs(scheduler, generator)
    b = x.shape[0]
    for i, t in enumerate(timesteps[begin:]):
        x_in = scheduler.scale_model_input(x, t)
        t_batch = t.reshape(1).expand(b).to(x.device)
        out = model_fn(x_in, t_batch).float()
        if callback is not None:
            callback(i, t_batch, x_in, out)
        x = scheduler.step(out, t, x, **extra).prev_sample
    return x


def to_x0_eps(x_t: Tensor, out: Tensor, alpha_bar: Tensor, prediction_type: str) -> tuple[Tensor, Tensor]:
    """(x0, ε) implied by a model output; alpha_bar broadcastable to x_t."""
    a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if prediction_type == "epsilon":
        return (x_t - s * out) / a, out
    if prediction_type == "sample":
        return out, (x_t - a * out) / s
    if prediction_type == "v_prediction":
        return a * x_t - s * out, a * out + s * x_t
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def ddim_step(x_t: Tensor, out: Tensor, alpha_bar: Tensor, alpha_bar_prev: Tensor, prediction_type: str) -> Tensor:
    """Deterministic DDIM (η = 0): x_prev = √ᾱ_prev·x0 + √(1 − ᾱ_prev)·ε, per sample."""
    x0, eps = to_x0_eps(x_t, out, alpha_bar, prediction_type)
    return alpha_bar_prev.sqrt() * x0 + (1 - alpha_bar_prev).sqrt() * eps


def jittered_timesteps(num_train: int, num_steps: int, batch: int, generator: torch.Generator) -> Tensor:
    """DiffusionDRO's rollout timesteps [num_steps, B]: leading spacing k·(T // n), descending, each column
    shifted by its own offset drawn from [0, T // n)."""
    ratio = num_train // num_steps
    if ratio < 1:
        raise UserError(f"sampler steps: {num_steps} steps exceed the model's {num_train} training timesteps")
    base = (torch.arange(num_steps) * ratio).flip(0)
    return base[:, None] + torch.randint(0, ratio, (1, batch), generator=generator)


def sample_jittered(
    model_fn: ModelFn,
    train_scheduler,
    x: Tensor,
    num_steps: int,
    *,
    generator: torch.Generator,
    x0: Tensor | None = None,
    start_t: int | None = None,
    callback=None,
) -> Tensor:
    """DDIM (η = 0) from pure noise x with per-sample jittered timesteps; the last step returns the x0
    prediction (ᾱ_prev = 1). With start_t, the rows of the schedule above start_t are dropped and every
    sample starts from x0 noised (with x as noise) to its own first timestep."""
    alphas = train_scheduler.alphas_cumprod.to(x.device, torch.float32)
    kind = train_scheduler.config.prediction_type
    ts = jittered_timesteps(train_scheduler.config.num_train_timesteps, num_steps, x.shape[0], generator).to(x.device)
    if start_t is not None:
        ts = ts[(ts <= start_t).all(dim=1)]
        if len(ts) == 0:
            ratio = train_scheduler.config.num_train_timesteps // num_steps
            raise UserError(f"online.reset_t={start_t}: no row of the jittered schedule (rows of {ratio} timesteps) "
                            "lies entirely below it; raise online.reset_t or online.steps")
        x = train_scheduler.add_noise(x0.float(), x, ts[0])
    shape = (-1,) + (1,) * (x.dim() - 1)
    for i, t in enumerate(ts):
        out = model_fn(x, t).float()
        if callback is not None:
            callback(i, t, x, out)
        alpha_prev = alphas[ts[i + 1]] if i + 1 < len(ts) else torch.ones_like(alphas[t])
        x = ddim_step(x, out, alphas[t].view(shape), alpha_prev.view(shape), kind)
    return x

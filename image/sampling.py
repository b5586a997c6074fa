"""A plain sampling loop over any diffusers scheduler's `step`, with per-trajectory timesteps
(DiffusionDRO's `buffer_perturb_timesteps`), a start from noised data, and a callback that sees every
state exactly as the model saw it."""

from __future__ import annotations

import inspect
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


def make_solver(name: str, train_config: Any) -> Any:
    """A fresh sampler scheduler sharing the training schedule's betas and prediction type."""
    import diffusers

    cls_name, overrides = SOLVERS.get(name, (name, {}))
    cls = getattr(diffusers, cls_name, None) if cls_name.endswith("Scheduler") else None
    if cls is None:
        raise UserError(f"online.solver: unknown solver {name!r}; valid: {', '.join(SOLVERS)} "
                        "or a diffusers scheduler class name such as DPMSolverMultistepScheduler")
    return cls.from_config(train_config, **overrides)


def takes_timesteps(scheduler: Any) -> bool:
    return "timesteps" in inspect.signature(scheduler.set_timesteps).parameters


def jittered_timesteps(num_train_timesteps: int, num_steps: int, offsets: Tensor) -> Tensor:
    """DiffusionDRO's perturbed schedule: t_i = (S − 1 − i)·r + offset_b, r = T // S, offset_b in [0, r).

    offsets [B] -> timesteps [B, S], each row descending and inside [0, T)."""
    ratio = num_train_timesteps // num_steps
    base = (torch.arange(num_steps) * ratio).flip(0)  # [S]
    return base[None, :] + offsets.long()[:, None]  # [B, S]


def random_offsets(num_train_timesteps: int, num_steps: int, batch: int, generator: torch.Generator) -> Tensor:
    ratio = num_train_timesteps // num_steps
    return torch.randint(0, ratio, (batch,), generator=generator, device=generator.device).cpu()


@dataclass
class Track:
    """Rows of the batch that share one scheduler (and so one timestep sequence)."""

    scheduler: Any
    rows: Tensor  # [b] long indices into the batch
    timesteps: Tensor  # [S'] the timesteps this track visits, in order


def plan(make: Callable[[], Any], num_steps: int, batch: int, device: torch.device,
         timesteps: Tensor | None = None, start_t: int | None = None) -> list[Track]:
    """One track for the whole batch, or one per row when `timesteps` [B, S] gives each row its own.

    start_t: skip the steps above it (dataset reset); every track keeps the same number of steps."""
    if timesteps is None:
        scheduler = make()
        scheduler.set_timesteps(num_steps, device=device)
        tracks = [Track(scheduler, torch.arange(batch), scheduler.timesteps)]
    else:
        tracks = []
        for b in range(batch):
            scheduler = make()
            if not takes_timesteps(scheduler):
                raise UserError(f"online.solver: {type(scheduler).__name__} cannot follow per-trajectory timesteps; "
                                "use dpmsolver++, ddpm or euler, or set online.timestep_jitter=false")
            scheduler.set_timesteps(device=device, timesteps=timesteps[b].tolist())
            tracks.append(Track(scheduler, torch.tensor([b]), scheduler.timesteps))
    if start_t is not None:
        skip = min(int((tr.timesteps > start_t).sum()) for tr in tracks)
        if skip >= len(tracks[0].timesteps):
            raise UserError(f"online.reset_t={start_t} is below every sampler timestep")
        for tr in tracks:
            if not hasattr(tr.scheduler, "set_begin_index"):
                raise UserError(f"online.solver: {type(tr.scheduler).__name__} cannot start mid-schedule "
                                "(online.reset_t); use dpmsolver++, euler or unipc")
            tr.scheduler.set_begin_index(skip)
            tr.timesteps = tr.timesteps[skip:]
    return tracks


def _model_timesteps(values: list[Tensor]) -> Tensor:
    t = torch.stack([v.reshape(()) for v in values]).cpu()
    return t.long() if not t.is_floating_point() or bool((t == t.round()).all()) else t.float()


def sample(predict: Callable[[Tensor, Tensor], Tensor], tracks: list[Track], shape: tuple[int, ...], *,
           generator: torch.Generator, device: torch.device, x0: Tensor | None = None,
           callback: Callable[[int, Tensor, Tensor, Tensor], None] | None = None) -> Tensor:
    """Run the tracks' schedulers from noise (or from x0 noised to each track's first timestep).

    predict(x_in [B, ...], t [B]) -> model output [B, ...]. callback(i, t [B], x_in [B, ...], output [B, ...])
    gets the model's input after `scale_model_input`: for every diffusers scheduler that is the
    variance-preserving x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε the UNet was trained on, so it can be re-predicted."""
    noise = torch.randn(shape, generator=generator, device=generator.device).to(device)
    x = torch.empty(shape, device=device)
    for tr in tracks:
        rows = tr.rows.to(device)
        if x0 is None:
            x[rows] = noise[rows] * tr.scheduler.init_noise_sigma
        else:
            t0 = tr.timesteps[:1].to(device)
            x[rows] = tr.scheduler.add_noise(x0[rows].to(device).float(), noise[rows], t0.expand(len(rows)))
    takes_generator = "generator" in inspect.signature(type(tracks[0].scheduler).step).parameters
    for i in range(len(tracks[0].timesteps)):
        t_rows = [None] * shape[0]
        x_in = torch.empty_like(x)
        for tr in tracks:
            rows, t = tr.rows.to(device), tr.timesteps[i]
            x_in[rows] = tr.scheduler.scale_model_input(x[rows], t)
            for r in tr.rows.tolist():
                t_rows[r] = t
        t_model = _model_timesteps(t_rows).to(device)
        out = predict(x_in, t_model)
        if callback is not None:
            callback(i, t_model, x_in, out)
        for tr in tracks:
            rows = tr.rows.to(device)
            kw = {"generator": generator} if takes_generator else {}
            x[rows] = tr.scheduler.step(out[rows].float(), tr.timesteps[i], x[rows], **kw).prev_sample.float()
    return x

"""A training run's parts, built from its config in a fixed order (the seeded initialisation depends on it):
accelerator, run directory, adapter, pair source and objective, optimizer, schedule, EMA and guards, with
everything a resume restores gathered in one TrainState."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genpref import build, checkpoint
from genpref.adapter import Adapter
from genpref.config import Config
from genpref.errors import UserError
from genpref.guards import BadLossGuard, CollapseGuard
from genpref.objectives import build_objective
from genpref.online import RolloutPolicy
from genpref.recipes import SourceContext
from genpref.rl_guards import RLGuard
from genpref.rundir import claim_for_fresh_start
from genpref.train_state import TrainableWeights, TrainState

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Run:
    cfg: Config
    accelerator: Any
    dir: Path  # train.output_dir
    resume_from: Path | None  # the checkpoint to continue from; None: a fresh start
    adapter: Adapter  # its denoiser wrapped for distributed training
    plain: torch.nn.Module  # the unwrapped denoiser: sources generate on one rank at a time, outside DDP
    objective: Any
    params: list[torch.nn.Parameter]  # the model's trainable parameters (EMA, rank check, final weights)
    own: list[tuple[str, torch.nn.Parameter]]  # the objective's own (a value table): gradients averaged by hand
    bad_loss: BadLossGuard  # consecutive non-finite losses (0 whenever a checkpoint is written)
    state: TrainState  # everything a resume restores

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    def say(self, msg: str) -> None:
        self.accelerator.print(f"genpref: {msg}")

    @property
    def all_params(self) -> list[torch.nn.Parameter]:
        return self.params + [p for _, p in self.own]

    @contextmanager
    def unwrapped(self):
        """The adapter on the plain network (generation on one rank must not enter DDP)."""
        with plain_module(self.adapter, self.plain):
            yield


@contextmanager
def plain_module(adapter: Adapter, module):
    """Run the adapter on `module` instead of its (wrapped) denoiser."""
    wrapped = adapter.denoiser
    adapter.denoiser = module
    try:
        yield
    finally:
        adapter.denoiser = wrapped


def _disable_dropout(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def with_precomputed_reference(source, cfg: Config, accelerator):
    """train.precompute_reference: the source's batches carry reference errors computed ahead."""
    if not cfg.train.precompute_reference:
        return source
    from genpref.precompute import PrecomputedReference

    return PrecomputedReference(source, accelerator.autocast)


def start_accelerator(cfg: Config):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # several runs in one process (tests, demo) may differ in precision
    return Accelerator(mixed_precision=cfg.train.mixed_precision)


def resume_or_claim(cfg: Config, accelerator) -> Path | None:
    """The checkpoint train.resume names; without one, train.output_dir claimed for a fresh start."""
    t, main = cfg.train, accelerator.is_main_process
    say = lambda msg: accelerator.print(f"genpref: {msg}")
    run_dir = Path(t.output_dir)
    resume_from = checkpoint.resolve_resume(run_dir, t.resume, report=say if main else None, remove_nonfinite=main)
    if resume_from is None:
        claim_for_fresh_start(run_dir, bool(checkpoint.complete_checkpoints(run_dir, report=None)), t.overwrite, main, say)
        accelerator.wait_for_everyone()
    return resume_from


def build_model(cfg: Config, accelerator) -> Adapter:
    adapter = build.build_adapter(cfg, accelerator.device, DTYPES[cfg.train.mixed_precision])
    if cfg.train.disable_dropout:
        _disable_dropout(adapter.denoiser)
    if cfg.model.reference is not None:  # an earlier run's trained network replaces the base as the reference
        from genpref.reference_run import load_reference

        adapter.use_reference(load_reference(cfg, accelerator.device, DTYPES[cfg.train.mixed_precision]))
    steps_total = adapter.noise_scheduler.config.num_train_timesteps
    if cfg.online.reset_t is not None and not 0 < cfg.online.reset_t < steps_total:
        raise UserError(f"online.reset_t={cfg.online.reset_t}: must lie in (0, {steps_total}), the model's training timesteps")
    if not adapter.trainable_parameters():
        raise UserError("the model has no trainable parameters (check model.lora.targets)")
    return adapter


def build_run(cfg: Config) -> Run:
    """Every part of the run of `cfg`, ready for TrainState.load when it resumes."""
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler

    t = cfg.train
    accelerator = start_accelerator(cfg)
    resume_from = resume_or_claim(cfg, accelerator)
    set_seed(t.seed)  # identical initialisation on every rank
    adapter = build_model(cfg, accelerator)
    params = adapter.trainable_parameters()
    names = {id(p): n for n, p in adapter.denoiser.named_parameters()}
    named_params = {names[id(p)]: p for p in params}
    plain = adapter.denoiser
    rollout = RolloutPolicy(params, cfg.online.sync_every, cfg.online.rollout_ema)
    reward = build.build_reward(cfg, accelerator.device)
    ctx = SourceContext(adapter, cfg, accelerator.device, accelerator.process_index, accelerator.num_processes, rollout, reward)
    source = build.build_source(ctx, cfg)
    objective = build_objective(cfg.objective, source)
    source = with_precomputed_reference(source, cfg, accelerator)
    own = list(objective.named_parameters()) if isinstance(objective, torch.nn.Module) else []
    if own:  # objectives with parameters of their own (a value table) are optimised too
        objective.to(accelerator.device)
        named_params.update({f"objective.{n}": p for n, p in own})
    optimizer = torch.optim.AdamW(
        params + [p for _, p in own], lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps, weight_decay=t.weight_decay
    )
    # Stepped by hand once per optimizer step (accelerate's wrapper steps it once per process).
    lr_scheduler = get_scheduler(t.lr_scheduler, optimizer, num_warmup_steps=t.warmup_steps, num_training_steps=t.max_steps)
    from genpref.refit import build_refit

    reward_refit = build_refit(cfg, reward, adapter, source, rollout, accelerator)
    ema = None
    if t.ema_decay is not None:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=t.ema_decay)
    adapter.denoiser, optimizer = accelerator.prepare(adapter.denoiser, optimizer)
    adapter.denoiser.train()
    state = TrainState(
        weights=TrainableWeights(named_params), optimizer=optimizer, lr_scheduler=lr_scheduler, ema=ema,
        collapse=CollapseGuard(t.collapse_factor, t.collapse_action, t.collapse_window),
        rl_guard=RLGuard(t.collapse_action, t.collapse_window), rollout=rollout, scaler=accelerator.scaler, source=source,
        accelerator=accelerator, run_dir=Path(t.output_dir), lr=t.lr, keep=t.keep_checkpoints,
        # FSDP / DeepSpeed shard weights and optimizer state: accelerate saves those (not exercised on CPU)
        sharded=accelerator.distributed_type.value in ("FSDP", "DEEPSPEED"), reward_refit=reward_refit,
    )
    return Run(cfg, accelerator, Path(t.output_dir), resume_from, adapter, plain, objective, params, own,
               BadLossGuard(t.max_bad_steps), state)

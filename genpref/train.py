"""The one training loop for every recipe: build -> resume -> loop -> save.

The step body never looks at the objective's name: it asks the pair source chosen at build time for a
batch of named branches, computes policy and reference errors on them, and hands those to the
objective. Accelerate provides devices, mixed precision and multi-process; checkpoints are our own
(trainable weights only, crash-safe, loaded without running pickles).
"""

from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from genpref import build, checkpoint, runlock
from genpref.adapter import Adapter
from genpref.config import Config
from genpref.errors import UserError
from genpref.forward import branch_errors
from genpref.guards import BadLossGuard, CollapseGuard, Diverged, check_weights_finite, rollback_or_stop
from genpref.modelcard import write_model_card
from genpref.objectives import build_objective
from genpref.online import RolloutPolicy
from genpref.recipes import SourceContext
from genpref.rl_guards import RLGuard
from genpref.rundir import MetricsLog, claim_for_fresh_start, flat_config, tracker_names, write_run_files

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------- the step


@contextmanager
def plain_module(adapter: Adapter, module):
    """Run the adapter on the unwrapped network (generation on one rank must not enter DDP)."""
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


def check_ranks_in_sync(accelerator, params: list[torch.nn.Parameter], run_dir: Path) -> None:
    """Every rank's trainable weights must be bit-identical after training; ranks.json records the check."""
    import json

    with torch.no_grad():
        fingerprint = torch.stack([torch.stack([p.detach().double().sum(), p.detach().double().abs().sum()]) for p in params])
    fingerprints = accelerator.gather(fingerprint.to(accelerator.device)[None]).cpu()  # [world, P, 2]
    if accelerator.is_main_process:
        in_sync = bool(torch.isclose(fingerprints, fingerprints[0], rtol=0, atol=0, equal_nan=True).all())
        (run_dir / "ranks.json").write_text(json.dumps({"world_size": accelerator.num_processes, "weights_identical": in_sync}))
        if not in_sync:
            warnings.warn("trainable weights differ across ranks after training", stacklevel=1)


def with_precomputed_reference(source, cfg: Config, accelerator):
    """train.precompute_reference: the source's batches carry reference errors computed ahead."""
    if not cfg.train.precompute_reference:
        return source
    from genpref.precompute import PrecomputedReference

    return PrecomputedReference(source, accelerator.autocast)


def micro_metrics(loss: torch.Tensor, metrics: dict, stats: dict[str, float]) -> dict[str, float]:
    """A micro-batch's logged numbers as floats: one stack and one device-to-host copy, not one tiny op
    (and one transfer) per metric."""
    tensors = {"loss": loss, **metrics}
    floats = torch.stack([v.detach().float().reshape(()) for v in tensors.values()]).tolist()
    return {**dict(zip(tensors, floats)), **stats}


# ---------------------------------------------------------------------------------------------- samples


def write_samples(adapter: Adapter, cfg: Config, run_dir: Path, tag: str) -> list[str]:
    prompts = cfg.train.sample_prompts
    if not prompts:
        return []
    rep_prompts = [p for p in prompts for _ in cfg.train.sample_seeds]
    batch = adapter.encode_prompts(rep_prompts)
    outs = []
    for i, seed in enumerate(cfg.train.sample_seeds):
        idx = list(range(i, len(rep_prompts), len(cfg.train.sample_seeds)))
        sub = batch.index(idx)
        x0 = adapter.generate(sub, generator=torch.Generator().manual_seed(seed), num_steps=cfg.online.steps, guidance=cfg.online.guidance)
        outs.append((idx, adapter.decode(x0, sub)))
    samples = [None] * len(rep_prompts)
    for idx, decoded in outs:
        for j, s in zip(idx, decoded):
            samples[j] = s
    return adapter.save_samples(samples, rep_prompts, str(run_dir / "samples"), tag)


# ---------------------------------------------------------------------------------------------- the run


def train(cfg: Config) -> Path:
    """Train `cfg` holding train.output_dir's lock; a divergence rolls back to the last good checkpoint with
    a smaller lr (train.on_divergence=rollback) or ends in one line naming it."""
    build.check(cfg)  # a bad config leaves no run directory behind (the lock would create it)
    with runlock.hold(cfg.train.output_dir, say=lambda msg: print(f"genpref: {msg}", flush=True)):
        rollbacks = 0
        while True:
            try:
                return _train(cfg)
            except Diverged as err:
                good = checkpoint.last_good(Path(cfg.train.output_dir), err.good_until)
                cfg = rollback_or_stop(cfg, err, good, rollbacks)
                rollbacks += 1


def _train(cfg: Config) -> Path:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    build.check(cfg)
    t = cfg.train
    AcceleratorState._reset_state()  # several runs in one process (tests, demo) may differ in precision
    accelerator = Accelerator(mixed_precision=t.mixed_precision)
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    say = lambda msg: accelerator.print(f"genpref: {msg}")
    run_dir = Path(t.output_dir)

    # ---- build
    resume_from = checkpoint.resolve_resume(run_dir, t.resume, report=say if main else None, remove_nonfinite=main)
    if resume_from is None:
        claim_for_fresh_start(run_dir, bool(checkpoint.complete_checkpoints(run_dir, report=None)), t.overwrite, main, say)
        accelerator.wait_for_everyone()
    set_seed(t.seed)  # identical initialisation on every rank
    weight_dtype = DTYPES[t.mixed_precision]
    adapter = build.build_adapter(cfg, accelerator.device, weight_dtype)
    if t.disable_dropout:
        _disable_dropout(adapter.denoiser)
    steps_total = adapter.noise_scheduler.config.num_train_timesteps
    if cfg.online.reset_t is not None and not 0 < cfg.online.reset_t < steps_total:
        raise UserError(f"online.reset_t={cfg.online.reset_t}: must lie in (0, {steps_total}), the model's training timesteps")
    params = adapter.trainable_parameters()
    if not params:
        raise UserError("the model has no trainable parameters (check model.lora.targets)")
    names = {id(p): n for n, p in adapter.denoiser.named_parameters()}
    named_params = {names[id(p)]: p for p in params}
    plain = adapter.denoiser
    rollout = RolloutPolicy(params, cfg.online.sync_every, cfg.online.rollout_ema)
    reward = build.build_reward(cfg, accelerator.device)
    ctx = SourceContext(adapter, cfg, accelerator.device, rank, world, rollout, reward)
    source = build.build_source(ctx, cfg)
    objective = build_objective(cfg.objective, source)
    source = with_precomputed_reference(source, cfg, accelerator)
    # objectives with parameters of their own (a value table): optimised too, gradients averaged by hand
    own = list(objective.named_parameters()) if isinstance(objective, torch.nn.Module) else []
    if own:
        objective.to(accelerator.device)
        named_params.update({f"objective.{n}": p for n, p in own})
    all_params = params + [p for _, p in own]
    optimizer = torch.optim.AdamW(
        all_params, lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_eps, weight_decay=t.weight_decay
    )
    # Stepped by hand once per optimizer step (accelerate's wrapper steps it once per process).
    lr_scheduler = get_scheduler(t.lr_scheduler, optimizer, num_warmup_steps=t.warmup_steps, num_training_steps=t.max_steps)
    ema = None
    if t.ema_decay is not None:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=t.ema_decay)
    adapter.denoiser, optimizer = accelerator.prepare(adapter.denoiser, optimizer)
    adapter.denoiser.train()
    bad_loss = BadLossGuard(t.max_bad_steps)
    collapse = CollapseGuard(t.collapse_factor, t.collapse_action, t.collapse_window)
    rl_guard = RLGuard(t.collapse_action, t.collapse_window)
    # FSDP / DeepSpeed shard weights and optimizer state: accelerate saves those (not exercised on CPU)
    sharded = accelerator.distributed_type.value in ("FSDP", "DEEPSPEED")

    # ---- resume
    start = 0
    if resume_from is not None:
        weights, shared, mine = checkpoint.load(resume_from, rank, world)
        if sharded:
            accelerator.load_state(str(resume_from / "accelerate"))
        else:
            missing = set(named_params) - set(weights)
            if missing:
                raise UserError(f"{resume_from}: checkpoint lacks trainable weights, e.g. {sorted(missing)[0]}")
            checkpoint.check_shapes(resume_from, weights, named_params)
            with torch.no_grad():
                for name, p in named_params.items():  # load into the existing (LoRA) parameters
                    p.copy_(weights[name].to(p.device, p.dtype))
            optimizer.load_state_dict(shared["optimizer"])
        lr_scheduler.load_state_dict(shared["lr_scheduler"])
        checkpoint.rescale_lr(optimizer, lr_scheduler, shared.get("lr"), t.lr, say)
        if ema is not None and shared.get("ema") is not None:
            ema.load_state_dict(shared["ema"])
        collapse.load_state_dict(shared["collapse"])
        if shared.get("rl_guard") is not None:
            rl_guard.load_state_dict(shared["rl_guard"])
        rollout.load_state_dict(shared["rollout"])
        if accelerator.scaler is not None and shared.get("scaler"):
            accelerator.scaler.load_state_dict(shared["scaler"])
        if mine is not None:
            source.load_state_dict(mine["source"])
            checkpoint.set_rng_state(mine["rng"])
        start = shared["step"]
        say(f"resumed from {resume_from} at step {start}")
    if main:
        write_run_files(run_dir, cfg, world, str(resume_from) if resume_from else None)
    log = MetricsLog(run_dir, main, tracker_names(t), start if resume_from else None, flat_config(cfg))

    def save_checkpoint(step: int) -> None:
        shared = {
            "step": step,
            "lr": t.lr,
            "optimizer": None if sharded else optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "collapse": collapse.state_dict(),
            "rl_guard": rl_guard.state_dict(),
            "rollout": rollout.state_dict(),
            "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
        }
        weights = {} if sharded else named_params
        checkpoint.save(accelerator, run_dir, step, weights, shared, {"source": source.state_dict()}, t.keep_checkpoints, sharded)

    # ---- loop
    with tqdm(total=t.max_steps, initial=start, disable=not main, desc="train", dynamic_ncols=True) as bar:
        for step in range(start + 1, t.max_steps + 1):
            tick = time.perf_counter()
            sums: dict[str, float] = {}
            finite = True
            for micro in range(t.grad_accum):
                with plain_module(adapter, plain):  # sources generate/score on one rank at a time: no DDP
                    tb = source.next(step - 1, micro)
                last = micro == t.grad_accum - 1
                with nullcontext() if last else accelerator.no_sync(adapter.denoiser):
                    with accelerator.autocast():
                        err, ref = branch_errors(adapter, tb.branches, objective.needs_reference, tb.reference)
                        loss_vec, metrics = objective(err, ref, tb.extras)
                    loss = loss_vec.float().mean()
                    ok = torch.isfinite(loss).float()
                    finite = finite and accelerator.gather(ok.reshape(1)).min().item() == 1.0
                    if finite:
                        accelerator.backward(loss / t.grad_accum)
                for k, v in micro_metrics(loss, metrics, tb.stats).items():
                    sums[k] = sums.get(k, 0.0) + v / t.grad_accum
            grad_norm = float("nan")
            if bad_loss.check(finite, step):
                if own and world > 1:
                    for _, p in own:
                        if p.grad is not None:
                            p.grad = accelerator.reduce(p.grad, "mean")
                if t.max_grad_norm is not None:
                    grad_norm = accelerator.clip_grad_norm_(all_params, t.max_grad_norm)
                    grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
                optimizer.step()
                check_weights_finite(named_params, step)
                lr_scheduler.step()
                if ema is not None:
                    ema.step(params)
            else:
                warnings.warn(f"step {step}: non-finite loss, step skipped", stacklevel=1)
            optimizer.zero_grad(set_to_none=True)
            source.after_optimizer_step(step)

            keys = sorted(sums)
            reduced = accelerator.reduce(torch.tensor([sums[k] for k in keys], device=accelerator.device), "mean").tolist()
            row = dict(zip(keys, reduced))
            if "e_w" in row and "e_ref_w" in row:
                msg = collapse.update(step, row["e_w"], row["e_ref_w"])
                if msg:
                    warnings.warn(msg, stacklevel=1)
            if "reward_mean" in row:  # online RL: reward vs KL, grad-norm spikes, held-out check
                msg = rl_guard.update(step, {**row, "grad_norm": grad_norm})
                if msg:
                    warnings.warn(msg, stacklevel=1)
            if step % t.log_every == 0 or step == t.max_steps:
                elapsed = time.perf_counter() - tick
                row.update(lr=lr_scheduler.get_last_lr()[0], grad_norm=grad_norm, step_time=elapsed,
                           samples_per_s=t.batch_size * t.grad_accum * world / max(elapsed, 1e-9))
                if "e_w" in row and "e_ref_w" in row and row["e_ref_w"] > 0:
                    row["e_ratio_w"] = row["e_w"] / row["e_ref_w"]
                log.log(step, row)
            bar.set_postfix(loss=f"{row['loss']:.4g}" if math.isfinite(row["loss"]) else "nan", refresh=False)
            bar.update(1)  # redraws at most every 0.1 s
            if t.checkpoint_every and (step % t.checkpoint_every == 0 or step == t.max_steps) and not bad_loss.streak:
                save_checkpoint(step)  # not while losses are NaN: those weights are no state to return to
            if t.sample_every and step % t.sample_every == 0 and main:
                with plain_module(adapter, plain):
                    write_samples(adapter, cfg, run_dir, f"step-{step}")

    # ---- save
    check_ranks_in_sync(accelerator, params, run_dir)
    if main:
        with plain_module(adapter, plain):
            if ema is not None:
                ema.store(params)
                ema.copy_to(params)
            check_weights_finite(named_params, t.max_steps, "final weights")
            checkpoint.save_final(run_dir, adapter.save_final)
            write_samples(adapter, cfg, run_dir, "final")
            write_model_card(run_dir)
            if ema is not None:
                ema.restore(params)
        say(f"done: {run_dir}")
    log.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return run_dir



def train_fresh(cfg: Config) -> float:
    """Train `cfg` into an emptied train.output_dir (benchmarks and demos rerun arms from scratch);
    returns the wall time in seconds."""
    import shutil

    shutil.rmtree(cfg.train.output_dir, ignore_errors=True)
    start = time.perf_counter()
    train(cfg)
    return time.perf_counter() - start

"""The one training loop for every recipe: build -> resume -> loop -> save.

Each step asks the pair source chosen at build time for named branches and hands the policy's and the
reference's errors on them to the objective (genpref.step); the run's parts are built in genpref.run, and
everything a resume restores lives in one TrainState (genpref.train_state). Accelerate provides devices,
mixed precision and multi-process; checkpoints are our own (trainable weights only, crash-safe, loaded
without running pickles).
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import torch

from genpref import build, checkpoint, runlock
from genpref.adapter import Adapter
from genpref.config import Config
from genpref.forward import branch_errors  # noqa: F401  (tests compute errors through genpref.train)
from genpref.guards import Diverged, check_weights_finite, rollback_or_stop
from genpref.modelcard import write_model_card
from genpref.run import Run, build_run
from genpref.rundir import MetricsLog, flat_config, tracker_names, write_run_files
from genpref.step import logged_row, optimizer_step, watch


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
    from tqdm.auto import tqdm

    build.check(cfg)
    t = cfg.train
    run = build_run(cfg)
    start = run.state.load(run.resume_from, run.say) if run.resume_from else 0
    if run.main:
        write_run_files(run.dir, cfg, run.world, str(run.resume_from) if run.resume_from else None)
    log = MetricsLog(run.dir, run.main, tracker_names(t), start if run.resume_from else None, flat_config(cfg))

    with tqdm(total=t.max_steps, initial=start, disable=not run.main, desc="train", dynamic_ncols=True) as bar:
        for step in range(start + 1, t.max_steps + 1):
            started = time.perf_counter()
            row, grad_norm = optimizer_step(run, step)
            watch(run, step, row, grad_norm)
            if step % t.log_every == 0 or step == t.max_steps:
                row = logged_row(run, row, grad_norm, started)
                log.log(step, row)
            bar.set_postfix(loss=f"{row['loss']:.4g}" if math.isfinite(row["loss"]) else "nan", refresh=False)
            bar.update(1)  # redraws at most every 0.1 s
            if t.checkpoint_every and (step % t.checkpoint_every == 0 or step == t.max_steps) and not run.bad_loss.streak:
                run.state.save(step)  # not while losses are NaN: those weights are no state to return to
            if t.sample_every and step % t.sample_every == 0 and run.main:
                with run.unwrapped():
                    write_samples(run.adapter, cfg, run.dir, f"step-{step}")

    finish(run)
    log.close()
    run.accelerator.wait_for_everyone()
    run.accelerator.end_training()
    return run.dir


def finish(run: Run) -> None:
    """Check that the ranks agree, then (main process) write final/ — the EMA weights when train.ema_decay is
    set — with samples and the model card."""
    ema, params = run.state.ema, run.params
    refit = run.state.reward_refit  # a refitted reward head must agree across ranks as well
    check_ranks_in_sync(run.accelerator, params + (list(refit.head.parameters()) if refit else []), run.dir)
    if not run.main:
        return
    with run.unwrapped():
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
        check_weights_finite(run.state.weights.named, run.cfg.train.max_steps, "final weights")
        checkpoint.save_final(run.dir, run.adapter.save_final)
        write_samples(run.adapter, run.cfg, run.dir, "final")
        write_model_card(run.dir)
        if ema is not None:
            ema.restore(params)
    run.say(f"done: {run.dir}")


def train_fresh(cfg: Config) -> float:
    """Train `cfg` into an emptied train.output_dir (benchmarks and demos rerun arms from scratch);
    returns the wall time in seconds."""
    import shutil

    shutil.rmtree(cfg.train.output_dir, ignore_errors=True)
    start = time.perf_counter()
    train(cfg)
    return time.perf_counter() - start

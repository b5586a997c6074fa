"""Every part of a run that must survive a resume sits in its TrainState and round-trips through a checkpoint:
change each part's state, save, load into a freshly built run, compare part by part."""

import inspect
import random

import numpy as np
import torch
from test_resume_state import assert_same

from genpref import train as train_module
from genpref.config import from_dict, merge_overrides
from genpref.run import build_run
from genpref.step import optimizer_step, watch

PARTS = {"weights", "optimizer", "lr_scheduler", "ema", "collapse", "rl_guard", "rollout", "scaler", "source", "rng"}


def cfg_for(out, *overrides):
    data = {
        "model": {"kind": "toy", "lora": {"rank": 4, "alpha": 4, "targets": ["net.0", "net.2"]}},
        "objective": {"name": "dro"},
        "online": {"steps": 4, "states_per_rollout": 3, "batch_size": 3, "sync_every": 2},
        "train": {"output_dir": str(out), "max_steps": 8, "batch_size": 4, "lr": 1e-2, "checkpoint_every": 0,
                  "lr_scheduler": "cosine", "warmup_steps": 2, "ema_decay": 0.9, "collapse_window": 10},
    }  # fmt: skip
    return from_dict(merge_overrides(data, list(overrides)))


def states(run) -> dict:
    """A deep copy of every part's state (tensors cloned), by part."""
    copy = lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else (
        {k: copy(x) for k, x in v.items()} if isinstance(v, dict) else
        type(v)(copy(x) for x in v) if isinstance(v, (list, tuple)) else v)
    return {name: copy(part.state_dict()) for name, part in run.state.parts().items()}


def differs(a, b) -> bool:
    try:
        assert_same(a, b)
    except AssertionError:
        return True
    return False


def with_cpu_scaler(run):
    """CPU runs have no fp16 scaler; a CPU GradScaler stands in for accelerate's CUDA one."""
    run.state.scaler = torch.amp.GradScaler("cpu")
    return run


def test_every_part_round_trips_through_a_checkpoint_into_a_fresh_run(tmp_path):
    run = with_cpu_scaler(build_run(cfg_for(tmp_path / "a")))
    assert set(run.state.parts()) == PARTS
    fresh = states(run)
    for step in (1, 2, 3):  # weights, optimizer moments, schedule, EMA, rollout snapshot (step 2), buffer, window
        row, grad_norm = optimizer_step(run, step)
        watch(run, step, row, grad_norm)
        run.state.rl_guard.update(step, {"reward_mean": 0.1 * step, "kl_ref": 0.01, "grad_norm": grad_norm})
    random.random(), np.random.rand(), torch.rand(1)  # the loop keys its own draws; user code may use the globals
    run.state.scaler.load_state_dict({"scale": 4.0, "growth_factor": 3.0, "backoff_factor": 0.25, "growth_interval": 7,
                                      "_growth_tracker": 2})
    changed = states(run)
    assert all(differs(fresh[k], changed[k]) for k in PARTS), [k for k in PARTS if not differs(fresh[k], changed[k])]
    path = run.state.save(3)

    again = with_cpu_scaler(build_run(cfg_for(tmp_path / "a", f"train.resume={path}")))
    rebuilt = states(again)
    assert [k for k in PARTS if not differs(rebuilt[k], changed[k])] == []  # a fresh run starts elsewhere
    assert again.state.load(again.resume_from, lambda msg: None) == 3
    restored = states(again)
    for k in sorted(PARTS):
        assert_same(changed[k], restored[k], k)


def test_the_run_keeps_no_state_outside_its_train_state(tmp_path):
    """Attributes of the run with state_dict(), other than the networks (whose trainable weights are the
    "weights" part), would be lost on resume."""
    run = build_run(cfg_for(tmp_path / "a"))
    loose = [k for k, v in vars(run).items() if hasattr(v, "state_dict") and not isinstance(v, torch.nn.Module)]
    assert loose == []
    assert {id(p) for p in run.params} <= {id(p) for p in run.state.weights.named.values()}


def test_train_reads_top_to_bottom_in_under_80_lines():
    for fn in (train_module.train, train_module._train):
        assert len(inspect.getsource(fn).splitlines()) < 80, fn.__name__

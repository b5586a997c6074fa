"""Resume restores every piece of state, not only the losses: N steps straight and N/2 + resume + N/2 end
with identical checkpoints — weights, optimizer, LR schedule, EMA weights, the collapse guard's window,
the rollout copy's snapshot, the source's rollout buffer and data position, and the RNG states.

(The fp16 gradient scaler is saved and restored the same way, but CPU runs have no scaler: not tested here.)"""

import shutil

import pytest
import torch

from genpref import checkpoint
from genpref.config import from_dict, merge_overrides
from genpref.rundir import read_metrics
from genpref.train import train

STATEFUL = (
    "train.ema_decay=0.9",  # EMA weights
    "train.collapse_window=10",  # a guard window longer than the first half: must carry over
    "train.collapse_factor=100",
    "online.sync_every=3",  # the rollout copy at step 4 is the snapshot of step 3
)


def cfg_for(out, objective, *overrides):
    data = {
        "model": {"kind": "toy", "lora": {"rank": 4, "alpha": 4, "targets": ["net.0", "net.2"]}},
        "objective": {"name": objective, "beta": 50.0},
        "online": {"steps": 4, "num_samples": 3},
        "train": {"output_dir": str(out), "max_steps": 8, "batch_size": 4, "lr": 1e-2, "checkpoint_every": 4,
                  "tensorboard": False, "lr_scheduler": "cosine", "warmup_steps": 2},
    }  # fmt: skip
    return from_dict(merge_overrides(data, list(overrides)))


def assert_same(a, b, where="state"):
    """Exact, recursive equality of checkpoint contents; names the first differing entry."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.shape == b.shape and torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(set(a) ^ set(b))}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


CASES = {
    # rollout buffer + data position (_Refilling) + rollout snapshot, EMA, guard window
    "dro_buffer": ("dro", "online.states_per_rollout=3", "online.batch_size=3", *STATEFUL),
    # a stateless online source: position from the step, rollout snapshot, implicit-reward annotator
    "bootstrap": ("dpo", "data.source=ai_feedback", "online.annotator=implicit", "online.reward_draws=1", *STATEFUL),
}


@pytest.mark.parametrize("case", list(CASES))
def test_half_resume_half_ends_in_the_same_state_as_straight(tmp_path, case):
    objective, *overrides = CASES[case]
    a, b = tmp_path / "a", tmp_path / "b"
    train(cfg_for(a, objective, *overrides))
    shutil.copytree(a, b)  # b = a's first half: its step-4 checkpoint, nothing after
    shutil.rmtree(b / "checkpoints" / "step-8")
    shutil.rmtree(b / "final")
    metrics = (b / "metrics.jsonl").read_text().splitlines()
    (b / "metrics.jsonl").write_text("\n".join(metrics[:4]) + "\n")
    half = checkpoint.load(b / "checkpoints" / "step-4", 0, 1)[1]
    assert half["ema"] is not None and len(half["collapse"]["e"]) == 4  # what must carry over is there
    assert half["rollout"]["snapshot"] is not None and half["rollout"]["synced_at"] == 3
    train(cfg_for(b, objective, *overrides, "train.resume=latest"))

    assert [r["loss"] for r in read_metrics(a)] == [r["loss"] for r in read_metrics(b)]
    wa, sa, ma = checkpoint.load(a / "checkpoints" / "step-8", 0, 1)
    wb, sb, mb = checkpoint.load(b / "checkpoints" / "step-8", 0, 1)
    assert_same(wa, wb, "weights")
    for key in ("optimizer", "lr_scheduler", "ema", "collapse", "rollout", "step"):
        assert_same(sa[key], sb[key], key)
    assert_same(ma["source"], mb["source"], "source")
    assert_same(ma["rng"], mb["rng"], "rng")
    assert len(sa["collapse"]["e"]) == 8  # the window spans both halves
    if case == "dro_buffer":
        assert len(ma["source"]["buffer"]["prompts"]) > 0 and ma["source"]["drawn"] > 0
    from safetensors.torch import load_file

    assert_same(load_file(a / "final" / "toy.safetensors"), load_file(b / "final" / "toy.safetensors"), "final (EMA) weights")

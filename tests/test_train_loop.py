"""The training loop end to end on the toy adapter: exact resume, accumulation equivalence, guards,
crash-safe checkpoints and the online sources (DRO rollout buffer, SoPo loser selection)."""

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genpref import checkpoint
from genpref.config import from_dict, merge_overrides
from genpref.errors import UserError
from genpref.rundir import read_metrics
from genpref.train import train

ROOT = Path(__file__).resolve().parents[1]
LORA = {"rank": 4, "alpha": 4, "targets": ["net.0", "net.2"]}


def toy_cfg(out: Path, *overrides: str, objective: str = "dpo"):
    data = {
        "model": {"kind": "toy", "lora": dict(LORA)},
        "objective": {"name": objective, "beta": 50.0},
        "online": {"steps": 5},
        "train": {"output_dir": str(out), "max_steps": 8, "batch_size": 8, "lr": 1e-3, "checkpoint_every": 4, "tensorboard": False},
    }
    return from_dict(merge_overrides(data, list(overrides)))


def losses_of(run: Path) -> list[float]:
    return [row["loss"] for row in read_metrics(run)]


def test_resume_through_the_cli_is_exact(tmp_path):
    """8 steps straight == 4 steps, then train.resume=latest for steps 5..8 (constant LR, as typed)."""
    cfg = ROOT / "configs/toy/toy_dpo.yaml"
    common = ["train.checkpoint_every=4", "train.lr_scheduler=constant", "objective.name=dpo"]
    run = lambda out, *extra: subprocess.run(
        [sys.executable, "-m", "genpref", "train", str(cfg), f"train.output_dir={out}", *common, *extra],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    a = run(tmp_path / "a", "train.max_steps=8")
    assert a.returncode == 0, a.stderr
    b1 = run(tmp_path / "b", "train.max_steps=4")
    b2 = run(tmp_path / "b", "train.max_steps=8", "train.resume=latest")
    assert b1.returncode == 0 and b2.returncode == 0, b1.stderr + b2.stderr
    assert "resumed from" in b2.stdout + b2.stderr
    assert losses_of(tmp_path / "a") == losses_of(tmp_path / "b")
    assert len(losses_of(tmp_path / "b")) == 8


def test_resume_mid_run_reproduces_the_tail_with_a_schedule(tmp_path):
    """A cosine schedule with warm-up: resuming from step 4 of an 8-step run repeats steps 5..8 exactly."""
    a = tmp_path / "a"
    train(toy_cfg(a, "train.lr_scheduler=cosine", "train.warmup_steps=2", "train.ema_decay=0.9"))
    b = tmp_path / "b"
    shutil.copytree(a, b)
    shutil.rmtree(b / "checkpoints" / "step-8")
    shutil.rmtree(b / "final")
    train(toy_cfg(b, "train.lr_scheduler=cosine", "train.warmup_steps=2", "train.ema_decay=0.9", "train.resume=latest"))
    assert losses_of(a) == losses_of(b)
    wa = checkpoint.load(a / "checkpoints" / "step-8", 0, 1)[0]
    wb = checkpoint.load(b / "checkpoints" / "step-8", 0, 1)[0]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resumed_lora_weights_are_trained_not_reinitialised(tmp_path):
    out = tmp_path / "r"
    train(toy_cfg(out, "train.max_steps=4"))
    weights = checkpoint.load(out / "checkpoints" / "step-4", 0, 1)[0]
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())  # B starts at 0
    train(toy_cfg(out, "train.max_steps=5", "train.resume=latest"))
    after = read_metrics(out)
    assert [r["step"] for r in after] == [1, 2, 3, 4, 5]
    assert after[4]["e_w"] != after[4]["e_ref_w"]  # the resumed policy differs from the reference


def test_grad_accum_equals_full_batch(tmp_path):
    """2 micro-batches of 4 == 1 batch of 8: same items, same t and ε per item, same update."""
    train(toy_cfg(tmp_path / "full", "train.batch_size=8", "train.grad_accum=1"))
    train(toy_cfg(tmp_path / "accum", "train.batch_size=4", "train.grad_accum=2"))
    for x, y in zip(losses_of(tmp_path / "full"), losses_of(tmp_path / "accum")):
        assert x == pytest.approx(y, abs=2e-5)  # float summation order only
    wa = checkpoint.load(tmp_path / "full" / "checkpoints" / "step-8", 0, 1)[0]
    wb = checkpoint.load(tmp_path / "accum" / "checkpoints" / "step-8", 0, 1)[0]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_existing_run_needs_resume(tmp_path):
    train(toy_cfg(tmp_path / "r", "train.max_steps=4"))
    with pytest.raises(UserError, match="train.resume=latest"):
        train(toy_cfg(tmp_path / "r", "train.max_steps=4"))


def test_non_finite_loss_skips_then_aborts(tmp_path):
    with pytest.raises(UserError, match="NaN/inf for 3 steps"):
        cfg = toy_cfg(tmp_path / "nan", "train.max_bad_steps=3")
        cfg.objective.beta = float("nan")  # past the config's range check: the loop's own guard is under test
        train(cfg)
    rows = read_metrics(tmp_path / "nan")
    assert len(rows) == 2 and all(r["loss"] is None for r in rows)


def test_collapse_guard_stops_and_warns(tmp_path):
    with pytest.raises(UserError, match="collapse guard"):
        train(toy_cfg(tmp_path / "c", "train.collapse_factor=0.5", "train.collapse_action=stop", "train.collapse_window=2"))
    with pytest.warns(UserWarning, match="collapse guard"):
        train(toy_cfg(tmp_path / "w", "train.collapse_factor=0.5", "train.collapse_window=2", "train.max_steps=3"))


def test_incomplete_and_corrupt_checkpoints_are_ignored(tmp_path):
    out = tmp_path / "r"
    train(toy_cfg(out, "train.max_steps=8", "train.keep_checkpoints=5"))
    ckpts = out / "checkpoints"
    shutil.copytree(ckpts / "step-8", ckpts / ".step-12.tmp")  # a save killed before the rename
    shutil.copytree(ckpts / "step-8", ckpts / "step-16")
    (ckpts / "step-16" / "manifest.json").unlink()  # no manifest: incomplete
    shutil.copytree(ckpts / "step-8", ckpts / "step-20")
    with open(ckpts / "step-20" / "weights.safetensors", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")  # same size, wrong bytes
    notes = []
    assert checkpoint.resolve_resume(out, "latest", report=notes.append) == ckpts / "step-8"
    assert any(".step-12.tmp" in n for n in notes)
    assert any("step-16" in n and "no manifest" in n for n in notes)
    assert any("step-20" in n and "checksum" in n for n in notes)


def test_keep_checkpoints_prunes_oldest_only(tmp_path):
    out = tmp_path / "r"
    train(toy_cfg(out, "train.max_steps=8", "train.checkpoint_every=2", "train.keep_checkpoints=2"))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-6", "step-8"]


class _Evil:
    def __reduce__(self):
        return (eval, ("__import__('pathlib').Path('PWNED').write_text('x')",))


def test_malicious_checkpoint_state_is_refused_without_running(tmp_path, monkeypatch):
    out = tmp_path / "r"
    train(toy_cfg(out, "train.max_steps=4"))
    state = out / "checkpoints" / "step-4" / "state.pt"
    state.write_bytes(pickle.dumps({"step": _Evil()}))
    manifest = json.loads((state.parent / "manifest.json").read_text())
    manifest["files"]["state.pt"] = {"size": state.stat().st_size, "sha256": checkpoint._sha256(state)}
    (state.parent / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="state.pt: cannot read this checkpoint state without running code from it"):
        train(toy_cfg(out, "train.max_steps=6", "train.resume=latest"))
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("objective", ["sft", "kto"])
def test_other_objectives_run(tmp_path, objective):
    train(toy_cfg(tmp_path / objective, "train.max_steps=4", objective=objective))
    rows = read_metrics(tmp_path / objective)
    assert len(rows) == 4 and all(r["loss"] is not None for r in rows)
    assert (tmp_path / objective / "final" / "toy.safetensors").is_file()


def test_sft_full_finetune_lowers_error(tmp_path):
    out = tmp_path / "sft"
    train(toy_cfg(out, "model.lora=null", "train.max_steps=60", "train.lr=1e-2", "train.batch_size=32", "train.checkpoint_every=0", objective="sft"))
    e = [r["e_w"] for r in read_metrics(out)]
    assert sum(e[-10:]) / 10 < 0.8 * sum(e[:10]) / 10


def test_sources_key_augmentation_by_stream_position(tmp_path):
    """Datasets with `at(index, key)` get the stream position as key, so augmentation survives resume."""
    from genpref.recipes import OfflinePairs, SourceContext
    from genpref.toy import ToyAdapter, toy_items

    class Keyed(list):
        seen: list = []

        def at(self, index, key):
            self.seen.append((index, key))
            return self[index]

    cfg = toy_cfg(tmp_path, "train.batch_size=4")
    items = Keyed(toy_items("pairs", 16, 0))
    src = OfflinePairs(SourceContext(ToyAdapter(cfg, "cpu"), cfg, torch.device("cpu")), items)
    src.next(step=2, micro=0)
    assert [key for _, key in items.seen] == [8, 9, 10, 11]
    assert [index for index, _ in items.seen] == [src.stream.item(p) for p in range(8, 12)]

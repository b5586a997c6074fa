"""Runs that never lose good state (issue 19), on the toy model through the `genpref` command as typed:
divergence (no NaN saved or resumed, rollback), one run per directory, no silent overwrite, and config
safety (alias bombs, numeric ranges, overrides that do not parse)."""

import json
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from genpref import checkpoint, config, runlock
from genpref.cli import main
from genpref.rundir import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "configs/toy/toy_dpo.yaml"


def genpref(capsys, *args) -> tuple[int, str]:
    """Exit code and everything `genpref` printed (stdout + stderr, progress bars dropped)."""
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    lines = [ln for ln in (out.out + out.err).replace("\r", "\n").splitlines() if ln.startswith("genpref:")]
    return code, "\n".join(lines)


def toy(capsys, out: Path, *extra) -> tuple[int, str]:
    return genpref(capsys, "train", TOY, f"train.output_dir={out}", "train.log_every=1", *extra)


def all_finite(path: Path) -> bool:
    return checkpoint.nonfinite_reason(path) is None


def poison(ckpt: Path) -> None:
    """Write NaN into a checkpoint's weights and re-seal its manifest, as a run without the guard did."""
    weights = {k: torch.full_like(v, float("nan")) for k, v in load_file(str(ckpt / "weights.safetensors")).items()}
    save_file(weights, str(ckpt / "weights.safetensors"))
    manifest = json.loads((ckpt / "manifest.json").read_text())
    f = ckpt / "weights.safetensors"
    manifest["files"]["weights.safetensors"] = {"size": f.stat().st_size, "sha256": checkpoint._sha256(f)}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


# ---------------------------------------------------------------------------------------------- divergence

# lr = 1e6 without clipping: Adam's second moment overflows at step 2 (exp_avg_sq = inf) while the
# weights are still finite; lr = 1e4: the loss is NaN from step 3 on (5 in a row stop the run).
DIVERGE_AT_2 = ("train.lr=1e6", "train.max_grad_norm=null", "train.max_steps=20")
DIVERGE_AT_7 = ("train.lr=1e4", "train.max_steps=20")


def test_diverged_run_saves_no_nan_and_names_the_last_good_checkpoint(tmp_path, capsys):
    code, out = toy(capsys, tmp_path / "r", *DIVERGE_AT_7, "train.checkpoint_every=1", "train.keep_checkpoints=3")
    assert code == 1
    last = out.splitlines()[-1]
    # the loss went NaN at step 3, so step-2's weights (step 3 started from them) are not trusted: step-1 is
    assert re.fullmatch(r"genpref: error: step 7: training diverged \(the loss was NaN/inf for 5 steps in a row.*\); "
                        r"last good checkpoint: \S+/checkpoints/step-1; lower train.lr \(was 10000\) and resume with "
                        r"train.resume=\S+/step-1, or set train.on_divergence=rollback .*", last), last
    kept = sorted((tmp_path / "r/checkpoints").glob("step-*"))
    assert [p.name for p in kept] == ["step-1", "step-2"]  # nothing saved while the loss was NaN; step-1 not pruned
    assert all(all_finite(p) for p in kept)
    assert not (tmp_path / "r/final").exists()


def test_non_finite_optimizer_state_is_never_saved(tmp_path, capsys):
    code, out = toy(capsys, tmp_path / "r", *DIVERGE_AT_2, "train.checkpoint_every=2")
    assert code == 1
    assert "step 2: training diverged (non-finite values in the checkpoint to save: optimizer.state" in out
    assert "no good checkpoint was saved before it" in out
    assert not list((tmp_path / "r/checkpoints").glob("step-*")) if (tmp_path / "r/checkpoints").exists() else True


def test_resume_refuses_nan_checkpoint_and_falls_back_to_newest_finite(tmp_path, capsys):
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert toy(capsys, straight, "train.max_steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=3")[0] == 0
    assert toy(capsys, run, "train.max_steps=4", "train.checkpoint_every=2", "train.keep_checkpoints=3")[0] == 0
    poison(run / "checkpoints/step-4")
    code, out = toy(capsys, run, "train.max_steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=3",
                    "train.resume=latest", "train.overwrite=true")
    assert code == 0, out
    assert re.search(r"refusing \S+step-4: non-finite weights .*removed", out), out
    assert re.search(r"resuming from \S+step-2, the newest finite checkpoint", out), out
    assert [r["loss"] for r in read_metrics(run)] == [r["loss"] for r in read_metrics(straight)]
    assert all(all_finite(p) for p in (run / "checkpoints").glob("step-*"))


def test_explicit_resume_of_nan_checkpoint_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert toy(capsys, run, "train.max_steps=2", "train.checkpoint_every=2")[0] == 0
    poison(run / "checkpoints/step-2")
    code, out = toy(capsys, run, "train.max_steps=4", f"train.resume={run}/checkpoints/step-2")
    assert code == 1 and re.search(r"cannot resume from this checkpoint: non-finite weights", out), out


def test_lowering_lr_on_resume_takes_effect(tmp_path, capsys):
    run = tmp_path / "run"
    assert toy(capsys, run, "train.max_steps=2", "train.checkpoint_every=2")[0] == 0
    code, out = toy(capsys, run, "train.max_steps=4", "train.resume=latest", "train.lr=1e-4")
    assert code == 0 and "learning rates scaled by 0.1" in out, out
    assert [r["lr"] for r in read_metrics(run)] == [1e-3, 1e-3, 1e-4, 1e-4]


def test_rollback_reloads_last_good_checkpoint_with_smaller_lr(tmp_path, capsys):
    run = tmp_path / "run"
    code, out = toy(capsys, run, *DIVERGE_AT_7, "train.max_steps=8", "train.checkpoint_every=1",
                    "train.on_divergence=rollback", "train.rollback_lr_factor=1e-6")
    assert code == 0, out
    assert re.search(r"step 7: training diverged .*: rolling back to \S+/checkpoints/step-1 with train.lr=0.01 \(rollback 1 of 3\)", out), out
    assert re.search(r"resumed from \S+step-1 at step 1", out)
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert [r["lr"] for r in rows] == pytest.approx([1e4] + [0.01] * 7)
    assert all(r["loss"] is not None for r in rows)
    assert all(all_finite(p) for p in (run / "checkpoints").glob("step-*"))


def test_rollback_before_any_checkpoint_restarts_with_smaller_lr(tmp_path, capsys):
    run = tmp_path / "run"
    code, out = toy(capsys, run, *DIVERGE_AT_2, "train.max_steps=4", "train.checkpoint_every=2",
                    "train.on_divergence=rollback", "train.rollback_lr_factor=1e-8")
    assert code == 0, out
    assert "rolling back to the start (no finite checkpoint yet) with train.lr=0.01" in out, out
    assert [r["lr"] for r in read_metrics(run)] == pytest.approx([0.01] * 4)


def test_rollback_gives_up_after_max_rollbacks(tmp_path, capsys):
    code, out = toy(capsys, tmp_path / "r", *DIVERGE_AT_2, "train.checkpoint_every=1", "train.on_divergence=rollback",
                    "train.rollback_lr_factor=0.5", "train.max_rollbacks=2")
    assert code == 1
    assert out.count("rolling back") == 2, out
    assert re.search(r"error: step \d+: training diverged .* raise train.max_rollbacks \(now 2\) after 2 rollbacks$", out), out


@pytest.mark.parametrize("override", ["train.lr=inf", "objective.beta=inf", "train.lr=nan"])
def test_infinite_lr_or_beta_never_exit_0(tmp_path, capsys, override):
    code, out = toy(capsys, tmp_path / "r", override, "train.max_steps=5")
    key = override.split("=")[0]
    assert code == 2 and f"'{key}' must be a finite number > 0" in out, out


def test_infinite_lr_past_the_config_check_stops_at_step_1(tmp_path):
    """The loop's own guard, should a value slip past the config (a program building Config itself)."""
    from genpref.errors import UserError
    from genpref.train import train

    cfg = config.load_config(TOY, [f"train.output_dir={tmp_path / 'r'}", "train.max_steps=5"])
    cfg.train.lr = float("inf")
    with pytest.raises(UserError, match=r"step 1: training diverged \(non-finite weights"):
        train(cfg)
    assert not (tmp_path / "r/final").exists()


# ---------------------------------------------------------------------------------------------- one run per directory


def test_second_run_on_a_locked_directory_exits_2_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    with runlock.hold(run):
        code, out = toy(capsys, run, "train.max_steps=2")
    assert code == 2
    assert re.search(rf"error: {re.escape(str(run))} is in use by process {os.getpid()} ", out), out
    assert not (run / "metrics.jsonl").exists()
    assert toy(capsys, run, "train.max_steps=2")[0] == 0  # released at the end of the block


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / runlock.LOCK_FILE).write_text(dead.stdout)
    code, out = toy(capsys, run, "train.max_steps=2")
    assert code == 0
    assert f"taking over the stale lock of process {dead.stdout.strip()} (no longer running)" in out


def test_two_concurrent_processes_one_wins(tmp_path):
    """Both started together (the issue's case): one trains, the other exits 2 at once."""
    args = [sys.executable, "-m", "genpref", "train", str(TOY), f"train.output_dir={tmp_path / 'r'}", "train.max_steps=40",
            "train.checkpoint_every=5"]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    assert any(re.search(r"is in use by process \d+", err) for _, err in results)
    rows = read_metrics(tmp_path / "r")
    assert [r["step"] for r in rows] == list(range(1, 41))
    assert all(checkpoint.verify(p) is None for p in (tmp_path / "r/checkpoints").glob("step-*"))


def test_finished_run_is_not_overwritten_without_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    assert toy(capsys, run, "train.max_steps=2", "train.checkpoint_every=0")[0] == 0
    before = (run / "metrics.jsonl").read_text(), (run / "final").stat().st_mtime_ns
    for extra in ([], ["train.resume=latest"]):
        code, out = toy(capsys, run, "train.max_steps=3", "train.checkpoint_every=0", *extra)
        assert code == 1 and "already holds a finished run (final/): pass train.overwrite=true to replace it" in out, out
    assert ((run / "metrics.jsonl").read_text(), (run / "final").stat().st_mtime_ns) == before
    code, out = toy(capsys, run, "train.max_steps=3", "train.checkpoint_every=0", "train.overwrite=true")
    assert code == 0 and "removing the previous run's outputs" in out
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]


# ---------------------------------------------------------------------------------------------- checkpoints on disk


def test_directory_left_by_a_kill_during_pruning_is_removed_on_the_next_save(tmp_path, capsys):
    run = tmp_path / "run"
    assert toy(capsys, run, "train.max_steps=4", "train.checkpoint_every=2")[0] == 0
    half = run / "checkpoints/step-1"  # what a kill midway through deleting a checkpoint left behind
    half.mkdir()
    (half / "rank-0.pt").write_bytes(b"partial")
    (run / "checkpoints/.step-0.del").mkdir()
    assert toy(capsys, run, "train.max_steps=6", "train.checkpoint_every=2", "train.resume=latest")[0] == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-4", "step-6"]


# ---------------------------------------------------------------------------------------------- config safety


def alias_bomb(levels: int, width: int = 9) -> str:
    lines = ["eval:", "  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels", [6, 9])
@pytest.mark.parametrize("command", ["validate", "train"])
def test_alias_bomb_is_refused_by_validate_and_train(tmp_path, capsys, levels, command):
    base = TOY.read_text().replace("runs/toy_dpo", str(tmp_path / "run"))
    path = tmp_path / "bomb.yaml"
    path.write_text(base + alias_bomb(levels))
    assert len(path.read_bytes()) < 3000
    code, out = genpref(capsys, command, path)
    assert code == 2 and re.fullmatch(r"genpref: config error: \S+bomb.yaml: YAML aliases .* expand to more than 20000 values.*", out), out
    assert not (tmp_path / "run").exists()


def test_small_anchors_still_work(tmp_path, capsys):
    path = tmp_path / "ok.yaml"
    path.write_text(TOY.read_text() + "eval:\n  a: &p [one, two]\n  b: *p\n")
    assert genpref(capsys, "validate", path)[0] == 0
    assert config.load_config(path).eval == {"a": ["one", "two"], "b": ["one", "two"]}


@pytest.mark.parametrize("override, message", [
    ("train.lr=-1", "'train.lr' must be a finite number > 0, got -1.0"),
    ("train.keep_checkpoints=-3", "'train.keep_checkpoints' must be an integer >= 1, got -3"),
    ("data.empty_prompt_prob=7", "'data.empty_prompt_prob' must be a probability in [0, 1], got 7.0"),
    ("train.checkpoint_every=-1", "'train.checkpoint_every' must be an integer >= 0, got -1"),
    ("data.resolution=0", "'data.resolution' must be an integer >= 8 (pixels), got 0"),
    ("model.lora.rank=0", "'model.lora.rank' must be an integer >= 1, got 0"),
    ("reward.models=[{name: toy, weight: .nan}]", "'reward.models[0].weight' must be a finite number, got nan"),
    ("train.sample_seeds=[1, -2]", "'train.sample_seeds[1]' must be an integer in [0, 2^32), got -2"),
])
def test_validate_checks_numeric_ranges(capsys, override, message):
    code, out = genpref(capsys, "validate", TOY, override)
    assert code == 2 and out == f"genpref: config error: {TOY}: {message}", out


def test_every_numeric_key_has_a_range():
    def numeric(tp) -> bool:
        args = typing.get_args(tp) or (tp,)
        return any(a in (int, float) or numeric(a) for a in args if a is not type(None) and a is not tp) or tp in (int, float)

    def walk(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for name, tp in hints.items():
            inner = [a for a in (typing.get_args(tp) or (tp,)) if hasattr(a, "__dataclass_fields__")]
            if inner:
                yield from walk(inner[0], f"{prefix}{name}.")
            elif numeric(tp):
                yield f"{prefix}{name}"

    keys = set(walk(config.Config))
    assert {"train.lr", "data.empty_prompt_prob", "reward.models.weight", "model.lora.rank"} <= keys
    assert keys - set(config.RANGES) == set()
    assert set(config.RANGES) - keys == set()


def test_unparseable_yaml_override_names_the_key(capsys):
    code, out = genpref(capsys, "validate", TOY, "train.sample_prompts=[unclosed")
    assert code == 2 and out.startswith("genpref: config error: override 'train.sample_prompts': '[unclosed' is not valid YAML"), out
    assert config.parse_override("data.pairs=*.parquet") == (["data", "pairs"], "*.parquet")


def test_validate_checks_the_output_dir_can_be_a_directory(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    for target in (tmp_path / "afile", tmp_path / "afile/run"):
        code, out = genpref(capsys, "validate", TOY, f"train.output_dir={target}")
        assert code == 2 and f"'train.output_dir': {tmp_path / 'afile'} is a file, not a directory" in out, out


def test_disk_full_on_a_write_we_do_not_wrap_is_one_line(tmp_path, capsys, monkeypatch):
    """metrics.jsonl (or a library's own file) hitting ENOSPC: one line naming the file, exit 1."""
    import errno

    from genpref import rundir

    def full(self, step, values):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(rundir.MetricsLog, "log", full)
    code, out = toy(capsys, tmp_path / "r", "train.max_steps=2")
    assert code == 1
    assert out == f"genpref: error: {tmp_path / 'r/metrics.jsonl'}: No space left on device; free space and rerun " \
                  "(train.resume=latest continues from the last checkpoint)", out

"""Crash-safe checkpoints: written under a temporary name, verified by a manifest written last, then
renamed into place, so `train.resume=latest` only ever sees complete ones.

Layout of checkpoints/step-N/: weights.safetensors (trainable parameters by name), state.pt (optimizer,
LR schedule, EMA, step and recipe state shared by all ranks), rank-R.pt (each rank's RNG and data
state), manifest.json (files, sizes, SHA-256; its presence marks the checkpoint complete).
Everything is read back with genpref.safe_load (safetensors, or torch.load(weights_only=True)): no pickle runs code.
Under FSDP / DeepSpeed (sharded weights and optimizer) the model and optimizer go through accelerate's
`save_state` into accelerate/ inside the same temporary directory, covered by the same manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genpref.errors import UserError
from genpref.safe_load import load_weights

MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, save_fn) -> None:
    save_fn(path)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def verify(path: Path) -> str | None:
    """None when the checkpoint at `path` is complete and intact, else the reason it is not."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return "no manifest (interrupted while saving)"
    info = read_manifest(path)
    if info is None:
        return "malformed manifest (not the JSON this program writes)"
    for name, meta in info["files"].items():
        f = path / name
        if not f.is_file():
            return f"missing {name}"
        if f.stat().st_size != meta["size"]:
            return f"{name} has the wrong size"
        if meta.get("sha256") and _sha256(f) != meta["sha256"]:
            return f"{name} is corrupt (checksum mismatch)"
    return None


def read_manifest(path: Path) -> dict | None:
    """The manifest of checkpoint `path`, or None when it is not what `save` writes (truncated, edited,
    another program's): such a checkpoint is skipped like an incomplete one."""
    try:
        info = json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError covers JSON and UTF-8 decoding errors
        return None
    files = info.get("files") if isinstance(info, dict) else None
    if not isinstance(files, dict) or not isinstance(info.get("world_size"), int):
        return None
    if not all(isinstance(m, dict) and isinstance(m.get("size"), int) for m in files.values()):
        return None
    return info


def nonfinite_reason(path: Path) -> str | None:
    """None when every floating-point tensor of checkpoint `path` (weights and shared state: optimizer
    moments, EMA) is finite, else which one is not. Checkpoints written before this check existed, or by a
    run that diverged, can hold NaN: resuming from them would only write more NaN."""
    from genpref.guards import nonfinite_names

    path = Path(path)
    if (path / "weights.safetensors").is_file():
        bad = nonfinite_names(load_file(str(path / "weights.safetensors")).items())
        if bad:
            return f"non-finite weights ({bad[0]})"
    if (path / "state.pt").is_file():
        bad = nonfinite_names(_tensors_in(_load_pt(path / "state.pt")))
        if bad:
            return f"non-finite training state ({bad[0]})"
    return None


def _tensors_in(obj, prefix: str = ""):
    """(dotted name, tensor) for every tensor nested in dicts/lists/tuples of `obj`."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors_in(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors_in(v, f"{prefix}[{i}]")


def complete_checkpoints(run_dir: Path, report=print) -> list[tuple[int, Path]]:
    """(step, path) of complete checkpoints, oldest first; incomplete ones are reported and skipped."""
    root = Path(run_dir) / "checkpoints"
    found = []
    for path in sorted(root.glob("*")) if root.is_dir() else []:
        m = _STEP_DIR.match(path.name)
        if not m:
            if path.name.startswith(".") and report:
                report(f"ignoring incomplete checkpoint {path} (interrupted while saving)")
            continue
        problem = verify(path)
        if problem:
            if report:
                report(f"ignoring checkpoint {path}: {problem}")
            continue
        found.append((int(m.group(1)), path))
    return sorted(found)


def resolve_resume(run_dir: Path, resume: str | None, report=print, remove_nonfinite: bool = False) -> Path | None:
    """The checkpoint to resume from: train.resume=latest takes the newest complete and finite one, saying
    which newer ones it passed over (and, with `remove_nonfinite`, deleting the non-finite ones so that
    pruning never keeps them in place of good ones); an explicit path must be complete and finite."""
    report = report or (lambda msg: None)
    if resume is None:
        return None
    if resume == "latest":
        found = complete_checkpoints(run_dir, report)
        for step, path in reversed(found):
            problem = nonfinite_reason(path)
            if problem is None:
                if step != found[-1][0]:
                    report(f"train.resume=latest: resuming from {path}, the newest finite checkpoint")
                return path
            report(f"train.resume=latest: refusing {path}: {problem}" + ("; removed" if remove_nonfinite else ""))
            if remove_nonfinite:
                _remove(path)
        if not found:
            report(f"train.resume=latest: no complete checkpoint in {Path(run_dir) / 'checkpoints'}; starting fresh")
        else:
            report("train.resume=latest: no finite checkpoint to resume from; starting fresh")
        return None
    path = Path(resume)
    problem = verify(path) if path.is_dir() else "not a directory"
    problem = problem or nonfinite_reason(path)
    if problem:
        raise UserError(f"train.resume={resume}: cannot resume from this checkpoint: {problem}")
    return path


def last_good(run_dir: Path, until: int | None = None) -> Path | None:
    """What a diverged run falls back to: the newest complete checkpoint of step <= `until` whose tensors
    are all finite; when pruning left none that old, the oldest finite one (a run is never restarted
    from scratch while a finite checkpoint exists); None when there is no finite checkpoint at all."""
    finite = [(step, path) for step, path in complete_checkpoints(run_dir, report=None) if nonfinite_reason(path) is None]
    trusted = [path for step, path in finite if until is None or step <= until]
    return trusted[-1] if trusted else (finite[0][1] if finite else None)


def check_shapes(path: Path, weights: dict[str, torch.Tensor], named_params: dict) -> None:
    """UserError when a checkpoint's tensors do not fit the model being resumed: LoRA rank changes are
    named as such (model.lora.rank differs from the run that saved it), other shapes by tensor."""
    for name, p in named_params.items():
        saved = weights.get(name)
        if saved is None or saved.shape == p.shape:
            continue
        if "lora_A" in name or "lora_B" in name:
            axis = 0 if "lora_A" in name else 1
            raise UserError(f"{path}: the checkpoint has LoRA rank {saved.shape[axis]}, this run model.lora.rank="
                            f"{p.shape[axis]}; resume with model.lora.rank={saved.shape[axis]} or start a new train.output_dir")
        raise UserError(f"{path}: {name} has shape {tuple(saved.shape)} in the checkpoint and {tuple(p.shape)} in "
                        "this model (a different model config from the run that saved it)")


def rescale_lr(optimizer, lr_scheduler, saved_lr: float | None, lr: float, report=print) -> None:
    """After a resume: the optimizer and schedule restored the learning rates of the run that saved the
    checkpoint. When train.lr differs from that run's, scale every rate by lr / saved_lr, so that
    lowering train.lr after a divergence (or a rollback) takes effect."""
    if saved_lr is None or saved_lr == lr:
        return
    factor = lr / saved_lr
    for group in optimizer.param_groups:
        group["lr"] *= factor
        if "initial_lr" in group:
            group["initial_lr"] *= factor
    lr_scheduler.base_lrs = [base * factor for base in lr_scheduler.base_lrs]
    lr_scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    if report:
        report(f"train.lr is {lr:g}, the checkpoint was saved with {saved_lr:g}: learning rates scaled by {factor:g}")


# ---------------------------------------------------------------------------------------------- RNG


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------- save/load


def save(
    accelerator,
    run_dir: Path,
    step: int,
    weights: dict[str, torch.Tensor],
    shared_state: dict,
    rank_state: dict,
    keep: int,
    sharded: bool = False,
) -> Path:
    """Every rank must call this (each writes its own `rank_state`: RNG, data position; rank 0 the rest). With `sharded`
    the model and optimizer are saved by accelerate's save_state, which every rank takes part in."""
    from genpref.guards import Diverged, nonfinite_names

    # Never commit NaN: every rank holds the same weights and shared state, so every rank stops here alike.
    bad = nonfinite_names([*weights.items(), *_tensors_in(shared_state)])
    if bad:
        raise Diverged(step, f"non-finite values in the checkpoint to save: {bad[0]}; not saved")
    root = Path(run_dir) / "checkpoints"
    final, tmp = root / f"step-{step}", root / f".step-{step}.tmp"
    accelerator.wait_for_everyone()
    try:
        if accelerator.is_main_process:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        accelerator.wait_for_everyone()
        rank = accelerator.process_index
        if sharded:
            accelerator.save_state(str(tmp / "accelerate"))
        _write(tmp / f"rank-{rank}.pt", lambda p: torch.save(rank_state, p))
        if accelerator.is_main_process and weights:
            _write(tmp / "weights.safetensors", lambda p: save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(p)))
            _write(tmp / "state.pt", lambda p: torch.save(shared_state, p))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            files = {
                str(f.relative_to(tmp)): {"size": f.stat().st_size, "sha256": _sha256(f)}
                for f in sorted(tmp.rglob("*"))
                if f.is_file()
            }
            manifest = {"step": step, "world_size": accelerator.num_processes, "finite": True, "files": files}
            _write(tmp / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=1)))
            if final.exists():
                _remove(final)
            os.rename(tmp, final)
            _fsync_dir(root)
    except (OSError, SafetensorError) as err:  # disk full, quota, permissions: earlier checkpoints stay as they were
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"step {step}: cannot write checkpoint {final} ({getattr(err, 'strerror', None) or err}); nothing was "
                        "half-written and earlier checkpoints are intact: free space and resume with train.resume=latest") from None
    if accelerator.is_main_process:
        prune(run_dir, keep)
    accelerator.wait_for_everyone()
    return final


def _remove(path: Path) -> None:
    """Delete a checkpoint directory so that a kill midway leaves no half-deleted step-N: rename it to a
    hidden name first (atomic), then delete; `prune` removes leftovers of such kills."""
    doomed = path.with_name(f".{path.name}.del")
    shutil.rmtree(doomed, ignore_errors=True)
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def prune(run_dir: Path, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints (at least one: the newest, which `save` has just
    verified finite) and remove what kills left behind: half-deleted `.step-N.del` directories and
    step-N directories without a manifest or with missing files."""
    root = Path(run_dir) / "checkpoints"
    for leftover in root.glob(".step-*.del"):
        shutil.rmtree(leftover, ignore_errors=True)
    for path in root.glob("step-*"):
        problem = verify(path)
        if problem and (problem.startswith("no manifest") or problem.startswith("missing ")):
            _remove(path)
    complete = complete_checkpoints(run_dir, report=None)
    for _, old in complete[: max(0, len(complete) - max(keep, 1))]:
        _remove(old)


def save_final(run_dir: Path, write) -> Path:
    """`write(directory)` (the adapter's save_final) into a temporary directory, renamed to final/ once
    complete: a full disk or a kill never leaves a half-written final/, and a replaced one is swapped whole."""
    run_dir = Path(run_dir)
    final, tmp, old = run_dir / "final", run_dir / ".final.tmp", run_dir / ".final.old"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(str(tmp))
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    except (OSError, SafetensorError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot write {final} ({getattr(err, 'strerror', None) or err}); nothing was half-written and the last "
                        "checkpoint is intact: free space and resume with train.resume=latest") from None
    return final


def _load_pt(path: Path) -> dict:
    return load_weights(path, "checkpoint state")  # a tampered file must not run code


def load(path: Path, rank: int, world: int) -> tuple[dict[str, torch.Tensor], dict, dict | None]:
    """(weights, shared state, this rank's state or None when the world size changed)."""
    path = Path(path)
    weights = load_file(str(path / "weights.safetensors")) if (path / "weights.safetensors").is_file() else {}
    shared = _load_pt(path / "state.pt")
    manifest = read_manifest(path)
    if manifest["world_size"] != world:
        warnings.warn(
            f"{path} was saved by {manifest['world_size']} processes, resuming with {world}: "
            "RNG and online-buffer state start fresh",
            stacklevel=2,
        )
        return weights, shared, None
    return weights, shared, _load_pt(path / f"rank-{rank}.pt")

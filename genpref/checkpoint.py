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
    try:
        info = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        return "unreadable manifest"
    for name, meta in info.get("files", {}).items():
        f = path / name
        if not f.is_file():
            return f"missing {name}"
        if f.stat().st_size != meta["size"]:
            return f"{name} has the wrong size"
        if meta.get("sha256") and _sha256(f) != meta["sha256"]:
            return f"{name} is corrupt (checksum mismatch)"
    return None


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


def resolve_resume(run_dir: Path, resume: str | None, report=print) -> Path | None:
    if resume is None:
        return None
    if resume == "latest":
        found = complete_checkpoints(run_dir, report)
        if not found:
            report(f"train.resume=latest: no complete checkpoint in {Path(run_dir) / 'checkpoints'}; starting fresh")
            return None
        return found[-1][1]
    path = Path(resume)
    problem = verify(path) if path.is_dir() else "not a directory"
    if problem:
        raise UserError(f"train.resume={resume}: cannot resume from this checkpoint: {problem}")
    return path


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
    """Every rank must call this (each writes its own RNG/data state; rank 0 the rest). With `sharded`
    the model and optimizer are saved by accelerate's save_state, which every rank takes part in."""
    root = Path(run_dir) / "checkpoints"
    final, tmp = root / f"step-{step}", root / f".step-{step}.tmp"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    rank = accelerator.process_index
    if sharded:
        accelerator.save_state(str(tmp / "accelerate"))
    _write(tmp / f"rank-{rank}.pt", lambda p: torch.save({**rank_state, "rng": rng_state()}, p))
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
        manifest = {"step": step, "world_size": accelerator.num_processes, "files": files}
        _write(tmp / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=1)))
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
        # Prune only after the new one is complete; never delete the newest complete checkpoint.
        complete = complete_checkpoints(run_dir, report=None)
        for _, old in complete[: max(0, len(complete) - max(keep, 1))]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _load_pt(path: Path) -> dict:
    return load_weights(path, "checkpoint state")  # a tampered file must not run code


def load(path: Path, rank: int, world: int) -> tuple[dict[str, torch.Tensor], dict, dict | None]:
    """(weights, shared state, this rank's state or None when the world size changed)."""
    path = Path(path)
    weights = load_file(str(path / "weights.safetensors")) if (path / "weights.safetensors").is_file() else {}
    shared = _load_pt(path / "state.pt")
    manifest = json.loads((path / MANIFEST).read_text())
    if manifest["world_size"] != world:
        warnings.warn(
            f"{path} was saved by {manifest['world_size']} processes, resuming with {world}: "
            "RNG and online-buffer state start fresh",
            stacklevel=2,
        )
        return weights, shared, None
    return weights, shared, _load_pt(path / f"rank-{rank}.pt")

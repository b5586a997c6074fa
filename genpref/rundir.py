"""The run directory of DESIGN §7: config.yaml, run.json, metrics.jsonl (+ accelerate trackers), written by rank 0."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from genpref.config import Config, ConfigError, dump_yaml
from genpref.errors import UserError

PACKAGES = ("genpref", "torch", "diffusers", "transformers", "accelerate", "peft", "safetensors", "numpy")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the genpref checkout in use (None outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def check_output_dir(output_dir: str) -> None:
    """ConfigError unless train.output_dir is, or can be created as, a writable directory (checked by
    `validate` and before a run builds its model)."""
    path = Path(output_dir).expanduser()
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    needed = "" if existing == path else f" (the parent of {path})"
    if not existing.is_dir():
        raise ConfigError(f"'train.output_dir': {existing} is a file, not a directory{needed}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"'train.output_dir': {existing} is not writable{needed}")


# What a run writes into its directory; train.overwrite=true removes these, nothing else.
RUN_OUTPUTS = ("checkpoints", "final", ".final.tmp", "samples", "tensorboard", "metrics.jsonl", "ranks.json", "run.json", "config.yaml")


def claim_for_fresh_start(run_dir: Path, has_checkpoints: bool, overwrite: bool, remove: bool, say=print) -> None:
    """A fresh (not resumed) run may start in `run_dir` only when no earlier run left checkpoints or a
    final/ there, or when train.overwrite=true (then those outputs are removed, by the caller that has
    `remove`). UserError otherwise: a finished run is never replaced silently."""
    finished = (run_dir / "final").exists()
    if not (finished or has_checkpoints):
        return
    if not overwrite:
        what = "a finished run (final/)" if finished else "checkpoints"
        hint = "pass train.resume=latest to continue, " if has_checkpoints else ""
        raise UserError(f"{run_dir} already holds {what}: {hint}pass train.overwrite=true to replace it, "
                        "or choose another train.output_dir")
    if remove:
        say(f"train.overwrite=true: removing the previous run's outputs in {run_dir}")
        for name in RUN_OUTPUTS:
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()


def write_run_files(run_dir: Path, cfg: Config, world_size: int, resumed_from: str | None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_yaml(cfg, run_dir / "config.yaml")
    info = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "seed": cfg.train.seed,
        "world_size": world_size,
        "resumed_from": resumed_from,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in PACKAGES},
    }
    (run_dir / "run.json").write_text(json.dumps(info, indent=1))


# accelerate's tracker names (accelerate.tracking.LOGGER_TYPE_TO_CLASS) -> the package each one needs
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml", "aim": "aim",
            "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}


def tracker_names(train_cfg) -> list[str]:
    """train.report_to, or [tensorboard] when it is null and train.tensorboard is on."""
    if train_cfg.report_to is not None:
        return list(train_cfg.report_to)
    return ["tensorboard"] if train_cfg.tensorboard else []


def flat_config(cfg: Config) -> dict:
    """{"train.lr": 1e-4, ...}: scalars as they are, lists and mappings as text (trackers store scalars)."""
    out = {}

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, dict) and v:
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)

    walk(dataclasses.asdict(cfg), "")
    return out


def start_tracker(name: str, run_dir: Path, config: dict | None):
    """An accelerate tracker writing under the run directory: tensorboard to <run>/tensorboard, wandb to
    <run>/wandb (project genpref, run name = the directory's name), others with the run's name."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    from genpref.errors import UserError

    cls = LOGGER_TYPE_TO_CLASS[name]
    if name == "tensorboard":
        tracker = cls("tensorboard", str(run_dir))
    elif name == "wandb":
        tracker = cls("genpref", name=run_dir.name, dir=str(run_dir))
    elif cls.requires_logging_directory:
        tracker = cls(run_dir.name, str(run_dir))
    else:
        tracker = cls(run_dir.name)
    try:
        tracker.start()
    except ImportError as err:
        raise UserError(f"train.report_to: {name} needs the package {TRACKERS[name]!r} ({err})") from None
    if config and name != "tensorboard":  # tensorboard's hparams want a metric of their own; config.yaml holds it all
        tracker.store_init_configuration(config)
    return tracker


class MetricsLog:
    """One JSON object per logged step in metrics.jsonl, always, plus the accelerate trackers named in
    train.report_to (TensorBoard, Weights & Biases, MLflow, ...). No-op off rank 0."""

    def __init__(self, run_dir: Path, enabled: bool, trackers=("tensorboard",), resume_step: int | None = None,
                 config: dict | None = None):  # fmt: skip
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.trackers = []
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            # Drop what was logged after the checkpoint we resume from: those steps run again.
            kept = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        elif resume_step is None:
            self.path.write_text("")
        self.trackers = [start_tracker(name, run_dir, config) for name in trackers]

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: (v if math.isfinite(v) else None) for k, v in values.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        finite = {k: float(v) for k, v in values.items() if math.isfinite(v)}
        for tracker in self.trackers:
            tracker.log(finite, step=step)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def metric_curves(run_dir: Path, keys) -> dict[str, list[list[float]]]:
    """{key: [[step, value], ...]} for each of `keys` that the run logged (for plots in reports)."""
    rows = read_metrics(run_dir)
    return {k: [[r["step"], r[k]] for r in rows if r.get(k) is not None] for k in keys if any(k in r for r in rows)}


def generated_samples(run_dir: Path) -> dict:
    """{"generated_samples": N} for runs whose source logs its online generation count, else {}."""
    rows = [r for r in read_metrics(run_dir) if r.get("generated") is not None]
    return {"generated_samples": int(rows[-1]["generated"])} if rows else {}

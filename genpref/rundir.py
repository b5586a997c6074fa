"""The run directory of DESIGN §7: config.yaml, run.json, metrics.jsonl (+ TensorBoard), written by rank 0."""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from genpref.config import Config, dump_yaml

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


class MetricsLog:
    """One JSON object per logged step in metrics.jsonl (+ TensorBoard scalars). No-op off rank 0."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, resume_step: int | None):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            # Drop what was logged after the checkpoint we resume from: those steps run again.
            kept = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        elif resume_step is None:
            self.path.write_text("")
        self.file = open(self.path, "a")  # kept open: reopening it every step cost more than the write
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"), max_queue=100)
            except ImportError:
                self.writer = None

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: (v if math.isfinite(v) else None) for k, v in values.items()}}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()  # whole lines on disk at every step: a killed run keeps what it logged
        if self.writer:
            self._tensorboard(step, {k: v for k, v in values.items() if math.isfinite(v)})

    def _tensorboard(self, step: int, values: dict[str, float]) -> None:
        """All of a step's scalars in one event: add_scalar per key queued one event each (~0.1 ms apiece)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        file_writer = getattr(self.writer, "_get_file_writer", None)
        if file_writer is None:  # a torch without it: one event per scalar
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)
            return
        summary = Summary(value=[Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()])
        file_writer().add_summary(summary, step)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
        if self.writer:
            self.writer.close()


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

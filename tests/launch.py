"""Run `python -m genpref ...` as one process or under `accelerate launch` with N CPU processes (gloo), the
way the README documents for CPU-only machines."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).with_name("accelerate")


def genpref(args: list[str], procs: int = 1, timeout: int = 600) -> subprocess.CompletedProcess:
    if procs == 1:
        cmd = [sys.executable, "-m", "genpref", *args]
    else:
        cmd = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", str(procs), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "genpref", *args]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "ACCELERATE_USE_CPU": "1"},
                         timeout=timeout)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out

"""Run `python -m genpref ...` as one process or under `accelerate launch` with N CPU processes (gloo), the
way the README documents for CPU-only machines.

Every process runs on ONE thread, whatever the process count: CPU kernels (oneDNN convolutions, GEMMs) split
their reductions by thread count, so a 2-thread single process and two 1-thread processes round differently
(1/255 in a few pixels of a PNG on some CPUs). At equal threads per process the results are bit-identical."""

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
               "--num_cpu_threads_per_process", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "genpref", *args]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out

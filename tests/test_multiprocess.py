"""Two CPU processes (gloo) through `accelerate launch`, as the README documents, against one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).with_name("accelerate")


def _train(out: Path, procs: int, batch: int):
    args = [str(ROOT / "configs/toy/toy_dpo.yaml"), f"train.output_dir={out}", f"train.batch_size={batch}", "train.max_steps=12"]
    if procs == 1:
        cmd = [sys.executable, "-m", "genpref", "train", *args]
    else:
        cmd = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", str(procs), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "genpref", "train", *args]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"}
    out_ = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out_.returncode == 0, out_.stderr[-3000:]


@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate CLI not installed")
def test_two_processes_match_one(tmp_path):
    _train(tmp_path / "one", 1, 8)
    _train(tmp_path / "two", 2, 4)  # same global batch
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["world_size"] == 2
    ranks = json.loads((tmp_path / "two" / "ranks.json").read_text())
    assert ranks == {"world_size": 2, "weights_identical": True}
    rows = lambda p: [json.loads(ln) for ln in (p / "metrics.jsonl").read_text().splitlines()]
    one, two = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert len(one) == len(two) == 12
    for a, b in zip(one, two):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)

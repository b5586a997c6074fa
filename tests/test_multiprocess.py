"""Two CPU processes (gloo) through `accelerate launch`, as the README documents, against one process."""

import json
from pathlib import Path

import pytest
from launch import ACCELERATE, ROOT, genpref


def _train(out: Path, procs: int, batch: int):
    genpref(["train", str(ROOT / "configs/toy/toy_dpo.yaml"), f"train.output_dir={out}", f"train.batch_size={batch}",
             "train.max_steps=12"], procs, timeout=300)  # fmt: skip


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

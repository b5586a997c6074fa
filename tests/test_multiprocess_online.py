"""Online sources under 2 CPU processes (gloo, `accelerate launch`), against 1 process.

The documented relation (README, "Several processes and GPUs"): W processes of batch B equal ONE process of
batch B with grad_accum W — same items, same online samples, same t and ε, same update. They do not equal
one process of batch W·B: online samples are drawn per micro-batch from a generator keyed by that
micro-batch's first stream position, so a batch of 8 and two batches of 4 draw different samples (and a
DRO rank refills its own rollout buffer)."""

import json
from pathlib import Path

import pytest
from launch import ACCELERATE, ROOT, genpref

ONLINE = {
    "ai_feedback": ["data.source=ai_feedback", "online.num_samples=2", 'reward.models=[{"name": "toy"}]'],
    # one kept state per rollout and refills of one micro-batch: each micro-batch consumes exactly its own rollouts
    "dro": ["objective.name=dro", "online.states_per_rollout=1"],
}


def _train(out: Path, procs: int, *extra: str) -> list[dict]:
    genpref(["train", str(ROOT / "configs/toy/toy_dpo.yaml"), f"train.output_dir={out}", "train.max_steps=3",
             "train.checkpoint_every=0", "online.steps=3", *extra], procs, timeout=300)  # fmt: skip
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate CLI not installed")
@pytest.mark.parametrize("source", list(ONLINE))
def test_two_processes_equal_one_with_grad_accum_two(tmp_path, source):
    one = _train(tmp_path / "one", 1, "train.batch_size=4", "train.grad_accum=2", *ONLINE[source])
    two = _train(tmp_path / "two", 2, "train.batch_size=4", *ONLINE[source])
    assert json.loads((tmp_path / "two" / "ranks.json").read_text()) == {"world_size": 2, "weights_identical": True}
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["e_w"] == pytest.approx(b["e_w"], abs=1e-5) and a["e_l"] == pytest.approx(b["e_l"], abs=1e-5)
    if source != "ai_feedback":
        return
    # and the relation that does NOT hold: one process of the same global batch draws other samples
    full = _train(tmp_path / "full", 1, "train.batch_size=8", *ONLINE[source])
    drawn = lambda row: (row["e_w"], row["e_ref_l"])  # errors on what was generated (DRO: the rollout states' t)
    assert drawn(full[0]) != pytest.approx(drawn(two[0]), rel=1e-6, abs=1e-12)

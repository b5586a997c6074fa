"""genpref.demo.run_bench with a stand-in task: arm-specific overrides reach only their arm's training, and
the rows are paired against SFT by seed."""

import types
from pathlib import Path

import pytest

from genpref.demo import BenchSetup, run_bench


def fake_task(trained: list):
    """A task part whose arms 'train' by recording their overrides; held-out accuracy = seed/10 (+0.1 for nft)."""

    def bench_setup(out_dir: Path, setting: str) -> BenchSetup:
        def train(config: str, run: Path, overrides: dict) -> float:
            trained.append((config, dict(overrides)))
            return 1.0

        def score(arm: str, tag: str, seed: int, run: Path) -> dict:
            return {"heldout_accuracy": seed / 10 + (0.1 if arm != "sft" else 0.0), "train_accuracy": 0.5}

        focus = lambda arm: {"data.prompts": "heldout.txt"} if arm == "focus" and setting == "heldout_prompts" else {}
        return BenchSetup(lambda seed: {"train.seed": seed, "data.prompts": "all.txt"}, train, score,
                          lambda: {"objective": "base", "seed": None, "heldout_accuracy": 0.0}, {}, Path("base"),
                          arm_overrides=focus)

    return types.SimpleNamespace(TASK="fake", ARMS={"sft": "sft.yaml", "nft": "nft.yaml", "focus": "nft.yaml"},
                                 CURVES=(), FINAL_CURVES=(), SUMMARY_METRICS=("heldout_accuracy", "heldout_diff_vs_sft"),
                                 bench_setup=bench_setup, __name__="fake.demo")


def test_arm_overrides_reach_only_their_arm_and_only_in_their_setting(tmp_path):
    trained: list = []
    result = run_bench(fake_task(trained), tmp_path, seeds=[0, 1], arms=["sft", "nft", "focus"], setting="heldout_prompts")
    prompts = {(cfg, o["train.seed"], o["data.prompts"]) for cfg, o in trained}
    assert prompts == {("sft.yaml", 0, "all.txt"), ("sft.yaml", 1, "all.txt"), ("nft.yaml", 0, "all.txt"),
                       ("nft.yaml", 1, "all.txt"), ("nft.yaml", 0, "heldout.txt"), ("nft.yaml", 1, "heldout.txt")}
    focus = next(s for s in result["summary"] if s["objective"] == "focus")
    assert focus["heldout_diff_vs_sft"] == pytest.approx(0.1)
    trained.clear()
    run_bench(fake_task(trained), tmp_path / "train", seeds=[0], arms=["focus"], setting="train_prompts")
    assert [o["data.prompts"] for _, o in trained] == ["all.txt"]

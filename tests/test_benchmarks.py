"""benchmarks/gpu_check.py on the CPU with the tiny size, so the GPU check cannot rot before a card runs it."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_gpu_check_smoke_run_on_cpu(capsys):
    gpu_check = load("gpu_check")
    rows = {r["case"]: r for r in gpu_check.main(["--device", "cpu", "--size", "tiny", "--steps", "1", "--warmup", "0"])}
    assert set(rows) == {c.name for c in gpu_check.CASES} | {"motion mdm dro bf16"}
    ran = {k: r for k, r in rows.items() if "skipped" not in r}
    assert set(ran) == {"dpo bf16 sdpa", "dpo fp16 sdpa", "dro bf16 sdpa", "dro fp16 sdpa", "dpo bf16 sdpa+checkpointing",
                        "motion mdm dro bf16"}
    assert all(r["ok"] for r in ran.values()), {k: r["err_rel"] for k, r in ran.items()}
    # checkpointing recomputes activations for the backward: the forward, hence the loss, is unchanged
    assert rows["dpo bf16 sdpa+checkpointing"]["loss"] == rows["dpo bf16 sdpa"]["loss"]
    assert 0 < rows["dpo bf16 sdpa"]["err_rel"] < gpu_check.TOLERANCE["bf16"]  # half precision differs, a little
    table = capsys.readouterr().out
    assert "| dpo bf16 sdpa |" in table and "skipped: compile is checked on CUDA" in table


def test_rl_step_counts_the_forwards_of_each_phase(tmp_path):
    rl_step = load("rl_step")
    small = ["online.batch_size=1", "online.group_size=2", "online.steps=3", "train.batch_size=2"]
    rows = {r["arm"]: r for r in rl_step.main(["--arms", "sft", "nft", "--steps", "1", "--work", str(tmp_path), "--set", *small])}
    assert rows["sft"]["train_forward_rows"] == 2 and rows["sft"]["generate_forward_rows"] == 0
    # NFT rolls out 1 prompt × 2 samples × 3 DDIM steps for its 2-row step
    assert rows["nft"]["generate_forward_rows"] == 1 * 2 * 3 and rows["nft"]["generated_samples"] == 2
    # sampling policy's prediction 2 + policy on the shared positive/negative inputs 2 + expert anchor 2
    assert rows["nft"]["train_forward_rows"] == 6
    assert rows["nft"]["trained_rows"] == 4 and rows["nft"]["forwards_per_trained_row"] == (6 + 6) / 4

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

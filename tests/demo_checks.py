"""Checks shared by the image and motion demo tests: what every half of `genpref demo` must return."""

import json


def check_demo_half(metrics: dict, out, task: str, recipe: str, n: int) -> None:
    """Held-out accuracy of base / recipe / SFT on n samples each, inside their intervals; the three paired
    comparisons; curves starting at step 1; metrics.json written."""
    assert metrics["task"] == task and metrics["recipe"] == recipe
    accuracy = {r["model"]: r for r in metrics["results"] if r["metric"] == "heldout_accuracy"}
    assert set(accuracy) == {"base", recipe, "sft"} and all(r["n"] == n for r in accuracy.values())
    for r in accuracy.values():
        assert r["ci95"][0] <= r["value"] <= r["ci95"][1]
    pairs = {(p["a"], p["b"]) for p in metrics["paired"] if p["metric"] == "heldout_accuracy"}
    assert pairs == {(recipe, "base"), ("sft", "base"), (recipe, "sft")}
    assert metrics["curves"][recipe]["loss"][0][0] == 1
    assert json.loads((out / "metrics.json").read_text())["recipe"] == recipe


def check_bench_resumes(bench, out, **kwargs) -> dict:
    """bench(out, seeds=[0], steps=1, arms=["sft", "kto"], **kwargs): one base row, every arm's difference
    paired against it, a summary per arm in order; a second call reuses the saved rows without training."""
    import pytest

    result = bench(out, seeds=[0], steps=1, arms=["sft", "kto"], **kwargs)
    rows = {r["objective"]: r for r in result["rows"]}
    assert set(rows) == {"base", "sft", "kto"}
    for arm in ("sft", "kto"):
        r = rows[arm]
        assert r["heldout_diff_vs_base"] == pytest.approx(r["heldout_accuracy"] - rows["base"]["heldout_accuracy"])
        assert 0.0 <= r["heldout_win_rate_vs_base"] <= 1.0
    assert [s["objective"] for s in result["summary"]] == ["sft", "kto"]
    (out / "runs").rename(out / "runs-moved")
    assert bench(out, seeds=[0], steps=1, arms=["sft", "kto"], **kwargs)["rows"] == result["rows"]
    return result

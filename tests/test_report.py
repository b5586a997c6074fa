"""The demo report is self-contained: every picture embedded, tables with CIs, curves drawn."""

import json
import re

from PIL import Image

from genpref.report import write_report


def fake_half(root, name):
    (root / name).mkdir(parents=True)
    Image.new("RGB", (8, 8), (255, 0, 0)).save(root / name / "grid.png")
    frames = [Image.new("RGB", (8, 8), (0, 0, c)) for c in (0, 128, 255)]
    frames[0].save(root / name / "anim.gif", save_all=True, append_images=frames[1:])
    return {
        "task": "shapes", "recipe": "dro", "settings": {"steps": 100, "lr": 1e-4, "dro": {"margin": 0.001}},
        "results": [{"model": "base", "metric": "heldout_accuracy", "value": 0.07, "ci95": [0.05, 0.11], "n": 240},
                    {"model": "dro", "metric": "heldout_accuracy", "value": 0.2, "ci95": [0.15, 0.25], "n": 240}],
        "paired": [{"a": "dro", "b": "base", "metric": "heldout_accuracy", "diff": 0.13, "ci95": [0.09, 0.18], "n": 240}],
        "curves": {"dro": {"loss": [[1, 0.7], [2, 0.6]], "implicit_acc": [[1, 0.5], [2, 0.6]]}},
        "figures": [{"title": "before/after", "path": f"{name}/grid.png"}, {"title": "motion", "path": f"{name}/anim.gif"}],
    }


def test_report_embeds_everything(tmp_path):
    results = {"image": fake_half(tmp_path, "image"), "motion": {"task": "moves", "error": "boom"}}
    page = write_report(tmp_path, results, {"seed": 0}).read_text()
    assert page.count("data:image/png;base64,") == 2  # the grid and the curves
    assert page.count("data:image/gif;base64,") == 1
    assert not re.search(r"src=['\"](?!data:)", page)  # no external files
    assert "+0.130" in page and "[0.090, 0.180]" in page and "class='pos'" in page
    assert "failed: boom" in page
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["image"]["paired"][0]["diff"] == 0.13 and saved["meta"] == {"seed": 0}
    # settings as a table, nested ones as dotted names; small settings are not rounded to 0
    assert "<code>lr</code></td><td class='l'>0.0001<" in page and "<code>dro.margin</code></td><td class='l'>0.001<" in page


def test_demo_collects_a_half_and_fails_clearly_after_writing_the_report(tmp_path, monkeypatch):
    import sys
    import types

    import pytest

    from genpref import demo
    from genpref.errors import UserError

    good = types.ModuleType("fake_good_half")
    good.run_demo = lambda out, seed, progress: {**fake_half(tmp_path / "demo", "image"), "seed_seen": seed}
    bad = types.ModuleType("fake_bad_half")

    def broken(out, seed, progress):
        raise RuntimeError("no weights\nsecond line")

    bad.run_demo = broken
    monkeypatch.setitem(sys.modules, "fake_good_half", good)
    monkeypatch.setitem(sys.modules, "fake_bad_half", bad)
    monkeypatch.setattr(demo, "parts", lambda: {"image": "fake_good_half", "motion": "fake_bad_half"})
    report = demo.run_demo("image", tmp_path / "demo", seed=3)
    saved = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert report.is_file() and saved["image"]["seed_seen"] == 3 and saved["meta"]["seed"] == 3
    with pytest.raises(UserError, match="motion half failed \\(RuntimeError: no weights\\)"):
        demo.run_demo("motion", tmp_path / "demo2")
    assert "failed: RuntimeError: no weights" in (tmp_path / "demo2" / "report.html").read_text()
    with pytest.raises(Exception, match="unknown part 'sound'"):
        demo.run_demo("sound", tmp_path / "demo3")


def test_bench_quality_writes_tables_and_uses_the_runs_directory(tmp_path, monkeypatch):
    import sys
    import types

    from genpref import demo

    seen = {}

    def bench(task, runs, seeds, steps, arms, setting):
        assert task is half
        seen["runs"], seen["seeds"], seen["arms"], seen["setting"] = runs, seeds, arms, setting
        return {"task": "shapes", "rows": [{"objective": "base", "seed": None, "heldout_accuracy": 0.25}],
                "summary": [{"objective": "dro", "runs": 3, "heldout_accuracy": 0.5, "heldout_accuracy_ci95": [0.4, 0.6]}]}

    half = types.ModuleType("fake_bench_half")
    monkeypatch.setitem(sys.modules, "fake_bench_half", half)
    monkeypatch.setattr(demo, "parts", lambda: {"image": "fake_bench_half"})
    monkeypatch.setattr(demo, "run_bench", bench)
    written = demo.bench_quality("image", tmp_path / "results", seeds=(0, 1, 2), runs_dir=tmp_path / "runs",
                                 arms=["grpo", "sft"], setting="heldout_prompts")
    assert seen == {"runs": tmp_path / "runs" / "image", "seeds": [0, 1, 2], "arms": ["grpo", "sft"], "setting": "heldout_prompts"}
    table = (tmp_path / "results" / "quality-image-heldout_prompts.md").read_text()
    assert "setting heldout_prompts" in table
    assert "base model: heldout accuracy 0.250" in table and "| dro | 3 | 0.500 [0.400, 0.600] |" in table
    assert json.loads(written[0].read_text())["summary"][0]["objective"] == "dro"

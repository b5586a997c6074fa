"""`genpref report RUN [RUN ...]` and the readings, glossary and interval notes shared with the demo report."""

import json
import math
import re

import yaml
from PIL import Image

from genpref.cli import main
from genpref.glossary import TERMS, term
from genpref.report import curve_reading, result_readings, write_report

LN2 = math.log(2)


def fake_run(root, name, losses, lr, eval_report=None):
    run = root / name
    (run / "samples").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"kind": "tiny-sd"}, "objective": {"name": "dpo"},
                                                     "train": {"lr": lr, "max_steps": len(losses)}}))
    (run / "run.json").write_text(json.dumps({"started": "2026-01-02T03:04:05", "world_size": 1, "seed": 0}))
    rows = [{"step": i + 1, "loss": v, "implicit_acc": 0.5 + 0.01 * i, "e_ratio_w": 1.0 + 0.1 * i} for i, v in enumerate(losses)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for tag, colour in (("step-2", (255, 0, 0)), ("step-10", (0, 255, 0)), ("final", (0, 0, 255))):
        Image.new("RGB", (16, 8), colour).save(run / "samples" / f"{tag}.png")
        (run / "samples" / f"{tag}.txt").write_text("a red square\n")
    if eval_report:
        (run / "eval").mkdir()
        (run / "eval" / "eval.json").write_text(json.dumps(eval_report))
    return run


MOTION_EVAL = {"convention": "t2m", "replications": 2, "rows_used": 32, "items": 40, "group_size": 32, "root": "/data/h3d",
               "metrics": {"R_precision_top1": {"mean": 0.41, "ci95": 0.02}, "FID": {"mean": 3.5, "ci95": 0.4}},
               "real": {"R_precision_top1": {"mean": 0.5, "ci95": 0.01}},
               "sampler": {"solver": "ddim", "steps": 3, "guidance": 1.5, "from": {"solver": "eval.solver"}}}


def test_two_runs_side_by_side(tmp_path):
    flat = fake_run(tmp_path, "flat", [LN2] * 12, 1e-4, MOTION_EVAL)
    moving = fake_run(tmp_path / "other", "moving", [LN2 - 0.02 * i for i in range(12)], 1e-3)
    out = tmp_path / "cmp.html"
    assert main(["report", str(flat), str(moving), "--out", str(out)]) == 0
    page = out.read_text()
    assert not re.search(r"src=['\"](?!data:)", page)  # self-contained
    assert page.count("data:image/png;base64,") == 1 + 6  # the curves + 3 sampling points × 2 runs
    # readings: the flat ln 2 loss of one run, nothing about the other run's moving loss
    assert "flat: the loss stays at ln 2 = 0.693 over all 12 logged steps (mean of the first 10% of steps 0.6931, of the last 10% 0.6931)" in page
    assert "moving: the loss stays" not in page
    # samples over training: columns in step order, one row per run
    assert re.search(r"<th>step 2</th><th>step 10</th><th>final</th>", page)
    # the settings that differ come first, highlighted
    assert re.search(r"<tr class='diff'><td class='l'><code>train.lr</code></td><td class='l'>0.0001</td><td class='l'>0.001</td>", page)
    assert "<code>train.max_steps</code>" in page and "2026-01-02T03:04:05" in page
    # eval tables: T2M metrics with the real motions, the test split and the sampler used
    assert "0.4100 ± 0.0200" in page and "0.5000 ± 0.0100" in page and "/data/h3d" in page
    assert "<code>sampler.steps</code></td><td class='l'>3<" in page
    assert "not evaluated: <code>genpref eval" in page
    # a glossary entry for every metric on the page
    for name in ("loss", "implicit_acc", "e_ratio_w", "R_precision_top1", "FID"):
        assert f"<tr><td class='l'><code>{name}</code></td><td class='l'>{term(name).label}</td>" in page


def test_report_refuses_what_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 1
    assert "nope: not found; expected a run directory" in capsys.readouterr().err


def test_curve_readings():
    steps = lambda values: [[i + 1, v] for i, v in enumerate(values)]
    noisy = [LN2 + (0.006 if i % 2 else -0.006) for i in range(400)]  # ±0.9% step noise around ln 2, no trend
    assert curve_reading("r", "loss", steps(noisy)).startswith(
        "r: the loss stays at ln 2 = 0.693 over all 400 logged steps (mean of the first 10% of steps 0.6931, of the last 10% 0.6931)")
    assert curve_reading("r", "implicit_acc", steps([0.5] * 10)) == ("r: implicit accuracy (implicit_acc) stays within 1% "
        "over all 10 logged steps (mean of the first 10% of steps 0.5, of the last 10% 0.5): it does not move.")
    assert curve_reading("r", "loss", steps([0.7, 0.6, 0.5, 0.4, 0.3])) is None  # it moves
    assert curve_reading("r", "loss", steps([LN2] * 10 + [0.60] * 2)) is None  # the last 10% moved by 13%
    assert curve_reading("r", "lr", steps([1e-4] * 10)) is None  # a constant lr is no news
    assert curve_reading("r", "loss", steps([LN2] * 3)) is None  # too short to say


def test_result_readings_name_what_got_worse():
    rows = [{"model": "base", "metric": "test_fid", "value": 2.37, "ci95": None, "n": 2},
            {"model": "sopo", "metric": "test_fid", "value": 3.10, "ci95": None, "n": 2},
            {"model": "sft", "metric": "test_fid", "value": 2.0, "ci95": None, "n": 2}]
    paired = [{"a": "sopo", "b": "sft", "metric": "heldout_accuracy", "diff": -0.1, "ci95": [-0.15, -0.05], "n": 360},
              {"a": "sopo", "b": "base", "metric": "heldout_accuracy", "diff": 0.09, "ci95": [0.05, 0.13], "n": 360},
              {"a": "sft", "b": "base", "metric": "test_mm_dist", "diff": 0.2, "ci95": [-0.1, 0.5], "n": 341}]
    lines = result_readings(rows, paired)
    assert lines == [
        "sopo is worse than sft on held-out accuracy: -0.100 [-0.150, -0.050], n = 360 (higher is better; the 95% "
        "interval excludes 0).",
        "test FID is worse for sopo (3.100) than for the base (2.370; lower is better). No interval: the value is the "
        "mean of n = 2 evaluation passes, so the size of the change is not established.",
    ]


def test_demo_report_explains_intervals_names_and_pictures(tmp_path):
    (tmp_path / "motion").mkdir()
    Image.new("RGB", (600, 200), (0, 0, 0)).save(tmp_path / "motion" / "anim.gif")
    Image.new("RGB", (64, 64), (0, 0, 0)).save(tmp_path / "motion" / "grid.png")
    result = {"task": "moves", "recipe": "sopo", "settings": {"sopo": {"tau": 0.45}},
              "results": [{"model": "base", "metric": "heldout_accuracy", "value": 0.4, "ci95": [0.35, 0.45], "n": 360},
                          {"model": "sopo", "metric": "test_fid", "value": 3.1, "ci95": None, "n": 2},
                          {"model": "base", "metric": "test_fid", "value": 2.4, "ci95": None, "n": 2}],
              "paired": [], "curves": {"sopo": {"loss": [[s, LN2] for s in range(1, 401)]}},
              "figures": [{"title": "animation", "path": "motion/anim.gif"}, {"title": "grid", "path": "motion/grid.png"}]}
    page = write_report(tmp_path, {"motion": result}, {"started": "09:00", "finished": "09:04"}).read_text()
    assert "Wilson score interval of a proportion over the n samples" in page
    assert "none: FID is one number per evaluation pass over the whole test split, so n counts passes" in page
    assert "held-out accuracy<br><code>heldout_accuracy</code>" in page  # a name for people beside the raw one
    assert "sopo: the loss stays at ln 2 = 0.693 over all 400 logged steps" in page
    assert "test FID is worse for sopo (3.100) than for the base (2.400" in page
    assert "<code>sopo.tau</code></td><td class='l'>0.45<" in page  # settings as a table
    # the wide animation (captions drawn in) scales smoothly; the small grid is doubled with square pixels
    assert re.search(r"<img class='large' alt='animation'", page)
    assert re.search(r"<img class='small' width='128' alt='grid'", page)
    assert "image-rendering: pixelated" in page and "figure img.small { image-rendering: pixelated; }" in page


def test_every_logged_metric_name_has_a_glossary_entry():
    """The names the objectives and sources log (genpref/objectives.py, recipes.py, rl.py) and the train loop adds."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1] / "genpref"
    text = "".join((root / f).read_text() for f in ("objectives.py", "recipes.py", "rl.py"))
    logged = set(re.findall(r'"([a-z_0-9]+)": [^,]*?\.(?:mean|min|max|item)\(\)', text))
    logged |= set(re.findall(r'"([a-z_]+(?:_s|ed))": (?:time\.perf_counter|float\()', text)) | set(re.findall(r'metrics\["([a-z_]+)"\]', text))
    logged |= set(re.findall(r'stats\["([a-z_]+)"\]', text)) | {"lr", "grad_norm", "step_time", "samples_per_s", "e_ratio_w"}
    assert {"loss", "implicit_acc", "hinge_active", "open_gate"} <= logged | {"loss"}
    assert sorted(n for n in logged | {"loss"} if n not in TERMS) == []

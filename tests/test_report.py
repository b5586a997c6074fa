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
        "task": "shapes", "recipe": "dro", "settings": {"steps": 100},
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

"""`genpref eval` for images: the median-of-K paired win rate by hand, then end to end on a 2-step tiny-sd
DPO run against its base with a stub scorer (mean brightness) and with the shapes verifier."""

import json
from pathlib import Path

import numpy as np
import pytest
from launch import ACCELERATE, genpref
from PIL import Image

from genpref import build
from genpref.cli import main
from image import evaluate as protocol
from image.commands import sample

ROOT = Path(__file__).resolve().parents[1]
TINY_DPO = str(ROOT / "configs" / "image" / "tiny_dpo.yaml")
PROMPTS = ["a red square at the top left", "a blue circle at the bottom right", "a green triangle at the top right"]
STUB = '''
import numpy as np
import torch


class Brightness:
    def score(self, samples, prompts):
        return torch.tensor([float(np.asarray(s, dtype=np.float64).mean()) for s in samples])


def build_reward(spec, cfg, device):
    return Brightness()
'''


def test_median_of_k_win_rate_by_hand():
    """a's medians: [1,5,3] -> 3; [2,2,2] -> 2 (first of equals: index 1); [0,9,1] -> 1 (index 2).
    b's medians: [2,2,4] -> 2; [2,1,3] -> 2 (index 0); [5,5,5] -> 5. Outcomes 1, ½, 0: win rate 0.5."""
    a = np.array([[1, 5, 3], [2, 2, 2], [0, 9, 1]], dtype=float)
    b = np.array([[2, 2, 4], [2, 1, 3], [5, 5, 5]], dtype=float)
    assert protocol.median_index(a).tolist() == [2, 1, 2]
    assert protocol.median_index(b).tolist() == [1, 0, 1]
    w = protocol.win_rate(a, b, n_boot=2000)
    assert (w["win_rate"], w["wins"], w["ties"], w["losses"], w["n_prompts"]) == (0.5, 1, 1, 1, 3)
    assert 0.0 <= w["ci95"][0] < 0.5 < w["ci95"][1] <= 1.0
    assert protocol.median_index(np.array([[4.0, 1.0, 3.0, 2.0]])).tolist() == [3]  # even K: the lower median (2)
    sure = protocol.win_rate(a + 10, a, n_boot=500)
    assert sure["win_rate"] == 1.0 and sure["ci95"] == [1.0, 1.0]
    s = protocol.summary(a)
    assert s["mean"] == pytest.approx(25 / 9) and s["std"] == pytest.approx(a.std(ddof=1)) and s["median_mean"] == 2.0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "dpo"
    assert main(["train", TINY_DPO, f"train.output_dir={out}", "train.max_steps=2", "train.checkpoint_every=0",
                 "train.lr=1e-2", "train.sample_prompts=[]", "online.steps=2"]) == 0
    return out


@pytest.fixture
def brightness(tmp_path, monkeypatch):
    (tmp_path / "genpref_test_brightness.py").write_text(STUB)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(build.REWARDS, "brightness", "genpref_test_brightness")


def _brightness(path):
    return float(np.asarray(Image.open(path).convert("RGB"), dtype=np.float64).mean())


def test_eval_run_against_base_end_to_end(run, tmp_path, brightness, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "eval"
    common = ["--prompts", str(prompts), "--images-per-prompt", "3", "--steps", "2", "--solver", "dpmsolver++",
              "--batch-size", "1", "--scorer", "brightness", "--out"]
    assert main(["eval", str(run), "--against", "base", *common, str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sampler dpmsolver++, 2 steps, guidance 7.5, 3 images per prompt (seeds 0..2" in printed
    assert "win rate vs base (median of 3)" in printed

    report = json.loads((out / "eval.json").read_text())
    assert report["protocol"]["seeds"] == [0, 1, 2] and report["prompts"] == PROMPTS
    scores = {m: np.array(report["scores"]["brightness"][m]["per_image"]) for m in ("dpo", "base")}
    for m, s in scores.items():  # every score belongs to the image saved under its (prompt, seed)
        assert s.shape == (3, 3)
        for p in range(3):
            for j in range(3):
                assert s[p, j] == pytest.approx(_brightness(out / "images" / m / f"p{p:04d}_s{j}.png"), rel=1e-6)
        assert report["scores"]["brightness"][m]["mean"] == pytest.approx(s.mean())
        assert report["scores"]["brightness"][m]["std"] == pytest.approx(s.std(ddof=1))
    med = {m: np.median(s, axis=1) for m, s in scores.items()}  # K = 3: the median is one of the images
    expected = ((med["dpo"] > med["base"]) + 0.5 * (med["dpo"] == med["base"])).mean()
    assert report["win_rates"]["brightness"]["win_rate"] == pytest.approx(expected)
    assert Image.open(out / "grid.png").size == (2 * (3 * 64 + 8) - 8, 16 + 3 * (14 + 64))

    # pinned seeds: with batch 1 an eval image is `genpref sample --seed s` of the same prompt
    one = sample(run, [PROMPTS[1]], seeds=[2], out=tmp_path / "one.png", steps=2, guidance=7.5, solver="dpmsolver++")
    assert np.array_equal(np.asarray(Image.open(one)), np.asarray(Image.open(out / "images" / "dpo" / "p0001_s2.png")))

    # "base" (the run with its LoRA disabled) = the config's untrained model, built afresh from the config file
    base_out = tmp_path / "base-eval"
    assert main(["eval", TINY_DPO, f"train.output_dir={tmp_path / 'cfg'}", *common, str(base_out)]) == 0
    for p in range(3):
        for j in range(3):
            name = f"p{p:04d}_s{j}.png"
            assert np.array_equal(np.asarray(Image.open(out / "images" / "base" / name)),
                                  np.asarray(Image.open(base_out / "images" / "base" / name)))
    assert "win_rates" not in json.loads((base_out / "eval.json").read_text())


def test_eval_shapes_prompts_use_the_verifier_and_a_run_against_itself_ties(run, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", str(run), "--prompts", "shapes", "--against", str(run), "--images-per-prompt", "1",
                 "--steps", "1", "--batch-size", "12", "--out", str(out)]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert list(report["scores"]) == ["shapes"] and report["protocol"]["n_prompts"] == 12
    assert report["protocol"]["prompts"] == "shapes held-out combinations"
    values = np.array(report["scores"]["shapes"]["dpo"]["per_image"])
    assert values.shape == (12, 1) and set(np.round(values.ravel() * 3).tolist()) <= {0, 1, 2, 3}
    # the same weights under the same pinned seeds: identical images, every prompt a tie
    assert list(report["models"]) == ["dpo", "dpo-2"]
    w = report["win_rates"]["shapes"]
    assert (w["win_rate"], w["ties"], w["ci95"]) == (0.5, 12, [0.5, 0.5])
    for p in range(12):
        name = f"p{p:04d}_s0.png"
        assert np.array_equal(np.asarray(Image.open(out / "images" / "dpo" / name)),
                              np.asarray(Image.open(out / "images" / "dpo-2" / name)))


@pytest.mark.parametrize("argv, message", [
    (["--scorer", "brightness"], "image eval needs prompts: --prompts FILE"),
    (["--prompts", "nowhere.txt", "--scorer", "brightness"], "--prompts: file not found: nowhere.txt"),
    (["--prompts", "shapes", "--scorer", "pickscor"], "--scorer 'pickscor': not a reward model; valid:"),
    (["--prompts", "shapes", "--scorer", "pickscore=/no/such/dir"], "the path of reward 'pickscore': /no/such/dir does not exist"),
    (["--prompts", "shapes", "--against", "elsewhere"], "--against elsewhere: not a run directory (or 'base')"),
])
def test_eval_errors_are_one_line(run, brightness, capsys, argv, message):
    assert main(["eval", str(run), *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate CLI not installed")
def test_eval_sharded_over_two_processes_equals_one(run, tmp_path):
    """Each process generates every other (seed, batch); the gathered scores and the images are a single
    process's, and the report is written once."""
    args = ["eval", str(run), "--prompts", "shapes", "--against", "base", "--images-per-prompt", "2", "--steps", "2",
            "--batch-size", "4"]
    genpref([*args, "--out", str(tmp_path / "one")], procs=1)
    printed = genpref([*args, "--out", str(tmp_path / "two")], procs=2).stdout
    assert "genpref eval: 2 processes share the generation" in printed
    assert printed.count("genpref eval: sampler") == 1 and printed.count("wrote ") == 1  # from the main process only
    one, two = (json.loads((tmp_path / d / "eval.json").read_text()) for d in ("one", "two"))
    assert two["scores"] == one["scores"] and two["win_rates"] == one["win_rates"]
    for name in ("dpo/p0000_s0.png", "dpo/p0011_s1.png", "base/p0005_s1.png"):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "one" / "images" / name)),
                              np.asarray(Image.open(tmp_path / "two" / "images" / name)))

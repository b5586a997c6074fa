"""`genpref sample` and `genpref eval` on a motion run, as a user types them: a tiny MDM trained for two
steps on a HumanML3D-format directory, a T2M evaluator and word vectors written by the test."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from launch import ACCELERATE, genpref
from test_motion_evaluator import SMALL, VOCAB, make_run, write_glove, write_humanml_dir

ROOT = Path(__file__).resolve().parents[1]


def cli(*args):
    out = subprocess.run([sys.executable, "-m", "genpref", *args], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def motion_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("motion_cli")
    data = tmp / "data"
    write_humanml_dir(data)
    (data / "train.txt").write_text((data / "test.txt").read_text())
    make_run(tmp / "evaluator")
    write_glove(tmp / "glove", VOCAB, dim=SMALL.dim_word)
    cfg = ROOT / "configs/motion/tiny_mdm_sopo.yaml"
    run = tmp / "run"
    cli("train", str(cfg), f"train.output_dir={run}", f"data.root={data}", "objective.name=sft", "train.max_steps=2",
        "data.max_motion_length=96", "reward.models=[]", "train.sample_prompts=[]")
    return tmp, run


def test_sample_writes_features_joints_and_animation(motion_run):
    tmp, run = motion_run
    out = tmp / "samples"
    cli("sample", str(run), "--prompt", "a man walks", "--seed", "0", "--seed", "1", "--out", str(out), "--steps", "5")
    feats = sorted(out.glob("sample_*[0-9].npy"))
    assert len(feats) == 2
    joints = np.load(str(feats[0]).replace(".npy", "_joints.npy"))
    assert np.load(feats[0]).shape[1] == 263 and joints.shape[1:] == (22, 3)
    assert len(joints) == len(np.load(feats[0]))
    assert feats[0].with_suffix(".gif").stat().st_size > 0


def test_eval_runs_the_t2m_protocol_end_to_end(motion_run):
    tmp, run = motion_run
    out = tmp / "eval"
    res = cli("eval", str(run), "--evaluator", str(tmp / "evaluator"), "--glove", str(tmp / "glove"),
              "--replications", "2", "--steps", "5", "--out", str(out), "eval.diversity_times=20", "eval.root=" + str(tmp / "data"))
    assert "R_precision_top1" in res.stdout and "FID" in res.stdout
    report = json.loads((out / "eval.json").read_text())
    # a tiny MDM is evaluated under MDM's protocol by default, its output after each length shown to the evaluator
    assert report["replications"] == 2 and report["convention"] == "mdm" and report["padding"] == "model"
    assert "mdm convention, padding model" in res.stdout
    assert report["sampler"]["steps"] == 5
    for name in ("R_precision_top1", "MM_Dist", "FID", "Diversity"):
        assert np.isfinite(report["metrics"][name]["mean"])
    assert any((out / "samples").glob("*.gif"))


@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate CLI not installed")
def test_eval_sharded_over_two_processes_equals_one(motion_run):
    """Each process generates every other batch; the gathered metrics equal a single process's."""
    tmp, run = motion_run
    args = ["eval", str(run), "--evaluator", str(tmp / "evaluator"), "--glove", str(tmp / "glove"), "--replications", "2",
            "--steps", "3", "--batch-size", "8", "eval.diversity_times=20", "eval.root=" + str(tmp / "data")]
    genpref([*args, "--out", str(tmp / "eval-1")], procs=1)
    printed = genpref([*args, "--out", str(tmp / "eval-2")], procs=2).stdout
    assert "genpref eval: 2 processes share the generation" in printed and printed.count("R_precision_top1") == 1
    one, two = (json.loads((tmp / d / "eval.json").read_text()) for d in ("eval-1", "eval-2"))
    for name, values in one["per_replication"].items():
        assert two["per_replication"][name] == pytest.approx(values, rel=1e-5, abs=1e-6), name

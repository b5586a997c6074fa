"""`genpref eval RUN` for motion as a newcomer types it: no eval.root, no sampler flags. The run's own data.root
(its test split) and its `eval:` sampler settings are used, printed and stored in eval.json; --root and the
command-line sampler flags override them."""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_motion_evaluator import SMALL, VOCAB, make_run, write_glove, write_humanml_dir

ROOT = Path(__file__).resolve().parents[1]


def cli(*args):
    out = subprocess.run([sys.executable, "-m", "genpref", *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def run_with_eval_section(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("motion_eval_defaults")
    data = tmp / "data"
    write_humanml_dir(data)
    (data / "train.txt").write_text((data / "test.txt").read_text())
    make_run(tmp / "evaluator")
    write_glove(tmp / "glove", VOCAB, dim=SMALL.dim_word)
    run = tmp / "run"
    cli("train", ROOT / "configs/motion/tiny_mdm_sopo.yaml", f"train.output_dir={run}", f"data.root={data}",
        "objective.name=sft", "train.max_steps=2", "data.max_motion_length=96", "reward.models=[]", "train.sample_prompts=[]",
        "eval.solver=ddim", "eval.steps=3", "eval.guidance=1.5", "eval.diversity_times=20",
        f"eval.evaluator={tmp / 'evaluator'}", f"eval.glove={tmp / 'glove'}")
    return tmp, run


def test_eval_reads_the_runs_data_and_sampler(run_with_eval_section):
    tmp, run = run_with_eval_section
    out = cli("eval", run, "--replications", "2", "--out", tmp / "eval")
    line = f"genpref eval: test split {tmp / 'data'}; sampler ddim, 3 steps, guidance 1.5 (solver from eval.solver, steps from eval.steps, guidance from eval.guidance)"
    assert line in out.stdout
    report = json.loads((tmp / "eval" / "eval.json").read_text())
    assert report["root"] == str(tmp / "data")
    assert report["sampler"] == {"solver": "ddim", "steps": 3, "guidance": 1.5,
                                 "from": {"solver": "eval.solver", "steps": "eval.steps", "guidance": "eval.guidance"}}


def test_root_and_flags_override_the_run(run_with_eval_section):
    tmp, run = run_with_eval_section
    other = tmp / "other_split"
    shutil.copytree(tmp / "data", other)
    cli("eval", run, "--replications", "2", "--root", other, "--steps", "2", "--out", tmp / "eval2")
    report = json.loads((tmp / "eval2" / "eval.json").read_text())
    assert report["root"] == str(other)
    assert report["sampler"]["steps"] == 2 and report["sampler"]["from"]["steps"] == "command line"
    assert report["sampler"]["solver"] == "ddim" and report["sampler"]["from"]["solver"] == "eval.solver"


def test_sampler_falls_back_to_the_published_one():
    from motion.commands import sampler_settings

    adapter = SimpleNamespace(published_sampler=("ddpm", None, 2.5),
                              noise_scheduler=SimpleNamespace(config=SimpleNamespace(num_train_timesteps=50)))
    cfg = SimpleNamespace(eval={"guidance": 1.0})
    got = sampler_settings(adapter, cfg, None, None, None)
    assert got == {"solver": "ddpm", "steps": 50, "guidance": 1.0,
                   "from": {"solver": "published", "steps": "published", "guidance": "eval.guidance"}}


def test_demo_runs_record_the_sampler_they_are_evaluated_with():
    """`genpref eval` on a demo run then samples as the demo's own evaluation did (motion.tasks.moves.demo.sample: EVAL's
    solver and steps, adapter.generate's default guidance 1)."""
    import inspect

    from motion.adapter import MotionAdapter
    from motion.tasks.moves import demo

    overrides = demo.common_overrides(Path("base.pt"), Path("data"), Path("evaluator"), seed=0)
    assert inspect.signature(MotionAdapter.generate).parameters["guidance"].default == 1.0
    assert {k: overrides[k] for k in ("eval.solver", "eval.steps", "eval.guidance", "eval.glove", "eval.evaluator")} == {
        "eval.solver": demo.EVAL["solver"], "eval.steps": demo.EVAL["steps"], "eval.guidance": 1.0,
        "eval.glove": str(Path("data") / "glove"), "eval.evaluator": "evaluator"}

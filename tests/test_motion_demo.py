"""The motion half of `genpref demo` and `genpref bench quality` on the moves task, shrunk to seconds:
one training step per arm, two sampler steps, three captions per held-out combination."""

import pytest
from demo_checks import check_bench_resumes, check_demo_half
from PIL import Image

from genpref.errors import UserError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def small(monkeypatch):
    from motion.tasks.moves import demo

    monkeypatch.setattr(demo, "EVAL", {"per_combo": 3, "frames": 40, "steps": 2, "solver": "dpmsolver++", "t2m_passes": 1})
    monkeypatch.setattr(demo, "FEEDBACK_CAPTIONS", 1)
    monkeypatch.setattr(demo, "FEEDBACK_PER_CAPTION", 2)
    return demo


def test_every_moves_arm_config_validates(small, tmp_path):
    from genpref import build
    from motion.tasks import moves
    from motion.tasks.moves import weights as moves_weights

    root = moves.build(tmp_path / "data", moves.BuildSettings(train_per_combo=1, val_per_combo=1, test_heldout_per_combo=1,
                                                              test_seen_per_combo=1))  # fmt: skip
    for name in ("pairs.jsonl", "ratings.jsonl", "text_encoder"):
        (tmp_path / name).touch()
    paths = {"data.root": str(root), "data.pairs": str(tmp_path / "pairs.jsonl"), "model.path": str(moves_weights.BASE),
             "data.ratings": str(tmp_path / "ratings.jsonl"), "model.text_encoder": str(tmp_path / "text_encoder")}  # fmt: skip
    for arm, file in small.ARMS.items():
        cfg = small.recipe_config(file, {"train.output_dir": str(tmp_path / arm), **paths})
        build.check(cfg)
        assert cfg.model.kind == "mdm" and cfg.train.max_steps == 400, arm
    with pytest.raises(UserError, match="not found"):
        small.recipe_config("moves_nothing.yaml", {})


def test_run_demo_writes_paired_results_figures_and_runs(small, tmp_path):
    out = tmp_path / "demo" / "motion"
    metrics = small.run_demo(out, seed=0, progress=False, steps=1)
    check_demo_half(metrics, out, "moves", "sopo", n=27)
    r_prec = {r["model"] for r in metrics["results"] if r["metric"] == "test_r_precision_top1"}
    assert r_prec == {"real", "base", "sopo", "sft"}
    for figure in metrics["figures"]:
        assert Image.open(tmp_path / "demo" / figure["path"]).size[0] > 0
    assert any(f["path"].endswith(".gif") for f in metrics["figures"])
    assert (tmp_path / "demo" / metrics["runs"]["sopo"] / "final" / "model.pt").is_file()


def test_bench_rows_are_paired_with_one_base_and_resume(small, tmp_path):
    out = tmp_path / "bench"
    result = check_bench_resumes(small.bench_quality, out)
    for row in result["rows"]:  # the T2M columns, for the base too
        assert row["test_fid"] >= 0 and 0 <= row["test_r_precision_top1"] <= 1 and row["test_mm_dist"] > 0
    with pytest.raises(UserError, match="unknown motion arm"):
        small.bench_quality(out, seeds=[0], arms=["nope"])

"""Every issue-7 option also trains a motion model through `genpref train` (in-process; tiny MDM, synthetic data)."""

from pathlib import Path

import pytest

from genpref.cli import main
from genpref.config import load_config
from genpref.rundir import read_metrics

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {  # config -> a metric only that option logs
    "tiny_mdm_oaif": "score_gap",
    "tiny_mdm_reset_dpo": "implicit_acc",
    "tiny_mdm_sera": "select_margin_kept",
    "tiny_mdm_bootstrap": "score_gap",
    "tiny_mdm_hypo": "kl",
    "tiny_mdm_kto": "desirable_frac",
    "tiny_mdm_direct_reward": "value",
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_motion_option_trains_through_the_cli(name, tmp_path):
    cfg = ROOT / "configs" / "motion" / f"{name}.yaml"
    load_config(cfg)
    assert main(["train", str(cfg), f"train.output_dir={tmp_path}", "train.max_steps=1", "train.checkpoint_every=0"]) == 0
    rows = read_metrics(tmp_path)
    assert len(rows) == 1 and OPTIONS[name] in rows[0], sorted(rows[0])

"""Issue 18's seed ideas as terms of the objectives: SELM's optimism (objective.optimism), MARLHF's per-frame
reward smoothness (objective.time_mse) and a group diversity bonus (objective.diversity). Values derived by
hand in the docstrings, α/λ = 0 is the plain objective, one CLI training step each on tiny models, and the
keys refused with one line where they do not apply."""

import math
from pathlib import Path

import pytest
import torch

from genpref import build, losses
from genpref.cli import main
from genpref.config import ConfigError, load_config
from genpref.objectives import DPO
from genpref.rundir import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def train_one_step(config: str, out: Path, *overrides: str) -> dict:
    args = ["train", str(ROOT / config), f"train.output_dir={out}", "train.max_steps=1", "train.checkpoint_every=0",
            "train.sample_prompts=[]", *overrides]
    assert main(args) == 0
    (row,) = read_metrics(out)
    return row


# ---------------------------------------------------------------------------------------------- SELM optimism


def test_selm_optimism_by_hand():
    """β = 10, α = 0.1; e_w = 0.2, e_ref,w = 0.3, e_l = 0.45, e_ref,l = 0.5.
    z = 0.5·10·[(0.3 − 0.5) − (0.2 − 0.45)] = 0.25, DPO loss = ln(1 + e^−0.25);
    r̂_w = 5·(0.3 − 0.2) = 0.5, r̂_l = 5·(0.5 − 0.45) = 0.25; optimism = 0.1·(0.5 + 0.25)/2 = 0.0375."""
    t = lambda v: torch.tensor([v])
    loss, metrics = DPO(10.0, optimism=0.1)({"w": t(0.2), "l": t(0.45)}, {"w": t(0.3), "l": t(0.5)}, {})
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.25)) + 0.0375, rel=1e-6)
    assert metrics["optimism"].item() == pytest.approx(0.0375, rel=1e-6)
    assert losses.selm_optimism(t(0.2), t(0.3), 10.0, 0.1).item() == pytest.approx(0.05, rel=1e-6)


def test_selm_optimism_zero_is_plain_dpo_and_its_gradient_raises_the_policy_error():
    g = torch.Generator().manual_seed(0)
    e = {k: torch.rand(5, generator=g, requires_grad=True) for k in ("w", "l")}
    ref = {k: torch.rand(5, generator=g) for k in ("w", "l")}
    plain, _ = DPO(50.0)(e, ref, {})
    off, metrics = DPO(50.0, optimism=0.0)(e, ref, {})
    assert torch.equal(plain, off) and "optimism" not in metrics
    on, _ = DPO(50.0, optimism=0.2)(e, ref, {})
    (grad_w,) = torch.autograd.grad((on - plain).sum(), e["w"])
    assert torch.allclose(grad_w, torch.full((5,), -0.5 * 0.2 * 50.0 * 0.5))  # −0.5·α·β·½ per sample: descent raises e_θ


def test_selm_optimism_trains_a_step_on_tiny_oaif(tmp_path):
    row = train_one_step("configs/motion/tiny_mdm_oaif.yaml", tmp_path, "objective.optimism=0.01")
    assert "optimism" in row and math.isfinite(row["optimism"]) and math.isfinite(row["loss"])


def test_selm_optimism_is_refused_off_online_dpo(tmp_path):
    with pytest.raises(ConfigError, match=r"'objective.optimism' .*objective.name=kto"):
        build.check(load_config(ROOT / "configs/image/tiny_kto.yaml", [f"train.output_dir={tmp_path}", "objective.optimism=0.1"]))
    with pytest.raises(ConfigError, match=r"'objective.optimism' .*data.source=offline_pairs"):
        build.check(load_config(ROOT / "configs/image/tiny_dpo.yaml", [f"train.output_dir={tmp_path}", "objective.optimism=0.1"]))

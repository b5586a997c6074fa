"""Issue 18's seed ideas as terms of the objectives: SELM's optimism (objective.optimism), MARLHF's per-frame
reward smoothness (objective.time_mse) and a group diversity bonus (objective.diversity). Values derived by
hand in the docstrings, α/λ = 0 is the plain objective, one CLI training step each on tiny models, and the
keys refused with one line where they do not apply."""

import math
from pathlib import Path

import numpy as np
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


# ---------------------------------------------------------------------------------------------- MARLHF time_mse


def test_frame_errors_by_hand_and_their_mean_is_the_masked_error():
    """x0 [1, 2 features, 1, 3 frames], frame mask [1, 1, 1, 3] = (1, 1, 0); squared errors per frame
    (features averaged): frame 0 (1 + 9)/2 = 5, frame 1 (4 + 0)/2 = 2, frame 2 (16 + 16)/2 = 16 (masked)."""
    pred = torch.tensor([[[[1.0, 2.0, 4.0]], [[3.0, 0.0, 4.0]]]])  # [1, 2, 1, 3]
    target = torch.zeros_like(pred)
    mask = torch.tensor([[[[1.0, 1.0, 0.0]]]])
    per_frame, valid = losses.frame_errors(pred, target, mask)
    assert per_frame.tolist() == [[5.0, 2.0, 16.0]] and valid.tolist() == [[True, True, False]]
    assert losses.denoising_error(pred, target, mask).item() == pytest.approx(3.5)  # (5 + 2) / 2


def test_reward_time_mse_by_hand():
    """β = 2: r_f = e_ref,f − e_θ,f. Row 0: r = (0.1, 0, −0.1), frame 3 masked: r̄ = 0, variance 0.02/3.
    Row 1: every frame the same reward 0.5: 0."""
    err = torch.tensor([[0.1, 0.2, 0.3, 9.0], [0.0, 0.0, 0.0, 0.0]])
    ref = torch.tensor([[0.2, 0.2, 0.2, 0.0], [0.5, 0.5, 0.5, 0.5]])
    valid = torch.tensor([[True, True, True, False], [True, True, True, True]])
    out = losses.reward_time_mse(err, ref, valid, beta=2.0)
    assert out[0].item() == pytest.approx(0.02 / 3, rel=1e-5) and out[1].item() == pytest.approx(0.0, abs=1e-12)


def test_time_mse_term_in_dpo_and_zero_is_plain_dpo():
    """λ = 0.5, β = 2: winner r = (0.1, 0, −0.1) (variance 0.02/3), loser constant (0): + 0.5·(0.02/3 + 0)/2."""
    t = lambda v: torch.tensor([v])
    frames = {"w/frames": torch.tensor([[0.1, 0.2, 0.3]]), "l/frames": torch.tensor([[0.4, 0.4, 0.4]]),
              "w/valid": torch.ones(1, 3, dtype=torch.bool), "l/valid": torch.ones(1, 3, dtype=torch.bool)}
    err = {"w": t(0.2), "l": t(0.4), **frames}
    ref = {"w": t(0.2), "l": t(0.3), "w/frames": torch.tensor([[0.2, 0.2, 0.2]]), "l/frames": torch.tensor([[0.3, 0.3, 0.3]])}
    plain, _ = DPO(2.0)(err, ref, {})
    assert DPO(2.0).frames == () and DPO(2.0, time_mse=0.5).frames == ("w", "l")
    with_term, metrics = DPO(2.0, time_mse=0.5)(err, ref, {})
    assert (with_term - plain).item() == pytest.approx(0.5 * (0.02 / 3) / 2, rel=1e-5)
    assert metrics["reward_time_var"].item() == pytest.approx((0.02 / 3) / 2, rel=1e-5)


def test_time_mse_trains_two_steps_on_tiny_mdm(tmp_path):
    args = ["train", str(ROOT / "configs/motion/tiny_mdm_oaif.yaml"), f"train.output_dir={tmp_path}", "train.max_steps=2",
            "train.checkpoint_every=0", "objective.time_mse=0.1", "train.lr=1e-3"]
    assert main(args) == 0
    first, second = read_metrics(tmp_path)
    assert first["reward_time_var"] == pytest.approx(0.0, abs=1e-9)  # policy = reference: every frame's reward is 0
    assert second["reward_time_var"] > 0 and math.isfinite(second["loss"])


def test_time_mse_is_refused_without_a_frame_axis(tmp_path):
    out = f"train.output_dir={tmp_path}"
    with pytest.raises(ConfigError, match=r"'objective.time_mse' .*model.kind=tiny-sd has no frame axis"):
        build.check(load_config(ROOT / "configs/image/tiny_dpo.yaml", [out, "objective.time_mse=0.1"]))
    with pytest.raises(ConfigError, match=r"'objective.time_mse' .*model.kind=tiny-mld has no frame axis"):
        build.check(load_config(ROOT / "configs/motion/tiny_mdm_oaif.yaml", [out, "objective.time_mse=0.1", "model.kind=tiny-mld"]))
    with pytest.raises(ConfigError, match=r"'objective.time_mse' .*objective.name=kto"):
        build.check(load_config(ROOT / "configs/motion/tiny_mdm_kto.yaml", [out, "objective.time_mse=0.1"]))


# ---------------------------------------------------------------------------------------------- diversity


def test_diversity_bonus_and_mean_pairwise_distance_by_hand():
    """Group 0: a = (0, 0), b = (3, 0), c = (0, 4): |ab| = 3, |ac| = 4, |bc| = 5; mean distance to the others
    a (3 + 4)/2 = 3.5, b (3 + 5)/2 = 4, c (4 + 5)/2 = 4.5; group 1 holds d alone: 0. λ = 2 doubles them.
    Mean pairwise distance: group 0 (3 + 4 + 5)/3 = 4; group 1 has no pair: NaN."""
    from genpref.diversity import diversity_bonus, mean_pairwise_distance

    emb = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [7.0, 7.0]])
    groups = torch.tensor([0, 0, 0, 1])
    assert diversity_bonus(emb, groups, 2.0).tolist() == pytest.approx([7.0, 8.0, 9.0, 0.0])
    per_group = mean_pairwise_distance(emb.numpy(), [5, 5, 5, 9])  # arrays and any group ids
    assert per_group[0].item() == pytest.approx(4.0) and math.isnan(per_group[1].item())
    by_prompt = mean_pairwise_distance(emb, ["b prompt", "b prompt", "b prompt", "a prompt"])  # sorted: a, b
    assert math.isnan(by_prompt[0].item()) and by_prompt[1].item() == pytest.approx(4.0)


def test_unit_rows_zero_padded_frames_and_have_length_one():
    from genpref.diversity import unit_rows

    x = torch.tensor([[[[3.0, 4.0, 100.0]]]])  # [1, 1, 1, 3], the last frame padded
    rows = unit_rows(x, torch.tensor([[[[1.0, 1.0, 0.0]]]]))
    assert rows[0].tolist() == pytest.approx([0.6, 0.8, 0.0])


def test_grpo_advantages_are_z_scores_of_reward_plus_bonus(tmp_path):
    """Toy GRPO, λ = 0.5: each group's advantages are the z-scores of r + λ·(mean distance to the other samples),
    distances between the unit-length 2-D samples, computed here with plain loops."""
    from genpref import build
    from genpref.online import RolloutPolicy
    from genpref.recipes import SourceContext

    cfg = load_config(ROOT / "configs/toy/toy_grpo.yaml", [f"train.output_dir={tmp_path}", "objective.diversity=0.5",
                                                           "online.inner_epochs=1", "online.train_fraction=0.2"])
    torch.manual_seed(0)
    adapter = build.build_adapter(cfg, "cpu", torch.float32)
    ctx = SourceContext(adapter, cfg, torch.device("cpu"), rollout=RolloutPolicy(adapter.trainable_parameters()),
                        reward=build.build_reward(cfg, "cpu"))
    source = build.build_source(ctx, cfg)
    groups = []
    real_group = source._group
    source._group = lambda prompt, pos: groups.append(real_group(prompt, pos)) or groups[-1]
    tb = source.next(0, 0)
    expected = []
    for x0, r, *_ in groups:
        u = [row / row.norm() for row in x0.float()]
        spread = torch.tensor([sum((u[i] - u[j]).norm() for j in range(len(u)) if j != i) / (len(u) - 1) for i in range(len(u))])
        s = r + 0.5 * spread
        expected += ((s - s.mean()) / s.std(unbiased=False)).tolist()
    gaps = np.abs(tb.extras["advantage"].numpy()[:, None] - np.array(expected)[None])  # each one among the expected
    assert gaps.min(axis=1).max() < 1e-4
    assert tb.stats["diversity_bonus"] == pytest.approx(0.5 * tb.stats["group_distance"], rel=1e-6)
    assert tb.stats["group_distance"] > 0


@pytest.mark.parametrize("config", ["configs/toy/toy_grpo.yaml", "configs/motion/tiny_mdm_nft.yaml"])
def test_diversity_trains_a_step(tmp_path, config):
    row = train_one_step(config, tmp_path, "objective.diversity=0.1")
    assert row["diversity_bonus"] > 0 and row["group_distance"] > 0 and math.isfinite(row["loss"])


def test_diversity_is_refused_off_group_rl(tmp_path):
    with pytest.raises(ConfigError, match=r"'objective.diversity' .*not dpo"):
        build.check(load_config(ROOT / "configs/image/tiny_dpo.yaml", [f"train.output_dir={tmp_path}", "objective.diversity=0.1"]))

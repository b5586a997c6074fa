"""Online reward RL (objective grpo / nft): the clipped objective's gradient by hand, REINFORCE at ρ = 1,
group advantages, exact resume, and a step on every adapter family."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genpref import losses
from genpref.config import load_config
from genpref.errors import UserError
from genpref.objectives import GRPO, NFT
from genpref.rundir import read_metrics
from genpref.train import train

ROOT = Path(__file__).resolve().parents[1]
TOY_GRPO = ROOT / "configs/toy/toy_grpo.yaml"


def test_clipped_objective_gradient_by_hand():
    """log π = θ·c + d with θ = 0; c = (1, 2), old log-probs set so that ρ = (1.1, 0.7), A = (1, −2), ε = 0.2.
    Sample 1: ρ inside [0.8, 1.2]: loss −A·ρ = −1.1, d/dθ = −A·ρ·c = −1.1.
    Sample 2: −A·ρ = 1.4 < −A·clip(ρ) = 2·0.8 = 1.6: the clipped branch wins, loss 1.6, gradient 0.
    Mean loss (−1.1 + 1.6) / 2 = 0.25; d/dθ = (−1.1 + 0) / 2 = −0.55."""
    theta = torch.zeros((), requires_grad=True)
    c, d = torch.tensor([1.0, 2.0]), torch.tensor([0.3, -0.4])
    logp = theta * c + d
    old = d - torch.log(torch.tensor([1.1, 0.7]))
    loss = losses.clipped_policy_loss(logp, old, torch.tensor([1.0, -2.0]), 0.2).mean()
    loss.backward()
    assert loss.item() == pytest.approx(0.25, abs=1e-6) and theta.grad.item() == pytest.approx(-0.55, abs=1e-6)
    # a positive advantage with ρ above 1 + ε and a negative one below 1 − ε are both clipped: no gradient
    theta.grad = None
    clipped = losses.clipped_policy_loss(theta * c + d, d - torch.log(torch.tensor([1.5, 1.5])), torch.tensor([1.0, 1.0]), 0.2)
    clipped.mean().backward()
    assert theta.grad.item() == 0.0


def test_group_advantages_standardise_each_group_and_flag_flat_ones():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [0.0, 1.0, 2.0, 3.0]])
    adv, flat = losses.group_advantages(r, std_floor=1e-4, clip=None)
    want = [(row - row.mean()) / max(row.std(), 1e-4) for row in np.array(r)]  # numpy std: ddof 0
    assert flat.tolist() == [False, True, False]
    np.testing.assert_allclose(adv[0].numpy(), want[0], rtol=1e-6)
    np.testing.assert_allclose(adv[2].numpy(), want[2], rtol=1e-6)
    assert adv[1].tolist() == [0.0] * 4
    clipped, _ = losses.group_advantages(torch.tensor([[0.0] * 9 + [1.0]]), clip=2.0)
    assert clipped.max().item() == 2.0 and clipped.min().item() == pytest.approx(-1 / 3)  # (0 − .1)/.3 = −1/3, 3 → 2


def toy_grpo(out: Path, *overrides: str):
    cfg = load_config(TOY_GRPO, [f"train.output_dir={out}", *overrides])
    return cfg


def test_first_step_is_reinforce_with_group_normalised_advantages(tmp_path):
    """At the first step the rollout weights are the trained ones: ρ = 1 exactly, and with ε → ∞ the loss
    gradient is −mean(A·∇log π) (REINFORCE); the advantages are the rewards z-scored within each group."""
    from genpref import build
    from genpref.forward import branch_errors
    from genpref.online import RolloutPolicy
    from genpref.recipes import SourceContext

    cfg = toy_grpo(tmp_path / "r", "objective.clip_range=1e9", "objective.kl_weight=0", "online.inner_epochs=1")
    torch.manual_seed(0)
    adapter = build.build_adapter(cfg, "cpu", torch.float32)
    with torch.no_grad():
        for p in adapter.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))  # LoRA off zero: the policy differs from the base
    adapter.denoiser.eval()  # the loop trains without dropout (train.disable_dropout)
    ctx = SourceContext(adapter, cfg, torch.device("cpu"), rollout=RolloutPolicy(adapter.trainable_parameters()),
                        reward=build.build_reward(cfg, "cpu"))
    source = build.build_source(ctx, cfg)
    groups = []
    real_group = source._group
    source._group = lambda prompt, pos: groups.append(real_group(prompt, pos)) or groups[-1]
    tb = source.next(0, 0)
    rewards = torch.stack([g[1] for g in groups])  # [P, K]
    z = (rewards - rewards.mean(1, keepdim=True)) / rewards.std(1, unbiased=False, keepdim=True)
    assert set(np.round(tb.extras["advantage"].numpy(), 5)) <= set(np.round(z.flatten().numpy(), 5))
    err, _ = branch_errors(adapter, tb.branches, False)
    torch.testing.assert_close(err["g"], tb.extras["old_logp"], rtol=0, atol=1e-5)  # ρ = 1
    params = adapter.trainable_parameters()
    loss, _ = GRPO(clip_range=1e9)(err, {}, tb.extras)
    grad = torch.autograd.grad(loss.mean(), params, retain_graph=True)
    reinforce = torch.autograd.grad(-(tb.extras["advantage"] * err["g"]).mean(), params)
    for a, b in zip(grad, reinforce):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_grpo_resume_is_exact_and_logs_the_rl_diagnostics(tmp_path):
    """12 steps straight == 6 steps, then resume for 6: rollout buffer, its inner epochs and the rollout
    count come back with the checkpoint."""
    a, b = tmp_path / "a", tmp_path / "b"
    train(toy_grpo(a))
    train(toy_grpo(b, "train.max_steps=6"))
    train(toy_grpo(b, "train.resume=latest"))
    rows_a, rows_b = read_metrics(a), read_metrics(b)
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b] and len(rows_b) == 12
    for key in ("reward_mean", "adv_abs_mean", "clip_frac", "approx_kl_old", "kl_ref", "skipped_groups", "generate_s"):
        assert key in rows_a[-1] and math.isfinite(rows_a[-1][key])
    # 2 prompts × 4 samples × 3 trained steps × 2 epochs = 48 transitions per rollout batch = 6 steps of 8
    assert [r["rollouts"] for r in rows_a][::6] == [1.0, 2.0]


def test_nft_trains_and_its_targets_give_the_papers_loss():
    """‖v⁺ − v‖² and ‖v⁻ − v‖² from the implicit policies equal β²·err against the shifted targets."""
    from genpref.rl import nft_targets

    g = torch.Generator().manual_seed(0)
    v, v_old, v_theta = (torch.randn(3, 5, generator=g) for _ in range(3))
    for beta in (1.0, 0.3):
        pos, neg = nft_targets(v, v_old, beta)
        v_pos, v_neg = (1 - beta) * v_old + beta * v_theta, (1 + beta) * v_old - beta * v_theta
        torch.testing.assert_close(((v_pos - v) ** 2).mean(1), beta**2 * ((v_theta - pos) ** 2).mean(1))
        torch.testing.assert_close(((v_neg - v) ** 2).mean(1), beta**2 * ((v_theta - neg) ** 2).mean(1))
    loss, m = NFT(beta=1.0, adv_clip=2.0)({"pos": torch.tensor([1.0, 1.0]), "neg": torch.tensor([3.0, 3.0])}, {},
                                          {"advantage": torch.tensor([2.0, -1.0])})
    # r = ½ + ½·A/2 = (1, 0.25): loss = r·1 + (1 − r)·3
    assert loss.tolist() == pytest.approx([1.0, 0.25 + 0.75 * 3])


def test_nft_kl_weight_adds_the_distance_to_the_reference_prediction(tmp_path):
    err = {"pos": torch.tensor([1.0, 1.0]), "neg": torch.tensor([3.0, 3.0]), "kl": torch.tensor([0.5, 2.0])}
    loss, m = NFT(beta=1.0, adv_clip=2.0, kl_weight=0.1)(err, {}, {"advantage": torch.tensor([2.0, -1.0])})
    assert loss.tolist() == pytest.approx([1.0 + 0.05, 0.25 + 0.75 * 3 + 0.2]) and m["kl"].item() == pytest.approx(1.25)
    assert NFT(kl_weight=0.1).branches == ("pos", "neg", "kl") and NFT(sft_weight=1.0).branches == ("pos", "neg", "w")
    # in a run: the policy starts as the reference (kl 0), then moves away from it
    train(toy_grpo(tmp_path / "kl", "train.max_steps=3", "train.checkpoint_every=0", "objective.name=nft",
                   "online.rollout_ema=0.5", "objective.kl_weight=1.0"))
    kl = [r["kl"] for r in read_metrics(tmp_path / "kl")]
    assert kl[0] == 0.0 and kl[-1] > 0.0


@pytest.mark.parametrize("objective", ["grpo", "nft"])
def test_online_rl_trains_on_the_toy_task(tmp_path, objective):
    extra = ["objective.name=nft", "online.rollout_ema=0.5"] if objective == "nft" else []
    train(toy_grpo(tmp_path / objective, "train.max_steps=4", "train.checkpoint_every=0", *extra))
    rows = read_metrics(tmp_path / objective)
    assert len(rows) == 4 and all(math.isfinite(r["loss"]) for r in rows)


def test_group_rollouts_refuse_what_they_cannot_do(tmp_path):
    for override, message in [("online.group_size=1", "group_size must be >= 2"),
                              ("online.guidance=3.0", "no unconditional input"),
                              ("online.train_fraction=0", "train_fraction. must be in \\(0, 1\\]")]:
        with pytest.raises((UserError, ValueError), match=message):
            train(toy_grpo(tmp_path / override.split("=")[0], override))


@pytest.mark.parametrize("config", ["image/tiny_grpo.yaml", "motion/tiny_mdm_grpo.yaml", "motion/tiny_mld_grpo.yaml",
                                    "motion/tiny_mdm_nft.yaml"])
def test_tiny_online_rl_configs_train(tmp_path, config):
    """GRPO with CFG on tiny-sd, with an anchor and frame masks on tiny-MDM, with MLD's DDIM settings on
    tiny-MLD; NFT on tiny-MDM: two steps each, finite losses, the rollout count logged."""
    cfg = load_config(ROOT / "configs" / config, [f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2",
                                                  "train.checkpoint_every=0", "train.sample_prompts=[]"])
    train(cfg)
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows) and rows[-1]["rollouts"] >= 1


def test_rl_guard_trips_on_the_failures_users_report():
    from genpref.rl_guards import RLGuard

    g = RLGuard("warn", window=3)
    rows = [{"reward_mean": 0.8 - 0.05 * i, "kl_ref": 0.01 * i, "grad_norm": 1.0} for i in range(6)]
    msgs = [g.update(i, r) for i, r in enumerate(rows)]
    assert msgs[:5] == [None] * 5 and "reward fell by 0.15" in msgs[5] and "KL to the reference grew" in msgs[5]
    assert g.update(6, {"reward_mean": 0.5, "kl_ref": 0.07, "grad_norm": 1.0}) is None  # warned once per kind
    spike = RLGuard("warn", window=3)
    for i in range(3):
        assert spike.update(i, {"reward_mean": 0.5, "grad_norm": 1.0 + 0.1 * i}) is None
    assert "gradient norm 50 is over 10× the recent median 1.1" in spike.update(3, {"reward_mean": 0.5, "grad_norm": 50.0})
    hack = RLGuard("stop", window=2)
    for i, (r, h) in enumerate([(0.5, 0.9), (0.5, 0.9), (0.7, 0.8)]):
        assert hack.update(i, {"reward_mean": r, "holdout_reward": h}) is None
    with pytest.raises(UserError, match="reward hacking"):
        hack.update(3, {"reward_mean": 0.8, "holdout_reward": 0.7})
    steady = RLGuard("stop", window=2)  # rising reward with a steady held-out check is fine
    for i in range(8):
        assert steady.update(i, {"reward_mean": 0.1 * i, "holdout_reward": 0.5, "kl_ref": 0.01 * i, "grad_norm": 1.0}) is None
    restored = RLGuard("warn", window=3)
    restored.load_state_dict(g.state_dict())
    assert restored.state_dict() == g.state_dict()


def test_holdout_reward_is_logged_and_never_trained_on(tmp_path):
    train(toy_grpo(tmp_path / "h", "train.max_steps=2", "train.checkpoint_every=0", 'reward.holdout=[{"name": "toy"}]'))
    rows = read_metrics(tmp_path / "h")
    # the held-out check is the same toy reward on the same samples here: it equals the training reward
    assert rows[0]["holdout_reward"] == pytest.approx(rows[0]["reward_mean"], rel=1e-5)


def test_rft_trains_on_accepted_samples_only(tmp_path):
    from genpref import build
    from genpref.online import RolloutPolicy
    from genpref.recipes import SourceContext

    cfg = toy_grpo(tmp_path / "rft", "objective.name=rft", "online.accept_reward=0.2", "train.batch_size=2")
    adapter = build.build_adapter(cfg, "cpu", torch.float32)
    ctx = SourceContext(adapter, cfg, torch.device("cpu"), rollout=RolloutPolicy(adapter.trainable_parameters()),
                        reward=build.build_reward(cfg, "cpu"))
    source = build.build_source(ctx, cfg)
    tb = source.next(0, 0)
    reward = build.build_reward(cfg, "cpu").score(adapter.decode(tb.branches["x"].batch.x0, None), tb.branches["x"].batch.prompts)
    assert (reward >= 0.2).all() and torch.allclose(reward, tb.extras["advantage"])  # what was kept, with its reward
    train(toy_grpo(tmp_path / "run", "objective.name=rft", "online.accept_reward=0.2", "train.max_steps=2",
                   "train.checkpoint_every=0"))
    assert len(read_metrics(tmp_path / "run")) == 2


@pytest.mark.skipif(not Path(sys.executable).with_name("accelerate").exists(), reason="accelerate CLI not installed")
def test_two_processes_normalise_groups_as_one(tmp_path):
    """A group lives on one rank and its samples come from a generator keyed by its prompt's stream position:
    2 processes × 2 prompts give the rewards and advantages of 1 process × 4 prompts."""
    from launch import genpref

    common = ["train", str(TOY_GRPO), "train.max_steps=1", "train.checkpoint_every=0"]
    genpref([*common, f"train.output_dir={tmp_path / 'one'}", "online.batch_size=4"], procs=1)
    genpref([*common, f"train.output_dir={tmp_path / 'two'}", "online.batch_size=2"], procs=2)
    one, two = read_metrics(tmp_path / "one")[0], read_metrics(tmp_path / "two")[0]
    for key in ("reward_mean", "adv_abs_mean", "skipped_groups"):
        assert two[key] == pytest.approx(one[key] / (2 if key == "skipped_groups" else 1), rel=1e-5), key


def test_bench_rows_gain_paired_differences_to_sft_per_seed():
    from genpref import stats

    rows = [{"objective": "sft", "seed": 0, "heldout_accuracy": 0.5, "train_accuracy": 0.6},
            {"objective": "sft", "seed": 1, "heldout_accuracy": 0.4, "train_accuracy": 0.7},
            {"objective": "grpo", "seed": 0, "heldout_accuracy": 0.7, "train_accuracy": 0.6},
            {"objective": "grpo", "seed": 1, "heldout_accuracy": 0.7, "train_accuracy": 0.8},
            {"objective": "grpo", "seed": 2, "heldout_accuracy": 0.9, "train_accuracy": 0.9}]  # no sft of seed 2
    out = stats.versus_arm(rows, "sft", ("heldout_accuracy", "train_accuracy"))
    assert [r.get("heldout_diff_vs_sft") for r in out] == pytest.approx([0.0, 0.0, 0.2, 0.3, None])
    assert out[3]["train_diff_vs_sft"] == pytest.approx(0.1) and "heldout_diff_vs_sft" not in rows[2]
    summary = stats.summarize_runs(out, ["heldout_diff_vs_sft"])
    lo, hi = summary[1]["heldout_diff_vs_sft_ci95"]  # t interval over 2 seeds: 0.25 ± 12.706·0.0707/√2·... > 0 wide
    assert summary[1]["heldout_diff_vs_sft"] == pytest.approx(0.25) and lo < 0.25 < hi

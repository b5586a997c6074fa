"""The seed papers' ideas as options, on the toy adapter: each changes what is trained on as intended —
which pairs are kept (SeRA), where rollouts start (dataset reset), which label a pair gets (AI feedback,
soft preference strength), that the KL term is zero at policy = reference (HyPO), and that the direct
reward objective learns its per-prompt value."""

import math

import pytest
import torch

from genpref import build
from genpref.config import from_dict, merge_overrides
from genpref.forward import branch_errors
from genpref.online import RolloutPolicy, TrajectoryRecorder
from genpref.recipes import AIFeedback, ExpertVsSample, SourceContext, implicit_reward
from genpref.rundir import read_metrics
from genpref.toy import ToyAdapter
from genpref.train import train


def cfg_for(out, objective="dpo", *overrides):
    data = {
        "model": {"kind": "toy", "lora": {"rank": 4, "alpha": 4, "targets": ["net.0", "net.2"]}},
        "objective": {"name": objective, "beta": 50.0},
        "online": {"steps": 5, "num_samples": 3},
        "reward": {"models": [{"name": "toy"}]},
        "train": {"output_dir": str(out), "max_steps": 4, "batch_size": 4, "lr": 1e-3, "checkpoint_every": 2, "tensorboard": False},
    }
    return from_dict(merge_overrides(data, list(overrides)))


def toy_ctx(cfg, perturb=True):
    adapter = ToyAdapter(cfg, "cpu")
    adapter.denoiser.eval()
    torch.manual_seed(0)
    if perturb:
        with torch.no_grad():
            for n, p in adapter.denoiser.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.2)
    reward = build.build_reward(cfg, "cpu")
    return SourceContext(adapter, cfg, torch.device("cpu"), rollout=RolloutPolicy(adapter.trainable_parameters()), reward=reward)


class Scores:
    def __init__(self, table):
        self.table = table

    def score(self, samples, prompts):
        return self.table


def test_ai_feedback_pairs_best_with_worst_and_soft_label_from_gap(tmp_path):
    cfg = cfg_for(tmp_path, "dpo", "data.source=ai_feedback", "online.label_scale=0.5")
    ctx = toy_ctx(cfg)
    ctx.reward = Scores(torch.tensor([0.1, 0.9, 0.5, 0.2, 0.3, 0.4, 0.7, 0.8, 0.6, 0.0, 0.1, 0.2]))  # [K=3, B=4] k-major
    src = AIFeedback(ctx, ctx.adapter.load_items("prompts"))
    captured = {}
    real = ctx.generate
    ctx.generate = lambda batch, pos, callback=None: captured.setdefault("x0", real(batch, pos, callback))
    tb = src.batch_at([0, 1, 2, 3])
    scores = ctx.reward.table.view(3, 4)
    best, worst = scores.argmax(0), scores.argmin(0)  # per prompt: (k of best, k of worst)
    x0 = captured["x0"].view(3, 4, 2)
    assert torch.equal(tb.branches["w"].batch.x0, x0[best, torch.arange(4)])
    assert torch.equal(tb.branches["l"].batch.x0, x0[worst, torch.arange(4)])
    gap = scores.max(0).values - scores.min(0).values
    assert tb.extras["label"].tolist() == pytest.approx([1 / (1 + math.exp(-g / 0.5)) for g in gap.tolist()])
    assert torch.equal(tb.branches["w"].t, tb.branches["l"].t)


def test_dataset_reset_starts_rollouts_from_the_noised_expert(tmp_path):
    far_ctx = toy_ctx(cfg_for(tmp_path, "dpo", "data.source=expert_vs_sample"))
    near_ctx = toy_ctx(cfg_for(tmp_path, "dpo", "data.source=expert_vs_sample", "online.reset_t=10"))
    items = near_ctx.adapter.load_items("experts")
    pos = list(range(8))
    dist = lambda tb: (tb.branches["w"].batch.x0 - tb.branches["l"].batch.x0).norm(dim=1).mean().item()
    near, far = ExpertVsSample(near_ctx, items).batch_at(pos), ExpertVsSample(far_ctx, items).batch_at(pos)
    assert dist(near) < 0.5 * dist(far)
    rec = TrajectoryRecorder()
    expert = near_ctx.adapter.encode([items[i]["x"] for i in pos], [items[i]["prompt"] for i in pos])
    near_ctx.generate(expert, 0, callback=rec)
    assert rec.stacked()[0].max().item() <= 10  # the first state the model saw is at t <= reset_t


def test_sera_selection_keeps_the_largest_implicit_margins(tmp_path):
    cfg = cfg_for(tmp_path, "dpo", "select.by=implicit_margin", "select.fraction=0.5")
    ctx = toy_ctx(cfg)
    src = build.build_source(ctx, cfg)
    tb = src.next(0, 0)
    pool = src.inner.batch_at(ctx.positions(0, 0, per=8))  # the 8 pairs it drew
    with torch.no_grad():
        err, ref = branch_errors(ctx.adapter, {"w": pool.branches["w"], "l": pool.branches["l"]}, True)
    margin = (ref["w"] - err["w"]) - (ref["l"] - err["l"])
    expected = pool.branches["w"].x_t[torch.topk(margin, 4).indices]
    assert torch.allclose(torch.sort(tb.branches["w"].x_t, 0).values, torch.sort(expected, 0).values)
    assert tb.stats["select_margin_kept"] >= tb.stats["select_margin_all"]


def test_bootstrap_pairs_rank_by_the_policys_own_implicit_reward(tmp_path):
    cfg = cfg_for(tmp_path, "dpo", "data.source=ai_feedback", "online.annotator=implicit", "online.reward_draws=1")
    ctx = toy_ctx(cfg)
    src = AIFeedback(ctx, ctx.adapter.load_items("prompts"))
    tb = src.batch_at([0, 1, 2, 3])
    pos = [0, 1, 2, 3]
    r_w = implicit_reward(ctx, tb.branches["w"].batch, pos)
    r_l = implicit_reward(ctx, tb.branches["l"].batch, pos)
    assert torch.all(r_w >= r_l)  # same (t, ε) draws per prompt: the chosen winner scores higher
    assert tb.stats["score_gap"] > 0


def test_hypo_kl_term_is_zero_at_reference_and_grows(tmp_path):
    train(cfg_for(tmp_path / "h", "dpo", "objective.kl_weight=1.0", "train.max_steps=6", "train.lr=1e-2"))
    rows = read_metrics(tmp_path / "h")
    assert rows[0]["kl"] == 0.0  # LoRA starts at B = 0: policy = reference
    assert rows[-1]["kl"] > 0.0


def test_direct_reward_learns_a_value_per_prompt_and_resumes(tmp_path):
    out = tmp_path / "d"
    train(cfg_for(out, "direct_reward", "objective.beta=10", "train.max_steps=4", "train.lr=5e-2"))
    from genpref import checkpoint

    weights = checkpoint.load(out / "checkpoints" / "step-4", 0, 1)[0]
    assert weights["objective.value.weight"].shape == (4, 1)  # four toy prompts
    assert weights["objective.value.weight"].abs().sum() > 0
    train(cfg_for(out, "direct_reward", "objective.beta=10", "train.max_steps=5", "train.lr=5e-2", "train.resume=latest"))
    assert len(read_metrics(out)) == 5


@pytest.mark.parametrize(
    "overrides",
    [
        ("data.source=ai_feedback", "objective.soft_label=true"),
        ("data.source=expert_vs_sample", "online.reset_t=30"),
        ("select.by=implicit_margin",),
        ("data.source=ai_feedback", "online.annotator=implicit"),
        ("objective.kl_weight=0.5",),
    ],
)
def test_options_train_end_to_end(tmp_path, overrides):
    train(cfg_for(tmp_path / "r", "dpo", *overrides))
    rows = read_metrics(tmp_path / "r")
    assert len(rows) == 4 and all(r["loss"] is not None for r in rows)

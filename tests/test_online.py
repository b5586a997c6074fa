"""Online sources on the toy adapter: the DRO rollout buffer lines up and survives resume; SoPo picks
the worst of K by reward, gates it by τ and weights the winner by C − S."""

import pytest
import torch

from genpref.adapter import Batch
from genpref.config import from_dict, merge_overrides
from genpref.objectives import SoPo
from genpref.online import RolloutBuffer, RolloutPolicy
from genpref.recipes import ExpertRollouts, SoPoOnline, SourceContext
from genpref.rundir import read_metrics
from genpref.toy import CENTRES, PROMPTS, ToyAdapter
from genpref.train import train


def cfg_for(out, objective, *overrides):
    data = {
        "model": {"kind": "toy", "lora": {"rank": 4, "alpha": 4, "targets": ["net.0", "net.2"]}},
        "objective": {"name": objective},
        "online": {"steps": 5, "num_samples": 3},
        "reward": {"models": [{"name": "toy"}]},
        "train": {"output_dir": str(out), "max_steps": 8, "batch_size": 8, "lr": 1e-3, "checkpoint_every": 4, "tensorboard": False},
    }
    return from_dict(merge_overrides(data, list(overrides)))


def toy_ctx(cfg):
    adapter = ToyAdapter(cfg, "cpu")
    torch.manual_seed(0)
    with torch.no_grad():  # make the LoRA branch non-trivial so policy != reference
        for n, p in adapter.denoiser.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    rollout = RolloutPolicy(adapter.trainable_parameters(), cfg.online.sync_every)
    return SourceContext(adapter, cfg, torch.device("cpu"), rollout=rollout)


def test_rollout_buffer_states_timesteps_and_predictions_line_up(tmp_path):
    cfg = cfg_for(tmp_path, "dro")
    cfg.online.timestep_jitter = False  # the sampler's own timesteps (jittered tracks: tests/test_sampling.py)
    ctx = toy_ctx(cfg)
    items = ctx.adapter.load_items("experts")
    src = ExpertRollouts(ctx, items)
    src._refill()
    assert len(src.buffer) == 8 * 5  # every state of every 5-step rollout is kept
    e, prompts = src.buffer.take(40)
    sampler = ctx.adapter.make_solver("ddim")
    sampler.set_timesteps(5)
    assert set(e["t"].tolist()) == set(sampler.timesteps.tolist())
    batch = Batch(e["x0"], {"label": e["cond.label"]}, None, prompts)
    ctx.adapter.denoiser.eval()  # generation runs in eval mode (no dropout)
    with torch.no_grad():
        again = ctx.adapter.predict(e["x_t"], e["t"], batch)
    assert torch.allclose(again, e["pred"], atol=1e-6)  # the recorded prediction belongs to that state
    for x0, label, prompt in zip(e["x0"], e["cond.label"], prompts):
        assert PROMPTS[label] == prompt
        assert torch.linalg.norm(x0 - torch.tensor(CENTRES[prompt])) < 1.5  # the expert of that prompt


def test_states_per_rollout_subsamples(tmp_path):
    ctx = toy_ctx(cfg_for(tmp_path, "dro", "online.states_per_rollout=2"))
    src = ExpertRollouts(ctx, ctx.adapter.load_items("experts"))
    src._refill()
    assert len(src.buffer) == 8 * 2


def test_dro_resume_restores_the_buffer_exactly(tmp_path):
    train(cfg_for(tmp_path / "a", "dro"))
    train(cfg_for(tmp_path / "b", "dro", "train.max_steps=4"))
    train(cfg_for(tmp_path / "b", "dro", "train.resume=latest"))
    la = [r["loss"] for r in read_metrics(tmp_path / "a")]
    lb = [r["loss"] for r in read_metrics(tmp_path / "b")]
    assert la == lb and len(la) == 8
    assert read_metrics(tmp_path / "a")[3]["buffer"] > 0  # the checkpoint at step 4 held a non-empty buffer


def test_rollout_copy_lags_by_sync_every():
    p = torch.nn.Parameter(torch.zeros(3))
    rollout = RolloutPolicy([p], sync_every=3)
    with torch.no_grad():
        p.add_(1.0)
    rollout.after_optimizer_step(1)
    with rollout.active():
        assert torch.equal(p.data, torch.zeros(3))  # still the step-0 weights
    assert torch.equal(p.data, torch.ones(3))  # restored after generation
    rollout.after_optimizer_step(3)
    with rollout.active():
        assert torch.equal(p.data, torch.ones(3))


def test_buffer_fifo_and_state_round_trip():
    buf = RolloutBuffer()
    buf.push({"a": torch.arange(4)}, ["p0", "p1", "p2", "p3"], torch.Generator().manual_seed(0))
    first, prompts = buf.take(2)
    assert [f"p{v}" for v in first["a"].tolist()] == prompts
    clone = RolloutBuffer()
    clone.load_state_dict(buf.state_dict())
    assert clone.take(2)[1] == buf.take(2)[1]


class TableReward:
    """Hand-made rewards: call 1 scores the K·B online samples, call 2 the winners."""

    def __init__(self, online, sims):
        self.online, self.sims, self.calls = online, sims, 0

    def score(self, samples, prompts):
        self.calls += 1
        return self.online if self.calls == 1 else torch.ones(len(samples))

    def similarity(self, a, b):
        return self.sims


def test_sopo_loser_is_worst_of_k_with_its_reward_and_min_similarity(tmp_path):
    cfg = cfg_for(tmp_path, "sopo", "train.batch_size=2", "online.num_samples=3")
    ctx = toy_ctx(cfg)
    # rewards [K=3, B=2] flattened k-major: item 0 gets (.9, .2, .5), item 1 gets (.3, .8, .1)
    ctx.reward = TableReward(torch.tensor([0.9, 0.3, 0.2, 0.8, 0.5, 0.1]), torch.tensor([0.7, 0.6, 0.4, 0.9, 0.8, 0.5]))
    captured = {}
    real_generate = ctx.generate
    ctx.generate = lambda batch, pos, callback=None: captured.setdefault("x0", real_generate(batch, pos, callback))
    src = SoPoOnline(ctx, ctx.adapter.load_items("experts"))
    tb = src.next(0, 0)
    assert tb.extras["loser_reward"].tolist() == pytest.approx([0.2, 0.1])
    assert tb.extras["winner_similarity"].tolist() == pytest.approx([0.4, 0.5])
    x0 = captured["x0"]  # [K·B, 2]: loser of item 0 is sample k=1 (row 2), of item 1 is k=2 (row 5)
    expected_loser = torch.stack([x0[2], x0[5]])
    t = tb.branches["l"].t
    sched = ctx.adapter.noise_scheduler
    eps = (tb.branches["l"].x_t - sched.add_noise(expected_loser, torch.zeros_like(expected_loser), t)) / (
        1 - sched.alphas_cumprod[t]).sqrt()[:, None]
    assert torch.allclose(sched.add_noise(expected_loser, eps, t), tb.branches["l"].x_t, atol=1e-5)
    assert torch.allclose(tb.branches["l"].x_t - tb.branches["w"].x_t,
                          sched.alphas_cumprod[t].sqrt()[:, None] * (expected_loser - tb.branches["w"].batch.x0), atol=1e-5)


def test_sopo_gate_threshold_and_weight_by_hand():
    """Rewards (.3, .5) with τ = .45: only the first loser counts; weight C − S = 2 − .5 = 1.5.
    Δ_w = −.1, Δ_l = .2 for both: item 0 arg = 1.5·(−.1) − .2 = −.35; item 1 arg = −.15."""
    import math

    obj = SoPo(tau=0.45, c=2.0, beta=1.0)
    err = {"w": torch.tensor([0.1, 0.1]), "l": torch.tensor([0.4, 0.4])}
    ref = {"w": torch.tensor([0.2, 0.2]), "l": torch.tensor([0.2, 0.2])}
    extras = {"loser_reward": torch.tensor([0.3, 0.5]), "winner_similarity": torch.tensor([0.5, 0.5])}
    loss, metrics = obj(err, ref, extras)
    assert loss.tolist() == pytest.approx([math.log1p(math.exp(-0.35)), math.log1p(math.exp(-0.15))], abs=1e-6)
    assert metrics["open_gate"].item() == 0.5
    quant = SoPo(tau_quantile=1.0)(err, ref, extras)[1]  # τ at the batch maximum opens every gate
    assert quant["open_gate"].item() == 1.0


@pytest.mark.parametrize("objective", ["dro", "sopo"])
def test_online_recipes_train_end_to_end(tmp_path, objective):
    train(cfg_for(tmp_path / objective, objective, "train.max_steps=3", "online.sync_every=2"))
    rows = read_metrics(tmp_path / objective)
    assert len(rows) == 3 and all(r["loss"] is not None for r in rows)
    if objective == "sopo":
        assert {"reward_w", "reward_l", "open_gate", "winner_similarity"} <= set(rows[0])

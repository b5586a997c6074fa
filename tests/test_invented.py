"""What genpref adds beyond the published formulas, each pinned against an independent computation:
implicit rewards and their sign (SeRA bootstrap), pair sources and their targets (policy_target: noise),
selection rules, soft labels and ties, the objectives' diagnostics, guards, reward normalisation, the
data and noise streams, and the rollout copy. Every test here was seen to fail under a one-line change
of the behaviour it names (README, "Development")."""

import math

import pytest
import torch

from genpref import build
from genpref.adapter import Batch
from genpref.config import from_dict, merge_overrides
from genpref.errors import UserError
from genpref.guards import BadLossGuard, CollapseGuard
from genpref.noising import draw_t_eps, item_generator, training_target
from genpref.objectives import DPO, DRO, KTO, SoPo, build_objective
from genpref.online import RolloutPolicy
from genpref.recipes import AIFeedback, ExpertRollouts, ExpertVsSample, SourceContext, implicit_reward, subset
from genpref.rewards import Ensemble, zscore
from genpref.stream import ItemStream, micro_positions
from genpref.toy import ToyAdapter

LORA = {"rank": 4, "alpha": 4, "targets": ["net.0", "net.2"]}


def cfg_for(out, objective="dpo", *overrides):
    data = {
        "model": {"kind": "toy", "lora": dict(LORA)},
        "objective": {"name": objective, "beta": 50.0},
        "online": {"steps": 4, "num_samples": 3},
        "train": {"output_dir": str(out), "max_steps": 4, "batch_size": 4, "lr": 1e-3, "tensorboard": False},
    }
    return from_dict(merge_overrides(data, list(overrides)))


def toy_ctx(cfg, scale=0.3):
    """The toy adapter with LoRA B drawn at random, so policy != reference."""
    adapter = ToyAdapter(cfg, "cpu")
    adapter.denoiser.eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in adapter.denoiser.named_parameters():
            if "lora_B" in n:
                p.copy_(scale * torch.randn(p.shape, generator=g))
    rollout = RolloutPolicy(adapter.trainable_parameters(), cfg.online.sync_every)
    return SourceContext(adapter, cfg, torch.device("cpu"), rollout=rollout, reward=build.build_reward(cfg, "cpu"))


def by_hand_error(adapter, x0, eps, t, batch, reference: bool) -> torch.Tensor:
    """mean((pred − ε)²) per sample at x_t = √ᾱ·x0 + √(1−ᾱ)·ε, ᾱ read from the schedule (ε-prediction)."""
    ab = adapter.noise_scheduler.alphas_cumprod[t].float()[:, None]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    with torch.no_grad():
        if reference:
            with adapter.reference():
                pred = adapter.predict(x_t, t, batch)
        else:
            pred = adapter.predict(x_t, t, batch)
    return ((pred - eps) ** 2).mean(1)


def by_hand_implicit_reward(ctx, batch, pos, draws):
    """r = mean over draws of e_ref − e_θ; draw d keys its (t, ε) at positions p + (3 + d)·10¹²."""
    total = torch.zeros(len(batch))
    for d in range(draws):
        t, eps = draw_t_eps(ctx.seed, [p + (3 + d) * 10**12 for p in pos], (2,), 100, "cpu")
        total += by_hand_error(ctx.adapter, batch.x0, eps, t, batch, True) - by_hand_error(ctx.adapter, batch.x0, eps, t, batch, False)
    return total / draws


# ---------------------------------------------------------------------------------------------- implicit reward


@pytest.mark.parametrize("draws", [1, 3])
def test_implicit_reward_is_reference_error_minus_policy_error(tmp_path, draws):
    ctx = toy_ctx(cfg_for(tmp_path, "dpo", f"online.reward_draws={draws}"))
    items = ctx.adapter.load_items("experts")[:6]
    batch = ctx.adapter.encode([it["x"] for it in items], [it["prompt"] for it in items])
    pos = [10, 11, 12, 13, 14, 15]
    got = implicit_reward(ctx, batch, pos)
    want = by_hand_implicit_reward(ctx, batch, pos, draws)
    assert torch.allclose(got, want, atol=1e-5)  # float32 rounding of two routes to x_t
    assert (want > 1e-3).any() and (want < -1e-3).any()  # a sign flip cannot pass


def test_implicit_reward_is_zero_when_policy_equals_reference(tmp_path):
    ctx = toy_ctx(cfg_for(tmp_path, "dpo", "online.reward_draws=2"), scale=0.0)  # LoRA B = 0
    items = ctx.adapter.load_items("experts")[:4]
    batch = ctx.adapter.encode([it["x"] for it in items], [it["prompt"] for it in items])
    assert torch.equal(implicit_reward(ctx, batch, [0, 1, 2, 3]), torch.zeros(4))


def test_bootstrap_winner_is_the_sample_with_the_largest_hand_computed_implicit_reward(tmp_path):
    """online.annotator=implicit (SeRA bootstrap): of K samples per prompt, w = argmax r, l = argmin r,
    with r computed by hand; sample j of prompt i uses prompt i's draws."""
    cfg = cfg_for(tmp_path, "dpo", "data.source=ai_feedback", "online.annotator=implicit", "online.reward_draws=1",
                  "online.num_samples=4")  # fmt: skip
    ctx = toy_ctx(cfg)
    captured = {}
    real = ctx.generate
    ctx.generate = lambda batch, pos, callback=None: captured.setdefault("x0", real(batch, pos, callback))
    src = AIFeedback(ctx, ctx.adapter.load_items("prompts"))
    pos = [0, 1, 2]
    tb = src.batch_at(pos)
    x0 = captured["x0"]  # [K·B, 2], sample j of prompt i at row j·B + i
    prompts = [src.items[src.stream.item(p)]["prompt"] for p in pos]
    cands = ctx.adapter.encode(list(x0.numpy()), prompts * 4)
    r = by_hand_implicit_reward(ctx, cands, pos * 4, 1).view(4, 3)
    rows = torch.arange(3)
    assert torch.equal(tb.branches["w"].batch.x0, x0.view(4, 3, 2)[r.argmax(0), rows])
    assert torch.equal(tb.branches["l"].batch.x0, x0.view(4, 3, 2)[r.argmin(0), rows])
    assert not torch.equal(r.argmax(0), r.argmin(0))
    assert tb.stats["score_gap"] == pytest.approx((r.max(0).values - r.min(0).values).mean().item(), abs=1e-6)


# ---------------------------------------------------------------------------------------------- DRO targets


def _dro_batch(tmp_path, *overrides):
    cfg = cfg_for(tmp_path, "dro", "online.states_per_rollout=1", "train.batch_size=4", *overrides)
    ctx = toy_ctx(cfg)
    captured = []
    real = ctx.generate
    ctx.generate = lambda batch, pos, callback=None: captured.append((batch.x0.clone(), real(batch, pos, callback))) or captured[-1][1]
    src = ExpertRollouts(ctx, ctx.adapter.load_items("experts"))
    return ctx, src.next(0, 0), captured


def test_policy_target_noise_noises_the_generated_sample_with_the_experts_eps(tmp_path):
    """policy_target: noise — the negative is the rollout's final sample x0_gen noised with the SAME t and ε
    as the expert, regressed onto that ε: l.x_t = √ᾱ·x0_gen + √(1−ᾱ)·ε, l.target = w.target = ε."""
    ctx, tb, captured = _dro_batch(tmp_path, "objective.policy_target=noise")
    (experts, generated), = captured
    w, l = tb.branches["w"], tb.branches["l"]
    assert torch.equal(w.t, l.t) and torch.equal(w.target, l.target)
    ab = ctx.adapter.noise_scheduler.alphas_cumprod[l.t].float()[:, None]
    x0_l = (l.x_t - (1 - ab).sqrt() * l.target) / ab.sqrt()  # recover what was noised
    x0_w = (w.x_t - (1 - ab).sqrt() * w.target) / ab.sqrt()
    for a, b in zip(x0_l, x0_w):
        i = int(torch.argmin((experts - b).norm(dim=1)))  # the row of this pair's expert
        assert torch.allclose(b, experts[i], atol=1e-4)
        assert torch.allclose(a, generated[i], atol=1e-4)  # the generated sample of the same prompt
        assert not torch.allclose(a, experts[i], atol=1e-2)


def test_policy_target_rollout_prediction_regresses_onto_the_recorded_prediction(tmp_path):
    """Published target: the negative is a recorded rollout state, its target the rollout copy's own
    prediction there (recomputed here), at the state's own timestep, paired with the expert at that t."""
    ctx, tb, _ = _dro_batch(tmp_path)
    w, l = tb.branches["w"], tb.branches["l"]
    with torch.no_grad():
        again = ctx.adapter.predict(l.x_t, l.t, l.batch)
    assert torch.allclose(l.target, again, atol=1e-5)
    assert torch.equal(w.t, l.t)
    assert not torch.equal(l.target, w.target)  # not the expert's ε


# ---------------------------------------------------------------------------------------------- selection


@pytest.mark.parametrize("direction", ["largest", "smallest"])
def test_selection_keeps_the_pairs_at_the_chosen_end_of_the_hand_margin(tmp_path, direction):
    """select.fraction 0.25 over batch 2: 8 pairs drawn, scored by (e_ref,w − e_w) − (e_ref,l − e_l)
    computed by hand, the 2 at the chosen end kept."""
    cfg = cfg_for(tmp_path, "dpo", "select.by=implicit_margin", "select.fraction=0.25", f"select.direction={direction}",
                  "train.batch_size=2")  # fmt: skip
    ctx = toy_ctx(cfg)
    src = build.build_source(ctx, cfg)
    tb = src.next(1, 0)
    pool = src.inner.batch_at(list(range(8, 16)))  # step 1 of an over-drawn batch of 8
    w, l = pool.branches["w"], pool.branches["l"]
    ew, el = w.target, l.target  # ε, shared
    margin = (by_hand_error(ctx.adapter, w.batch.x0, ew, w.t, w.batch, True) - by_hand_error(ctx.adapter, w.batch.x0, ew, w.t, w.batch, False)) - (
        by_hand_error(ctx.adapter, l.batch.x0, el, l.t, l.batch, True) - by_hand_error(ctx.adapter, l.batch.x0, el, l.t, l.batch, False))
    order = torch.argsort(margin, descending=direction == "largest")[:2]
    assert sorted(tb.branches["w"].x_t[:, 0].tolist()) == pytest.approx(sorted(w.x_t[order, 0].tolist()))
    assert tb.stats["select_margin_kept"] == pytest.approx(margin[order].mean().item(), abs=1e-6)


def test_subset_keeps_rows_aligned_across_branches_and_extras():
    def branch(v):
        from genpref.noising import Branch

        return Branch(v[:, None].float(), v, v[:, None].float(), Batch(v[:, None].float(), {"c": v}, None, [str(i) for i in v.tolist()]))

    from genpref.recipes import TrainBatch

    tb = TrainBatch({"w": branch(torch.arange(5)), "l": branch(torch.arange(5) + 10)}, {"label": torch.arange(5) * 0.1})
    out = subset(tb, torch.tensor([3, 1]))
    assert out.branches["w"].t.tolist() == [3, 1] and out.branches["l"].t.tolist() == [13, 11]
    assert out.branches["l"].batch.prompts == ["13", "11"] and out.extras["label"].tolist() == pytest.approx([0.3, 0.1])


# ---------------------------------------------------------------------------------------------- labels, objectives


def test_soft_label_gives_the_cross_entropy_with_p_and_is_ignored_without_soft_label():
    """z = ½·β·[(e_ref,w − e_ref,l) − (e_w − e_l)] = ½·10·[(.3 − .2) − (.1 − .4)] = 2.
    p = .7: −[.7·log σ(2) + .3·log σ(−2)]; without soft_label: −log σ(2) whatever the label."""
    err = {"w": torch.tensor([0.1]), "l": torch.tensor([0.4])}
    ref = {"w": torch.tensor([0.3]), "l": torch.tensor([0.2])}
    ls = lambda z: -math.log1p(math.exp(-z))
    soft, m = DPO(beta=10.0, soft_label=True)(err, ref, {"label": torch.tensor([0.7])})
    assert soft.item() == pytest.approx(-(0.7 * ls(2.0) + 0.3 * ls(-2.0)), abs=1e-6)
    hard, _ = DPO(beta=10.0)(err, ref, {"label": torch.tensor([0.7])})
    assert hard.item() == pytest.approx(-ls(2.0), abs=1e-6)
    assert m["margin"].item() == pytest.approx(2.0) and m["implicit_acc"].item() == 1.0
    half, _ = DPO(beta=10.0, soft_label=True)(err, ref, {"label": torch.tensor([0.5])})  # a kept tie (data.ties: half)
    assert half.item() == pytest.approx(-(0.5 * ls(2.0) + 0.5 * ls(-2.0)), abs=1e-6)


def test_ai_feedback_label_is_sigmoid_of_gap_over_scale_and_reaches_the_loss(tmp_path):
    cfg = cfg_for(tmp_path, "dpo", "data.source=ai_feedback", "online.label_scale=0.25", "objective.soft_label=true",
                  "online.num_samples=2")  # fmt: skip
    ctx = toy_ctx(cfg)
    ctx.reward = type("R", (), {"score": lambda self, s, p: torch.tensor([0.1, 0.5, 0.4, 0.5])})()  # [K=2, B=2]
    tb = AIFeedback(ctx, ctx.adapter.load_items("prompts")).batch_at([0, 1])
    assert tb.extras["label"].tolist() == pytest.approx([1 / (1 + math.exp(-0.3 / 0.25)), 0.5])  # an equal-score pair: 0.5
    obj = build_objective(cfg.objective)
    assert obj.soft_label


def test_expert_anchor_adds_lambda_times_the_preferred_error_to_every_objective():
    err = {"w": torch.tensor([0.1, 0.3]), "l": torch.tensor([0.4, 0.2]), "x": torch.tensor([0.1, 0.3])}
    ref = {"w": torch.tensor([0.3, 0.1]), "l": torch.tensor([0.2, 0.2]), "x": torch.tensor([0.2, 0.2])}
    extras = {"loser_reward": torch.tensor([0.3, 0.5]), "winner_similarity": torch.tensor([0.5, 0.2]),
              "desirable": torch.tensor([True, False]), "label": torch.ones(2)}  # fmt: skip
    for plain, anchored in [(DPO(10.0), DPO(10.0, sft_weight=2.0)), (DRO(), DRO(sft_weight=2.0)), (SoPo(), SoPo(sft_weight=2.0))]:
        assert torch.allclose(anchored(err, ref, extras)[0] - plain(err, ref, extras)[0], 2.0 * err["w"])
    # KTO anchors on the desirable samples only
    assert torch.allclose(KTO(sft_weight=2.0)(err, ref, extras)[0] - KTO()(err, ref, extras)[0], torch.tensor([0.2, 0.0]))


def test_dro_diagnostics_gap_and_hinge_by_hand():
    """gap = (e_ref,E − e_E) − (e_ref,P − e_P): pair 0: (.3 − .1) − (.2 − .4) = .4 (ranked right, hinge off);
    pair 1: (.1 − .3) − (.2 − .2) = −.2 (hinge on). With an anchor the hinge is read from gap < m."""
    err = {"w": torch.tensor([0.1, 0.3]), "l": torch.tensor([0.4, 0.2])}
    ref = {"w": torch.tensor([0.3, 0.1]), "l": torch.tensor([0.2, 0.2])}
    loss, m = DRO()(err, ref, {})
    assert loss.tolist() == pytest.approx([0.0, 0.201])
    assert m["hinge_active"].item() == 0.5 and m["margin"].item() == pytest.approx(0.1)
    assert m["implicit_acc"].item() == 0.5 and m["margin_min"].item() == pytest.approx(-0.2)
    assert DRO(sft_weight=1.0)(err, ref, {})[1]["hinge_active"].item() == 0.5
    assert m["e_w"].item() == pytest.approx(0.2) and m["e_ref_w"].item() == pytest.approx(0.2) and m["e_l"].item() == pytest.approx(0.3)


@pytest.mark.parametrize("form", ["code", "eq17"])
def test_sopo_sigmoid_argument_metrics_follow_the_form(form):
    """Δ_w = e_w − e_ref,w, Δ_l likewise; C − S = 2 − .5 = 1.5; gate open for pair 0 only (r_l .3 < .45).
    code: 1.5·Δ_w − g·Δ_l; eq17: 1.5·(Δ_w − g·Δ_l). Pair 0: Δ_w = −.1, Δ_l = .2; pair 1: Δ_w = .2, Δ_l = .1."""
    err = {"w": torch.tensor([0.1, 0.4]), "l": torch.tensor([0.4, 0.3])}
    ref = {"w": torch.tensor([0.2, 0.2]), "l": torch.tensor([0.2, 0.2])}
    extras = {"loser_reward": torch.tensor([0.3, 0.5]), "winner_similarity": torch.tensor([0.5, 0.5])}
    loss, m = SoPo(form=form, beta=2.0)(err, ref, extras)
    arg = [1.5 * -0.1 - 0.2, 1.5 * 0.2] if form == "code" else [1.5 * (-0.1 - 0.2), 1.5 * 0.2]
    arg = [2.0 * a for a in arg]
    assert m["sigmoid_arg_min"].item() == pytest.approx(min(arg), abs=1e-6)
    assert m["sigmoid_arg_max"].item() == pytest.approx(max(arg), abs=1e-6)
    assert loss.tolist() == pytest.approx([math.log1p(math.exp(a)) for a in arg], abs=1e-6)  # −log σ(−arg)


def test_sopo_tau_quantile_counts_the_quantile_itself_as_below_tau():
    err = {"w": torch.zeros(4), "l": torch.zeros(4)}
    extras = {"loser_reward": torch.tensor([0.1, 0.2, 0.3, 0.4]), "winner_similarity": torch.zeros(4)}
    m = SoPo(tau_quantile=0.5)(err, err, extras)[1]  # median of the four: .25 (interpolated) -> 2 open
    assert m["open_gate"].item() == 0.5
    m = SoPo(tau_quantile=1 / 3)(err, err, extras)[1]  # the quantile is exactly .2: .1 and .2 open
    assert m["open_gate"].item() == 0.5 and m["tau"].item() > 0.2


def test_kto_diagnostics_by_hand():
    """g = e_ref − e: (.1, −.1, .1, −.1); desirable (T, T, F, F): right for items 0 and 3."""
    err = {"x": torch.tensor([0.1, 0.3, 0.1, 0.3])}
    ref = {"x": torch.tensor([0.2, 0.2, 0.2, 0.2])}
    _, m = KTO()(err, ref, {"desirable": torch.tensor([True, True, False, False])})
    assert m["implicit_acc"].item() == 0.5 and m["desirable_frac"].item() == 0.5
    assert m["e_w"].item() == pytest.approx(0.2)  # desirable items only: (.1 + .3) / 2


def test_implicit_accuracy_counts_exact_ties_as_half_as_the_readme_says():
    from genpref.losses import implicit_accuracy

    assert implicit_accuracy(torch.tensor([1.0, 0.0, -1.0, 0.0])).item() == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    readme = (__import__("pathlib").Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "exact ties, z = 0, count as half" in readme and "count as wrong" not in readme


# ---------------------------------------------------------------------------------------------- guards


def test_collapse_guard_sums_over_a_full_window_and_warns_once():
    """ratio = Σe / Σe_ref over the last `window` steps (not a mean of ratios); silent until the window fills."""
    guard = CollapseGuard(factor=2.0, action="warn", window=3)
    assert guard.update(1, 9.0, 1.0) is None and guard.update(2, 9.0, 1.0) is None  # window not full yet
    assert guard.update(3, 0.0, 8.0) is None  # Σ 18 / Σ 10 = 1.8 <= 2 (a mean of ratios would be 6)
    assert guard.ratio() == pytest.approx(1.8)
    assert guard.update(4, 2.2, 0.0) is None  # window (9, 0, 2.2) / (1, 8, 0): 11.2 / 9 = 1.24
    msg = guard.update(5, 20.0, 1.0)  # window (0, 2.2, 20) / (8, 0, 1) = 22.2 / 9 = 2.47 > 2
    assert msg is not None and "2.47×" in msg and "step 5" in msg
    assert guard.update(6, 20.0, 1.0) is None  # warned once
    assert guard.update(7, 2.0, 1.0) is None  # exactly 2.0 does not trip a fresh guard either:
    fresh = CollapseGuard(factor=2.0, action="stop", window=1)
    assert fresh.update(1, 2.0, 1.0) is None
    with pytest.raises(UserError, match="collapse guard"):
        fresh.update(2, 2.0001, 1.0)
    assert CollapseGuard(factor=None, action="stop", window=1).update(1, 100.0, 1.0) is None  # off


def test_collapse_guard_state_round_trip_keeps_the_window_and_the_warning():
    guard = CollapseGuard(factor=2.0, action="warn", window=3)
    for step, e in enumerate([1.0, 2.0, 3.0, 4.0], 1):
        guard.update(step, e, 1.0)
    clone = CollapseGuard(factor=2.0, action="warn", window=3)
    clone.load_state_dict(guard.state_dict())
    assert list(clone.e) == [2.0, 3.0, 4.0] and list(clone.ref) == [1.0, 1.0, 1.0] and clone.warned
    assert clone.update(5, 5.0, 1.0) is None  # already warned: stays quiet


def test_bad_loss_guard_counts_consecutive_only():
    guard = BadLossGuard(limit=3)
    assert guard.check(False, 1) is False and guard.check(False, 2) is False
    assert guard.check(True, 3) is True  # a finite loss resets the streak
    assert guard.check(False, 4) is False and guard.check(False, 5) is False
    with pytest.raises(UserError, match="step 6: .*the loss was NaN/inf for 3 steps in a row"):
        guard.check(False, 6)


# ---------------------------------------------------------------------------------------------- rewards


def test_zscore_ensemble_by_hand():
    """Scores (1, 2, 3) and (10, 10, 40), weights (1, .5): population std (.8165, 14.142) standardise each
    model first; weighted sum = z1 + .5·z2."""
    a = type("A", (), {"score": lambda self, s, p: torch.tensor([1.0, 2.0, 3.0])})()
    b = type("B", (), {"score": lambda self, s, p: torch.tensor([10.0, 10.0, 40.0])})()
    z1 = [(v - 2.0) / math.sqrt(2 / 3) for v in (1.0, 2.0, 3.0)]
    z2 = [(v - 20.0) / math.sqrt(200.0) for v in (10.0, 10.0, 40.0)]
    got = Ensemble([a, b], [1.0, 0.5], "zscore").score([0, 1, 2], ["p"] * 3)
    assert got.tolist() == pytest.approx([x + 0.5 * y for x, y in zip(z1, z2)], abs=1e-4)
    raw = Ensemble([a, b], [1.0, 0.5], "none").score([0, 1, 2], ["p"] * 3)
    assert raw.tolist() == pytest.approx([6.0, 7.0, 23.0])
    assert zscore(torch.tensor([5.0])).tolist() == [0.0]  # one score carries no spread


# ---------------------------------------------------------------------------------------------- streams, noise


def test_micro_positions_split_a_global_batch_by_micro_batch_then_rank():
    """Step 2, batch 2, grad_accum 2, world 2: global batch 8 -> positions 16..23; micro 1 of rank 0 = 20, 21."""
    pos = lambda m, r: micro_positions(2, m, batch_size=2, grad_accum=2, world=2, rank=r)
    assert pos(0, 0) == [16, 17] and pos(0, 1) == [18, 19] and pos(1, 0) == [20, 21] and pos(1, 1) == [22, 23]
    one = micro_positions(2, 0, batch_size=8, grad_accum=1, world=1, rank=0)
    assert sorted(pos(0, 0) + pos(0, 1) + pos(1, 0) + pos(1, 1)) == one


def test_item_stream_is_a_fresh_permutation_each_epoch():
    s = ItemStream(5, seed=3)
    first, second = [s.item(p) for p in range(5)], [s.item(p) for p in range(5, 10)]
    assert sorted(first) == sorted(second) == list(range(5)) and first != second
    assert [ItemStream(5, 3, shuffle=False).item(p) for p in range(7)] == [0, 1, 2, 3, 4, 0, 1]


def test_refilling_sources_give_each_rank_its_own_chunk(tmp_path):
    """Rank r of W draws positions [d·W + r·n, d·W + (r+1)·n) for its d-th..(d+n)-th item: 2 ranks of 2 items
    cover exactly what 1 rank of 4 would, and noise positions stay clear of item positions."""
    def src(rank, world):
        cfg = cfg_for(tmp_path, "dro")
        ctx = toy_ctx(cfg)
        ctx.rank, ctx.world = rank, world
        return ExpertRollouts(ctx, ctx.adapter.load_items("experts"))

    a, b, one = src(0, 2), src(1, 2), src(0, 1)
    assert a._draw(2) == [0, 1] and b._draw(2) == [2, 3] and a._draw(2) == [4, 5] and b._draw(2) == [6, 7]
    assert one._draw(4) == [0, 1, 2, 3] and one._draw(4) == [4, 5, 6, 7]
    assert a._noise_positions(2) == [10**9, 10**9 + 1] and b._noise_positions(2) == [10**9 + 2, 10**9 + 3]
    assert (a.state_dict()["drawn"], a.state_dict()["trained"]) == (4, 2)


def test_noise_is_keyed_by_position_not_by_batch():
    t1, e1 = draw_t_eps(7, [5], (3,), 100, "cpu")
    t2, e2 = draw_t_eps(7, [4, 5, 6], (3,), 100, "cpu")
    assert torch.equal(t1[0], t2[1]) and torch.equal(e1[0], e2[1])
    assert not torch.equal(e2[0], e2[1])
    g1, g2 = item_generator(7, 5, 0), item_generator(7, 5, 1)  # streams of one item differ
    assert not torch.equal(torch.randn(3, generator=g1), torch.randn(3, generator=g2))


@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
def test_training_target_by_prediction_type(kind):
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=100, prediction_type=kind)
    x0, eps, t = torch.randn(3, 2), torch.randn(3, 2), torch.tensor([0, 50, 99])
    ab = sched.alphas_cumprod[t][:, None]
    want = {"epsilon": eps, "sample": x0, "v_prediction": ab.sqrt() * eps - (1 - ab).sqrt() * x0}[kind]
    assert torch.allclose(training_target(sched, x0, eps, t), want, atol=1e-6)


# ---------------------------------------------------------------------------------------------- rollout copy


def test_rollout_copy_syncs_on_multiples_of_sync_every_and_round_trips():
    p = torch.nn.Parameter(torch.zeros(2))
    every = RolloutPolicy([p], sync_every=1)
    assert every.snapshot is None  # fully online: no copy kept
    rollout = RolloutPolicy([p], sync_every=2)
    for step in (1, 2, 3):
        with torch.no_grad():
            p.fill_(float(step))
        rollout.after_optimizer_step(step)
    assert rollout.synced_at == 2
    with rollout.active():
        assert p.tolist() == [2.0, 2.0]  # the weights of step 2, not step 3
    assert p.tolist() == [3.0, 3.0]
    q = torch.nn.Parameter(torch.full((2,), 9.0))
    clone = RolloutPolicy([q], sync_every=2)
    clone.load_state_dict(rollout.state_dict())
    with clone.active():
        assert q.tolist() == [2.0, 2.0]
    assert clone.synced_at == 2


def test_dataset_reset_passes_reset_t_and_the_expert_to_the_sampler(tmp_path):
    cfg = cfg_for(tmp_path, "dpo", "data.source=expert_vs_sample", "online.reset_t=20")
    ctx = toy_ctx(cfg)
    seen = {}

    def fake_generate(batch, *, generator, num_steps, guidance, start_t, timestep_jitter, callback):
        seen.update(x0=batch.x0.clone(), start_t=start_t, steps=num_steps, jitter=timestep_jitter)
        return batch.x0 + 1.0

    ctx.adapter.generate = fake_generate
    tb = ExpertVsSample(ctx, ctx.adapter.load_items("experts")).batch_at([0, 1, 2])
    assert seen["start_t"] == 20 and seen["steps"] == 4 and seen["jitter"] is False
    assert torch.equal(seen["x0"], tb.branches["w"].batch.x0)
    assert torch.allclose(tb.branches["l"].batch.x0, tb.branches["w"].batch.x0 + 1.0)
    assert tb.extras["label"].tolist() == [1.0, 1.0, 1.0]
    assert torch.equal(tb.branches["w"].t, tb.branches["l"].t) and torch.equal(tb.branches["w"].target, tb.branches["l"].target)


def test_timestep_jitter_defaults_on_for_dro_rollouts_only(tmp_path):
    assert toy_ctx(cfg_for(tmp_path, "dro")).jitter is True
    assert toy_ctx(cfg_for(tmp_path, "dpo", "data.source=expert_vs_sample")).jitter is False
    assert toy_ctx(cfg_for(tmp_path, "dro", "online.timestep_jitter=false")).jitter is False
    assert toy_ctx(cfg_for(tmp_path, "dro", "data.source=expert_vs_sample")).jitter is False


@pytest.mark.parametrize("section,key", [("model", "ema_path"), ("data", "num_workers")])
def test_keys_that_did_nothing_are_gone(section, key):
    """model.ema_path and data.num_workers were accepted and ignored; now a config naming them is refused."""
    from genpref.config import ConfigError

    data = {"model": {"kind": "toy"}, "data": {}, "objective": {"name": "dpo"}, "train": {"output_dir": "x"}}
    data[section][key] = 1
    with pytest.raises(ConfigError, match=f"unknown key '{section}.{key}'"):
        from_dict(data)


# ---------------------------------------------------------------------------------------------- every logged metric


ERR = {"w": torch.tensor([0.1, 0.3]), "l": torch.tensor([0.4, 0.2]), "x": torch.tensor([0.1, 0.3]), "kl": torch.tensor([0.5, 0.7])}
REF = {"w": torch.tensor([0.3, 0.1]), "l": torch.tensor([0.2, 0.2]), "x": torch.tensor([0.2, 0.2])}


def _values(metrics):
    return {k: pytest.approx(float(v), abs=1e-6) for k, v in metrics.items()}


def _floats(metrics):
    return {k: float(v) for k, v in metrics.items()}


def test_every_metric_of_every_objective_by_hand():
    """The logged dictionaries, key for key (benchmarks and the collapse guard read them by name).
    Pair 0: Δ_w = −.2, Δ_l = .2; pair 1: Δ_w = .2, Δ_l = 0. DRO gap = −Δ_w + Δ_l = (.4, −.2)."""
    _, m = DRO(margin=0.001)(ERR, REF, {})
    assert _floats(m) == _values({"e_w": 0.2, "e_ref_w": 0.2, "e_l": 0.3, "e_ref_l": 0.2, "hinge_active": 0.5, "margin": 0.1,
                         "margin_min": -0.2, "margin_max": 0.4, "implicit_acc": 0.5})  # fmt: skip
    _, m = DPO(beta=10.0)(ERR, REF, {})  # z = 5·gap = (2, −1)
    assert _floats(m) == _values({"e_w": 0.2, "e_ref_w": 0.2, "e_l": 0.3, "e_ref_l": 0.2, "margin": 0.5, "margin_min": -1.0,
                         "margin_max": 2.0, "implicit_acc": 0.5})  # fmt: skip
    extras = {"loser_reward": torch.tensor([0.3, 0.5]), "winner_similarity": torch.tensor([0.5, 0.2])}
    _, m = SoPo(beta=1.0)(ERR, REF, extras)  # code: (1.5·−.2 − .2, 1.8·.2 − 0) = (−.5, .36)
    assert _floats(m) == _values({"e_w": 0.2, "e_ref_w": 0.2, "open_gate": 0.5, "tau": 0.45, "loser_reward": 0.4,
                         "winner_similarity": 0.35, "sigmoid_arg_min": -0.5, "sigmoid_arg_max": 0.36, "margin": 0.1,
                         "margin_min": -0.2, "margin_max": 0.4, "implicit_acc": 0.5})  # fmt: skip
    _, m = KTO()(ERR, REF, {"desirable": torch.tensor([True, False])})  # g = (.1, −.1): both right
    assert _floats(m) == _values({"e_w": 0.1, "e_ref_w": 0.2, "implicit_acc": 1.0, "desirable_frac": 0.5})
    _, m = KTO()(ERR, REF, {"desirable": torch.tensor([False, False])})  # nothing desirable: every sample
    assert _floats(m) == _values({"e_w": 0.2, "e_ref_w": 0.2, "implicit_acc": 0.5, "desirable_frac": 0.0})
    from genpref.objectives import SFT, WithKL

    loss, m = SFT()(ERR, REF, {})
    assert _floats(m) == _values({"e_w": 0.2, "e_ref_w": 0.2}) and torch.equal(loss, ERR["w"])
    assert _floats(SFT()(ERR, {}, {})[1]) == _values({"e_w": 0.2})
    loss, m = WithKL(DPO(beta=10.0), 2.0)(ERR, REF, {"label": torch.ones(2)})
    plain = DPO(beta=10.0)(ERR, REF, {})[0]
    assert torch.allclose(loss, plain + 2.0 * ERR["kl"]) and m["kl"].item() == pytest.approx(0.6)
    assert WithKL(SFT(), 1.0).branches == ("w", "kl") and WithKL(SFT(), 1.0).needs_reference


def test_objectives_pass_their_constants_to_the_losses():
    from genpref import losses

    extras = {"loser_reward": torch.tensor([0.3, 0.5]), "winner_similarity": torch.tensor([0.5, 0.2])}
    got = SoPo(tau=0.4, c=3.0, beta=2.0, form="eq17")(ERR, REF, extras)[0]
    assert torch.allclose(got, losses.sopo(ERR["w"], ERR["l"], REF["w"], REF["l"], extras["loser_reward"],
                                           extras["winner_similarity"], 0.4, 3.0, 2.0, "eq17"))  # fmt: skip
    assert not torch.allclose(got, losses.sopo(ERR["w"], ERR["l"], REF["w"], REF["l"], extras["loser_reward"],
                                               extras["winner_similarity"], 0.4, 3.0, 2.0, "code"))  # fmt: skip
    assert torch.allclose(DRO(margin=0.3)(ERR, REF, {})[0], torch.tensor([0.0, 0.5]))  # relu(−gap + m)
    want = torch.tensor([True, False])
    got = KTO(beta=7.0, z_ref=0.05, w_desirable=2.0, w_undesirable=3.0)(ERR, REF, {"desirable": want})[0]
    assert torch.allclose(got, losses.diffusion_kto(ERR["x"], REF["x"], want, 7.0, 0.05, 2.0, 3.0))
    assert torch.allclose(DPO(beta=10.0, kind="hinge")(ERR, REF, {})[0], torch.tensor([0.0, 2.0]))  # relu(1 − z)


def test_direct_reward_loss_and_metrics_by_hand():
    """½·(r − V − β·g)², g = e_ref − e = (.1, −.1), V = 0 at start, β = 2: residual (1 − .2, 0 + .2)."""
    from genpref.objectives import DirectReward

    obj = DirectReward(beta=2.0, num_prompts=3)
    extras = {"rating": torch.tensor([1.0, 0.0]), "prompt_index": torch.tensor([2, 0])}
    loss, m = obj(ERR, REF, extras)
    assert loss.tolist() == pytest.approx([0.5 * 0.8**2, 0.5 * 0.2**2])
    assert _floats(m) == _values({"e_w": 0.1, "e_ref_w": 0.2, "value": 0.0, "residual": 0.5, "implicit_acc": 1.0})
    with torch.no_grad():
        obj.value.weight[2] = 0.5  # V(prompt 2) enters with a minus sign
    assert obj(ERR, REF, extras)[0].tolist() == pytest.approx([0.5 * 0.3**2, 0.5 * 0.2**2])
    extras["rating"] = torch.tensor([0.5, 0.2])  # 0.5 counts as desirable
    assert obj(ERR, REF, extras)[1]["e_w"].item() == pytest.approx(0.1)


def test_offline_and_rating_sources_carry_labels_and_desirability(tmp_path):
    from genpref.recipes import OfflinePairs, Ratings

    ctx = toy_ctx(cfg_for(tmp_path, "dpo"))
    items = [{"prompt": "left", "w": [0.0, 0.0], "l": [1.0, 1.0], "label": 0.5}, {"prompt": "up", "w": [0.0, 1.0], "l": [2.0, 2.0]}]
    src = OfflinePairs(ctx, items)
    src.stream.item = lambda p: p  # stream order = item order
    tb = src.batch_at([0, 1])
    assert tb.extras["label"].tolist() == [0.5, 1.0]  # a kept tie keeps 0.5; no label = a clear win
    assert tb.branches["w"].batch.x0.tolist() == [[0.0, 0.0], [0.0, 1.0]] and tb.branches["l"].batch.x0[1].tolist() == [2.0, 2.0]
    rated = [{"prompt": p, "x": [0.0, 0.0], "rating": r} for p, r in [("up", 0.5), ("left", 0.49), ("up", 1.0)]]
    src = Ratings(ctx, rated)
    src.stream.item = lambda p: p
    tb = src.batch_at([0, 1, 2])
    assert tb.extras["desirable"].tolist() == [True, False, True]
    assert tb.extras["prompt_index"].tolist() == [1, 0, 1] and src.num_prompts == 2  # sorted prompts: left, up

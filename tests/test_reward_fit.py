"""Bradley–Terry reward fitting (genpref/reward_fit.py): the losses against values derived by hand, ties and
soft labels honoured, recovery of a known linear reward on synthetic embeddings, and the metrics."""

import math

import pytest
import torch

from genpref import reward_fit as rf


def test_bradley_terry_nll_by_hand():
    """Δ = r_w − r_l = 1: label 1 -> log(1 + e^-1) = 0.313262; label 0 -> log(1 + e) = 1.313262;
    a tie (0.5) -> the mean of the two, 0.813262."""
    r_w, r_l = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0.0, 0.0, 0.0])
    loss = rf.bradley_terry_nll(r_w, r_l, torch.tensor([1.0, 0.0, 0.5]))
    assert loss.tolist() == pytest.approx([0.313262, 1.313262, 0.813262], abs=1e-6)
    # swapping the pair and the label gives the same loss
    assert rf.bradley_terry_nll(r_l, r_w, torch.tensor([0.0, 1.0, 0.5])).tolist() == pytest.approx(loss.tolist())


def test_rating_loss_is_bradley_terry_against_reward_zero():
    """r = 0 -> ln 2 whatever the rating; r = 2, y = 1 -> log(1 + e^-2) = 0.126928; y = 0.25 mixes both sides."""
    r = torch.tensor([0.0, 0.0, 2.0, 2.0])
    y = torch.tensor([1.0, 0.0, 1.0, 0.25])
    expected = [math.log(2), math.log(2), math.log1p(math.exp(-2)), 0.25 * math.log1p(math.exp(-2)) + 0.75 * math.log1p(math.exp(2))]
    assert rf.rating_nll(r, y).tolist() == pytest.approx(expected, abs=1e-6)


def test_a_tie_pulls_the_two_rewards_together():
    """Gradient of the tie's loss w.r.t. r_w is σ(Δ) − 0.5 = σ(1) − 0.5 = 0.231059 (and the opposite for r_l):
    gradient descent shrinks Δ. A hard label 1 instead has gradient σ(1) − 1 = −0.268941 and widens it."""
    for label, grad in ((0.5, 0.231059), (1.0, -0.268941)):
        r_w, r_l = torch.tensor([1.0], requires_grad=True), torch.tensor([0.0], requires_grad=True)
        rf.bradley_terry_nll(r_w, r_l, torch.tensor([label])).sum().backward()
        assert r_w.grad.item() == pytest.approx(grad, abs=1e-6)
        assert r_l.grad.item() == pytest.approx(-grad, abs=1e-6)
    # through a linear head r = θ·x, one SGD step of size η changes Δ by −η·(σ(Δ) − p)·|x_w − x_l|²
    head = rf.RewardHead(2, hidden=0)
    with torch.no_grad():
        head.net[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
    x_w, x_l = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    before = (head(x_w) - head(x_l)).item()  # 1
    optimizer = torch.optim.SGD(head.parameters(), lr=0.5)
    rf.bradley_terry_nll(head(x_w), head(x_l), torch.tensor([0.5])).sum().backward()
    optimizer.step()
    after = (head(x_w) - head(x_l)).item()
    assert after == pytest.approx(before - 0.5 * 0.231059 * 2.0, abs=1e-5)  # 0.768941: closer to 0


def _synthetic(n, w, seed, soft=False, prompts=200):
    g = torch.Generator().manual_seed(seed)
    x_a, x_b = torch.randn(n, len(w), generator=g), torch.randn(n, len(w), generator=g)
    p = torch.sigmoid(x_a @ w - x_b @ w)
    label = p if soft else (torch.rand(n, generator=g) < p).float()
    return rf.PairData(x_a, x_b, label, torch.randint(0, prompts, (n,), generator=g)), p


def _cosine(a, b):
    return (a @ b / a.norm() / b.norm()).item()


def test_fit_recovers_a_known_linear_reward():
    """Pairs labelled by sampling from σ(w·x_w − w·x_l): the linear head recovers w up to scale, and its
    held-out accuracy reaches that of the true reward on the same held-out labels (the Bayes rule)."""
    w = torch.tensor([2.0, -1.0, 0.5, 0.0, 1.5, -0.5, 1.0, 0.25])
    pairs, p = _synthetic(4000, w, seed=0)
    torch.manual_seed(0)
    head = rf.RewardHead(len(w), hidden=0)
    result = rf.fit(head, pairs, None, rf.FitSettings(epochs=30, lr=0.05, batch_size=64, holdout=0.25, patience=5, seed=0))
    cosine = _cosine(head.net[0].weight[0].detach(), w)
    assert cosine > 0.95, cosine
    held = rf.heldout_groups(pairs.group, 0.25, 0)
    _, held_pairs = rf.split(pairs, held)
    true = rf.pair_metrics(held_pairs.w @ w, held_pairs.l @ w, held_pairs.label)
    bayes = torch.maximum(p, 1 - p)[torch.isin(pairs.group, held)].mean().item()  # expected accuracy of the true reward
    got = result.metrics["heldout"]["pairs"]
    assert got["pairs"] == len(held_pairs) and 900 < got["pairs"] < 1100
    assert got["accuracy"] > true["accuracy"] - 0.02 and got["accuracy"] > bayes - 0.03, (got, true, bayes)
    assert got["log_loss"] < true["log_loss"] + 0.02
    assert got["ece"] < 0.05
    print(f"cosine {cosine:.4f}, held-out accuracy {got['accuracy']:.4f}, true reward {true['accuracy']:.4f}, "
          f"Bayes {bayes:.4f}, ece {got['ece']:.4f}")


def test_soft_labels_recover_the_scale_too():
    """Labels equal to the true P(w ≻ l): the BT optimum is w itself, scale included (rounding the labels to
    0/1 would inflate the norm without bound on separable data)."""
    w = torch.tensor([1.0, -2.0, 0.5, 1.0])
    pairs, _ = _synthetic(2000, w, seed=1, soft=True)
    torch.manual_seed(1)
    head = rf.RewardHead(len(w), hidden=0)
    rf.fit(head, pairs, None, rf.FitSettings(epochs=40, lr=0.05, batch_size=64, holdout=0.0, seed=1))
    fitted = head.net[0].weight[0].detach()
    assert _cosine(fitted, w) > 0.995
    assert fitted.norm().item() == pytest.approx(w.norm().item(), rel=0.05)


def test_ratings_recover_the_reward():
    """Thumbs up drawn with P = σ(w·x): the rating loss recovers w up to scale."""
    w = torch.tensor([1.5, 0.0, -1.0, 2.0])
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3000, 4, generator=g)
    ratings = rf.RatingData(x, (torch.rand(3000, generator=g) < torch.sigmoid(x @ w)).float(), torch.randint(0, 100, (3000,), generator=g))
    torch.manual_seed(2)
    head = rf.RewardHead(4, hidden=0)
    result = rf.fit(head, None, ratings, rf.FitSettings(epochs=20, lr=0.05, holdout=0.2, seed=2))
    assert _cosine(head.net[0].weight[0].detach(), w) > 0.95
    assert result.metrics["heldout"]["ratings"]["accuracy"] > 0.7


def test_mlp_head_and_pairs_with_ratings_together():
    """Both data kinds in one fit; the MLP head on [s, t, s·t] features learns a reward that needs the text."""
    g = torch.Generator().manual_seed(3)
    n, d = 1500, 6
    s_w, s_l, t = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    true = lambda s: (rf.features(s, t)[:, 2 * d:]).sum(-1) * 8  # noqa: E731  alignment of sample and text
    label = (true(s_w) > true(s_l)).float()
    pairs = rf.PairData(rf.features(s_w, t), rf.features(s_l, t), label, torch.arange(n) % 100)
    x = torch.randn(n, d, generator=g)
    ratings = rf.RatingData(rf.features(x, t), (true(x) > 0).float(), torch.arange(n) % 100)
    torch.manual_seed(3)
    head = rf.RewardHead(3 * d, hidden=32)
    result = rf.fit(head, pairs, ratings, rf.FitSettings(epochs=30, lr=3e-3, holdout=0.2, seed=3))
    assert result.metrics["heldout"]["pairs"]["accuracy"] > 0.85
    assert result.metrics["heldout"]["ratings"]["accuracy"] > 0.8
    assert result.history[0]["heldout_loss"] > min(h["heldout_loss"] for h in result.history)


def test_metrics_by_hand():
    """Margins [1, −1, 0, 2] with labels [1, 1, 1, 0.5]: the tie is excluded, the zero margin is half right:
    accuracy (1 + 0 + 0.5) / 3 = 0.5. ECE of p = [0.15, 0.25] against y = [0, 1]: bins 1 and 2 hold one
    prediction each: 0.5·0.15 + 0.5·0.75 = 0.45."""
    m = rf.pair_metrics(torch.tensor([1.0, -1.0, 0.0, 2.0]), torch.zeros(4), torch.tensor([1.0, 1.0, 1.0, 0.5]))
    assert m["accuracy"] == pytest.approx(0.5) and m["ties"] == 1 and m["pairs"] == 4
    assert rf.expected_calibration_error(torch.tensor([0.15, 0.25]), torch.tensor([0.0, 1.0])) == pytest.approx(0.45)
    # both orders: a pair and its mirror image give the same ECE
    a = rf.pair_metrics(torch.tensor([2.0, 0.3]), torch.zeros(2), torch.tensor([1.0, 0.0]))
    b = rf.pair_metrics(torch.zeros(2), torch.tensor([2.0, 0.3]), torch.tensor([0.0, 1.0]))
    assert a["ece"] == pytest.approx(b["ece"]) and a["accuracy"] == b["accuracy"] == 0.5


def test_heldout_split_is_by_prompt():
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    held = rf.heldout_groups(groups, 0.4, seed=0)
    assert len(held) == 2
    data = rf.RatingData(torch.zeros(10, 1), torch.ones(10), groups)
    train, test = rf.split(data, held)
    assert set(train.group.tolist()).isdisjoint(test.group.tolist()) and len(train) + len(test) == 10
    assert len(rf.heldout_groups(torch.tensor([7, 7]), 0.5, 0)) == 0  # a single prompt is never held out


@pytest.mark.parametrize("hidden", [0, 8])
def test_similarity_prior_starts_at_the_encoders_cosine_and_round_trips(tmp_path, hidden):
    from genpref import learned_reward

    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    x = rf.features(s, t)
    head = rf.RewardHead(x.shape[1], hidden, prior=True)
    cosine = torch.nn.functional.cosine_similarity(s, t, dim=-1)
    torch.testing.assert_close(head(x), rf.PRIOR_SCALE * cosine)
    with torch.no_grad():  # a trained head: the correction and the scale both move
        head.prior_scale.fill_(3.0)
        head.net[-1].weight.normal_(generator=g)
    learned_reward.save(tmp_path, head, {"format": learned_reward.FORMAT, "modality": "image", "in_features": x.shape[1],
                                         "hidden": hidden, "init": "similarity"})
    loaded, _ = learned_reward.load(tmp_path, "k")
    torch.testing.assert_close(loaded(x), head(x))
    with pytest.raises(ValueError, match="3·D wide"):
        rf.RewardHead(4, hidden, prior=True)


def test_fit_keeps_the_initial_head_when_no_epoch_beats_it():
    """A prior that already orders every pair right: a fit that cannot improve on it (lr ≈ 0) returns epoch 0."""
    g = torch.Generator().manual_seed(0)
    t = torch.randn(40, 6, generator=g)
    w, l = t + 0.1 * torch.randn(40, 6, generator=g), torch.randn(40, 6, generator=g)  # winners lie near their text
    pairs = rf.PairData(rf.features(w, t), rf.features(l, t), torch.ones(40), torch.arange(40) % 8)
    head = rf.RewardHead(18, 0, prior=True)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    result = rf.fit(head, pairs, None, rf.FitSettings(epochs=3, lr=1e-12, holdout=0.25, patience=0))
    assert result.best_epoch == 0 and result.metrics["heldout"]["pairs"]["accuracy"] == 1.0
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())

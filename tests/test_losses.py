"""Objective values against formulas worked out by hand in each docstring, plus their invariants."""

import math

import pytest
import torch

from genpref import losses

T = lambda *v: torch.tensor(v, dtype=torch.float32)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_dpo_values_by_hand():
    """e_w=.1, e_l=.3, ref .2/.2, β=10: z = 0.5·10·[(.2−.2) − (.1−.3)] = 1.
    sigmoid: −log σ(1) = log(1+e^−1); hinge: relu(1−1) = 0;
    soft p=.8: .8·log(1+e^−1) + .2·log(1+e^1)."""
    args = (T(0.1), T(0.3), T(0.2), T(0.2))
    assert losses.dpo_margin(*args, beta=10).item() == pytest.approx(1.0, abs=1e-6)
    assert losses.diffusion_dpo(*args, beta=10).item() == pytest.approx(softplus(-1.0), abs=1e-6)
    assert losses.diffusion_dpo(*args, beta=10, kind="hinge").item() == pytest.approx(0.0, abs=1e-6)
    soft = losses.diffusion_dpo(*args, beta=10, prob=T(0.8)).item()
    assert soft == pytest.approx(0.8 * softplus(-1.0) + 0.2 * softplus(1.0), abs=1e-6)


def test_dpo_is_ln2_at_reference_and_mirrors_on_swap():
    e_w, e_l = torch.rand(16), torch.rand(16)
    assert torch.allclose(losses.diffusion_dpo(e_w, e_l, e_w, e_l), torch.full((16,), math.log(2.0)))
    ref_w, ref_l = torch.rand(16), torch.rand(16)
    z = losses.dpo_margin(e_w, e_l, ref_w, ref_l, beta=100)
    z_swapped = losses.dpo_margin(e_l, e_w, ref_l, ref_w, beta=100)
    assert torch.allclose(z, -z_swapped)


def test_dpo_gradient_lowers_winner_error_relative_to_loser():
    e_w = T(0.5).requires_grad_()
    e_l = T(0.5).requires_grad_()
    losses.diffusion_dpo(e_w, e_l, T(0.5), T(0.5), beta=10).sum().backward()
    assert e_w.grad.item() > 0  # descent lowers the winner's error
    assert e_l.grad.item() < 0  # and raises the loser's
    assert e_w.grad.item() == pytest.approx(-e_l.grad.item())


def test_dpo_rejects_soft_hinge_and_unknown_kind():
    with pytest.raises(ValueError, match="sigmoid"):
        losses.diffusion_dpo(T(0.1), T(0.2), T(0.1), T(0.2), kind="hinge", prob=T(0.7))
    with pytest.raises(ValueError, match="unknown kind"):
        losses.diffusion_dpo(T(0.1), T(0.2), T(0.1), T(0.2), kind="ipo")


def test_dro_values_and_zero_region():
    """Δ_E = .1−.2 = −.1, Δ_P = .3−.3 = 0: −.1 − 0 + .001 < 0 -> 0 (zero region).
    With e_E = .3: Δ_E = .1 -> .1 + .001 = .101."""
    assert losses.diffusion_dro(T(0.1), T(0.3), T(0.2), T(0.3)).item() == 0.0
    assert losses.diffusion_dro(T(0.3), T(0.3), T(0.2), T(0.3)).item() == pytest.approx(0.101, abs=1e-6)
    e = T(0.3).requires_grad_()
    losses.diffusion_dro(T(0.1), e, T(0.2), T(0.3)).sum().backward()
    assert e.grad.item() == 0.0  # no gradient inside the zero region


def test_sopo_forms_by_hand():
    """Δ_w = .1−.2 = −.1, Δ_l = .4−.2 = .2, C=2, S=.5, β=1, gate open (r_l=.3 < τ=.45):
    code: arg = 1.5·(−.1) − .2 = −.35, loss = −log σ(.35) = log(1+e^−.35)
    eq17: arg = 1.5·(−.1 − .2) = −.45, loss = log(1+e^−.45)."""
    args = (T(0.1), T(0.4), T(0.2), T(0.2), T(0.3), T(0.5))
    assert losses.sopo(*args, form="code").item() == pytest.approx(softplus(-0.35), abs=1e-6)
    assert losses.sopo(*args, form="eq17").item() == pytest.approx(softplus(-0.45), abs=1e-6)


def test_sopo_reduces_to_winner_term_when_loser_reward_reaches_tau():
    """r_l = .45 is not < τ: the loser term vanishes: −log σ(−β(C−S)Δ_w) = log(1+e^{1.5·(−.1)})."""
    e_l = T(0.4).requires_grad_()
    for form in ("code", "eq17"):
        loss = losses.sopo(T(0.1), e_l, T(0.2), T(0.2), T(0.45), T(0.5), form=form)
        assert loss.item() == pytest.approx(softplus(1.5 * -0.1), abs=1e-6)
        loss.sum().backward()
        assert e_l.grad.item() == 0.0
    with pytest.raises(ValueError, match="form"):
        losses.sopo(*[T(0.1)] * 6, form="eq14")


def test_kto_by_hand():
    """e=.1, e_ref=.2, β=10: g = .1; desirable 1−σ(1); undesirable (weight 2) 2·(1−σ(−1))."""
    sig = lambda x: 1 / (1 + math.exp(-x))
    out = losses.diffusion_kto(T(0.1, 0.1), T(0.2, 0.2), torch.tensor([True, False]), beta=10, w_undesirable=2.0)
    assert out[0].item() == pytest.approx(1 - sig(1.0), abs=1e-6)
    assert out[1].item() == pytest.approx(2 * (1 - sig(-1.0)), abs=1e-6)


def test_denoising_error_masked_like_mdm():
    """pred [1, 2 features, 1, 4 frames]; frames 0,1 valid. Squared errors of valid frames:
    feature 0: 1, 4; feature 1: 9, 16 -> sum 30 over 2 frames × 2 features = 7.5."""
    pred = torch.tensor([[[[1.0, 2.0, 100.0, 100.0]], [[3.0, 4.0, 100.0, 100.0]]]])
    mask = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]]])
    assert losses.denoising_error(pred, torch.zeros_like(pred), mask).item() == pytest.approx(7.5)
    assert losses.denoising_error(pred[..., :2], torch.zeros_like(pred[..., :2])).item() == pytest.approx(7.5)


def test_denoising_error_is_float32_per_sample():
    pred = torch.randn(3, 4, 8, 8, dtype=torch.bfloat16)
    err = losses.denoising_error(pred, torch.zeros_like(pred))
    assert err.shape == (3,) and err.dtype == torch.float32


def test_kl_to_reference_zero_at_reference_and_positive_otherwise():
    p = torch.randn(4, 3)
    assert torch.all(losses.kl_to_reference(p, p.clone()) == 0)
    assert torch.all(losses.kl_to_reference(p + 0.1, p) > 0)


def test_implicit_accuracy_counts_ties_half():
    assert losses.implicit_accuracy(T(1.0, -1.0, 0.0, 2.0)).item() == pytest.approx((1 + 0 + 0.5 + 1) / 4)

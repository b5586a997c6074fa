"""genpref.sampling: the DDIM step with its log-probability against a formula written out here (numpy, float64)
and against diffusers' DDIMScheduler.step; the one sampling loop's per-row tracks."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from genpref import sampling
from genpref.errors import UserError


def ddim(prediction_type="epsilon", steps=10, **kw):
    s = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", prediction_type=prediction_type,
                      clip_sample=False, **kw)
    s.set_timesteps(steps)
    return s


def by_hand(abar, t, ratio, x, out, kind, eta, prev=None, z=None):
    """DDIM (Song et al. Eq. 12) per row in float64: ᾱ_prev = ᾱ[t − ratio] (1 below 0), x̂0/ε̂ from the
    prediction, σ = η·√((1−ᾱp)/(1−ᾱt))·√(1−ᾱt/ᾱp), μ = √ᾱp·x̂0 + √(1−ᾱp−σ²)·ε̂; log N averaged per row."""
    x, out = x.astype(np.float64), out.astype(np.float64)
    means, lps, prevs = [], [], []
    for b in range(len(x)):
        a = abar[t[b]]
        ap = abar[t[b] - ratio] if t[b] - ratio >= 0 else 1.0
        if kind == "epsilon":
            x0, eps = (x[b] - math.sqrt(1 - a) * out[b]) / math.sqrt(a), out[b]
        elif kind == "v_prediction":
            x0, eps = math.sqrt(a) * x[b] - math.sqrt(1 - a) * out[b], math.sqrt(a) * out[b] + math.sqrt(1 - a) * x[b]
        else:
            x0, eps = out[b], (x[b] - math.sqrt(a) * out[b]) / math.sqrt(1 - a)
        sigma = eta * math.sqrt((1 - ap) / (1 - a)) * math.sqrt(1 - a / ap)
        mu = math.sqrt(ap) * x0 + math.sqrt(1 - ap - sigma**2) * eps
        xp = prev[b].astype(np.float64) if prev is not None else mu + sigma * z[b]
        lp = (-((xp - mu) ** 2) / (2 * sigma**2) - math.log(sigma) - 0.5 * math.log(2 * math.pi)).mean()
        means.append(mu), lps.append(lp), prevs.append(xp)
    return np.stack(prevs), np.array(lps)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("eta", [0.3, 1.0])
def test_ddim_step_with_logprob_matches_the_formula_per_row(kind, eta):
    sched = ddim(kind)
    g = torch.Generator().manual_seed(0)
    x, out = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    t = torch.tensor([901, 455, 120])  # one timestep per row (jittered tracks); ratio 100
    prev, lp = sampling.ddim_step_with_logprob(sched, out, t, x, eta, generator=torch.Generator().manual_seed(5))
    z = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(5)).numpy()
    want_prev, want_lp = by_hand(sched.alphas_cumprod.double().numpy(), t.tolist(), 100, x.numpy(), out.numpy(), kind, eta, z=z)
    assert lp.shape == (3,)
    np.testing.assert_allclose(prev.numpy(), want_prev, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(lp.numpy(), want_lp, rtol=1e-4, atol=1e-4)
    # re-scoring the stored transition gives the same log-prob; another x_prev a lower one near the mean
    _, again = sampling.ddim_step_with_logprob(sched, out, t, x, eta, prev_sample=prev)
    torch.testing.assert_close(again, lp)
    _, other = sampling.ddim_step_with_logprob(sched, out, t, x, eta, prev_sample=prev + 0.5)
    np.testing.assert_allclose(other.numpy(), by_hand(sched.alphas_cumprod.double().numpy(), t.tolist(), 100,
                                                      x.numpy(), out.numpy(), kind, eta, prev=prev.numpy() + 0.5)[1], rtol=1e-4)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_ddim_step_equals_diffusers_step_with_the_same_noise(kind):
    sched = ddim(kind, set_alpha_to_one=False)
    g = torch.Generator().manual_seed(1)
    x, out = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    for t in sched.timesteps[[0, 4, -1]]:
        ours, _ = sampling.ddim_step_with_logprob(sched, out, t, x, 0.7, generator=torch.Generator().manual_seed(3))
        theirs = sched.step(out, t, x, eta=0.7, generator=torch.Generator().manual_seed(3)).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_deterministic_steps_carry_no_logprob_and_masks_average_valid_frames():
    sched = ddim("sample", steps=4)  # set_alpha_to_one: the last step lands on ᾱ = 1, σ = 0
    x, out = torch.randn(2, 3, 1, 6), torch.randn(2, 3, 1, 6)
    _, lp = sampling.ddim_step_with_logprob(sched, out, torch.tensor([10, 10]), x, 1.0)
    assert torch.equal(lp, torch.zeros(2))
    _, lp0 = sampling.ddim_step_with_logprob(sched, out, 760, x, 0.0)
    assert torch.equal(lp0, torch.zeros(2))  # η = 0: deterministic everywhere
    mask = torch.zeros(2, 1, 1, 6)
    mask[0, ..., :4] = 1
    mask[1, ..., :2] = 1
    prev, full = sampling.ddim_step_with_logprob(sched, out, 760, x, 1.0, generator=torch.Generator().manual_seed(0))
    garbage = prev.clone()
    garbage[0, ..., 4:] += 100.0  # frames past each length do not count
    garbage[1, ..., 2:] -= 100.0
    _, masked = sampling.ddim_step_with_logprob(sched, out, 760, x, 1.0, prev_sample=garbage, mask=mask)
    _, first4 = sampling.ddim_step_with_logprob(sched, out[..., :4], 760, x[..., :4], 1.0, prev_sample=prev[..., :4])
    _, first2 = sampling.ddim_step_with_logprob(sched, out[..., :2], 760, x[..., :2], 1.0, prev_sample=prev[..., :2])
    torch.testing.assert_close(masked, torch.stack([first4[0], first2[1]]))
    assert not torch.allclose(masked, full)


def test_sample_records_transitions_that_rescore_to_their_logprob():
    sched_make = lambda: sampling.make_solver("ddim", DDPMScheduler(num_train_timesteps=1000).config)
    tracks = sampling.plan(sched_make, 5, 3, torch.device("cpu"))
    weight = torch.randn(4, 4)
    predict = lambda x, t: torch.einsum("ij,bjhw->bihw", weight, x) * 0.1 + t.float().view(-1, 1, 1, 1) / 1000
    seen = []
    noise = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    x0 = sampling.sample(predict, tracks, noise, generator=torch.Generator().manual_seed(1), eta=1.0,
                         on_transition=lambda i, t, x, xp, lp: seen.append((t, x, xp, lp)))
    assert len(seen) == 5 and torch.equal(seen[-1][2], x0) and torch.equal(seen[0][1], noise)
    for t, x, xp, lp in seen:
        _, again = sampling.ddim_step_with_logprob(tracks[0].scheduler, predict(x, t), t, x, 1.0, prev_sample=xp)
        torch.testing.assert_close(again, lp)
    with pytest.raises(UserError, match="need the DDIM sampler"):
        other = sampling.plan(lambda: sampling.make_solver("dpmsolver++", DDPMScheduler().config), 3, 3, torch.device("cpu"))
        sampling.sample(predict, other, noise, generator=torch.Generator(), eta=1.0, on_transition=lambda *a: None)


def test_per_row_tracks_follow_the_named_solver_or_refuse():
    config = DDPMScheduler(num_train_timesteps=1000).config
    ts = sampling.jittered_timesteps(1000, 4, torch.tensor([0, 7, 249]))
    assert ts.tolist() == [[750, 500, 250, 0], [757, 507, 257, 7], [999, 749, 499, 249]]
    tracks = sampling.plan(lambda: sampling.make_solver("dpmsolver++", config), 4, 3, torch.device("cpu"), timesteps=ts)
    assert [tr.timesteps.tolist() for tr in tracks] == ts.tolist()
    ddim_track = sampling.plan(lambda: sampling.make_solver("ddim", config), 4, 3, torch.device("cpu"), timesteps=ts)
    assert len(ddim_track) == 1 and torch.equal(ddim_track[0].timesteps, ts)
    reset = sampling.plan(lambda: sampling.make_solver("dpmsolver++", config), 4, 3, torch.device("cpu"), timesteps=ts,
                          start_t=600)
    # every row starts at or below start_t and keeps the same number of steps: row 2 needs 2 skipped
    assert [tr.timesteps.tolist() for tr in reset] == [[250, 0], [257, 7], [499, 249]]
    with pytest.raises(UserError, match="cannot follow per-trajectory timesteps"):
        sampling.plan(lambda: sampling.make_solver("unipc", config), 4, 3, torch.device("cpu"), timesteps=ts)
    with pytest.raises(UserError, match="unknown solver 'dpm'"):
        sampling.make_solver("dpm", config)

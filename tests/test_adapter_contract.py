"""The adapter contract, once for every adapter (toy, tiny-sd, tiny-sdxl, shapes-unet, tiny-mdm, tiny-mld): a new
adapter passes it or does not ship.

Per-sample errors of shape [B] that ignore masked frames; reference = policy at initialisation and untouched by
an optimizer step; seeded sampling reproducible; the sampling callback sees exactly what the model saw; a
stochastic DDIM transition re-scored with its prev_sample gives back its log-prob; trainable state round trip.
"""

import pytest
import torch

from genpref import build, sampling
from genpref.adapter import Adapter, Batch
from genpref.config import from_dict
from genpref.forward import branch_errors
from genpref.noising import noised_branch
from motion.tasks.tiny_data import write_tiny_humanml

CASES = {  # kind -> (model section, data section); LoRA on some, full fine-tuning (frozen copy) on others
    "toy": ({"lora": {"rank": 4, "alpha": 4, "targets": ["net.0", "net.2"]}}, {}),
    "tiny-sd": ({"lora": {"rank": 4, "alpha": 4}}, {"resolution": 32}),
    "tiny-sdxl": ({"lora": {"rank": 4, "alpha": 4}}, {"resolution": 32}),
    "shapes-unet": ({"size": "small", "prediction_type": "v_prediction"}, {"resolution": 32}),
    "tiny-mdm": ({}, {"max_motion_length": 64}),
    "tiny-mld": ({"lora": {"rank": 4, "alpha": 4}}, {"max_motion_length": 64}),
}
PROMPTS = {"toy": ["left", "up", "down"], "motion": ["a person walks forward", "a person jumps", "a person waves"],
           "image": ["a red square at the top left", "a blue circle at the bottom right", "a green triangle at the top right"]}
MODALITY = {"toy": "toy", "tiny-sd": "image", "tiny-sdxl": "image", "shapes-unet": "image", "tiny-mdm": "motion",
            "tiny-mld": "motion"}


@pytest.fixture(scope="module")
def humanml(tmp_path_factory):
    return write_tiny_humanml(tmp_path_factory.mktemp("hml"), num_motions=8, seed=0)


def make(kind: str, tmp_path, humanml) -> Adapter:
    model, data = CASES[kind]
    if kind in ("tiny-mdm", "tiny-mld"):
        data = {**data, "root": str(humanml)}
    cfg = from_dict({"model": {"kind": kind, **model}, "data": data, "objective": {"name": "sft"},
                     "online": {"solver": "ddim"}, "train": {"output_dir": str(tmp_path / "run"), "seed": 0}})
    torch.manual_seed(0)
    return build.build_adapter(cfg, torch.device("cpu"), torch.float32)


def prompts_for(kind: str) -> list[str]:
    return PROMPTS[MODALITY[kind]]


def samples(adapter, kind, n=3, seed=0) -> Batch:
    cond = adapter.encode_prompts(prompts_for(kind)[:n])
    x0 = adapter.generate(cond, generator=torch.Generator().manual_seed(seed), num_steps=3)
    return cond.with_x0(x0)


def perturb(adapter) -> None:
    with torch.no_grad():
        for p in adapter.trainable_parameters():
            p.add_(0.01 * torch.randn_like(p))


@pytest.mark.parametrize("kind", list(CASES))
def test_adapter_contract(kind, tmp_path, humanml):
    adapter = make(kind, tmp_path, humanml)
    assert isinstance(adapter, Adapter)
    adapter.denoiser.eval()
    batch = samples(adapter, kind)
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, adapter.noise_scheduler.config.num_train_timesteps, (3,), generator=g)
    eps = torch.randn(batch.x0.shape, generator=g)
    branch = noised_branch(adapter.noise_scheduler, batch, t, eps)

    # per-sample errors, policy = reference at initialisation
    err, ref = branch_errors(adapter, {"x": branch}, True)
    assert err["x"].shape == (3,) and torch.allclose(err["x"], ref["x"], atol=1e-6)
    if batch.mask is not None:  # frames past a motion's length do not count
        garbage = branch.target + (1 - batch.mask.float()) * 100.0
        err_g, _ = branch_errors(adapter, {"x": type(branch)(branch.x_t, t, garbage, batch)}, False)
        torch.testing.assert_close(err_g["x"], err["x"])

    # an optimizer step moves the policy and leaves the reference where it was
    params = adapter.trainable_parameters()
    opt = torch.optim.SGD(params, lr=1.0)
    err["x"].mean().backward()
    opt.step()
    err2, ref2 = branch_errors(adapter, {"x": branch}, True)
    torch.testing.assert_close(ref2["x"], ref["x"])
    assert not torch.allclose(err2["x"], err["x"])

    # seeded sampling is reproducible; the callback sees exactly the state and timestep the model saw
    seen = []
    cond = adapter.encode_prompts(prompts_for(kind)[:2])
    a = adapter.generate(cond, generator=torch.Generator().manual_seed(5), num_steps=3,
                         callback=lambda i, t, x, out: seen.append((t.clone(), x.clone(), out.clone())))
    b = adapter.generate(cond, generator=torch.Generator().manual_seed(5), num_steps=3)
    assert torch.equal(a, b) and len(seen) == 3
    for t_i, x_i, out_i in seen:
        torch.testing.assert_close(adapter.predict(x_i, t_i, cond).float(), out_i, rtol=1e-4, atol=1e-5)

    # stochastic DDIM: every recorded transition re-scores to its log-prob under the same weights
    moves = []
    adapter.generate(cond, generator=torch.Generator().manual_seed(6), num_steps=3, solver="ddim", eta=1.0,
                     on_transition=lambda i, t, x, xp, lp: moves.append((t, x, xp, lp)))
    scheduler = adapter.make_solver("ddim")
    scheduler.set_timesteps(3)
    assert len(moves) == 3 and any(bool((lp != 0).all()) for *_, lp in moves)
    for t_i, x_i, xp_i, lp_i in moves:
        _, again = sampling.ddim_step_with_logprob(scheduler, adapter.predict(x_i, t_i, cond).float(), t_i, x_i, 1.0,
                                                   prev_sample=xp_i, mask=cond.mask)
        torch.testing.assert_close(again, lp_i, rtol=1e-4, atol=1e-5)

    # trainable state round trip: a fresh adapter holding the trained parameters predicts alike
    perturb(adapter)
    state = {n: p.detach().clone() for n, p in adapter.denoiser.named_parameters() if p.requires_grad}
    fresh = make(kind, tmp_path / "fresh", humanml)
    fresh.denoiser.eval()
    with torch.no_grad():
        for n, p in fresh.denoiser.named_parameters():
            if n in state:
                p.copy_(state[n])
    assert set(state) == {n for n, p in fresh.denoiser.named_parameters() if p.requires_grad}
    torch.testing.assert_close(fresh.predict(branch.x_t, t, batch), adapter.predict(branch.x_t, t, batch))

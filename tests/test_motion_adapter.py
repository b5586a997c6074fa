"""Contract of the motion adapter (tiny MDM and MLD, LoRA and full fine-tuning): shapes, the reference,
recorded trajectories that line up with `predict`, dataset-reset starts, jittered rollouts and export."""

import numpy as np
import pytest
import torch

from genpref import sampling
from genpref.adapter import Adapter
from genpref.config import from_dict
from genpref.errors import UserError
from motion.adapter import build_adapter
from motion.mdm import load_mdm
from motion.mld import load_mld
from motion.tasks.tiny_data import write_tiny_humanml

CASES = [("tiny-mdm", None), ("tiny-mdm", 4), ("tiny-mld", None), ("tiny-mld", 4)]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_tiny_humanml(tmp_path_factory.mktemp("hml"), num_motions=14, seed=0)


def make(root, tmp_path, kind, rank=None, **model):
    lora = None if rank is None else {"rank": rank, "alpha": rank}
    cfg = from_dict({
        "model": {"kind": kind, "lora": lora, **model},
        "data": {"root": str(root), "max_motion_length": 64},
        "objective": {"name": "sopo"},
        "online": {"solver": "ddim"},
        "train": {"output_dir": str(tmp_path / "run"), "seed": 0},
    })
    return build_adapter(cfg, torch.device("cpu"), torch.float32)


def perturb_lora(adapter):
    with torch.no_grad():
        for name, p in adapter.denoiser.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(name)))


def batch_of(adapter, n=3):
    items = adapter.load_items("experts")[:n]
    return adapter.encode([it["x"] for it in items], [it["prompt"] for it in items]), items


def noisy(adapter, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, adapter.noise_scheduler.config.num_train_timesteps, (len(batch),), generator=g)
    eps = torch.randn(batch.x0.shape, generator=g)
    return adapter.noise_scheduler.add_noise(batch.x0, eps, t), t


@pytest.mark.parametrize("kind,rank", CASES)
def test_shapes_and_protocol(root, tmp_path, kind, rank):
    adapter = make(root, tmp_path, kind, rank)
    assert isinstance(adapter, Adapter)
    batch, items = batch_of(adapter)
    lengths = [len(it["x"]) for it in items]
    if kind == "tiny-mdm":
        assert batch.x0.shape == (3, 263, 1, 64) and batch.mask.shape == (3, 1, 1, 64)
        assert batch.mask.sum(dim=(1, 2, 3)).tolist() == lengths
    else:
        assert batch.x0.shape == (3, 1, 32) and batch.mask is None
    assert batch.cond["text"].shape[0] == 3 and batch.cond["lengths"].tolist() == lengths
    prompts = adapter.encode_prompts(["walk", "jump", "wave"], like=batch)
    assert prompts.x0 is None and prompts.cond["lengths"].tolist() == lengths
    assert adapter.encode_prompts(["walk"]).cond["lengths"].tolist() == [adapter.default_length]
    x_t, t = noisy(adapter, batch)
    assert adapter.predict(x_t, t, batch).shape == batch.x0.shape
    trainable = adapter.trainable_parameters()
    names = {id(p): n for n, p in adapter.denoiser.named_parameters()}
    if rank:
        assert trainable and all("lora_" in names[id(p)] for p in trainable)
    else:
        assert len(trainable) == len(list(adapter.denoiser.parameters()))


@pytest.mark.parametrize("kind", ["tiny-mdm", "tiny-mld"])
def test_lora_reference_is_exactly_the_base_model(root, tmp_path, kind):
    base = make(root, tmp_path, kind)
    lora = make(root, tmp_path, kind, rank=4)
    perturb_lora(lora)
    base.denoiser.eval().requires_grad_(False)  # CPU matmul kernels differ in the last bit with requires_grad
    lora.denoiser.train()  # the reference must run in eval mode whatever the policy's mode
    batch, _ = batch_of(base)
    x_t, t = noisy(base, batch)
    expected = base.predict(x_t, t, batch)
    with torch.no_grad(), lora.reference():
        ref = lora.predict(x_t, t, batch)
    assert torch.equal(ref, expected)
    assert lora.denoiser.training  # mode restored
    lora.denoiser.eval()
    assert not torch.allclose(lora.predict(x_t, t, batch), expected, atol=1e-4)  # the policy is not the base
    with pytest.raises(RuntimeError), lora.reference():
        raise RuntimeError("inside the reference block")
    assert not torch.allclose(lora.predict(x_t, t, batch), expected, atol=1e-4)  # adapters back on


@pytest.mark.parametrize("kind", ["tiny-mdm", "tiny-mld"])
def test_full_finetune_reference_is_a_frozen_copy(root, tmp_path, kind):
    adapter = make(root, tmp_path, kind)
    adapter.denoiser.eval()
    batch, _ = batch_of(adapter)
    x_t, t = noisy(adapter, batch)
    before = adapter.predict(x_t, t, batch)
    with torch.no_grad():
        for p in adapter.trainable_parameters():
            p.add_(0.05)
    with adapter.reference():
        assert torch.allclose(adapter.predict(x_t, t, batch), before, atol=1e-6)
    assert not torch.allclose(adapter.predict(x_t, t, batch), before, atol=1e-4)


TRAJECTORY_CASES = [(k, r, "ddim") for k, r in CASES] + [("tiny-mdm", None, "dpmsolver++"), ("tiny-mld", 4, "dpmsolver++"),
                                                          ("tiny-mdm", 4, "euler"), ("tiny-mld", None, "euler")]


@pytest.mark.parametrize("kind,rank,solver", TRAJECTORY_CASES)
def test_recorded_trajectory_lines_up_with_predict(root, tmp_path, kind, rank, solver):
    adapter = make(root, tmp_path, kind, rank)
    if rank:
        perturb_lora(adapter)
    adapter.solver = solver
    batch, _ = batch_of(adapter, 2)
    records = []
    x0 = adapter.generate(batch, generator=torch.Generator().manual_seed(7), num_steps=5,
                          callback=lambda i, t, x, out: records.append((i, t.clone(), x.clone(), out.clone())))
    assert [r[0] for r in records] == list(range(5)) and x0.shape == batch.x0.shape
    ts = [int(r[1][0]) for r in records]
    assert ts == sorted(ts, reverse=True) and len(set(ts)) == 5
    adapter.denoiser.eval()
    for _, t, x_t, out in records:  # the model saw exactly (t, x_t) and answered `out`
        assert torch.allclose(adapter.predict(x_t, t, batch), out, atol=1e-5)
    noise = torch.randn(batch.x0.shape, generator=torch.Generator().manual_seed(7))
    # the first state is the generator's first normal draw in training space: the noise itself for DDIM and
    # DPM-Solver; Euler's σ-space x_T = √(σ²+1)·ε maps back to ε up to (1 + 1/σ_T²)^-1/2 ≈ 1 for the cosine σ_T
    scale = (records[0][2] * noise).sum() / (noise * noise).sum()
    assert torch.allclose(records[0][2], scale * noise, atol=1e-5) and 0.99 <= scale <= 1.0 + 1e-5


@pytest.mark.parametrize("kind", ["tiny-mdm", "tiny-mld"])
def test_dataset_reset_starts_from_noised_data(root, tmp_path, kind):
    adapter = make(root, tmp_path, kind)
    batch, _ = batch_of(adapter, 2)
    records = []
    adapter.generate(batch, generator=torch.Generator().manual_seed(3), num_steps=10, start_t=40,
                     callback=lambda i, t, x, out: records.append((t.clone(), x.clone())))
    t0 = int(records[0][0][0])
    assert t0 <= 40 and all(int(t[0]) <= t0 for t, _ in records)
    noise = torch.randn(batch.x0.shape, generator=torch.Generator().manual_seed(3))
    abar = adapter.noise_scheduler.alphas_cumprod[t0]
    assert torch.allclose(records[0][1], abar.sqrt() * batch.x0 + (1 - abar).sqrt() * noise, atol=1e-5)


def test_jittered_rollouts_have_per_sample_timesteps_and_line_up(root, tmp_path):
    adapter = make(root, tmp_path, "tiny-mdm")
    adapter.denoiser.eval()
    batch, _ = batch_of(adapter, 3)
    records = []
    adapter.generate(batch, generator=torch.Generator().manual_seed(1), num_steps=4, timestep_jitter=True,
                     callback=lambda i, t, x, out: records.append((t.clone(), x.clone(), out.clone())))
    ratio = adapter.noise_scheduler.config.num_train_timesteps // 4  # 100 // 4 = 25
    offsets = records[0][0] - 3 * ratio
    assert ((offsets >= 0) & (offsets < ratio)).all()
    for k, (t, x_t, out) in enumerate(records):
        assert torch.equal(t, (3 - k) * ratio + offsets)  # one offset per trajectory, all steps
        assert torch.allclose(adapter.predict(x_t, t, batch), out, atol=1e-5)


def test_generation_is_reproducible_and_decodes_to_lengths(root, tmp_path):
    adapter = make(root, tmp_path, "tiny-mdm")
    adapter.solver = "ddpm"
    batch, items = batch_of(adapter, 2)
    a = adapter.generate(batch, generator=torch.Generator().manual_seed(0), num_steps=6, guidance=2.5)
    b = adapter.generate(batch, generator=torch.Generator().manual_seed(0), num_steps=6, guidance=2.5)
    assert torch.equal(a, b)
    motions = adapter.decode(a, batch)
    assert [m.shape for m in motions] == [(len(it["x"]), 263) for it in items]
    assert adapter.denoiser.training  # generate restores the mode


@pytest.mark.parametrize("kind,rank", CASES)
def test_save_final_reloads_the_trained_weights(root, tmp_path, kind, rank):
    adapter = make(root, tmp_path, kind, rank)
    if rank:
        perturb_lora(adapter)
    else:
        with torch.no_grad():
            for p in adapter.trainable_parameters():
                p.mul_(1.01)
    adapter.denoiser.eval()
    out = tmp_path / "final"
    adapter.save_final(str(out))
    batch, _ = batch_of(adapter)
    x_t, t = noisy(adapter, batch)
    expected = adapter.predict(x_t, t, batch)
    if kind == "tiny-mdm":
        model, args = load_mdm(out / "model.pt")
        assert args["genpref_text_encoder"] == "tiny"
        got = model.eval()(x_t, t, batch.cond["text"], batch.mask)
        path = out / "model.pt"
    else:
        _, denoiser, _ = load_mld(out / "model.ckpt")
        got = denoiser.eval()(x_t, t, batch.cond["text"])
        path = out / "model.ckpt"
    assert torch.allclose(got, expected, atol=1e-5)
    # the exported directory is a complete model: build from it without data.root
    reloaded = build_adapter(from_dict({"model": {"kind": kind, "path": str(path)}, "objective": {"name": "sft"},
                                        "data": {"max_motion_length": 64},
                                        "train": {"output_dir": str(tmp_path / "r2")}}), torch.device("cpu"), torch.float32)
    reloaded.denoiser.eval()
    assert torch.allclose(reloaded.predict(x_t, t, batch), expected, atol=1e-5)
    assert np.allclose(reloaded.decode(batch.x0, batch)[0], adapter.decode(batch.x0, batch)[0], atol=1e-5)


def test_configuration_errors(root, tmp_path):
    with pytest.raises(UserError, match="model.path is required for model.kind=mdm"):
        make(root, tmp_path, "mdm")
    with pytest.raises(UserError, match="model.text_encoder is required"):
        adapter = make(root, tmp_path, "tiny-mdm")
        adapter.save_final(str(tmp_path / "f"))
        make(root, tmp_path, "mdm", path=str(tmp_path / "f" / "model.pt"))
    with pytest.raises(UserError, match=r"model.lora.targets: no module named 'to_k_proj'"):
        cfg = from_dict({"model": {"kind": "tiny-mdm", "lora": {"targets": ["to_k_proj"]}}, "objective": {"name": "sft"},
                         "data": {"root": str(root)}, "train": {"output_dir": str(tmp_path / "x")}})
        build_adapter(cfg, torch.device("cpu"), torch.float32)
    with pytest.raises(UserError, match="predicts 'sample'"):
        make(root, tmp_path, "tiny-mdm", prediction_type="epsilon")


def test_released_mdm_and_mld_layouts_build_through_the_clip_path(root, tmp_path):
    """kind mdm / mld: a released-layout checkpoint + a local CLIP directory (tiny weights, real loaders)."""
    import json

    from test_motion_models import write_tiny_clip_dir

    from motion.mdm import MDM
    from motion.mld import MldDenoiser, MldVae

    torch.manual_seed(0)
    mdm_dir = tmp_path / "humanml_enc_512_50steps"
    mdm_dir.mkdir()
    model, avg = MDM(mask_frames=True), MDM(mask_frames=True)  # released default sizes
    torch.save({"model": model.state_dict(), "model_avg": avg.state_dict()}, mdm_dir / "model000750000.pt")
    (mdm_dir / "args.json").write_text(json.dumps({"arch": "trans_enc", "dataset": "humanml", "latent_dim": 512, "layers": 8,
                                                   "cond_mask_prob": 0.1, "diffusion_steps": 50, "noise_schedule": "cosine",
                                                   "mask_frames": True, "use_ema": True, "emb_trans_dec": False}))
    write_tiny_clip_dir(tmp_path / "clip512", projection_dim=512)
    adapter = make(root, tmp_path, "mdm", path=str(mdm_dir / "model000750000.pt"), use_avg=True,
                   text_encoder=str(tmp_path / "clip512"))
    assert torch.equal(adapter.denoiser.embed_text.weight, avg.embed_text.weight)
    assert adapter.noise_scheduler.config.num_train_timesteps == 50
    batch, _ = batch_of(adapter, 2)
    assert batch.cond["text"].shape == (2, 512) and adapter.published_sampler == ("ddpm", None, 2.5)
    adapter.solver = "ddpm"
    assert adapter.generate(batch, generator=torch.Generator().manual_seed(0), num_steps=3, guidance=2.5).shape == (2, 263, 1, 64)

    vae, den = MldVae(latent_dim=(1, 16), ff_size=32, num_layers=3), MldDenoiser(latent_dim=(1, 16), ff_size=32, num_layers=3, text_encoded_dim=24)
    state = {**{f"vae.{k}": v for k, v in vae.state_dict().items()}, **{f"denoiser.{k}": v for k, v in den.state_dict().items()}}
    torch.save({"state_dict": state}, tmp_path / "mld.ckpt")
    write_tiny_clip_dir(tmp_path / "clip24", projection_dim=24)
    mld = make(root, tmp_path, "mld", path=str(tmp_path / "mld.ckpt"), text_encoder=str(tmp_path / "clip24"))
    batch, _ = batch_of(mld, 2)
    assert batch.x0.shape == (2, 1, 16)
    assert torch.allclose(mld.null_text, mld.text_encoder([""])[0])  # MLD's unconditional input: CLIP("")
    with pytest.raises(UserError, match="gives 512-d sentence features but the model expects 24-d"):
        make(root, tmp_path, "mld", path=str(tmp_path / "mld.ckpt"), text_encoder=str(tmp_path / "clip512"))


def test_jittered_rollouts_from_a_dataset_reset(root, tmp_path):
    adapter = make(root, tmp_path, "tiny-mld")
    batch, _ = batch_of(adapter, 3)
    records = []
    adapter.generate(batch, generator=torch.Generator().manual_seed(2), num_steps=10, timestep_jitter=True, start_t=450,
                     callback=lambda i, t, x, out: records.append((t.clone(), x.clone())))
    first_t, first_x = records[0]
    offsets = records[-1][0]  # the last row has base timestep 0
    rows = 5 if offsets.max() <= 50 else 4  # row k covers [100k, 100k + 100): row 4 fits under 450 only if every offset ≤ 50
    assert all((t <= 450).all() for t, _ in records) and len(records) == rows
    noise = torch.randn(batch.x0.shape, generator=torch.Generator().manual_seed(2))
    abar = adapter.noise_scheduler.alphas_cumprod[first_t].view(-1, 1, 1)
    assert torch.allclose(first_x, abar.sqrt() * batch.x0 + (1 - abar).sqrt() * noise, atol=1e-5)


@pytest.mark.parametrize("solver", ["dpmsolver++", "euler"])
def test_jittered_rollouts_use_the_configured_solver(root, tmp_path, monkeypatch, solver):
    """DRO's jitter used to switch motion to a hand-written DDIM whatever online.solver said."""
    import diffusers

    adapter = make(root, tmp_path, "tiny-mdm")
    adapter.solver = solver
    cls = getattr(diffusers, sampling.SOLVERS[solver][0])
    calls = []
    real_step = cls.step
    monkeypatch.setattr(cls, "step", lambda self, out, t, x, **kw: calls.append(int(t)) or real_step(self, out, t, x, **kw))
    batch, _ = batch_of(adapter, 3)
    seen = []
    adapter.generate(batch, generator=torch.Generator().manual_seed(1), num_steps=4, timestep_jitter=True,
                     callback=lambda i, t, x, out: seen.append(t.clone()))
    per_row = torch.stack(seen, dim=1)  # [B, S]: each row its own jittered track
    assert len(calls) == 4 * 3 and sorted(calls) == sorted(per_row.flatten().tolist())
    assert (per_row[:, :-1] - per_row[:, 1:] == 25).all()  # 100 // 4 apart, offsets kept along each row

"""MDM and MLD ports: released parameter names and shapes, checkpoint round trips, schedules, masking, CFG,
and the text encoders (tiny, and CLIP loaded from a local directory)."""

import json
import math

import numpy as np
import pytest
import torch

from genpref.errors import UserError
from motion.mdm import MDM, guided, load_mdm, mdm_noise_scheduler, released_args, save_mdm
from motion.mld import MldDenoiser, MldVae, load_mld, mld_noise_scheduler, save_mld
from motion.text import WordHashTokenizer, load_clip, tiny_clip

TINY = dict(latent_dim=32, ff_size=64, num_layers=2, num_heads=4, clip_dim=16)


def released_mdm_table(layers=8, d=512, ff=1024, feats=263, clip=512, max_len=5000):
    """Names and shapes of a released humanml_trans_enc_512 state dict (model/mdm.py, arch trans_enc,
    cond_mode text, data_rep hml_vec), written out from the released module definitions."""
    table = {
        "sequence_pos_encoder.pe": (max_len, 1, d),
        "input_process.poseEmbedding.weight": (d, feats),
        "input_process.poseEmbedding.bias": (d,),
        "embed_timestep.sequence_pos_encoder.pe": (max_len, 1, d),
        "embed_timestep.time_embed.0.weight": (d, d),
        "embed_timestep.time_embed.0.bias": (d,),
        "embed_timestep.time_embed.2.weight": (d, d),
        "embed_timestep.time_embed.2.bias": (d,),
        "embed_text.weight": (d, clip),
        "embed_text.bias": (d,),
        "output_process.poseFinal.weight": (feats, d),
        "output_process.poseFinal.bias": (feats,),
    }
    for i in range(layers):
        p = f"seqTransEncoder.layers.{i}."
        table.update({
            p + "self_attn.in_proj_weight": (3 * d, d), p + "self_attn.in_proj_bias": (3 * d,),
            p + "self_attn.out_proj.weight": (d, d), p + "self_attn.out_proj.bias": (d,),
            p + "linear1.weight": (ff, d), p + "linear1.bias": (ff,),
            p + "linear2.weight": (d, ff), p + "linear2.bias": (d,),
            p + "norm1.weight": (d,), p + "norm1.bias": (d,), p + "norm2.weight": (d,), p + "norm2.bias": (d,),
        })
    return table


def test_mdm_default_matches_released_names_and_shapes():
    state = MDM().state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == released_mdm_table()
    assert not any(k.startswith("clip_model.") for k in state)
    # 17.9 M trainable parameters, as printed by the released train script ("Total params: 17.88M")
    assert round(sum(p.numel() for p in MDM().parameters()) / 1e6, 2) == 17.88


def _write_args(directory, model, **extra):
    args = released_args(model, 50, {"dataset": "humanml", "emb_trans_dec": False, "unconstrained": False}, **extra)
    (directory / "args.json").write_text(json.dumps(args))
    return args


@pytest.mark.parametrize("layout", ["flat", "model+avg"])
def test_mdm_checkpoint_round_trip(tmp_path, layout):
    torch.manual_seed(0)
    model, avg = MDM(**TINY, mask_frames=True), MDM(**TINY, mask_frames=True)
    state, state_avg = model.state_dict(), avg.state_dict()
    state = {**state, "clip_model.token_embedding.weight": torch.zeros(3)}  # released files may carry CLIP: ignored
    ckpt = state if layout == "flat" else {"model": state, "model_avg": state_avg}
    torch.save(ckpt, tmp_path / "model000050000.pt")
    _write_args(tmp_path, model)
    loaded, args = load_mdm(tmp_path / "model000050000.pt", use_avg=True)
    expect = state_avg if layout == "model+avg" else model.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, expect[k]), k
    assert args["diffusion_steps"] == 50 and loaded.mask_frames
    loaded_plain, _ = load_mdm(tmp_path / "model000050000.pt", use_avg=False)
    assert torch.equal(loaded_plain.embed_text.weight, model.embed_text.weight)


def test_mdm_save_then_load_and_older_positional_table(tmp_path):
    torch.manual_seed(1)
    model = MDM(**TINY)
    save_mdm(model, tmp_path, _write_args(tmp_path, model))
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert "sequence_pos_encoder.pe" in state  # the released loader deletes this key, so it must be there
    state["sequence_pos_encoder.pe"] = state["sequence_pos_encoder.pe"][:1000]  # an older, shorter table
    torch.save(state, tmp_path / "model.pt")
    loaded, _ = load_mdm(tmp_path / "model.pt")
    x, t, c = torch.randn(2, 263, 1, 12), torch.tensor([3, 40]), torch.randn(2, 16)
    model.eval(), loaded.eval()
    assert torch.allclose(model(x, t, c), loaded(x, t, c))


def test_mdm_checkpoint_errors_name_the_file_and_key(tmp_path):
    model = MDM(**TINY)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    with pytest.raises(UserError, match=r"args\.json"):
        load_mdm(tmp_path / "m.pt")
    _write_args(tmp_path, model)
    bad = {**model.state_dict(), "embed_action.weight": torch.zeros(1)}
    torch.save(bad, tmp_path / "m.pt")
    with pytest.raises(UserError, match=r"m\.pt.*unexpected key 'embed_action\.weight'"):
        load_mdm(tmp_path / "m.pt")
    wrong = dict(model.state_dict())
    wrong["embed_text.weight"] = torch.zeros(32, 17)
    torch.save(wrong, tmp_path / "m.pt")
    with pytest.raises(UserError, match=r"'embed_text\.weight' has shape \(32, 17\)"):
        load_mdm(tmp_path / "m.pt")
    missing = {k: v for k, v in model.state_dict().items() if k != "embed_text.bias"}
    torch.save(missing, tmp_path / "m.pt")
    with pytest.raises(UserError, match=r"missing key 'embed_text\.bias'"):
        load_mdm(tmp_path / "m.pt")
    (tmp_path / "args.json").write_text(json.dumps({"arch": "trans_dec"}))
    with pytest.raises(UserError, match="arch='trans_dec' is not supported"):
        load_mdm(tmp_path / "m.pt")


@pytest.mark.parametrize("steps", [1000, 50])
def test_mdm_cosine_betas_match_guided_diffusion(steps):
    """betas_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), 0.999), ᾱ(t) = cos²((t + 0.008)/1.008 · π/2), for T = 1000 and 50."""
    abar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    expect = [min(1 - abar((i + 1) / steps) / abar(i / steps), 0.999) for i in range(steps)]
    sched = mdm_noise_scheduler({"diffusion_steps": steps, "noise_schedule": "cosine"})
    assert np.allclose(sched.betas.numpy(), expect, rtol=1e-5, atol=1e-7)
    assert sched.config.prediction_type == "sample"


def test_mdm_schedule_constants_are_float64_like_guided_diffusion():
    """guided-diffusion keeps β, ᾱ in float64 numpy arrays and casts only the gathered coefficient: ᾱ here is
    np.cumprod(1 − β) in float64, add_noise takes √ᾱ_t and √(1 − ᾱ_t) in float64 before casting, and the
    samplers built from the config keep the float64 table. MLD's schedule stays diffusers' float32."""
    from genpref.sampling import make_solver
    from motion.mdm import follow_float64

    sched = mdm_noise_scheduler({"diffusion_steps": 1000, "noise_schedule": "cosine"})
    t = np.arange(1001) / 1000
    abar_fn = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
    betas = np.minimum(1 - abar_fn[1:] / abar_fn[:-1], 0.999)
    abar = np.cumprod(1 - betas)
    assert sched.alphas_cumprod.dtype == torch.float64
    np.testing.assert_allclose(sched.alphas_cumprod.numpy(), abar, rtol=1e-14)
    x0, eps, ts = torch.randn(3, 5), torch.randn(3, 5), torch.tensor([0, 1, 999])
    expect = (np.sqrt(abar[ts.numpy()])[:, None].astype(np.float32) * x0.numpy()
              + np.sqrt(1 - abar[ts.numpy()])[:, None].astype(np.float32) * eps.numpy())  # fmt: skip
    np.testing.assert_array_equal(sched.add_noise(x0, eps, ts).numpy(), expect)
    # diffusers' own float32 table puts √(1 − ᾱ_0) off by 2.6e-4 relative; the float64 one is exact
    from diffusers import DDPMScheduler

    abar32 = DDPMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod
    assert abs(float((1 - abar32[0]) ** 0.5) / np.sqrt(1 - abar[0]) - 1) > 2e-4
    assert abs(float((1 - sched.alphas_cumprod[0]) ** 0.5) / np.sqrt(1 - abar[0]) - 1) < 1e-12
    for solver in ("ddpm", "ddim"):  # what the MDM adapter's make_solver returns
        sampler = follow_float64(sched, make_solver(solver, sched.config))
        assert sampler.alphas_cumprod.dtype == torch.float64, solver
        sampler.set_timesteps(10)
        out = sampler.step(torch.randn(2, 4), sampler.timesteps[0], torch.randn(2, 4)).prev_sample
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
    mld = mld_noise_scheduler()
    assert mld.alphas_cumprod.dtype == torch.float32
    assert follow_float64(mld, make_solver("ddim", mld.config)).alphas_cumprod.dtype == torch.float32


def test_mld_scaled_linear_betas():
    sched = mld_noise_scheduler()
    expect = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    assert np.allclose(sched.betas.numpy(), expect, rtol=1e-5)
    assert sched.config.prediction_type == "epsilon"


def test_mdm_frame_mask_hides_padding_only_when_mask_frames():
    torch.manual_seed(0)
    x, t, c = torch.randn(1, 263, 1, 20), torch.tensor([10]), torch.randn(1, 16)
    mask = (torch.arange(20) < 12).reshape(1, 1, 1, 20)
    x2 = x.clone()
    x2[..., 12:] = 5.0  # change the padded frames only
    for mask_frames, same in [(True, True), (False, False)]:
        model = MDM(**TINY, mask_frames=mask_frames).eval()
        a, b = model(x, t, c, mask)[..., :12], model(x2, t, c, mask)[..., :12]
        assert torch.allclose(a, b, atol=1e-5) == same


def test_guidance_is_uncond_plus_scale_times_difference():
    torch.manual_seed(0)
    model = MDM(**TINY).eval()
    x, t, c = torch.randn(2, 263, 1, 8), torch.tensor([5, 7]), torch.randn(2, 16)
    null = torch.zeros(16)
    cond, uncond = model(x, t, c), model(x, t, torch.zeros(2, 16))
    assert torch.allclose(guided(model, x, t, c, null, None, 2.5), uncond + 2.5 * (cond - uncond), atol=1e-5)


def test_classifier_free_training_drops_conditions_unless_switched_off():
    model = MDM(**TINY, cond_mask_prob=1.0).train()
    c = torch.randn(4, 16)
    assert torch.equal(model.mask_cond(c), torch.zeros_like(c))
    model.train_cond_drop = False
    assert torch.equal(model.mask_cond(c), c)


def released_mld_tables():
    """Names/shapes of the released MLD HumanML3D model (latent [1, 256], 9 layers, ff 1024, CLIP-L 768),
    from mld_vae.py / mld_denoiser.py / cross_attention.py / position_encoding.py / embeddings.py."""
    d, ff = 256, 1024

    def enc_layer(p):
        return {p + "self_attn.in_proj_weight": (3 * d, d), p + "self_attn.in_proj_bias": (3 * d,),
                p + "self_attn.out_proj.weight": (d, d), p + "self_attn.out_proj.bias": (d,),
                p + "linear1.weight": (ff, d), p + "linear1.bias": (ff,), p + "linear2.weight": (d, ff),
                p + "linear2.bias": (d,), p + "norm1.weight": (d,), p + "norm1.bias": (d,),
                p + "norm2.weight": (d,), p + "norm2.bias": (d,)}

    def dec_layer(p):
        t = enc_layer(p)
        t.update({p + "multihead_attn.in_proj_weight": (3 * d, d), p + "multihead_attn.in_proj_bias": (3 * d,),
                  p + "multihead_attn.out_proj.weight": (d, d), p + "multihead_attn.out_proj.bias": (d,),
                  p + "norm3.weight": (d,), p + "norm3.bias": (d,)})
        return t

    def skip(prefix, layer):
        t = {}
        for i in range(4):
            t.update(layer(f"{prefix}.input_blocks.{i}."))
            t.update(layer(f"{prefix}.output_blocks.{i}."))
            t.update({f"{prefix}.linear_blocks.{i}.weight": (d, 2 * d), f"{prefix}.linear_blocks.{i}.bias": (d,)})
        t.update(layer(f"{prefix}.middle_block."))
        t.update({f"{prefix}.norm.weight": (d,), f"{prefix}.norm.bias": (d,)})
        return t

    vae = {"query_pos_encoder.pe": (500, 1, d), "query_pos_decoder.pe": (500, 1, d), "global_motion_token": (2, d),
           "skel_embedding.weight": (d, 263), "skel_embedding.bias": (d,), "final_layer.weight": (263, d),
           "final_layer.bias": (263,), **skip("encoder", enc_layer), **skip("decoder", dec_layer)}
    den = {"time_embedding.linear_1.weight": (d, 768), "time_embedding.linear_1.bias": (d,),
           "time_embedding.linear_2.weight": (d, d), "time_embedding.linear_2.bias": (d,),
           "emb_proj.1.weight": (d, 768), "emb_proj.1.bias": (d,), "query_pos.pe": (500, 1, d),
           "mem_pos.pe": (500, 1, d), **skip("encoder", enc_layer)}
    return vae, den


def test_mld_default_matches_released_names_and_shapes():
    vae, den = released_mld_tables()
    assert {k: tuple(v.shape) for k, v in MldVae().state_dict().items()} == vae
    assert {k: tuple(v.shape) for k, v in MldDenoiser().state_dict().items()} == den


TINY_VAE = dict(latent_dim=(1, 16), ff_size=32, num_layers=3)
TINY_DEN = dict(latent_dim=(1, 16), ff_size=32, num_layers=3, text_encoded_dim=24)


def test_mld_lightning_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    vae, den = MldVae(**TINY_VAE), MldDenoiser(**TINY_DEN)
    state = {f"vae.{k}": v for k, v in vae.state_dict().items()}
    state.update({f"denoiser.{k}": v for k, v in den.state_dict().items()})
    state["text_encoder.text_model.logit_scale"] = torch.tensor(2.0)  # other released entries are kept, not read
    state["t2m_textencoder.pos_emb.weight"] = torch.zeros(3, 2)
    torch.save({"state_dict": state, "epoch": 3, "global_step": 10}, tmp_path / "mld.ckpt")
    vae2, den2, full = load_mld(tmp_path / "mld.ckpt")
    for mine, theirs in [(vae2, vae), (den2, den)]:
        for k, v in mine.state_dict().items():
            assert torch.equal(v, theirs.state_dict()[k]), k
    assert vae2.arch == "encoder_decoder" and vae2.latent_size == 1 and den2.text_encoded_dim == 24
    with torch.no_grad():
        den2.encoder.norm.bias.add_(1.0)  # "train" the denoiser
    save_mld(vae2, den2, tmp_path / "out.ckpt", base=full)
    written = torch.load(tmp_path / "out.ckpt", weights_only=True)["state_dict"]
    assert set(written) == set(state)
    assert torch.equal(written["denoiser.encoder.norm.bias"], den.encoder.norm.bias + 1.0)
    assert torch.equal(written["t2m_textencoder.pos_emb.weight"], torch.zeros(3, 2))


def lightning_checkpoint(state: dict) -> dict:
    """A checkpoint laid out as Lightning's `Trainer.save_checkpoint` writes it for MLD (Lightning 1.x):
    version and loop counters, optimizer and callback states, and the model's `save_hyperparameters()`
    with MLD's whole OmegaConf config under 'cfg'."""
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({
        "NAME": "1222_PELearn_Diff_Latent1_MEncDec49_MdiffEnc49_bs64_clip_uncond75_01",
        "model": {"model_type": "mld", "latent_dim": [1, 256], "ff_size": 1024, "guidance_scale": 7.5},
        "TRAIN": {"STAGE": "diffusion", "BATCH_SIZE": 64, "DATASETS": ["humanml3d"], "PRETRAINED_VAE": None},
        "LOSS": {"LAMBDA_PRIOR": 0.0}, "DEBUG": False,
    })  # fmt: skip
    checkpoint_callback = "ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 100}"
    return {
        "epoch": 2999, "global_step": 123000, "pytorch-lightning_version": "1.7.7", "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 3000, "completed": 2999}}}},
        "callbacks": {checkpoint_callback: {"monitor": None, "best_model_score": None, "best_model_path": "",
                                            "dirpath": "./experiments/mld/checkpoints", "best_k_models": {},
                                            "kth_value": torch.tensor(float("inf")), "last_model_path": ""}},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.zeros(2), "exp_avg_sq": torch.zeros(2)}},
                              "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                                                "amsgrad": False, "params": [0]}]}],
        "lr_schedulers": [], "hparams_name": "kwargs", "hyper_parameters": {"cfg": cfg, "phase": "train"},
    }  # fmt: skip


def test_released_format_mld_checkpoint_loads_without_running_its_pickled_code(tmp_path, monkeypatch):
    """A Lightning .ckpt with OmegaConf hyper_parameters loads through genpref.safe_load: the OmegaConf
    objects come back as inert data and none of OmegaConf's code runs (its unpickling hook would raise)."""
    from omegaconf import DictConfig, ListConfig

    from genpref import safe_load

    torch.manual_seed(0)
    vae, den = MldVae(**TINY_VAE), MldDenoiser(**TINY_DEN)
    state = {f"vae.{k}": v for k, v in vae.state_dict().items()}
    state.update({f"denoiser.{k}": v for k, v in den.state_dict().items()})
    path = tmp_path / "1222_mld_humanml3d_FID041.ckpt"
    torch.save(lightning_checkpoint(state), path)
    with pytest.raises(Exception, match="Unsupported global"):  # plain weights_only refuses the file
        torch.load(path, weights_only=True)

    def refuse(self, state):
        raise AssertionError("OmegaConf code ran while loading")

    monkeypatch.setattr(DictConfig, "__setstate__", refuse)
    monkeypatch.setattr(ListConfig, "__setstate__", refuse)
    vae2, den2, _ = load_mld(path)
    for mine, theirs in [(vae2, vae), (den2, den)]:
        for k, v in mine.state_dict().items():
            assert torch.equal(v, theirs.state_dict()[k]), k
    full = safe_load.load_weights(path, "MLD checkpoint")
    assert full["pytorch-lightning_version"] == "1.7.7" and full["global_step"] == 123000
    cfg = full["hyper_parameters"]["cfg"]
    assert isinstance(cfg, safe_load.Inert) and cfg.state["_content"]["NAME"].state["_val"].startswith("1222_")


def test_safe_load_refuses_code_and_names_the_file(tmp_path):
    import os
    import pickle

    from safetensors.torch import save_file

    from genpref.safe_load import load_weights

    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    torch.save({"state_dict": {"w": torch.ones(2)}, "hook": Exploit()}, tmp_path / "evil.ckpt")
    with pytest.raises(UserError, match=r"evil\.ckpt: cannot read this MLD checkpoint without running code from it"):
        load_weights(tmp_path / "evil.ckpt", "MLD checkpoint")
    (tmp_path / "raw.pt").write_bytes(pickle.dumps({"x": Exploit()}))
    with pytest.raises(UserError, match=r"raw\.pt: cannot read this checkpoint"):
        load_weights(tmp_path / "raw.pt")
    assert not marker.exists()
    with pytest.raises(UserError, match=r"absent\.pt: MDM checkpoint not found"):
        load_weights(tmp_path / "absent.pt", "MDM checkpoint")
    save_file({"w": torch.arange(3.0)}, str(tmp_path / "w.safetensors"))
    assert torch.equal(load_weights(tmp_path / "w.safetensors")["w"], torch.arange(3.0))


def test_mld_checkpoint_errors(tmp_path):
    torch.save({"state_dict": {"vae.skel_embedding.weight": torch.zeros(4, 3)}}, tmp_path / "vae_only.ckpt")
    with pytest.raises(UserError, match=r"vae_only\.ckpt: no 'denoiser\.' weights"):
        load_mld(tmp_path / "vae_only.ckpt")
    with pytest.raises(UserError, match="not found"):
        load_mld(tmp_path / "absent.ckpt")


def test_mld_vae_ignores_padding_and_zeroes_it():
    torch.manual_seed(0)
    vae = MldVae(**TINY_VAE).eval()
    x = torch.randn(2, 30, 263)
    lengths = torch.tensor([30, 18])
    x2 = x.clone()
    x2[1, 18:] = 9.0
    mu, logvar = vae.encode(x, lengths)
    mu2, _ = vae.encode(x2, lengths)
    assert mu.shape == logvar.shape == (1, 2, 16)
    assert torch.allclose(mu, mu2, atol=1e-5)
    out = vae.decode(mu, lengths, num_frames=30)
    assert out.shape == (2, 30, 263) and torch.all(out[1, 18:] == 0) and out[1, :18].abs().sum() > 0


def test_mld_time_embedding_is_flipped_sinusoid():
    """diffusers Timesteps(flip_sin_to_cos=True, shift 0): [cos(t·ω_i), sin(t·ω_i)], ω_i = 10000^(−i/half)."""
    den = MldDenoiser(**TINY_DEN)
    t = torch.tensor([0, 7, 999])
    half = 12
    w = torch.tensor([10000 ** (-i / half) for i in range(half)])
    expect = torch.cat([torch.cos(t[:, None] * w), torch.sin(t[:, None] * w)], dim=1)
    assert torch.allclose(den.time_proj(t), expect, atol=3e-4)  # float32 phases at t = 999


def test_tiny_text_encoder_is_fixed_and_tokenizes_words():
    tok = WordHashTokenizer(max_length=6)
    ids = tok(["A person WALKS", "one two three four five six"])
    assert ids.shape == (2, 6)
    assert ids[0, 0] == 1 and ids[0, 4] == tok.eos_id and ids[0, 5] == 0
    assert ids[0, 1] == tok.word_id("a") and ids[0, 3] == tok.word_id("walks")
    assert ids[1, -1] == tok.eos_id  # truncated to 4 words + start/end
    a, b = tiny_clip(16), tiny_clip(16)
    fa, fb = a(["a person walks", "a person jumps"]), b(["a person walks", "a person jumps"])
    assert fa.shape == (2, 16) and torch.equal(fa, fb)
    assert not torch.allclose(fa[0], fa[1])


def write_tiny_clip_dir(path, projection_dim=16):
    """A CLIP text model + BPE tokenizer saved like a hub download (transformers trap: the tokenizer must be
    built with from_pretrained(dir), its file arguments are ignored)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    words = ["a", "person", "walks", "jumps", "up"]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    merges = []
    for c in sorted({c for w in words for c in w}):
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    for w in words:
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        while len(parts) > 1:
            merges.append(f"{parts[0]} {parts[1]}")
            parts = [parts[0] + parts[1]] + parts[2:]
            vocab.setdefault(parts[0], len(vocab))
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    CLIPTokenizer.from_pretrained(path, model_max_length=77).save_pretrained(path)
    config = CLIPTextConfig(vocab_size=len(vocab) + 1, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2, projection_dim=projection_dim, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(0)
    CLIPTextModelWithProjection(config).save_pretrained(path)
    return vocab


def test_load_clip_from_local_directory(tmp_path):
    from transformers import CLIPTextModelWithProjection

    vocab = write_tiny_clip_dir(tmp_path / "clip")
    enc = load_clip(str(tmp_path / "clip"), max_length=22)
    long_prompt = " ".join(["a person walks"] * 12)  # 36 words: truncated to 20 + start/end
    feats = enc(["a person walks", long_prompt])
    model = CLIPTextModelWithProjection.from_pretrained(tmp_path / "clip").eval()
    ids = torch.tensor([[0, vocab["a</w>"], vocab["person</w>"], vocab["walks</w>"], 1]])
    with torch.no_grad():
        assert torch.allclose(feats[0], model(input_ids=ids).text_embeds[0], atol=1e-5)
    assert enc.tokenize([long_prompt]).shape == (1, 22) and enc.tokenize([long_prompt])[0, -1] == 1
    with pytest.raises(UserError, match="model.text_encoder: directory not found"):
        load_clip(str(tmp_path / "nowhere"), 22)
    with pytest.raises(UserError, match="model.text_encoder is required"):
        load_clip(None, 22)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="could not load a CLIP text model"):
        load_clip(str(tmp_path / "empty"), 22)

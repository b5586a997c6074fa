"""The image adapter on tiny SD / SDXL: reference = base model, cache-only-UNet steps, generation callback
consistency, LoRA export into diffusers pipelines, loading LoRA into the existing adapter, SDXL wiring."""

import pytest
import torch

from genpref import sampling
from genpref.adapter import Adapter, Batch
from genpref.config import from_dict
from genpref.errors import UserError
from genpref.noising import noised_branch
from genpref.train import branch_errors
from image.adapter import build_adapter, set_attention
from image.models import build_tiny, quiet, save_pipeline

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "tiny-sd"
    with quiet():
        save_pipeline(build_tiny("sd"), path)
    return path


def make(out, base_dir=None, kind="tiny-sd", lora=(4, 8.0), **data):
    cfg = {
        "model": {"kind": kind, "path": str(base_dir) if base_dir else None,
                  "lora": {"rank": lora[0], "alpha": lora[1]} if lora else None},
        "data": {"resolution": 32, "experts": "tiny://experts", "pairs": "tiny://pairs", **data},
        "objective": {"name": "dpo"},
        "train": {"output_dir": str(out)},
    }
    return build_adapter(from_dict(cfg), CPU, torch.float32)


def perturb_lora(adapter, seed=1):
    """LoRA starts as the identity (B = 0); give it weights so policy and base differ."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in adapter.denoiser.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def inputs(adapter, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = adapter.encode_prompts(["a red square in the top left", "a blue circle"][:n])
    return torch.randn(n, 4, 16, 16, generator=g), torch.tensor([10, 700][:n]), batch


def base_unet_output(base_dir, x, t, batch):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(base_dir), subfolder="unet")
    return unet(x, t, encoder_hidden_states=batch.cond["encoder_hidden_states"]).sample


def test_adapter_satisfies_the_protocol(tmp_path, base_dir):
    assert isinstance(make(tmp_path, base_dir), Adapter)


def test_lora_reference_is_the_base_model_and_is_restored_after_errors(tmp_path, base_dir):
    adapter = make(tmp_path, base_dir)
    perturb_lora(adapter)
    x, t, batch = inputs(adapter)
    with torch.no_grad():
        policy = adapter.predict(x, t, batch)
        with adapter.reference():
            reference = adapter.predict(x, t, batch)
        base = base_unet_output(base_dir, x, t, batch)
        assert torch.equal(reference, base)
        assert (policy - base).abs().max() > 1e-3
        with pytest.raises(RuntimeError, match="boom"), adapter.reference():
            raise RuntimeError("boom")
        assert torch.equal(adapter.predict(x, t, batch), policy)


def test_full_finetune_reference_is_a_frozen_copy(tmp_path, base_dir):
    adapter = make(tmp_path, base_dir, lora=None)
    n_unet = sum(1 for _ in adapter.denoiser.parameters())
    assert len(adapter.trainable_parameters()) == n_unet
    x, t, batch = inputs(adapter)
    with torch.no_grad():
        adapter.denoiser.conv_in.weight.add_(0.05)
        with adapter.reference():
            reference = adapter.predict(x, t, batch)
        policy = adapter.predict(x, t, batch)
        assert torch.equal(reference, base_unet_output(base_dir, x, t, batch))
        assert (policy - reference).abs().max() > 1e-3
    assert not any(p.requires_grad for p in adapter.reference_unet.parameters())


def _count_forwards(modules):
    counts = {name: 0 for name in modules}
    for name, module in modules.items():
        module.register_forward_hook(lambda *_, n=name: counts.__setitem__(n, counts[n] + 1))
    return counts


def test_a_cached_step_runs_only_the_unet(tmp_path, base_dir):
    first = make(tmp_path, base_dir)
    pairs = first.load_items("pairs")
    items = [pairs[i] for i in range(3)]
    prompts = [it["prompt"] for it in items]
    w0 = first.encode([it["w"] for it in items], prompts)
    first.encode([it["l"] for it in items], prompts)

    again = make(tmp_path, base_dir)  # a new process would see only the files in the cache directory
    c = again.components
    counts = _count_forwards({"vae": c.vae.encoder, "text": c.text_encoders[0], "unet": again.denoiser})
    w = again.encode([it["w"] for it in items], prompts)
    l = again.encode([it["l"] for it in items], prompts)
    t = torch.tensor([5, 500, 990])
    eps = torch.randn_like(w.x0)
    sched = again.noise_scheduler
    err, ref = branch_errors(again, {"w": noised_branch(sched, w, t, eps), "l": noised_branch(sched, l, t, eps)}, True)
    assert counts == {"vae": 0, "text": 0, "unet": 2}  # one reference and one policy forward for w and l together
    assert torch.equal(w.x0, w0.x0) and err["w"].shape == ref["l"].shape == (3,)
    flipped = [type(it["w"])(it["w"].name, it["w"].data, flip=not it["w"].flip) for it in items]
    again.encode(flipped, prompts)
    assert counts["vae"] == 1 and counts["text"] == 0  # preprocessing is part of the key; prompts are cached


def test_generation_callback_states_reproduce_the_recorded_predictions(tmp_path, base_dir):
    adapter = make(tmp_path, base_dir)
    perturb_lora(adapter)
    batch = adapter.encode_prompts(["a red square in the top left", "a blue circle", "a green triangle"])
    steps, ratio = 4, 1000 // 4
    record = []
    x0 = adapter.generate(batch, generator=torch.Generator().manual_seed(0), num_steps=steps, timestep_jitter=True,
                          callback=lambda i, t, x, out: record.append((i, t.clone(), x.clone(), out.clone())))
    assert [r[0] for r in record] == list(range(steps)) and x0.shape == (3, 4, 16, 16)
    offsets = record[0][1] - (steps - 1) * ratio
    assert ((offsets >= 0) & (offsets < ratio)).all() and len(set(offsets.tolist())) > 1
    for i, t, x_t, out in record:
        assert torch.equal(t, (steps - 1 - i) * ratio + offsets)  # DiffusionDRO's perturbed schedule
        with torch.no_grad():
            assert torch.allclose(adapter.predict(x_t, t, batch), out, atol=1e-5)


def test_guidance_mixes_conditional_and_unconditional_predictions(tmp_path, base_dir):
    adapter = make(tmp_path, base_dir)
    batch = adapter.encode_prompts(["a red square in the top left"])
    record = []
    adapter.generate(batch, generator=torch.Generator().manual_seed(0), num_steps=2, guidance=3.0,
                     callback=lambda i, t, x, out: record.append((t, x, out)))
    t, x_t, out = record[1]
    uncond = adapter.encode_prompts([""])
    with torch.no_grad():
        c, u = adapter.predict(x_t, t, batch), adapter.predict(x_t, t, uncond)
    assert torch.allclose(out, u + 3.0 * (c - u), atol=1e-5)


def test_dataset_reset_starts_at_start_t(tmp_path, base_dir):
    adapter = make(tmp_path, base_dir)
    experts = adapter.load_items("experts")
    batch = adapter.encode([experts[0]["x"], experts[1]["x"]], [experts[0]["prompt"], experts[1]["prompt"]])
    solver = sampling.make_solver("dpmsolver++", adapter.noise_scheduler.config)
    solver.set_timesteps(10)
    expected = [int(v) for v in solver.timesteps if v <= 500]
    seen = []
    adapter.generate(batch, generator=torch.Generator().manual_seed(0), num_steps=10, start_t=500,
                     callback=lambda i, t, x, out: seen.append(int(t[0])))
    assert seen == expected and seen[0] <= 500 < int(solver.timesteps[0])
    with pytest.raises(UserError, match="per-trajectory"):
        adapter.generate(batch, generator=torch.Generator(), num_steps=2, timestep_jitter=True, solver="unipc")


def test_exported_lora_loads_into_a_diffusers_pipeline_and_changes_its_output(tmp_path, base_dir):
    from diffusers import StableDiffusionPipeline

    adapter = make(tmp_path, base_dir)  # rank 4, alpha 8: the exported file must carry the scale 2
    perturb_lora(adapter)
    adapter.save_final(str(tmp_path / "final"))
    x, t, batch = inputs(adapter)
    with quiet():
        pipe = StableDiffusionPipeline.from_pretrained(str(base_dir), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    run = lambda: pipe("a red square", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    with torch.no_grad():
        before = run()
        with quiet():
            pipe.load_lora_weights(str(tmp_path / "final"))
        after = run()
        unet_out = pipe.unet(x, t, encoder_hidden_states=batch.cond["encoder_hidden_states"]).sample
        assert torch.allclose(unet_out, adapter.predict(x, t, batch), atol=1e-6)
    assert abs(after - before).max() > 1e-3


def test_saved_lora_loads_into_the_existing_adapter_without_stacking(tmp_path, base_dir):
    trained = make(tmp_path, base_dir)
    perturb_lora(trained)
    trained.save_final(str(tmp_path / "final"))
    fresh = make(tmp_path, base_dir)
    fresh.load_lora_weights(tmp_path / "final")
    fresh.load_lora_weights(tmp_path / "final" / "pytorch_lora_weights.safetensors")
    assert list(fresh.denoiser.peft_config) == ["default"]
    x, t, batch = inputs(fresh)
    with torch.no_grad():
        assert torch.equal(fresh.predict(x, t, batch), trained.predict(x, t, batch))
    other_rank = make(tmp_path, base_dir, lora=(2, 2.0))
    with pytest.raises(UserError, match="do not fit this model.*size mismatch"):
        other_rank.load_lora_weights(tmp_path / "final")


def test_kohya_export_keeps_alpha_and_loads_into_a_pipeline(tmp_path, base_dir):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    from image.export import export

    adapter = make(tmp_path / "run", base_dir)
    perturb_lora(adapter)
    adapter.save_final(str(tmp_path / "run" / "final"))
    out = export(tmp_path / "run", "kohya", tmp_path / "kohya.safetensors")
    state = load_file(str(out))
    alphas = {k: float(v) for k, v in state.items() if k.endswith(".alpha")}
    n_modules = sum(1 for k in adapter.lora_state_dict() if k.endswith("lora.down.weight"))
    assert len(alphas) == n_modules and set(alphas.values()) == {8.0}
    assert all(k.startswith("lora_unet_") for k in state)
    with quiet():
        pipe = StableDiffusionPipeline.from_pretrained(str(base_dir), safety_checker=None)
        pipe.load_lora_weights(str(out))
    x, t, batch = inputs(adapter)
    with torch.no_grad():
        out_unet = pipe.unet(x, t, encoder_hidden_states=batch.cond["encoder_hidden_states"]).sample
        assert torch.allclose(out_unet, adapter.predict(x, t, batch), atol=1e-6)
    copied = export(tmp_path / "run", "diffusers", tmp_path / "exported")
    assert copied.read_bytes() == (tmp_path / "run" / "final" / "pytorch_lora_weights.safetensors").read_bytes()


def test_full_finetune_saves_a_pipeline_directory(tmp_path, base_dir):
    from diffusers import UNet2DConditionModel

    from image.export import export

    adapter = make(tmp_path, base_dir, lora=None)
    with torch.no_grad():
        adapter.denoiser.conv_in.bias.add_(0.1)
    adapter.save_final(str(tmp_path / "run" / "final"))
    unet = UNet2DConditionModel.from_pretrained(str(tmp_path / "run" / "final"), subfolder="unet")
    assert torch.equal(unet.conv_in.bias, adapter.denoiser.conv_in.bias)
    with pytest.raises(UserError, match="full fine-tune"):
        export(tmp_path / "run", "kohya", tmp_path / "k.safetensors")


def test_sdxl_tiny_uses_pooled_embeddings_and_time_ids(tmp_path):
    adapter = make(tmp_path, kind="tiny-sdxl", lora=(4, 4.0))
    perturb_lora(adapter)
    experts = adapter.load_items("experts")
    batch = adapter.encode([experts[0]["x"]], [experts[0]["prompt"]])
    assert set(batch.cond) == {"encoder_hidden_states", "text_embeds", "time_ids"}
    assert batch.cond["encoder_hidden_states"].shape == (1, 77, 64)  # both encoders' widths concatenated
    assert batch.cond["time_ids"].tolist() == [[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]]
    x, t = torch.randn(1, 4, 16, 16), torch.tensor([300])
    with torch.no_grad():
        out = adapter.predict(x, t, batch)
        for key in ("text_embeds", "time_ids"):
            changed = Batch(None, {**batch.cond, key: batch.cond[key] + 1.0})
            assert (adapter.predict(x, t, changed) - out).abs().max() > 1e-4, key
        with adapter.reference():
            assert (adapter.predict(x, t, batch) - out).abs().max() > 1e-4
    x0 = adapter.generate(adapter.encode_prompts(["a red square"]), generator=torch.Generator().manual_seed(0),
                          num_steps=2, guidance=2.0)
    assert adapter.decode(x0)[0].size == (32, 32)


def test_prediction_type_override_reaches_training_and_sampling(tmp_path):
    cfg = from_dict({"model": {"kind": "tiny-sd", "prediction_type": "v_prediction"}, "data": {"resolution": 32},
                     "objective": {"name": "dpo"}, "train": {"output_dir": str(tmp_path)}})
    adapter = build_adapter(cfg, CPU, torch.float32)
    assert adapter.noise_scheduler.config.prediction_type == "v_prediction"
    assert sampling.make_solver("euler", adapter.noise_scheduler.config).config.prediction_type == "v_prediction"


def test_model_path_errors_are_one_clear_message(tmp_path, monkeypatch):
    from image.models import load_components

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="model directory not found"):
        load_components("sd15", str(tmp_path / "nope"))
    with pytest.raises(UserError, match="not available offline.*model.path"):
        load_components("sd15", "someone/some-model-that-is-not-cached")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no unet/ folder"):
        load_components("sdxl", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="checkpoint file not found"):
        load_components("sd15", str(tmp_path / "model.safetensors"))
    with pytest.raises(UserError, match="prediction_type"):
        load_components("tiny-sd", None, prediction_type="eps")


def test_xformers_request_without_xformers_is_a_user_error():
    from diffusers.utils import is_xformers_available

    if is_xformers_available():
        pytest.skip("xformers is installed")
    with pytest.raises(UserError, match="xformers is not installed"):
        set_attention(build_tiny("sd").unet, "xformers")


def test_tiny_tokenizer_needs_no_download_and_has_a_max_length(tmp_path):
    from image.models import tiny_tokenizer

    tok = tiny_tokenizer(tmp_path / "tok")
    ids = tok(["ab"], padding="max_length", max_length=tok.model_max_length).input_ids[0]
    vocab = tok.get_vocab()
    assert tok.model_max_length == 77 and len(ids) == 77
    assert ids[:4] == [vocab["<|startoftext|>"], vocab["a"], vocab["b</w>"], vocab["<|endoftext|>"]]

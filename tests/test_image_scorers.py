"""Image scorers on tiny random models saved in the released formats: each score against the formula
computed here from the model's parts, the path errors, the optional open_clip extra and z-score ensembles."""

import json
import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from genpref import build
from genpref.config import from_dict
from genpref.errors import UserError
from image import scorers
from image.models import tiny_tokenizer

PROMPTS = ["a red square", "a blue circle at the top", "green", "a yellow triangle"]


def _images(n=4, size=40):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size, size + 8 * i, 3), dtype=np.uint8)) for i in range(n)]


def _save_tiny_clip(directory, logit_scale=4.6052, processor=True):  # ln 100
    """A 2-layer CLIPModel (projection 16) + byte-level tokenizer + 32 px image processor, as
    save_pretrained writes them."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = tiny_tokenizer(directory / "tok")
    vocab = len(tokenizer)
    text = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=77, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16,
                                 logit_scale_init_value=logit_scale))
    model.save_pretrained(str(directory))
    if processor:
        image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return _save_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def pick_dir(tmp_path_factory):
    """PickScore's layout: model files at the top, the CLIP-H processor files in processor/."""
    root = tmp_path_factory.mktemp("pick")
    _save_tiny_clip(root, logit_scale=math.log(37.0), processor=False)
    _save_tiny_clip(root / "processor")
    return root


def _cfg(tmp_path, *models, normalize="none"):
    return from_dict({"model": {"kind": "tiny-sd"}, "objective": {"name": "dpo"}, "train": {"output_dir": str(tmp_path)},
                      "reward": {"models": list(models), "normalize": normalize}})


def _reward(tmp_path, name, path):
    cfg = _cfg(tmp_path, {"name": name, "path": str(path)})
    return build.build_reward(cfg, torch.device("cpu"))


def _embeddings(model_dir, images, prompts, processor_dir=None):
    """Projected image/text embeddings from the model's own towers, with the saved processor."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(str(model_dir)).eval()
    processor = CLIPProcessor.from_pretrained(str(processor_dir or model_dir))
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    assert pixels.shape[-2:] == (32, 32)
    text = processor(text=prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        e_img = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        e_txt = model.text_projection(model.text_model(**text).pooler_output)
    return model, e_img.numpy().astype(np.float64), e_txt.numpy().astype(np.float64)


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_clip_score_is_100_cos(tmp_path, clip_dir):
    images = _images()
    scores = _reward(tmp_path, "clip", clip_dir).score(images, PROMPTS)
    _, e_img, e_txt = _embeddings(clip_dir, images, PROMPTS)
    assert scores.shape == (4,) and scores.dtype == torch.float32 and scores.device.type == "cpu"
    np.testing.assert_allclose(scores.numpy(), 100 * _cos(e_img, e_txt), atol=1e-3)
    # each image is scored against its own prompt: swapping prompts changes the scores
    swapped = _reward(tmp_path, "clip", clip_dir).score(images, PROMPTS[::-1])
    np.testing.assert_allclose(swapped.numpy(), 100 * _cos(e_img, e_txt[::-1]), atol=1e-3)


def test_pickscore_uses_the_learned_logit_scale_and_its_processor_dir(tmp_path, pick_dir):
    images = _images()
    scores = _reward(tmp_path, "pickscore", pick_dir).score(images, PROMPTS)
    model, e_img, e_txt = _embeddings(pick_dir, images, PROMPTS, processor_dir=pick_dir / "processor")
    assert math.isclose(model.logit_scale.exp().item(), 37.0, rel_tol=1e-5)
    np.testing.assert_allclose(scores.numpy(), 37.0 * _cos(e_img, e_txt), atol=1e-3)


def test_scores_do_not_depend_on_chunking(tmp_path, clip_dir, monkeypatch):
    images = _images(4)
    full = _reward(tmp_path, "clip", clip_dir).score(images, PROMPTS)
    monkeypatch.setattr(scorers, "CHUNK", 3)
    np.testing.assert_allclose(_reward(tmp_path, "clip", clip_dir).score(images, PROMPTS).numpy(), full.numpy(), atol=1e-4)


def _mlp_state(dim):
    g = torch.Generator().manual_seed(1)
    sizes = [(1024, dim), (128, 1024), (64, 128), (16, 64), (1, 16)]
    state = {}
    for index, (out, inp) in zip((0, 2, 4, 6, 7), sizes):
        state[f"layers.{index}.weight"] = torch.randn(out, inp, generator=g) / math.sqrt(inp)
        state[f"layers.{index}.bias"] = torch.randn(out, generator=g) * 0.1
    return state


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_aesthetic_head_on_normalised_clip_embedding(tmp_path, kind):
    """MLP head (improved-aesthetic-predictor, .pth): y = W7(W6(W4(W2(W0·ê + b0) + b2) + b4) + b6) + b7 with
    ê = e/|e| (no nonlinearity); the original linear head (.safetensors): y = w·ê + b."""
    from safetensors.torch import save_file

    root = tmp_path / "aesthetic"
    _save_tiny_clip(root / "clip")
    if kind == "mlp":
        state = _mlp_state(16)
        torch.save(state, root / "sac+logos+ava1-l14-linearMSE.pth")
    else:
        state = {"weight": torch.randn(1, 16), "bias": torch.tensor([5.0])}
        save_file(state, str(root / "head.safetensors"))
    images = _images()
    scores = _reward(tmp_path, "aesthetic", root).score(images, PROMPTS)
    _, e_img, _ = _embeddings(root / "clip", images, PROMPTS)
    y = e_img / np.linalg.norm(e_img, axis=1, keepdims=True)
    layers = [0, 2, 4, 6, 7] if kind == "mlp" else [None]
    for index in layers:
        prefix = f"layers.{index}." if index is not None else ""
        y = y @ state[prefix + "weight"].double().numpy().T + state[prefix + "bias"].double().numpy()
    np.testing.assert_allclose(scores.numpy(), y[:, 0], atol=1e-4)


def test_aesthetic_path_may_be_the_head_file(tmp_path):
    root = tmp_path / "aesthetic"
    _save_tiny_clip(root / "clip")
    torch.save(_mlp_state(16), root / "head.pth")
    (root / "notes.txt").write_text("not weights")
    assert _reward(tmp_path, "aesthetic", root / "head.pth").score(_images(2), PROMPTS[:2]).shape == (2,)


def _error(tmp_path, *models):
    with pytest.raises(UserError) as err:
        build.build_reward(_cfg(tmp_path, *models), torch.device("cpu"))
    return str(err.value)


@pytest.mark.parametrize("name", ["clip", "pickscore", "hpsv2", "aesthetic"])
def test_missing_path_is_one_error_naming_the_key(tmp_path, clip_dir, name):
    msg = _error(tmp_path, {"name": name, "path": str(tmp_path / "nowhere")})
    assert msg.startswith("reward.models[0].path: ") and "nowhere does not exist" in msg and "\n" not in msg
    assert _error(tmp_path, {"name": name}).startswith(f"reward.models[0].path: reward '{name}' needs local weights")
    msg = _error(tmp_path, {"name": "clip", "path": str(clip_dir)}, {"name": name, "path": str(tmp_path / "nowhere")})
    assert msg.startswith("reward.models[1].path: ")


def test_wrong_files_are_errors_naming_the_key(tmp_path, clip_dir):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "preprocessor_config.json").write_text(json.dumps({}))
    assert "could not load PickScore" in _error(tmp_path, {"name": "pickscore", "path": str(tmp_path / "empty")})
    root = tmp_path / "aes"
    root.mkdir()
    torch.save({"fc.weight": torch.zeros(1, 16)}, root / "head.pth")
    msg = _error(tmp_path, {"name": "aesthetic", "path": str(root)})
    assert msg.startswith("reward.models[0].path: ") and "clip/" in msg
    (root / "clip").symlink_to(clip_dir)
    assert "not an aesthetic head" in _error(tmp_path, {"name": "aesthetic", "path": str(root)})
    torch.save(_mlp_state(24), root / "head.pth")
    assert "takes 24-d embeddings" in _error(tmp_path, {"name": "aesthetic", "path": str(root)})


def test_hpsv2_without_open_clip_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # `import open_clip` now raises ImportError
    (tmp_path / "HPS_v2_compressed.pt").write_bytes(b"")
    msg = _error(tmp_path, {"name": "hpsv2", "path": str(tmp_path / "HPS_v2_compressed.pt")})
    assert msg == 'reward "hpsv2" needs open_clip, an optional extra: pip install -e ".[hpsv2]"'


TINY_OPEN_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 8, "patch_size": 8},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1}}


def test_hpsv2_is_100_cos_of_the_checkpoint_model(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    (tmp_path / "tiny-hps.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(tmp_path / "tiny-hps.json")
    torch.manual_seed(3)
    model, _, preprocess = open_clip.create_model_and_transforms("tiny-hps", pretrained=None)
    # HPSv2 releases {'state_dict': ...}; a DDP prefix must not matter
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, tmp_path / "HPS_v2_compressed.pt")
    cfg = _cfg(tmp_path, {"name": "hpsv2", "path": str(tmp_path / "HPS_v2_compressed.pt")})
    scorer = scorers.build_hpsv2(cfg.reward.models[0], cfg, torch.device("cpu"), arch="tiny-hps")
    images = _images()
    scores = scorer.score(images, PROMPTS)
    tokenizer = open_clip.get_tokenizer("tiny-hps")
    with torch.no_grad():
        e_img = model.eval().encode_image(torch.stack([preprocess(im) for im in images])).double().numpy()
        e_txt = model.encode_text(tokenizer(PROMPTS)).double().numpy()
    np.testing.assert_allclose(scores.numpy(), 100 * _cos(e_img, e_txt), atol=1e-3)
    # a checkpoint of another architecture is one error naming the key
    torch.save({"state_dict": {"visual.proj": torch.zeros(3, 3)}}, tmp_path / "bad.pt")
    cfg = _cfg(tmp_path, {"name": "hpsv2", "path": str(tmp_path / "bad.pt")})
    with pytest.raises(UserError, match=r"^reward.models\[0\].path: .*does not fit open_clip tiny-hps"):
        scorers.build_hpsv2(cfg.reward.models[0], cfg, torch.device("cpu"), arch="tiny-hps")


def test_zscore_ensemble_of_clip_and_pickscore(tmp_path, clip_dir, pick_dir):
    """reward.normalize=zscore: Σ_k w_k·(s_k − mean(s_k)) / std(s_k) over the batch (population std)."""
    images = _images()
    cfg = _cfg(tmp_path, {"name": "clip", "path": str(clip_dir), "weight": 1.0},
               {"name": "pickscore", "path": str(pick_dir), "weight": 0.5}, normalize="zscore")
    total = build.build_reward(cfg, torch.device("cpu")).score(images, PROMPTS)
    _, a_img, a_txt = _embeddings(clip_dir, images, PROMPTS)
    _, b_img, b_txt = _embeddings(pick_dir, images, PROMPTS, processor_dir=pick_dir / "processor")
    z = lambda s: (s - s.mean()) / s.std()
    expected = z(100 * _cos(a_img, a_txt)) + 0.5 * z(37 * _cos(b_img, b_txt))
    np.testing.assert_allclose(total.numpy(), expected, atol=1e-3)
    # without normalisation the larger-scale model dominates: the plain weighted sum
    cfg.reward.normalize = "none"
    plain = build.build_reward(cfg, torch.device("cpu")).score(images, PROMPTS)
    np.testing.assert_allclose(plain.numpy(), 100 * _cos(a_img, a_txt) + 0.5 * 37 * _cos(b_img, b_txt), atol=1e-3)

"""`genpref reward train` for images on a tiny random CLIP and the tiny shapes data: the files it writes, the
scores of the `learned` reward against the head applied here by hand to the CLIP's own embeddings, the
embedding cache, the errors naming their key, and one GRPO step driven by the learned reward."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from genpref import build
from genpref.cli import main
from genpref.config import load_config
from genpref.errors import UserError
from image.tasks.tiny_clip import write_tiny_clip

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs/image/tiny_grpo_learned.yaml"


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("clip"))


def _args(tmp_path, clip_dir, *extra):
    return ["reward", "train", str(TINY), f"train.output_dir={tmp_path / 'run'}",
            f"reward.models=[{{name: learned, path: {tmp_path / 'reward'}}}]", f"reward_train.encoder={clip_dir}", *extra]


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, [ln for ln in (out.out + out.err).replace("\r", "\n").splitlines() if ln.startswith(("genpref:", "wrote"))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, clip_dir):
    tmp = tmp_path_factory.mktemp("learned")
    assert main(_args(tmp, clip_dir)) == 0
    return tmp


def test_reward_train_writes_head_and_config(trained, clip_dir):
    info = json.loads((trained / "reward" / "reward.json").read_text())
    assert info["modality"] == "image" and info["encoder"] == str(Path(clip_dir).resolve())
    assert info["in_features"] == 3 * 16 and info["hidden"] == 16 and info["seed"] == 0
    # tiny data: 16 pairs + 2 ties kept as label 0.5 (data.ties: half), 16 ratings
    assert info["data"]["pair_count"] == 18 and info["data"]["rating_count"] == 16 and info["data"]["ties"] == "half"
    held = info["metrics"]["heldout"]
    assert set(held) == {"pairs", "ratings"} and 0 < held["pairs"]["pairs"] < 18
    assert 1 <= len(info["history"]) <= 3 and 1 <= info["best_epoch"] <= len(info["history"])
    from safetensors.torch import load_file

    assert load_file(str(trained / "reward" / "reward_head.safetensors"))["net.0.weight"].shape == (16, 48)
    labels = load_file(info["cache"])["label"]
    assert (labels == 0.5).sum() == 2 and ((labels == 1.0).sum() == 16)  # the ties reach the fit as soft labels


def test_learned_reward_scores_by_hand(trained, clip_dir):
    """score = W2·gelu(W1·[s, t, s·t] + b1) + b2 with s, t the CLIP's projected embeddings, L2-normalised."""
    from safetensors.torch import load_file
    from transformers import CLIPModel, CLIPProcessor

    cfg = load_config(TINY, [f"reward.models=[{{name: learned, path: {trained / 'reward'}}}]"])
    reward = build.build_reward(cfg, torch.device("cpu"))
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)) for _ in range(3)]
    prompts = ["a red square in the top left", "a blue circle", "green"]
    got = reward.score(images, prompts)

    model, processor = CLIPModel.from_pretrained(str(clip_dir)).eval(), CLIPProcessor.from_pretrained(str(clip_dir))
    with torch.no_grad():
        s = model.visual_projection(model.vision_model(pixel_values=processor(images=images, return_tensors="pt")["pixel_values"]).pooler_output)
        t = model.text_projection(model.text_model(**processor(text=prompts, padding=True, return_tensors="pt")).pooler_output)
    s, t = s / s.norm(dim=1, keepdim=True), t / t.norm(dim=1, keepdim=True)
    w = load_file(str(trained / "reward" / "reward_head.safetensors"))
    hidden = F.gelu(torch.cat([s, t, s * t], 1) @ w["net.0.weight"].T + w["net.0.bias"])
    expected = (hidden @ w["net.2.weight"].T + w["net.2.bias"]).squeeze(1)
    assert got.shape == (3,) and torch.allclose(got, expected, atol=1e-5), (got, expected)


def test_second_fit_reads_the_embedding_cache(trained, clip_dir, capsys, monkeypatch):
    import image.learned_reward as ilr

    def no_encoder(*args, **kwargs):
        raise AssertionError("the encoder ran although the embeddings are cached")

    monkeypatch.setattr(ilr, "_embed", no_encoder)
    code, lines = _cli(capsys, *_args(trained, clip_dir, "reward_train.hidden=0", "train.overwrite=true"))
    assert code == 0 and lines[-1].startswith(f"wrote {trained / 'reward'}: held-out pairs: accuracy"), lines
    assert json.loads((trained / "reward" / "reward.json").read_text())["hidden"] == 0


def test_errors_name_the_key(trained, clip_dir, capsys, tmp_path):
    code, lines = _cli(capsys, *_args(trained, clip_dir))
    assert code == 1 and "reward.models[0].path" in lines[-1] and "train.overwrite=true" in lines[-1], lines
    code, lines = _cli(capsys, *_args(tmp_path, clip_dir, "reward_train.encoder=null"))
    assert code == 2 and "'reward_train.encoder' is not set" in lines[-1], lines
    code, lines = _cli(capsys, *_args(tmp_path, tmp_path / "nope"))
    assert code == 2 and "'reward_train.encoder'" in lines[-1] and "does not exist" in lines[-1], lines
    code, lines = _cli(capsys, *_args(tmp_path, clip_dir, "reward.models=[{name: pickscore, path: x}]"))
    assert code == 2 and "named learned" in lines[-1], lines
    code, lines = _cli(capsys, *_args(tmp_path, clip_dir, "reward_train.holdout=1.5"))
    assert code == 2 and "'reward_train.holdout' must be in [0, 1)" in lines[-1], lines
    cfg = load_config(TINY, [f"reward.models=[{{name: learned, path: {tmp_path}}}]"])
    with pytest.raises(UserError, match=r"reward.models\[0\].path: .* has no reward.json .*genpref reward train"):
        build.build_reward(cfg, torch.device("cpu"))


def test_learned_reward_drives_one_grpo_step(trained, capsys):
    """The same config, `genpref train`: GRPO scores its rollouts with the head trained above."""
    run = trained / "grpo"
    code, lines = _cli(capsys, "train", TINY, f"train.output_dir={run}",
                       f"reward.models=[{{name: learned, path: {trained / 'reward'}}}]", "online.group_size=2", "online.batch_size=1",
                       "train.batch_size=2")
    assert code == 0, lines
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 1 and np.isfinite(rows[-1]["loss"])
    reward_keys = [k for k in rows[-1] if "reward" in k]
    assert reward_keys, rows[-1]


@pytest.mark.parametrize("key, value, setting", [
    ("reward_train.hidden", "0", None), ("reward_train.epochs", "1", "epochs"), ("reward_train.lr", "0.01", "lr"),
    ("reward_train.weight_decay", "0.1", "weight_decay"), ("reward_train.batch_size", "3", "batch_size"),
    ("reward_train.holdout", "0", "holdout"), ("reward_train.patience", "1", "patience"),
])
def test_every_reward_train_key_reaches_the_fit(trained, clip_dir, capsys, tmp_path, key, value, setting):
    """Each key with a non-default value trains on the cached embeddings and is recorded in reward.json."""
    out = tmp_path / "reward"
    code, lines = _cli(capsys, "reward", "train", TINY, f"train.output_dir={trained / 'run'}", f"reward_train.encoder={clip_dir}",
                       f"reward.models=[{{name: learned, path: {out}}}]", f"data.cache_dir={trained / 'reward' / 'cache'}",
                       f"{key}={value}")
    assert code == 0, lines
    info = json.loads((out / "reward.json").read_text())
    recorded = info["hidden"] if setting is None else info["settings"][setting]
    assert recorded == float(value) and info["cache"].startswith(str(trained / "reward" / "cache"))
    if key == "reward_train.holdout":
        assert info["metrics"]["heldout"] == {} and "nothing held out" in lines[-1]
    if key == "reward_train.epochs":
        assert len(info["history"]) == 1


def test_a_failed_save_leaves_no_finished_model(trained, monkeypatch, tmp_path):
    """reward.json is removed before the head is written and written after it: a crash in between leaves a
    directory that `learned` refuses, never an old reward.json beside a new head."""
    import safetensors.torch

    from genpref import learned_reward
    from genpref.reward_fit import RewardHead

    out = tmp_path / "reward"
    learned_reward.save(out, RewardHead(4, 0), {"format": learned_reward.FORMAT})
    assert (out / "reward.json").is_file()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError):
        learned_reward.save(out, RewardHead(4, 0), {"format": learned_reward.FORMAT})
    assert not (out / "reward.json").exists()


def test_embeddings_do_not_depend_on_the_chunk_size(trained, clip_dir, monkeypatch):
    """The training pass reads and embeds a chunk of images at a time; 4 at a time gives the one-pass values."""
    import image.learned_reward as ilr
    from image import data as image_data

    cfg = load_config(TINY, [f"train.output_dir={trained / 'run'}", f"reward_train.encoder={clip_dir}"])
    info = json.loads((trained / "reward" / "reward.json").read_text())
    pairs = image_data.read_pairs(info["data"]["pairs"], ties="half")
    whole = ilr._embed(cfg, pairs, None, "k")
    monkeypatch.setattr(ilr, "EMBED_CHUNK", 4)
    chunked = ilr._embed(cfg, pairs, None, "k")
    assert whole["w"].shape == (18, 16) and torch.allclose(whole["w"], chunked["w"], atol=1e-5)
    assert torch.equal(whole["label"], chunked["label"]) and torch.equal(whole["pair_prompt"], chunked["pair_prompt"])


def test_a_reward_of_the_other_modality_is_refused(trained, tmp_path):
    import shutil

    other = tmp_path / "reward"
    shutil.copytree(trained / "reward", other, ignore=shutil.ignore_patterns("cache"))
    info = json.loads((other / "reward.json").read_text())
    (other / "reward.json").write_text(json.dumps({**info, "modality": "motion"}))
    cfg = load_config(TINY, [f"reward.models=[{{name: learned, path: {other}}}]"])
    with pytest.raises(UserError, match=r"reward.models\[0\].path: .* is a motion reward, but model.kind 'tiny-sd' is an image model"):
        build.build_reward(cfg, torch.device("cpu"))

"""The shapes task: renderer, exact verifier, held-out split, data writers, the shapes-unet model kind,
its reward, and the shipped configs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from demo_checks import check_bench_resumes, check_demo_half
from PIL import Image

from genpref.errors import UserError
from image.tasks import shapes

REPO = Path(__file__).resolve().parents[1]


def test_heldout_split_is_a_quarter_and_every_word_is_trained():
    train, held = shapes.train_combos(), shapes.heldout_combos()
    assert len(train) == 36 and len(held) == 12
    assert not set(train) & set(held)
    for i in range(3):  # every colour, shape and position occurs in some training combination
        assert {k[i] for k in train} == {k[i] for k in shapes.all_combos()}
    # (c + s + p) mod 4 == 0 by index, e.g. red(0) square(0) top left(0), green(1) circle(1) bottom left(2)
    assert ("red", "square", "top left") in held and ("green", "circle", "bottom left") in held
    assert ("red", "square", "top right") in train


def test_clean_renders_of_every_combo_and_jitter_score_one():
    for combo in shapes.all_combos():
        for jitter in shapes.jitters():
            result = shapes.check(shapes.render(combo, jitter), shapes.caption(combo))
            assert result == {"colour": True, "shape": True, "position": True, "all": True}, (combo, jitter)


def test_each_wrong_attribute_is_caught_alone():
    prompt = "a blue triangle at the bottom left"
    wrong = {
        "colour": ("yellow", "triangle", "bottom left"),
        "shape": ("blue", "circle", "bottom left"),
        "position": ("blue", "triangle", "top right"),
    }
    for attribute, combo in wrong.items():
        for jitter in ((0, 0), (2, -2), (-2, 2)):
            result = shapes.check(shapes.render(combo, jitter), prompt)
            assert result["all"] is False
            assert [a for a in shapes.ATTRIBUTES if not result[a]] == [attribute]
    assert shapes.score(shapes.render(wrong["shape"]), prompt) == pytest.approx(2 / 3)


def test_verifier_reads_shapes_by_fill_and_handles_empty_and_noisy_images():
    """Fill ratios of the 10-px renders: square 100/100, circle 80/100, triangle 50/90 (a 10-row
    triangle spans 9 columns at its base)."""
    fills = {s: shapes.read(shapes.render(("red", s, "top left"))).fill for s in shapes.SHAPES}
    assert fills == pytest.approx({"square": 1.0, "circle": 0.8, "triangle": 50 / 90})
    black = np.zeros((32, 32, 3), np.uint8)
    assert shapes.read(black).colour is None
    assert shapes.check(black, "a red square at the top left")["all"] is False
    # a dim speck and a darker second blob do not change the reading of the main shape
    image = shapes.render(("green", "square", "bottom right")).copy()
    image[2, 2] = (200, 200, 200)
    image[3:6, 20:23] = (0, 0, 250)
    assert shapes.read(image).combo == ("green", "square", "bottom right")
    # colour = nearest palette colour of the blob's mean: a dull yellow still reads yellow
    dull = shapes.render(("yellow", "circle", "top right")) * np.array([0.8, 0.7, 0.0])
    assert shapes.read(dull.astype(np.uint8)).colour == "yellow"


def test_prompts_parse_and_bad_prompts_name_what_is_missing():
    assert shapes.parse("a red triangle at the top left") == ("red", "triangle", "top left")
    assert shapes.parse("Upper-right: a GREEN circle") == ("green", "circle", "top right")
    assert shapes.parse("something blue") == ("blue", None, None)
    with pytest.raises(UserError, match="names no shape, position"):
        shapes.check(shapes.render(("red", "square", "top left")), "a red thing")


def test_noisy_captions_never_name_a_heldout_combo_and_noise_rate_holds(tmp_path):
    folder = shapes.write_experts(tmp_path / "pretrain", noise=0.2, captions_per_image=2, seed=3)
    lines = [json.loads(x) for x in (folder / "metadata.jsonl").read_text().splitlines()]
    assert len(lines) == 36 * 25 * 2
    wrong = 0
    for line in lines:
        named = shapes.parse_combo(line["text"])
        assert not shapes.is_heldout(named)
        shown = shapes.read(Image.open(folder / line["file_name"]))
        assert not shapes.is_heldout(shown.combo)  # images: training combinations only
        wrong += sum(a != b for a, b in zip(named, shown.combo))
    # 0.2 per attribute before the held-out redraw: ~0.6 wrong attributes per caption
    assert 0.45 < wrong / len(lines) < 0.7


def test_clean_experts_have_true_captions(tmp_path):
    folder = shapes.write_experts(tmp_path / "experts")
    lines = [json.loads(x) for x in (folder / "metadata.jsonl").read_text().splitlines()]
    assert len(lines) == 900
    for line in lines[:100]:
        assert shapes.check(Image.open(folder / line["file_name"]), line["text"])["all"]


def test_ranked_pairs_pair_best_with_worst_and_drop_ties():
    prompts = ["p"] * 4 + ["q"] * 2 + ["r"] * 2
    scores = [1 / 3, 1.0, 0.0, 2 / 3, 0.5, 0.5, 1.0, 0.0]
    # p: order by score 1(1.0), 3(2/3), 0(1/3), 2(0.0) -> (1, 2), (3, 0); q: tie dropped; r: (6, 7)
    assert shapes.ranked_pairs(prompts, scores) == [(1, 2), (3, 0), (6, 7)]


def test_pairs_and_ratings_writers_read_back_through_the_image_data_readers(tmp_path):
    from image.data import read_pairs, read_ratings

    prompt = "a red circle at the top right"
    good = Image.fromarray(shapes.render(shapes.parse_combo(prompt)))
    bad = Image.fromarray(shapes.render(("red", "square", "top right")))
    pairs = read_pairs(str(shapes.write_pairs(tmp_path / "pairs", [bad, good], [prompt, prompt])))
    assert len(pairs) == 1
    item = pairs[0]
    assert item["prompt"] == prompt
    ratings = read_ratings(str(shapes.write_ratings(tmp_path / "ratings", [bad, good], [prompt, prompt])))
    assert [r["rating"] for r in ratings] == [0.0, 1.0]


def test_attribute_tokens_one_hot_with_a_none_token_per_slot():
    from image.tasks.shapes.model import VOCAB, AttributePromptEncoder

    cond = AttributePromptEncoder().encode(["a yellow square at the bottom left", "a circle"])
    hidden, pooled = cond["encoder_hidden_states"], cond["class_labels"]
    assert hidden.shape == (2, 3, len(VOCAB)) and pooled.shape == (2, len(VOCAB))
    assert [VOCAB[i] for i in hidden[0].argmax(-1).tolist()] == ["yellow", "square", "bottom left"]
    assert [VOCAB[i] for i in hidden[1].argmax(-1).tolist()] == ["<no colour>", "circle", "<no position>"]
    assert torch.equal(pooled, hidden.sum(1)) and hidden.sum().item() == 6


def test_shapes_reward_scores_and_similarity():
    from genpref.build import rewards
    from image.tasks.shapes.reward import build_reward

    assert rewards()["shapes"] == "image.tasks.shapes.reward"
    reward = build_reward(type("Spec", (), {"name": "shapes"})(), None, "cpu")
    prompt = "a green triangle at the top right"
    right = shapes.render(shapes.parse_combo(prompt))
    two_wrong = shapes.render(("blue", "square", "top right"))
    assert reward.score([right, two_wrong], [prompt, prompt]).tolist() == pytest.approx([1.0, 1 / 3])
    assert reward.similarity([right, right], [right, two_wrong]).tolist() == pytest.approx([1.0, 1 / 3])


def test_graded_verifier_gives_near_misses_partial_credit_below_any_right_attribute():
    from image.tasks.shapes.reward import build_reward

    graded = build_reward(type("Spec", (), {"name": "shapes_graded"})(), None, "cpu")
    square = "a red square at the top left"
    right = shapes.render(("red", "square", "top left"))
    circle = shapes.render(("red", "circle", "top left"))  # fill 0.8: 0.1 below the square band
    triangle = shapes.render(("red", "triangle", "top left"))  # fill 50/90
    # credit = ½·(1 − distance / width) for the wrong attribute, 1 for each right one
    shape_credit = lambda fill: 0.5 * max(0.0, 1 - (shapes.SQUARE_FILL - fill) / shapes.FILL_WIDTH)
    want = [1.0, (2 + shape_credit(0.8)) / 3, (2 + shape_credit(50 / 90)) / 3]
    assert graded.score([right, circle, triangle], [square] * 3).tolist() == pytest.approx(want)
    assert shape_credit(50 / 90) == 0.0 and 0 < shape_credit(0.8) < 0.5  # the circle is the nearer miss
    # a wrong position: credit by the centroid's distance past the midline, in half-sides
    bottom = shapes.render(("red", "square", "bottom left"))
    cy = shapes.read(bottom).centre[0]
    past = (cy - 16) / 16
    assert graded.score([bottom], [square]).item() == pytest.approx((2 + 0.5 * max(0.0, 1 - past / shapes.POSITION_WIDTH)) / 3)
    strict = build_reward(type("Spec", (), {"name": "shapes_strict"})(), None, "cpu")
    assert strict.score([right, circle, bottom], [square] * 3).tolist() == [1.0, 0.0, 0.0]  # all three right or 0
    # exact where nothing is near: every right image and an empty one agree with `score`
    for image in (right, np.zeros((32, 32, 3), np.uint8), shapes.render(("blue", "square", "top left"))):
        assert shapes.graded_score(image, square) == pytest.approx(shapes.score(image, square))


def _train(config: str, tmp_path: Path, *overrides: str) -> Path:
    from genpref.config import load_config
    from genpref.train import train

    cfg = load_config(REPO / "configs" / "image" / config,
                      [f"train.output_dir={tmp_path / 'run'}", "train.tensorboard=false", *overrides])
    return train(cfg)


def test_base_kind_trains_saves_and_loads_back(tmp_path):
    from safetensors.torch import load_file

    from image.tasks.shapes import model as shapes_model

    run = _train("shapes_base.yaml", tmp_path, "train.max_steps=2", "train.batch_size=4", "train.checkpoint_every=0",
                 "train.sample_prompts=[]", "train.ema_decay=null")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
    weights = run / "final" / shapes_model.WEIGHTS_FILE
    unet = shapes_model.load(weights, "small")
    saved = load_file(str(weights))
    assert all(torch.equal(unet.state_dict()[k], v) for k, v in saved.items())
    # ...and the weights moved away from the seed's random init
    init = shapes_model.build_unet("small", seed=0).state_dict()
    assert any(not torch.equal(init[k], v) for k, v in saved.items())
    # the diffusers-format copy loads too
    assert shapes_model.load(run / "final" / "unet").config.in_channels == 3


def test_dro_recipe_runs_on_shapes_with_rollouts(tmp_path):
    run = _train("shapes_dro.yaml", tmp_path, "model.path=null", "train.max_steps=2", "train.batch_size=2",
                 "online.steps=3", "train.sample_prompts=[]")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("e_ref_w" in r and "hinge_active" in r for r in rows)


def test_bad_weights_file_names_the_file(tmp_path):
    from image.tasks.shapes import model as shapes_model

    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="broken.safetensors"):
        shapes_model.load(bad)
    with pytest.raises(UserError, match="not found"):
        shapes_model.load(tmp_path / "missing.safetensors")


def test_every_shapes_config_validates():
    from genpref import build
    from genpref.config import load_config

    files = sorted((REPO / "configs" / "image").glob("shapes_*.yaml"))
    assert len(files) >= 5
    for file in files:
        cfg = load_config(file, ["train.output_dir=/tmp/unused"])
        build.check(cfg)
        assert cfg.model.kind == "shapes-unet" and cfg.data.random_flip is False


@pytest.fixture
def small_demo(tmp_path, monkeypatch):
    """The demo with a random base, 1 training step, 1 sample per held-out prompt and 2 sampler steps."""
    from image.tasks.shapes import demo
    from image.tasks.shapes import model as shapes_model

    base = shapes_model.save(shapes_model.build_unet("small", seed=5), tmp_path / "base")
    monkeypatch.setattr(demo, "BASE_WEIGHTS", base)
    monkeypatch.setattr(demo, "EVAL", {"per_prompt": 1, "steps": 2, "solver": "ddim"})
    monkeypatch.setattr(demo, "FEEDBACK_PER_PROMPT", 2)
    monkeypatch.setattr(demo, "TRAIN_PER_PROMPT", 1)
    monkeypatch.setattr(demo, "ENCODER_EPOCHS", 1)
    return demo


def test_run_demo_writes_paired_results_figure_and_runs(small_demo, tmp_path):
    out = tmp_path / "demo" / "image"
    metrics = small_demo.run_demo(out, seed=0, progress=False, steps=1)
    check_demo_half(metrics, out, "shapes", "dro", n=12)
    figure = tmp_path / "demo" / metrics["figures"][0]["path"]
    assert figure.is_file() and Image.open(figure).size[1] == 16 + 12 * (64 + 2)
    assert (tmp_path / "demo" / metrics["runs"]["dro"] / "final" / "shapes_unet.safetensors").is_file()


def test_bench_quality_rows_are_paired_with_one_base_and_resume(small_demo, tmp_path):
    check_bench_resumes(small_demo.bench_quality, tmp_path / "bench")


def test_rm_grpo_arm_fits_its_reward_on_the_dpo_pairs_only_and_is_compared_with_dpo(small_demo, tmp_path):
    out = tmp_path / "bench"
    result = small_demo.bench_quality(out, seeds=[0], steps=1, arms=["dpo", "rm_grpo"], setting="heldout_prompts")
    rows = {r["objective"]: r for r in result["rows"]}
    info = json.loads((out / "runs-heldout_prompts" / "rm_grpo-0-reward" / "reward.json").read_text())
    assert info["data"]["pairs"] == str(out / "data" / "base-feedback" / "pairs" / "pairs.jsonl")
    assert not info["data"].get("ratings") and set(info["metrics"]["train"]) == {"pairs"}  # never the ratings
    assert info["encoder"] == str(out / "encoder")
    assert rows["rm_grpo"]["reward_heldout_pair_accuracy"] == info["metrics"]["heldout"]["pairs"]["accuracy"]
    assert "reward_heldout_combo_agreement" in rows["rm_grpo"] and "reward_heldout_combo_agreement" not in rows["dpo"]
    assert rows["rm_grpo"]["heldout_diversity"] is None  # one sample per prompt in this small evaluation
    summary = {s["objective"]: s for s in result["summary"]}
    assert summary["rm_grpo"]["heldout_diff_vs_dpo"] == pytest.approx(rows["rm_grpo"]["heldout_accuracy"] - rows["dpo"]["heldout_accuracy"])


def test_recipe_overrides_are_python_values():
    from image.tasks.shapes.demo import recipe_config

    cfg = recipe_config("shapes_dro.yaml", {"train.output_dir": '/tmp/a dir/"q"', "train.sample_prompts": [],
                                            "model.path": None, "train.lr": 1e-4})
    assert cfg.train.output_dir == '/tmp/a dir/"q"' and cfg.train.sample_prompts == []
    assert cfg.model.path is None and cfg.train.lr == 1e-4
    with pytest.raises(UserError, match="not found"):
        recipe_config("shapes_nothing.yaml", {})


def test_shipped_base_weights_fit_the_configs():
    from genpref.config import load_config
    from image.tasks.shapes import demo
    from image.tasks.shapes import model as shapes_model

    cfg = load_config(REPO / "configs" / "image" / "shapes_dro.yaml", ["train.output_dir=/tmp/unused"])
    assert (REPO / cfg.model.path).resolve() == demo.BASE_WEIGHTS
    unet = shapes_model.load(demo.BASE_WEIGHTS, cfg.model.size)
    assert sum(p.numel() for p in unet.parameters()) == 992_179

"""Inverse alignment (reward.refit_every, genpref.refit): the pairs nearest the policy against a brute-force
computation, the config errors naming their keys, a GRPO run on tiny-sd whose learned head is refitted every
step and resumes exactly, and a DiffusionNFT step on tiny MDM with every refit key set."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from test_learned_reward_motion import write_evaluator
from test_resume_state import assert_same

from genpref import build, checkpoint
from genpref.cli import main
from genpref.config import ConfigError, load_config
from genpref.refit import nearest_pairs, pair_distances
from genpref.rundir import read_metrics
from image.tasks.tiny_clip import write_tiny_clip

ROOT = Path(__file__).resolve().parents[1]
IMAGE, MOTION = ROOT / "configs/image/tiny_grpo_learned.yaml", ROOT / "configs/motion/tiny_mdm_nft_learned.yaml"


# ---------------------------------------------------------------------------------------------- selection


def brute_force(policy, w, l, fraction):
    """Plain Python: cosine distance to the nearest policy sample, mean over the pair's two samples, sort."""
    def cos_dist(a, b):
        dot = sum(x * y for x, y in zip(a, b))
        return 1.0 - dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

    policy, w, l = policy.tolist(), w.tolist(), l.tolist()
    d = [(min(cos_dist(wi, p) for p in policy) + min(cos_dist(li, p) for p in policy)) / 2 for wi, li in zip(w, l)]
    k = max(1, round(fraction * len(d)))
    return sorted(range(len(d)), key=lambda i: (d[i], i))[:k], d


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.01, 1.0])
def test_refit_keeps_the_pairs_nearest_the_policy(fraction):
    g = torch.Generator().manual_seed(0)
    policy, w, l = torch.randn(5, 6, generator=g), torch.randn(40, 6, generator=g) * 3, torch.randn(40, 6, generator=g)
    w[7], l[7] = policy[2] * 2, policy[4]  # both samples on a policy sample (scale does not matter): distance 0
    expected, d = brute_force(policy, w, l, fraction)
    torch.testing.assert_close(pair_distances(policy, w, l), torch.tensor(d), rtol=0, atol=1e-6)
    got = nearest_pairs(policy, w, l, fraction).tolist()
    assert got == expected and got[0] == 7 and len(got) == max(1, round(fraction * 40))


def test_a_pair_is_near_only_when_both_samples_are():
    """Mean, not min, of the two distances: one policy-like sample out of two is not enough."""
    policy = torch.tensor([[1.0, 0.0]])
    w = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # pair 0: one sample on the policy, the other orthogonal
    l = torch.tensor([[0.0, 1.0], [0.6, 0.8]])  # pair 1: both at cos 0.6
    assert nearest_pairs(policy, w, l, 0.5).tolist() == [1]


# ---------------------------------------------------------------------------------------------- config


def test_refit_config_errors_name_the_key(tmp_path):
    base = [f"train.output_dir={tmp_path / 'run'}", "reward.refit_every=2"]
    with pytest.raises(ConfigError, match=r"'reward.refit_every' refits one learned reward; reward.models holds 0"):
        build.check(load_config(IMAGE, [*base, "reward.models=[{name: toy}]"]))
    with pytest.raises(ConfigError, match=r"'reward.refit_every' .* objective 'dpo' with data.source=offline_pairs scores none"):
        build.check(load_config(IMAGE, [*base, "objective.name=dpo"]))
    with pytest.raises(ConfigError, match=r"data.source=ai_feedback scores none"):
        build.check(load_config(IMAGE, [*base, "objective.name=dpo", "data.source=ai_feedback", "online.annotator=implicit"]))
    for key, bad, what in (("refit_fraction", 0, "in \\(0, 1\\]"), ("refit_every", -1, "an integer >= 0"),
                           ("refit_samples", 0, "an integer >= 1"), ("refit_lr", 0, "a finite number > 0")):
        with pytest.raises(ConfigError, match=rf"'reward.{key}' must be {what}"):
            load_config(IMAGE, [*base, f"reward.{key}={bad}"])


# ---------------------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def image_reward(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refit_image")
    clip = write_tiny_clip(tmp / "clip")
    assert main(["reward", "train", str(IMAGE), f"train.output_dir={tmp / 'fit'}", f"reward_train.encoder={clip}",
                 f"reward.models=[{{name: learned, path: {tmp / 'reward'}}}]"]) == 0
    return tmp / "reward"


def image_run(out, reward, *extra):
    return ["train", str(IMAGE), f"train.output_dir={out}", f"reward.models=[{{name: learned, path: {reward}}}]",
            "online.group_size=2", "online.batch_size=1", "train.batch_size=2", "train.max_steps=4", "train.checkpoint_every=2",
            "reward.refit_every=1", "reward.refit_samples=3", "reward.refit_steps=2", "reward.refit_lr=0.05", "reward.refit_fraction=0.5",
            *extra]


def test_grpo_with_refits_resumes_exactly(image_reward, tmp_path):
    """4 steps straight == 2 steps, resume, 2 steps, with a refit after every step: losses, the refit numbers
    and the head with its AdamW state are the same; and the refitted head is no longer the one loaded."""
    from safetensors.torch import load_file

    a, b = tmp_path / "a", tmp_path / "b"
    assert main(image_run(a, image_reward)) == 0
    shutil.copytree(a, b)  # b = a's first half: its step-2 checkpoint, nothing after
    shutil.rmtree(b / "checkpoints" / "step-4")
    shutil.rmtree(b / "final")
    (b / "metrics.jsonl").write_text("\n".join((b / "metrics.jsonl").read_text().splitlines()[:2]) + "\n")
    assert main(image_run(b, image_reward, "train.resume=latest")) == 0

    rows_a, rows_b = read_metrics(a), read_metrics(b)
    keys = ("loss", "reward_mean", "refits", "refit_pairs", "refit_loss_before", "refit_loss_after", "refit_heldout_accuracy")
    assert [[r[k] for k in keys] for r in rows_a] == [[r[k] for k in keys] for r in rows_b]
    assert [r["refits"] for r in rows_a] == [1.0, 2.0, 3.0, 4.0]
    info = json.loads((image_reward / "reward.json").read_text())
    held = info["metrics"]["heldout"]["pairs"]["pairs"]
    assert rows_a[0]["refit_pairs"] == round(0.5 * (info["data"]["pair_count"] - held))  # of the fit's training pairs
    assert rows_a[0]["refit_loss_after"] < rows_a[0]["refit_loss_before"]  # the steps lower the loss on what they fit
    (wa, sa, _), (wb, sb, _) = (checkpoint.load(x / "checkpoints" / "step-4", 0, 1) for x in (a, b))
    assert_same(wa, wb, "weights")
    sa, sb = sa["reward_refit"], sb["reward_refit"]
    assert_same(sa, sb, "reward_refit")
    assert sa["refits"] == 4 and sa["optimizer"]["state"]
    loaded = load_file(str(image_reward / "reward_head.safetensors"))
    assert set(loaded) == set(sa["head"]) and not all(torch.equal(loaded[k], sa["head"][k]) for k in loaded)


def test_refit_draws_from_the_rollout_copy_and_changes_the_scores(image_reward, tmp_path):
    """A run's refit: its samples come from the rollout copy's weights, and the reward the source holds
    scores with the refitted head."""
    from genpref.run import build_run

    cfg = load_config(IMAGE, image_run(tmp_path / "r", image_reward)[2:])
    run = build_run(cfg)
    refit, reward = run.state.reward_refit, run.state.source.ctx.reward
    assert refit is not None and refit.head is reward.head
    entered = []
    active = run.state.rollout.active
    run.state.rollout.active = lambda: (entered.append(1), active())[1]
    from PIL import Image

    images, prompts = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")], ["a", "b"]
    before = reward.score(images, prompts)
    stats = refit.after_optimizer_step(1)
    assert entered == [1] and stats["refits"] == 1.0 and not torch.equal(before, reward.score(images, prompts))
    assert refit.after_optimizer_step(1 + 1) and refit.refits == 2  # refit_every=1: every step


def test_nft_on_motion_refits_with_every_key(tmp_path):
    """A DiffusionNFT step on tiny MDM with every refit key set; the embedding cache that reward.json names
    is gone, so the pairs are embedded again."""
    evaluator = write_evaluator(tmp_path / "evaluator")
    reward = tmp_path / "reward"
    common = [f"reward.models=[{{name: learned, path: {reward}}}]", f"reward_train.encoder={evaluator}"]
    assert main(["reward", "train", str(MOTION), f"train.output_dir={tmp_path / 'fit'}", *common]) == 0
    cache = Path(json.loads((reward / "reward.json").read_text())["cache"])
    shutil.rmtree(cache.parent)
    out = tmp_path / "nft"
    assert main(["train", str(MOTION), f"train.output_dir={out}", *common, "reward.refit_every=1", "reward.refit_fraction=0.4",
                 "reward.refit_samples=2", "reward.refit_steps=3", "reward.refit_lr=0.01", "train.max_steps=1"]) == 0
    assert cache.is_file()  # embedded again, under the same key
    row = read_metrics(out)[-1]
    assert row["refits"] == 1.0 and row["refit_pairs"] >= 1 and math.isfinite(row["refit_loss_after"]) and math.isfinite(row["loss"])


def test_a_reward_fitted_without_pairs_cannot_be_refitted(image_reward, tmp_path):
    from genpref.errors import UserError
    from genpref.refit import pair_embeddings

    info = json.loads((image_reward / "reward.json").read_text())
    info["data"]["pairs"] = None
    with pytest.raises(UserError, match=r"reward.refit_every: reward.models\[0\].path .* was fitted without pairs"):
        pair_embeddings(load_config(IMAGE), info, image_reward, "reward.models[0].path")

"""The moves task: procedural motions, the verifier (clean motions score 1, every wrong attribute is
caught), joints -> features -> joints round trips, the dataset's held-out split, word vectors and the
bag-of-words text encoder, and the reward models."""

import json
import re

import numpy as np
import pytest
import torch

from motion.skeleton import canonicalize, extract_features, recover_from_ric
from motion.tasks import moves

FLIP_DIRECTION = {"forward": "backward", "backward": "forward", "left": "right", "right": "left"}


@pytest.fixture(scope="module")
def clean():
    """A jittered motion of each of the 36 combinations, as features."""
    rng = np.random.default_rng(3)
    return [(combo, moves.render(*combo, int(rng.integers(40, 53)), rng)) for combo in moves.COMBOS]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    settings = moves.BuildSettings(seed=1, train_per_combo=1, val_per_combo=1, test_heldout_per_combo=1,
                                   test_seen_per_combo=1, noise=0.5)  # fmt: skip
    return moves.build(tmp_path_factory.mktemp("moves"), settings)


def flags(verdict):
    return verdict.action, verdict.direction, verdict.speed, verdict.hand


def test_clean_motions_score_one_on_every_attribute(clean):
    for combo, features in clean:
        for want in (moves.Move.of(*combo), moves.caption(*combo, np.random.default_rng(0))):
            verdict = moves.verify(features, want)
            assert flags(verdict) == (True, True, True, True), (combo, verdict)
            assert verdict.score == 1.0 and verdict.detected == moves.MOVES[combo[0]][0]


def test_each_wrong_attribute_is_caught(clean):
    for (move, speed, hand), features in clean:
        action, direction = moves.MOVES[move]
        other_speed = "slowly" if speed == "quickly" else "quickly"
        wrong_speed = moves.verify(features, moves.Move(action, direction, other_speed, hand))
        assert flags(wrong_speed) == (True, True, False, True) and wrong_speed.score == 0.75
        for other_hand in set(moves.HANDS) - {hand}:
            assert flags(moves.verify(features, moves.Move(action, direction, speed, other_hand))) == (True, True, True, False)
        if direction is not None:
            wrong_side = moves.verify(features, moves.Move(action, FLIP_DIRECTION[direction], speed, hand))
            assert flags(wrong_side) == (True, False, True, True)
        for other in {a for a, _ in moves.MOVES.values()} - {action}:
            other_dir = {"walk": "forward", "turn": "left"}.get(other)
            assert not moves.verify(features, moves.Move(other, other_dir, speed, hand)).action


def test_a_standing_body_is_no_action_and_slow():
    rest = moves.pose(np.zeros(45), {})
    rest[..., 1] -= rest[..., 1].min()
    verdict = moves.verify(extract_features(rest), "a person jumps quickly")
    assert verdict.detected == "stand" and flags(verdict) == (False, True, False, True)


def test_verifier_reads_joints_and_features_alike(clean):
    combo, features = clean[5]
    joints = recover_from_ric(features)
    assert moves.verify(joints, moves.Move.of(*combo)).correct
    assert moves.measure(joints) == moves.measure(features)


@pytest.mark.parametrize("move", list(moves.MOVES))
def test_joints_features_joints_round_trip(move):
    joints = moves.animate(move, "quickly", "left", 45, np.random.default_rng(11))
    recovered = recover_from_ric(extract_features(joints, fix_heading_wrap=True))  # turns cross −Z, as moves builds them
    assert recovered.shape == (44, 22, 3)
    assert np.abs(recovered - canonicalize(joints)[:-1]).max() < 1e-4


def test_turn_left_is_counterclockwise_seen_from_above():
    joints = moves.animate("turn_left", "slowly", "none", 41, np.random.default_rng(0))
    facing = joints[:, 2] - joints[:, 1]  # right hip − left hip points to the body's right
    start, end = facing[0, [0, 2]], facing[-1, [0, 2]]
    cross_y = start[1] * end[0] - start[0] * end[1]  # (start × end)·ŷ for XZ vectors
    assert cross_y > 0  # the right-hand side rotated about +Y: a left turn


def test_captions_parse_back_to_their_attributes():
    rng = np.random.default_rng(0)
    for combo in moves.COMBOS:
        for _ in range(30):
            assert moves.parse_prompt(moves.caption(*combo, rng)) == moves.Move.of(*combo)
    assert moves.parse_prompt("someone turns counterclockwise fast") == moves.Move("turn", "left", "quickly", "none")
    assert moves.parse_prompt("a man turns to the left while waving the right hand").combo == ("turn_left", None, "right")
    assert moves.parse_prompt("a person stands still") == moves.Move(None, None, None, "none")


def test_noisy_captions_never_name_a_held_out_combination():
    rng = np.random.default_rng(0)
    wrong = 0
    for combo in moves.TRAIN_COMBOS:
        for _ in range(100):
            got = moves.parse_prompt(moves.noisy_caption(*combo, rng, noise=0.35)).combo
            assert got not in moves.HELD_OUT
            wrong += got != combo
    assert 0.30 < wrong / (100 * len(moves.TRAIN_COMBOS)) < 0.40


def test_dataset_splits_hold_out_combinations(dataset):
    meta = json.loads((dataset / "moves.json").read_text())
    labels = meta["labels"]
    held = {tuple(c) for c in meta["held_out"]}
    assert held == set(moves.HELD_OUT)
    combo = lambda name: (labels[name]["move"], labels[name]["speed"], labels[name]["hand"])  # noqa: E731
    split = lambda name, root=dataset: (root / f"{name}.txt").read_text().split()  # noqa: E731
    for root in (dataset, dataset / "noisy"):
        for name in split("train", root):
            assert combo(name) not in held
            for line in (root / "texts" / f"{name}.txt").read_text().splitlines():
                assert moves.parse_prompt(line.split("#")[0]).combo not in held
    assert {combo(n) for n in split("test_heldout")} == held
    trained = {combo(n) for n in split("train")}
    for c in held:  # every pair of a held-out combination's values is in training
        for i, j in ((0, 1), (0, 2), (1, 2)):
            assert any(t[i] == c[i] and t[j] == c[j] for t in trained), (c, i, j)
    assert set(split("test")) == set(split("test_heldout")) | set(split("test_seen"))
    for name in split("val") + split("test"):
        line = (dataset / "texts" / f"{name}.txt").read_text().splitlines()[0]
        caption, tokens, start, end = line.split("#")
        assert moves.parse_prompt(caption) == moves.Move.of(*combo(name))
        assert all(re.fullmatch(r"[a-z]+/[A-Z]+", t) for t in tokens.split()) and (start, end) == ("0.0", "0.0")
    features = np.load(dataset / "new_joint_vecs" / f"{split('train')[0]}.npy")
    assert features.shape[1] == 263 and 40 <= len(features) <= 52
    assert moves.check(dataset) == {"train": 1.0, "val": 1.0, "test": 1.0}


def test_rebuilding_with_other_settings_is_refused(dataset):
    from genpref.errors import UserError

    assert moves.build(dataset, moves.BuildSettings(seed=1, train_per_combo=1, val_per_combo=1, test_heldout_per_combo=1,
                                                    test_seen_per_combo=1, noise=0.5)) == dataset  # fmt: skip
    with pytest.raises(UserError, match="other settings"):
        moves.build(dataset, moves.BuildSettings(seed=2))


def test_word_vectors_load_and_cover_every_token(dataset):
    from motion.glove import WordVectorizer

    vectors = WordVectorizer.load(dataset / "glove")
    for path in (dataset / "texts").glob("*.txt"):
        for line in path.read_text().splitlines():
            assert all(tok.rpartition("/")[0] in vectors for tok in line.split("#")[1].split())
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    assert cos(vectors["walk/VERB"][0], vectors["stroll/VERB"][0]) > 0.4  # synonyms share a meaning
    assert abs(cos(vectors["walk/VERB"][0], vectors["jump/VERB"][0])) < 0.3


def test_text_encoder_is_a_bag_of_words(dataset):
    from motion.glove import WordVectorizer
    from motion.text import load_clip

    encoder = load_clip(str(dataset / "text_encoder"), 22)
    glove = WordVectorizer.load(dataset / "glove")
    caption = "a man jumps quickly"
    lemmas = ["a", "man", "jump", "quickly"]  # each word's vector is its lemma's
    normed = [torch.nn.functional.layer_norm(torch.from_numpy(glove[w][0]), (300,)) for w in lemmas]
    expected = torch.nn.functional.layer_norm(torch.stack(normed).sum(0) / (len(lemmas) + 2), (300,))
    got = encoder([caption])[0]
    assert torch.allclose(got, expected, atol=1e-3)
    same_words = encoder(["quickly a man jumps"])[0]  # word order does not matter
    assert torch.allclose(got, same_words, atol=1e-4)
    # ... except that a side word before "hand"/"arm" is one token with it
    left_turn, right_turn = encoder(["someone turns left while waving the right hand", "someone turns right while waving the left hand"])
    assert not torch.allclose(left_turn, right_turn, atol=1e-2)


def test_moves_reward_scores_and_similarity(clean):
    from motion.tasks.moves.reward import MovesReward

    reward = MovesReward()
    motions = [clean[0][1], clean[6][1]]  # walk forward slowly / walk backward slowly, neither waving
    assert clean[0][0] == ("walk_forward", "slowly", "none") and clean[6][0] == ("walk_backward", "slowly", "none")
    scores = reward.score(motions, ["a person walks forward slowly", "a person walks forward slowly"])
    assert scores.tolist() == pytest.approx([1.0, 0.75])
    assert reward.similarity(motions, motions).tolist() == [1.0, 1.0]
    assert reward.similarity(motions[:1], motions[1:]).item() == pytest.approx(0.75)  # all but the direction


def test_graded_verifier_ranks_near_misses_by_distance_and_keeps_right_answers_exact(clean):
    from genpref.build import rewards
    from motion.tasks.moves.reward import build_reward
    from motion.tasks.moves.verifier import Measurements, graded_score

    assert rewards()["moves_graded"] == "motion.tasks.moves.reward"
    graded = build_reward(type("Spec", (), {"name": "moves_graded"})(), None, "cpu")
    motions = [features for _, features in clean[:12]]
    prompts = [moves.caption(*combo, np.random.default_rng(0)) for combo, _ in clean[:12]]
    assert graded.score(motions, prompts).tolist() == [1.0] * 12  # right answers keep full credit
    strict = build_reward(type("Spec", (), {"name": "moves_strict"})(), None, "cpu")
    wrong_speed = moves.caption("walk_backward", "quickly", "none", np.random.default_rng(0))  # clean[6]: backward, slowly
    assert clean[6][0] == ("walk_backward", "slowly", "none")
    assert strict.score([clean[6][1], clean[6][1]], [prompts[6], wrong_speed]).tolist() == [1.0, 0.0]
    # walks backward at 1.2 m/s, left wrist raised in 70% of the frames, right in 10%
    m = Measurements(raised_left=0.7, raised_right=0.1, yaw_rate=0.0, travel=1.2, forward=-1.1, airborne=0.0,
                     drop=0.05, vertical_speed=0.1)
    slow = moves.Move("walk", "backward", "slowly", "left")  # speed wrong: ln(1.2 / 0.86) past the threshold
    assert graded_score(m, slow) == pytest.approx((3 + 0.5 * (1 - np.log(1.2 / 0.86) / 1.0)) / 4)
    no_hand = moves.Move("walk", "backward", "quickly", "none")  # hand wrong: 0.7 raised vs the 0.5 cut
    assert graded_score(m, no_hand) == pytest.approx((3 + 0.5 * (1 - 0.2 / 0.5)) / 4)
    forward = moves.Move("walk", "forward", "quickly", "left")  # direction wrong by 1.1 m/s: past the 0.5 width
    assert graded_score(m, forward) == pytest.approx(3 / 4)
    faster = Measurements(**{**m.__dict__, "travel": 1.0})  # nearer the slow band: more credit, still < ½
    assert graded_score(m, slow) < graded_score(faster, slow) < (3 + 0.5) / 4  # a near miss earns under ½


def test_bench_prompt_lists_hold_every_combination_equally_and_the_heldout_list_only_heldout(dataset, tmp_path):
    from collections import Counter

    from motion.tasks.moves.demo import all_prompts, heldout_captions, heldout_prompts, train_captions

    read = lambda path: [line for line in path.read_text().splitlines() if line]
    everything = read(all_prompts(dataset, tmp_path / "all.txt"))
    heldout = read(heldout_prompts(dataset, tmp_path / "heldout.txt"))
    assert everything == train_captions(dataset) + heldout_captions(dataset) and heldout == heldout_captions(dataset)
    combo = lambda text: tuple(vars(moves.parse_prompt(text)).values())
    held = {tuple(vars(moves.Move.of(*c)).values()) for c in moves.HELD_OUT}
    assert {combo(t) for t in heldout} == held
    counts = Counter(combo(t) for t in everything)
    assert len(counts) == len(moves.COMBOS) and len(set(counts.values())) == 1


def test_feedback_pairs_rank_by_the_verifier(tmp_path, clean):
    from motion.data import motion_jsonl

    right, wrong = clean[0][1], clean[6][1]  # walk forward / walk backward, slowly, no waving
    prompt = "a person walks forward slowly"
    paths = moves.write_feedback(tmp_path, [wrong, right, right], [prompt, prompt, "a man jumps quickly"])
    pairs = motion_jsonl(paths["pairs"], "pairs")
    assert len(pairs) == 1  # the jump prompt has one sample: no pair
    assert np.allclose(pairs[0]["w"], right) and np.allclose(pairs[0]["l"], wrong) and pairs[0]["label"] == 1.0
    ratings = motion_jsonl(paths["ratings"], "ratings", key="data.ratings")
    assert [r["rating"] for r in ratings] == [0.0, 1.0, 0.0]


def test_r_precision_hits_match_a_loop():
    from motion.metrics import r_precision_hits

    rng = np.random.default_rng(0)
    text, motion = rng.normal(size=(70, 5)), rng.normal(size=(70, 5))
    motion[:40] = text[:40] + 0.3 * rng.normal(size=(40, 5))  # some rows match well
    hits = r_precision_hits(text, motion, top_k=3, batch_size=32)
    assert hits.shape == (64, 3)  # the incomplete last group is dropped
    for i in range(64):
        g = i // 32 * 32
        dist = [np.linalg.norm(text[i] - motion[j]) for j in range(g, g + 32)]
        rank = sorted(dist).index(dist[i - g])
        assert hits[i].tolist() == [rank < 1, rank < 2, rank < 3]


def test_t2m_reward_is_cosine_of_evaluator_embeddings(tmp_path, dataset, clean):
    from genpref.config import from_dict
    from genpref.errors import UserError
    from motion.evaluator import EvaluatorSizes, build_networks
    from motion.rewards import T2MReward, build_reward

    torch.manual_seed(0)
    sizes = EvaluatorSizes(dim_movement_enc_hidden=16, dim_movement_latent=16, dim_text_hidden=16, dim_coemb_hidden=8,
                           dim_motion_hidden=16)  # fmt: skip
    nets = build_networks(sizes)
    (tmp_path / "model").mkdir()
    (tmp_path / "meta").mkdir()
    torch.save({k: v.state_dict() for k, v in nets.items()}, tmp_path / "model" / "finest.tar")
    np.save(tmp_path / "meta" / "mean.npy", np.zeros(263, np.float32))
    np.save(tmp_path / "meta" / "std.npy", np.ones(263, np.float32))
    cfg = from_dict({"model": {"kind": "mdm"}, "objective": {"name": "sopo"}, "train": {"output_dir": str(tmp_path)},
                     "data": {"root": str(dataset)}, "reward": {"models": [{"name": "t2m", "path": str(tmp_path)}]}})  # fmt: skip
    reward = build_reward(cfg.reward.models[0], cfg, "cpu")
    assert isinstance(reward, T2MReward)
    motions = [clean[0][1], clean[20][1]]
    prompts = ["a person walks forward slowly", "a man jumps quickly"]
    text, motion = reward.embed_texts(prompts), reward.embed_motions(motions)
    expected = [(1 + float(t @ m / t.norm() / m.norm())) / 2 for t, m in zip(text, motion)]
    assert reward.score(motions, prompts).tolist() == pytest.approx(expected, abs=1e-5)
    assert reward.similarity(motions, motions).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    cfg.reward.models[0].path = None
    with pytest.raises(UserError, match="path"):
        build_reward(cfg.reward.models[0], cfg, "cpu")

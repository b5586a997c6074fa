"""The moves task: procedural motions, the verifier (clean motions score 1, every wrong attribute is
caught), joints -> features -> joints round trips, the dataset's held-out split, word vectors and the
bag-of-words text encoder, and the reward models."""

import json
import re

import numpy as np
import pytest
import torch

from motion import moves
from motion.skeleton import canonicalize, extract_features, recover_from_ric

FLIP_DIRECTION = {"forward": "backward", "backward": "forward", "left": "right", "right": "left"}


@pytest.fixture(scope="module")
def clean():
    """Two jittered motions of each of the 24 combinations, as features."""
    rng = np.random.default_rng(3)
    return [(m, s, moves.render(m, s, int(rng.integers(40, 53)), rng)) for m, s in moves.COMBOS for _ in range(2)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    settings = moves.BuildSettings(seed=1, train_per_combo=2, val_per_combo=1, test_heldout_per_combo=2,
                                   test_seen_per_combo=1, noise=0.5)  # fmt: skip
    return moves.build(tmp_path_factory.mktemp("moves"), settings)


def test_clean_motions_score_one_on_every_attribute(clean):
    for move, speed, features in clean:
        for want in (moves.Move.of(move, speed), moves.caption(move, speed, np.random.default_rng(0))):
            verdict = moves.verify(features, want)
            assert (verdict.action, verdict.direction, verdict.speed) == (True, True, True), (move, speed, verdict)
            assert verdict.score == 1.0 and verdict.detected == moves.MOVES[move][0]


def test_each_wrong_attribute_is_caught(clean):
    for move, speed, features in clean:
        action, direction = moves.MOVES[move]
        for other_speed in set(moves.SPEEDS) - {speed}:
            wrong_speed = moves.verify(features, moves.Move(action, direction, other_speed))
            assert (wrong_speed.action, wrong_speed.direction, wrong_speed.speed) == (True, True, False)
            assert wrong_speed.score == pytest.approx(2 / 3)
        if direction is not None:
            wrong_side = moves.verify(features, moves.Move(action, FLIP_DIRECTION[direction], speed))
            assert (wrong_side.action, wrong_side.direction, wrong_side.speed) == (True, False, True)
        for other in {a for a, _ in moves.MOVES.values()} - {action}:
            other_dir = {"walk": "forward", "turn": "left", "wave": "left"}.get(other)
            assert not moves.verify(features, moves.Move(other, other_dir, speed)).action


def test_a_standing_body_is_no_action_and_slow():
    rest = moves.pose(np.zeros(45), {})
    rest[..., 1] -= rest[..., 1].min()
    verdict = moves.verify(extract_features(rest), "a person jumps quickly")
    assert verdict.detected == "stand" and not verdict.action and not verdict.speed


def test_verifier_reads_joints_and_features_alike(clean):
    move, speed, features = clean[5]
    joints = recover_from_ric(features)
    assert moves.verify(joints, moves.Move.of(move, speed)).correct
    assert moves.measure(joints) == moves.measure(features)


@pytest.mark.parametrize("move", list(moves.MOVES))
def test_joints_features_joints_round_trip(move):
    joints = moves.animate(move, "quickly", 45, np.random.default_rng(11))
    recovered = recover_from_ric(extract_features(joints))
    assert recovered.shape == (44, 22, 3)
    assert np.abs(recovered - canonicalize(joints)[:-1]).max() < 1e-4


def test_turn_left_is_counterclockwise_seen_from_above():
    joints = moves.animate("turn_left", "slowly", 41, np.random.default_rng(0))
    facing = joints[:, 2] - joints[:, 1]  # right hip − left hip points to the body's right
    start, end = facing[0, [0, 2]], facing[-1, [0, 2]]
    cross_y = start[1] * end[0] - start[0] * end[1]  # (start × end)·ŷ for XZ vectors
    assert cross_y > 0  # the right-hand side rotated about +Y: a left turn


def test_captions_parse_back_to_their_attributes():
    rng = np.random.default_rng(0)
    for move, speed in moves.COMBOS:
        for _ in range(30):
            assert moves.parse_prompt(moves.caption(move, speed, rng)) == moves.Move.of(move, speed)
    assert moves.parse_prompt("someone turns counterclockwise fast") == moves.Move("turn", "left", "quickly")
    assert moves.parse_prompt("a person stands still") == moves.Move(None, None, None)


def test_noisy_captions_never_name_a_held_out_combination():
    rng = np.random.default_rng(0)
    wrong = 0
    for move, speed in moves.TRAIN_COMBOS:
        for _ in range(200):
            got = moves.parse_prompt(moves.noisy_caption(move, speed, rng, noise=0.35))
            assert (got.move, got.speed) not in moves.HELD_OUT
            wrong += (got.move, got.speed) != (move, speed)
    assert 0.30 < wrong / (200 * len(moves.TRAIN_COMBOS)) < 0.40


def test_dataset_splits_hold_out_combinations(dataset):
    meta = json.loads((dataset / "moves.json").read_text())
    labels = meta["labels"]
    held = {tuple(c) for c in meta["held_out"]}
    assert held == set(moves.HELD_OUT)
    split = lambda name, root=dataset: (root / f"{name}.txt").read_text().split()  # noqa: E731
    for root in (dataset, dataset / "noisy"):
        for name in split("train", root):
            assert (labels[name]["move"], labels[name]["speed"]) not in held
            for line in (root / "texts" / f"{name}.txt").read_text().splitlines():
                parsed = moves.parse_prompt(line.split("#")[0])
                assert (parsed.move, parsed.speed) not in held
    assert {(labels[n]["move"], labels[n]["speed"]) for n in split("test_heldout")} == held
    assert set(split("test")) == set(split("test_heldout")) | set(split("test_seen"))
    for name in split("val") + split("test"):
        line = (dataset / "texts" / f"{name}.txt").read_text().splitlines()[0]
        caption, tokens, start, end = line.split("#")
        assert moves.parse_prompt(caption) == moves.Move.of(labels[name]["move"], labels[name]["speed"])
        assert all(re.fullmatch(r"[a-z]+/[A-Z]+", t) for t in tokens.split()) and (start, end) == ("0.0", "0.0")
    features = np.load(dataset / "new_joint_vecs" / f"{split('train')[0]}.npy")
    assert features.shape[1] == 263 and 40 <= len(features) <= 52
    assert moves.check(dataset) == {"train": 1.0, "val": 1.0, "test": 1.0}


def test_rebuilding_with_other_settings_is_refused(dataset):
    from genpref.errors import UserError

    assert moves.build(dataset, moves.BuildSettings(seed=1, train_per_combo=2, val_per_combo=1, test_heldout_per_combo=2,
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


def test_moves_reward_scores_and_similarity(clean):
    from motion.rewards import MovesReward

    reward = MovesReward()
    motions = [clean[0][2], clean[4][2]]  # walk forward slowly, walk backward slowly
    scores = reward.score(motions, ["a person walks forward slowly", "a person walks forward slowly"])
    assert scores.tolist() == pytest.approx([1.0, 2 / 3])
    assert reward.similarity(motions, motions).tolist() == [1.0, 1.0]
    assert reward.similarity(motions[:1], motions[1:]).item() == pytest.approx(2 / 3)  # same action and speed

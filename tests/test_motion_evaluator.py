"""The T2M evaluator networks match the released layout, finest.tar files load safely, word vectors are read safely."""

import json
import pickle

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from genpref.errors import UserError
from motion import evaluator as ev
from motion import glove

# Parameter names and shapes of the released HumanML3D evaluator, written out from text-to-motion
# networks/modules.py with dim_pose 263, movement 512/512, word 300, POS 15, text hidden 512,
# co-embedding 512, motion hidden 1024 (GRU gates: 3 x hidden rows).
RELEASED_SHAPES = {
    "movement_encoder": {
        "main.0.weight": (512, 259, 4), "main.0.bias": (512,),
        "main.3.weight": (512, 512, 4), "main.3.bias": (512,),
        "out_net.weight": (512, 512), "out_net.bias": (512,),
    },
    "text_encoder": {
        "hidden": (2, 1, 512),
        "pos_emb.weight": (300, 15), "pos_emb.bias": (300,),
        "input_emb.weight": (512, 300), "input_emb.bias": (512,),
        "gru.weight_ih_l0": (1536, 512), "gru.weight_hh_l0": (1536, 512),
        "gru.bias_ih_l0": (1536,), "gru.bias_hh_l0": (1536,),
        "gru.weight_ih_l0_reverse": (1536, 512), "gru.weight_hh_l0_reverse": (1536, 512),
        "gru.bias_ih_l0_reverse": (1536,), "gru.bias_hh_l0_reverse": (1536,),
        "output_net.0.weight": (512, 1024), "output_net.0.bias": (512,),
        "output_net.1.weight": (512,), "output_net.1.bias": (512,),
        "output_net.3.weight": (512, 512), "output_net.3.bias": (512,),
    },
    "motion_encoder": {
        "hidden": (2, 1, 1024),
        "input_emb.weight": (1024, 512), "input_emb.bias": (1024,),
        "gru.weight_ih_l0": (3072, 1024), "gru.weight_hh_l0": (3072, 1024),
        "gru.bias_ih_l0": (3072,), "gru.bias_hh_l0": (3072,),
        "gru.weight_ih_l0_reverse": (3072, 1024), "gru.weight_hh_l0_reverse": (3072, 1024),
        "gru.bias_ih_l0_reverse": (3072,), "gru.bias_hh_l0_reverse": (3072,),
        "output_net.0.weight": (1024, 2048), "output_net.0.bias": (1024,),
        "output_net.1.weight": (1024,), "output_net.1.bias": (1024,),
        "output_net.3.weight": (512, 1024), "output_net.3.bias": (512,),
    },
}  # fmt: skip

SMALL = ev.EvaluatorSizes(dim_movement_enc_hidden=16, dim_movement_latent=12, dim_word=8, dim_text_hidden=10,
                          dim_coemb_hidden=6, dim_motion_hidden=14)  # fmt: skip


def test_state_dict_names_and_shapes_equal_the_released_ones():
    networks = ev.build_networks()
    for key, expected in RELEASED_SHAPES.items():
        got = {name: tuple(t.shape) for name, t in networks[key].state_dict().items()}
        assert got == expected, key


def write_finest(path, networks, sizes=SMALL):
    """A file in the released finest.tar layout, optimizer states included (weights_only must cope)."""
    opt = torch.optim.Adam(networks["text_encoder"].parameters())
    networks["text_encoder"](torch.zeros(1, 3, sizes.dim_word), torch.zeros(1, 3, 15), torch.tensor([3])).sum().backward()
    opt.step()
    torch.save(
        {
            **{k: networks[k].state_dict() for k in ev.NETWORK_KEYS},
            "opt_text_encoder": opt.state_dict(),
            "epoch": 7,
            "iter": 1234,
        },
        path,
    )


def make_run(tmp_path, seed=0, sizes=SMALL):
    torch.manual_seed(seed)
    networks = ev.build_networks(sizes)
    (tmp_path / "model").mkdir(parents=True)
    (tmp_path / "meta").mkdir()
    write_finest(tmp_path / "model" / "finest.tar", networks, sizes)
    rng = np.random.default_rng(seed)
    mean, std = rng.normal(size=263).astype(np.float32), rng.uniform(0.5, 2, 263).astype(np.float32)
    np.save(tmp_path / "meta" / "mean.npy", mean)
    np.save(tmp_path / "meta" / "std.npy", std)
    return networks, mean, std


def released_forward(networks, word, pos, cap_lens, motions, m_lens):
    """The reference's get_co_embeddings: batch sorted by caption length for the text GRU, then by motion
    length for the motion GRU, packs with enforce_sorted=True; returns both in the motion-sorted order."""
    text_net, motion_net, movement_net = (networks[k] for k in ev.NETWORK_KEYS)
    by_cap = np.argsort(-cap_lens, kind="stable")
    word, pos, cap_lens, motions, m_lens = word[by_cap], pos[by_cap], cap_lens[by_cap], motions[by_cap], m_lens[by_cap]
    with torch.no_grad():
        x = text_net.input_emb(word + text_net.pos_emb(pos))
        packed = pack_padded_sequence(x, cap_lens.tolist(), batch_first=True)
        _, last = text_net.gru(packed, text_net.hidden.repeat(1, len(word), 1))
        text_emb = text_net.output_net(torch.cat([last[0], last[1]], -1))
        align = np.argsort(m_lens)[::-1].copy()
        moves = movement_net(motions[align][..., :-4])
        x = motion_net.input_emb(moves)
        packed = pack_padded_sequence(x, (m_lens[align] // 4).tolist(), batch_first=True)
        _, last = motion_net.gru(packed, motion_net.hidden.repeat(1, len(word), 1))
        motion_emb = motion_net.output_net(torch.cat([last[0], last[1]], -1))
    return text_emb[align], motion_emb, by_cap[align]


def test_finest_tar_loads_and_embeds_like_the_released_forward_in_any_order(tmp_path):
    networks, mean, std = make_run(tmp_path)
    loaded = ev.Evaluator.load(tmp_path / "model" / "finest.tar")
    np.testing.assert_array_equal(loaded.mean, mean)
    np.testing.assert_array_equal(loaded.std, std)
    for net in networks.values():
        net.eval()

    g = torch.Generator().manual_seed(1)
    batch = 6
    word, pos = torch.randn(batch, 22, 8, generator=g), torch.randn(batch, 22, 15, generator=g)
    cap_lens = np.array([5, 22, 9, 3, 12, 7])
    m_lens = np.array([40, 196, 64, 120, 8, 100])
    motions = torch.randn(batch, 196, 263, generator=g)
    motions = motions * (torch.arange(196)[None, :, None] < torch.as_tensor(m_lens)[:, None, None])  # zero padding

    text_ref, motion_ref, order = released_forward(networks, word, pos, cap_lens, motions, m_lens)
    text_emb = loaded.embed_text(word, pos, cap_lens)
    motion_emb = loaded.embed_motion(motions, m_lens)
    torch.testing.assert_close(text_emb[order], text_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(motion_emb[order], motion_ref, rtol=1e-5, atol=1e-6)

    # garbage after each length does not matter: embed_motion pads with zeros like the ground-truth loader
    noisy = motions + torch.randn(motions.shape, generator=g) * (torch.arange(196)[None, :, None] >= 40)
    torch.testing.assert_close(loaded.embed_motion(noisy[:1], m_lens[:1]), motion_emb[:1])
    # a shuffled batch gives the same rows, shuffled
    perm = np.array([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(loaded.embed_motion(motions[perm], m_lens[perm]), motion_emb[perm])
    torch.testing.assert_close(loaded.embed_text(word[perm], pos[perm], cap_lens[perm]), text_emb[perm])


def test_normalise_uses_the_evaluator_statistics(tmp_path):
    _, mean, std = make_run(tmp_path)
    loaded = ev.Evaluator.load(tmp_path / "model" / "finest.tar")
    x = np.random.default_rng(3).normal(size=(2, 5, 263)).astype(np.float32)
    np.testing.assert_allclose(loaded.normalise(x), (x - mean) / std, rtol=1e-6)
    torch.testing.assert_close(loaded.normalise(torch.from_numpy(x)), torch.from_numpy((x - mean) / std))


class Payload:
    """An arbitrary object in a checkpoint: weights_only refuses to rebuild it."""


def test_bad_checkpoints_end_in_one_clear_message(tmp_path):
    with pytest.raises(UserError, match="not found: .*finest.tar"):
        ev.Evaluator.load(tmp_path / "nowhere" / "finest.tar")
    networks, _, _ = make_run(tmp_path)
    path = tmp_path / "model" / "finest.tar"

    torch.save({"text_encoder": networks["text_encoder"].state_dict()}, path)
    with pytest.raises(UserError, match=r"finest.tar lacks the key\(s\) \['motion_encoder', 'movement_encoder'\]"):
        ev.Evaluator.load(path)

    states = {k: networks[k].state_dict() for k in ev.NETWORK_KEYS}
    states["motion_encoder"]["output_net.1.weight"] = torch.ones(3)
    torch.save(states, path)
    with pytest.raises(UserError, match=r"'motion_encoder.output_net.1.weight' has shape \(3,\)"):
        ev.Evaluator.load(path)

    states = {k: networks[k].state_dict() for k in ev.NETWORK_KEYS}
    del states["movement_encoder"]["out_net.bias"]
    torch.save(states, path)
    with pytest.raises(UserError, match=r"'movement_encoder' does not match .*out_net.bias"):
        ev.Evaluator.load(path)

    torch.save({**{k: networks[k].state_dict() for k in ev.NETWORK_KEYS}, "extra": Payload()}, path)
    with pytest.raises(UserError, match="finest.tar: cannot read this T2M evaluator checkpoint without running code"):
        ev.Evaluator.load(path)

    write_finest(path, networks)
    (tmp_path / "meta" / "std.npy").unlink()
    with pytest.raises(UserError, match="mean.npy/std.npy not found"):
        ev.Evaluator.load(path)


def test_released_layout_statistics_are_found_beside_text_mot_match(tmp_path):
    t2m = tmp_path / "t2m"
    (t2m / "text_mot_match" / "model").mkdir(parents=True)
    (t2m / "Comp_v6_KLD01" / "meta").mkdir(parents=True)
    write_finest(t2m / "text_mot_match" / "model" / "finest.tar", ev.build_networks(SMALL))
    np.save(t2m / "Comp_v6_KLD01" / "meta" / "mean.npy", np.zeros(263, np.float32))
    np.save(t2m / "Comp_v6_KLD01" / "meta" / "std.npy", np.full(263, 2.0, np.float32))
    loaded = ev.Evaluator.load(t2m / "text_mot_match" / "model" / "finest.tar")
    assert loaded.std[0] == 2.0


# ---- word vectors ---------------------------------------------------------------------------------------

WORDS = ["sos", "eos", "unk", "a", "man", "walk", "left", "hand", "slowly"]


def write_glove(directory, words=WORDS, dim=4):
    directory.mkdir(exist_ok=True)
    vectors = np.arange(len(words) * dim, dtype=np.float32).reshape(len(words), dim)
    np.save(directory / "our_vab_data.npy", vectors)
    (directory / "our_vab_words.pkl").write_bytes(pickle.dumps(list(words)))
    (directory / "our_vab_idx.pkl").write_bytes(pickle.dumps({w: i for i, w in enumerate(words)}))
    return vectors


def test_caption_framing_vip_classes_and_unknown_words(tmp_path):
    vectors = write_glove(tmp_path / "glove")
    vec = glove.WordVectorizer.load(tmp_path / "glove")
    tokens = ["a/DET", "man/NOUN", "walk/VERB", "slowly/ADV", "zebra/NOUN", "left/ADJ", "hand/NOUN"]
    word, pos, cap_len = vec.encode(tokens)
    assert word.shape == (22, 4) and pos.shape == (22, 15) and cap_len == 9  # sos + 7 + eos
    rows = ["sos", "a", "man", "walk", "slowly", "unk", "left", "hand", "eos"] + ["unk"] * 13
    np.testing.assert_array_equal(word, vectors[[WORDS.index(w) for w in rows]])
    # published classes: OTHER=14, DET=2, NOUN=1; VIP: Act=12, Desc=13, Loc=9, Body=10; unknown -> OTHER
    assert pos.argmax(1).tolist() == [14, 2, 1, 12, 13, 14, 9, 10, 14] + [14] * 13
    assert (pos.sum(1) == 1).all()

    long_word, _, long_len = vec.encode(["man/NOUN"] * 25)
    assert long_len == 22  # cropped to 20 tokens + sos + eos
    np.testing.assert_array_equal(long_word[[0, 20, 21]], vectors[[0, 4, 1]])
    words, pos_b, lens = vec.encode_batch([tokens, ["man/NOUN"]])
    assert words.shape == (2, 22, 4) and lens.tolist() == [9, 3]


def test_word_pickles_are_read_without_running_code(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # would create the marker file when unpickled

    write_glove(tmp_path / "glove")
    (tmp_path / "glove" / "our_vab_words.pkl").write_bytes(pickle.dumps([Exploit(), "a"]))
    with pytest.raises(UserError, match="our_vab_words.pkl is not a plain pickle.*refused to load"):
        glove.WordVectorizer.load(tmp_path / "glove")
    assert not marker.exists()

    (tmp_path / "glove" / "our_vab_words.pkl").write_bytes(pickle.dumps(np.array([1, 2])))  # numpy: refused too
    with pytest.raises(UserError, match="not a plain pickle"):
        glove.load_plain_pickle(tmp_path / "glove" / "our_vab_words.pkl")
    with pytest.raises(UserError, match="cannot read word-vector file"):
        glove.load_plain_pickle(tmp_path / "missing.pkl")


def test_free_text_tagger_follows_its_documented_rules():
    assert glove.tag_free_text("A man walks forward slowly, then waves his left hand.") == [
        "a/DET", "man/NOUN", "walk/VERB", "forward/ADV", "slowly/ADV", "then/ADV", "wave/VERB", "his/DET",
        "left/ADV", "hand/NOUN",
    ]  # fmt: skip
    assert glove.tag_free_text("The person's arms are swinging; he ran and stopped") == [
        "the/DET", "person/NOUN", "arm/NOUN", "are/AUX", "swing/VERB", "he/PRON", "run/VERB", "and/CCONJ",
        "stop/VERB",
    ]  # fmt: skip
    assert glove.caption_tokens("ignored", ["x/NOUN"]) == ["x/NOUN"]


# ---- the protocol end to end ----------------------------------------------------------------------------

VOCAB = ["sos", "eos", "unk"] + [f"w{i}" for i in range(40)]


def write_humanml_dir(root, motions=84, seed=0):
    """A HumanML3D-format test split of motions that are constant over time (so every crop of a motion is
    the same rows), each with a distinct 3-word caption; every 7th motion also gets a caption for a span."""
    rng = np.random.default_rng(seed)
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    rows, names = {}, []
    for i in range(motions):
        name = f"{i:06d}"
        row = rng.normal(size=263).astype(np.float32)
        np.save(root / "new_joint_vecs" / f"{name}.npy", np.repeat(row[None], rng.integers(40, 90), axis=0))
        words = [VOCAB[3 + (i * 7 + k * 13) % 40] for k in range(3)]
        lines = [f"{' '.join(words)} {i}#{' '.join(w + '/NOUN' for w in words)}#0.0#0.0"]
        rows[f"{' '.join(words)} {i}"] = row
        if i % 7 == 0:
            lines.append(f"span {i}#{words[0]}/VERB#0.0#2.5")  # frames [0, 50)
            rows[f"span {i}"] = row
        (root / "texts" / f"{name}.txt").write_text("\n".join(lines) + "\n")
        names.append(name)
    (root / "test.txt").write_text("\n".join(names) + "\n")
    np.save(root / "Mean.npy", np.zeros(263, np.float32))
    np.save(root / "Std.npy", np.ones(263, np.float32))
    return rows


def replay_generator(rows, noise=0.0):
    """Returns each caption's real motion rows at the asked length (and junk after it)."""

    def generate(texts, lengths, seed):
        out = np.full((len(texts), int(max(lengths)) + 3, 263), 1e3, dtype=np.float32)
        jitter = np.random.default_rng(seed).normal(scale=noise, size=(len(texts), 263))
        for i, (text, n) in enumerate(zip(texts, lengths)):
            out[i, :n] = rows[text] + jitter[i]
        return out

    return generate


@pytest.fixture
def protocol(tmp_path):
    from motion import eval_data

    rows = write_humanml_dir(tmp_path / "data")
    make_run(tmp_path / "evaluator")
    evaluator = ev.Evaluator.load(tmp_path / "evaluator" / "model" / "finest.tar")
    vectors = np.random.default_rng(5).normal(size=(len(VOCAB), 8)).astype(np.float32)
    vectorizer = glove.WordVectorizer(vectors, {w: i for i, w in enumerate(VOCAB)})
    split = eval_data.load_split(tmp_path / "data", "test")
    return evaluator, vectorizer, split, rows


def _embed_real_pass(evaluator, vectorizer, sample, rows, mean, std):
    """Text and zero-padded motion embeddings of the first `rows` rows of a pass, written out by hand."""
    motions = np.zeros((rows, 90, 263), np.float32)
    for i, m in enumerate(sample.motions[:rows]):
        motions[i, : len(m)] = (m - mean) / std
    motion = evaluator.embed_motion(motions, sample.lengths[:rows]).numpy().astype(np.float64)
    text = evaluator.embed_text(*vectorizer.encode_batch(sample.tokens[:rows])).numpy().astype(np.float64)
    return text, motion


def test_replaying_real_motions_scores_like_real_data_and_fid_zero(protocol, tmp_path):
    from motion import eval_data, evaluate, metrics

    evaluator, vectorizer, split, rows = protocol
    assert len(split.entries) == 84 + 12  # 12 span captions (i % 7 == 0) make entries of their own
    kwargs = dict(replications=3, diversity_times=50, progress=False)
    # MLD's protocol pairs each generated row with the real row of the same pass: replays score as real data
    # (padding zero: the replays carry junk after each length, which padding "model" would show the evaluator)
    mld = evaluate.evaluate(evaluator, vectorizer, split, replay_generator(rows), convention="mld", padding="zero", **kwargs)
    assert mld["rows_used"] == 96 and mld["convention"] == "mld" and mld["padding"] == "zero"
    for name in ("R_precision_top1", "R_precision_top2", "R_precision_top3", "MM_Dist", "Diversity"):
        np.testing.assert_allclose(mld["per_replication"][name], mld["per_replication_real"][name], atol=1e-9)
    assert max(abs(v) for v in mld["per_replication"]["FID"]) < 1e-6
    junk = evaluate.evaluate(evaluator, vectorizer, split, replay_generator(rows), convention="mld", **kwargs)
    assert junk["padding"] == "model" and min(junk["per_replication"]["FID"]) > 1e-3  # the junk leaks in

    # text-to-motion's protocol: the generated rows come from a pass of their own, the real FID statistics
    # from a second real pass; replication 0 recomputed here from passes drawn with default_rng([seed, 0,
    # stream]), normalised with the evaluator's own mean/std read from its meta folder, zero-padded
    res = evaluate.evaluate(evaluator, vectorizer, split, replay_generator(rows), **kwargs)
    assert res["rows_used"] == 96 and res["convention"] == "t2m" and res["padding"] == "zero"
    assert 0.0 < res["metrics"]["R_precision_top1"]["mean"] < 1.0
    mean = np.load(tmp_path / "evaluator" / "meta" / "mean.npy")
    std = np.load(tmp_path / "evaluator" / "meta" / "std.npy")
    passes = {stream: eval_data.sample_pass(split, np.random.default_rng([0, 0, stream])) for stream in (10, 11)}
    passes["real"] = eval_data.sample_pass(split, np.random.default_rng([0, 0]))
    emb = {key: _embed_real_pass(evaluator, vectorizer, p, 96, mean, std) for key, p in passes.items()}
    np.testing.assert_allclose([res["per_replication"][f"R_precision_top{k}"][0] for k in (1, 2, 3)],
                               metrics.r_precision(*emb[10]), atol=1e-12)  # fmt: skip
    np.testing.assert_allclose([res["per_replication_real"][f"R_precision_top{k}"][0] for k in (1, 2, 3)],
                               metrics.r_precision(*emb["real"]), atol=1e-12)  # fmt: skip
    assert res["per_replication"]["FID"][0] == pytest.approx(metrics.fid(emb[11][1], emb[10][1]), rel=1e-6, abs=1e-9)

    # generation batches of 5 change nothing but float rounding: R-precision is still computed on groups of 32
    res5 = evaluate.evaluate(evaluator, vectorizer, split, replay_generator(rows), batch_size=5, **kwargs)
    for name, values in res["per_replication"].items():
        np.testing.assert_allclose(res5["per_replication"][name], values, rtol=1e-5, atol=1e-8)

    table = evaluate.format_table(res)
    assert "t2m convention, padding zero" in table and "R_precision_top1" in table and "FID" in table
    assert "FID real side: a second real pass" in table and "R-precision groups: 32 consecutive rows" in table
    assert json.loads(json.dumps(res))["metrics"]["FID"]["mean"] == res["metrics"]["FID"]["mean"]

    from motion.skeleton import extract_features

    walk = np.cumsum(np.random.default_rng(0).normal(scale=0.01, size=(21, 22, 3)), 0) + np.linspace(0, 1, 22)[:, None]
    paths = evaluate.save_samples([extract_features(walk)], ["a person walks"], tmp_path / "samples")
    assert [p.name for p in paths] == ["sample-0.gif", "sample-0.png"] and all(p.stat().st_size > 0 for p in paths)


def test_real_embeddings_are_cached_and_multimodality_on_request(protocol, tmp_path, monkeypatch):
    from motion import evaluate

    evaluator, vectorizer, split, rows = protocol
    calls = []
    embed = evaluator.embed_motion
    monkeypatch.setattr(evaluator, "embed_motion", lambda m, n, **kw: calls.append(len(m)) or embed(m, n, **kw))
    kwargs = dict(replications=2, diversity_times=50, progress=False, cache_dir=tmp_path / "cache")
    first = evaluate.evaluate(evaluator, vectorizer, split, replay_generator(rows, noise=0.1), **kwargs)
    first_rows = sum(calls)
    calls.clear()
    second = evaluate.evaluate(evaluator, vectorizer, split, replay_generator(rows, noise=0.1), **kwargs)
    # per replication: the real pass, the second real pass for FID (t2m protocol) and the generated rows;
    # the real ones are embedded once
    assert first_rows == 2 * 3 * 96 and sum(calls) == 2 * 96
    assert second["per_replication"] == first["per_replication"]
    assert len(list((tmp_path / "cache").glob("real-*-r*.npz"))) == 4
    assert first["per_replication"]["FID"][0] > 0  # noisy replays are no longer the real set

    mm = evaluate.evaluate(evaluator, vectorizer, split, replay_generator(rows, noise=0.1), replications=1,
                           diversity_times=50, progress=False, mm=True, mm_texts=6, mm_repeats=12, mm_times=10)  # fmt: skip
    assert mm["metrics"]["MultiModality"]["mean"] > 0
    still = evaluate.evaluate(evaluator, vectorizer, split, replay_generator(rows), replications=1,
                              diversity_times=50, progress=False, mm=True, mm_texts=6, mm_repeats=12, mm_times=10)  # fmt: skip
    assert still["metrics"]["MultiModality"]["mean"] == pytest.approx(0.0, abs=1e-6)

    mld = evaluate.evaluate(evaluator, vectorizer, split, replay_generator(rows), replications=1,
                            diversity_times=50, progress=False, convention="mld", padding="zero")  # fmt: skip
    assert mld["convention"] == "mld"
    assert mld["per_replication"]["R_precision_top1"] == mld["per_replication_real"]["R_precision_top1"]
    with pytest.raises(UserError, match="more than 300"):
        evaluate.evaluate(evaluator, vectorizer, split, replay_generator(rows), progress=False)


def test_train_evaluator_smoke_writes_a_loadable_finest_tar(tmp_path):
    from motion import train_evaluator

    data = tmp_path / "data"
    write_humanml_dir(data, motions=70)
    names = (data / "test.txt").read_text().split()
    (data / "train.txt").write_text("\n".join(names[:40]))
    (data / "val.txt").write_text("\n".join(names[40:]))
    std = np.linspace(0.5, 2.0, 263).astype(np.float32)
    np.save(data / "Std.npy", std)
    write_glove(tmp_path / "glove", VOCAB, dim=6)
    out = tmp_path / "run"
    argv = ["--root", str(data), "--glove", str(tmp_path / "glove"), "--out", str(out), "--epochs", "2",
            "--decomp-epochs", "1", "--max-steps", "3", "--batch-size", "8", "--decomp-batch-size", "8",
            "--movement-hidden", "16", "--movement-latent", "12", "--text-hidden", "10", "--motion-hidden", "14",
            "--coemb", "6", "--device", "cpu"]  # fmt: skip
    assert train_evaluator.main(argv) == 0

    expected_std = std.copy()
    expected_std[[0, 1, 2, 3, 259, 260, 261, 262]] /= 5.0  # root and foot-contact channels, feat_bias 5
    np.testing.assert_allclose(np.load(out / "meta" / "std.npy"), expected_std, rtol=1e-6)
    checkpoint = torch.load(out / "model" / "finest.tar", weights_only=True)
    assert {"text_encoder", "motion_encoder", "movement_encoder", "epoch", "iter"} <= set(checkpoint)
    decomp = torch.load(out / "model" / "decomp.tar", weights_only=True)
    for name, tensor in decomp["movement_enc"].items():  # frozen during matching
        torch.testing.assert_close(checkpoint["movement_encoder"][name], tensor)

    loaded = ev.Evaluator.load(out / "model" / "finest.tar")
    assert loaded.text_encoder.hidden_size == 10 and loaded.motion_encoder.hidden_size == 14
    emb = loaded.embed_motion(np.zeros((2, 48, 263), np.float32), np.array([48, 40]))
    assert emb.shape == (2, 6) and torch.isfinite(emb).all()
    log = [line for line in (out / "log.jsonl").read_text().splitlines() if '"match"' in line]
    assert len(log) >= 1

    assert train_evaluator.main([*argv[:3], str(tmp_path / "nowhere"), *argv[4:]]) == 2  # bad --glove: one message

"""The three T2M evaluation protocols (motion/eval_protocol.py) against independently written models of the
original loops: how many rows each replication generates and scores, which rows R-precision groups, which
rows enter FID / Diversity, which texts MultiModality repeats, and what `evaluate` asks the generator for."""

from __future__ import annotations

import numpy as np
import pytest

from genpref.errors import UserError
from motion import eval_protocol, metrics

# ---- the original loops, reduced to their counting (written from the published scripts, not from genpref)


def mdm_loops(items, limit, mm_samples, rng, batch=32):
    """eval_humanml.py + CompMDMGeneratedDataset: drop_last loaders; generation stops at the first batch
    that starts with len(generated) >= limit; MM batches drawn among limit // 32 + 1."""
    loader_batches = items // batch
    candidates = loader_batches if limit is None else limit // batch + 1
    mm_batches = sorted(rng.choice(candidates, mm_samples // batch + 1, replace=False)) if mm_samples else []
    generated, mm_rows = [], []
    for i in range(loader_batches):
        if limit is not None and len(generated) >= limit:
            break
        rows = list(range(i * batch, (i + 1) * batch))
        generated += rows
        if i in mm_batches:
            mm_rows += rows
    real = loader_batches * batch
    return {"gen": len(generated), "pass": len(generated), "real": real, "fid_real": real, "mm": mm_rows}


def t2m_loops(items, mm_samples, rng, batch=32):
    """final_evaluations.py + CompV6GeneratedDataset: one generation per item (batch 1), a drop_last loader
    of 32 over them; MM items a sorted choice over every item."""
    mm = sorted(rng.choice(items, mm_samples, replace=False)) if mm_samples else []
    scored = 0
    for _ in range(items // batch):  # DataLoader(batch_size=32, drop_last=True) over the generated items
        scored += batch
    real = items // batch * batch
    return {"gen": scored, "pass": items, "real": real, "fid_real": real, "mm": list(mm)}


def mld_loops(items, mm_samples, rng, batch=32):
    """test.py + TM2TMetrics: every item (no drop_last), FID and Diversity on count_seq rows, MM entries
    a choice over the name list."""
    count_seq = 0
    for start in range(0, items, batch):  # shuffle=False, last batch kept
        count_seq += min(batch, items - start)
    mm = list(rng.choice(items, mm_samples, replace=False)) if mm_samples else []
    return {"gen": count_seq, "pass": count_seq, "real": count_seq, "fid_real": count_seq, "mm": mm}


@pytest.mark.parametrize("items", [4384, 4646, 1000, 97])
@pytest.mark.parametrize("mm_texts", [0, 100, 20])
def test_plans_match_the_original_loops(items, mm_texts):
    for name in ("t2m", "mdm", "mld"):
        protocol = eval_protocol.get_protocol(name)
        if mm_texts >= items:  # each reference asserts mm_num_samples < len(dataset)
            with pytest.raises(UserError, match=f"fewer texts than the split's {items} items"):
                eval_protocol.plan_replication(protocol, items, mm_texts=mm_texts)
            continue
        plan = eval_protocol.plan_replication(protocol, items, np.random.default_rng(3), mm_texts=mm_texts)
        ref_rng = np.random.default_rng(3)
        if name == "t2m":
            ref = t2m_loops(items, mm_texts, ref_rng)
        elif name == "mdm":
            ref = mdm_loops(items, 1000, mm_texts, ref_rng)
        else:
            ref = mld_loops(items, mm_texts, ref_rng)
        got = {"gen": plan.gen_rows, "pass": plan.gen_pass_rows, "real": plan.real_rows, "fid_real": plan.fid_real_rows}
        assert got == {k: ref[k] for k in got}, name
        picked = plan.mm_entries if name == "mld" else plan.mm_rows
        assert list(picked if picked is not None else []) == ref["mm"], name


def test_published_sizes_on_humanml3d():
    """HumanML3D's test split (4,384 items): MDM scores 1,024 generated rows and repeats 4 batches (128
    texts) for MultiModality; T2M scores every item; MLD every item, 137 R-precision groups."""
    plans = {name: eval_protocol.plan_replication(eval_protocol.get_protocol(name), 4384, np.random.default_rng(0),
                                                  mm_texts=100) for name in ("t2m", "mdm", "mld")}  # fmt: skip
    assert (plans["mdm"].gen_rows, len(plans["mdm"].mm_rows), plans["mdm"].real_rows) == (1024, 128, 4384)
    assert (plans["t2m"].gen_rows, len(plans["t2m"].mm_rows)) == (4384, 100)
    assert (plans["mld"].gen_rows, len(plans["mld"].mm_entries)) == (4384, 100)
    no_limit = eval_protocol.plan_replication(eval_protocol.get_protocol("mdm"), 4384, samples_limit=0)
    assert no_limit.gen_rows == 4384


def test_groupings_per_convention():
    """T2M and MDM group consecutive rows of the (already shuffled) pass, remainder dropped; MLD applies one
    permutation to all rows first, the same one for the real and the generated rows."""
    for name in ("t2m", "mdm"):
        np.testing.assert_array_equal(metrics.grouped_rows(100, 32, name), np.arange(96).reshape(3, 32))
    perm = np.random.default_rng(5).permutation(100)
    groups = metrics.grouped_rows(100, 32, "mld", np.random.default_rng(5))
    np.testing.assert_array_equal(groups, perm[:96].reshape(3, 32))
    assert len(np.unique(groups)) == 96


def test_defaults_and_bad_names():
    assert {n: p.padding for n, p in eval_protocol.PROTOCOLS.items()} == {"t2m": "zero", "mdm": "model", "mld": "model"}
    assert eval_protocol.FAMILY_CONVENTION == {"mdm": "mdm", "mld": "mld"}
    with pytest.raises(UserError, match=r"eval.convention must be one of \('t2m', 'mdm', 'mld'\), got 'kit'"):
        eval_protocol.get_protocol("kit")
    with pytest.raises(UserError, match=r"eval.padding must be one of \('model', 'zero'\), got 'mean'"):
        eval_protocol.check_padding("mean")


@pytest.fixture
def small_protocol(tmp_path):
    from test_motion_evaluator import VOCAB, make_run, write_humanml_dir

    from motion import eval_data, glove
    from motion import evaluator as ev

    rows = write_humanml_dir(tmp_path / "data")
    make_run(tmp_path / "evaluator")
    evaluator = ev.Evaluator.load(tmp_path / "evaluator" / "model" / "finest.tar")
    vectors = np.random.default_rng(5).normal(size=(len(VOCAB), 8)).astype(np.float32)
    vectorizer = glove.WordVectorizer(vectors, {w: i for i, w in enumerate(VOCAB)})
    split = eval_data.load_split(tmp_path / "data", "test", max_items=90)  # 90 items: 2 groups + 26 rows
    return evaluator, vectorizer, split, rows


@pytest.mark.parametrize(
    ("convention", "limit", "main_rows", "mm_texts", "scored", "real_rows"),
    [
        ("t2m", None, 90, 6, 64, 64),  # every item generated, complete groups scored
        ("mdm", 40, 64, 32, 64, 64),  # batches until 40 rows: 2 batches; MM: 40 // 32 + 1 = 2 candidate batches, 1 drawn
        ("mld", None, 90, 6, 90, 90),  # every item, every row
    ],
)
def test_evaluate_asks_the_generator_for_the_protocols_rows(small_protocol, convention, limit, main_rows, mm_texts,
                                                            scored, real_rows):  # fmt: skip
    from test_motion_evaluator import replay_generator

    from motion import evaluate

    evaluator, vectorizer, split, rows = small_protocol
    asked = []
    replay = replay_generator(rows, noise=0.1)

    def generate(texts, lengths, seed):
        asked.append(len(texts))
        return replay(texts, lengths, seed)

    res = evaluate.evaluate(evaluator, vectorizer, split, generate, convention=convention, samples_limit=limit,
                            replications=1, diversity_times=30, mm=True, mm_texts=6, mm_repeats=11, mm_times=10,
                            progress=False)  # fmt: skip
    batches_main = -(-main_rows // 32)
    assert sum(asked[:batches_main]) == main_rows
    assert sum(asked[batches_main:]) == mm_texts * 11
    assert (res["rows_used"], res["real_rows_used"], res["multimodality"]["texts"]) == (scored, real_rows, mm_texts)
    assert res["padding"] == eval_protocol.PROTOCOLS[convention].padding
    table = evaluate.format_table(res)
    assert f"{convention} convention, padding {res['padding']}" in table and "MultiModality texts" in table


def test_config_rejects_unknown_convention_and_padding():
    from pathlib import Path

    from genpref.config import ConfigError, load_config

    cfg = Path(__file__).resolve().parents[1] / "configs/motion/mdm_sopo.yaml"
    assert load_config(cfg).eval["convention"] == "mdm"
    with pytest.raises(ConfigError, match=r"mdm_sopo.yaml: eval.convention: must be one of t2m \| mdm \| mld, got 'kit'"):
        load_config(cfg, ["eval.convention=kit"])
    with pytest.raises(ConfigError, match=r"eval.padding: must be one of model \| zero, got 'mean'"):
        load_config(cfg, ["eval.padding=mean"])

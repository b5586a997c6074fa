"""HumanML3D-format loading: bad files reported and skipped (or a clear error), the published length filter,
caption sub-spans, unit-length crops, normalisation, jsonl preference files and the tiny dataset writer."""

import json

import numpy as np
import pytest
import torch

from genpref.config import from_dict
from genpref.errors import BadSample, UserError
from motion.data import MotionDataset, crop_length, motion_jsonl, normalize, parse_caption_line
from motion.tasks.tiny_data import write_tiny_humanml

F = 263


def make_root(tmp_path, motions: dict[str, np.ndarray], captions: dict[str, list[str]], split=None):
    root = tmp_path / "hml"
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    rng = np.random.default_rng(0)
    np.save(root / "Mean.npy", rng.normal(size=F).astype(np.float32))
    np.save(root / "Std.npy", rng.uniform(0.5, 2.0, size=F).astype(np.float32))
    for name, motion in motions.items():
        np.save(root / "new_joint_vecs" / f"{name}.npy", motion)
        (root / "texts" / f"{name}.txt").write_text("\n".join(captions.get(name, [f"motion {name}#motion/NOUN#0.0#0.0"])) + "\n")
    (root / "train.txt").write_text("\n".join(split or motions) + "\n")
    return root


def good(frames, seed=0):
    return np.random.default_rng(seed).normal(size=(frames, F)).astype(np.float32)


def test_bad_files_are_reported_and_skipped(tmp_path):
    nan = good(60)
    nan[10, 5] = np.nan
    motions = {"000001": good(60), "000002": nan, "000003": good(60)[:, :262], "000004": good(30), "000005": good(80)}
    root = make_root(tmp_path, motions, {})
    ds = MotionDataset(root, "train", on_bad_sample="skip")
    rep = ds.report
    assert sorted(it["name"] for it in ds) == ["000001", "000005"]
    assert rep.bad == {
        "NaN/inf": [str(root / "new_joint_vecs" / "000002.npy")],
        "wrong shape": [str(root / "new_joint_vecs" / "000003.npy")],
    }
    assert rep.too_short == [str(root / "new_joint_vecs" / "000004.npy")]
    assert len(rep.skipped_files()) == 3 and rep.items == 2 and rep.motions == 2
    assert "1 NaN/inf" in rep.summary() and "1 too short" in rep.summary()

    with pytest.raises(BadSample, match=r"000002\.npy: contains NaN or inf"):
        MotionDataset(root, "train", on_bad_sample="error")


def test_missing_files_and_statistics_errors(tmp_path):
    root = make_root(tmp_path, {"000001": good(60)}, {}, split=["000001", "000009"])
    ds = MotionDataset(root, "train", on_bad_sample="skip")
    assert ds.report.bad == {"missing file": [str(root / "new_joint_vecs" / "000009.npy")]}
    with pytest.raises(UserError, match=r"000009\.npy: missing motion file"):
        MotionDataset(root, "train")
    np.save(root / "Std.npy", np.zeros(F, np.float32))
    with pytest.raises(UserError, match=r"Std\.npy: entry 0 is not positive"):
        MotionDataset(root, "train", on_bad_sample="skip")
    np.save(root / "Std.npy", np.ones(10, np.float32))
    with pytest.raises(UserError, match=r"Std\.npy: shape \(10,\)"):
        MotionDataset(root, "train", on_bad_sample="skip")
    np.save(root / "Std.npy", np.ones(F, np.float32))
    with pytest.raises(UserError, match=r"val\.txt not found"):
        MotionDataset(root, "val")


def test_published_length_filter_40_to_199_frames(tmp_path):
    motions = {"a39": good(39), "a40": good(40), "a199": good(199), "a200": good(200)}
    ds = MotionDataset(make_root(tmp_path, motions, {}), "train", crop=False)
    assert sorted(it["name"] for it in ds) == ["a199", "a40"]
    assert [p.split("/")[-1] for p in ds.report.too_long] == ["a200.npy"]


def test_caption_sub_spans(tmp_path):
    motion = good(120)
    captions = {"000001": [
        "a person walks#a/DET person/NOUN walk/VERB#0.0#0.0",
        "then jumps#then/ADV jump/VERB#1.0#3.5",  # frames [20, 70): a motion of its own
        "briefly waves#briefly/ADV wave/VERB#0.5#2.0",  # 30 frames: below the length filter
        "nan times mean the whole motion#whole/ADJ#nan#nan",
        "malformed line without tags",
    ]}
    ds = MotionDataset(make_root(tmp_path, {"000001": motion}, captions), "train", crop=False)
    by_prompt = {it["prompt"]: it for it in ds}
    assert set(by_prompt) == {"a person walks", "then jumps", "nan times mean the whole motion"}
    assert np.array_equal(by_prompt["then jumps"]["x"], motion[20:70])
    assert np.array_equal(by_prompt["a person walks"]["x"], motion)
    assert by_prompt["then jumps"]["tokens"] == ["then/ADV", "jump/VERB"]
    assert by_prompt["then jumps"]["name"] == "000001#1-3.5"
    assert ds.report.spans_dropped == 1
    assert parse_caption_line("x#y/NOUN#1.5#2") == ("x", ["y/NOUN"], 1.5, 2.0)


def test_crops_are_multiples_of_four_inside_the_motion(tmp_path):
    counts = {52: 0, 48: 0}
    rng = np.random.default_rng(0)
    for _ in range(600):
        counts[crop_length(53, rng)] += 1
    assert abs(counts[52] / 600 - 2 / 3) < 0.06  # 'single' twice as likely as 'double'
    motion = good(53)
    ds = MotionDataset(make_root(tmp_path, {"000001": motion}, {}), "train", seed=3)
    x = ds[0]["x"]
    assert len(x) in (48, 52) and ds[0]["length"] == len(x)
    starts = [s for s in range(53 - len(x) + 1) if np.array_equal(motion[s : s + len(x)], x)]
    assert len(starts) == 1
    again = MotionDataset(make_root(tmp_path / "again", {"000001": motion}, {}), "train", seed=3)
    assert np.array_equal(again[0]["x"], x)  # crops are drawn once from the seed: resumable


def test_normalisation_round_trip_through_the_adapter(tmp_path):
    from motion.adapter import build_adapter

    root = write_tiny_humanml(tmp_path / "tiny", num_motions=8)
    cfg = from_dict({"model": {"kind": "tiny-mdm"}, "data": {"root": str(root), "max_motion_length": 64},
                     "objective": {"name": "sft"}, "train": {"output_dir": str(tmp_path / "run")}})
    adapter = build_adapter(cfg, torch.device("cpu"), torch.float32)
    mean, std = np.load(root / "Mean.npy"), np.load(root / "Std.npy")
    motions = [it["x"] for it in adapter.load_items("experts")[:3]]
    batch = adapter.encode(motions, ["a", "b", "c"])
    first = batch.x0[0, :, 0, : len(motions[0])].T.numpy()
    assert np.allclose(first, (motions[0] - mean) / std, atol=1e-5)
    assert np.allclose(normalize(motions[0], mean, std), first, atol=1e-5)
    assert batch.mask[0, 0, 0].sum() == len(motions[0]) and not batch.mask[0, 0, 0, len(motions[0]) :].any()
    back = adapter.decode(batch.x0, batch)
    for m, b in zip(motions, back):
        assert b.shape == m.shape and np.allclose(b, m, atol=1e-4)


def test_motion_jsonl_pairs(tmp_path):
    np.save(tmp_path / "w.npy", good(50))
    np.save(tmp_path / "l.npy", good(45, 1))
    broken = good(50)
    broken[0, 0] = np.inf
    np.save(tmp_path / "bad.npy", broken)
    rows = [{"prompt": "walk", "w": "w.npy", "l": "l.npy", "label": 0.8}, {"prompt": "run", "w": "bad.npy", "l": "l.npy"}]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = motion_jsonl(tmp_path / "pairs.jsonl", "pairs", on_bad_sample="skip")
    assert len(items) == 1 and items[0]["label"] == 0.8 and items[0]["w"].shape == (50, F)
    with pytest.raises(BadSample, match=r"bad\.npy: contains NaN or inf"):
        motion_jsonl(tmp_path / "pairs.jsonl", "pairs")
    (tmp_path / "broken.jsonl").write_text('{"prompt": "x"}\n')
    with pytest.raises(UserError, match=r"broken\.jsonl line 1"):
        motion_jsonl(tmp_path / "broken.jsonl", "pairs")


def test_tiny_writer_makes_a_loadable_directory(tmp_path):
    root = write_tiny_humanml(tmp_path / "t", num_motions=16, seed=1)
    splits = {s: (root / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    assert sum(map(len, splits.values())) == 16 and all(splits.values())
    ds = MotionDataset(root, "train", max_length=64)
    assert ds.report.bad == {} and len(ds) >= 2 * len(splits["train"])
    x = np.concatenate([np.load(root / "new_joint_vecs" / f"{n}.npy") for n in splits["train"]])
    assert np.isfinite(x).all() and 0.5 < x[:, 3].mean() < 1.3  # root height in metres
    line = (root / "texts" / f"{splits['train'][0]}.txt").read_text().splitlines()[0]
    caption, tokens, start, end = parse_caption_line(line)
    assert all("/" in t for t in tokens) and caption.split() == [t.split("/")[0] for t in tokens]

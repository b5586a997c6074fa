"""The bad-input suite: malformed configs, image data, parquet rows, motion files, checkpoints and word
vectors. Each case ends in ONE line naming the file, row or key — through `genpref` itself where the
case is a user command — or in a counted skip. Nothing a file carries is executed.

The README's troubleshooting table lists these cases by their ids (test_readme_lists_every_case)."""

import io
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from genpref.cli import main
from genpref.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
MARKER = "GENPREF_PWNED"


class Exploit:
    """Unpickling this would create a marker file: proof that code ran."""

    def __reduce__(self):
        return (eval, (f"__import__('pathlib').Path('{MARKER}').write_text('x')",))


def jpeg(colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format="JPEG")
    return buf.getvalue()


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    lines = [ln for ln in capsys.readouterr().err.replace("\r", "\n").splitlines() if ln.startswith("genpref:")]
    return code, (lines[-1] if lines else "")


def parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return path


GOOD_ROW = {"caption": "a red square", "jpg_0": jpeg(), "jpg_1": jpeg((0, 0, 200)), "label_0": 1.0}
TINY_DPO = ROOT / "configs/image/tiny_dpo.yaml"
TINY_MDM = ROOT / "configs/motion/tiny_mdm_sopo.yaml"


def write_motion_dir(root: Path, bad: dict[str, np.ndarray] | None = None, std=None) -> Path:
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    rng = np.random.default_rng(0)
    names = []
    for i in range(4):
        names.append(f"{i:06d}")
        np.save(root / "new_joint_vecs" / f"{i:06d}.npy", rng.normal(size=(60, 263)).astype(np.float32))
        (root / "texts" / f"{i:06d}.txt").write_text("a person walks#a/DET person/NOUN walk/VERB#0.0#0.0\n")
    for name, motion in (bad or {}).items():
        names.append(name)
        np.save(root / "new_joint_vecs" / f"{name}.npy", motion)
        (root / "texts" / f"{name}.txt").write_text("a person jumps#a/DET person/NOUN jump/VERB#0.0#0.0\n")
    (root / "train.txt").write_text("\n".join(names) + "\n")
    np.save(root / "Mean.npy", np.zeros(263, np.float32))
    np.save(root / "Std.npy", np.ones(263, np.float32) if std is None else std)
    return root


# ---------------------------------------------------------------------------------------------- configs


def case_config_typo(tmp, capsys):
    return run_cli(capsys, "validate", TINY_DPO, "train.learning_rat=1e-4"), (2, r"unknown key 'train.learning_rat' \(did you mean 'lr'\?\)")


def case_config_wrong_type(tmp, capsys):
    return run_cli(capsys, "validate", TINY_DPO, "train.batch_size=two"), (2, r"'train.batch_size' must be an integer")


def case_config_missing_required(tmp, capsys):
    cfg = tmp / "c.yaml"
    cfg.write_text("model: {kind: tiny-sd}\nobjective: {name: dpo}\n")
    return run_cli(capsys, "validate", cfg), (2, r"missing required key 'train.output_dir'")


def case_config_invalid_yaml(tmp, capsys):
    cfg = tmp / "broken.yaml"
    cfg.write_text("model:\n  kind: [tiny-sd\n")
    return run_cli(capsys, "validate", cfg), (2, r"broken.yaml line \d+: invalid YAML")


def case_config_missing_data_path(tmp, capsys):
    return run_cli(capsys, "validate", TINY_DPO, f"data.pairs={tmp}/nope.parquet"), (2, r"'data.pairs': .*nope.parquet does not exist")


def case_config_unknown_choice(tmp, capsys):
    return run_cli(capsys, "validate", TINY_DPO, "data.ties=coin"), (2, r"'data.ties' is 'coin'.*valid: drop, half, first")


# ---------------------------------------------------------------------------------------------- image data


def _train_pairs(tmp, capsys, path, *extra):
    return run_cli(capsys, "train", TINY_DPO, f"train.output_dir={tmp}/run", f"data.pairs={path}", "train.max_steps=1",
                   "train.batch_size=2", *extra)


def case_parquet_missing_column(tmp, capsys):
    path = parquet(tmp / "pairs.parquet", [{k: v for k, v in GOOD_ROW.items() if k != "label_0"}])
    return _train_pairs(tmp, capsys, path), (1, r"pairs.parquet lacks column\(s\) label_0")


def case_parquet_empty_caption(tmp, capsys):
    path = parquet(tmp / "pairs.parquet", [GOOD_ROW, {**GOOD_ROW, "caption": " "}])
    return _train_pairs(tmp, capsys, path), (1, r"pairs.parquet row 1 column caption: empty caption")


def case_parquet_corrupt_jpeg(tmp, capsys):
    path = parquet(tmp / "pairs.parquet", [{**GOOD_ROW, "jpg_1": b"\xff\xd8 not really a jpeg"}, GOOD_ROW])
    return _train_pairs(tmp, capsys, path), (1, r"pairs.parquet row 0 column jpg_1: not a readable image")


def case_parquet_label_out_of_range(tmp, capsys):
    path = parquet(tmp / "pairs.parquet", [{**GOOD_ROW, "label_0": 1.5}])
    return _train_pairs(tmp, capsys, path), (1, r"pairs.parquet row 0 column label_0: 1.5")


def case_parquet_bad_row_skipped(tmp, capsys):
    from image.data import read_pairs

    path = parquet(tmp / "pairs.parquet", [GOOD_ROW, {**GOOD_ROW, "caption": ""}, {**GOOD_ROW, "label_0": 0.5}])
    items = read_pairs(str(path), on_bad_sample="skip")
    return (0, f"{len(items)} kept, {items.stats['bad_skipped']} bad skipped, {items.stats['ties_dropped']} ties dropped"), (
        0, r"1 kept, 1 bad skipped, 1 ties dropped")


def case_jsonl_missing_image(tmp, capsys):
    Image.new("RGB", (8, 8)).save(tmp / "a.png")
    lines = [{"prompt": "x", "chosen": "a.png", "rejected": "missing.png"}]
    (tmp / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return _train_pairs(tmp, capsys, tmp / "pairs.jsonl"), (1, r"pairs.jsonl line 1 key rejected: image not found")


def case_experts_without_metadata(tmp, capsys):
    (tmp / "experts").mkdir()
    Image.new("RGB", (8, 8)).save(tmp / "experts" / "0.png")
    out = run_cli(capsys, "train", ROOT / "configs/image/tiny_dro.yaml", f"train.output_dir={tmp}/run", f"data.experts={tmp}/experts")
    return out, (1, r"metadata.jsonl")


def case_missing_model_directory(tmp, capsys):
    out = run_cli(capsys, "train", TINY_DPO, f"train.output_dir={tmp}/run", "model.kind=sd15", f"model.path={tmp}/no-such-model")
    return out, (1, r"no-such-model")


# ---------------------------------------------------------------------------------------------- motion data


def _train_motion(tmp, capsys, root, *extra):
    return run_cli(capsys, "train", TINY_MDM, f"train.output_dir={tmp}/run", f"data.root={root}", "objective.name=sft",
                   "reward.models=[]", "train.max_steps=1", "data.max_motion_length=64", "train.sample_prompts=[]", *extra)


def case_motion_nan(tmp, capsys):
    bad = np.zeros((60, 263), np.float32)
    bad[5, 7] = np.nan
    root = write_motion_dir(tmp / "h", {"007975": bad})
    return _train_motion(tmp, capsys, root, "data.on_bad_sample=error"), (1, r"007975.npy: contains NaN or inf")


def case_motion_wrong_width(tmp, capsys):
    root = write_motion_dir(tmp / "h", {"000100": np.zeros((60, 262), np.float32)})
    return _train_motion(tmp, capsys, root, "data.on_bad_sample=error"), (1, r"000100.npy.*262")


def case_motion_bad_files_skipped(tmp, capsys):
    from motion.data import MotionDataset

    nan = np.full((60, 263), np.nan, np.float32)
    root = write_motion_dir(tmp / "h", {"a": nan, "b": np.zeros((60, 262), np.float32), "c": np.zeros((10, 263), np.float32)})
    ds = MotionDataset(root, "train", on_bad_sample="skip", max_length=64)
    return (0, ds.report.summary()), (0, r"1 NaN/inf; 1 wrong shape; 1 too short")


def case_motion_std_not_positive(tmp, capsys):
    std = np.ones(263, np.float32)
    std[0] = 0.0
    root = write_motion_dir(tmp / "h", std=std)
    return _train_motion(tmp, capsys, root), (1, r"Std.npy: entry 0 is not positive")


def case_motion_missing_split(tmp, capsys):
    root = write_motion_dir(tmp / "h")
    return _train_motion(tmp, capsys, root, "data.split=val"), (1, r"val.txt not found")


# ---------------------------------------------------------------------------------------------- checkpoints


def case_checkpoint_malicious_pickle(tmp, capsys):
    from genpref import checkpoint

    (tmp / "state.pt").write_bytes(pickle.dumps({"step": Exploit()}))
    try:
        checkpoint._load_pt(tmp / "state.pt")
    except UserError as err:
        return (1, str(err)), (1, r"state.pt: cannot read this checkpoint state without running code from it")
    return (0, "loaded"), (1, "")


def case_mdm_checkpoint_without_args(tmp, capsys):
    from motion.mdm import load_mdm

    torch.save({"model": {}}, tmp / "model000100.pt")
    try:
        load_mdm(tmp / "model000100.pt")
    except UserError as err:
        return (1, str(err)), (1, r"args.json not found")
    return (0, "loaded"), (1, "")


def case_mdm_checkpoint_malicious(tmp, capsys):
    from motion.mdm import load_mdm

    (tmp / "model.pt").write_bytes(pickle.dumps({"model": Exploit()}))
    (tmp / "args.json").write_text(json.dumps({"latent_dim": 512}))
    try:
        load_mdm(tmp / "model.pt")
    except UserError as err:
        return (1, str(err)), (1, r"model.pt")
    return (0, "loaded"), (1, "")


def case_evaluator_checkpoint_malicious(tmp, capsys):
    from motion.evaluator import Evaluator

    (tmp / "finest.tar").write_bytes(pickle.dumps({"text_encoder": Exploit()}))
    try:
        Evaluator.load(tmp / "finest.tar")
    except UserError as err:
        return (1, str(err)), (1, r"finest.tar")
    return (0, "loaded"), (1, "")


# ---------------------------------------------------------------------------------------------- word vectors


def _glove(tmp, words_payload) -> Path:
    d = tmp / "glove"
    d.mkdir()
    np.save(d / "our_vab_data.npy", np.zeros((3, 4), np.float32))
    (d / "our_vab_words.pkl").write_bytes(words_payload)
    (d / "our_vab_idx.pkl").write_bytes(pickle.dumps({"sos": 0, "eos": 1, "unk": 2}))
    return d


def case_glove_malicious_pickle(tmp, capsys):
    from motion.glove import WordVectorizer

    d = _glove(tmp, pickle.dumps([Exploit(), "eos", "unk"]))
    try:
        WordVectorizer.load(d)
    except UserError as err:
        return (1, str(err)), (1, r"our_vab_words.pkl")
    return (0, "loaded"), (1, "")


def case_glove_numpy_pickle(tmp, capsys):
    from motion.glove import WordVectorizer

    d = _glove(tmp, pickle.dumps(np.array(["sos", "eos", "unk"])))
    try:
        WordVectorizer.load(d)
    except UserError as err:
        return (1, str(err)), (1, r"our_vab_words.pkl")
    return (0, "loaded"), (1, "")


CASES = {name[5:]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_one_clear_line(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (code, line), (want_code, pattern) = CASES[case](tmp_path, capsys)
    assert code == want_code, line
    assert "\n" not in line.strip() and "Traceback" not in line
    assert re.search(pattern, line), line
    assert not (tmp_path / MARKER).exists()  # no file's code ran


def test_suite_is_large_enough_and_readme_lists_every_case():
    assert len(CASES) >= 15
    readme = (ROOT / "README.md").read_text()
    missing = [c for c in CASES if f"`{c}`" not in readme]
    assert not missing, f"README troubleshooting table lacks {missing}"

"""The bad-input suite: malformed configs, image data, parquet rows, motion files, checkpoints and word
vectors. Each case ends in ONE line naming the file, row or key — through `genpref` itself where the
case is a user command — or in a counted skip. Nothing a file carries is executed.

The README's troubleshooting table lists these cases by their ids (test_readme_lists_every_case)."""

import io
import json
import os
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


# ---------------------------------------------------------------------------------------------- issue 19: runs and files

TOY = ROOT / "configs/toy/toy_dpo.yaml"


def _toy(tmp, capsys, *extra):
    return run_cli(capsys, "train", TOY, f"train.output_dir={tmp}/run", *extra)


def _raises(fn, *args, **kwargs) -> tuple[int, str]:
    try:
        fn(*args, **kwargs)
    except UserError as err:
        return 1, str(err)
    return 0, "no error"


def case_config_lr_nan(tmp, capsys):
    return run_cli(capsys, "validate", TINY_DPO, "train.lr=nan"), (2, r"'train.lr' must be a finite number > 0, got nan")


def case_config_resolution_zero(tmp, capsys):
    return run_cli(capsys, "validate", TINY_DPO, "data.resolution=0"), (2, r"'data.resolution' must be an integer >= 8 \(pixels\), got 0")


def case_config_out_of_range(tmp, capsys):
    return run_cli(capsys, "validate", TINY_DPO, "data.empty_prompt_prob=7"), (2, r"'data.empty_prompt_prob' must be a probability in \[0, 1\], got 7")


def case_config_unparseable_override(tmp, capsys):
    out = run_cli(capsys, "validate", TINY_DPO, "train.sample_prompts=[unclosed")
    return out, (2, r"override 'train.sample_prompts': '\[unclosed' is not valid YAML")


def case_config_alias_bomb(tmp, capsys):
    rows = ["eval:", "  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    rows += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = tmp / "bomb.yaml"
    path.write_text(TINY_DPO.read_text() + "\n".join(rows) + "\n")
    return run_cli(capsys, "train", path), (2, r"bomb.yaml: YAML aliases \(&anchor / \*alias\) expand to more than 20000 values")


def case_output_dir_is_a_file(tmp, capsys):
    (tmp / "taken").write_text("not a directory")
    return run_cli(capsys, "validate", TINY_DPO, f"train.output_dir={tmp}/taken"), (2, r"'train.output_dir': \S+taken is a file, not a directory")


def case_diverged_run(tmp, capsys):
    out = _toy(tmp, capsys, "train.lr=1e4", "train.max_steps=20", "train.checkpoint_every=1")
    return out, (1, r"step 7: training diverged \(.*\); last good checkpoint: \S+step-1; lower train.lr \(was 10000\)")


def case_run_directory_in_use(tmp, capsys):
    from genpref import runlock

    with runlock.hold(tmp / "run"):
        out = _toy(tmp, capsys, "train.max_steps=2")
    return out, (2, rf"run is in use by process {os.getpid()} \(another genpref train on the same train.output_dir\)")


def case_finished_run_not_overwritten(tmp, capsys):
    assert _toy(tmp, capsys, "train.max_steps=2", "train.checkpoint_every=0")[0] == 0
    return _toy(tmp, capsys, "train.max_steps=2", "train.checkpoint_every=0"), (
        1, r"run already holds a finished run \(final/\): pass train.overwrite=true to replace it")


def case_disk_full_during_checkpoint(tmp, capsys):
    import errno

    from genpref import checkpoint

    real, calls = checkpoint.save_file, []

    def fill_up(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the second checkpoint: the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(tensors, path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(checkpoint, "save_file", fill_up)
        out = _toy(tmp, capsys, "train.max_steps=4", "train.checkpoint_every=2")
    root = tmp / "run/checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-2"] and checkpoint.verify(root / "step-2") is None
    return out, (1, r"step 4: cannot write checkpoint \S+step-4 \(No space left on device\); nothing was half-written")


def case_disk_full_in_latent_cache(tmp, capsys):
    import errno

    from image import cache

    def full(tensors, path, *args, **kwargs):
        Path(path).write_bytes(b"half")  # a partial write, then the error
        raise OSError(errno.ENOSPC, "No space left on device", path)

    store = cache.TensorStore(tmp / "cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("safetensors.torch.save_file", full)
        out = _raises(store.put, "latents", "k", {"x": torch.zeros(2)})
    assert not [p for p in (tmp / "cache").rglob("*") if p.is_file()]  # the half-written file is gone
    return out, (1, r"cannot write the latent cache \S+ \(No space left on device\)")


def case_experts_metadata_latin1(tmp, capsys):
    from image.data import read_experts

    (tmp / "experts").mkdir()
    Image.new("RGB", (8, 8)).save(tmp / "experts" / "0.png")
    (tmp / "experts" / "metadata.jsonl").write_bytes('{"file_name": "0.png", "text": "un café"}\n'.encode("latin-1"))
    return _raises(read_experts, str(tmp / "experts")), (
        1, r"data.experts: \S+metadata.jsonl: not UTF-8 \(byte 0xe9 at offset 38; looks like latin-1")


def case_prompts_utf16(tmp, capsys):
    from image.data import read_prompts

    (tmp / "prompts.txt").write_text("a red square\na blue circle\n", encoding="utf-16")
    return _raises(read_prompts, str(tmp / "prompts.txt")), (1, r"data.prompts: \S+prompts.txt: not UTF-8 .*looks like UTF-16")


def case_motion_caption_latin1(tmp, capsys):
    from motion.data import MotionDataset

    root = write_motion_dir(tmp / "h")
    (root / "texts" / "000002.txt").write_bytes("a person does a pirouette in a café#x#0.0#0.0\n".encode("latin-1"))
    skipped = MotionDataset(root, "train", on_bad_sample="skip", max_length=64).report.summary()
    assert "1 not UTF-8" in skipped, skipped
    return _raises(MotionDataset, root, "train", max_length=64), (1, r"000002.txt: not UTF-8 \(byte 0xe9")


def case_parquet_truncated(tmp, capsys):
    from image.data import read_pairs

    path = parquet(tmp / "pairs.parquet", [GOOD_ROW, GOOD_ROW])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return _raises(read_pairs, str(path)), (1, r"data.pairs: \S+pairs.parquet: not a readable parquet file, truncated or damaged")


def case_motion_pairs_truncated_npy(tmp, capsys):
    from motion.data import motion_jsonl

    good = np.random.default_rng(0).normal(size=(60, 263)).astype(np.float32)
    np.save(tmp / "w.npy", good)
    np.save(tmp / "l.npy", good)
    np.save(tmp / "cut.npy", good)
    (tmp / "cut.npy").write_bytes((tmp / "cut.npy").read_bytes()[:3000])
    rows = [{"prompt": "walk", "w": "w.npy", "l": "l.npy"}, {"prompt": "run", "w": "w.npy", "l": "cut.npy"}]
    (tmp / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(motion_jsonl(tmp / "pairs.jsonl", "pairs", on_bad_sample="skip")) == 1  # skipped, not a traceback
    return _raises(motion_jsonl, tmp / "pairs.jsonl", "pairs"), (1, r"cut.npy: unreadable, truncated or not an .npy")


def case_checkpoint_malformed_manifest(tmp, capsys):
    from genpref import checkpoint

    assert _toy(tmp, capsys, "train.max_steps=4", "train.checkpoint_every=2", "train.keep_checkpoints=2")[0] == 0
    (tmp / "run/checkpoints/step-4/manifest.json").write_text('{"files": [1, 2]}')
    reports: list[str] = []
    found = checkpoint.complete_checkpoints(tmp / "run", report=reports.append)
    assert [step for step, _ in found] == [2]
    code, line = _toy(tmp, capsys, "train.max_steps=6", "train.checkpoint_every=2", "train.resume=latest")
    assert code == 0, line
    return (1, reports[0]), (1, r"ignoring checkpoint \S+step-4: malformed manifest")


def case_resume_with_another_lora_rank(tmp, capsys):
    assert _toy(tmp, capsys, "train.max_steps=2", "train.checkpoint_every=2")[0] == 0
    out = _toy(tmp, capsys, "train.max_steps=4", "train.resume=latest", "model.lora.rank=8")
    return out, (1, r"step-2: the checkpoint has LoRA rank 4, this run model.lora.rank=8; resume with model.lora.rank=4")


def case_text_encoder_pickled_bin(tmp, capsys):
    from image.models import build_tiny, load_components, save_pipeline

    pipe = save_pipeline(build_tiny("sd", "default"), tmp / "pipe")
    for f in (pipe / "text_encoder").glob("*.safetensors"):
        f.unlink()
    (pipe / "text_encoder" / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": Exploit()}))
    return _raises(load_components, "sd15", str(pipe)), (1, r"model.path: \S+pipe holds pickled .bin weights that are not plain tensors; refused")


def case_lora_weights_not_safetensors(tmp, capsys):
    from types import SimpleNamespace

    from image.adapter import ImageAdapter

    (tmp / "final").mkdir()
    (tmp / "final" / "pytorch_lora_weights.safetensors").write_bytes(pickle.dumps({"unet.x": Exploit()}))
    fake = SimpleNamespace(is_lora=True)  # the file is refused before the model is touched
    return _raises(ImageAdapter.load_lora_weights, fake, tmp / "final"), (
        1, r"pytorch_lora_weights.safetensors: not a safetensors file .*never unpickled")


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

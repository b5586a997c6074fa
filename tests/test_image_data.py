"""Image data readers: Pick-a-Pic parquet / HF dataset directory / jsonl pairs, imagefolder experts, prompt
files; ties, bad rows (error naming file/row/column, or counted skip), preprocessing and shared flips."""

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from genpref.errors import BadSample, UserError
from image.data import Augment, crop_box, decode_image, preprocess, read_experts, read_pairs, read_prompts
from image.tasks.tiny_data import jpeg_bytes, png_bytes, render


def _jpeg(colour: str, place: str = "top left") -> bytes:
    return jpeg_bytes(render(colour, "square", place))


def _write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), str(path), row_group_size=2)
    return path


A, B, C, D = _jpeg("red"), _jpeg("blue"), _jpeg("green"), _jpeg("yellow")
ROWS = [
    {"caption": "one", "jpg_0": A, "jpg_1": B, "label_0": 1.0},  # image 0 wins
    {"caption": "two", "jpg_0": A, "jpg_1": B, "label_0": 0.0},  # image 1 wins
    {"caption": "tie", "jpg_0": C, "jpg_1": D, "label_0": 0.5},
    {"caption": "soft", "jpg_0": C, "jpg_1": D, "label_0": 0.2},  # image 1 wins with P = 0.8
]


def test_parquet_pairs_pick_the_winner_and_handle_ties(tmp_path):
    path = _write_parquet(tmp_path / "p.parquet", ROWS)
    items = read_pairs(str(path))
    assert [it["prompt"] for it in items] == ["one", "two", "soft"]
    assert items.stats["ties_dropped"] == 1 and items.stats["rows"] == 4
    assert (items[0]["w"].data, items[0]["l"].data, items[0]["label"]) == (A, B, 1.0)
    assert (items[1]["w"].data, items[1]["l"].data, items[1]["label"]) == (B, A, 1.0)
    assert (items[2]["w"].data, items[2]["l"].data) == (D, C)
    assert items[2]["label"] == pytest.approx(0.8)
    assert "row 3 column jpg_1" in items[2]["w"].name

    half = read_pairs(str(path), ties="half")
    tie = [it for it in half if it["prompt"] == "tie"][0]
    assert (tie["w"].data, tie["label"], half.stats["ties_dropped"]) == (C, 0.5, 0)
    first = read_pairs(str(path), ties="first")
    tie = [it for it in first if it["prompt"] == "tie"][0]
    assert (tie["w"].data, tie["l"].data, tie["label"]) == (C, D, 1.0)


def test_parquet_without_expected_columns_names_file_and_column(tmp_path):
    path = _write_parquet(tmp_path / "bad.parquet", [{"caption": "x", "jpg_0": A, "jpg_1": B}])
    with pytest.raises(UserError, match=r"bad\.parquet lacks column\(s\) label_0"):
        read_pairs(str(path))


def test_empty_caption_is_an_error_or_a_counted_skip(tmp_path):
    rows = [dict(ROWS[0]), {**ROWS[1], "caption": "  "}, dict(ROWS[3])]
    path = _write_parquet(tmp_path / "p.parquet", rows)
    with pytest.raises(BadSample, match=r"p\.parquet row 1 column caption: empty caption"):
        read_pairs(str(path))
    items = read_pairs(str(path), on_bad_sample="skip")
    assert [it["prompt"] for it in items] == ["one", "soft"] and items.stats["bad_skipped"] == 1


def test_corrupt_image_is_an_error_or_replaced_by_the_next_valid_item(tmp_path):
    rows = [dict(ROWS[0]), {**ROWS[1], "jpg_1": b"not a jpeg"}, dict(ROWS[3])]
    path = _write_parquet(tmp_path / "p.parquet", rows)
    items = read_pairs(str(path))
    assert items[0]["prompt"] == "one"
    with pytest.raises(BadSample, match=r"p\.parquet row 1 column jpg_1: not a readable image"):
        items[1]
    items = read_pairs(str(path), on_bad_sample="skip")
    assert items[1]["prompt"] == "soft" and items.stats["bad_skipped"] == 1
    assert items[1]["prompt"] == "soft" and items.stats["bad_skipped"] == 1  # counted once


def test_truncated_jpeg_is_caught_before_training(tmp_path):
    rows = [{**ROWS[0], "jpg_0": A[: len(A) // 2]}]
    items = read_pairs(str(_write_parquet(tmp_path / "p.parquet", rows)))
    with pytest.raises(BadSample, match="row 0 column jpg_0"):
        items[0]


def test_hf_dataset_directory_reads_like_the_parquet(tmp_path):
    """save_to_disk layout (arrow stream + state.json), read with pyarrow alone; an `Image` feature column
    ({bytes, path}) is accepted as well as raw bytes."""
    table = pa.Table.from_pylist(
        [{**r, "jpg_1": {"bytes": r["jpg_1"], "path": None}} for r in ROWS]
    )
    ds = tmp_path / "ds"
    ds.mkdir()
    with pa.OSFile(str(ds / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (ds / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    from_arrow = read_pairs(str(ds))
    from_parquet = read_pairs(str(_write_parquet(tmp_path / "p.parquet", ROWS)))
    assert len(from_arrow) == len(from_parquet) == 3
    for a, b in zip(from_arrow, from_parquet):
        assert (a["prompt"], a["w"].data, a["l"].data, a["label"]) == (b["prompt"], b["w"].data, b["l"].data, b["label"])


def test_parquet_glob_names_the_right_file_and_row(tmp_path):
    _write_parquet(tmp_path / "train-0.parquet", ROWS[:2])
    _write_parquet(tmp_path / "train-1.parquet", [dict(ROWS[0]), {**ROWS[1], "label_0": 1.5}])
    with pytest.raises(BadSample, match=r"train-1\.parquet row 1 column label_0: 1\.5"):
        read_pairs(str(tmp_path / "train-*.parquet"))
    assert len(read_pairs(str(tmp_path / "train-*.parquet"), on_bad_sample="skip")) == 3


def test_jsonl_pairs_with_relative_paths_missing_files_and_labels(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(A)
    (tmp_path / "img" / "b.jpg").write_bytes(B)
    lines = [
        {"prompt": "p1", "chosen": "img/a.jpg", "rejected": "img/b.jpg"},
        {"prompt": "p2", "chosen": "img/a.jpg", "rejected": "img/b.jpg", "label": 0.25},  # rejected preferred
        {"prompt": "p3", "chosen": "img/missing.jpg", "rejected": "img/b.jpg"},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    with pytest.raises(BadSample, match=r"pairs\.jsonl line 3 key chosen: image not found"):
        read_pairs(str(path))
    items = read_pairs(str(path), on_bad_sample="skip")
    assert len(items) == 2 and items.stats["bad_skipped"] == 1
    assert (items[0]["w"].data, items[0]["label"]) == (A, 1.0)
    assert (items[1]["w"].data, items[1]["l"].data, items[1]["label"]) == (B, A, 0.75)
    path.write_text(json.dumps({"prompt": "p", "chosen": "img/a.jpg"}) + "\n")
    with pytest.raises(UserError, match="line 1: needs keys prompt, chosen, rejected"):
        read_pairs(str(path))


def test_imagefolder_experts(tmp_path):
    with pytest.raises(UserError, match="metadata.jsonl"):
        read_experts(str(tmp_path))
    (tmp_path / "0.png").write_bytes(png_bytes(render("red", "circle", "top left")))
    (tmp_path / "1.png").write_bytes(b"garbage")
    meta = [{"file_name": "0.png", "text": "a red circle"}, {"file_name": "1.png", "text": "x"},
            {"file_name": "2.png", "text": "gone"}, {"file_name": "0.png", "text": ""}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(m) for m in meta))
    with pytest.raises(BadSample, match="line 3 key file_name: image not found"):
        read_experts(str(tmp_path))
    items = read_experts(str(tmp_path), on_bad_sample="skip")
    assert items.stats["bad_skipped"] == 2 and len(items) == 2  # missing file and empty caption
    assert items[0]["prompt"] == "a red circle"
    assert items[1]["prompt"] == "a red circle" and items.stats["bad_skipped"] == 3  # garbage image replaced


def test_prompts_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a cat\n\n  a dog  \n")
    assert read_prompts(str(path)) == [{"prompt": "a cat"}, {"prompt": "a dog"}]
    path.write_text("\n\n")
    with pytest.raises(UserError, match="has no prompts"):
        read_prompts(str(path))


def test_preprocess_resizes_the_short_side_and_center_crops():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))  # h 48, w 64
    pixels, micro = preprocess(image, 24)
    # by hand: scale 24/48 -> 32 x 24, center crop x from (32 - 24)/2 = 4
    expected = np.asarray(image.resize((32, 24), Image.BILINEAR), dtype=np.float32)[:, 4:28] / 127.5 - 1
    assert np.allclose(pixels.permute(1, 2, 0).numpy(), expected)
    assert micro == (48, 64, 0, 4)
    flipped, micro_f = preprocess(image, 24, flip=True, crop=(0.0, 0.0))
    left_crop = np.asarray(image.resize((32, 24), Image.BILINEAR), dtype=np.float32)[:, 0:24] / 127.5 - 1
    assert np.allclose(flipped.permute(1, 2, 0).numpy(), left_crop[:, ::-1])
    assert micro_f == (48, 64, 0, 8)  # the same pixels cut from the mirrored image start at 32 - 24 - 0
    assert crop_box((64, 48), 24, (1.0, 1.0)) == (32, 24, 0, 8)


def test_flip_crop_and_prompt_dropout_are_shared_by_both_images_of_a_pair(tmp_path):
    path = _write_parquet(tmp_path / "p.parquet", ROWS)
    items = read_pairs(str(path), augment=Augment(random_flip=True, random_crop=True, seed=3))
    flips = []
    for _ in range(20):
        it = items[0]
        assert it["w"].flip == it["l"].flip and it["w"].crop == it["l"].crop
        flips.append(it["w"].flip)
    assert 0 < sum(flips) < 20
    resumed = read_pairs(str(path), augment=Augment(random_flip=True, random_crop=True, seed=3))
    resumed.load_state_dict(items.state_dict())
    for _ in range(5):  # a resumed run continues with the same draws
        a, b = items[0], resumed[0]
        assert (a["w"].flip, a["w"].crop) == (b["w"].flip, b["w"].crop)
    assert resumed.at(0, 7)["w"].crop == items.at(0, 7)["w"].crop
    dropped = read_pairs(str(path), augment=Augment(empty_prompt_prob=1.0))
    assert dropped[0]["prompt"] == ""


def test_decoded_images_are_rgb(tmp_path):
    grey = io.BytesIO()
    Image.new("L", (8, 8), 128).save(grey, format="PNG")
    rows = [{**ROWS[0], "jpg_0": grey.getvalue()}]
    item = read_pairs(str(_write_parquet(tmp_path / "p.parquet", rows)))[0]
    image = decode_image(item["w"].data, item["w"].name)
    pixels, _ = preprocess(image, 8)
    assert image.mode == "RGB" and pixels.shape == (3, 8, 8)
    assert float(pixels.mean()) == pytest.approx(128 / 127.5 - 1, abs=1e-6)

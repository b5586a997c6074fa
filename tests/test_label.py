"""`genpref label`: a tiny folder of shapes renders whose verifier scores are known by construction gives the pairs an
independent ranking gives (files and labels); min_gap and the ties rule; ratings rules; ratings carried by k-means
clusters; the written pairs train a DPO step; a tiny HumanML3D-format directory; errors that name the file."""

import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genpref import label as lab
from genpref.cli import main
from image.data import read_pairs, read_ratings
from image.tasks import shapes

ROOT = Path(__file__).resolve().parents[1]
SHAPES_CFG = ROOT / "configs/image/shapes_oaif.yaml"  # model.kind shapes-unet (images), reward.models [shapes]
SCALE = 0.1  # online.label_scale's default

# prompt -> renders (combo, jitter) and how many of the prompt's three attributes each gets right
P1, P2 = "a red square at the top left", "a blue circle at the bottom right"
RENDERS = {
    P1: [(("red", "circle", "bottom right"), 1), (("red", "square", "top left"), 3), (("blue", "circle", "bottom right"), 0),
         (("red", "square", "bottom right"), 2)],
    P2: [(("blue", "circle", "bottom right"), 3), (("red", "circle", "top left"), 1), (("blue", "circle", "top right"), 2),
         (("blue", "circle", "bottom left"), 2)],
}


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, [ln for ln in (out.out + out.err).replace("\r", "\n").splitlines() if ln.startswith(("genpref:", "wrote"))]


def write_folder(folder: Path) -> dict[str, tuple[str, int]]:
    """The shapes renders as an imagefolder; file name -> (prompt, attributes right)."""
    folder.mkdir(parents=True)
    known, lines = {}, []
    for p, renders in RENDERS.items():
        for j, (combo, right) in enumerate(renders):
            name = f"{len(known):02d}.png"
            Image.fromarray(shapes.render(combo, (j % 2, 0))).save(folder / name)
            known[name] = (p, right)
            lines.append(json.dumps({"file_name": name, "text": p}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return known


def expected_pairs(known, min_gap=0.0, ties="drop"):
    """Every two images of a prompt, the one with more attributes right first: {(prompt, chosen, rejected): label}."""
    out = {}
    for (a, (pa, ra)), (b, (pb, rb)) in combinations(sorted(known.items()), 2):
        if pa != pb:
            continue
        (w, rw), (l, rl) = ((a, ra), (b, rb)) if ra >= rb else ((b, rb), (a, ra))
        gap = (rw - rl) / 3
        if gap == 0 or gap < min_gap:
            if ties == "drop":
                continue
            out[(pa, *sorted((w, l)))] = 0.5  # a tie's order is not a preference
        else:
            out[(pa, w, l)] = 1 / (1 + math.exp(-gap / SCALE))
    return out


def written_pairs(out: Path):
    got = {}
    for line in (out / "pairs.jsonl").read_text().splitlines():
        r = json.loads(line)
        w, l = Path(r["chosen"]).name, Path(r["rejected"]).name
        got[(r["prompt"], *(sorted((w, l)) if r["label"] == 0.5 else (w, l)))] = r["label"]
    return got


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("label")
    return base / "images", write_folder(base / "images")


def _label(capsys, folder, out, *extra):
    return _cli(capsys, "label", SHAPES_CFG, f"train.output_dir={out.parent / 'run'}", "--input", folder, "--out", out, *extra)


def test_label_gives_the_pairs_of_an_independent_ranking(folder, tmp_path, capsys):
    images, known = folder
    out = tmp_path / "labelled"
    code, lines = _label(capsys, images, out)
    assert code == 0, lines
    want = expected_pairs(known)
    got = written_pairs(out)
    assert got.keys() == want.keys()
    assert all(got[k] == pytest.approx(want[k]) for k in want)
    # P1: 4 distinct scores -> 6 pairs; P2: 3 vs 2 vs 2 -> 5 pairs and one tie dropped
    assert len(got) == 11 and "(11 pairs, 0 ties written, 1 dropped)" in lines[-1], lines
    ratings = [json.loads(x) for x in (out / "ratings.jsonl").read_text().splitlines()]
    assert {Path(r["file_name"]).name: r["rating"] for r in ratings} == pytest.approx({n: r / 3 for n, (_, r) in known.items()})
    assert {Path(r["file_name"]).name: r["scores"]["shapes"] for r in ratings} == pytest.approx({n: r / 3 for n, (_, r) in known.items()})
    info = json.loads((out / "label.json").read_text())
    assert info["counts"] == {"samples": 8, "prompts": 2, "prompts_with_one_sample": 0, "pairs": 11, "ties_written": 0,
                              "ties_dropped": 1, "ratings": 8}
    assert info["modality"] == "image" and info["rewards"] == [{"name": "shapes", "path": None, "weight": 1.0}]
    # the image readers take the files as data.pairs / data.ratings
    items = read_pairs(str(out / "pairs.jsonl"))
    assert len(items) == 11 and items[0]["label"] == pytest.approx(want[(items[0]["prompt"], Path(items[0]["w"].name).name,
                                                                         Path(items[0]["l"].name).name)])
    assert len(read_ratings(str(out / "ratings.jsonl"))) == 8


@pytest.mark.parametrize("min_gap, ties", [(0.0, "half"), (0.5, "drop"), (0.5, "half")])
def test_min_gap_and_ties(folder, tmp_path, capsys, min_gap, ties):
    images, known = folder
    out = tmp_path / "labelled"
    code, lines = _label(capsys, images, out, f"label.min_gap={min_gap}", f"label.ties={ties}")
    assert code == 0, lines
    want = expected_pairs(known, min_gap, ties)
    got = written_pairs(out)
    assert got.keys() == want.keys() and all(got[k] == pytest.approx(want[k]) for k in want)
    n_ties = sum(v == 0.5 for v in want.values())
    assert n_ties == {(0.0, "half"): 1, (0.5, "drop"): 0, (0.5, "half"): 8}[(min_gap, ties)]
    assert json.loads((out / "label.json").read_text())["counts"]["ties_written"] == n_ties
    if ties == "half":  # data.ties=half reads the ties as soft labels 0.5; the default drops them
        assert len(read_pairs(str(out / "pairs.jsonl"), ties="half")) == len(got)
        assert len(read_pairs(str(out / "pairs.jsonl"))) == len(got) - n_ties


def test_schemes_hard_labels_and_max_pairs():
    scores = [0.2, 0.9, 0.5, 0.5, 0.1]
    prompts = ["a"] * 5
    pairs, dropped = lab.label_pairs(prompts, scores, scheme="best_vs_rest", soft=False)
    assert [(p.winner, p.loser, p.label) for p in pairs] == [(1, 2, 1.0), (1, 3, 1.0), (1, 0, 1.0), (1, 4, 1.0)] and dropped == 0
    pairs, _ = lab.label_pairs(prompts, scores, scheme="best_vs_worst", scale=0.2)
    assert [(p.winner, p.loser) for p in pairs] == [(1, 4)] and pairs[0].label == pytest.approx(1 / (1 + math.exp(-0.8 / 0.2)))
    pairs, dropped = lab.label_pairs(prompts, scores, scheme="all", max_pairs=2, ties="half")
    assert [(p.winner, p.loser) for p in pairs] == [(1, 4), (1, 0)] and dropped == 0
    pairs, dropped = lab.label_pairs(prompts, scores, scheme="all")
    assert len(pairs) == 9 and dropped == 1  # 10 pairs, the two 0.5s tie


def test_rating_rules():
    s = [0.0, 2.0, 1.0, 4.0]
    assert lab.ratings(s) == [0.0, 0.5, 0.25, 1.0]
    assert lab.ratings(s, "threshold", threshold=2.0) == [0.0, 1.0, 0.0, 1.0]
    assert lab.ratings(s, "quantile", quantile=0.75) == [0.0, 0.0, 0.0, 1.0]  # 0.75-quantile of 0, 1, 2, 4 = 2.5
    assert lab.ratings([0.3, 0.3]) == [0.5, 0.5]
    assert lab.ratings([0.2, 0.7], "score") == [0.2, 0.7]
    with pytest.raises(ValueError, match="outside"):
        lab.ratings(s, "score")


def test_rating_threshold_through_the_cli(folder, tmp_path, capsys):
    images, known = folder
    code, lines = _label(capsys, images, tmp_path / "a", "label.rating=threshold")
    assert code == 2 and "'label.rating_threshold' is not set" in lines[-1], lines
    code, lines = _label(capsys, images, tmp_path / "b", "label.rating=threshold", "label.rating_threshold=0.6",
                         "label.pairs=best_vs_worst", "label.soft=false")
    assert code == 0, lines
    ratings = {Path(r["file_name"]).name: r["rating"] for r in map(json.loads, (tmp_path / "b/ratings.jsonl").read_text().splitlines())}
    assert ratings == {n: float(r >= 2) for n, (_, r) in known.items()}
    assert sorted(json.loads(x)["label"] for x in (tmp_path / "b/pairs.jsonl").read_text().splitlines()) == [1.0, 1.0]


# ---------------------------------------------------------------------------------------------- clusters


def test_kmeans_and_transfer_on_known_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = np.concatenate([c + 0.1 * rng.normal(size=(5, 2)) for c in centres])  # rows 0-4, 5-9, 10-14
    cluster = lab.kmeans(x, 3, seed=0)
    assert len({tuple(cluster[i:i + 5]) for i in (0, 5, 10)}) == 3 and all(len(set(cluster[i:i + 5])) == 1 for i in (0, 5, 10))
    rating = [None] * 15
    rating[0], rating[1], rating[5] = 1.0, 0.5, 0.0  # cluster A: two rated, B: one, C: none
    got = lab.transfer_ratings(cluster.tolist(), rating)
    assert got[:5] == [1.0, 0.5, 0.75, 0.75, 0.75] and got[5:10] == [0.0] * 5 and got[10:] == [None] * 5


def write_solid(tmp_path):
    """Red, blue and green images (9), three of them rated: 0 and 3 are red, 1 is blue; nothing green is rated."""
    folder = tmp_path / "solid"
    folder.mkdir()
    colours = {"red": (230, 20, 20), "blue": (20, 20, 230), "green": (20, 230, 20)}
    lines = []
    for i in range(9):
        name = list(colours)[i % 3]
        Image.new("RGB", (32, 32), tuple(min(255, c + 3 * i) for c in colours[name])).save(folder / f"{i}.png")
        lines.append(json.dumps({"file_name": f"{i}.png", "text": "a colour"}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    rated = tmp_path / "rated.jsonl"
    rated.write_text("".join(json.dumps({"prompt": "a colour", "file_name": f"solid/{i}.png", "rating": r}) + "\n"
                             for i, r in ((0, 1.0), (3, 0.5), (1, 0.0))))
    return folder, rated


def test_from_clusters_rates_an_unrated_folder(tmp_path, capsys):
    """The raw thumbnail embedding clusters solid colours by colour."""
    folder, rated = write_solid(tmp_path)
    out = tmp_path / "out"
    code, lines = _label(capsys, folder, out, "--from-clusters", rated, "label.clusters=3")
    assert code == 0, lines
    rows = {Path(r["file_name"]).name: r for r in map(json.loads, (out / "ratings.jsonl").read_text().splitlines())}
    want = {"0.png": 1.0, "3.png": 0.5, "6.png": 0.75, "1.png": 0.0, "4.png": 0.0, "7.png": 0.0}
    assert {n: r["rating"] for n, r in rows.items()} == want
    assert rows["0.png"]["source"] == "rated" and rows["6.png"]["source"] == "cluster"
    info = json.loads((out / "label.json").read_text())
    assert info["counts"] == {"samples": 9, "rated_given": 3, "clusters": 3, "clusters_without_rating": 1, "ratings": 6,
                              "kept": 3, "from_clusters": 3, "unrated": 3}
    assert info["embedding"].startswith("raw") and "3 left unrated" in lines[-1], lines
    assert len(read_ratings(str(out / "ratings.jsonl"))) == 6


def test_from_clusters_embeds_with_the_rewards_clip_encoder(tmp_path, capsys):
    """label.embedding=auto with a `clip` reward: [s, t, s·t] of its CLIP; the clusters are k-means of exactly those."""
    from genpref.reward_fit import features
    from image.learned_reward import ClipEncoder
    from image.scorers import load_clip
    from image.tasks.tiny_clip import write_tiny_clip

    clip = write_tiny_clip(tmp_path / "clip")
    folder, rated = write_solid(tmp_path)
    out = tmp_path / "out"
    code, lines = _label(capsys, folder, out, "--from-clusters", rated, "label.clusters=2",
                         f"reward.models=[{{name: clip, path: {clip}}}]")
    assert code == 0, lines
    info = json.loads((out / "label.json").read_text())
    assert info["embedding"] == "[s, t, s·t] of the CLIP encoder of reward.models[0]"
    model, processor = load_clip(clip, clip, "clip", "test")
    encoder = ClipEncoder(model, processor, "cpu")
    order = [0, 3, 1, 2, 4, 5, 6, 7, 8]  # the rated samples first, as the command embeds them
    images = [Image.open(folder / f"{i}.png") for i in order]
    x = features(encoder.embed_images(images), encoder.embed_texts(["a colour"] * 9)).numpy()
    cluster = lab.kmeans(x, 2, seed=0)
    want = lab.transfer_ratings(cluster.tolist(), [1.0, 0.5, 0.0] + [None] * 6)
    rows = {Path(r["file_name"]).name: r["rating"] for r in map(json.loads, (out / "ratings.jsonl").read_text().splitlines())}
    assert rows == pytest.approx({f"{i}.png": w for i, w in zip(order, want) if w is not None})


# ---------------------------------------------------------------------------------------------- round trip, motion, errors


def test_written_pairs_train_a_dpo_step(folder, tmp_path, capsys):
    images, _ = folder
    out = tmp_path / "labelled"
    assert _label(capsys, images, out)[0] == 0
    run = tmp_path / "dpo"
    code, lines = _cli(capsys, "train", ROOT / "configs/image/tiny_dpo.yaml", f"data.pairs={out / 'pairs.jsonl'}",
                       f"train.output_dir={run}", "train.max_steps=1", "train.grad_accum=1", "train.checkpoint_every=0",
                       "train.sample_prompts=[]", "objective.soft_label=true")
    assert code == 0, lines
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 1 and math.isfinite(metrics[-1]["loss"])


def test_motion_directory(tmp_path, capsys):
    """Seven tiny motions, one per action; three captioned 'jump', four 'wave': the matching action wins its prompt."""
    from motion.data import motion_jsonl
    from motion.tasks.tiny_data import ACTIONS, write_tiny_humanml

    root = write_tiny_humanml(tmp_path / "hml", num_motions=7)
    prompt = {"jump": "a person jump up", "wave": "a person wave hello"}
    groups = {"jump": [0, 1, 4], "wave": [2, 3, 5, 6]}
    for p, ids in groups.items():
        for i in ids:
            (root / "texts" / f"{i:06d}.txt").write_text(f"{prompt[p]}#a/DET person/NOUN#0.0#0.0\n")
    out = tmp_path / "labelled"
    code, lines = _cli(capsys, "label", ROOT / "configs/motion/tiny_mdm_oaif.yaml", f"train.output_dir={tmp_path / 'run'}",
                       "--input", root, "--out", out, "label.pairs=best_vs_rest")
    assert code == 0, lines
    rows = [json.loads(x) for x in (out / "pairs.jsonl").read_text().splitlines()]
    got = {(r["prompt"], Path(r["w"]).stem, Path(r["l"]).stem) for r in rows}
    winner = {p: ACTIONS.index(p) for p in groups}  # the motion of the prompt's action
    assert got == {(prompt[p], f"{winner[p]:06d}", f"{i:06d}") for p, ids in groups.items() for i in ids if i != winner[p]}
    assert all(r["label"] == pytest.approx(1 / (1 + math.exp(-r["gap"] / 0.2))) for r in rows)  # the config's label_scale
    assert len(motion_jsonl(out / "pairs.jsonl", "pairs")) == 5 and len(motion_jsonl(out / "ratings.jsonl", "ratings")) == 7
    (root / "texts" / "000003.txt").unlink()
    code, lines = _cli(capsys, "label", ROOT / "configs/motion/tiny_mdm_oaif.yaml", f"train.output_dir={tmp_path / 'run'}",
                       "--input", root, "--out", tmp_path / "again")
    assert code == 1 and lines[-1] == f"genpref: error: {root / 'texts' / '000003.txt'} not found: the motion has no prompt", lines


def test_errors_name_the_file(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, lines = _label(capsys, empty, tmp_path / "out")
    assert code == 1 and lines[-1] == f"genpref: error: --input {empty}: the folder is empty (no images and no metadata.jsonl)", lines
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    Image.new("RGB", (8, 8)).save(folder / "b.png")
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "x"}) + "\n")
    code, lines = _label(capsys, folder, tmp_path / "out")
    assert code == 1 and f"{folder / 'b.png'} has no prompt" in lines[-1], lines
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "x"}) + "\n" + json.dumps({"file_name": "b.png"}) + "\n")
    code, lines = _label(capsys, folder, tmp_path / "out")
    assert code == 1 and "metadata.jsonl line 2: b.png has no prompt" in lines[-1], lines
    (folder / "b.png").write_bytes(b"not an image")
    (folder / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f, "text": "x"}) + "\n" for f in ("a.png", "b.png")))
    code, lines = _label(capsys, folder, tmp_path / "out")
    assert code == 1 and f"{folder / 'b.png'}: not a readable image" in lines[-1], lines
    code, lines = _cli(capsys, "label", SHAPES_CFG, f"train.output_dir={tmp_path}", "reward.models=[]", "--input", folder,
                       "--out", tmp_path / "out")
    assert code == 2 and "genpref label scores samples with reward.models" in lines[-1], lines

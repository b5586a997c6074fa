"""The moves dataset on disk: `build` writes the motions, captions, splits, word vectors and bag-of-words
text encoder in HumanML3D format; `write_feedback` ranks and rates samples with the verifier; `check` and
`main` are the command line (`python -m motion.tasks.moves build|check`)."""


from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from genpref.errors import UserError
from motion.tasks.moves.animation import render
from motion.tasks.moves.grammar import (
    COMBOS,
    HAND_PHRASES,
    HELD_OUT,
    MOVE_PHRASES,
    SPEED_PHRASES,
    SUBJECTS,
    VERSION,
    Move,
    caption,
    noisy_caption,
)
from motion.tasks.moves.verifier import verify

# ---------------------------------------------------------------------------------------------- the dataset


@dataclass
class BuildSettings:
    seed: int = 0
    train_per_combo: int = 24  # motions of each of the 27 training combinations
    val_per_combo: int = 4  # fresh motions of the training combinations
    test_heldout_per_combo: int = 20  # motions of each of the 9 held-out combinations (test only)
    test_seen_per_combo: int = 6  # fresh motions of the training combinations in the test split
    captions_per_motion: int = 3
    frames: tuple[int, int] = (40, 52)  # feature rows per motion (2.0-2.6 s)
    noise: float = 0.35  # probability that a caption of the noisy copy names one attribute wrong


def _tokens_line(text: str, start: float = 0.0, end: float = 0.0) -> str:
    from motion.glove import tag_free_text

    return f"{text}#{' '.join(tag_free_text(text))}#{start}#{end}"


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def build(out_dir: str | Path, settings: BuildSettings | None = None, progress: bool = False) -> Path:
    """Write the moves dataset: `out_dir` (clean captions; train / val / test / test_heldout / test_seen
    splits), `out_dir/noisy` (the training motions with noisy captions, for base pretraining),
    `out_dir/glove` (word vectors for the T2M evaluator) and `out_dir/moves.json` (labels, settings).
    Deterministic given the settings; rebuilding an existing directory with the same settings is a no-op."""
    settings = settings or BuildSettings()
    out = Path(out_dir)
    meta_path = out / "moves.json"
    wanted = {"version": VERSION, "settings": asdict(settings)}
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if {k: meta.get(k) for k in wanted} == json.loads(json.dumps(wanted)):
            return out
        raise UserError(f"{out} holds a moves dataset built with other settings; choose another directory or delete it")
    rng = np.random.default_rng([settings.seed, 20])
    plan = []  # (split, combo)
    for combo in COMBOS:
        counts = {"test": settings.test_heldout_per_combo} if combo in HELD_OUT else {
            "train": settings.train_per_combo, "val": settings.val_per_combo, "test": settings.test_seen_per_combo}  # fmt: skip
        plan += [(split, combo) for split, n in counts.items() for _ in range(n)]
    for sub in ("new_joint_vecs", "texts", "noisy/new_joint_vecs", "noisy/texts"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": [], "test_heldout": [], "test_seen": []}
    labels, train_motions = {}, []
    from tqdm.auto import tqdm

    for i, (split, combo) in enumerate(tqdm(plan, desc="moves data", disable=not progress, leave=False)):
        name = f"{i:06d}"
        frames = int(rng.integers(settings.frames[0], settings.frames[1] + 1))
        motion = render(*combo, frames, rng)
        np.save(out / "new_joint_vecs" / f"{name}.npy", motion)
        lines = [_tokens_line(caption(*combo, rng)) for _ in range(settings.captions_per_motion)]
        (out / "texts" / f"{name}.txt").write_text("\n".join(lines) + "\n")
        splits[split].append(name)
        if split == "test":
            splits["test_heldout" if combo in HELD_OUT else "test_seen"].append(name)
        if split == "train":
            train_motions.append(motion)
            _link_or_copy(out / "new_joint_vecs" / f"{name}.npy", out / "noisy" / "new_joint_vecs" / f"{name}.npy")
            noisy = [_tokens_line(noisy_caption(*combo, rng, settings.noise)) for _ in range(settings.captions_per_motion)]
            (out / "noisy" / "texts" / f"{name}.txt").write_text("\n".join(noisy) + "\n")
        labels[name] = {"move": combo[0], "speed": combo[1], "hand": combo[2], "split": split}
    stacked = np.concatenate(train_motions)
    mean, std = stacked.mean(0).astype(np.float32), np.maximum(stacked.std(0), 1e-2).astype(np.float32)
    for root in (out, out / "noisy"):
        np.save(root / "Mean.npy", mean)
        np.save(root / "Std.npy", std)
    for split, names in splits.items():
        (out / f"{split}.txt").write_text("\n".join(names) + "\n")
    (out / "noisy" / "train.txt").write_text("\n".join(splits["train"]) + "\n")
    write_word_vectors(out / "glove", vocabulary(out))
    write_text_encoder(out / "text_encoder", out / "glove")
    meta = {**wanted, "held_out": [list(c) for c in HELD_OUT], "labels": labels}
    meta_path.write_text(json.dumps(meta, indent=1))
    return out


def prompts_for(combos, per_combo: int, rng: np.random.Generator) -> list[tuple[str, Move]]:
    """Fresh captions (synonyms drawn from rng), per_combo for each combination, with their Moves."""
    return [(caption(*c, rng), Move.of(*c)) for c in combos for _ in range(per_combo)]


def write_feedback(directory: str | Path, motions, prompts) -> dict[str, Path]:
    """Verifier feedback on model samples (e.g. several base samples per training prompt), in the motion
    adapter's jsonl formats: `pairs.jsonl` {"prompt", "w", "l", "label": 1} with the best and worst sample
    of each prompt (prompts whose samples all score alike give no pair) and `ratings.jsonl`
    {"prompt", "x", "rating"} with rating 1 when every attribute is right, else 0. Motions are written as
    .npy files beside them."""
    directory = Path(directory)
    (directory / "motions").mkdir(parents=True, exist_ok=True)
    names, by_prompt, ratings = [], {}, []
    for i, (motion, prompt) in enumerate(zip(motions, prompts)):
        name = f"motions/{i:05d}.npy"
        np.save(directory / name, np.asarray(motion, dtype=np.float32))
        verdict = verify(motion, prompt)
        names.append(name)
        by_prompt.setdefault(prompt, []).append((verdict.score, i))
        ratings.append(json.dumps({"prompt": prompt, "x": name, "rating": float(verdict.correct)}))
    pairs = []
    for prompt, scored in by_prompt.items():
        (best, w), (worst, l) = max(scored), min(scored)
        if best > worst:
            pairs.append(json.dumps({"prompt": prompt, "w": names[w], "l": names[l], "label": 1.0}))
    if not pairs:
        raise UserError(f"moves: no verifier-ranked pairs in {len(names)} samples (every prompt's samples scored alike)")
    (directory / "pairs.jsonl").write_text("\n".join(pairs) + "\n")
    (directory / "ratings.jsonl").write_text("\n".join(ratings) + "\n")
    return {"pairs": directory / "pairs.jsonl", "ratings": directory / "ratings.jsonl"}


# ---------------------------------------------------------------------------------------------- word vectors

# words sharing a meaning share most of their vector, as GloVe places synonyms close together
MEANINGS = (
    ("walk", "stroll", "step", "move"),
    ("forward", "ahead", "forwards", "straight"),
    ("backward", "backwards", "back"),
    ("turn", "rotate", "around"),
    ("left", "counterclockwise", "anticlockwise"),
    ("right", "clockwise"),
    ("wave", "hello", "raise"),
    ("hand", "arm"),
    ("jump", "hop"),
    ("squat", "crouch"),
    ("slowly", "slow", "gently", "carefully"),
    ("quickly", "fast", "rapidly", "briskly"),
    ("person", "someone", "man", "woman", "figure"),
)


def vocabulary(root: Path) -> list[str]:
    """Every token word of the clean and noisy captions, plus the evaluator's framing words."""
    words = {"sos", "eos", "unk"}
    for texts in (root / "texts", root / "noisy" / "texts"):
        for path in texts.glob("*.txt"):
            for line in path.read_text().splitlines():
                words |= {tok.rpartition("/")[0] for tok in line.split("#")[1].split()}
    return sorted(words)


def write_word_vectors(glove_dir: Path, words: list[str], dim: int = 300, seed: int = 7) -> Path:
    """GloVe-format files for the T2M evaluator: our_vab_data.npy [V, dim], our_vab_words.pkl (list),
    our_vab_idx.pkl (word -> row). A word's vector is 0.8·(its meaning's random direction) + 0.6·(its
    own), so synonyms have cosine ~0.64 and unrelated words ~0 — the structure GloVe would give."""
    glove_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    unit = lambda: (lambda v: v / np.linalg.norm(v))(rng.normal(size=dim))  # noqa: E731
    meaning = {}
    for group in MEANINGS:
        direction = unit()
        meaning.update({w: direction for w in group})
    vectors = np.stack([3.0 * (0.8 * meaning[w] + 0.6 * unit()) if w in meaning else 3.0 * unit() for w in words])
    np.save(glove_dir / "our_vab_data.npy", vectors.astype(np.float32))
    (glove_dir / "our_vab_words.pkl").write_bytes(pickle.dumps(list(words), protocol=2))
    (glove_dir / "our_vab_idx.pkl").write_bytes(pickle.dumps({w: i for i, w in enumerate(words)}, protocol=2))
    return glove_dir


def _lemma_of(word: str) -> str:
    from motion.glove import tag_free_text

    tokens = tag_free_text(word)
    return tokens[0].rpartition("/")[0] if tokens else word


TEXT_SPECIAL = ("<pad>", "<|startoftext|>", "<unk>", "<|endoftext|>")  # ids 0..3 (eos != 2: pooled at the first eos)


SIDED_LIMBS = tuple(f"{side} {limb}" for side in ("left", "right") for limb in ("hand", "arm"))  # one token each


def write_text_encoder(out_dir: Path, glove_dir: Path, max_length: int = 77) -> Path:
    """A bag-of-words sentence encoder in CLIP's format (`CLIPTextModelWithProjection` + a word-level
    tokenizer), loadable by `motion.text.load_clip` as `model.text_encoder`.

    Weights are set, not trained: token embeddings are the task's word vectors (of each word's lemma),
    the one attention layer attends uniformly (zero queries), values and output are the identity, the MLP
    and position embeddings are zero. The pooled end-of-text state is then the layer-normalised mean of
    the normalised word vectors: a compositional sentence feature, as a pretrained CLIP would give, where
    a random tiny CLIP mixes words so that unseen attribute combinations land far from their parts.
    "left hand", "right hand", "left arm" and "right arm" are single tokens (vector = side + limb + its
    own part), so "turns left while waving the right hand" and "turns right while waving the left hand"
    differ although a bag of single words could not tell them apart."""
    import torch
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, PreTrainedTokenizerFast

    from motion.glove import WordVectorizer

    glove = WordVectorizer.load(glove_dir)
    words = sorted({w for group in MOVE_PHRASES.values() for p in group for w in p.split()}
                   | {w for group in SPEED_PHRASES.values() for p in group for w in p.split()}
                   | {w for p in HAND_PHRASES for w in p.replace("{}", "").split()}
                   | {w for s in SUBJECTS for w in s.split()} | set(glove.word_to_index) - {"sos", "eos", "unk"})  # fmt: skip
    merged = [pair.replace(" ", "_") for pair in SIDED_LIMBS]
    vocab = {tok: i for i, tok in enumerate(TEXT_SPECIAL)}
    vocab.update({w: len(TEXT_SPECIAL) + i for i, w in enumerate(words + merged)})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Lowercase()] + [normalizers.Replace(Regex(rf"\b{p}\b"), p.replace(" ", "_")) for p in SIDED_LIMBS]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 1), ("<|endoftext|>", 3)]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<pad>", unk_token="<unk>", model_max_length=max_length)  # fmt: skip
    dim = glove.dim
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=dim, intermediate_size=4, num_hidden_layers=1,
                            num_attention_heads=1, max_position_embeddings=max_length, projection_dim=dim,
                            pad_token_id=0, bos_token_id=1, eos_token_id=3)  # fmt: skip
    model = CLIPTextModelWithProjection(config)
    vector = lambda w: torch.from_numpy(glove[w + "/OTHER"][0])  # noqa: E731
    own = np.random.default_rng(11)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        emb = model.text_model.embeddings.token_embedding.weight
        for w, i in vocab.items():
            lemma = _lemma_of(w) if w not in TEXT_SPECIAL and w not in merged else None
            if lemma in glove and lemma != "unk":
                emb[i] = vector(lemma)
        for w in merged:
            side, limb = w.split("_")
            extra = torch.from_numpy(own.normal(size=dim) * 3.0 / np.sqrt(dim)).float()
            emb[vocab[w]] = 0.6 * vector(side) + 0.6 * vector(limb) + 0.5 * extra
        layer = model.text_model.encoder.layers[0]
        layer.self_attn.v_proj.weight.copy_(torch.eye(dim))
        layer.self_attn.out_proj.weight.copy_(torch.eye(dim))
        for norm in (layer.layer_norm1, layer.layer_norm2, model.text_model.final_layer_norm):
            norm.weight.fill_(1.0)
        model.text_projection.weight.copy_(torch.eye(dim))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    fast.save_pretrained(out_dir)
    return out_dir


# ---------------------------------------------------------------------------------------------- command line


def check(root: str | Path) -> dict:
    """Verifier accuracy of every split's own motions against their captions (should be 1.0 everywhere)."""
    root = Path(root)
    out = {}
    for split in ("train", "val", "test"):
        names = (root / f"{split}.txt").read_text().split()
        right = total = 0
        for name in names:
            motion = np.load(root / "new_joint_vecs" / f"{name}.npy")
            for line in (root / "texts" / f"{name}.txt").read_text().splitlines():
                right += verify(motion, line.split("#")[0]).correct
                total += 1
        out[split] = right / max(total, 1)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m motion.tasks.moves", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="write the moves dataset (HumanML3D format)")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-per-combo", type=int, default=BuildSettings.train_per_combo)
    p = sub.add_parser("check", help="verifier accuracy on a built dataset's own motions")
    p.add_argument("root")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build(args.out_dir, BuildSettings(seed=args.seed, train_per_combo=args.train_per_combo), progress=True))
    else:
        print(json.dumps(check(args.root)))


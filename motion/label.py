"""Motions for `genpref label` (genpref/label_command.py): the unlabelled HumanML3D-format directory, loading, the
keys of the files it writes and the embedding `--from-clusters` clusters.

Input: a HumanML3D-format directory (the layout `data.root` reads; Mean.npy, Std.npy and split files are not
needed): every `new_joint_vecs/<id>.npy` ([T, 263] un-normalised features) is one sample, and its prompt is the
caption of `texts/<id>.txt` that describes the whole motion (the first line with start = end = 0, else the first
line). Samples with the same prompt are ranked against each other: write K generations of a prompt as K ids with
the same caption.

Output keys, as motion.data.motion_jsonl reads them: pairs.jsonl {"prompt", "w", "l", "label"} (data.pairs) and
ratings.jsonl {"prompt", "x", "rating"} (data.ratings), .npy paths relative to the output directory.

Embedding (label.embedding): `auto` takes the first reward model with a T2M evaluator (`learned`, `t2m`) and gives
[s, t, s·t] of its L2-normalised motion and text embeddings; `raw`, or no such model, gives the mean and standard
deviation over frames of the 263 features (526 numbers, prompt unused).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genpref.errors import UserError
from genpref.textio import read_utf8
from motion.data import FEATURES, check_motion, load_motion_file, parse_caption_line

PAIR_KEYS = ("w", "l")
SAMPLE_KEY = "x"
RATED_KEYS = ("x",)


def _prompt(text_file: Path) -> str:
    if not text_file.is_file():
        raise UserError(f"{text_file} not found: the motion has no prompt")
    captions = [c for c in map(parse_caption_line, read_utf8(text_file).splitlines()) if c]
    if not captions:
        raise UserError(f"{text_file}: no caption line of the form caption#tokens#start#end (the motion has no prompt)")
    return next((c for c, _, start, end in captions if start == 0.0 and end == 0.0), captions[0][0])


def read_input(path: Path) -> list[tuple[Path, str]]:
    """[(motion file, prompt)] of a HumanML3D-format directory; UserError naming the file at fault."""
    if not path.is_dir():
        raise UserError(f"--input {path}: {'not found' if not path.exists() else 'not a directory'}; "
                        "expected a HumanML3D-format directory (new_joint_vecs/, texts/)")
    files = sorted((path / "new_joint_vecs").glob("*.npy"))
    if not files:
        raise UserError(f"--input {path}: the folder is empty: no motions in {path / 'new_joint_vecs'} (<id>.npy)")
    return [(f, _prompt(path / "texts" / f"{f.stem}.txt")) for f in files]


def load(files: list[Path]) -> list[np.ndarray]:
    """[T, 263] float32 motions; UserError naming the file that is unreadable, of the wrong width or not finite."""
    out = []
    for f in files:
        motion = load_motion_file(Path(f))
        check_motion(motion, Path(f), FEATURES)
        out.append(motion.astype(np.float32))
    return out


def raw_embedding(motions: list[np.ndarray], prompts: list[str]) -> np.ndarray:
    """[B, 526]: mean and standard deviation over frames of each feature."""
    return np.stack([np.concatenate([m.mean(0), m.std(0)]) for m in motions]).astype(np.float64)


def _evaluator(model):
    from motion.learned_reward import LearnedMotionReward
    from motion.rewards import T2MReward

    if isinstance(model, LearnedMotionReward):
        return model.encoder
    return model if isinstance(model, T2MReward) else None


def embedder(models: list, mode: str, device):
    """(description, fn(motions, prompts) -> [B, D]) for label.embedding `mode` (auto | raw)."""
    from genpref.reward_fit import features
    from motion.learned_reward import embed_motions

    for i, model in enumerate(models if mode == "auto" else []):
        encoder = _evaluator(model)
        if encoder is not None:
            return (f"[s, t, s·t] of the T2M evaluator of reward.models[{i}]",
                    lambda ms, ps, e=encoder: features(embed_motions(e, ms), e.embed_texts(list(ps)).float()).numpy())
    return "raw: mean and std over frames of the 263 features", raw_embedding

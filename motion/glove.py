"""Word vectors and POS one-hots for the T2M text encoder: the released GloVe files, caption tokens, free-text tagging.

The T2M evaluator (EricGuo5513/text-to-motion) reads a caption as HumanML3D tokens `word/POS` (spaCy
lemmas and universal POS tags), turns each token into a 300-d GloVe vector plus a 15-way one-hot, and
frames it as `sos` + at most 20 tokens + `eos`, padded with `unk` to 22 rows (`utils/word_vectorizer.py`,
`data/dataset.py`). Words listed in the VIP classes get the VIP one-hot whatever their POS; words
missing from the vocabulary get the `unk` vector and the OTHER one-hot.

The released files are `our_vab_data.npy` (float [V, 300]), `our_vab_words.pkl` (list of V words) and
`our_vab_idx.pkl` (dict word -> row). The pickles are read by `load_plain_pickle`, which accepts only
plain containers and scalars: any class or function reference is refused before it can run.

Free text without POS tags (`tag_free_text`) goes through a small rule-based tagger instead of spaCy,
documented on that function; captions in a HumanML3D `texts/*.txt` file keep their published tags.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import numpy as np

from genpref.errors import UserError

POS_ENUMERATOR = {
    "VERB": 0,
    "NOUN": 1,
    "DET": 2,
    "ADP": 3,
    "NUM": 4,
    "AUX": 5,
    "PRON": 6,
    "ADJ": 7,
    "ADV": 8,
    "Loc_VIP": 9,
    "Body_VIP": 10,
    "Obj_VIP": 11,
    "Act_VIP": 12,
    "Desc_VIP": 13,
    "OTHER": 14,
}
NUM_POS = len(POS_ENUMERATOR)  # 15
WORD_DIM = 300
MAX_TEXT_LEN = 20  # tokens kept from a caption, before sos/eos
TOKENS_PER_CAPTION = MAX_TEXT_LEN + 2  # sos + 20 + eos, padded with unk

# The VIP word classes as published (checked in this order; "dance" is listed twice in the original).
LOC_VIP = ("left", "right", "clockwise", "counterclockwise", "anticlockwise", "forward", "back", "backward",
           "up", "down", "straight", "curve")  # fmt: skip
BODY_VIP = ("arm", "chin", "foot", "feet", "face", "hand", "mouth", "leg", "waist", "eye", "knee", "shoulder",
            "thigh")  # fmt: skip
OBJ_VIP = ("stair", "dumbbell", "chair", "window", "floor", "car", "ball", "handrail", "baseball", "basketball")
ACT_VIP = ("walk", "run", "swing", "pick", "bring", "kick", "put", "squat", "throw", "hop", "dance", "jump", "turn",
           "stumble", "dance", "stop", "sit", "lift", "lower", "raise", "wash", "stand", "kneel", "stroll",
           "rub", "bend", "balance", "flap", "jog", "shuffle", "lean", "rotate", "spin", "spread", "climb")  # fmt: skip
DESC_VIP = ("slowly", "carefully", "fast", "careful", "slow", "quickly", "happy", "angry", "sad", "happily",
            "angrily", "sadly")  # fmt: skip
VIP_CLASSES = {"Loc_VIP": LOC_VIP, "Body_VIP": BODY_VIP, "Obj_VIP": OBJ_VIP, "Act_VIP": ACT_VIP, "Desc_VIP": DESC_VIP}


# ---- restricted pickle reading ---------------------------------------------------------------------------

_PLAIN_TYPES = (list, dict, tuple, str, int, float, bool, type(None))


class _PlainUnpickler(pickle.Unpickler):
    """Builds only what the pickle opcodes make without a lookup (lists, dicts, tuples, strings, numbers)."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: only plain lists/dicts/strings/ints allowed")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused a persistent id: only plain lists/dicts/strings/ints allowed")


def _is_plain(obj, depth: int = 0) -> bool:
    if depth > 3 or not isinstance(obj, _PLAIN_TYPES):
        return False
    if isinstance(obj, (list, tuple)):
        return all(_is_plain(x, depth + 1) for x in obj)
    if isinstance(obj, dict):
        return all(_is_plain(k, depth + 1) and _is_plain(v, depth + 1) for k, v in obj.items())
    return True


def load_plain_pickle(path: str | Path):
    """Read a pickle holding only plain builtins; anything that names a class or function raises UserError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read word-vector file {path}: {e.strerror or e}") from None
    try:
        obj = _PlainUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # any failure of a hostile or corrupt file ends in one message
        raise UserError(f"{path} is not a plain pickle of lists/dicts/strings/ints ({e}); refusing to load it") from None
    if not _is_plain(obj):
        raise UserError(f"{path} holds {type(obj).__name__} objects, not plain lists/dicts/strings/ints")
    return obj


# ---- word vectors -----------------------------------------------------------------------------------------


def pos_one_hot(pos: str) -> np.ndarray:
    """15-way one-hot of a POS tag or VIP class; unknown tags count as OTHER."""
    vec = np.zeros(NUM_POS, dtype=np.float32)
    vec[POS_ENUMERATOR.get(pos, POS_ENUMERATOR["OTHER"])] = 1.0
    return vec


def vip_class(word: str) -> str | None:
    for name, words in VIP_CLASSES.items():
        if word in words:
            return name
    return None


class WordVectorizer:
    """GloVe lookup with the reference's POS rules: `vectorizer["man/NOUN"] -> (vector[300], one_hot[15])`."""

    def __init__(self, vectors: np.ndarray, word_to_index: dict[str, int]):
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise UserError(f"word vectors must be a [V, D] array, got shape {vectors.shape}")
        if "unk" not in word_to_index:
            raise UserError("the word-vector vocabulary has no 'unk' entry (needed for padding and unknown words)")
        self.vectors = vectors
        self.word_to_index = dict(word_to_index)
        self.dim = vectors.shape[1]

    @classmethod
    def load(cls, glove_dir: str | Path, prefix: str = "our_vab") -> WordVectorizer:
        """Read `<prefix>_data.npy`, `<prefix>_words.pkl`, `<prefix>_idx.pkl` from `glove_dir`."""
        glove_dir = Path(glove_dir)
        data_path = glove_dir / f"{prefix}_data.npy"
        try:
            vectors = np.load(data_path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read word vectors {data_path}: {e}") from None
        words = load_plain_pickle(glove_dir / f"{prefix}_words.pkl")
        word_to_index = load_plain_pickle(glove_dir / f"{prefix}_idx.pkl")
        if not isinstance(words, list) or not isinstance(word_to_index, dict):
            raise UserError(f"{glove_dir}: expected {prefix}_words.pkl to hold a list and {prefix}_idx.pkl a dict")
        missing = [w for w in words if w not in word_to_index]
        if missing:
            raise UserError(f"{glove_dir / (prefix + '_idx.pkl')} has no index for words such as {missing[:3]}")
        bad = [w for w in words if not 0 <= word_to_index[w] < len(vectors)]
        if bad:
            raise UserError(f"{glove_dir / (prefix + '_idx.pkl')} points outside {data_path} for {bad[:3]}")
        return cls(vectors, {w: word_to_index[w] for w in words})

    def __len__(self) -> int:
        return len(self.word_to_index)

    def __contains__(self, word: str) -> bool:
        return word in self.word_to_index

    def __getitem__(self, token: str) -> tuple[np.ndarray, np.ndarray]:
        word, _, pos = token.rpartition("/") if "/" in token else (token, "", "OTHER")
        if word not in self.word_to_index:
            return self.vectors[self.word_to_index["unk"]], pos_one_hot("OTHER")
        return self.vectors[self.word_to_index[word]], pos_one_hot(vip_class(word) or pos)

    def encode(self, tokens: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
        """Caption tokens -> word vectors [22, D], POS one-hots [22, 15], caption length (sos..eos)."""
        framed = ["sos/OTHER"] + list(tokens[:MAX_TEXT_LEN]) + ["eos/OTHER"]
        cap_len = len(framed)
        framed += ["unk/OTHER"] * (TOKENS_PER_CAPTION - cap_len)
        pairs = [self[t] for t in framed]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), cap_len

    def encode_batch(self, captions_tokens: list[list[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Many captions -> word vectors [B, 22, D], one-hots [B, 22, 15], caption lengths [B] (int64)."""
        encoded = [self.encode(tokens) for tokens in captions_tokens]
        return (
            np.stack([e[0] for e in encoded]),
            np.stack([e[1] for e in encoded]),
            np.array([e[2] for e in encoded], dtype=np.int64),
        )


# ---- free text without POS tags ----------------------------------------------------------------------------

_CLOSED_CLASS = {
    "DET": "a an the this that these those his her their its my your our some each every another any both all".split(),
    "ADP": ("with in on at to from into onto over under around across toward towards through of for by behind "
            "along after before while about against between beside near above below like off out").split(),
    "PRON": ("he she it they him them someone somebody something himself herself themselves itself who which "
             "what i you we me us one").split(),
    "AUX": "is are was were be been being has have had does do did can will would should could may might".split(),
    "NUM": "two three four five six seven eight nine ten twice once several".split(),
    "ADJ": "small big large high low quick other few many same whole long short full half circular wide".split(),
    "ADV": ("then again very also still slightly just forth together repeatedly backwards forwards sideways "
            "upward downward upwards downwards away").split(),
    "CCONJ": "and or but".split(),
}  # fmt: skip
_MOTION_VERBS = set(ACT_VIP) | set(
    ("wave step move go come hold take reach touch grab push pull crouch crawl skip march sway stretch shake "
     "clap punch stomp tiptoe bow nod look fall lie get begin start continue perform do make use act play "
     "pace sidestep twist swim fly hit catch drink eat open close bounce leap wipe scratch pace lunge").split()
)  # fmt: skip
_MOTION_NOUNS = set(BODY_VIP) | set(OBJ_VIP) | set(
    ("person man woman figure body head step circle direction side time motion "
     "position ground air place way line pose toe hip elbow wrist").split()
)  # fmt: skip
_IRREGULAR = {
    "ran": "run", "sat": "sit", "stood": "stand", "threw": "throw", "thrown": "throw", "went": "go",
    "goes": "go", "took": "take", "taken": "take", "held": "hold", "knelt": "kneel", "spun": "spin",
    "swung": "swing", "brought": "bring", "fell": "fall", "fallen": "fall", "lay": "lie", "lying": "lie",
    "got": "get", "began": "begin", "begun": "begin", "made": "make", "did": "do", "done": "do",
    "swam": "swim", "flew": "fly", "caught": "catch", "drank": "drink", "ate": "eat", "leapt": "leap",
    "people": "person", "men": "man", "women": "woman", "steps": "step", "toes": "toe",
}  # fmt: skip
_KNOWN_LEMMAS = _MOTION_VERBS | _MOTION_NOUNS


def _lemma(word: str) -> str:
    """Lemma of a NOUN/VERB candidate by the lexicon: irregular forms, then -s/-es/-ing/-ed stripping
    (restoring a dropped 'e' or a doubled consonant) when the stem is a known motion verb or noun."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word in _KNOWN_LEMMAS:
        return word
    stems = []
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 1:
            stem = word[: -len(suffix)]
            stems += [stem, stem + "e"]
            if len(stem) > 2 and stem[-1] == stem[-2]:
                stems.append(stem[:-1])  # running -> run
            if suffix in ("es", "ed") and stem.endswith("i"):
                stems.append(stem[:-1] + "y")  # carries -> carry
    return next((s for s in stems if s in _KNOWN_LEMMAS), word)


def tag_free_text(caption: str) -> list[str]:
    """Tokens `word/POS` for a caption without tags, by rules instead of spaCy (what HumanML3D used):

    1. hyphens are removed, text is lowercased (spaCy keeps case, so "A" became `unk`; lowercase is kinder),
       words are the alphabetic runs; an apostrophe ending ("person's") is dropped like spaCy's "'s" token.
    2. each word is lemmatised by `_lemma` (irregular table, then suffix stripping checked against a motion
       lexicon); if the lemma is a VIP Act word or a listed motion verb -> VERB; a VIP Body/Obj word or a
       listed motion noun -> NOUN; a VIP Loc word -> ADV; a VIP Desc word -> ADV.
    3. otherwise a closed-class table gives DET/ADP/PRON/AUX/NUM/ADJ/ADV/CCONJ (CCONJ maps to OTHER in the
       one-hot, as for spaCy's tag), and any remaining word is a NOUN.
    As in HumanML3D, NOUN and VERB tokens carry the lemma ("walks" -> walk/VERB) except the word "left";
    others keep the word. VIP words get their VIP one-hot in `WordVectorizer` whatever the tag here.
    """
    words = re.findall(r"[a-z]+(?:'[a-z]+)?", caption.replace("-", "").lower())
    tokens = []
    for raw in words:
        word = raw.split("'")[0]
        lemma = _lemma(word)
        if lemma in _MOTION_VERBS:
            pos = "VERB"
        elif lemma in _MOTION_NOUNS and word not in LOC_VIP:
            pos = "NOUN"
        elif word in LOC_VIP or word in DESC_VIP:
            pos = "ADV"
        else:
            pos = next((tag for tag, ws in _CLOSED_CLASS.items() if word in ws), "NOUN")
        keep_lemma = pos in ("NOUN", "VERB") and word != "left"
        tokens.append(f"{lemma if keep_lemma else word}/{pos}")
    return tokens


def caption_tokens(caption: str, tokens: list[str] | None = None) -> list[str]:
    """The published tokens when a caption has them, else the rule-based tags of `tag_free_text`."""
    return list(tokens) if tokens else tag_free_text(caption)

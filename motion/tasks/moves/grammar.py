"""The moves task's grammar: moves, speeds and waving hands, the held-out combinations, captions with
synonyms and the parser that reads a prompt back (`parse_prompt`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

FPS = 20
VERSION = 2  # bump when motions, captions or splits change: shipped weights are tied to it

# ---------------------------------------------------------------------------------------------- the grammar

MOVES = {  # move -> (action, direction)
    "walk_forward": ("walk", "forward"),
    "walk_backward": ("walk", "backward"),
    "turn_left": ("turn", "left"),
    "turn_right": ("turn", "right"),
    "jump": ("jump", None),
    "squat": ("squat", None),
}
SPEEDS = ("slowly", "quickly")
HANDS = ("none", "left", "right")  # the hand that waves during the move
COMBOS = tuple((m, s, h) for m in MOVES for s in SPEEDS for h in HANDS)
# one or two combinations of each move, chosen so that every pair of attribute values stays in training
HELD_OUT = (
    ("walk_forward", "quickly", "left"),
    ("walk_backward", "slowly", "right"),
    ("walk_backward", "quickly", "none"),
    ("turn_left", "quickly", "none"),
    ("turn_left", "slowly", "right"),
    ("turn_right", "slowly", "left"),
    ("jump", "quickly", "right"),
    ("jump", "slowly", "left"),
    ("squat", "slowly", "none"),
)
TRAIN_COMBOS = tuple(c for c in COMBOS if c not in HELD_OUT)

SUBJECTS = ("a person", "someone", "a man", "a woman", "the person", "a figure")
MOVE_PHRASES = {
    "walk_forward": ("walks forward", "walks ahead", "walks straight forward", "strolls forward", "steps forward", "moves forward"),
    "walk_backward": ("walks backward", "walks backwards", "steps backward", "moves backward", "walks back", "strolls backwards"),
    "turn_left": ("turns left", "turns to the left", "turns around to the left", "rotates to the left", "turns counterclockwise"),
    "turn_right": ("turns right", "turns to the right", "turns around to the right", "rotates to the right", "turns clockwise"),
    "jump": ("jumps", "jumps up and down", "jumps in place", "hops in place", "jumps up"),
    "squat": ("squats", "squats down", "squats down and stands up", "crouches down and up", "does a squat"),
}  # fmt: skip
SPEED_PHRASES = {
    "slowly": ("slowly", "at a slow pace", "gently", "slowly and carefully"),
    "quickly": ("quickly", "fast", "at a fast pace", "rapidly", "briskly"),
}
SPEED_ADVERBS = {"slowly": ("slowly", "gently"), "quickly": ("quickly", "rapidly")}  # may stand before the verb
HAND_PHRASES = ("while waving the {} hand", "and waves the {} hand", "with the {} hand waving", "while waving with the {} arm",
                "and waves hello with the {} hand")  # fmt: skip

# words that name an attribute value in a caption (parse_prompt); everything else is filler
ACTION_WORDS = {
    "walk": {"walk", "walks", "walking", "stroll", "strolls", "step", "steps", "move", "moves"},
    "turn": {"turn", "turns", "turning", "rotate", "rotates"},
    "jump": {"jump", "jumps", "jumping", "hop", "hops"},
    "squat": {"squat", "squats", "squatting", "crouch", "crouches"},
}
DIRECTION_WORDS = {
    "forward": {"forward", "forwards", "ahead"},
    "backward": {"backward", "backwards", "back"},
    "left": {"left", "counterclockwise", "anticlockwise"},
    "right": {"right", "clockwise"},
}
SPEED_WORDS = {"slowly": {"slowly", "slow", "gently"}, "quickly": {"quickly", "fast", "rapidly", "briskly"}}
WAVE_WORDS = {"wave", "waves", "waving"}
LIMB_WORDS = {"hand", "arm"}


@dataclass(frozen=True)
class Move:
    """What a prompt asks for: action, direction (None for jump and squat), speed (None if unsaid) and the
    waving hand ("none" when the prompt names no waving)."""

    action: str | None
    direction: str | None
    speed: str | None
    hand: str = "none"

    @classmethod
    def of(cls, move: str, speed: str, hand: str = "none") -> Move:
        action, direction = MOVES[move]
        return cls(action, direction, speed, hand)

    @property
    def move(self) -> str | None:
        for name, (action, direction) in MOVES.items():
            if (action, direction) == (self.action, self.direction):
                return name
        return None

    @property
    def combo(self) -> tuple[str | None, str | None, str]:
        return self.move, self.speed, self.hand


def caption(move: str, speed: str, hand: str, rng: np.random.Generator) -> str:
    """One caption with synonyms: '<subject> <move> <speed> [<hand clause>]' or '<subject> <adverb> <move> ...'."""
    subject = SUBJECTS[rng.integers(len(SUBJECTS))]
    phrase = MOVE_PHRASES[move][rng.integers(len(MOVE_PHRASES[move]))]
    if rng.random() < 0.3:
        text = f"{subject} {SPEED_ADVERBS[speed][rng.integers(len(SPEED_ADVERBS[speed]))]} {phrase}"
    else:
        text = f"{subject} {phrase} {SPEED_PHRASES[speed][rng.integers(len(SPEED_PHRASES[speed]))]}"
    if hand != "none":
        text += " " + HAND_PHRASES[rng.integers(len(HAND_PHRASES))].format(hand)
    return text


def parse_prompt(text: str) -> Move:
    """The attributes a caption names, by keyword (exact on the task's own captions): the side word just
    before 'hand'/'arm' is the waving hand, the remaining direction word the move's direction."""
    words = re.findall(r"[a-z]+", text.lower())
    hand = "none"
    if set(words) & WAVE_WORDS:
        for i, w in enumerate(words):
            if w in LIMB_WORDS and i > 0 and words[i - 1] in ("left", "right"):
                hand = words[i - 1]
                words = words[: i - 1] + words[i + 1 :]
                break
    bag = set(words)
    order = ("turn", "jump", "squat", "walk")  # "squats down and stands up": squat, not walk
    action = next((a for a in order if bag & ACTION_WORDS[a]), None)
    allowed = {"walk": ("forward", "backward"), "turn": ("left", "right")}.get(action, ())
    direction = next((d for d, ws in DIRECTION_WORDS.items() if bag & ws and d in allowed), None)
    speed = next((s for s, ws in SPEED_WORDS.items() if bag & ws), None)
    return Move(action, direction, speed, hand)


def noisy_caption(move: str, speed: str, hand: str, rng: np.random.Generator, noise: float) -> str:
    """With probability `noise`, a caption with one attribute wrong (another move, the other speed, or
    another hand); never a held-out combination, so held-out captions stay unseen."""
    if rng.random() >= noise:
        return caption(move, speed, hand, rng)
    while True:
        kind = rng.choice(["move", "speed", "hand"])
        new = [move, speed, hand]
        if kind == "move":
            new[0] = str(rng.choice([m for m in MOVES if m != move]))
        elif kind == "speed":
            new[1] = SPEEDS[1 - SPEEDS.index(speed)]
        else:
            new[2] = str(rng.choice([h for h in HANDS if h != hand]))
        if tuple(new) not in HELD_OUT:
            return caption(*new, rng)



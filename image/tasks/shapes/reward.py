"""Image reward models (annotators) for `reward.models`: the shapes task's exact verifier.

`build_reward(spec, cfg, device)` is what genpref/build.py calls for an image reward name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from genpref.errors import UserError
from image.tasks import shapes


class ShapesVerifier:
    """Reward = fraction of the prompt's three attributes (colour, shape, position) the image shows;
    with `graded`, near misses of shape and position earn partial credit (`shapes.graded_score`); with
    `strict`, 1 when all three are right and 0 otherwise (the benchmark's accuracy).

    similarity(a, b): fraction of attributes the verifier reads alike in both images (SoPo's S); two
    images where nothing is found count as alike."""

    def __init__(self, graded: bool = False, strict: bool = False):
        self.graded, self.strict = graded, strict

    def score(self, samples: Sequence, prompts: Sequence[str]) -> torch.Tensor:
        if self.strict:
            return torch.tensor([float(shapes.check(s, p)["all"]) for s, p in zip(samples, prompts, strict=True)])
        score = shapes.graded_score if self.graded else shapes.score
        return torch.tensor([score(s, p) for s, p in zip(samples, prompts, strict=True)])

    def similarity(self, a: Sequence, b: Sequence) -> torch.Tensor:
        values = []
        for x, y in zip(a, b, strict=True):
            rx, ry = shapes.read(x), shapes.read(y)
            same = [getattr(rx, k) == getattr(ry, k) for k in shapes.ATTRIBUTES]
            values.append(sum(same) / len(same))
        return torch.tensor(values)


# reward.models[].name -> constructor
REWARD_MODELS = {"shapes": ShapesVerifier, "shapes_graded": lambda: ShapesVerifier(graded=True),
                 "shapes_strict": lambda: ShapesVerifier(strict=True)}


def build_reward(spec, cfg, device) -> ShapesVerifier:
    if spec.name not in REWARD_MODELS:
        raise UserError(f"reward.models: {spec.name!r} is not an image reward here; valid: {', '.join(REWARD_MODELS)}")
    return REWARD_MODELS[spec.name]()

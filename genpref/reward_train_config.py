"""The `reward_train:` config section: the encoder and the fit of `genpref reward train` (genpref/learned_reward.py).
The output directory is the path of the config's `reward.models` entry named `learned`; the seed is train.seed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RewardTrainConfig:
    encoder: str | None = None  # frozen encoder: a local CLIP-format directory (images) | a T2M evaluator run dir or finest.tar (motion)
    hidden: int = 256  # hidden units of the head on [s, t, s·t] (0 = a linear head)
    init: str = "random"  # random | similarity: start from the encoder's zero-shot sample–text similarity (few pairs)
    epochs: int = 20  # passes over the training pairs / ratings
    lr: float = 1e-3  # AdamW learning rate of the head
    weight_decay: float = 0.01  # AdamW weight decay of the head
    batch_size: int = 64  # pairs (and ratings) per step
    holdout: float = 0.1  # fraction of prompts held out: early stopping and the reported accuracy / calibration
    patience: int = 3  # stop after this many epochs without a lower held-out loss (0 = run every epoch)

"""Bradley–Terry reward models on frozen embeddings: the losses, a small head, the fit loop and its held-out metrics.

Pure torch: the modalities turn samples and prompts into embeddings (image/learned_reward.py: a frozen CLIP;
motion/learned_reward.py: the T2M evaluator), this module fits r(sample, prompt) = head(features) on them.

- Pairs (Bradley & Terry 1952): P(w ≻ l) = σ(r_w − r_l). A pair carries label p = P(w ≻ l) in [0, 1]
  (1 = hard preference, Pick-a-Pic's soft label_0 as is, a tie = 0.5) and costs
  −[p·log σ(r_w − r_l) + (1 − p)·log σ(r_l − r_w)]: a tie pulls the two rewards together.
- Ratings (thumbs up / down, y in [0, 1]): binary cross-entropy of σ(r) against y, i.e. Bradley–Terry
  against a fixed neutral item of reward 0. We chose this over BT between rated items because it uses a
  rating even when its prompt has no other one, and it keeps the scale: σ(r) = P(thumbs up), and under the
  usual logistic model σ(r_a − r_b) is again a preference probability.
- The held-out split is by prompt (no prompt is in both halves); early stopping on the held-out loss.
- Metrics: pair accuracy with ties (label 0.5) excluded and a zero margin counted as half right; log-loss;
  expected calibration error over 10 equal-width bins of the predicted P(w ≻ l), each pair counted in both
  orders ((p, y) and (1 − p, 1 − y)), so it does not depend on which sample a file lists first.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ---------------------------------------------------------------------------------------------- losses


def bradley_terry_nll(r_w: Tensor, r_l: Tensor, label: Tensor) -> Tensor:
    """−[p·log σ(r_w − r_l) + (1 − p)·log σ(r_l − r_w)] per pair, shapes [B] -> [B]; p = label = P(w ≻ l)."""
    delta = r_w - r_l
    return -(label * F.logsigmoid(delta) + (1.0 - label) * F.logsigmoid(-delta))


def rating_nll(r: Tensor, rating: Tensor) -> Tensor:
    """−[y·log σ(r) + (1 − y)·log σ(−r)] per rated sample, [B] -> [B]: BT against a neutral item of reward 0."""
    return bradley_terry_nll(r, torch.zeros_like(r), rating)


# ---------------------------------------------------------------------------------------------- head


def features(sample_emb: Tensor, text_emb: Tensor | None = None) -> Tensor:
    """[s, t, s·t] of the L2-normalised embeddings ([B, D] each -> [B, 3D]); [s] without a text ([B, D])."""
    s = F.normalize(sample_emb.float(), dim=-1)
    if text_emb is None:
        return s
    t = F.normalize(text_emb.float(), dim=-1)
    return torch.cat([s, t, s * t], dim=-1)


PRIOR_SCALE = 10.0  # initial τ of the similarity prior: a cosine gap of 0.1 is a preference logit of 1


class RewardHead(nn.Module):
    """r = MLP(features) -> [B]: one hidden GELU layer of `hidden` units, or a linear map when hidden = 0.

    With `prior`, r = τ·cos(s, t) + MLP(features): the encoder's zero-shot sample–text similarity (the sum of
    the s·t block of [s, t, s·t]) with a learned scale τ, plus a correction that starts at 0 (last layer
    zero-initialised). The fit then starts from what the encoder already knows instead of from noise, which
    matters when the pairs are few (PickScore likewise starts from CLIP's similarity)."""

    def __init__(self, in_features: int, hidden: int = 256, prior: bool = False):
        super().__init__()
        if prior and in_features % 3:
            raise ValueError(f"RewardHead: the similarity prior needs [s, t, s·t] features (3·D wide), got {in_features}")
        self.in_features, self.hidden, self.prior = in_features, hidden, prior
        layers = [nn.Linear(in_features, 1)] if hidden == 0 else [nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, 1)]
        self.net = nn.Sequential(*layers)
        if prior:
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)
            self.prior_scale = nn.Parameter(torch.tensor(PRIOR_SCALE))

    def forward(self, x: Tensor) -> Tensor:
        r = self.net(x).squeeze(-1)
        if self.prior:
            r = r + self.prior_scale * x[:, 2 * self.in_features // 3:].sum(-1)
        return r


# ---------------------------------------------------------------------------------------------- data


@dataclass
class PairData:
    """Features of preferred and dispreferred samples ([N, F] each), labels P(w ≻ l) [N], prompt ids [N]."""

    w: Tensor
    l: Tensor
    label: Tensor
    group: Tensor

    def __len__(self) -> int:
        return len(self.label)

    def take(self, index: Tensor) -> PairData:
        return PairData(self.w[index], self.l[index], self.label[index], self.group[index])


@dataclass
class RatingData:
    """Features of rated samples [N, F], ratings in [0, 1] [N], prompt ids [N]."""

    x: Tensor
    rating: Tensor
    group: Tensor

    def __len__(self) -> int:
        return len(self.rating)

    def take(self, index: Tensor) -> RatingData:
        return RatingData(self.x[index], self.rating[index], self.group[index])


def heldout_groups(groups: Tensor, fraction: float, seed: int) -> Tensor:
    """The prompt ids held out: round(fraction · #prompts) of them (at least one when fraction > 0 and
    there are two prompts or more), drawn with `seed`."""
    unique = torch.unique(groups)
    n = min(max(round(fraction * len(unique)), 1 if fraction > 0 else 0), len(unique) - 1)
    order = torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed))
    return unique[order[:max(n, 0)]]


def split(data, held: Tensor):
    """(training part, held-out part) of PairData / RatingData (None stays None) by the held-out prompt ids."""
    if data is None:
        return None, None
    mask = torch.isin(data.group, held)
    return data.take(torch.nonzero(~mask).squeeze(-1)), data.take(torch.nonzero(mask).squeeze(-1))


# ---------------------------------------------------------------------------------------------- metrics


def expected_calibration_error(p: Tensor, y: Tensor, bins: int = 10) -> float:
    """Σ_b (n_b / N)·|mean p − mean y| over equal-width bins of the predicted probability p."""
    if len(p) == 0:
        return float("nan")
    which = (p * bins).long().clamp(0, bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += in_bin.sum().item() / len(p) * abs(p[in_bin].mean().item() - y[in_bin].mean().item())
    return total


def pair_metrics(r_w: Tensor, r_l: Tensor, label: Tensor, bins: int = 10) -> dict:
    """accuracy (ties excluded, zero margin = half right), log_loss, ece (both orders), pairs, ties."""
    delta, label = (r_w - r_l).double(), label.double()
    decided = label != 0.5
    agree = torch.where(delta == 0, 0.5, ((delta > 0) == (label > 0.5)).double())
    p = torch.sigmoid(delta)
    return {
        "accuracy": agree[decided].mean().item() if decided.any() else float("nan"),
        "log_loss": bradley_terry_nll(r_w.double(), r_l.double(), label).mean().item() if len(label) else float("nan"),
        "ece": expected_calibration_error(torch.cat([p, 1 - p]), torch.cat([label, 1 - label]), bins),
        "pairs": len(label),
        "ties": int((~decided).sum()),
    }


def rating_metrics(r: Tensor, rating: Tensor, bins: int = 10) -> dict:
    """accuracy of σ(r) > 0.5 against rating > 0.5 (ratings of 0.5 excluded), log_loss, ece, ratings."""
    metrics = pair_metrics(r, torch.zeros_like(r), rating, bins)
    p, y = torch.sigmoid(r.double()), rating.double()
    metrics["ece"] = expected_calibration_error(p, y, bins)
    metrics["ratings"] = metrics.pop("pairs")
    del metrics["ties"]
    return metrics


# ---------------------------------------------------------------------------------------------- fit


@dataclass
class FitSettings:
    epochs: int = 20  # passes over the training pairs (and ratings)
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    batch_size: int = 64  # pairs (and ratings) per step
    holdout: float = 0.1  # fraction of prompts held out for early stopping and the reported metrics
    patience: int = 3  # stop after this many epochs without a lower held-out loss (0 = never stop early)
    seed: int = 0  # seeds the split, the order and the head's initialisation


@dataclass
class FitResult:
    metrics: dict  # {"train": {...}, "heldout": {...}} with "pairs" / "ratings" metric dicts
    best_epoch: int
    history: list = field(default_factory=list)  # per epoch: {"epoch", "train_loss", "heldout_loss"}


def _loss(head: nn.Module, pairs: PairData | None, ratings: RatingData | None) -> Tensor:
    """Mean BT loss of the pairs + mean rating loss of the ratings (each present part counts once)."""
    total = torch.zeros(())
    if pairs is not None and len(pairs):
        total = total + bradley_terry_nll(head(pairs.w), head(pairs.l), pairs.label).mean()
    if ratings is not None and len(ratings):
        total = total + rating_nll(head(ratings.x), ratings.rating).mean()
    return total


@torch.no_grad()
def evaluate(head: nn.Module, pairs: PairData | None, ratings: RatingData | None) -> dict:
    out = {}
    if pairs is not None and len(pairs):
        out["pairs"] = pair_metrics(head(pairs.w), head(pairs.l), pairs.label)
    if ratings is not None and len(ratings):
        out["ratings"] = rating_metrics(head(ratings.x), ratings.rating)
    return out


def _batches(n: int, steps: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """`steps` index batches over a shuffled range(n), cycling when n is the shorter of the two data sets."""
    if n == 0:
        return [None] * steps
    order = torch.randperm(n, generator=generator).repeat(math.ceil(steps * batch_size / n) + 1)
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


def fit(head: nn.Module, pairs: PairData | None, ratings: RatingData | None, settings: FitSettings,
        on_epoch: Callable[[dict], None] | None = None) -> FitResult:
    """Fit `head` in place on pairs and/or ratings; keeps the weights of the epoch with the lowest held-out
    loss, the initial weights (epoch 0) included (the last epoch when nothing is held out)."""
    held = heldout_groups(torch.cat([d.group for d in (pairs, ratings) if d is not None]), settings.holdout, settings.seed)
    (train_p, held_p), (train_r, held_r) = split(pairs, held), split(ratings, held)
    has_heldout = bool((held_p and len(held_p)) or (held_r and len(held_r)))
    n_p, n_r = len(train_p) if train_p else 0, len(train_r) if train_r else 0
    if n_p + n_r == 0:
        raise ValueError("fit: no training pairs or ratings")
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(settings.seed)
    steps = math.ceil(max(n_p, n_r) / settings.batch_size)
    best, best_epoch, since_best, history = math.inf, 0, 0, []
    if has_heldout:  # epoch 0 competes too: a head that starts from a prior may already be at its best
        head.eval()
        with torch.no_grad():
            best = _loss(head, held_p, held_r).item()
    best_state = copy.deepcopy(head.state_dict())
    for epoch in range(1, settings.epochs + 1):
        head.train()
        running = 0.0
        for ip, ir in zip(_batches(n_p, steps, settings.batch_size, generator), _batches(n_r, steps, settings.batch_size, generator)):
            loss = _loss(head, train_p.take(ip) if ip is not None else None, train_r.take(ir) if ir is not None else None)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running += loss.item() / steps
        head.eval()
        with torch.no_grad():
            held_loss = _loss(head, held_p, held_r).item() if has_heldout else math.nan
        history.append({"epoch": epoch, "train_loss": running, "heldout_loss": held_loss})
        if on_epoch:
            on_epoch(history[-1])
        if not has_heldout or held_loss < best:
            best, best_epoch, since_best = held_loss, epoch, 0
            best_state = copy.deepcopy(head.state_dict())
        else:
            since_best += 1
            if settings.patience and since_best >= settings.patience:
                break
    head.load_state_dict(best_state)
    head.eval()
    metrics = {"train": evaluate(head, train_p, train_r), "heldout": evaluate(head, held_p, held_r)}
    return FitResult(metrics, best_epoch, history)

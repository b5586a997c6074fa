"""Diversity within each prompt's group of samples: the measure (mean pairwise distance per prompt) and the
bonus that online reward RL adds to each sample's reward for being far from its group (`objective.diversity`,
the group-diversity idea of GDPO / GFlowNet-style diversity seeking, applied to GRPO / DiffusionNFT rewards).

Embeddings are [B, D] rows; `groups` [B] says which prompt (group) each row belongs to. Distances are
Euclidean. Samples are embedded by the reward model when it offers `embed(samples)`, else as their
flattened model-space sample (latent, pixels or motion features, padded frames zeroed); either way each row
is L2-normalised first (`unit_rows`), so distances lie in [0, 2] whatever the model's scale.
"""

from __future__ import annotations

import torch
from torch import Tensor


def unit_rows(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """[B, ...] -> [B, D]: flattened (elements outside `mask` zeroed), float32, each row of length 1."""
    x = x.float() if mask is None else x.float() * mask.to(x.device, torch.float32).expand_as(x)
    flat = x.reshape(x.shape[0], -1)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _same_group_distances(embeddings: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise distances [B, B] and the mask of pairs (i ≠ j) that share a group."""
    e = torch.as_tensor(embeddings).float()
    g = torch.as_tensor(groups).reshape(-1).to(e.device)
    dist = torch.cdist(e[None], e[None])[0]
    same = (g[:, None] == g[None, :]) & ~torch.eye(len(g), dtype=torch.bool, device=e.device)
    return dist, same


def distance_to_group(embeddings: Tensor, groups: Tensor) -> Tensor:
    """Each sample's mean distance to the other samples of its group, [B]; 0 for a sample alone in its group."""
    dist, same = _same_group_distances(embeddings, groups)
    n = same.sum(dim=1)
    return (dist * same).sum(dim=1) / n.clamp_min(1)


def diversity_bonus(embeddings: Tensor, groups: Tensor, weight: float) -> Tensor:
    """The reward bonus [B] = weight × the sample's mean distance to the other samples of its prompt's group,
    added to each reward before the group normalisation: among equally rewarded samples, the ones unlike
    their siblings get the positive advantages."""
    return weight * distance_to_group(embeddings, groups)


def mean_pairwise_distance(embeddings, groups) -> Tensor:
    """The diversity of each prompt's samples: mean distance over all pairs (i ≠ j) within the group, [G] in
    the order of the sorted distinct group ids, numbers or strings (groups of one sample give NaN). Embeddings [B, D] as a tensor
    or array (image: CLIP / learned-reward embeddings; motion: T2M evaluator embeddings, where
    motion.metrics.multimodality estimates the same quantity from random pairs)."""
    labels = groups.reshape(-1).tolist() if hasattr(groups, "tolist") else list(groups)
    order = sorted(set(labels))
    g = torch.tensor([order.index(x) for x in labels])  # any sortable ids: numbers, prompts
    dist, same = _same_group_distances(embeddings, g)
    g = g.to(dist.device)
    out = []
    for gid in torch.unique(g):
        rows = g == gid
        pairs = same[rows][:, rows]
        out.append(dist[rows][:, rows][pairs].mean() if pairs.any() else torch.tensor(float("nan")))
    return torch.stack(out)

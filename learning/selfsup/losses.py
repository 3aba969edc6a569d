"""Losses for label-free pretraining that lightly does not ship (lightly 1.6 has no triplet loss).

SimCLR's NT-Xent and BYOL's negative cosine similarity come from ``lightly.loss``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def pairwise_distances(embeddings: Tensor) -> Tensor:
    """Euclidean distances (B, D) -> (B, B), with a zero, finite-gradient diagonal.

    sqrt has an infinite derivative at 0, so exact zeros (the diagonal, duplicates) get distance 0
    without passing through sqrt.
    """
    sq = embeddings.pow(2).sum(dim=1)
    d2 = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * embeddings @ embeddings.T).clamp_min(0.0)
    zero = d2 <= 0.0
    return torch.sqrt(d2 + zero.to(d2.dtype) * 1e-16) * (~zero).to(d2.dtype)


def triplet_semihard_loss(embeddings: Tensor, labels: Tensor, margin: float = 1.0) -> Tensor:
    """Triplet loss with online semi-hard negative mining.

    Schroff, Kalenichenko & Philbin, "FaceNet: A Unified Embedding for Face Recognition and
    Clustering", CVPR 2015, Sec. 3.2: "we use all anchor-positive pairs in a mini-batch while still
    selecting the hard negatives", choosing negatives that are "further away from the anchor than the
    positive exemplar, but still hard because the squared distance is close to the anchor-positive
    distance ... these negatives lie inside the margin alpha".

    Mining rule as in TensorFlow Addons' ``TripletSemiHardLoss`` (which the reference method used, with
    margin 0.5 on L2-normalised embeddings): for every anchor-positive pair (a, p), the negative is the
    closest n with d(a, n) > d(a, p); if there is none, the farthest negative of a. The loss is
    ``mean over (a, p) of max(0, margin + d(a, p) - d(a, n))`` with Euclidean (not squared) distances.
    Anchors without any negative in the batch are left out.

    Args:
        embeddings: (B, D); usually L2-normalised.
        labels: (B,) integer identities; for instance discrimination the index of the source image,
            so the two views of one cell share a label.
        margin: alpha.

    Returns:
        scalar loss (0 when the batch has no anchor-positive pair with a negative).
    """
    if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(
            f"need (B, D) embeddings and (B,) labels, got {tuple(embeddings.shape)}, {tuple(labels.shape)}"
        )
    b = embeddings.shape[0]
    dist = pairwise_distances(embeddings)  # (B, B)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)  # (B, B)
    eye = torch.eye(b, dtype=torch.bool, device=embeddings.device)
    negative = ~same
    n_neg = negative.sum(dim=1)  # (B,)
    positive = same & ~eye & (n_neg > 0).unsqueeze(1)  # (B, B) anchor-positive pairs that count
    if not bool(positive.any()):
        return embeddings.sum() * 0.0

    # Per anchor, negative distances in ascending order, non-negatives pushed to +inf at the end.
    inf = torch.finfo(dist.dtype).max
    neg_sorted, _ = torch.where(negative, dist, torch.full_like(dist, inf)).sort(dim=1)  # (B, B)
    # (B, B) index of the first negative strictly farther than the positive, per anchor row.
    first = torch.searchsorted(neg_sorted.detach().contiguous(), dist.detach().contiguous(), right=True)
    has_semi = first < n_neg.unsqueeze(1)  # (B, B)
    semi = neg_sorted.gather(1, first.clamp_max(b - 1))  # (B, B): d(a, n_semi) for pair (a, p)
    farthest = neg_sorted.gather(1, (n_neg - 1).clamp_min(0).unsqueeze(1))  # (B, 1)
    d_an = torch.where(has_semi, semi, farthest)  # (B, B)

    loss = (margin + dist - d_an).clamp_min(0.0)  # (B, B), meaningful where ``positive``
    return loss[positive].mean()


class TripletSemiHardLoss(nn.Module):
    """Module form of :func:`triplet_semihard_loss`: ``loss(embeddings (B, D), labels (B,)) -> scalar``."""

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return triplet_semihard_loss(embeddings, labels, self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"

"""Task heads on top of a (B, D) embedding: cell type, and one softmax per morphological attribute.

The attribute head follows the WBCAtt baseline (Tsutsui, Pang & Wen, "WBCAtt: A White Blood Cell Dataset
Annotated with Detailed Morphological Attributes", NeurIPS 2023 Datasets and Benchmarks): "one softmax
head per attribute on a CNN". Attributes are missing for most cells outside WBCAtt, so targets use
``ignore_index`` and an attribute without any label in the batch adds nothing to the loss.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CellTypeHead(nn.Module):
    """Dropout + linear layer: (B, in_features) -> (B, num_classes) logits."""

    def __init__(self, in_features: int, num_classes: int, *, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(x))


class MultiAttributeHead(nn.Module):
    """One linear head per attribute.

    Args:
        in_features: embedding size D.
        schema: attribute name -> number of values, e.g. ``{"cell_size": 2, "nucleus_shape": 6}``. The
            order of the mapping is the column order of the (B, A) target tensor.
        drop_rate: dropout on the shared input.

    ``forward`` maps (B, D) to a dict attribute -> (B, n_values) logits.
    """

    def __init__(self, in_features: int, schema: Mapping[str, int], *, drop_rate: float = 0.0) -> None:
        super().__init__()
        if not schema:
            raise ValueError("schema needs at least one attribute")
        bad = {k: v for k, v in schema.items() if v < 2}
        if bad:
            raise ValueError(f"every attribute needs at least two values: {bad}")
        self.schema = dict(schema)
        self.drop = nn.Dropout(drop_rate)
        self.heads = nn.ModuleDict({name: nn.Linear(in_features, n) for name, n in schema.items()})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.drop(x)
        return {name: head(x) for name, head in self.heads.items()}


def multi_attribute_loss(logits: Mapping[str, Tensor], targets: Tensor, *, ignore_index: int = -1) -> Tensor:
    """Mean cross-entropy over the attributes that have at least one label in the batch.

    Args:
        logits: attribute -> (B, n_values), in the schema order (as :class:`MultiAttributeHead` returns).
        targets: (B, A) long tensor of value indices, ``ignore_index`` where the attribute is unknown.

    Returns:
        scalar loss; zero (still differentiable) when the batch has no attribute label at all.
    """
    if targets.ndim != 2 or targets.shape[1] != len(logits):
        raise ValueError(f"targets must be (B, {len(logits)}), got {tuple(targets.shape)}")
    losses = []
    for j, out in enumerate(logits.values()):
        t = targets[:, j]
        if bool((t != ignore_index).any()):
            losses.append(F.cross_entropy(out, t, ignore_index=ignore_index))
    if not losses:
        return sum(out.sum() for out in logits.values()) * 0.0  # type: ignore[return-value]
    return torch.stack(losses).mean()

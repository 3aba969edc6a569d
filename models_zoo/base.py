"""The contract every backbone in the zoo honours (after timm's ``forward_features`` / ``forward_head``).

Input convention: ``x`` is a float tensor of shape (B, 3, H, W) with values in [0, 1] (RGB). Each
backbone normalises with the statistics its weights were trained with (``pretrained_cfg["mean"]`` and
``["std"]``) inside ``forward``, so data pipelines never need to know which model they feed.

- ``forward_feature_map(x)`` -> (B, num_features, h, w), the last convolutional map (for saliency).
- ``forward_features(x)`` -> (B, num_features), the globally average-pooled embedding.
- ``forward_head(features, pre_logits=False)`` -> (B, num_classes) logits; with ``pre_logits=True``
  the (B, num_features) input of the classifier (after dropout). As in timm, it takes the output of
  ``forward_features``, not the image.
- ``forward(x) = forward_head(forward_features(x))``; with ``num_classes == 0`` this is the embedding.
- ``reset_classifier(n)`` replaces the classifier by a fresh ``Linear(num_features, n)`` (``n == 0``:
  identity).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """Base class: a convolutional trunk, global average pooling, dropout and a linear classifier.

    Subclasses set up their layers, call ``super().__init__`` first and implement :meth:`_trunk`,
    which maps the normalised image (B, 3, H, W) to a feature map (B, num_features, h, w).
    """

    num_features: int
    num_classes: int
    pretrained_cfg: dict[str, Any]
    pixel_mean: Tensor
    pixel_std: Tensor

    def __init__(
        self,
        num_features: int,
        *,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        drop_rate: float = 0.0,
        pretrained_cfg: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.num_classes = 0
        self.pretrained_cfg = {"mean": tuple(mean), "std": tuple(std), **(pretrained_cfg or {})}
        # Not persistent: they follow from the model name, and state dicts stay torchvision-compatible.
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.head_drop = nn.Dropout(drop_rate)
        self.head: nn.Module = nn.Identity()

    def _trunk(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def normalize(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 3, H, W) standardised with the model's pixel statistics."""
        return (x - self.pixel_mean) / self.pixel_std

    def forward_feature_map(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, num_features, h, w)."""
        return self._trunk(self.normalize(x))

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, num_features) pooled embedding (not L2-normalised)."""
        return self.forward_feature_map(x).mean(dim=(2, 3))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, num_features) -> (B, num_classes) logits, or (B, num_features) when ``pre_logits``."""
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised ``Linear(num_features, num_classes)``."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = num_classes
        device = self.pixel_mean.device
        self.head = nn.Linear(self.num_features, num_classes).to(device) if num_classes > 0 else nn.Identity()

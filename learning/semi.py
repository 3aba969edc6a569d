"""The pieces of FixMatch-style semi-supervised fine-tuning (Sohn et al., "FixMatch: Simplifying
Semi-Supervised Learning with Consistency and Confidence", NeurIPS 2020).

For every unlabelled cell in a step, the model's prediction on a weakly augmented view becomes a hard
pseudo-label when its confidence reaches ``threshold``; the prediction on a strongly augmented view of
the same cell is then trained towards it with cross-entropy. Cells below the threshold add nothing,
but the loss is still divided by the whole unlabelled batch (as in the paper), so its weight grows as
the model becomes confident. :func:`learning.finetune.finetune` runs this next to the supervised
cross-entropy when it is given unlabelled cells; the functions here are its testable parts.

Views on blood smears: the weak one is geometric only (the dihedral group, small zoom and shift: a
cell's class does not depend on its orientation), the strong one adds the contrastive colour jitter,
grey-scale and a wider zoom (:data:`learning.transforms.AUGMENT_PRESETS` ``"strong"``) plus Cutout
(DeVries & Taylor 2017), the erasing FixMatch adds after RandAugment.

Never imports Django.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from learning.transforms import AugmentConfig, BloodSmearAugment, augment_config
from models_zoo.heads import multi_attribute_loss


@dataclass(frozen=True)
class SemiSupervised:
    """Settings of the unlabelled term of :func:`learning.finetune.finetune`.

    Attributes:
        threshold: confidence (top softmax probability on the weak view) a pseudo-label needs.
        lambda_u: weight of the consistency loss next to the supervised cross-entropy.
        ratio: unlabelled cells per labelled cell in a step (FixMatch's mu; the paper uses 7 on GPUs,
            1-2 keeps a CPU step affordable).
        weak, strong: augmentation presets or configs of the two views.
        cutout: side of the square erased from each strong view, as a fraction of the image side
            (0 for none).
    """

    threshold: float = 0.95
    lambda_u: float = 1.0
    ratio: float = 1.0
    weak: str | AugmentConfig = "geometric"
    strong: str | AugmentConfig = "strong"
    cutout: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.lambda_u < 0:
            raise ValueError(f"lambda_u must be >= 0, got {self.lambda_u}")
        if self.ratio <= 0:
            raise ValueError(f"ratio must be > 0, got {self.ratio}")
        if not 0.0 <= self.cutout < 1.0:
            raise ValueError(f"cutout must be in [0, 1), got {self.cutout}")
        augment_config(self.weak), augment_config(self.strong)  # unknown preset names fail here

    def to_dict(self) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            "lambda_u": self.lambda_u,
            "ratio": self.ratio,
            "weak": self.weak if isinstance(self.weak, str) else self.weak.to_dict(),
            "strong": self.strong if isinstance(self.strong, str) else self.strong.to_dict(),
            "cutout": self.cutout,
        }


def pseudo_labels(logits: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Hard pseudo-labels of (B, C) logits and which of them count: ``(argmax, max softmax >= threshold)``.

    Returns:
        (B,) long class indices and (B,) bool mask; no gradient flows through either.
    """
    probs = torch.softmax(logits.detach().float(), dim=1)
    confidence, targets = probs.max(dim=1)
    return targets, confidence >= threshold


def consistency_loss(strong_logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """FixMatch's unlabelled loss: cross-entropy of the strong views against the pseudo-labels, masked,
    averaged over the whole unlabelled batch (masked-out cells count as zeros)."""
    if strong_logits.shape[0] != targets.shape[0] or targets.shape != mask.shape:
        raise ValueError("strong_logits (B, C), targets (B,) and mask (B,) must agree on B")
    per_cell = F.cross_entropy(strong_logits, targets, reduction="none")
    return (per_cell * mask.to(per_cell.dtype)).mean()


def cutout(
    x: Tensor, fraction: float, *, generator: torch.Generator | None = None, fill: float = 0.5
) -> Tensor:
    """Erase one random square of side ``fraction * min(H, W)`` per image (it may cross the border).

    Args:
        x: (B, 3, H, W) float in [0, 1]; not modified.
        fill: value of the erased pixels (mid-grey).
    """
    if fraction <= 0:
        return x
    b, _c, h, w = x.shape
    side = max(1, round(fraction * min(h, w)))
    cy = torch.randint(0, h, (b, 1, 1), device=x.device, generator=generator)
    cx = torch.randint(0, w, (b, 1, 1), device=x.device, generator=generator)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    half = side // 2
    inside = ((ys - cy).abs() <= half) & ((xs - cx).abs() <= half)  # (B, H, W)
    return torch.where(inside.unsqueeze(1), torch.full_like(x, fill), x)


class TwoViews:
    """Weak and strong views of an unlabelled batch, each from its own augmenter, sharing a generator."""

    def __init__(self, config: SemiSupervised, generator: torch.Generator | None) -> None:
        self.weak = BloodSmearAugment(config.weak, generator=generator)
        self.strong = BloodSmearAugment(config.strong, generator=generator)
        self.cutout = config.cutout
        self.generator = generator

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        strong = cutout(self.strong(x), self.cutout, generator=self.generator)
        return self.weak(x), strong


def attribute_loss(logits: Mapping[str, Tensor], targets: Tensor, *, ignore_index: int = -1) -> Tensor:
    """Masked multi-attribute cross-entropy (:func:`models_zoo.heads.multi_attribute_loss`): a missing
    attribute (``ignore_index``) adds nothing, an attribute without any label in the batch is left out
    of the mean, and a batch without any attribute label gives a zero that still back-propagates."""
    return multi_attribute_loss(logits, targets, ignore_index=ignore_index)


__all__ = ["SemiSupervised", "TwoViews", "attribute_loss", "consistency_loss", "cutout", "pseudo_labels"]

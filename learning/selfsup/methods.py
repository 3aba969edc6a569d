"""Label-free pretraining methods, composed lightly-style: backbone + head + loss at one place.

Every method takes the two augmented views of a batch, (B, 3, H, W) each, and returns a scalar loss;
only ``backbone`` is kept as the encoder afterwards (heads are thrown away, as all three papers do).

- ``triplet``: instance discrimination with a semi-hard triplet loss on the L2-normalised backbone
  embedding, the reference method's stage 1 (two views of one cell are positives, every other cell of
  the batch a negative). Schroff et al., FaceNet, CVPR 2015.
- ``simclr``: Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of Visual
  Representations", ICML 2020: projection MLP + NT-Xent (lightly's ``SimCLRProjectionHead``,
  ``NTXentLoss``).
- ``byol``: Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020: online network with a predictor,
  momentum target network, negative cosine similarity; momentum follows a cosine schedule 0.99 -> 1.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from lightly.loss import NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead, SimCLRProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn

from learning.selfsup.losses import TripletSemiHardLoss
from models_zoo import Backbone


class SSLMethod(nn.Module):
    """Base class. Subclasses define ``name``, ``default_lr`` and :meth:`training_loss`."""

    name: ClassVar[str]
    default_lr: ClassVar[float]

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def training_loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        """Two views (B, 3, H, W) of the same B cells -> scalar loss."""
        raise NotImplementedError

    def on_step_end(self, progress: float) -> None:
        """Called after each optimiser step with training progress in [0, 1] (momentum updates)."""


class TripletInstance(SSLMethod):
    """Instance discrimination with a semi-hard triplet loss (the reference method's pretraining).

    The embedding is the backbone's pooled feature, dropout (0.2 in the reference), then L2
    normalisation: (B, num_features) on the unit sphere. The 2B views of a batch carry labels
    ``[0..B-1, 0..B-1]``.

    Args:
        backbone: encoder from ``models_zoo``.
        margin: triplet margin (0.5 in the reference configuration).
        drop_rate: dropout before normalisation.
    """

    name = "triplet"
    default_lr = 1e-4  # the reference used Adam 1e-5 from ImageNet; from scratch this is too slow

    def __init__(self, backbone: Backbone, *, margin: float = 0.5, drop_rate: float = 0.2) -> None:
        super().__init__(backbone)
        self.drop = nn.Dropout(drop_rate)
        self.criterion = TripletSemiHardLoss(margin)

    def embed(self, x: Tensor) -> Tensor:
        return F.normalize(self.drop(self.backbone.forward_features(x)), dim=1)

    def training_loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        b = x0.shape[0]
        z = self.embed(torch.cat((x0, x1)))  # (2B, D): one pass, batch norm sees both views
        labels = torch.arange(b, device=z.device).repeat(2)  # (2B,)
        return self.criterion(z, labels)


class SimCLR(SSLMethod):
    """SimCLR: backbone -> 2-layer projection MLP -> NT-Xent over the 2B views.

    Args:
        backbone: encoder; its ``num_features`` is the projection input.
        hidden_dim, output_dim: projection MLP sizes (lightly defaults 2048 / 128; 512 / 128 suit CPUs).
        temperature: NT-Xent temperature tau.
    """

    name = "simclr"
    default_lr = 1e-3

    def __init__(
        self, backbone: Backbone, *, hidden_dim: int = 512, output_dim: int = 128, temperature: float = 0.5
    ) -> None:
        super().__init__(backbone)
        self.projection_head = SimCLRProjectionHead(backbone.num_features, hidden_dim, output_dim)
        self.criterion = NTXentLoss(temperature=temperature)

    def training_loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        b = x0.shape[0]
        z = self.projection_head(self.backbone.forward_features(torch.cat((x0, x1))))  # (2B, output_dim)
        return self.criterion(z[:b], z[b:])


class BYOL(SSLMethod):
    """BYOL: online backbone + projector + predictor regress the momentum target's projection.

    Args:
        backbone: encoder.
        hidden_dim, output_dim: projector / predictor sizes (paper: 4096 / 256).
        momentum: start of the cosine momentum schedule (ends at 1.0).
    """

    name = "byol"
    default_lr = 1e-3

    def __init__(
        self, backbone: Backbone, *, hidden_dim: int = 1024, output_dim: int = 256, momentum: float = 0.99
    ) -> None:
        super().__init__(backbone)
        self.projection_head = BYOLProjectionHead(backbone.num_features, hidden_dim, output_dim)
        self.prediction_head = BYOLPredictionHead(output_dim, hidden_dim, output_dim)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.momentum = momentum
        self.criterion = NegativeCosineSimilarity()

    def training_loss(self, x0: Tensor, x1: Tensor) -> Tensor:
        b = x0.shape[0]
        x = torch.cat((x0, x1))
        p = self.prediction_head(self.projection_head(self.backbone.forward_features(x)))  # (2B, out)
        with torch.no_grad():
            z = self.projection_head_momentum(self.backbone_momentum.forward_features(x)).detach()
        # Symmetrised: view 0's prediction regresses view 1's target and vice versa.
        return 0.5 * (self.criterion(p[:b], z[b:]) + self.criterion(p[b:], z[:b]))

    def on_step_end(self, progress: float) -> None:
        m = cosine_schedule(int(progress * 10_000), 10_000, self.momentum, 1.0)
        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.projection_head, self.projection_head_momentum, m)


METHODS: dict[str, type[SSLMethod]] = {m.name: m for m in (TripletInstance, SimCLR, BYOL)}


def create_method(name: str, backbone: Backbone, **kwargs: Any) -> SSLMethod:
    """Wrap ``backbone`` in the pretraining method ``name`` (one of :data:`METHODS`)."""
    try:
        cls = METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}") from None
    return cls(backbone, **kwargs)

"""Label-free pretraining of ``models_zoo`` backbones: semi-hard triplet instance discrimination (the
reference method), SimCLR and BYOL.

Example::

    from learning.selfsup import PretrainConfig, load_encoder, pretrain
    config = PretrainConfig(method="triplet", backbone="lightcnn", image_size=64, minutes=10, batch_size=128)
    result = pretrain(records, config, out="runs/triplet.pt")
    encoder, meta = load_encoder(result["checkpoint"])

Command line: ``python -m learning.selfsup --method simclr --minutes 10 --out runs/simclr.pt``.
"""

from learning.selfsup.config import PretrainConfig
from learning.selfsup.losses import TripletSemiHardLoss, triplet_semihard_loss
from learning.selfsup.methods import BYOL, METHODS, SimCLR, SSLMethod, TripletInstance, create_method
from learning.selfsup.train import load_checkpoint, load_encoder, pretrain

__all__ = [
    "BYOL",
    "METHODS",
    "PretrainConfig",
    "SSLMethod",
    "SimCLR",
    "TripletInstance",
    "TripletSemiHardLoss",
    "create_method",
    "load_checkpoint",
    "load_encoder",
    "pretrain",
    "triplet_semihard_loss",
]

"""What the training loops of the engine share (label-free pretraining and supervised fine-tuning).

Both pick their device the same way and follow the same learning-rate schedule: a linear warm-up over
the first ``warmup`` fraction of the budget, then a cosine decay to zero (or a constant rate).
"""

from __future__ import annotations

import math
from typing import Final

import torch

SCHEDULES: Final[tuple[str, ...]] = ("cosine", "constant")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else CUDA when present, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def lr_factor(fraction: float, *, warmup: float, schedule: str = "cosine") -> float:
    """Multiplier of the base learning rate at ``fraction`` (in [0, 1]) of the budget.

    A factor of at least 0.01 during warm-up, so the very first step already moves the weights.
    """
    if warmup > 0 and fraction < warmup:
        return max(fraction / warmup, 0.01)
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(fraction, 1.0)))


__all__ = ["SCHEDULES", "lr_factor", "resolve_device"]

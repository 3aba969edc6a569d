"""The pieces both training loops share: device choice and the learning-rate schedule."""

from __future__ import annotations

import pytest
import torch

from learning.training import lr_factor, resolve_device


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_lr_factor_warms_up_then_decays() -> None:
    assert lr_factor(0.0, warmup=0.1) == 0.01  # never zero: the first step already moves the weights
    assert lr_factor(0.05, warmup=0.1) == pytest.approx(0.5)
    assert lr_factor(0.1, warmup=0.1) == pytest.approx(
        0.5 * (1 + torch.cos(torch.tensor(0.1 * torch.pi)).item())
    )
    assert lr_factor(0.5, warmup=0.0) == pytest.approx(0.5)
    assert lr_factor(1.0, warmup=0.1) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(2.0, warmup=0.1) == pytest.approx(0.0, abs=1e-12)  # past the budget: stays at zero
    assert lr_factor(0.7, warmup=0.1, schedule="constant") == 1.0
    assert lr_factor(0.05, warmup=0.1, schedule="constant") == pytest.approx(0.5)

"""What the training loops of the engine share (label-free pretraining and supervised fine-tuning).

Both pick their device the same way, follow the same learning-rate schedule (a linear warm-up over
the first ``warmup`` fraction of the budget, then a cosine decay to zero, or a constant rate), and run
under the same budget: ``epochs`` (a step target, resumed steps included), ``minutes`` (wall-clock
time of the call, data loading included) or both, whichever ends first, possibly mid-epoch.
:func:`run_budgeted` is that loop; the callers only say what one step and the end of an epoch do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import torch
from torch import Tensor

SCHEDULES: Final[tuple[str, ...]] = ("cosine", "constant")
ProgressCallback = Callable[[float, str], None]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else CUDA when present, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_generator(device: torch.device, seed: int) -> torch.Generator:
    """A seeded generator for augmentation on ``device``: on CUDA the batches are augmented there and
    need a CUDA generator; anything else draws on the CPU."""
    return torch.Generator(device=device if device.type == "cuda" else torch.device("cpu")).manual_seed(seed)


def lr_factor(fraction: float, *, warmup: float, schedule: str = "cosine") -> float:
    """Multiplier of the base learning rate at ``fraction`` (in [0, 1]) of the budget.

    A factor of at least 0.01 during warm-up, so the very first step already moves the weights.
    """
    if warmup > 0 and fraction < warmup:
        return max(fraction / warmup, 0.01)
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(fraction, 1.0)))


def scale_learning_rates(optimizer: torch.optim.Optimizer, base_lrs: Sequence[float], factor: float) -> None:
    """Set every parameter group's rate to its base rate times ``factor`` (one base rate per group)."""
    for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
        group["lr"] = base * factor


def backward_step(optimizer: torch.optim.Optimizer, loss: Tensor, *, step: int) -> float:
    """One optimisation step on ``loss``; returns its value. A non-finite loss stops training at once
    (``step`` names it in the error) instead of silently ruining the weights."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()} at step {step}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def check_budget(epochs: float | None, minutes: float | None) -> None:
    """Raise ValueError unless at least one of ``epochs`` and ``minutes`` is given."""
    if epochs is None and minutes is None:
        raise ValueError("give epochs, minutes or both")


class TrainingBudget:
    """Steps taken against an epoch target and/or a wall-clock budget.

    Args:
        epochs: total epochs to reach, steps already done included (may be fractional).
        minutes: wall-clock budget counted from ``started``.
        steps_per_epoch: optimisation steps in one epoch (at least 1).
        steps_done: steps taken before (a resumed run).
        started: ``time.perf_counter()`` when the call began, default now.
    """

    def __init__(
        self,
        *,
        epochs: float | None,
        minutes: float | None,
        steps_per_epoch: int,
        steps_done: int = 0,
        started: float | None = None,
    ) -> None:
        check_budget(epochs, minutes)
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.steps_per_epoch = steps_per_epoch
        self.steps_done = steps_done
        self.target_steps = round(epochs * steps_per_epoch) if epochs is not None else None
        self.budget_s = minutes * 60.0 if minutes is not None else None
        self.started = time.perf_counter() if started is None else started

    def elapsed(self) -> float:
        """Seconds since ``started``."""
        return time.perf_counter() - self.started

    @property
    def epochs_done(self) -> float:
        return self.steps_done / self.steps_per_epoch

    def fraction(self) -> float:
        """How much of the budget is used, in [0, 1]: the larger of the step and the time fractions."""
        parts = [0.0]
        if self.target_steps is not None:
            parts.append(self.steps_done / max(self.target_steps, 1))
        if self.budget_s is not None:
            parts.append(self.elapsed() / self.budget_s)
        return min(max(parts), 1.0)

    def stop_reason(self) -> str | None:
        """``"epochs"`` or ``"minutes"`` once that budget is used up, else None."""
        if self.target_steps is not None and self.steps_done >= self.target_steps:
            return "epochs"
        if self.budget_s is not None and self.elapsed() >= self.budget_s:
            return "minutes"
        return None


class ProgressReporter:
    """Passes ``(fraction of the budget, message)`` to ``callback``, at most every ``interval`` seconds
    unless forced (a job row written on every step of a fast model would cost more than the step)."""

    def __init__(self, callback: ProgressCallback | None, budget: TrainingBudget, *, interval: float) -> None:
        self.callback = callback
        self.budget = budget
        self.interval = interval
        self._last = time.perf_counter()

    def __call__(self, message: str, *, force: bool = False) -> None:
        if self.callback is not None and (force or time.perf_counter() - self._last >= self.interval):
            self.callback(self.budget.fraction(), message)
            self._last = time.perf_counter()

    def finished(self, message: str) -> None:
        """The last report: fraction 1.0, whatever ended the run."""
        if self.callback is not None:
            self.callback(1.0, message)


@dataclass(frozen=True)
class EpochEnd:
    """A (possibly partial) epoch just ended: epochs done so far (rounded to 4 places), the mean loss
    of its steps, and the budget's elapsed seconds."""

    epoch: float
    loss: float
    seconds: float


def run_budgeted(
    budget: TrainingBudget,
    step: Callable[[int], float],
    *,
    start_epoch: Callable[[], None] | None = None,
    after_step: Callable[[float], None] | None = None,
    end_epoch: Callable[[EpochEnd], None] | None = None,
    report: ProgressReporter | None = None,
) -> str:
    """Train until the budget is used up; returns what stopped it (``"epochs"`` or ``"minutes"``).

    Each epoch calls ``start_epoch()`` (draw the epoch's order), then ``step(position)`` for the
    positions left in the epoch, from ``budget.steps_done % steps_per_epoch`` on, so a resumed run
    finishes its interrupted epoch first. ``step`` does one optimisation step and returns the loss;
    then the step is counted, ``after_step(loss)`` runs, ``report`` gets ``"epoch E, loss L"`` and the
    budget is checked. After each epoch, complete or cut short by the budget, ``end_epoch`` gets its
    :class:`EpochEnd`. Nothing runs when the budget is used up already.
    """
    stopped_by = budget.stop_reason()
    while stopped_by is None:
        if start_epoch is not None:
            start_epoch()
        losses: list[float] = []
        for position in range(budget.steps_done % budget.steps_per_epoch, budget.steps_per_epoch):
            loss = step(position)
            budget.steps_done += 1
            losses.append(loss)
            if after_step is not None:
                after_step(loss)
            if report is not None:
                report(f"epoch {budget.epochs_done:.2f}, loss {loss:.4f}")
            stopped_by = budget.stop_reason()
            if stopped_by is not None:
                break
        if end_epoch is not None:
            end_epoch(EpochEnd(round(budget.epochs_done, 4), sum(losses) / len(losses), budget.elapsed()))
    return stopped_by


__all__ = [
    "SCHEDULES",
    "EpochEnd",
    "ProgressCallback",
    "ProgressReporter",
    "TrainingBudget",
    "backward_step",
    "check_budget",
    "device_generator",
    "lr_factor",
    "resolve_device",
    "run_budgeted",
    "scale_learning_rates",
]

"""The pieces both training loops share: device choice, the learning-rate schedule, one optimisation
step and the budget loop (stops on epochs, on minutes, on whichever ends first; resumes mid-epoch;
throttles its progress reports), on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from learning import training
from learning.training import (
    ProgressReporter,
    TrainingBudget,
    backward_step,
    check_budget,
    device_generator,
    lr_factor,
    resolve_device,
    run_budgeted,
    scale_learning_rates,
)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_device_generator_is_seeded_and_on_the_right_device() -> None:
    cpu = torch.device("cpu")
    first, again = device_generator(cpu, 5), device_generator(cpu, 5)
    assert first.device == cpu
    assert torch.equal(torch.rand(3, generator=first), torch.rand(3, generator=again))
    if torch.cuda.is_available():
        assert device_generator(torch.device("cuda"), 5).device.type == "cuda"


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


# --- the budget loop ---------------------------------------------------------------------------------


class FakeClock:
    """``time.perf_counter`` for learning.training: moves only when a step says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(training.time, "perf_counter", fake)
    return fake


def run(budget: TrainingBudget, clock: FakeClock, *, seconds_per_step: float = 1.0) -> dict[str, Any]:
    """Drive run_budgeted with a step that takes ``seconds_per_step`` and records every callback."""
    seen: dict[str, Any] = {"positions": [], "epochs": [], "starts": 0, "after": [], "reports": []}

    def step(position: int) -> float:
        seen["positions"].append(position)
        clock.now += seconds_per_step
        return float(budget.steps_done)  # the loss: steps before this one

    def start_epoch() -> None:
        seen["starts"] += 1

    report = ProgressReporter(lambda f, m: seen["reports"].append((f, m)), budget, interval=0.0)
    seen["stopped_by"] = run_budgeted(
        budget,
        step,
        start_epoch=start_epoch,
        after_step=seen["after"].append,
        end_epoch=seen["epochs"].append,
        report=report,
    )
    return seen


def test_budget_needs_epochs_or_minutes() -> None:
    with pytest.raises(ValueError, match="epochs, minutes"):
        TrainingBudget(epochs=None, minutes=None, steps_per_epoch=3)
    with pytest.raises(ValueError, match="epochs, minutes"):
        check_budget(None, None)
    check_budget(1, None)
    check_budget(None, 0.5)


def test_loop_stops_on_epochs(clock: FakeClock) -> None:
    budget = TrainingBudget(epochs=2.5, minutes=None, steps_per_epoch=4)
    seen = run(budget, clock)
    assert seen["stopped_by"] == "epochs"
    assert budget.steps_done == 10 and budget.epochs_done == 2.5
    assert seen["positions"] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1] and seen["starts"] == 3
    assert seen["after"] == [float(i) for i in range(10)]
    assert [e.epoch for e in seen["epochs"]] == [1.0, 2.0, 2.5]  # the last one cut short
    assert [e.loss for e in seen["epochs"]] == [1.5, 5.5, 8.5]
    assert [e.seconds for e in seen["epochs"]] == [4.0, 8.0, 10.0]
    fractions = [f for f, _ in seen["reports"]]
    assert fractions == [i / 10 for i in range(1, 11)]
    assert seen["reports"][-1][1] == "epoch 2.50, loss 9.0000"


def test_loop_stops_on_minutes(clock: FakeClock) -> None:
    budget = TrainingBudget(epochs=None, minutes=0.1, steps_per_epoch=4)  # 6 s, a step takes 1 s
    seen = run(budget, clock)
    assert seen["stopped_by"] == "minutes" and budget.steps_done == 6
    assert [e.epoch for e in seen["epochs"]] == [1.0, 1.5]
    assert seen["reports"][-1][0] == 1.0 and budget.fraction() == 1.0


def test_whichever_budget_ends_first_stops(clock: FakeClock) -> None:
    by_time = TrainingBudget(epochs=100, minutes=0.05, steps_per_epoch=2)  # 3 s
    assert run(by_time, clock)["stopped_by"] == "minutes" and by_time.steps_done == 3
    by_steps = TrainingBudget(epochs=1, minutes=10, steps_per_epoch=2)
    assert run(by_steps, clock)["stopped_by"] == "epochs" and by_steps.steps_done == 2


def test_time_before_the_loop_counts(clock: FakeClock) -> None:
    started = clock.now
    clock.now += 5.0  # data loading, say
    budget = TrainingBudget(epochs=None, minutes=0.1, steps_per_epoch=10, started=started)
    assert run(budget, clock)["stopped_by"] == "minutes" and budget.steps_done == 1


def test_a_resumed_run_finishes_its_epoch_first(clock: FakeClock) -> None:
    budget = TrainingBudget(epochs=2, minutes=None, steps_per_epoch=4, steps_done=3)
    seen = run(budget, clock)
    assert seen["positions"] == [3, 0, 1, 2, 3] and budget.steps_done == 8
    assert [e.epoch for e in seen["epochs"]] == [1.0, 2.0]
    assert seen["reports"][0][0] == 4 / 8  # the fraction counts the resumed steps


def test_nothing_runs_when_the_budget_is_spent(clock: FakeClock) -> None:
    done = TrainingBudget(epochs=1, minutes=None, steps_per_epoch=4, steps_done=4)
    seen = run(done, clock)
    assert seen["stopped_by"] == "epochs" and seen["positions"] == [] and seen["epochs"] == []
    no_time = TrainingBudget(epochs=None, minutes=0.0, steps_per_epoch=4)
    assert run(no_time, clock)["stopped_by"] == "minutes" and no_time.steps_done == 0


def test_reports_are_throttled_unless_forced(clock: FakeClock) -> None:
    budget = TrainingBudget(epochs=1, minutes=None, steps_per_epoch=10)
    calls: list[tuple[float, str]] = []
    report = ProgressReporter(lambda f, m: calls.append((f, m)), budget, interval=2.0)
    report("start", force=True)
    for second in range(5):
        clock.now += 1.0
        budget.steps_done += 1
        report(f"step at {second + 1} s")
    report.finished("done")
    assert calls == [(0.0, "start"), (0.2, "step at 2 s"), (0.4, "step at 4 s"), (1.0, "done")]
    ProgressReporter(None, budget, interval=0.0)("nobody listens", force=True)  # no callback: no error


def test_backward_step_refuses_a_non_finite_loss() -> None:
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    assert backward_step(optimizer, (weight**2).sum(), step=0) == 2.0
    assert torch.equal(weight.detach(), torch.zeros(2))
    with pytest.raises(FloatingPointError, match="at step 7"):
        backward_step(optimizer, weight.sum() * float("nan"), step=7)
    scale_learning_rates(optimizer, [0.5], 0.1)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)

"""Every task and every job kind goes to a queue that a worker started by `make run` reads, and the encoder's
training (pretraining, fine-tuning, indexing) never shares a worker with the loop's retrains there.

The Makefile is read, not restated: a queue renamed there, or a task routed somewhere new, fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from config.celery import app
from jobs import dispatch
from jobs.models import Job
from jobs.routing import LOOP_QUEUE, QUEUES, SIDE_QUEUE, SWEEP_TASK, TRAIN_QUEUE, queue_for_kind

MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"


def _run_recipe() -> str:
    text = MAKEFILE.read_text()
    match = re.search(r"^run:.*?\n((?:\t.*\n|\s*\n)+)", text, flags=re.M)
    assert match, "no `run` target in the Makefile"
    return match.group(1).replace("\\\n", " ")


def _make_worker_default_queues() -> set[str]:
    match = re.search(r"^QUEUES \?= ([\w,]+)$", MAKEFILE.read_text(), flags=re.M)
    assert match, "no default QUEUES for `make worker` in the Makefile"
    return set(match.group(1).split(","))


def _workers_started_by_make_run() -> list[tuple[set[str], bool]]:
    """(queues, runs the beat) of each `celery worker` command in `make run`'s recipe."""
    workers = []
    for command in re.findall(r"celery -A config worker[^&;\n]*", _run_recipe()):
        queues = re.search(r"--queues=([\w,]+)", command)
        assert queues, f"a worker with no --queues reads only Celery's default: {command}"
        workers.append((set(queues.group(1).split(",")), " -B" in command))
    assert workers, "`make run` starts no worker"
    return workers


def _queue_celery_routes(task_name: str) -> str:
    route = app.amqp.router.route({}, task_name)
    return str(route["queue"].name)


def test_make_run_starts_workers_for_the_queues() -> None:
    workers = _workers_started_by_make_run()
    assert sum(beat for _, beat in workers) == 1, "exactly one worker runs the beat"


def test_every_job_kind_routes_to_a_queue_a_worker_reads() -> None:
    read = set().union(*(queues for queues, _ in _workers_started_by_make_run()))
    for kind in Job.Kind.values:
        assert queue_for_kind(kind) in read, f"jobs of kind {kind!r} would wait forever"


def test_every_registered_task_routes_to_a_queue_a_worker_reads() -> None:
    app.loader.import_default_modules()
    ours = [name for name in app.tasks if not name.startswith("celery.")]
    assert SWEEP_TASK in ours and "leukoloop.run_job" in ours
    read = set().union(*(queues for queues, _ in _workers_started_by_make_run()))
    for name in ours:
        assert _queue_celery_routes(name) in read, f"task {name} goes to a queue no worker reads"
    assert app.conf.task_default_queue in read


@pytest.mark.parametrize("entry", sorted(app.conf.beat_schedule))
def test_periodic_tasks_reach_the_worker_that_runs_the_beat(entry: str) -> None:
    """The bug this guards: the sweep was sent to a queue named `leukoloop` that no worker read."""
    task = app.conf.beat_schedule[entry]["task"]
    beat_queues = next(queues for queues, beat in _workers_started_by_make_run() if beat)
    assert _queue_celery_routes(task) in beat_queues


@pytest.mark.parametrize(
    ("kind", "queue"),
    [
        (Job.Kind.PRETRAIN, TRAIN_QUEUE),
        (Job.Kind.FINETUNE, TRAIN_QUEUE),
        (Job.Kind.EMBED, TRAIN_QUEUE),
        (Job.Kind.RETRAIN, LOOP_QUEUE),
        (Job.Kind.QUERY, LOOP_QUEUE),
        (Job.Kind.IMPORT, LOOP_QUEUE),
        (Job.Kind.EXPORT, SIDE_QUEUE),
        (Job.Kind.MAP, SIDE_QUEUE),
    ],
)
def test_training_goes_to_its_own_queue_and_dispatch_sends_it_there(
    kind: str, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert queue_for_kind(kind) == queue
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(
        dispatch.current_app, "send_task", lambda name, args, queue: sent.append((name, queue))
    )
    dispatch.send_job(7, kind)
    assert sent == [("leukoloop.run_job", queue)]


def test_no_worker_of_make_run_holds_a_retrain_behind_a_pretraining() -> None:
    """The bug this guards: every loop job shared one worker, so ten minutes of pretraining (or a
    fine-tuning) delayed the retrain after each submitted batch by as much."""
    for queues, _ in _workers_started_by_make_run():
        assert not (LOOP_QUEUE in queues and TRAIN_QUEUE in queues), queues
    assert any(queues == {TRAIN_QUEUE} for queues, _ in _workers_started_by_make_run())


def test_make_worker_reads_every_queue_by_default() -> None:
    assert _make_worker_default_queues() == set(QUEUES)

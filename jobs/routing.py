"""Which Celery queue each job kind and each task goes to: the one place that decides it.

The loop's jobs (import, pretrain, embed, retrain, query, fine-tune) share the ``loop`` queue; exports and
the dashboard's map run beside it on ``side``, so a minute of UMAP or a large export never holds up the
next batch. ``make run`` starts one worker per queue (a test reads the Makefile and fails if any task or
job kind routes to a queue no worker started there reads)."""

from __future__ import annotations

from typing import Any, Final

from jobs.models import Job

# Celery's own default queue name: a task sent without a route still reaches the loop's worker.
LOOP_QUEUE: Final = "celery"
SIDE_QUEUE: Final = "side"
QUEUES: Final = (LOOP_QUEUE, SIDE_QUEUE)

SIDE_KINDS: Final = frozenset({Job.Kind.EXPORT, Job.Kind.MAP})

RUN_JOB_TASK: Final = "leukoloop.run_job"
SWEEP_TASK: Final = "leukoloop.requeue_stale_jobs"

# ``run_job`` is sent with the queue of its job's kind (``queue_for_kind``), which overrides this table;
# the periodic stale-job sweep goes to the loop's queue, whose worker runs the beat (`make run`).
TASK_QUEUES: Final = {
    RUN_JOB_TASK: LOOP_QUEUE,
    SWEEP_TASK: LOOP_QUEUE,
}


def queue_for_kind(kind: str) -> str:
    return SIDE_QUEUE if kind in SIDE_KINDS else LOOP_QUEUE


def route_task(
    name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any
) -> dict[str, str]:
    """Celery's router (settings.CELERY_TASK_ROUTES): every task of ours has a queue a worker reads."""
    return {"queue": TASK_QUEUES.get(name, LOOP_QUEUE)}

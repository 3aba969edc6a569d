"""Which Celery queue each job kind and each task goes to: the one place that decides it.

Three queues, so that no long job holds up the next batch:

- ``celery`` (the loop): import, retrain and query, i.e. everything between a submitted batch and the
  next one, plus the periodic stale-job sweep;
- ``train``: the encoder's training and what follows it, label-free pretraining, fine-tuning and the
  embedding and indexing of every cell with a new encoder (minutes to hours on a CPU);
- ``side``: exports, the label check, the dashboard's map and shift report (a minute of UMAP, a
  large export), the attribute heads fitted on the measurements after each batch (half a minute) and
  the measuring of every cell those heads need (minutes, once per project).

``make run`` starts one worker per queue (a test reads the Makefile and fails if any task or job kind
routes to a queue no worker started there reads)."""

from __future__ import annotations

from typing import Any, Final

from jobs.models import Job

# Celery's own default queue name: a task sent without a route still reaches the loop's worker.
LOOP_QUEUE: Final = "celery"
TRAIN_QUEUE: Final = "train"
SIDE_QUEUE: Final = "side"
QUEUES: Final = (LOOP_QUEUE, TRAIN_QUEUE, SIDE_QUEUE)

TRAIN_KINDS: Final = frozenset({Job.Kind.PRETRAIN, Job.Kind.FINETUNE, Job.Kind.EMBED, Job.Kind.EMBED_SHARD})
SIDE_KINDS: Final = frozenset(
    {
        Job.Kind.EXPORT,
        Job.Kind.MAP,
        Job.Kind.LABEL_CHECK,
        Job.Kind.SHIFT,
        Job.Kind.ATTRIBUTE_HEADS,
        Job.Kind.MEASURE,
    }
)

RUN_JOB_TASK: Final = "leukoloop.run_job"
SWEEP_TASK: Final = "leukoloop.requeue_stale_jobs"

# ``run_job`` is sent with the queue of its job's kind (``queue_for_kind``), which overrides this table;
# the periodic stale-job sweep goes to the loop's queue, whose worker runs the beat (`make run`).
TASK_QUEUES: Final = {
    RUN_JOB_TASK: LOOP_QUEUE,
    SWEEP_TASK: LOOP_QUEUE,
}


def queue_for_kind(kind: str) -> str:
    if kind in TRAIN_KINDS:
        return TRAIN_QUEUE
    return SIDE_QUEUE if kind in SIDE_KINDS else LOOP_QUEUE


def route_task(
    name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any
) -> dict[str, str]:
    """Celery's router (settings.CELERY_TASK_ROUTES): every task of ours has a queue a worker reads."""
    return {"queue": TASK_QUEUES.get(name, LOOP_QUEUE)}

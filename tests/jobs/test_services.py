"""The job lifecycle: claimed once, progress only while running, each kind sent to its queue."""

from __future__ import annotations

from typing import Any

import pytest

from annotation.models import Project
from annotation.services.projects import project_create
from jobs.models import Job
from jobs.services import job_claim, job_create, job_progress, job_requeue_stale, job_succeed

pytestmark = pytest.mark.django_db


@pytest.fixture
def project() -> Project:
    return project_create(name="jobs")


def test_a_job_is_claimed_once_and_a_finished_job_not_again(project: Project) -> None:
    job = job_create(kind=Job.Kind.IMPORT, project=project, enqueue=False)
    attempt = job_claim(job_id=job.pk)
    assert attempt == 1
    assert job_succeed(job_id=job.pk, attempt=attempt, result={"ok": True})
    assert not job_claim(job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.progress, job.attempts) == (Job.Status.SUCCEEDED, 1.0, 1)


def test_progress_is_clamped_and_only_written_while_running(project: Project) -> None:
    job = job_create(kind=Job.Kind.IMPORT, project=project, enqueue=False)
    assert not job_progress(job_id=job.pk, attempt=0, progress=0.5, message="early")
    job.refresh_from_db()
    assert job.progress == 0.0  # still queued
    attempt = job_claim(job_id=job.pk)
    assert attempt is not None
    assert job_progress(job_id=job.pk, attempt=attempt, progress=7.0, message="over")
    job.refresh_from_db()
    assert (job.progress, job.message) == (1.0, "over")


def test_side_jobs_go_to_the_side_queue_training_to_its_own_and_the_loop_to_its_own(
    project: Project, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    from types import SimpleNamespace

    from jobs import dispatch

    sent: list[tuple[int, str]] = []

    def send_task(name: str, *, args: tuple[int], queue: str) -> None:
        assert name == "leukoloop.run_job"
        sent.append((int(args[0]), queue))

    monkeypatch.setattr(dispatch, "current_app", SimpleNamespace(send_task=send_task))
    with django_capture_on_commit_callbacks(execute=True):
        jobs = {kind: job_create(kind=kind, project=project) for kind in Job.Kind.values}
    queue = {
        "export": "side",
        "map": "side",
        "label_check": "side",
        "shift": "side",
        "attribute_heads": "side",
        "measure": "side",
    }
    queue |= {"pretrain": "train", "finetune": "train", "embed": "train", "embed_shard": "train"}
    assert sorted(sent) == sorted((job.pk, queue.get(kind, "celery")) for kind, job in jobs.items())
    # A job whose worker died goes back to the queue of its kind.
    sent.clear()
    died = [jobs["map"].pk, jobs["retrain"].pk, jobs["pretrain"].pk]
    Job.objects.filter(pk__in=died).update(status=Job.Status.RUNNING)
    assert sorted(job_requeue_stale()) == sorted(died)
    assert sorted(sent) == sorted(
        [(jobs["map"].pk, "side"), (jobs["retrain"].pk, "celery"), (jobs["pretrain"].pk, "train")]
    )

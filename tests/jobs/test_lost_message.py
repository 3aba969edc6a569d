"""The embedded filesystem broker deletes a message when a worker fetches it (kombu's filesystem transport
has no unacknowledged store, so late acknowledgement cannot hand it back). A worker killed between the
fetch and the claim takes the only copy with it: the job stays ``queued`` and, before issue 11, nothing
ever sent it again. The sweep now re-sends a queued job whose message is older than
LEUKOLOOP_JOB_LOST_SECONDS. Real worker processes on a private filesystem broker, real cells."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from annotation.models import Cell
from annotation.services.projects import project_create
from config.broker import AtomicFilesystemTransport
from jobs.models import Job
from jobs.services import job_create
from tests.brokers import filesystem_job_ids, filesystem_options, producer_broker
from tests.conftest import ManifestWriter, WorkerFactory, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.realdata, pytest.mark.django_db(transaction=True)]


def test_a_job_whose_worker_died_after_fetching_its_message_is_run_by_the_sweep(
    start_worker: WorkerFactory, make_manifest: ManifestWriter, tmp_path: Path
) -> None:
    var = tmp_path / "var"  # the workers' own var dir: a broker folder no other test's messages are in
    broker = var / "broker"
    options: dict[str, Any] = filesystem_options(broker)
    project = project_create(name="lost-message")
    with producer_broker("filesystem://", transport=AtomicFilesystemTransport, options=options):
        private = {"CELERY_BROKER_URL": "filesystem://", "LEUKOLOOP_VAR_DIR": str(var)}
        first = start_worker(**private, LEUKOLOOP_FAILPOINTS="run_job.before_claim=120")
        job = job_create(
            kind=Job.Kind.IMPORT,
            project=project,
            params={"source": str(make_manifest(per_class=1)), "labels": "reference"},
        )
        wait_for(
            lambda: "failpoint run_job.before_claim" in first.log.read_text(),
            timeout=120,
            what="the worker to fetch the job's message",
            log=first.log,
        )
        first.kill()
        # The fetched message is gone with the worker; the job was never claimed.
        assert filesystem_job_ids(broker) == []
        job.refresh_from_db()
        assert (job.status, job.attempts) == (Job.Status.QUEUED, 0)

        time.sleep(1.5)  # older than the lost delay below
        second = start_worker(**private, LEUKOLOOP_JOB_LOST_SECONDS="1")

        def finished() -> bool:
            job.refresh_from_db()
            return job.is_finished

        wait_for(finished, timeout=120, what="the re-sent job", log=second.log)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.attempts == 1
    assert Cell.objects.filter(project=project).count() == 9
    assert f"sweep at worker start re-sent jobs [{job.pk}]" in second.log.read_text()

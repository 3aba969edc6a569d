"""A real Celery worker process runs a job through the configured broker and writes to the database.

In CI this runs twice: on PostgreSQL + Redis, and on the embedded default (SQLite + filesystem broker).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from annotation.models import Cell
from annotation.services.projects import project_create
from jobs.models import Job
from jobs.services import job_create
from tests.conftest import MODE, ManifestWriter, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.realdata, pytest.mark.django_db(transaction=True)]


def test_services_mode_really_uses_postgres_and_redis() -> None:
    if MODE != "services":
        pytest.skip("runs in LEUKOLOOP_TEST_MODE=services (CI)")
    assert connection.vendor == "postgresql"
    assert settings.CELERY_BROKER_URL.startswith("redis://")


def test_worker_process_imports_real_cells_through_the_broker(
    celery_worker_process: Path, make_manifest: ManifestWriter
) -> None:
    manifest = make_manifest(per_class=2)
    project = project_create(name="worker-import")
    job = job_create(
        kind=Job.Kind.IMPORT, project=project, params={"source": str(manifest), "labels": "reference"}
    )

    def finished() -> bool:
        job.refresh_from_db()
        return job.is_finished

    wait_for(finished, timeout=120, what=f"job {job.pk} to finish", log=celery_worker_process)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.progress == 1.0
    assert job.attempts == 1
    assert job.result["imported"] == 18
    assert Cell.objects.filter(project=project, reference_label__isnull=False).count() == 18
    # The worker is a different OS process: the cells it wrote came back through the database.
    assert "leukoloop.run_job" in celery_worker_process.read_text()


def test_failing_job_records_its_error(celery_worker_process: Path, tmp_path: Path) -> None:
    project = project_create(name="worker-fail")
    job = job_create(kind=Job.Kind.IMPORT, project=project, params={"source": str(tmp_path / "none")})

    def finished() -> bool:
        job.refresh_from_db()
        return job.is_finished

    wait_for(finished, timeout=120, what=f"job {job.pk} to finish", log=celery_worker_process)
    assert job.status == Job.Status.FAILED
    assert "does not exist" in job.error

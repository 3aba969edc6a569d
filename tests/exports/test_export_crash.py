"""A worker killed in the middle of an export (SIGKILL, the file written but not yet in place) loses no
label: labelling goes on while it is dead, the next worker's sweep runs the export again as the second
attempt, the file holds every label (those given meanwhile too), and the dead attempt's partial file is
gone. Real worker processes, the configured broker, real cells."""

from __future__ import annotations

import csv
import json
import time

import pytest
from django.contrib.auth.models import User

from annotation.importing.service import LabelMode, import_cells
from annotation.models import Annotation, Cell, Membership
from annotation.services.annotations import annotation_create
from annotation.services.memberships import membership_set
from annotation.services.projects import project_create
from exports.service import export_path, export_request
from jobs.models import Job
from tests.conftest import ManifestWriter, WorkerFactory, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.realdata, pytest.mark.django_db(transaction=True)]

STALE_SECONDS = 3


def test_killed_worker_mid_export_loses_no_label_and_the_retry_writes_them_all(
    make_manifest: ManifestWriter, lead: User, annotator: User, start_worker: WorkerFactory
) -> None:
    project = project_create(name="export-crash", lead=lead)
    import_cells(project=project, source=make_manifest(per_class=2), labels=LabelMode.REFERENCE)
    membership_set(project=project, user=annotator, role=Membership.Role.ANNOTATOR)
    cells = list(Cell.objects.filter(project=project).select_related("reference_label").order_by("pk"))
    for cell in cells[:10]:
        annotation_create(cell=cell, annotator=annotator, label=cell.reference_label)

    first = start_worker(LEUKOLOOP_FAILPOINTS="export.before_rename=120", LEUKOLOOP_JOB_HEARTBEAT_SECONDS="1")
    job = export_request(project=project, fmt="csv", created_by=lead)
    wait_for(
        lambda: "failpoint export.before_rename" in first.log.read_text(),
        timeout=120,
        what="the export to reach the failpoint",
        log=first.log,
    )
    out = export_path(job)
    partial = list(out.parent.glob(out.name + ".tmp*"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0 and not out.exists()
    first.kill()
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Job.Status.RUNNING, 1)

    # Labelling goes on while no worker runs.
    for cell in cells[10:14]:
        annotation_create(cell=cell, annotator=annotator, label=cell.reference_label)
    labels = {
        a.cell_id: a.label.name
        for a in Annotation.objects.filter(cell__project=project, superseded_by__isnull=True).select_related(
            "label"
        )
        if a.label is not None
    }
    assert len(labels) == 14

    time.sleep(STALE_SECONDS + 1.5)  # the dead worker's heartbeat goes stale
    second = start_worker(LEUKOLOOP_JOB_STALE_SECONDS=str(STALE_SECONDS))

    def finished() -> bool:
        job.refresh_from_db()
        return job.is_finished

    wait_for(finished, timeout=120, what="the retried export", log=second.log)
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.attempts == 2
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(cells)
    exported = {int(r["cell_id"]): r["label"] for r in rows if r["label"]}
    assert exported == labels
    for row in rows:
        history = json.loads(row["annotations"])
        assert len(history) == (1 if int(row["cell_id"]) in labels else 0)
    assert list(out.parent.glob(out.name + ".tmp*")) == []
    # Nothing the crash or the retry did touched the labels.
    assert Annotation.objects.filter(cell__project=project).count() == 14

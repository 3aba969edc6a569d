"""An expert labels two batches of real cells with the keyboard only, batches coming from a real worker
running the loop: one class key per cell (the page moves the focus on and submits a finished batch by
itself), so at most 1.1 key presses per label, and every label in the database is the expert's own manual
label of the class pressed. bench/label_session.py runs the same session on 3 batches of 48 and times it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from annotation.models import Annotation, Cell, Membership, Project
from annotation.services.memberships import membership_set
from loop.models import QueryBatch
from loop.services.start import loop_start
from tests.browser.conftest import login
from tests.browser.expert import Expert, percentiles
from tests.conftest import LOOP_SETTINGS, WorkerFactory, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.realdata, pytest.mark.django_db(transaction=True)]

BATCHES = 2
BATCH_SIZE = LOOP_SETTINGS["query_batch_size"]  # 12


def reference_keys(project: Project) -> dict[int, str]:
    """The class key of every cell's hidden reference label, as an expert would know it."""
    return {
        cell.pk: cell.reference_label.key
        for cell in Cell.objects.filter(project=project).select_related("reference_label")
        if cell.reference_label is not None
    }


def is_submitted(batch_id: int) -> Callable[[], bool]:
    return lambda: QueryBatch.objects.filter(pk=batch_id, submitted_at__isnull=False).exists()


def test_an_expert_labels_two_batches_with_one_key_per_cell(
    loop_project: Project,
    annotator: User,
    start_worker: WorkerFactory,
    live_server: Any,
    browser: Any,
    screenshot_dir: Path,
) -> None:
    assert BATCH_SIZE == 12
    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    # Every suggestion shown, so that batch 2 carries model v1's guesses beside the cells: a key that
    # took the suggestion instead of the class pressed would show up as a wrong label below.
    Project.objects.filter(pk=loop_project.pk).update(suggestion_min_confidence=0.0)
    worker = start_worker(beat=True)
    loop_start(project=loop_project)  # as bootstrap_demo does: first batch from the initial weights
    keys = reference_keys(loop_project)

    page = login(browser, live_server.url, "annotator", "pw-annotator-123")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}/projects/{loop_project.pk}/label/")
    expert = Expert(page, reverse("api-annotate", args=[loop_project.pk]))
    expert.install_probes()
    wait_for(
        lambda: QueryBatch.objects.filter(project=loop_project).exists(),
        timeout=240,
        what="batch 1",
        log=worker.log,
    )

    previous = None
    per_batch = []
    for number in range(1, BATCHES + 1):
        state = expert.wait_for_next_batch(previous, timeout=120)
        page.locator("#grid").focus()
        batch = QueryBatch.objects.get(project=loop_project, number=int(state["batch"]))
        labelled = expert.label_batch(
            lambda cell: keys[cell], screenshot=screenshot_dir / f"batch{number}.jpg"
        )
        how = expert.submit(is_submitted(batch.pk))
        per_batch.append((batch.number, labelled, how))
        previous = state["batch"]

    assert [labelled for _, labelled, _ in per_batch] == [BATCH_SIZE] * BATCHES, per_batch
    labels = BATCH_SIZE * BATCHES
    keys_per_label = len(expert.presses) / labels
    assert keys_per_label <= 1.1, (expert.presses, per_batch)

    # Every row the session wrote: one per cell (no relabel, no undo), the expert's own, manual, and the
    # class whose key was pressed, which is the cell's reference label.
    written = list(Annotation.objects.filter(annotator=annotator).select_related("label", "cell"))
    assert len(written) == labels
    assert sorted(a.cell_id for a in written) == sorted(expert.labelled_cells)
    assert {a.origin for a in written} == {Annotation.Origin.MANUAL}
    assert all(a.superseded_by_id is None and a.withdrawn_at is None for a in written)
    wrong = [(a.cell_id, a.label.key if a.label else None, keys[a.cell_id]) for a in written]
    assert [w for w in wrong if w[1] != w[2]] == []
    assert not Annotation.objects.filter(cell__project=loop_project).exclude(annotator=annotator).exists()

    # The in-page timing covers every label (its figures are the benchmark's business, not asserted here).
    timings = expert.latencies()
    assert len(timings) == labels
    assert percentiles([t["frame_ms"] for t in timings])["n"] == labels
    assert all(0 < t["post_ms"] <= t["dom_ms"] <= t["frame_ms"] for t in timings), timings
    assert errors == []

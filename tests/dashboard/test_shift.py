"""The dashboard's per-source shift report on the real loop: a project of real cells from two sources of
the shared set plus cells of another lab imported as a third source. Every source is reported, the cells
and labelled counts match the database, the distance ratio matches a brute-force computation over the
index's embeddings, and without a model the page says why there is no report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from annotation.labels import LabelStatus, cell_labels
from annotation.models import Cell, Membership, Project
from annotation.services.memberships import membership_set
from dashboard.shift import compute_shift_report, report_path, saved_report, shift_report
from jobs.models import Job
from learning.shift import ABSTAIN_RATIO
from loop.handlers.artifacts import classifier, index_embeddings
from loop.models import ModelVersion
from tests.abstention_by_hand import distance_ratio_by_hand
from tests.conftest import import_external_cells
from tests.dashboard import run_loop

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.realdata,
    pytest.mark.slow,
    pytest.mark.usefixtures("own_artifacts"),
]


def test_each_source_is_reported_with_counts_and_a_distance_that_match_a_hand_count(
    loop_project: Project, annotator: User, lead: User, data_dir: Path, tmp_path: Path
) -> None:
    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    import_external_cells(loop_project, data_dir, tmp_path / "bccd", 15)
    run_loop(loop_project, annotator, batches=1)
    data = shift_report(loop_project)
    sources = set(Cell.objects.filter(project=loop_project).values_list("source", flat=True))
    assert sources >= {"pbc", "bccd"}
    assert {row["source"] for row in data["sources"]} == sources

    version = ModelVersion.objects.get(project=loop_project, kind=ModelVersion.Kind.CLASSIFIER)
    assert version.parent is not None
    ids, emb = index_embeddings(version.parent)
    row_of = {int(c): i for i, c in enumerate(ids.tolist())}
    states = cell_labels(project=loop_project)
    labelled = sorted(c for c, s in states.items() if s.status is LabelStatus.LABELLED)
    assert data["labelled"] == len(labelled) == 12
    ref = emb[[row_of[c] for c in labelled]]
    ref_labels = np.array([str(states[c].label) for c in labelled])
    model = classifier(version)
    sims = ref @ ref.T
    np.fill_diagonal(sims, -np.inf)
    ref_median = float(np.median(1 - sims.max(axis=1)))
    assert data["reference_median_distance"] == pytest.approx(ref_median, abs=1e-3)
    for row in data["sources"]:
        cells = Cell.objects.filter(project=loop_project, source=row["source"]).exclude(
            role=Cell.Role.VALIDATION
        )
        unlabelled = sorted(c for c in cells.values_list("pk", flat=True) if c not in set(labelled))
        assert row["cells"] == len(unlabelled)
        assert row["labelled"] == cells.filter(pk__in=labelled).count()
        if unlabelled:
            nearest = (emb[[row_of[c] for c in unlabelled]] @ ref.T).max(axis=1)
            by_hand = float(np.median(1 - nearest)) / ref_median
            assert row["distance_ratio"] == pytest.approx(by_hand, rel=1e-2)
            # Unlike: farther from every labelled cell than 98% of labelled cells lie from each other, or
            # from the labelled cells of the class the model calls it than those lie from theirs.
            rows = [row_of[c] for c in unlabelled]
            called = np.asarray(model.classes)[np.asarray(model.predict_proba(emb[rows])).argmax(axis=1)]
            ratios = [
                distance_ratio_by_hand(ref, ref_labels, emb[r], c) for r, c in zip(rows, called, strict=True)
            ]
            unlike = float((np.asarray(ratios) > ABSTAIN_RATIO).mean())
            assert row["unlike_share"] == pytest.approx(unlike, abs=1e-3)
            assert row["level"] in {"ok", "caution", "untrusted"}
            assert sum(row["predicted_mix"].values()) == pytest.approx(1.0, abs=1e-3)

    # The page shows the table to the lead, one row per source, with a warning for each source not "ok".
    client = Client()
    client.force_login(lead)
    html = client.get(f"/projects/{loop_project.pk}/dashboard/").content.decode()
    assert 'id="shift-table"' in html
    for row in data["sources"]:
        assert f'data-source="{row["source"]}"' in html
    assert html.count('<td class="unlike">') == sum(1 for r in data["sources"] if r["cells"])
    assert html.count('class="shift-warning"') == sum(
        1 for r in data["sources"] if r["cells"] and r["level"] != "ok"
    )
    assert 'class="meta sampled"' not in html  # every cell measured: nothing to say

    # The page showed the report the retrain's ``shift`` job kept for this classifier version.
    assert report_path(version).is_file() and saved_report(version) == data

    # With a sample smaller than a source, the page says the row's figures come from the sample.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("dashboard.shift.SAMPLE_CELLS", 5)
        sampled = compute_shift_report(loop_project)
        report_path(version).unlink()  # a small project: the page computes the missing report itself
        html = client.get(f"/projects/{loop_project.pk}/dashboard/").content.decode()
    larger = [r for r in sampled["sources"] if r["cells"] > 5]
    assert larger and all(r["sampled"] == 5 for r in larger)
    assert html.count('class="meta sampled"') == len(larger)
    assert "(figures from 5)" in html


def test_without_a_model_the_page_says_why(loop_project: Project, lead: User) -> None:
    data = shift_report(loop_project)
    assert data["sources"] == [] and "No model yet" in data["note"]
    client = Client()
    client.force_login(lead)
    html = client.get(f"/projects/{loop_project.pk}/dashboard/").content.decode()
    assert 'id="shift-note"' in html and "No model yet" in html


def test_a_large_project_reads_the_kept_report_and_never_computes_it_in_the_request(
    loop_project: Project, annotator: User, lead: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import run_queued_jobs

    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    run_loop(loop_project, annotator, batches=1)
    version = ModelVersion.objects.get(project=loop_project, kind=ModelVersion.Kind.CLASSIFIER)
    # Every retrain starts a ``shift`` job on the side queue, which kept this version's report.
    shift_jobs = Job.objects.filter(project=loop_project, kind=Job.Kind.SHIFT)
    assert [(j.status, j.result["classifier_version"]) for j in shift_jobs] == [
        (Job.Status.SUCCEEDED, version.version)
    ]
    kept = saved_report(version)
    assert kept is not None and kept["model"]["version"] == version.version and kept["sources"]

    # Above INLINE_CELLS the page never computes: without a kept report it asks a job and says so.
    monkeypatch.setattr("dashboard.shift.INLINE_CELLS", 0)
    computed: list[int] = []
    real = compute_shift_report

    def counted(project: Project) -> dict[str, Any]:
        computed.append(1)
        return real(project)

    monkeypatch.setattr("dashboard.shift.compute_shift_report", counted)
    report_path(version).unlink()
    client = Client()
    client.force_login(lead)
    for _ in range(2):  # a second view finds the job on its way and starts no other
        html = client.get(f"/projects/{loop_project.pk}/dashboard/").content.decode()
        assert 'id="shift-note"' in html and f"report for model v{version.version} is being computed" in html
    assert computed == [] and shift_jobs.filter(status=Job.Status.QUEUED).count() == 1
    run_queued_jobs()
    assert computed == [1]
    html = client.get(f"/projects/{loop_project.pk}/dashboard/").content.decode()
    assert 'id="shift-table"' in html and computed == [1]  # read, not computed again
    assert saved_report(version) == kept  # the same figures as the retrain's job (same sample seed)

    # A failed job is reported, not started again on every view.
    report_path(version).unlink()
    failed = shift_jobs.order_by("-pk").first()
    assert failed is not None
    Job.objects.filter(pk=failed.pk).update(
        status=Job.Status.FAILED, finished_at=timezone.now(), error="OSError: disk full\n\ntraceback"
    )
    for _ in range(2):
        html = client.get(f"/projects/{loop_project.pk}/dashboard/").content.decode()
        assert f"The shift report failed (job {failed.pk})" in html and "OSError: disk full" in html
    assert shift_jobs.all().count() == 2 and computed == [1]  # .all(): a fresh count

"""Every retrain fits a temperature on the validation cells, stores it with the classifier version, and the
loop's probabilities (suggestion confidences, the pool's scores, everything that loads the classifier) are
the calibrated ones; too few validation cells keep T = 1 and say so."""

from __future__ import annotations

import numpy as np
import pytest
from django.contrib.auth.models import User

from annotation.models import Cell, Project
from jobs.models import Job
from jobs.services import job_create
from learning.calibration import TemperatureScaled, apply_temperature
from loop.handlers.artifacts import classifier as load_classifier
from loop.handlers.artifacts import index_embeddings
from loop.handlers.training_set import rows_of
from loop.models import ModelVersion, QueryBatch
from loop.services.batches import batch_submit
from tests.conftest import run_queued_jobs
from tests.loop.test_pipeline import label_batch

pytestmark = [pytest.mark.django_db, pytest.mark.realdata]


def hold_out(project: Project, per_class: int) -> int:
    """``per_class`` reference-labelled cells of each class become validation cells."""
    chosen: list[int] = []
    for label_class in project.classes.all():
        cells = Cell.objects.filter(project=project, reference_label=label_class).order_by("pk")
        chosen += list(cells.values_list("pk", flat=True)[:per_class])
    Cell.objects.filter(pk__in=chosen).update(role=Cell.Role.VALIDATION)
    return len(chosen)


def first_retrain(project: Project, annotator: User) -> ModelVersion:
    job_create(kind=Job.Kind.PRETRAIN, project=project, params={"minutes": 0})
    run_queued_jobs()
    first = QueryBatch.objects.get(project=project)
    label_batch(first, annotator)
    batch_submit(batch=first, user=annotator)
    run_queued_jobs()
    retrain = Job.objects.get(project=project, kind=Job.Kind.RETRAIN)
    assert retrain.status == Job.Status.SUCCEEDED, retrain.error
    return ModelVersion.objects.get(project=project, kind=ModelVersion.Kind.CLASSIFIER)


def test_a_retrain_fits_t_on_validation_and_the_next_batch_shows_calibrated_confidences(
    loop_project: Project, annotator: User
) -> None:
    assert hold_out(loop_project, per_class=3) == 27  # >= 20 cells and >= 2 of every class
    version = first_retrain(loop_project, annotator)
    calibration = version.metrics["calibration"]
    assert calibration["status"] == "fitted", calibration
    assert calibration["n"] == 27 and version.metrics["n"] == 27
    t = version.artifacts["temperature"]
    assert t == pytest.approx(calibration["temperature"]) and t != 1.0
    assert calibration["ece_after"] <= calibration["ece_before"]
    assert version.metrics["ece"] == pytest.approx(calibration["ece_after"], abs=1e-6)

    # The one place the loaded classifier gives probabilities applies T.
    clf = load_classifier(version)
    assert isinstance(clf, TemperatureScaled) and clf.temperature == t
    assert version.parent is not None
    ids, emb = index_embeddings(version.parent)
    second = QueryBatch.objects.get(project=loop_project, number=2)
    items = list(second.items.order_by("rank"))
    rows, found = rows_of(ids, np.array([i.cell_id for i in items], dtype=np.int64))
    assert found.all()
    raw = clf.base.predict_proba(emb[rows])
    calibrated = apply_temperature(raw, t)
    confidences = np.array([i.confidence for i in items], dtype=np.float64)
    np.testing.assert_allclose(confidences, calibrated.max(axis=1), atol=1e-5)
    assert not np.allclose(calibrated.max(axis=1), raw.max(axis=1), atol=1e-3)  # T changed them
    np.testing.assert_allclose(clf.predict_proba(emb[rows]), calibrated, atol=1e-6)


def test_too_few_validation_cells_keep_t_one_and_say_why(loop_project: Project, annotator: User) -> None:
    version = first_retrain(loop_project, annotator)  # the fixture holds out one cell per class: 9
    calibration = version.metrics["calibration"]
    assert calibration["status"] == "skipped" and calibration["temperature"] == 1.0
    assert calibration["reason"] == "9 validation cells, fewer than 20"
    assert calibration["ece_after"] == calibration["ece_before"]
    assert version.artifacts["temperature"] == 1.0
    assert load_classifier(version).temperature == 1.0

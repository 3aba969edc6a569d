"""After a taxonomy change the loop retrains on the new classes, on real cells: a merged class's labels
train the class it joined, a retired class's labels train nothing, and the new classifier's classes (and
the next batch's suggestions) are the active taxonomy's."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from annotation.models import Annotation, LabelClass, Project
from annotation.selectors import active_classes
from jobs.models import Job
from loop.handlers.artifacts import classifier as load_classifier
from loop.models import ModelVersion, QueryBatch, QueryItem
from loop.services.taxonomy import taxonomy_merge, taxonomy_retire
from tests.conftest import run_queued_jobs
from tests.loop.test_pipeline import label_batch, start_loop

pytestmark = [pytest.mark.django_db, pytest.mark.realdata]


def test_the_retrain_after_a_merge_learns_the_merged_class_set(
    loop_project: Project, annotator: User, lead: User
) -> None:
    start_loop(loop_project)
    first = QueryBatch.objects.get(project=loop_project)
    label_batch(first, annotator)
    labelled = set(
        Annotation.objects.filter(cell__project=loop_project).values_list("label__name", flat=True)
    )
    # Merge a class the annotator used into another, and retire a third that was used too.
    source, target, retired = sorted(labelled)[:3]
    classes = {c.name: c for c in LabelClass.objects.filter(project=loop_project)}
    merged_ids = set(Annotation.objects.filter(label=classes[source]).values_list("pk", flat=True))
    retired_ids = set(Annotation.objects.filter(label=classes[retired]).values_list("pk", flat=True))

    _, job = taxonomy_merge(source=classes[source], target=classes[target], actor=lead)
    _, again = taxonomy_retire(label_class=classes[retired], actor=lead)
    assert job is not None and again == job  # one retrain for both changes
    run_queued_jobs()

    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    version = ModelVersion.objects.get(project=loop_project, kind=ModelVersion.Kind.CLASSIFIER, job=job)
    expected = [c.name for c in active_classes(project=loop_project)]
    assert source not in expected and retired not in expected and target in expected
    assert version.artifacts["classes"] == expected
    assert list(load_classifier(version).classes) == expected
    # The merged labels trained (as the target class); the retired class's labels did not.
    trained = set(version.trained_on)
    assert merged_ids <= trained and not retired_ids & trained
    assert version.label_count == 12 - len(retired_ids)
    second = QueryBatch.objects.get(project=loop_project, number=2)
    suggested = set(QueryItem.objects.filter(batch=second).values_list("suggestion__name", flat=True))
    assert suggested and suggested <= set(expected)

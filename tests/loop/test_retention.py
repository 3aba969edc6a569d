"""Old index versions' files are deleted once a newer index is stored, on real cells: the newest few, the
newest classifier's and the open batches' stay; the rows stay, marked pruned; the evaluation report says
a pruned version cannot be scored (410) and leaves it out of its comparison list; ``prune_artifacts``
applies the same rule on demand, with a dry run that deletes nothing."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import override_settings

from annotation.models import Membership, Project
from annotation.services.memberships import membership_set
from jobs.models import Job
from jobs.services import job_create
from jobs.tasks import run_job
from loop.handlers.artifacts import index_embeddings
from loop.handlers.retention import is_pruned, prune_index_versions
from loop.models import ModelVersion
from loop.selectors import latest_version
from tests.conftest import client_for, run_queued_jobs
from tests.dashboard import run_loop

pytestmark = [pytest.mark.django_db, pytest.mark.realdata, pytest.mark.usefixtures("own_artifacts")]


def reembed(project: Project, *, then_retrain: bool = True) -> ModelVersion:
    """A new index version of the project's newest encoder, as a fine-tune's re-embedding makes; with
    ``then_retrain`` False the retrain it queues waits, as while a worker is busy."""
    encoder = latest_version(project, ModelVersion.Kind.ENCODER)
    assert encoder is not None
    job = job_create(kind=Job.Kind.EMBED, project=project, params={"encoder_version": encoder.pk})
    with override_settings(LEUKOLOOP_JOB_HEARTBEAT_SECONDS=3600):
        run_job(job.pk)
    if then_retrain:
        run_queued_jobs()
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    return ModelVersion.objects.get(job=job, kind=ModelVersion.Kind.INDEX)


def indexes(project: Project) -> list[ModelVersion]:
    return list(
        ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.INDEX).order_by("version")
    )


def test_an_embed_job_deletes_the_files_of_index_versions_nothing_reads(
    loop_project: Project, annotator: User, settings: Any
) -> None:
    settings.LEUKOLOOP_KEEP_INDEX_VERSIONS = 2
    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    run_loop(loop_project, annotator, batches=1)
    classifier = latest_version(loop_project, ModelVersion.Kind.CLASSIFIER)
    assert classifier is not None and classifier.parent is not None
    used = classifier.parent  # the newest classifier's index
    used_files = [used.artifact_path(key) for key in ("embeddings", "index")]

    # Three re-embeddings while the retrains wait: the newest classifier still reads the first index.
    second = reembed(loop_project, then_retrain=False)
    third = reembed(loop_project, then_retrain=False)
    second_files = [second.artifact_path(key) for key in ("embeddings", "index")]
    assert not any(is_pruned(v) for v in indexes(loop_project))  # the newest two and the classifier's
    fourth = reembed(loop_project, then_retrain=False)

    states = {v.version: is_pruned(v) for v in indexes(loop_project)}
    # The second is neither among the newest two nor the classifier's: gone, its row marked.
    assert states == {used.version: False, second.version: True, third.version: False, fourth.version: False}
    second.refresh_from_db()
    assert "embeddings" not in second.artifacts and "index" not in second.artifacts
    assert not any(path.exists() for path in second_files)
    # The rest keep their files and load; the classifier's older index among them.
    for kept in (used, third, fourth):
        kept.refresh_from_db()
        ids, emb = index_embeddings(kept)
        assert len(ids) == 72 and emb.shape == (72, kept.artifacts["dim"])
    assert all(path.exists() for path in used_files)

    # Once the retrains have run (the newest classifier reads the fourth index), the next embedding
    # takes the classifier's old index and the third with it.
    run_queued_jobs()
    newest_classifier = latest_version(loop_project, ModelVersion.Kind.CLASSIFIER)
    assert newest_classifier is not None and newest_classifier.parent_id == fourth.pk
    fifth = reembed(loop_project, then_retrain=False)
    states = {v.version: is_pruned(v) for v in indexes(loop_project)}
    assert states == {
        used.version: True,
        second.version: True,
        third.version: True,
        fourth.version: False,
        fifth.version: False,
    }
    assert not any(path.exists() for path in used_files)
    assert prune_index_versions(loop_project).versions == []  # nothing left to prune
    # Every row stays: the history of label budget against accuracy is whole.
    assert ModelVersion.objects.filter(project=loop_project, kind=ModelVersion.Kind.CLASSIFIER).count() >= 2


def test_keeping_zero_keeps_every_file(loop_project: Project, settings: Any) -> None:
    settings.LEUKOLOOP_KEEP_INDEX_VERSIONS = 0
    job_create(kind=Job.Kind.PRETRAIN, project=loop_project)
    run_queued_jobs()
    for _ in range(3):
        reembed(loop_project)
    assert [is_pruned(v) for v in indexes(loop_project)] == [False] * len(indexes(loop_project))
    assert all(v.artifact_path("embeddings").is_dir() for v in indexes(loop_project))


def test_a_pruned_classifier_version_is_gone_from_the_report_with_the_reason(
    loop_project: Project, annotator: User, lead: User, settings: Any
) -> None:
    settings.LEUKOLOOP_KEEP_INDEX_VERSIONS = 0  # pruned below, by the command
    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    run_loop(loop_project, annotator, batches=1)
    for _ in range(3):
        reembed(loop_project)  # each followed by its retrain: one classifier version per index
    classifiers = list(
        ModelVersion.objects.filter(project=loop_project, kind=ModelVersion.Kind.CLASSIFIER).order_by(
            "version"
        )
    )
    first, newest = classifiers[0], classifiers[-1]
    assert len({c.parent_id for c in classifiers}) == 4
    page = f"/projects/{loop_project.pk}/models/{first.version}/report/"
    data = f"/projects/{loop_project.pk}/models/{first.version}/report.json"
    assert client_for(lead).get(data).status_code == 200  # nothing pruned yet

    out = StringIO()
    call_command("prune_artifacts", "--keep", "2", "--dry-run", stdout=out)
    assert "index v1, v2: would free" in out.getvalue()
    assert not any(is_pruned(v) for v in indexes(loop_project))  # a dry run deletes nothing
    call_command("prune_artifacts", "--keep", "2", f"--project={loop_project.pk}", stdout=out)
    assert [is_pruned(v) for v in indexes(loop_project)] == [True, True, False, False]
    first.refresh_from_db()

    response = client_for(lead).get(page)
    assert response.status_code == 410 and "deleted to save disk" in response.content.decode()
    gone = client_for(lead).get(data)
    assert gone.status_code == 410 and "LEUKOLOOP_KEEP_INDEX_VERSIONS" in gone.json()["detail"]
    assert client_for(annotator).get(data).status_code == 403  # permissions still come first
    newest_data = f"/projects/{loop_project.pk}/models/{newest.version}/report.json"
    assert client_for(lead).get(newest_data, {"compare": first.version}).status_code == 410
    assert client_for(lead).get(newest_data, {"compare": classifiers[2].version}).status_code == 200
    listed = client_for(lead).get(f"/projects/{loop_project.pk}/models/{newest.version}/report/")
    assert listed.status_code == 200
    offered = listed.content.decode()
    assert f">version {first.version} (" not in offered
    assert f">version {classifiers[2].version} (" in offered
    with pytest.raises(CommandError):
        call_command("prune_artifacts", "--keep", "0", stdout=out)

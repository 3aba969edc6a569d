"""Source-aware acquisition on real cells: a lead points the query at a new site's cells (imported as
another source); the next batches hold only that source's cells while some are unlabelled, then the
whole pool again. A source no cell carries is refused by the API and the settings page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.models import Cell, Membership, Project
from annotation.services.memberships import membership_set
from jobs.models import Job
from jobs.services import job_create
from loop.models import ModelVersion, QueryBatch
from loop.services.requests import finetune_request
from tests.conftest import client_for, import_external_cells, label_and_submit, run_queued_jobs

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.realdata,
    pytest.mark.slow,
    pytest.mark.usefixtures("own_artifacts"),
]

NEW_SITE = 15  # cells of the new site; the loop project's batches hold 12


def batch_sources(number: int, project: Project) -> list[str]:
    batch = QueryBatch.objects.get(project=project, number=number)
    return [item.cell.source for item in batch.items.select_related("cell")]


def test_the_query_follows_the_new_site_while_it_has_unlabelled_cells(
    loop_project: Project, lead: User, annotator: User, data_dir: Path, tmp_path: Path
) -> None:
    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    import_external_cells(loop_project, data_dir, tmp_path / "site", NEW_SITE)
    api = f"/api/projects/{loop_project.pk}/"

    def patch(value: str) -> Any:
        return client_for(lead).patch(
            api, json.dumps({"query_source": value}), content_type="application/json"
        )

    refused = patch("bccdx")
    assert refused.status_code == 400 and "bccd" in json.dumps(refused.json())
    assert patch("bccd").status_code == 200
    loop_project.refresh_from_db()
    assert loop_project.query_source == "bccd"

    job_create(kind=Job.Kind.PRETRAIN, project=loop_project)
    run_queued_jobs()
    first = batch_sources(1, loop_project)
    assert first == ["bccd"] * 12
    label_and_submit(QueryBatch.objects.get(project=loop_project, number=1), annotator)
    # Three new-site cells are left: the next batch holds them and nothing else.
    assert batch_sources(2, loop_project) == ["bccd"] * (NEW_SITE - 12)
    label_and_submit(QueryBatch.objects.get(project=loop_project, number=2), annotator)
    # Every new-site cell is labelled: the whole pool again.
    third = batch_sources(3, loop_project)
    assert len(third) == 12 and "bccd" not in third
    assert Cell.objects.filter(project=loop_project, source="bccd", annotations__isnull=True).count() == 0

    # The next fine-tune draws the new site's labelled cells as often as the old sites' (within a class)
    # and says so on the encoder version it makes.
    label_and_submit(QueryBatch.objects.get(project=loop_project, number=3), annotator)
    finetune = finetune_request(project=loop_project, minutes=0.05, epochs=1)
    run_queued_jobs()
    finetune.refresh_from_db()
    assert finetune.status == Job.Status.SUCCEEDED, finetune.error
    tuned = ModelVersion.objects.filter(project=loop_project, kind=ModelVersion.Kind.ENCODER).first()
    assert tuned is not None and tuned.artifacts["method"] == "finetune"
    assert tuned.label_count == NEW_SITE + 12
    assert tuned.metrics["site_balanced"] == {"source": "bccd", "cells": NEW_SITE}

    # The settings page offers the project's sources and refuses another.
    page = client_for(lead).get(f"/projects/{loop_project.pk}/settings/").content.decode()
    assert '<option value="bccd" selected>bccd</option>' in page
    assert '<option value="pbc">pbc</option>' in page


def test_without_a_source_the_query_is_unchanged(loop_project: Project, lead: User) -> None:
    assert loop_project.query_source == ""
    job_create(kind=Job.Kind.PRETRAIN, project=loop_project)
    run_queued_jobs()
    assert len(batch_sources(1, loop_project)) == 12

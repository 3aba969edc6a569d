"""Projects that existed before the cell crop keep the centre crop their encoders were trained on; projects
created afterwards start cell-centred."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from annotation.models import Project

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.migration]

BEFORE = [("annotation", "0011_project_query_source")]


def _migrate(targets: list[tuple[str, str]]) -> Any:
    MigrationExecutor(connection).migrate(targets)
    return MigrationExecutor(connection).loader.project_state(targets).apps


def _latest() -> list[tuple[str, str]]:
    loader = MigrationExecutor(connection).loader
    return list(loader.graph.leaf_nodes())


def test_existing_projects_keep_the_centre_crop_and_new_ones_start_cell_centred() -> None:
    apps = _migrate(BEFORE)
    old = apps.get_model("annotation", "Project").objects.create(name="trained on centre crops")
    _migrate(_latest())
    assert Project.objects.get(pk=old.pk).input_crop == "centre"
    assert Project.objects.create(name="new").input_crop == "cell"

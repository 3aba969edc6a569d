"""What each role reads of the fields that are hidden from some: the matrices (test_permissions.py,
test_page_permissions.py) check that nobody reads what is hidden from them; these check that the planted
strings are really there for the roles that may read them (so the scan can fail), and the shape of what
the others get instead."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import CELL_MARKER, REVIEWER_LABEL, World
from tests.api.sentinels import (
    IMPORT_RESULT_MARKER,
    JOB_ERROR_SUMMARY,
    PARAMS_PATH,
    PATIENT_MARKER,
    SLIDE_MARKER,
    TRACEBACK_MARKER,
)
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def get(world: World, role: str, url: str) -> Any:
    response = client_for(world.users[role]).get(url)
    assert response.status_code == 200, (role, url, response.content[:300])
    return response.json()


@pytest.mark.parametrize("role", ["lead", "admin", "superuser"])
def test_leads_and_admins_read_where_cells_come_from(world: World, role: str) -> None:
    cells = get(world, role, f"/api/projects/{world.project.pk}/cells/")["results"]
    names = [c["original_name"] for c in cells]
    assert all(name.startswith("basophil/") and CELL_MARKER in name for name in names), names
    assert all(c["patient_id"].startswith(PATIENT_MARKER) for c in cells)
    assert all(c["slide_id"].startswith(SLIDE_MARKER) for c in cells)
    job = get(world, role, f"/api/jobs/{world.import_job.pk}/")
    assert job["params"]["source"].startswith(PARAMS_PATH)
    assert IMPORT_RESULT_MARKER in job["result"]["duplicates"][0]["name"]


@pytest.mark.parametrize("role", ["annotator", "reviewer"])
def test_annotators_and_reviewers_get_no_provenance_fields(world: World, role: str) -> None:
    cells = get(world, role, f"/api/projects/{world.project.pk}/cells/")["results"]
    assert len(cells) == len(world.cells)
    for cell in cells:
        assert not {"original_name", "patient_id", "slide_id"} & set(cell), cell
        assert cell["image_url"] == f"/cells/{cell['id']}/image"
    for job in get(world, role, f"/api/projects/{world.project.pk}/jobs/")["results"]:
        assert not {"params", "result"} & set(job), job


@pytest.mark.parametrize(("role", "full"), [("annotator", False), ("lead", False), ("admin", True)])
def test_only_admins_read_tracebacks(world: World, role: str, full: bool) -> None:
    job = get(world, role, f"/api/jobs/{world.failed_job.pk}/")
    if full:
        assert job["error"].startswith(JOB_ERROR_SUMMARY) and TRACEBACK_MARKER in job["error"]
    else:
        assert job["error"] == JOB_ERROR_SUMMARY
    # The labelling page's poll shows everyone the summary.
    loop = get(world, role, f"/api/projects/{world.project.pk}/loop/")
    assert loop["last_failed"]["error"] == JOB_ERROR_SUMMARY


def test_an_error_summary_is_the_first_line_cut_short() -> None:
    from jobs.selectors import ERROR_SUMMARY_CHARS, error_summary

    assert error_summary("") == ""
    assert error_summary("\nValueError: bad\n\nTraceback ...") == "ValueError: bad"
    long = error_summary("x" * 1000)
    assert len(long) == ERROR_SUMMARY_CHARS and long.endswith("…")


def test_similar_cells_show_annotators_only_their_own_labels(world: World) -> None:
    """Cell 2's neighbours are cells 0, 1 and 3: the annotator labelled cell 0, the reviewer cell 1."""
    url = f"/api/cells/{world.cells[2].pk}/similar/"
    annotator = get(world, "annotator", url)
    mine = {n["cell"]: n["label"] for n in annotator["neighbours"]}
    assert mine == {world.cells[0].pk: "neutrophil", world.cells[1].pk: None, world.cells[3].pk: None}
    assert annotator["labels"] == "yours"
    reviewer = get(world, "reviewer", url)
    everyone = {n["cell"]: n["label"] for n in reviewer["neighbours"]}
    assert everyone[world.cells[1].pk] == REVIEWER_LABEL and everyone[world.cells[0].pk] == "neutrophil"
    assert reviewer["labels"] == "resolved"

"""A lead edits the taxonomy on the settings page and the labelling page follows; a comment typed on the
labelling page's focused cell is there after a reload, hostile text shown as text. Real cells, a batch
written straight into the database (no worker, no model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.importing.service import LabelMode, import_cells
from annotation.models import Annotation, Cell, Comment, LabelClass, Membership, Project, TaxonomyChange
from annotation.services.memberships import membership_set
from annotation.services.projects import project_create
from loop.models import QueryBatch, QueryItem
from tests.browser.conftest import login, wait_for_js
from tests.conftest import ManifestWriter

pytestmark = [
    pytest.mark.browser,
    pytest.mark.realdata,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("jobs_run_here"),
]

HOSTILE = '<img src=x onerror="window.__pwned=1"> looks <b>reactive</b>'


@pytest.fixture
def project(make_manifest: ManifestWriter, lead: User, annotator: User) -> Project:
    project = project_create(name="taxonomy-browser", lead=lead)
    import_cells(project=project, source=make_manifest(per_class=1), labels=LabelMode.REFERENCE)
    membership_set(project=project, user=annotator, role=Membership.Role.ANNOTATOR)
    batch = QueryBatch.objects.create(
        project=project, number=1, requested_strategy="margin", strategy="margin"
    )
    for rank, cell in enumerate(Cell.objects.filter(project=project).order_by("pk")[:4]):
        QueryItem.objects.create(batch=batch, cell=cell, rank=rank)
    return project


def open_label_page(page: Any, base_url: str, project: Project) -> None:
    page.goto(f"{base_url}/projects/{project.pk}/label/")
    page.wait_for_selector(".tile[data-index='3']")


def test_a_lead_renames_and_retires_a_class_and_the_label_page_follows(
    project: Project, live_server: Any, browser: Any, screenshot_dir: Path
) -> None:
    page = login(browser, live_server.url, "lead", "pw-lead-123")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}/projects/{project.pk}/settings/")
    row = page.locator("#taxonomy-classes tr[data-class='ig']")
    row.locator("input[name=display_name]").fill("Metamyelocyte")
    row.locator("button", has_text="Rename").click()
    page.wait_for_selector("#taxonomy-history tr[data-action='rename']")
    assert LabelClass.objects.get(project=project, name="ig").display_name == "Metamyelocyte"
    history = page.locator("#taxonomy-history tbody tr").first.inner_text()
    assert "lead" in history and "Immature granulocyte" in history and "Metamyelocyte" in history

    # Retiring asks first; then basophil leaves the keys and the later classes move up one.
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#taxonomy-classes tr[data-class='basophil'] button", has_text="Retire").click()
    page.wait_for_selector("#taxonomy-history tr[data-action='retire']")
    assert page.locator("#taxonomy-classes tr[data-class='basophil'] kbd").inner_text() == ""
    assert page.locator("#taxonomy-classes tr[data-class='ig'] kbd").inner_text() == "5"
    page.screenshot(path=screenshot_dir / "01-settings-taxonomy.png", full_page=True)

    open_label_page(page, live_server.url, project)
    keys = page.locator("#class-keys .class-button")
    texts = [t.strip() for t in keys.all_inner_texts()]
    assert "5 Metamyelocyte" in texts
    assert not any("Basophil" in t for t in texts) and not any("Immature" in t for t in texts)
    page.screenshot(path=screenshot_dir / "02-label-page-renamed.png")
    assert errors == []
    assert TaxonomyChange.objects.filter(project=project).count() == 2


def test_an_annotator_cannot_change_the_taxonomy(project: Project, live_server: Any, browser: Any) -> None:
    page = login(browser, live_server.url, "annotator", "pw-annotator-123")
    response = page.goto(f"{live_server.url}/projects/{project.pk}/settings/")
    assert response is not None and response.status == 403
    status = page.evaluate(
        """async (url) => {
            const token = (document.cookie.match(/csrftoken=([^;]+)/) || [])[1] || "";
            const r = await fetch(url, {method: "PATCH", headers: {"Content-Type": "application/json",
                "X-CSRFToken": token}, body: JSON.stringify({display_name: "Hacked"})});
            return r.status;
        }""",
        f"/api/projects/{project.pk}/classes/ig/",
    )
    assert status == 403
    assert LabelClass.objects.get(project=project, name="ig").display_name == "Immature granulocyte"


def test_a_comment_typed_on_the_label_page_is_there_after_a_reload_as_text(
    project: Project, live_server: Any, browser: Any, screenshot_dir: Path
) -> None:
    page = login(browser, live_server.url, "annotator", "pw-annotator-123")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    open_label_page(page, live_server.url, project)
    first = QueryItem.objects.get(batch__project=project, rank=0).cell_id
    page.wait_for_selector("#comments-panel:not([hidden])")
    assert page.locator("#comments-target").inner_text() == f"cell {first}"
    page.click("#comment-text")
    page.keyboard.type(HOSTILE)  # its letters (a, s, x, ...) must not act on the grid
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#comments-list .comment")
    assert Comment.objects.get(cell_id=first).text == HOSTILE
    assert not page.evaluate("() => document.querySelector('.tile.skipped') !== null")
    assert not QueryItem.objects.filter(skipped_at__isnull=False).exists()
    assert not Annotation.objects.filter(cell__project=project).exists()

    page.reload()
    page.wait_for_selector(".tile[data-index='3']")
    page.wait_for_selector("#comments-list .comment")
    text = page.locator("#comments-list .comment .comment-text").inner_text()
    assert text == HOSTILE
    assert page.locator("#comments-list img, #comments-list b:has-text('reactive')").count() == 0
    assert page.evaluate("() => window.__pwned === undefined")
    # The next cell has none; back on the first, the comment again.
    page.locator("#grid").focus()
    page.keyboard.press("ArrowRight")
    wait_for_js(page, "() => document.getElementById('comments-list').textContent.includes('No comment yet')")
    page.screenshot(path=screenshot_dir / "01-label-comments.png")
    assert errors == []

    # The reviewer's queue shows it too, as text.
    reviewer = User.objects.create_user("rev", password="pw-rev-123")
    membership_set(project=project, user=reviewer, role=Membership.Role.REVIEWER)
    from annotation.services.annotations import annotation_create

    annotation_create(
        cell=Cell.objects.get(pk=first),
        annotator=User.objects.get(username="annotator"),
        label=None,
        unsure=True,
    )
    page = login(browser, live_server.url, "rev", "pw-rev-123")
    page.goto(f"{live_server.url}/projects/{project.pk}/review/")
    item = page.locator(f".review-item[data-cell='{first}']")
    assert item.locator(".comment-text").inner_text() == HOSTILE
    assert item.locator(".comments img").count() == 0

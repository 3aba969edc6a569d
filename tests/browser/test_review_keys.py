"""A reviewer works through the review queue with the keyboard, on real cells: each entry shows the model's
suggestion with its confidence and readable times; j/k move, a class's key decides, Enter accepts the
suggestion; every decision is stored as a review of the class the key names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.models import Annotation, Cell, Membership, Project
from annotation.services.annotations import annotation_create
from annotation.services.memberships import membership_set
from loop.models import QueryBatch, QueryItem
from tests.browser.conftest import login, wait_for_js

pytestmark = [pytest.mark.browser, pytest.mark.realdata, pytest.mark.django_db(transaction=True)]


def test_review_queue_by_keyboard(
    loop_project: Project, lead: User, annotator: User, live_server: Any, browser: Any, screenshot_dir: Path
) -> None:
    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    classes = list(loop_project.classes.all())
    cells = list(Cell.objects.filter(project=loop_project, role=Cell.Role.POOL).order_by("pk")[:3])
    batch = QueryBatch.objects.create(project=loop_project, number=1, requested_strategy="x", strategy="x")
    for rank, cell in enumerate(cells):
        QueryItem.objects.create(batch=batch, cell=cell, rank=rank, suggestion=classes[2], confidence=0.314)
        annotation_create(cell=cell, annotator=annotator, label=None, unsure=True)

    page = login(browser, live_server.url, "lead", "pw-lead-123")
    page.goto(f"{live_server.url}/projects/{loop_project.pk}/review/")
    first = page.locator(".review-item").first
    text = first.inner_text()
    assert f"Model suggests {classes[2].display_name} (31% confidence)" in text, text
    # Times as a person reads them, not ISO strings.
    assert not re.search(r"\d{4}-\d\d-\d\dT", text), text
    assert re.search(r"\d{1,2} \w{3} \d{4}, \d\d:\d\d UTC", text), text
    page.screenshot(path=screenshot_dir / "01-review-queue.png", full_page=True)

    def focused_cell() -> int:
        return int(wait_for_js(page, "() => document.activeElement.closest('.review-item')?.dataset.cell"))

    assert focused_cell() == cells[0].pk
    page.keyboard.press("j")
    assert focused_cell() == cells[1].pk
    page.keyboard.press("k")
    assert focused_cell() == cells[0].pk
    page.keyboard.press("ArrowDown")
    assert focused_cell() == cells[1].pk

    # The second cell decided by class key (the first class's key), then the next one focused.
    key = classes[0].key
    page.keyboard.press(key)
    page.wait_for_selector(f".review-item[data-cell='{cells[1].pk}']", state="detached")
    assert focused_cell() == cells[2].pk
    # Enter accepts the suggestion for the focused cell.
    page.keyboard.press("Enter")
    page.wait_for_selector(f".review-item[data-cell='{cells[2].pk}']", state="detached")
    assert focused_cell() == cells[0].pk

    reviews = {
        a.cell_id: a.label.name
        for a in Annotation.objects.filter(origin=Annotation.Origin.REVIEW).select_related("label")
        if a.label is not None
    }
    assert reviews == {cells[1].pk: classes[0].name, cells[2].pk: classes[2].name}

"""A label the server fails to save is not lost, and lands once (issue 11). In a real browser, the page's
label POSTs are intercepted (Playwright routing): answered 503, cut off after the server saved the label
(the answer lost), or unreachable for a while. The page retries with backoff under one client key, shows
which labels are not saved and why, and sends them again when the server answers."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.importing.service import LabelMode, import_cells
from annotation.models import Annotation, Cell, Membership
from annotation.services.memberships import membership_set
from annotation.services.projects import project_create
from loop.models import QueryBatch, QueryItem
from tests.browser.conftest import login
from tests.conftest import ManifestWriter

pytestmark = [
    pytest.mark.browser,
    pytest.mark.realdata,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("jobs_run_here"),
]

ANNOTATIONS = re.compile(r".*/api/projects/\d+/annotations/$")


@pytest.fixture
def batch(make_manifest: ManifestWriter, lead: User, annotator: User) -> QueryBatch:
    project = project_create(name="unsaved", lead=lead)
    import_cells(project=project, source=make_manifest(per_class=1), labels=LabelMode.REFERENCE)
    membership_set(project=project, user=annotator, role=Membership.Role.ANNOTATOR)
    batch = QueryBatch.objects.create(
        project=project, number=1, requested_strategy="margin", strategy="margin"
    )
    for rank, cell in enumerate(Cell.objects.filter(project=project).order_by("pk")[:4]):
        QueryItem.objects.create(batch=batch, cell=cell, rank=rank, score=0.5)
    return batch


class LabelPosts:
    """Intercepts the page's label POSTs: ``behave(n, route)`` answers the n-th (0-based) itself and
    returns True, or returns False to let it through to the server. Every POST body is kept."""

    def __init__(self, page: Any, behave: Callable[[int, Any], bool]) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.behave = behave
        page.route(ANNOTATIONS, self._handle)

    def _handle(self, route: Any) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        n = len(self.bodies)
        self.bodies.append(json.loads(route.request.post_data or "{}"))
        if not self.behave(n, route):
            route.continue_()

    @property
    def keys(self) -> set[str]:
        return {body.get("client_key", "") for body in self.bodies}


def open_page(browser: Any, base_url: str, batch: QueryBatch) -> Any:
    page = login(browser, base_url, "annotator", "pw-annotator-123")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    page.goto(f"{base_url}/projects/{batch.project_id}/label/")
    page.wait_for_selector(".tile[data-index='3']")
    page.locator("#grid").focus()
    return page


def until(page: Any, predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Wait for a database condition while the page runs (the route handlers only run inside
    Playwright calls, so the wait is the page's own)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        page.wait_for_timeout(100)


def first_cell(batch: QueryBatch) -> int:
    return int(batch.items.order_by("rank").values_list("cell_id", flat=True)[0])


def mine(annotator: User, cell: int) -> list[Annotation]:
    return list(Annotation.objects.filter(cell_id=cell, annotator=annotator))


def test_a_label_whose_first_posts_fail_is_retried_and_lands_once(
    batch: QueryBatch, annotator: User, live_server: Any, browser: Any, screenshot_dir: Path
) -> None:
    page = open_page(browser, live_server.url, batch)
    busy = "<html><body>Service Unavailable</body></html>"
    posts = LabelPosts(page, lambda n, route: n < 2 and route.fulfill(status=503, body=busy) is None)
    cell = first_cell(batch)
    page.keyboard.press("1")
    page.wait_for_function(
        "() => (document.querySelector('#loop-status .flash')?.textContent || '').includes('HTTP 503')"
    )
    assert (
        "Label not saved yet (try 1): the server failed (HTTP 503)"
        in page.locator("#loop-status").inner_text()
    )
    page.screenshot(path=screenshot_dir / "01-retrying.png")
    page.wait_for_selector(".tile[data-index='0'].labelled", timeout=20_000)
    assert len(posts.bodies) == 3 and len(posts.keys) == 1 and "" not in posts.keys
    assert [a.label.name for a in mine(annotator, cell) if a.label] == ["neutrophil"]
    assert page.locator("#unsaved").is_hidden()
    assert page.errors == []


def test_a_label_whose_answer_was_lost_is_sent_again_and_written_once(
    batch: QueryBatch, annotator: User, live_server: Any, browser: Any
) -> None:
    page = open_page(browser, live_server.url, batch)

    def lose_first_answer(n: int, route: Any) -> bool:
        if n:
            return False
        route.fetch()  # the server saves the label...
        route.abort("connectionreset")  # ...and its answer never reaches the page
        return True

    posts = LabelPosts(page, lose_first_answer)
    cell = first_cell(batch)
    page.keyboard.press("1")
    page.wait_for_selector(".tile[data-index='0'].labelled", timeout=20_000)
    assert len(posts.bodies) == 2 and len(posts.keys) == 1
    labels = mine(annotator, cell)
    assert len(labels) == 1 and labels[0].client_key in posts.keys
    assert page.locator(".tile[data-index='0']").get_attribute("data-cell") == str(cell)
    assert page.errors == []


def test_labels_not_saved_while_the_server_is_unreachable_are_shown_then_sent_once_it_is_back(
    batch: QueryBatch, annotator: User, live_server: Any, browser: Any, screenshot_dir: Path
) -> None:
    page = open_page(browser, live_server.url, batch)
    down = {"now": True}
    posts = LabelPosts(page, lambda n, route: down["now"] and route.abort("connectionrefused") is None)
    cell = first_cell(batch)
    page.keyboard.press("1")
    # Every retry fails: the label is listed as not saved, with a readable reason.
    page.wait_for_selector("#unsaved:not([hidden])", timeout=30_000)
    text = page.locator("#unsaved").inner_text()
    assert text.startswith(f"1 label not saved: cell {cell} → ")
    assert "the server cannot be reached" in text and "{}" not in text
    assert page.locator(".tile[data-index='0'].unsaved").count() == 1
    page.wait_for_function(
        "() => (document.querySelector('#loop-status .flash')?.textContent || '').startsWith('Not saved: ')"
    )
    flash = page.locator("#loop-status .flash").inner_text()
    assert "the server cannot be reached" in flash and "{}" not in flash
    page.screenshot(path=screenshot_dir / "01-unsaved.png")
    assert mine(annotator, cell) == []
    tries = len(posts.bodies)
    assert tries >= 5  # the first try and four retries with backoff

    down["now"] = False  # the server is back: the next poll sends the label again
    page.wait_for_selector(".tile[data-index='0'].labelled", timeout=20_000)
    page.wait_for_selector("#unsaved", state="hidden")
    until(page, lambda: len(mine(annotator, cell)) == 1, "the label")
    page.wait_for_timeout(2000)  # more polls: nothing is sent again
    assert len(mine(annotator, cell)) == 1
    assert len(posts.keys) == 1 and len(posts.bodies) - tries in (1, 2)  # one more (maybe one queued)
    page.screenshot(path=screenshot_dir / "02-saved.png")
    assert page.errors == []

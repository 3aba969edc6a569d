"""Keys that must not corrupt or throw away work on the labelling page, replayed in a real browser on a
batch written straight into the database (no worker, no model): the attribute panel's Enter never writes a
label, Shift+Enter never submits an untouched batch and asks before submitting a half-done one, X is undone
by Z, the pretrain button asks first, and server strings are shown as text."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.importing.service import LabelMode, import_cells
from annotation.models import Annotation, Cell, LabelClass, Membership, Project
from annotation.services.memberships import membership_set
from annotation.services.projects import project_create
from jobs.models import Job
from loop.models import QueryBatch, QueryItem
from tests.browser.conftest import login, wait_for_js
from tests.conftest import ManifestWriter, wait_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.realdata,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("jobs_run_here"),  # a submitted batch queues a retrain: it stays queued
]

BATCH_SIZE = 6


@pytest.fixture
def batch(make_manifest: ManifestWriter, lead: User, annotator: User) -> QueryBatch:
    """Batch 1 of six real cells, every one with a model suggestion (neutrophil, 90%)."""
    project = project_create(name="keys", lead=lead)
    import_cells(project=project, source=make_manifest(per_class=1), labels=LabelMode.REFERENCE)
    membership_set(project=project, user=annotator, role=Membership.Role.ANNOTATOR)
    suggestion = project.classes.get(name="neutrophil")
    batch = QueryBatch.objects.create(
        project=project, number=1, requested_strategy="margin", strategy="margin"
    )
    for rank, cell in enumerate(Cell.objects.filter(project=project).order_by("pk")[:BATCH_SIZE]):
        QueryItem.objects.create(
            batch=batch, cell=cell, rank=rank, score=0.5, suggestion=suggestion, confidence=0.9
        )
    return batch


def open_batch(browser: Any, base_url: str, project: Project, who: str = "annotator") -> Any:
    page = login(browser, base_url, who, f"pw-{who}-123")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    page.goto(f"{base_url}/projects/{project.pk}/label/")
    page.wait_for_selector(f".tile[data-index='{BATCH_SIZE - 1}']")
    page.locator("#grid").focus()
    return page


def cells(batch: QueryBatch) -> list[int]:
    return list(batch.items.order_by("rank").values_list("cell_id", flat=True))


def submitted(batch: QueryBatch) -> bool:
    return QueryBatch.objects.get(pk=batch.pk).submitted_at is not None


def stays(predicate: Any, what: str, seconds: float = 2.0) -> None:
    """``predicate`` holds now and for the next ``seconds`` (the page's requests have had time to land)."""
    deadline = time.monotonic() + seconds
    while True:
        assert predicate(), what
        if time.monotonic() > deadline:
            return
        time.sleep(0.1)


def flash(page: Any, text: str) -> None:
    wait_for_js(
        page, "t => (document.querySelector('#loop-status .flash')?.textContent || '').includes(t)", text
    )


def test_attribute_panel_enter_on_an_unlabelled_cell_writes_no_label(
    batch: QueryBatch, annotator: User, live_server: Any, browser: Any, screenshot_dir: Path
) -> None:
    project = batch.project
    first, second = cells(batch)[:2]
    page = open_batch(browser, live_server.url, project)
    assert "focused" in (page.locator(".tile[data-index='0']").get_attribute("class") or "")

    # A, → (first attribute, first value), Enter: the panel closes, and the suggestion is NOT accepted.
    page.keyboard.press("a")
    page.wait_for_selector("#attribute-panel:not([hidden])")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    page.wait_for_selector("#attribute-panel", state="hidden")
    stays(lambda: not Annotation.objects.filter(cell_id=first).exists(), "no label written for the cell")
    flash(page, "Attributes kept")
    page.wait_for_selector(".tile[data-index='0'] .pending-attributes")
    page.screenshot(path=screenshot_dir / "01-attributes-kept.png")
    assert "labelled" not in (page.locator(".tile[data-index='0']").get_attribute("class") or "")

    # While the panel is open its keys are its own: a class key, Shift+Enter, X and Z do nothing.
    page.locator(".tile[data-index='1']").click()
    page.keyboard.press("a")
    page.wait_for_selector("#attribute-panel:not([hidden])")
    for key in ("1", "Shift+Enter", "x", "z", "Space"):
        page.keyboard.press(key)
    assert page.locator("#attribute-panel").is_visible()
    page.keyboard.press("Escape")
    page.wait_for_selector("#attribute-panel", state="hidden")
    assert not Annotation.objects.filter(cell_id__in=[first, second]).exists()
    assert not submitted(batch)
    assert QueryItem.objects.get(batch=batch, cell_id=second).skipped_at is None

    # The kept values are saved with the class key pressed on the cell itself.
    page.locator(".tile[data-index='0']").click()
    page.keyboard.press("2")
    page.wait_for_selector(".tile[data-index='0'].labelled")
    attribute = project.attribute_schema[0]
    label = Annotation.objects.get(cell_id=first, annotator=annotator, superseded_by__isnull=True)
    assert label.label is not None and label.label.key == "2"
    assert label.attributes == {attribute["name"]: attribute["values"][0]}
    assert page.errors == []


def test_m_in_the_attribute_panel_takes_the_models_confident_suggestions(
    batch: QueryBatch, annotator: User, live_server: Any, browser: Any, screenshot_dir: Path
) -> None:
    project = batch.project
    size, shape, colour = project.attribute_schema[:3]
    # The model is sure of the first two attributes and unsure of the third (below the project's 0.6).
    suggestions = {
        size["name"]: {"value": size["values"][1], "confidence": 0.91},
        shape["name"]: {"value": shape["values"][0], "confidence": 0.74},
        colour["name"]: {"value": colour["values"][0], "confidence": 0.41},
    }
    QueryItem.objects.filter(batch=batch, rank=0).update(attribute_suggestions=suggestions)
    first = cells(batch)[0]
    page = open_batch(browser, live_server.url, project)
    page.keyboard.press("a")
    page.wait_for_selector("#attribute-panel:not([hidden])")
    outlined = page.locator(".attr-value.suggested")
    assert outlined.count() == 2, "the unsure suggestion is not sent"
    assert outlined.first.get_attribute("data-value") == size["values"][1]
    assert "91%" in (outlined.first.get_attribute("title") or "")
    # The expert sets the second attribute by hand; M fills only the one still without a value.
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("m")
    chosen = {
        b.get_attribute("data-attr"): b.get_attribute("data-value")
        for b in page.locator(".attr-value.chosen").all()
    }
    assert chosen == {size["name"]: size["values"][1], shape["name"]: shape["values"][1]}
    page.set_viewport_size({"width": 1440, "height": 900})  # a hematopathologist's laptop
    page.screenshot(path=screenshot_dir / "07-attribute-suggestions.png")
    # Saved with the label the expert gives, never before.
    page.keyboard.press("Enter")
    page.wait_for_selector("#attribute-panel", state="hidden")
    stays(lambda: not Annotation.objects.filter(cell_id=first).exists(), "no label written by M or Enter")
    page.keyboard.press("1")
    page.wait_for_selector(".tile[data-index='0'].labelled")
    label = Annotation.objects.get(cell_id=first, annotator=annotator, superseded_by__isnull=True)
    assert label.attributes == chosen
    # Another cell has no suggestions: M says so and changes nothing.
    page.locator(".tile[data-index='2']").click()
    page.keyboard.press("a")
    page.wait_for_selector("#attribute-panel:not([hidden])")
    assert page.locator(".attr-value.suggested").count() == 0
    page.keyboard.press("m")
    flash(page, "No attribute suggestions")
    assert page.locator(".attr-value.chosen").count() == 0
    assert page.errors == []


def test_shift_enter_refuses_an_untouched_batch_and_asks_for_a_half_done_one(
    batch: QueryBatch, live_server: Any, browser: Any, screenshot_dir: Path
) -> None:
    page = open_batch(browser, live_server.url, batch.project)

    # Nothing labelled: refused in the page, no dialog, nothing sent.
    page.keyboard.press("Shift+Enter")
    stays(lambda: not submitted(batch), "the untouched batch is not submitted")
    flash(page, "no labelled cell")
    assert not page.locator("#confirm-dialog").is_visible()
    page.click("#submit-batch")
    assert not page.locator("#confirm-dialog").is_visible()
    page.screenshot(path=screenshot_dir / "01-empty-batch-refused.png")
    assert not submitted(batch)

    # One of six labelled: a dialog says five are not; Escape cancels.
    page.locator("#grid").focus()
    page.keyboard.press("1")
    page.wait_for_selector(".tile[data-index='0'].labelled")
    page.keyboard.press("Shift+Enter")
    stays(lambda: not submitted(batch), "the half-done batch is not submitted before the dialog", seconds=1)
    page.wait_for_selector("#confirm-dialog[open]")
    assert "5 cells are not labelled" in page.locator("#confirm-text").inner_text()
    page.screenshot(path=screenshot_dir / "02-confirm-half-done.png")
    page.keyboard.press("Escape")
    page.wait_for_selector("#confirm-dialog", state="hidden")
    flash(page, "not submitted")
    assert not submitted(batch)
    # The dialog held the keys: the Escape did not leak to the grid, nor did anything else get labelled.
    assert Annotation.objects.filter(cell__project=batch.project).count() == 1

    # The button asks too; its Cancel cancels.
    page.click("#submit-batch")
    page.wait_for_selector("#confirm-dialog[open]")
    page.click("#confirm-cancel")
    page.wait_for_selector("#confirm-dialog", state="hidden")
    assert not submitted(batch)

    # Enter in the dialog confirms: the batch is submitted.
    page.locator("#grid").focus()
    page.keyboard.press("Shift+Enter")
    page.wait_for_selector("#confirm-dialog[open]")
    page.keyboard.press("Enter")
    wait_for(lambda: submitted(batch), timeout=10, what="the batch to be submitted")
    flash(page, "submitted")
    assert Annotation.objects.filter(cell__project=batch.project).count() == 1
    assert page.errors == []


def test_z_brings_back_a_skipped_cell(
    batch: QueryBatch, live_server: Any, browser: Any, screenshot_dir: Path
) -> None:
    first = cells(batch)[0]
    page = open_batch(browser, live_server.url, batch.project)
    page.keyboard.press("x")
    page.wait_for_selector(".tile[data-index='0'].skipped")
    assert QueryItem.objects.get(batch=batch, cell_id=first).skipped_at is not None
    page.keyboard.press("z")
    page.wait_for_selector(".tile[data-index='0']:not(.skipped)", timeout=5_000)
    page.screenshot(path=screenshot_dir / "01-unskipped.png")
    assert QueryItem.objects.get(batch=batch, cell_id=first).skipped_at is None
    assert "focused" in (page.locator(".tile[data-index='0']").get_attribute("class") or "")
    assert "0 of 6 done" in page.locator("#batch-progress").inner_text()


@pytest.mark.parametrize(
    ("button", "question", "kind"),
    [
        ("#start-pretrain", "Pretrain a new encoder?", Job.Kind.PRETRAIN),
        ("#start-finetune", "Fine-tune the encoder", Job.Kind.FINETUNE),
    ],
)
def test_training_buttons_ask_first(
    batch: QueryBatch, live_server: Any, browser: Any, button: str, question: str, kind: str
) -> None:
    page = open_batch(browser, live_server.url, batch.project, who="lead")
    page.click(button)
    page.wait_for_selector("#confirm-dialog[open]")
    assert question in page.locator("#confirm-text").inner_text()
    page.keyboard.press("Escape")
    page.wait_for_selector("#confirm-dialog", state="hidden")
    assert not Job.objects.filter(project=batch.project, kind=kind).exists()
    page.click(button)
    page.wait_for_selector("#confirm-dialog[open]")
    page.click("#confirm-ok")
    wait_for(
        lambda: Job.objects.filter(project=batch.project, kind=kind).exists(),
        timeout=10,
        what=f"the {kind} job",
    )


def test_server_strings_are_shown_as_text(batch: QueryBatch, live_server: Any, browser: Any) -> None:
    hostile = '<img src=x onerror="window.__injected = 1">'
    LabelClass.objects.filter(project=batch.project, name="neutrophil").update(display_name=hostile)
    page = open_batch(browser, live_server.url, batch.project)
    assert page.locator(".tile[data-index='0'] .suggestion").inner_text().startswith(hostile)
    page.keyboard.press("1")
    page.wait_for_selector(".tile[data-index='0'].labelled")
    assert page.locator(".tile[data-index='0'] .mine").inner_text() == hostile
    assert page.locator(".tile img:not([alt^='cell'])").count() == 0
    assert page.evaluate("window.__injected") is None
    assert page.errors == []


def test_attribute_suggestions_that_arrive_after_the_batch_reach_the_open_page(
    batch: QueryBatch, live_server: Any, browser: Any
) -> None:
    project = batch.project
    size = project.attribute_schema[0]
    # The retrain wrote the batch before measuring its cells: still running, more suggestions to come.
    retrain = Job.objects.create(project=project, kind=Job.Kind.RETRAIN, status=Job.Status.RUNNING)
    QueryBatch.objects.filter(pk=batch.pk).update(job=retrain, attribute_suggestions_pending=True)
    page = open_batch(browser, live_server.url, project)
    # The expert opens the first cell's panel before its suggestions came, and picks a value.
    page.keyboard.press("a")
    page.wait_for_selector("#attribute-panel:not([hidden])")
    assert page.locator(".attr-value.suggested").count() == 0
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowRight")
    chosen = page.locator(".attr-value.chosen")
    assert chosen.count() == 1
    # The retrain stores them and clears the flag; the page, polling, shows them in the open panel
    # without a reload, and the value the expert picked stays.
    suggestion = {size["name"]: {"value": size["values"][1], "confidence": 0.91}}
    QueryItem.objects.filter(batch=batch, rank=0).update(attribute_suggestions=suggestion)
    QueryBatch.objects.filter(pk=batch.pk).update(attribute_suggestions_pending=False)
    Job.objects.filter(pk=retrain.pk).update(status=Job.Status.SUCCEEDED)
    page.wait_for_selector(f".attr-value.suggested[data-value='{size['values'][1]}']", timeout=15_000)
    assert chosen.count() == 1
    page.keyboard.press("m")  # M takes it: the first attribute had no value yet
    values = {b.get_attribute("data-attr"): b.get_attribute("data-value") for b in chosen.all()}
    assert values[size["name"]] == size["values"][1] and len(values) == 2
    assert page.errors == []

"""The whole loop in a real browser: keyboard labelling, undo, multi-select, unsure -> reviewer, attribute
panel, why/similar, batch submitted -> retrain in a real worker -> next batch from a newer model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.labels import LabelStatus, cell_labels
from annotation.models import Annotation, Membership, Project
from annotation.services.memberships import membership_set
from jobs.models import Job
from jobs.services import job_create
from loop.models import QueryBatch
from tests.browser.conftest import login, wait_for_js
from tests.conftest import WorkerFactory, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.realdata, pytest.mark.django_db(transaction=True)]


def current(annotator: User, cell_id: int) -> Annotation | None:
    return Annotation.objects.filter(cell_id=cell_id, annotator=annotator, superseded_by__isnull=True).first()


def tile(page: Any, index: int) -> Any:
    return page.locator(f".tile[data-index='{index}']")


def test_label_a_batch_by_keyboard_and_get_the_next_from_a_retrained_model(
    loop_project: Project,
    annotator: User,
    lead: User,
    start_worker: WorkerFactory,
    live_server: Any,
    browser: Any,
    screenshot_dir: Path,
) -> None:
    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    # Every suggestion shown, however weak (the default threshold withholds most of an uncertainty batch's):
    # batch 2 below must show model v1's suggestions. Thresholds: tests/browser/test_label_focus.py.
    loop_project.suggestion_min_confidence = 0.0
    loop_project.save()
    reviewer = User.objects.create_user("reviewer", password="pw-reviewer-123")
    membership_set(project=loop_project, user=reviewer, role=Membership.Role.REVIEWER)
    worker = start_worker()
    job_create(kind=Job.Kind.PRETRAIN, project=loop_project)

    page = login(browser, live_server.url, "annotator", "pw-annotator-123")
    page.goto(f"{live_server.url}/projects/{loop_project.pk}/label/")
    page.screenshot(path=screenshot_dir / "01-waiting-for-first-batch.png")
    # The page shows the loop's progress and loads the cold-start batch by itself when it is ready.
    wait_for(
        lambda: QueryBatch.objects.filter(project=loop_project).exists(),
        timeout=240,
        what="batch 1",
        log=worker.log,
    )
    page.wait_for_selector(".tile[data-index='11']", timeout=30_000)
    assert page.locator("#batch-number").inner_text() == "1"
    assert "no model yet" in page.locator("#batch-model").inner_text()
    batch = QueryBatch.objects.get(project=loop_project)
    items = list(batch.items.select_related("cell__reference_label").order_by("rank"))
    key_of = {c.name: c.key for c in loop_project.classes.all()}
    page.screenshot(path=screenshot_dir / "02-first-batch.png")

    # A class key labels the focused cell and moves on; Z undoes it.
    page.locator("#grid").focus()
    page.keyboard.press("1")
    page.wait_for_selector(".tile[data-index='0'].labelled")
    assert (label := current(annotator, items[0].cell_id)) is not None and label.label is not None
    assert label.label.name == "neutrophil" and (label.seconds_spent or 0) > 0
    assert "focused" in (tile(page, 1).get_attribute("class") or "")
    page.keyboard.press("z")
    page.wait_for_selector(".tile[data-index='0']:not(.labelled)")
    assert current(annotator, items[0].cell_id) is None

    # Multi-select: click the first cell, shift+click the third, one key labels all three.
    tile(page, 0).click()
    tile(page, 2).click(modifiers=["Shift"])
    assert page.locator(".tile.selected").count() == 3
    page.keyboard.press(key_of[items[0].cell.reference_label.name])  # type: ignore[union-attr]
    page.wait_for_selector(".tile[data-index='2'].labelled")
    assert {current(annotator, i.cell_id).label.name for i in items[:3]} == {  # type: ignore[union-attr]
        items[0].cell.reference_label.name  # type: ignore[union-attr]
    }

    # Unsure sends the fourth cell to the reviewer queue.
    tile(page, 3).click()
    page.keyboard.press("u")
    page.wait_for_selector(".tile[data-index='3'].unsure")

    # Attribute panel from the keyboard: label the fifth cell, open the panel, pick a value, save.
    tile(page, 4).click()
    page.keyboard.press(key_of[items[4].cell.reference_label.name])  # type: ignore[union-attr]
    page.wait_for_selector(".tile[data-index='4'].labelled")
    tile(page, 4).click()
    page.keyboard.press("a")
    page.wait_for_selector("#attribute-panel:not([hidden])")
    page.keyboard.press("ArrowRight")  # first attribute, first value
    page.screenshot(path=screenshot_dir / "03-attribute-panel.png")
    page.keyboard.press("Enter")
    page.wait_for_selector("#attribute-panel", state="hidden")
    first_attribute = loop_project.attribute_schema[0]
    wait_for(
        lambda: (
            (current(annotator, items[4].cell_id) or Annotation()).attributes
            == {first_attribute["name"]: first_attribute["values"][0]}
        ),
        timeout=10,
        what="the attribute to be saved",
    )

    # Why was this cell chosen? And which cells look like it?
    page.keyboard.press("w")
    page.wait_for_selector("#why-list li")
    assert "typiclust" in page.locator("#why-list").inner_text()
    page.keyboard.press("s")
    page.wait_for_selector("#similar-list figure")
    assert page.locator("#similar-list figure").count() == 8
    assert page.locator("#similar-list img").first.bounding_box()["width"] >= 96

    # Skip the sixth cell; label the rest by their reference class. The last label submits the batch.
    tile(page, 5).click()
    page.keyboard.press("x")
    page.wait_for_selector(".tile[data-index='5'].skipped")
    for index in range(6, len(items)):
        tile(page, index).click()
        page.keyboard.press(key_of[items[index].cell.reference_label.name])  # type: ignore[union-attr]
        page.wait_for_selector(f".tile[data-index='{index}'].labelled")
    page.screenshot(path=screenshot_dir / "04-batch-labelled.png")

    # The retrain runs in the worker; the page loads batch 2, chosen with model v1, without a reload.
    wait_for_js(page, "() => document.getElementById('batch-number')?.textContent === '2'", timeout=120)
    assert "model v1" in page.locator("#batch-model").inner_text()
    # Some tile shows model v1's class. Not necessarily the first: with ~11 labels the cell the hybrid ranks
    # first may lie far from every labelled one and show "unlike the labelled cells" instead (which cell it
    # is depends on the job's id, the strategy's seed; seen once in a fresh-clone run).
    page.wait_for_selector(".tile .suggestion:not(.none)")
    retrain = Job.objects.get(project=loop_project, kind=Job.Kind.RETRAIN)
    assert retrain.status == Job.Status.SUCCEEDED and retrain.result["classifier_version"] == 1
    page.keyboard.press("g")  # saliency overlay of the focused cell
    page.wait_for_selector(".tile.focused img.saliency")
    wait_for_js(page, "() => document.querySelector('.tile.focused img.saliency').naturalWidth > 0")
    page.screenshot(path=screenshot_dir / "05-next-batch-from-model-v1.png")

    # The focused-cell view at 1440x900 with the similar cells, at native size and at 2x (the README's
    # screenshots, docs/screenshots/, come from here), with the default threshold: model v1's weak
    # suggestions are withheld.
    loop_project.suggestion_min_confidence = 0.6
    loop_project.save()
    page.set_viewport_size({"width": 1440, "height": 900})
    page.reload()
    page.wait_for_selector(".tile[data-index='11']")
    page.locator("#grid").focus()
    page.keyboard.press("s")
    wait_for_js(
        page,
        "() => document.getElementById('similar-body').dataset.cell"
        " === document.getElementById('focus-image').dataset.cell",
    )
    wait_for_js(page, "() => [...document.querySelectorAll('#similar-list img')].every(i => i.naturalWidth)")
    page.evaluate("() => window.scrollTo(0, 0)")
    wait_for_js(page, "() => document.getElementById('focus-image').naturalWidth > 0")
    page.screenshot(path=screenshot_dir / "06-focused-cell-1x.jpg", type="jpeg", quality=88)
    page.click("#zoom-2x")
    width = "() => document.getElementById('focus-image').getBoundingClientRect().width"
    assert page.evaluate(width) == 2 * page.evaluate(
        "() => document.getElementById('focus-image').naturalWidth"
    )
    assert page.evaluate("() => window.scrollY") == 0
    page.screenshot(path=screenshot_dir / "07-focused-cell-2x.jpg", type="jpeg", quality=88)
    page.click("#zoom-1x")
    page.set_viewport_size({"width": 1400, "height": 1000})

    # The reviewer sees the unsure cell and decides; the decision is final and the queue empties.
    unsure_cell = items[3].cell
    review = login(browser, live_server.url, "reviewer", "pw-reviewer-123")
    review.goto(f"{live_server.url}/projects/{loop_project.pk}/review/")
    entry = review.locator(f".review-item[data-cell='{unsure_cell.pk}']")
    assert "unsure" in entry.inner_text()
    review.screenshot(path=screenshot_dir / "08-review-queue.png")
    entry.locator("button[value='monocyte']").click()
    review.wait_for_selector("#review-empty")
    state = cell_labels(project=loop_project)[unsure_cell.pk]
    assert (state.status, state.label) == (LabelStatus.LABELLED, "monocyte")
    review.screenshot(path=screenshot_dir / "09-review-done.png")

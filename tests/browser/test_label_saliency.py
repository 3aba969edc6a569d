"""The saliency overlay in a real browser: G on the focused tile lays the server's RGBA overlay over the
cell with a legend, the opacity slider changes the overlay's opacity (and is remembered), G hides both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.contrib.auth.models import User

from annotation.importing.service import LabelMode, import_cells
from annotation.models import Cell, Membership
from annotation.services.memberships import membership_set
from annotation.services.projects import project_create
from learning.saliency import heat_overlay_png
from loop.handlers.inference import saliency_cache_file
from loop.models import ModelVersion, QueryBatch, QueryItem
from tests.browser.conftest import login, wait_for_js
from tests.conftest import ManifestWriter

pytestmark = [
    pytest.mark.browser,
    pytest.mark.realdata,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("jobs_run_here"),
]

BATCH_SIZE = 4


@pytest.fixture
def batch(make_manifest: ManifestWriter, lead: User, annotator: User) -> QueryBatch:
    """Batch 1 of four real cells under an encoder -> index -> classifier chain, with the first cell's
    overlay in the saliency cache (the view serves it without loading a model; the map itself is
    tested in tests/learning)."""
    project = project_create(name="saliency", lead=lead)
    import_cells(project=project, source=make_manifest(per_class=1), labels=LabelMode.REFERENCE)
    membership_set(project=project, user=annotator, role=Membership.Role.ANNOTATOR)
    encoder = ModelVersion.objects.create(project=project, kind=ModelVersion.Kind.ENCODER, version=1)
    index = ModelVersion.objects.create(
        project=project, kind=ModelVersion.Kind.INDEX, version=1, parent=encoder
    )
    classifier = ModelVersion.objects.create(
        project=project, kind=ModelVersion.Kind.CLASSIFIER, version=1, parent=index
    )
    batch = QueryBatch.objects.create(
        project=project, number=1, requested_strategy="margin", strategy="margin"
    )
    suggestion = project.classes.get(name="neutrophil")
    chosen = list(Cell.objects.filter(project=project).order_by("pk")[:BATCH_SIZE])
    for rank, cell in enumerate(chosen):
        QueryItem.objects.create(
            batch=batch, cell=cell, rank=rank, score=0.5, suggestion=suggestion, confidence=0.9
        )
    yy, xx = np.mgrid[:64, :64]
    heat = np.exp(-((yy - 32.0) ** 2 + (xx - 32.0) ** 2) / 150.0).astype(np.float32)
    cached = saliency_cache_file(
        project_id=project.pk, classifier_version=classifier.version, cell_id=chosen[0].pk
    )
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(heat_overlay_png(heat))
    return batch


def overlay_opacity(page: Any) -> float:
    return float(
        page.evaluate("() => getComputedStyle(document.querySelector('.tile.focused img.saliency')).opacity")
    )


def test_g_shows_the_overlay_with_a_legend_and_the_slider_sets_its_opacity(
    batch: QueryBatch, live_server: Any, browser: Any, screenshot_dir: Path
) -> None:
    page = login(browser, live_server.url, "annotator", "pw-annotator-123")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}/projects/{batch.project_id}/label/")
    page.wait_for_selector(f".tile[data-index='{BATCH_SIZE - 1}']")
    page.locator("#grid").focus()
    legend = page.locator("#saliency-legend")
    assert not legend.is_visible() and page.locator("img.saliency").count() == 0

    page.keyboard.press("g")
    page.wait_for_selector(".tile.focused img.saliency")
    wait_for_js(page, "() => document.querySelector('.tile.focused img.saliency').naturalWidth > 0")
    assert legend.is_visible()
    scale = legend.locator(".saliency-scale").bounding_box()
    assert scale is not None and scale["width"] > 100 and scale["height"] > 8
    assert "low" in legend.inner_text() and "high" in legend.inner_text()
    assert overlay_opacity(page) == pytest.approx(0.8)  # the default
    page.screenshot(path=screenshot_dir / "saliency-on.png")

    slider = page.locator("#saliency-opacity")
    slider.fill("30")
    wait_for_js(
        page, "() => getComputedStyle(document.querySelector('.tile.focused img.saliency')).opacity === '0.3'"
    )
    assert page.evaluate("() => localStorage.getItem('leukoloop.saliencyOpacity')") == "30"
    page.screenshot(path=screenshot_dir / "saliency-opacity-30.png")

    # The slider hands the keyboard back to the grid: G hides the overlay and the legend again.
    page.keyboard.press("g")
    page.wait_for_selector("img.saliency", state="detached")
    assert not legend.is_visible()

    # The opacity is remembered across a reload.
    page.reload()
    page.wait_for_selector(f".tile[data-index='{BATCH_SIZE - 1}']")
    page.locator("#grid").focus()
    page.keyboard.press("g")
    page.wait_for_selector(".tile.focused img.saliency")
    assert page.locator("#saliency-opacity").input_value() == "30"
    assert overlay_opacity(page) == pytest.approx(0.3)
    assert errors == []

"""The lead's dashboard in a real browser: Chart.js draws the learning curve with one point per classifier
version, the class counts, per-class F1, the confusion matrix, annotator agreement and the embedding map,
whose points show their cell when hovered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.models import Project
from dashboard.embedding_map import map_path
from loop.models import ModelVersion
from tests.browser.conftest import login, wait_for_js
from tests.conftest import run_queued_jobs
from tests.dashboard import run_loop

pytestmark = [pytest.mark.browser, pytest.mark.realdata, pytest.mark.django_db(transaction=True)]

POINTS = "([id, i]) => Chart.getChart(document.getElementById(id)).data.datasets[i].data.length"


def test_dashboard_draws_the_loop_with_chartjs(
    loop_project: Project,
    lead: User,
    annotator: User,
    live_server: Any,
    browser: Any,
    screenshot_dir: Path,
    jobs_run_here: None,
) -> None:
    second = User.objects.create_user("second", password="pw-second-123")
    run_loop(loop_project, annotator, batches=3, second=second)
    versions = ModelVersion.objects.filter(project=loop_project, kind=ModelVersion.Kind.CLASSIFIER).count()
    assert versions == 3
    # No map yet (as right after a new index): the page must say so and ask again until a job draws it.
    index = ModelVersion.objects.filter(project=loop_project, kind=ModelVersion.Kind.INDEX).get()
    map_path(index).unlink()

    page = login(browser, live_server.url, "lead", "pw-lead-123")
    page.goto(f"{live_server.url}/projects/{loop_project.pk}/dashboard/")
    page.wait_for_selector("#dashboard[data-loaded='true']")
    assert page.evaluate(POINTS, ["curve-chart", 0]) == versions
    assert page.evaluate(POINTS, ["curve-chart", 1]) == versions  # band: lower and upper bound
    assert page.evaluate(POINTS, ["curve-chart", 2]) == versions
    labels = page.evaluate(
        "Chart.getChart(document.getElementById('curve-chart')).data.datasets[0].data.map(p => p.x)"
    )
    assert labels == [12, 24, 36]
    assert page.evaluate(POINTS, ["class-chart", 0]) == loop_project.classes.count()
    assert page.evaluate(POINTS, ["f1-chart", 0]) == 9  # the 9 validation classes
    assert page.locator("#confusion-table tbody tr").count() >= 9
    assert page.locator("#budget-used").inner_text() == "36"
    assert page.locator("#stop-state").get_attribute("data-state") in {"stop", "continue", "too-noisy"}
    assert "Stop labelling when" in page.locator("#stop-rule").inner_text()
    assert page.locator("#annotator-table tbody tr").count() == 2
    pair = page.locator("#pair-table tbody tr").first.inner_text()
    assert "annotator · second" in pair and "36" in pair and "1.000" in pair

    # The embedding map: pending while the job that the page started waits, then all 72 cells, one
    # dataset per colour category.
    page.wait_for_selector("#dashboard[data-map='pending']")
    assert "being drawn in the background" in page.locator("#map-meta").inner_text()
    assert run_queued_jobs() != []  # the map job the page queued
    page.wait_for_selector("#dashboard[data-map='ready']", timeout=60_000)
    total = page.evaluate(
        "Chart.getChart(document.getElementById('map-chart')).data.datasets"
        ".reduce((n, d) => n + d.data.length, 0)"
    )
    assert total == 72
    page.select_option("#map-colour", "prediction")
    page.wait_for_selector("#dashboard[data-map-colour='prediction']")
    legend = page.evaluate(
        "Chart.getChart(document.getElementById('map-chart')).data.datasets.map(d => d.label)"
    )
    assert "no prediction" not in legend and len(legend) >= 2
    # Hovering a point shows its cell image.
    page.locator("#map-chart").scroll_into_view_if_needed()
    x, y = page.evaluate(
        """() => {
          const chart = Chart.getChart(document.getElementById('map-chart'));
          const point = chart.getDatasetMeta(0).data[0];
          const box = chart.canvas.getBoundingClientRect();
          return [box.left + point.x, box.top + point.y];
        }"""
    )
    page.mouse.move(x, y)
    page.wait_for_selector("#map-image:not([hidden])")
    wait_for_js(page, "() => document.getElementById('map-image').naturalWidth > 0")
    assert "/cells/" in (page.locator("#map-image").get_attribute("src") or "")
    page.screenshot(path=screenshot_dir / "01-dashboard.png", full_page=True)
    page.select_option("#map-colour", "uncertainty")
    page.wait_for_selector("#dashboard[data-map-colour='uncertainty']")
    page.locator("#map-card").screenshot(path=screenshot_dir / "02-map-uncertainty.png")

    # The sources table at a lab monitor's 1440x900: every column, the unlike share among them, fits.
    page.set_viewport_size({"width": 1440, "height": 900})
    headers = page.locator("#shift-table thead th").all_inner_texts()
    assert headers[4] == "Unlike"
    shares = page.locator("#shift-table tbody td.unlike").all_inner_texts()
    assert shares and all(share.endswith("%") for share in shares)
    table_width = page.evaluate("document.getElementById('shift-table').getBoundingClientRect().right")
    assert table_width <= 1440
    page.locator("#shift-card").screenshot(path=screenshot_dir / "03-sources-1440.png")

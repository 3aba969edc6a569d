"""The per-slide differential in a real browser: a lead opens it from the dashboard, reads each slide's
expert counts and percentages and the model's predictions for the cells without a label, switches to the
100-cell view and downloads the CSV."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.models import Cell, Membership, Project
from annotation.services.memberships import membership_set
from dashboard.differential import slide_differential
from tests.browser.conftest import login
from tests.dashboard import run_loop

pytestmark = [pytest.mark.browser, pytest.mark.realdata, pytest.mark.django_db(transaction=True)]


def test_a_lead_reads_the_differential_of_each_slide(
    loop_project: Project,
    lead: User,
    annotator: User,
    live_server: Any,
    browser: Any,
    screenshot_dir: Path,
    jobs_run_here: None,
) -> None:
    second = User.objects.create_user("second", password="pw-second-123")
    membership_set(project=loop_project, user=annotator, role=Membership.Role.ANNOTATOR)
    run_loop(loop_project, annotator, batches=1, second=second)
    ids = list(Cell.objects.filter(project=loop_project).order_by("pk").values_list("pk", flat=True))
    slides = {pk: ("S-01" if i % 2 == 0 else "S-02") for i, pk in enumerate(ids)}
    for pk, slide in slides.items():
        Cell.objects.filter(pk=pk).update(slide_id=slide)
    # By hand: the reference label each labelled cell was given, per slide.
    hand: dict[str, Counter[str]] = {"S-01": Counter(), "S-02": Counter()}
    for cell in Cell.objects.filter(project=loop_project, annotations__isnull=False).distinct():
        assert cell.reference_label is not None
        hand[slides[cell.pk]][cell.reference_label.display_name] += 1
    data = slide_differential(loop_project)

    page = login(browser, live_server.url, "lead", "pw-lead-123")
    page.goto(f"{live_server.url}/projects/{loop_project.pk}/dashboard/")
    page.click("#open-differential")
    page.wait_for_selector("#differential-table")
    headers = page.locator("#differential-table thead th").all_inner_texts()
    classes = headers[4:-1]
    assert classes == [c.display_name for c in loop_project.classes.order_by("order", "pk")]
    for slide, counts in hand.items():
        row = page.locator(f"#differential-table tbody tr[data-slide='{slide}']")
        cells = row.locator("td").all_inner_texts()
        n = sum(counts.values())
        assert cells[-1].strip() == str(n)  # counted
        for name, text in zip(classes, cells[3:-1], strict=True):
            k = counts.get(name, 0)
            assert text.split()[0] == str(k), (slide, name, text)
            assert text.split()[1] == f"{100 * k / n:.1f}%", (slide, name, text)
    total = page.locator("#differential-table tfoot td").all_inner_texts()
    assert total[-1].strip() == str(sum(sum(c.values()) for c in hand.values()))

    # The predictions, in their own table, add up to each slide's cells without an expert label.
    assert "classifier version 1" in page.locator("#model-note").inner_text()
    for row in data["slides"]:
        line = page.locator(f"#predicted-table tbody tr[data-slide='{row['slide']}']")
        predicted = line.locator("td").all_inner_texts()
        assert int(predicted[0]) == row["predicted_cells"] == row["cells"] - row["labelled"] > 0
        assert sum(int(t) for t in predicted[1:]) == row["predicted_cells"]
    page.screenshot(path=screenshot_dir / "differential.png", full_page=True)

    page.click("#view-first")
    page.wait_for_url("**view=first100")
    assert "first 100 labelled cells" in page.locator("main").inner_text()
    with page.expect_download() as download_info:
        page.click("#differential-csv")
    download = download_info.value
    assert download.suggested_filename == f"project-{loop_project.pk}-differential-first100.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert [r["slide"] for r in rows] == ["S-01", "S-02", "total"]
    assert int(rows[0]["counted"]) == sum(hand["S-01"].values())
    page.context.close()

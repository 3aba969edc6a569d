"""Two annotators label at once in two browsers with split work and a real worker: each page shows its own
batch, the two share only the agreement sample, every key press lands as its annotator's label, each
finished batch is followed by that annotator's next one, and the lead's dashboard shows both at 100%
agreement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.models import Annotation, Membership, Project
from annotation.services.memberships import membership_set
from jobs.models import Job
from jobs.services import job_create
from loop.models import QueryBatch, QueryItem
from tests.browser.conftest import login, wait_for_js
from tests.conftest import WorkerFactory, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.realdata, pytest.mark.django_db(transaction=True)]


def shown_cells(page: Any) -> set[int]:
    return {
        int(c)
        for c in page.evaluate("() => [...document.querySelectorAll('.tile')].map(t => t.dataset.cell)")
    }


def test_two_annotators_label_their_own_batches_at_once(
    loop_project: Project,
    lead: User,
    start_worker: WorkerFactory,
    live_server: Any,
    browser: Any,
    screenshot_dir: Path,
) -> None:
    people = {name: User.objects.create_user(name, password=f"pw-{name}-123") for name in ("ana", "ben")}
    for user in people.values():
        membership_set(project=loop_project, user=user, role=Membership.Role.ANNOTATOR)
    Project.objects.filter(pk=loop_project.pk).update(split_work=True, overlap_fraction=0.25, gold_fraction=0)
    worker = start_worker()
    job_create(kind=Job.Kind.PRETRAIN, project=loop_project)
    pages = {name: login(browser, live_server.url, name, f"pw-{name}-123") for name in people}
    for page in pages.values():
        page.goto(f"{live_server.url}/projects/{loop_project.pk}/label/")
    wait_for(
        lambda: QueryBatch.objects.filter(project=loop_project, assignee__isnull=False).count() == 2,
        timeout=240,
        what="a batch for each annotator",
        log=worker.log,
    )
    for page in pages.values():
        page.wait_for_selector(".tile[data-index='11']", timeout=30_000)
    first = {
        name: QueryBatch.objects.get(project=loop_project, assignee=user) for name, user in people.items()
    }
    cells = {name: shown_cells(page) for name, page in pages.items()}
    for name, page in pages.items():
        assert page.locator("#batch-number").inner_text() == str(first[name].number)
        assert cells[name] == set(first[name].items.values_list("cell_id", flat=True))
    agreement_cells = set(
        QueryItem.objects.filter(batch__in=first.values(), purpose=QueryItem.Purpose.OVERLAP).values_list(
            "cell_id", flat=True
        )
    )
    assert len(agreement_cells) == 6  # 3 of each batch of 12
    assert cells["ana"] & cells["ben"] == agreement_cells
    pages["ana"].screenshot(path=screenshot_dir / "01-ana-batch.png")
    pages["ben"].screenshot(path=screenshot_dir / "02-ben-batch.png")

    # Both label by keyboard, key presses interleaved: "1" (neutrophil) on every cell of their own batch.
    for page in pages.values():
        page.locator("#grid").focus()
    for k in range(12):
        for page in pages.values():
            page.keyboard.press("1")
        for page in pages.values():
            if k < 11:  # the 12th finishes the batch, and the page moves on to the next one by itself
                page.wait_for_selector(f".tile[data-index='{k}'].labelled")
    # (The pages move on to the next batch by themselves once theirs is done: the labels are checked
    # where they land.)
    for name, user in people.items():

        def labelled_all(user: User = user, mine: set[int] = cells[name]) -> bool:
            current = Annotation.objects.filter(annotator=user, superseded_by__isnull=True, cell_id__in=mine)
            return current.count() == 12

        wait_for(labelled_all, timeout=20, what=f"{name}'s 12 labels")
    assert Annotation.objects.filter(cell__project=loop_project, origin="manual").count() == 24

    # A finished batch is submitted by itself; each annotator's next batch comes from the retrained model.
    wait_for(
        lambda: all(
            QueryBatch.objects.filter(project=loop_project, assignee=user, submitted_at__isnull=True)
            .exclude(pk=first[name].pk)
            .exists()
            for name, user in people.items()
        ),
        timeout=240,
        what="each annotator's second batch",
        log=worker.log,
    )
    for name, page in pages.items():
        second = QueryBatch.objects.get(
            project=loop_project, assignee=people[name], submitted_at__isnull=True
        )
        wait_for_js(
            page,
            "(n) => document.querySelector('#batch-number')?.textContent === String(n)",
            second.number,
            timeout=30,
        )
        assert second.classifier is not None
        shown = shown_cells(page)
        assert shown == set(second.items.values_list("cell_id", flat=True))
        # New cells from the strategy; an agreement cell may be one the other annotator labelled
        # already (a second look), never one this annotator has seen.
        kinds = dict(second.items.values_list("cell_id", "purpose"))
        assert not {c for c, p in kinds.items() if p == "query"} & (cells["ana"] | cells["ben"])
        assert not shown & cells[name]
    pages["ana"].screenshot(path=screenshot_dir / "03-ana-second-batch.png")

    # The lead's dashboard: both annotators, 12 labels each, agreeing on all 6 shared cells.
    dashboard = login(browser, live_server.url, "lead", "pw-lead-123")
    dashboard.goto(f"{live_server.url}/projects/{loop_project.pk}/dashboard/")
    dashboard.wait_for_selector("#annotator-table tbody tr[data-annotator='ben']")
    for name in people:
        row = dashboard.locator(f"#annotator-table tbody tr[data-annotator='{name}'] td")
        assert row.nth(1).inner_text() == "12"
        assert row.nth(5).inner_text() == "1.000"
        assert row.nth(7).inner_text().startswith("batch ")
    dashboard.screenshot(path=screenshot_dir / "04-dashboard-annotators.png", full_page=True)

"""A lead in a real browser: changes a setting and sees it saved, adds nobody (only admins may), then
starts a CSV export of real cells on the exports page, watches it finish and downloads the file; a
project admin adds a member on the same settings page."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.models import Membership, Project
from annotation.services.memberships import membership_set
from tests.browser.conftest import login
from tests.conftest import run_queued_jobs

pytestmark = [pytest.mark.browser, pytest.mark.realdata, pytest.mark.django_db(transaction=True)]


def test_settings_members_and_an_export_in_the_browser(
    loop_project: Project,
    lead: User,
    live_server: Any,
    browser: Any,
    screenshot_dir: Path,
    jobs_run_here: None,
) -> None:
    admin = User.objects.create_user("padmin", password="pw-padmin-123")
    membership_set(project=loop_project, user=admin, role=Membership.Role.ADMIN)
    User.objects.create_user("newcomer", password="pw-newcomer-123")

    page = login(browser, live_server.url, "lead", "pw-lead-123")
    page.goto(f"{live_server.url}/projects/{loop_project.pk}/")
    page.click("#open-settings")
    page.fill("#id_label_budget", "640")
    page.select_option("#id_query_strategy", "margin")
    page.click("#save-settings")
    page.wait_for_selector("text=Settings saved (label_budget, query_strategy changed).")
    loop_project.refresh_from_db()
    assert (loop_project.label_budget, loop_project.query_strategy) == (640, "margin")
    # A team's settings: split work and a class weight (a misspelt class is refused by the field).
    page.check("#id_split_work")
    page.fill("#id_class_weights", '{"blasst": 3}')
    page.click("#save-settings")
    page.wait_for_selector("p.error[data-field='class_weights']")
    assert "blasst" in page.locator("p.error[data-field='class_weights']").inner_text()
    page.fill("#id_class_weights", '{"blast": 3}')
    page.check("#id_split_work")
    page.click("#save-settings")
    page.wait_for_selector("text=Settings saved (class_weights, split_work changed).")
    loop_project.refresh_from_db()
    assert (loop_project.class_weights, loop_project.split_work) == ({"blast": 3}, True)
    page.fill("#id_query_batch_size", "0")  # refused, with the reason next to the field
    page.click("#save-settings")
    page.wait_for_selector("p.error[data-field='query_batch_size']")
    assert page.locator("#member-add").count() == 0  # a lead cannot add members
    page.screenshot(path=screenshot_dir / "01-settings-lead.png", full_page=True)

    page.goto(f"{live_server.url}/projects/{loop_project.pk}/")
    page.click("#open-exports")
    page.wait_for_selector("#export-empty:not([hidden])")
    page.select_option("#export-format", "csv")
    page.click("#start-export")
    page.wait_for_selector("#export-table tbody tr[data-status='queued']")
    assert run_queued_jobs() != []
    page.wait_for_selector("#export-table tbody tr[data-status='succeeded'] a.download")
    with page.expect_download() as download:
        page.click("#export-table a.download")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(rows) == 72 and {"path", "label", "annotations", "predicted_label"} <= set(rows[0])
    page.screenshot(path=screenshot_dir / "02-exports.png", full_page=True)

    page = login(browser, live_server.url, "padmin", "pw-padmin-123")
    page.goto(f"{live_server.url}/projects/{loop_project.pk}/settings/")
    page.fill("#id_username", "newcomer")
    page.select_option("#id_role", "reviewer")
    page.click("#member-add button[type=submit]")
    page.wait_for_selector("#members tr[data-user='newcomer']")
    assert Membership.objects.get(project=loop_project, user__username="newcomer").role == "reviewer"
    page.screenshot(path=screenshot_dir / "03-members-admin.png", full_page=True)

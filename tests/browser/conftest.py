"""Playwright driving Debian's chromium (installed by `make test`; no browser download)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, REPO

CHROMIUM = Path(os.environ.get("LEUKOLOOP_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = REPO / "test-artifacts" / "browser"

# Playwright's sync API runs an event loop in the test thread; the test's own ORM calls are still
# synchronous and safe, so Django's guard against ORM use inside a running loop is lifted here.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        message = f"{CHROMIUM} is missing: `make test` installs Debian's chromium"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def screenshot_dir(request: pytest.FixtureRequest) -> Path:
    """Screenshots are kept as test artefacts under test-artifacts/browser/<test name>/."""
    folder = SCREENSHOTS / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def login(browser: Any, base_url: str, username: str, password: str) -> Any:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")
    return page


@pytest.fixture
def jobs_run_here(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests that run queued jobs themselves (``run_queued_jobs``): artifacts in the test's folder, and
    committed jobs never reach the broker, where a later test's worker would find them."""
    from jobs import dispatch

    settings.LEUKOLOOP_ARTIFACTS_DIR = tmp_path / "artifacts"
    monkeypatch.setattr(dispatch, "send_job", lambda *args, **kwargs: None)

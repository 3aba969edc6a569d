"""Playwright driving Debian's chromium (installed by `make test`; no browser download)."""

from __future__ import annotations

import os
import time
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


def wait_for_js(page: Any, expression: str, arg: Any = None, *, timeout: float = 20.0) -> Any:
    """Poll ``expression`` (a JS function of ``arg``) until it returns something truthy.

    Instead of ``page.wait_for_function``: that one polls by calling ``eval`` inside the page, which the
    site's Content-Security-Policy forbids (no 'unsafe-eval'), so any wait that is not met at once fails.
    ``page.evaluate`` goes through the DevTools protocol, which the policy does not govern."""
    deadline = time.monotonic() + timeout
    while True:
        result = page.evaluate(expression, arg)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {expression}")
        time.sleep(0.1)

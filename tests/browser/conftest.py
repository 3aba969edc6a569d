"""Playwright driving Debian's chromium (installed by `make test`; no browser download)."""

from __future__ import annotations

import contextlib
import os
import threading
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
def chromium() -> Iterator[Any]:
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


class InFlightRequests:
    """Counts the live server's requests still being answered (Django's request signals)."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def started(self, **kwargs: Any) -> None:
        with self.lock:
            self.count += 1

    def finished(self, **kwargs: Any) -> None:
        with self.lock:
            self.count -= 1

    def wait_until_idle(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count > 0 and time.monotonic() < deadline:
            time.sleep(0.05)


class ContextsClosedAtTeardown:
    """The session's chromium, handing out contexts that the test's teardown closes."""

    def __init__(self, chromium: Any) -> None:
        self._chromium = chromium
        self.contexts: list[Any] = []

    def new_context(self, **kwargs: Any) -> Any:
        context = self._chromium.new_context(**kwargs)
        self.contexts.append(context)
        return context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chromium, name)


@pytest.fixture
def browser(chromium: Any, live_server: Any) -> Iterator[Any]:
    """Chromium for one test. Its pages are closed, and the live server's answers to them finished,
    before the test database is flushed: a page left open keeps polling the loop API, and a request
    still in flight when the flush's TRUNCATE runs made the flush fail (and the next test with it)."""
    from django.core.signals import request_finished, request_started

    in_flight = InFlightRequests()
    request_started.connect(in_flight.started)
    request_finished.connect(in_flight.finished)
    tracked = ContextsClosedAtTeardown(chromium)
    try:
        yield tracked
    finally:
        for context in tracked.contexts:
            with contextlib.suppress(Exception):  # already closed by the test, or the browser went away
                context.close()
        in_flight.wait_until_idle()
        request_started.disconnect(in_flight.started)
        request_finished.disconnect(in_flight.finished)


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

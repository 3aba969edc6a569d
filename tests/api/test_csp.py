"""A strict Content-Security-Policy on every page: each URL of the page permission matrix, the API docs and
the error pages carry the header; scripts and styles come from this server only (no 'unsafe-inline', no
'unsafe-eval'), and the HTML has nothing inline that the policy would block (an inline script or style
without the response's nonce, a style="" attribute, an on...="" handler).

tests/browser/test_hostile_names.py loads the same pages in Chromium with hostile names and fails on any
violation the browser reports.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from tests.api.conftest import World
from tests.api.test_page_permissions import PAGES, content, ids, pages, saliency_servable
from tests.conftest import client_for

__all__ = ["pages"]  # the fixture, used by the tests below

pytestmark = pytest.mark.django_db

GETS = [case for case in PAGES if case.method == "GET"]


def policy(response: Any) -> dict[str, list[str]]:
    header = response.get("Content-Security-Policy", "")
    assert header, (response.status_code, response.get("Content-Type"))
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


def assert_strict(response: Any) -> dict[str, list[str]]:
    found = policy(response)
    assert found["default-src"] == ["'self'"], found
    for kind in ("script-src", "style-src"):
        sources = found.get(kind, found["default-src"])
        assert "'unsafe-inline'" not in sources and "'unsafe-eval'" not in sources, (kind, sources)
        assert "*" not in sources and not any(s.startswith(("http:", "https:", "data:")) for s in sources)
    assert found["object-src"] == ["'none'"]
    assert found["base-uri"] == ["'none'"]
    assert found["frame-ancestors"] == ["'none'"]
    assert found["form-action"] == ["'self'"]
    return found


INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc=)([^>]*)>", re.I)
INLINE_STYLE = re.compile(r"<style\b([^>]*)>", re.I)
HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)
STYLE_ATTRIBUTE = re.compile(r"<[^>]+\sstyle\s*=", re.I)


def assert_nothing_inline_is_blocked(response: Any, found: dict[str, list[str]], html: str) -> None:
    nonces = {s[len("'nonce-") : -1] for s in found.get("script-src", []) if s.startswith("'nonce-")}
    for attributes in INLINE_SCRIPT.findall(html):
        if "application/json" in attributes or "application/ld+json" in attributes:
            continue  # data, never run
        nonce = re.search(r'nonce="([^"]+)"', attributes)
        assert nonce and nonce.group(1) in nonces, f"inline <script{attributes}> would be blocked"
    style_nonces = {s[len("'nonce-") : -1] for s in found.get("style-src", []) if s.startswith("'nonce-")}
    for attributes in INLINE_STYLE.findall(html):
        nonce = re.search(r'nonce="([^"]+)"', attributes)
        assert nonce and nonce.group(1) in style_nonces, f"inline <style{attributes}> would be blocked"
    assert not HANDLER.search(html), HANDLER.search(html)
    assert not STYLE_ATTRIBUTE.search(html), STYLE_ATTRIBUTE.search(html)


@pytest.mark.parametrize("role", ["superuser", None], ids=["superuser", "anonymous"])
@pytest.mark.parametrize("case", GETS, ids=lambda c: c.name)
def test_every_page_has_a_strict_policy(pages: World, role: str | None, case: Any) -> None:
    if case.name == "cell-saliency":
        saliency_servable(pages)
    client = client_for(pages.users[role]) if role else Client()
    response = client.get(case.url.format(**ids(pages, role or "anonymous")))
    data = content(response)
    found = assert_strict(response)
    if response.get("Content-Type", "").startswith("text/html"):
        assert_nothing_inline_is_blocked(response, found, data.decode())


@pytest.mark.parametrize(
    "url", ["/admin/login/", "/admin/auth/user/", "/admin/annotation/project/", "/no-such-page/"]
)
def test_admin_and_error_pages_have_it_too(pages: World, url: str) -> None:
    response = client_for(pages.users["superuser"]).get(url)
    assert response.status_code in (200, 302, 404)
    found = assert_strict(response)
    if response.get("Content-Type", "").startswith("text/html"):
        assert_nothing_inline_is_blocked(response, found, response.content.decode())


def test_api_docs_page_gets_only_what_swagger_ui_needs(pages: World) -> None:
    """Swagger UI's page: its init script is a file of its own (not inline), its CSS draws icons from
    data: URLs; nothing else is widened."""
    client = client_for(pages.users["lead"])
    page = client.get("/api/docs/")
    assert page.status_code == 200
    found = assert_strict(page)
    assert_nothing_inline_is_blocked(page, found, page.content.decode())
    assert found["img-src"] == ["'self'", "data:"]
    script = re.search(r'<script src="([^"]*script[^"]*)"', page.content.decode())
    assert script, page.content.decode()[-800:]
    init = client.get(script.group(1).replace("&amp;", "&"))
    assert init.status_code == 200 and "SwaggerUIBundle" in init.content.decode()
    # Other pages keep images to this server.
    assert policy(client.get("/"))["img-src"] == ["'self'"]

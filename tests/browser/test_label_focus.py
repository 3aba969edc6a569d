"""The labelling page as an instrument, in a real browser at 1440x900 on real cells: the focused cell at
its natural size and at 2x with brightness and contrast, every panel in view while the grid scrolls,
labelled tiles fully readable, the tile size and blind mode kept on the server for the user, and
suggestions below the lead's threshold never shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.importing.service import LabelMode, import_cells
from annotation.models import Annotation, Cell, Membership, PagePreferences
from annotation.services.memberships import membership_set
from annotation.services.projects import project_create
from loop.models import QueryBatch, QueryItem
from tests.browser.conftest import wait_for_js
from tests.conftest import ManifestWriter, wait_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.realdata,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("jobs_run_here"),
]

WIDTH, HEIGHT = 1440, 900
# The model's confidence in its suggestion (neutrophil) for each cell of the batch, in rank order: with
# the project's threshold at 0.6, cells 1, 2 and 4 get none shown (0.59 is below, 0.6 is not).
CONFIDENCES = [0.9, 0.4, 0.59, 0.6, None, 0.95]


@pytest.fixture
def batch(make_manifest: ManifestWriter, lead: User, annotator: User) -> QueryBatch:
    """Batch 1 of 27 real cells (three of each class), the first six with suggestions of CONFIDENCES."""
    project = project_create(name="focus", lead=lead)
    project.suggestion_min_confidence = 0.6
    project.save()
    import_cells(project=project, source=make_manifest(per_class=3), labels=LabelMode.REFERENCE)
    membership_set(project=project, user=annotator, role=Membership.Role.ANNOTATOR)
    neutrophil = project.classes.get(name="neutrophil")
    batch = QueryBatch.objects.create(
        project=project, number=1, requested_strategy="margin", strategy="margin"
    )
    for rank, cell in enumerate(Cell.objects.filter(project=project).order_by("pk")):
        confidence = CONFIDENCES[rank] if rank < len(CONFIDENCES) else 0.8
        QueryItem.objects.create(
            batch=batch,
            cell=cell,
            rank=rank,
            score=0.5,
            suggestion=neutrophil if confidence is not None else None,
            confidence=confidence,
        )
    return batch


def open_page(browser: Any, base_url: str, batch: QueryBatch, who: str = "annotator") -> Any:
    """A new browser context (its own cookies: another browser) at 1440x900, logged in, on the page."""
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", who)
    page.fill("input[name=password]", f"pw-{who}-123")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")
    page.goto(f"{base_url}/projects/{batch.project.pk}/label/")
    page.wait_for_selector(".tile[data-index='26']")
    page.locator("#grid").focus()
    return page


def focus_image(page: Any) -> dict[str, Any]:
    """The focused image once loaded: its natural width and its rendered box and filter."""
    wait_for_js(page, "() => document.getElementById('focus-image').naturalWidth > 0")
    return page.evaluate(
        """() => {
          const img = document.getElementById('focus-image');
          const box = img.getBoundingClientRect();
          return {natural: img.naturalWidth, naturalHeight: img.naturalHeight, width: box.width,
                  height: box.height, cell: img.dataset.cell, filter: getComputedStyle(img).filter};
        }"""
    )


def in_viewport(page: Any, selector: str) -> None:
    box = page.locator(selector).bounding_box()
    assert box is not None, f"{selector} is not shown"
    assert box["x"] >= 0 and box["y"] >= 0, (selector, box)
    assert box["x"] + box["width"] <= WIDTH and box["y"] + box["height"] <= HEIGHT, (selector, box)


def test_focused_view_at_native_size_and_2x_with_brightness_contrast_and_every_panel_in_view(
    batch: QueryBatch, annotator: User, live_server: Any, browser: Any, screenshot_dir: Path
) -> None:
    page = open_page(browser, live_server.url, batch)
    first, second = batch.items.order_by("rank").values_list("cell_id", flat=True)[:2]

    # 1x: one image pixel per CSS pixel (the test browser draws one CSS pixel per device pixel).
    image = focus_image(page)
    assert image["cell"] == str(first)
    assert image["natural"] == 224 and image["width"] == image["natural"]
    assert image["height"] == image["naturalHeight"]
    assert page.evaluate("() => window.devicePixelRatio") == 1
    assert page.evaluate("() => window.scrollY") == 0
    for selector in ("#focus-view", "#similar-panel", "#classes-card", "#detail-panel"):
        in_viewport(page, selector)  # at the top of the page too, not only once the grid is scrolled
    page.screenshot(path=screenshot_dir / "01-focus-1x.png")

    # 2x by its button, then + and - step the zoom; the frame keeps its size and scrolls.
    page.click("#zoom-2x")
    assert focus_image(page)["width"] == 2 * image["natural"]
    assert page.locator("#zoom-value").inner_text() == "2x"
    page.keyboard.press("+")
    assert focus_image(page)["width"] == 3 * image["natural"]
    page.keyboard.press("-")
    page.keyboard.press("-")
    assert focus_image(page)["width"] == 1.5 * image["natural"]
    page.click("#zoom-1x")
    assert focus_image(page)["width"] == image["natural"]

    # Brightness and contrast are CSS filters of the focused image only.
    assert focus_image(page)["filter"] == "none"
    page.locator("#brightness").fill("150")
    page.locator("#contrast").fill("80")
    assert focus_image(page)["filter"] == "brightness(1.5) contrast(0.8)"
    tile_filter = page.evaluate("() => getComputedStyle(document.querySelector('.tile img')).filter")
    assert tile_filter == "none"
    page.click("#adjust-reset")
    assert focus_image(page)["filter"] == "none"

    # The focus follows the arrow keys, and the view shows the newly focused cell.
    page.locator("#grid").focus()
    page.keyboard.press("ArrowRight")
    wait_for_js(page, "c => document.getElementById('focus-image').dataset.cell === c", str(second))
    assert focus_image(page)["width"] == 224

    # A labelled tile stays fully readable: no fading, a badge instead.
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("1")
    page.wait_for_selector(".tile[data-index='0'].labelled .done-badge")
    opacity = page.evaluate(
        "() => getComputedStyle(document.querySelector(\".tile[data-index='0'] .frame\")).opacity"
    )
    assert opacity == "1"
    assert Annotation.objects.filter(cell_id=first, annotator=annotator).exists()

    # At 1440x900 the focused view, the classes and the why panel are all in view, also with the grid
    # scrolled to its end (the panels are sticky); then the attribute panel, open, too.
    page.keyboard.press("w")
    page.wait_for_selector("#why-list li")
    for selector in ("#focus-view", "#focus-frame", "#similar-panel", "#classes-card", "#detail-panel"):
        in_viewport(page, selector)
    page.screenshot(path=screenshot_dir / "02-panels-in-view.png")
    assert page.evaluate("() => document.documentElement.scrollHeight") > HEIGHT, "the grid should scroll"
    page.locator(".tile[data-index='26']").click()
    page.evaluate("() => window.scrollTo(0, document.documentElement.scrollHeight)")
    page.wait_for_timeout(200)
    assert page.evaluate("() => window.scrollY") > 0
    for selector in ("#focus-view", "#focus-frame", "#similar-panel", "#classes-card", "#detail-panel"):
        in_viewport(page, selector)
    page.keyboard.press("a")
    page.wait_for_selector("#attribute-panel:not([hidden])")
    in_viewport(page, "#attribute-panel")
    in_viewport(page, "#focus-view")
    page.screenshot(path=screenshot_dir / "03-attributes-in-view.png")
    page.keyboard.press("Escape")
    assert page.errors == []


def test_tile_size_is_kept_for_the_user_across_reloads_and_browsers(
    batch: QueryBatch, annotator: User, lead: User, live_server: Any, browser: Any
) -> None:
    page = open_page(browser, live_server.url, batch)
    assert page.locator("#tile-size").get_attribute("max") == "448"
    frame_width = "() => document.querySelector('.tile .frame').getBoundingClientRect().width"
    assert page.evaluate(frame_width) == 160  # the default

    page.locator("#tile-size").fill("224")  # fires input and change, as letting go of the slider does
    assert page.evaluate(frame_width) == 224
    wait_for(
        lambda: PagePreferences.objects.filter(user=annotator, tile_size=224).exists(),
        timeout=10,
        what="the tile size to be saved",
    )
    page.reload()
    page.wait_for_selector(".tile[data-index='26']")
    assert page.locator("#tile-size").input_value() == "224"
    assert page.evaluate(frame_width) == 224

    # Another browser (a fresh context, new cookies): the same size. Another user: their own default.
    elsewhere = open_page(browser, live_server.url, batch)
    assert elsewhere.evaluate(frame_width) == 224
    membership_set(project=batch.project, user=lead, role=Membership.Role.LEAD)
    theirs = open_page(browser, live_server.url, batch, who="lead")
    assert theirs.evaluate(frame_width) == 160
    assert not PagePreferences.objects.filter(user=lead).exists()
    assert page.errors == [] and elsewhere.errors == []


def suggestions(page: Any) -> list[str]:
    """The suggestion line of each tile, "" where there is none."""
    return page.evaluate(
        """() => [...document.querySelectorAll('.tile')].map(
             t => t.querySelector('.suggestion')?.textContent || '')"""
    )


def test_suggestions_below_the_threshold_are_not_shown_and_blind_mode_hides_them_all(
    batch: QueryBatch, annotator: User, live_server: Any, browser: Any, screenshot_dir: Path
) -> None:
    cells = list(batch.items.order_by("rank").values_list("cell_id", flat=True))
    page = open_page(browser, live_server.url, batch)
    shown = suggestions(page)[: len(CONFIDENCES)]
    assert shown == [
        "Neutrophil 90%",
        "no confident suggestion",
        "no confident suggestion",
        "Neutrophil 60%",
        "no suggestion yet",
        "Neutrophil 95%",
    ]
    assert "Neutrophil 90%" in page.locator("#focus-caption").inner_text()

    # Enter on a cell whose suggestion is withheld writes nothing: there is nothing to accept.
    page.locator(".tile[data-index='1']").click()
    page.keyboard.press("Enter")
    wait_for_js(
        page,
        "() => document.querySelector('#loop-status .flash')?.textContent.includes('press the class key')",
    )
    assert not Annotation.objects.filter(cell_id=cells[1]).exists()
    assert "Neutrophil" not in page.locator("#focus-caption").inner_text()

    # B: blind mode, kept on the server; no tile shows a suggestion, Enter accepts none.
    page.keyboard.press("b")
    wait_for(
        lambda: PagePreferences.objects.filter(user=annotator, blind_mode=True).exists(),
        timeout=10,
        what="blind mode to be saved",
    )
    wait_for_js(page, "() => !document.querySelector('.tile .suggestion')")
    assert page.locator("#blind-mode").get_attribute("aria-pressed") == "true"
    page.locator(".tile[data-index='0']").click()
    page.keyboard.press("Enter")
    wait_for_js(
        page, "() => document.querySelector('#loop-status .flash')?.textContent.includes('Blind mode')"
    )
    assert not Annotation.objects.filter(cell_id=cells[0]).exists()
    page.screenshot(path=screenshot_dir / "01-blind-mode.png")

    # After a reload (and in the batch the server sends) it is still blind.
    page.reload()
    page.wait_for_selector(".tile[data-index='26']")
    assert page.locator(".tile .suggestion").count() == 0
    assert "Neutrophil" not in page.locator("#grid").inner_text()
    assert page.locator("#blind-mode").get_attribute("aria-pressed") == "true"

    # B again: the suggestions above the threshold are back.
    page.locator("#grid").focus()
    page.keyboard.press("b")
    wait_for_js(page, "() => document.querySelectorAll('.tile .suggestion:not(.none)').length > 0")
    assert suggestions(page)[:2] == ["Neutrophil 90%", "no confident suggestion"]
    assert not PagePreferences.objects.get(user=annotator).blind_mode
    assert page.errors == []

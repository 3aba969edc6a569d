"""An expert at the keyboard on the labelling page, for tests/browser/test_label_session.py and
bench/label_session.py: for the focused cell press the class key of its reference label (the caller reads it
from the database; the page never shows it), let the page move the focus on, and submit with Shift+Enter
unless the page has already submitted the batch itself. Every key press is counted.

The latency of each label is measured inside the page, all on its ``performance.now()`` clock:
- ``keydown``: the key event's ``timeStamp`` (a capturing listener on ``window``, ahead of the page's own),
- ``post``: the ``responseEnd`` of the label's POST (Resource Timing, through a ``PerformanceObserver``),
- ``dom``: a ``MutationObserver`` on the grid sees the cell's tile marked ``labelled`` (the page marks a
  tile only once the server has answered with the saved annotation),
- ``frame``: the first animation frame after that mutation, i.e. the frame that paints the tile as saved.
The label action's latency is ``frame - keydown``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Installed once per page load with ``page.evaluate`` (the page's CSP forbids inline scripts, not DevTools).
PROBES = """annotatePath => {
  if (window.__expert) return;
  const probe = { keys: [], posts: [], saved: {} };
  window.__expert = probe;
  performance.setResourceTimingBufferSize(100000);
  window.addEventListener("keydown", (event) => {
    const focused = document.querySelector("#grid .tile.focused");
    const cell = focused ? Number(focused.dataset.cell) : null;
    probe.keys.push({ key: event.key, t: event.timeStamp, cell });
  }, { capture: true });
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (e.initiatorType === "fetch" && new URL(e.name).pathname === annotatePath) {
        probe.posts.push({ start: e.startTime, end: e.responseEnd });
      }
    }
  }).observe({ type: "resource" });
  const grid = document.getElementById("grid");
  new MutationObserver(() => {
    const now = performance.now();
    for (const tile of grid.querySelectorAll(".tile.labelled")) {
      const cell = tile.dataset.cell;
      if (cell in probe.saved) continue;
      const mark = { dom: now, frame: null };
      probe.saved[cell] = mark;
      requestAnimationFrame(() => { mark.frame = performance.now(); });
    }
  }).observe(grid, { childList: true });
}"""

# The focused tile and how many tiles are still open (neither labelled, unsure nor skipped).
GRID_STATE = """() => {
  const tiles = [...document.querySelectorAll("#grid .tile")];
  const done = (t) => t.classList.contains("labelled") || t.classList.contains("unsure")
    || t.classList.contains("skipped");
  const focused = tiles.find((t) => t.classList.contains("focused"));
  return {
    batch: document.getElementById("batch-number")?.textContent || null,
    tiles: tiles.length,
    open: tiles.filter((t) => !done(t)).length,
    cell: focused ? Number(focused.dataset.cell) : null,
    focusedDone: focused ? done(focused) : null,
  };
}"""


@dataclass
class Expert:
    """A keyboard session on one labelling page; ``presses`` lists every key (a chord such as Shift+Enter
    is one press)."""

    page: Any
    annotate_path: str
    presses: list[str] = field(default_factory=list)
    labelled_cells: list[int] = field(default_factory=list)

    def install_probes(self) -> None:
        self.page.evaluate(PROBES, self.annotate_path)

    def press(self, key: str) -> None:
        self.presses.append(key)
        self.page.keyboard.press(key)

    def grid(self) -> dict[str, Any]:
        return dict(self.page.evaluate(GRID_STATE))

    def label_batch(
        self,
        key_of_cell: Callable[[int], str],
        *,
        think_seconds: float = 0.0,
        screenshot: Path | None = None,
        timeout_ms: float = 20_000,
    ) -> int:
        """Label every open cell of the batch on screen, one key each; returns how many were labelled.
        ``screenshot``: a JPEG of the page halfway through (taken between two labels, outside any timing)."""
        state = self.grid()
        half = state["open"] // 2
        count = 0
        while state["open"]:
            cell = state["cell"]
            assert cell is not None, "no focused cell while cells are open"
            # The page's own focus advance must have moved on to an open cell: labelling the focused cell
            # again would be a wasted key (or a silent relabel).
            assert not state["focusedDone"], f"the focus stayed on a done cell ({cell})"
            if think_seconds:
                time.sleep(think_seconds)
            self.press(key_of_cell(cell))
            self.page.wait_for_selector(f"#grid .tile[data-cell='{cell}'].labelled", timeout=timeout_ms)
            self.labelled_cells.append(cell)
            count += 1
            if screenshot is not None and count == half:
                self.page.screenshot(path=screenshot, type="jpeg", quality=60)
            state = self.grid()
        return count

    def submit(self, submitted: Callable[[], bool], *, grace_seconds: float = 3.0) -> str:
        """Submit the batch: the page submits it by itself when its last cell is labelled (README,
        "Labelling"); only if it has not within ``grace_seconds`` press Shift+Enter (and Enter on the
        confirm dialog, if one opens). Returns how it was submitted."""
        if poll(submitted, grace_seconds):
            return "by the page (last cell labelled)"
        self.press("Shift+Enter")
        how = "Shift+Enter"
        if poll(lambda: bool(self.page.locator("#confirm-dialog[open]").count()), 1.0):
            self.press("Enter")
            how += ", Enter on the dialog"
        assert poll(submitted, 15.0), "the batch was not submitted"
        return how

    def wait_for_next_batch(self, previous: str | None, timeout: float) -> dict[str, Any]:
        """Wait until the page shows a batch other than ``previous`` with open cells (it loads it by
        itself when the loop has one and the batch on screen is done)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.grid()
            if state["batch"] not in (None, previous) and state["open"]:
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"no batch after {previous} in {timeout} s (page: {state})")
            time.sleep(0.2)

    def latencies(self) -> list[dict[str, float]]:
        """Per label pressed in this session, milliseconds from its keydown to: the label POST's response
        (``post_ms``), the tile marked labelled in the DOM (``dom_ms``), the frame that paints it
        (``frame_ms``). Call before the page is reloaded."""
        probe = self.page.evaluate("() => window.__expert")
        posts = sorted(probe["posts"], key=lambda p: p["start"])
        rows = []
        for key in probe["keys"]:
            cell = key["cell"]
            saved = probe["saved"].get(str(cell)) if cell is not None else None
            if saved is None or saved["dom"] < key["t"]:
                continue  # not a label key (Shift+Enter, a dialog's Enter), or a cell saved before
            post = next((p for p in posts if p["start"] >= key["t"]), None)
            assert post is not None, f"no label POST after the key on cell {cell}"
            rows.append(
                {
                    "cell": cell,
                    "post_ms": post["end"] - key["t"],
                    "dom_ms": saved["dom"] - key["t"],
                    "frame_ms": (saved["frame"] or saved["dom"]) - key["t"],
                }
            )
        return rows


def poll(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95 (nearest rank) and max, rounded to 0.1 ms."""
    ordered = sorted(values)
    if not ordered:
        return {}

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {
        "n": len(ordered),
        "p50": round(rank(0.50), 1),
        "p95": round(rank(0.95), 1),
        "max": round(ordered[-1], 1),
    }

/* The review queue's keys: j/k or the arrow keys move between cells, a class's key decides the focused
   cell, Enter accepts the model's suggestion. Deciding posts the cell's form (the page reloads without
   that cell); the position in the queue is kept across the reload so the next cell is focused. */
(function () {
  "use strict";

  const POSITION = "leukoloop.review.position";
  const items = () => Array.from(document.querySelectorAll(".review-item"));

  function focusAt(index) {
    const all = items();
    if (!all.length) return;
    const item = all[Math.max(0, Math.min(index, all.length - 1))];
    for (const other of all) other.classList.toggle("current", other === item);
    item.focus();
    item.scrollIntoView({ block: "nearest" });
  }

  function currentIndex() {
    const all = items();
    const active = document.activeElement && document.activeElement.closest(".review-item");
    const index = active ? all.indexOf(active) : all.findIndex((i) => i.classList.contains("current"));
    return index < 0 ? 0 : index;
  }

  function decide(item, button) {
    if (!item || !button) return;
    window.sessionStorage.setItem(POSITION, String(items().indexOf(item)));
    button.form.requestSubmit(button);
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest("input, select, textarea")) return;
    const all = items();
    if (!all.length) return;
    const index = currentIndex();
    const item = all[index];
    const key = event.key;
    if (key === "j" || key === "ArrowDown" || key === "ArrowRight") {
      focusAt(index + 1);
    } else if (key === "k" || key === "ArrowUp" || key === "ArrowLeft") {
      focusAt(index - 1);
    } else if (key === "Enter") {
      // Only the suggestion, and only from a cell (not from a focused button, whose Enter clicks it).
      if (event.target.closest("button")) return;
      const suggested = item.dataset.suggestion;
      if (!suggested) return;
      decide(item, item.querySelector(`button[name=label][value="${CSS.escape(suggested)}"]`));
    } else {
      const button = Array.from(item.querySelectorAll("button[data-key]")).find((b) => b.dataset.key === key);
      if (!button) return;
      decide(item, button);
    }
    event.preventDefault();
  }

  function ready() {
    document.addEventListener("keydown", onKey);
    for (const item of items()) item.addEventListener("focus", () => focusAt(items().indexOf(item)));
    const kept = Number(window.sessionStorage.getItem(POSITION) || "0");
    window.sessionStorage.removeItem(POSITION);
    focusAt(Number.isFinite(kept) ? kept : 0);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", ready);
  else ready();
})();

// Comments on the focused cell: listed under the detail panel, added from its text box (Ctrl+Enter or
// the button). Text from the server goes into the page with textContent only (dom.js `el`), never as
// HTML. Keys typed in the box stay there: the page's shortcuts never see them.
import { ApiError, request } from "./api.js";
import { $, el, fill } from "./dom.js";

const fillId = (template, id) => template.replace("{id}", encodeURIComponent(String(id)));

/** "2026-01-02 14:05" from an ISO timestamp (local time), or the text as it is. */
export function shortTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso || "");
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** The comments panel. `urlTemplate`: the API's /api/cells/{id}/comments/; `onDone`: called when the
 * user leaves the box with Escape (the page gives the grid its keys back). */
export function createComments({ urlTemplate, maxChars = 2000, onDone = () => {}, call = request }) {
  const panel = $("comments-panel");
  const list = $("comments-list");
  const form = $("comment-form");
  const box = $("comment-text");
  const target = $("comments-target");
  const status = $("comments-status");
  let cell = null;
  let loaded = 0; // counts loads, so that a slow answer for a cell left since is dropped

  function say(text, isError = false) {
    status.textContent = text;
    status.classList.toggle("error", isError);
  }

  function draw(comments) {
    if (!comments.length) {
      fill(list, el("li", { className: "meta" }, "No comment yet."));
      return;
    }
    fill(
      list,
      comments.map((c) =>
        el(
          "li",
          { className: "comment", dataset: { comment: c.id } },
          el("b", {}, c.author || "(former user)"),
          " ",
          el("span", { className: "meta" }, shortTime(c.created_at)),
          el("div", { className: "comment-text" }, c.text),
        ),
      ),
    );
  }

  async function load() {
    const mine = ++loaded;
    const at = cell;
    try {
      const comments = await call("GET", fillId(urlTemplate, at));
      if (mine === loaded && at === cell) draw(Array.isArray(comments) ? comments : []);
    } catch (error) {
      if (mine === loaded) say(`Comments not loaded: ${error instanceof ApiError ? error.detail : error}`, true);
    }
  }

  async function add() {
    const text = box.value.trim();
    if (cell === null || !text) return;
    if (text.length > maxChars) {
      say(`A comment has at most ${maxChars} characters (${text.length} typed).`, true);
      return;
    }
    const at = cell;
    try {
      await call("POST", fillId(urlTemplate, at), { text });
      box.value = "";
      say("Comment saved.");
      if (at === cell) await load();
    } catch (error) {
      say(`Comment not saved: ${error instanceof ApiError ? error.detail : error}`, true);
    }
  }

  box.maxLength = maxChars;
  box.addEventListener("keydown", (event) => {
    event.stopPropagation(); // typing here never labels, skips or submits
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      add();
    } else if (event.key === "Escape") {
      event.preventDefault();
      box.blur();
      onDone();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    add();
  });

  return {
    /** Show the comments of `cellId` (null: none focused). Loads only when the cell changes. */
    show(cellId) {
      if (cellId === cell) return;
      cell = cellId ?? null;
      panel.hidden = cell === null;
      say("");
      if (cell === null) return;
      target.textContent = `cell ${cell}`;
      fill(list, el("li", { className: "meta" }, "Loading…"));
      load();
    },
  };
}

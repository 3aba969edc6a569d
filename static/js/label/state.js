// The labelling page's state and rules, with no DOM and no network: selection, focus movement over the
// grid, the undo stack, the key map, "is this cell done", the submit rules and the attribute panel's
// values. main.js keeps one page state object and calls these; tests/js/label_state.test.mjs tests them.

// --- cells ------------------------------------------------------------------------------------------

/** A cell carries a label of mine (a class or "unsure"). */
export function isLabelled(item) {
  return item.mine !== null && item.mine !== undefined;
}

/** A cell needs nothing more in this batch: labelled by me, or skipped. */
export function isDone(item) {
  return Boolean(item.skipped) || isLabelled(item);
}

/** Where the focus goes after an action: the next open cell after `focus`, wrapping round; -1 if none. */
export function nextOpen(items, focus) {
  for (let step = 1; step <= items.length; step++) {
    const k = (focus + step) % items.length;
    if (!isDone(items[k])) return k;
  }
  return -1;
}

/**
 * What submitting the batch would mean: refused when it is untouched (nothing labelled, nothing skipped:
 * the server's rule too, so a batch of all-skipped artefacts can still be handed in), asked when cells
 * are open.
 */
export function submitCheck(items) {
  const labelled = items.filter(isLabelled).length;
  const open = items.filter((item) => !isDone(item)).length;
  if (open === items.length) return { kind: "empty", labelled, open, total: items.length };
  if (open > 0) return { kind: "confirm", labelled, open, total: items.length };
  return { kind: "ok", labelled, open, total: items.length };
}

// --- selection and focus ----------------------------------------------------------------------------

/** A fresh selection: focus and anchor on the first cell, nothing selected. */
export function createSelection(focus = 0) {
  return { focus, anchor: focus, selected: new Set() };
}

/** Select every index from `a` to `b` inclusive (either order), replacing the selection. */
export function selectRange(sel, a, b) {
  sel.selected.clear();
  for (let k = Math.min(a, b); k <= Math.max(a, b); k++) sel.selected.add(k);
}

/** A click on cell `i`: Shift selects the range from the anchor, Ctrl (or Cmd) toggles the cell and moves
 * the anchor there, a plain click clears the selection and moves the anchor. The focus follows. */
export function clickCell(sel, i, { shift = false, ctrl = false } = {}) {
  if (shift) {
    selectRange(sel, sel.anchor, i);
  } else if (ctrl) {
    if (sel.selected.has(i)) sel.selected.delete(i);
    else sel.selected.add(i);
    sel.anchor = i;
  } else {
    sel.selected.clear();
    sel.anchor = i;
  }
  sel.focus = i;
}

/** How far an arrow key moves the focus on a grid of `columns` columns (0 for other keys). */
export function arrowDelta(key, columns) {
  const n = Math.max(1, columns | 0);
  return { ArrowRight: 1, ArrowLeft: -1, ArrowDown: n, ArrowUp: -n }[key] || 0;
}

/** Move the focus by `delta` cells, clamped to the `count` cells of the grid. With `extend` (Shift) the
 * selection becomes the range from the anchor to the new focus; without it the selection is cleared and
 * the anchor follows the focus. Returns whether the focus moved. */
export function moveFocus(sel, delta, count, extend = false) {
  if (count <= 0) return false;
  const before = sel.focus;
  sel.focus = Math.min(Math.max(sel.focus + delta, 0), count - 1);
  if (extend) selectRange(sel, sel.anchor, sel.focus);
  else {
    sel.selected.clear();
    sel.anchor = sel.focus;
  }
  return sel.focus !== before;
}

/** The cells an action applies to, in grid order: the selection, else the focused cell. */
export function targets(sel, count) {
  const chosen = sel.selected.size ? [...sel.selected].sort((a, b) => a - b) : [sel.focus];
  return chosen.filter((i) => Number.isInteger(i) && i >= 0 && i < count);
}

// --- undo -------------------------------------------------------------------------------------------

/** The undo stack: one entry per action (a key press on a selection is one entry).
 * Entries: {kind: "label", annotationIds: [...], indices: [...]} (annotationIds[k] labelled indices[k])
 *          {kind: "skip", cells: [...], indices: [...]} */
export class UndoStack {
  constructor() {
    this.entries = [];
  }

  pushLabel(annotationIds, indices) {
    if (annotationIds.length !== indices.length) throw new Error("one annotation per cell");
    if (!indices.length) return;
    this.entries.push({ kind: "label", annotationIds: [...annotationIds], indices: [...indices] });
  }

  pushSkip(cells, indices) {
    if (cells.length !== indices.length) throw new Error("one cell per index");
    if (!indices.length) return;
    this.entries.push({ kind: "skip", cells: [...cells], indices: [...indices] });
  }

  /** The newest entry, removed; undefined when empty. */
  pop() {
    return this.entries.pop();
  }

  /** Put back (the rest of) an entry whose undo failed half-way, so that Z can try again. */
  restore(entry) {
    if (entry && entry.indices.length) this.entries.push(entry);
  }

  get size() {
    return this.entries.length;
  }

  clear() {
    this.entries.length = 0;
  }
}

/** The steps that undo an entry, newest first: [{index, annotationId}] or [{index, cell}]. */
export function undoSteps(entry) {
  const steps = entry.indices.map((index, k) =>
    entry.kind === "label" ? { index, annotationId: entry.annotationIds[k] } : { index, cell: entry.cells[k] },
  );
  return steps.reverse();
}

/** The entry that is left when the first `done` steps of undoSteps(entry) have succeeded. */
export function remainingEntry(entry, done) {
  const keep = entry.indices.length - done;
  const rest = { ...entry, indices: entry.indices.slice(0, keep) };
  if (entry.kind === "label") rest.annotationIds = entry.annotationIds.slice(0, keep);
  else rest.cells = entry.cells.slice(0, keep);
  return rest;
}

// --- keys -------------------------------------------------------------------------------------------

/** The class keys of the project's classes ("1".."9" by default) to the class names. */
export function buildKeyMap(classes) {
  const map = {};
  for (const c of classes) if (c.key) map[c.key] = c.name;
  return map;
}

/** The page's modes: a dialog takes every key, then the attribute panel, then the grid. */
export const MODES = Object.freeze({ GRID: "grid", ATTRIBUTES: "attributes", DIALOG: "dialog" });

/** What a key press means. `event` is a KeyboardEvent or any object with key and the modifier flags;
 * `context` is {mode, keyMap, columns, nextBatchOffered}. Returns an action {type, ...} or null when the
 * key means nothing here (the browser's default then happens). An action of type "swallow" does nothing
 * but keeps the key from the browser and from the grid (a dialog or the attribute panel owns the keys). */
export function keyAction(event, { mode = MODES.GRID, keyMap = {}, columns = 1, nextBatchOffered = false } = {}) {
  const key = event.key;
  const ctrl = Boolean(event.ctrlKey);
  const meta = Boolean(event.metaKey);
  const shift = Boolean(event.shiftKey);
  const alt = Boolean(event.altKey);
  const lower = typeof key === "string" && key.length === 1 ? key.toLowerCase() : key;

  if (mode === MODES.DIALOG) {
    // A key still held from what opened the dialog (Shift+Enter) must not answer it.
    if (event.repeat) return key === "Tab" ? null : { type: "swallow" };
    if (key === "Enter") return { type: "dialog-confirm" };
    if (key === "Escape") return { type: "dialog-cancel" };
    if (key === "Tab") return null; // move between the dialog's buttons
    return { type: "swallow" };
  }

  if (mode === MODES.ATTRIBUTES) {
    // The panel owns the keyboard: nothing here labels, submits, skips or undoes.
    if (ctrl || meta || alt || key === "Tab") return null;
    if (key === "Escape") return { type: "attr-close" };
    if (key === "Enter") return shift ? { type: "swallow" } : { type: "attr-save" };
    if (key === "ArrowDown") return { type: "attr-row", delta: 1 };
    if (key === "ArrowUp") return { type: "attr-row", delta: -1 };
    if (key === "ArrowRight") return { type: "attr-value", delta: 1 };
    if (key === "ArrowLeft") return { type: "attr-value", delta: -1 };
    // Only while the panel is open, which owns every key: no class key can clash with it.
    if (key === "m" || key === "M") return { type: "attr-suggested" };
    return { type: "swallow" };
  }

  if (key === "Enter" && shift) return { type: "submit" };
  if ((key === "z" && (ctrl || meta)) || (lower === "z" && !ctrl)) return { type: "undo" };
  if (ctrl || meta || alt) return null;
  if (Object.prototype.hasOwnProperty.call(keyMap, key)) return { type: "label", label: keyMap[key] };
  const delta = arrowDelta(key, columns);
  if (delta) return { type: "move", delta, extend: shift };
  if (key === "Enter" || key === " ") return { type: "accept" };
  if (lower === "u") return { type: "unsure" };
  if (lower === "x") return { type: "skip" };
  if (lower === "a") return { type: "attributes" };
  if (lower === "s") return { type: "similar" };
  if (lower === "g") return { type: "saliency" };
  if (lower === "w") return { type: "why" };
  if (lower === "n" && nextBatchOffered) return { type: "next-batch" };
  if (lower === "b") return { type: "blind" };
  if (key === "+" || key === "=") return { type: "zoom", direction: 1 };
  if (key === "-" || key === "_") return { type: "zoom", direction: -1 };
  if (key === "Escape") return { type: "clear-selection" };
  return null;
}

// --- labels -----------------------------------------------------------------------------------------

/** Split a label action into requests: cells of one request share one body, so cells are grouped by the
 * label they get and by the attribute values kept for them (`pending`, by cell id).
 * `labelOf(item)` gives {label} or {unsure: true} for a cell, or null to leave the cell out.
 * Returns [{indices, body}], where body has label/unsure and, when values are pending, attributes. */
export function planLabelRequests(items, indices, labelOf, pending = {}) {
  const groups = new Map();
  for (const i of indices) {
    const item = items[i];
    if (!item) continue;
    const what = labelOf(item);
    if (!what) continue;
    const attributes = pending[item.cell];
    const body = { ...what };
    if (attributes && Object.keys(attributes).length) body.attributes = { ...attributes };
    const key = JSON.stringify([body.label ?? null, Boolean(body.unsure), body.attributes ?? null]);
    if (!groups.has(key)) groups.set(key, { indices: [], body });
    groups.get(key).indices.push(i);
  }
  return [...groups.values()];
}

/** Seconds since the last action, capped at 5 minutes (a coffee break is not labelling time). */
export function secondsSpent(lastActionAt, now) {
  const seconds = Math.min(Math.max(now - lastActionAt, 0) / 1000, 300);
  return Math.round(seconds * 100) / 100;
}

// --- the attribute panel ----------------------------------------------------------------------------

/** The attribute panel's state for the cells `indices` (the focused cell first): its values start from
 * the focused cell's saved attributes, or the values kept for it while it has no label. `suggested`:
 * the model's attribute suggestions ({name: {value, confidence}}) when the panel is for one cell (for
 * several, one cell's guesses would be applied to all of them). */
export function openAttributePanel(items, indices, pending = {}) {
  const first = items[indices[0]];
  const saved = first && first.mine && first.mine.attributes;
  const kept = first && pending[first.cell];
  const suggested = indices.length === 1 && first && first.attribute_suggestions ? first.attribute_suggestions : {};
  return {
    cells: indices.map((i) => items[i].cell),
    row: 0,
    values: { ...(kept || saved || {}) },
    suggested: { ...suggested },
  };
}

/** An open panel for one cell takes the suggestions the server sends for it now (the retrain measures some
 * cells after writing the batch, and their suggestions arrive on a later poll). The values shown are
 * left as they are. Returns whether the panel's suggestions changed (it needs drawing again). */
export function refreshPanelSuggestions(panel, items) {
  if (!panel || panel.cells.length !== 1) return false;
  const item = items.find((candidate) => candidate.cell === panel.cells[0]);
  const now = (item && item.attribute_suggestions) || {};
  if (JSON.stringify(now) === JSON.stringify(panel.suggested || {})) return false;
  panel.suggested = { ...now };
  return true;
}

/** M in the panel: every attribute that has no value yet takes the model's suggestion (values already
 * chosen, by the expert or saved before, stay). Returns how many were filled. */
export function takeAttributeSuggestions(panel, specs) {
  let filled = 0;
  for (const spec of specs) {
    const guess = panel.suggested && panel.suggested[spec.name];
    if (!guess || panel.values[spec.name] || !spec.values.includes(guess.value)) continue;
    panel.values[spec.name] = guess.value;
    filled += 1;
  }
  return filled;
}

/** ↑↓: the active attribute row, clamped. */
export function attributeRow(panel, delta, rowCount) {
  panel.row = Math.min(Math.max(panel.row + delta, 0), Math.max(rowCount - 1, 0));
}

/** ←→: the next or previous value of the active attribute, wrapping round; from no value, → picks the
 * first and ← the last. */
export function attributeStep(panel, specs, delta) {
  const spec = specs[panel.row];
  if (!spec || !spec.values.length) return;
  const n = spec.values.length;
  const k = spec.values.indexOf(panel.values[spec.name]);
  const next = k < 0 ? (delta > 0 ? 0 : n - 1) : (k + delta + n) % n;
  panel.values[spec.name] = spec.values[next];
}

/** Saving the panel (Enter): cells that carry a label of mine get their attributes saved with that same
 * label (never another one); cells without a label keep the values until their class key is pressed.
 * Returns {requests: [{indices, body}], keep: [cell ids]}. */
export function planAttributeSave(items, panel) {
  const indexOf = new Map(items.map((item, i) => [item.cell, i]));
  const labelled = [];
  const keep = [];
  for (const cell of panel.cells) {
    const i = indexOf.get(cell);
    if (i === undefined) continue;
    if (isLabelled(items[i])) labelled.push(i);
    else keep.push(cell);
  }
  const labelOf = (item) => {
    const body = {};
    if (item.mine.label) body.label = item.mine.label;
    if (item.mine.unsure) body.unsure = true;
    return body;
  };
  const requests = planLabelRequests(items, labelled, labelOf).map(({ indices, body }) => ({
    indices,
    body: { ...body, attributes: { ...panel.values } },
  }));
  return { requests, keep };
}

// --- labels not saved yet ---------------------------------------------------------------------------
// `unsaved` is a Map from a label request's client key to {request, error, final}: the request as sent
// ({cells, label | unsure, attributes, seconds_spent, client_key}), the last error ("" while the first
// try is on its way) and whether the server refused it for good (a 4xx: sending it again cannot help).

/** What each cell of a request that failed was to get ("unsure" or the class name), by cell id. */
export function unsavedByCell(unsaved) {
  const byCell = new Map();
  for (const { request, error } of unsaved.values()) {
    if (!error) continue;
    for (const cell of request.cells) byCell.set(cell, request.label || (request.unsure ? "unsure" : "?"));
  }
  return byCell;
}

/** A new label for `cells` replaces whatever was still waiting to be saved for them, so that an older
 * label sent again later cannot land over it. A request that keeps other cells becomes a new request for
 * those (a new key from `newKey`: the same key with other cells would be refused); one left with no cell
 * is dropped. Returns a new map. */
export function dropUnsaved(unsaved, cells, newKey) {
  const gone = new Set(cells);
  const next = new Map();
  for (const [key, entry] of unsaved) {
    const keep = entry.request.cells.filter((cell) => !gone.has(cell));
    if (keep.length === entry.request.cells.length) next.set(key, entry);
    else if (keep.length) {
      const share = entry.request.seconds_spent;
      const seconds = typeof share === "number" ? Math.round(((share * keep.length) / entry.request.cells.length) * 100) / 100 : share;
      const request = { ...entry.request, cells: keep, seconds_spent: seconds, client_key: newKey() };
      next.set(request.client_key, { ...entry, request });
    }
  }
  return next;
}

/** One sentence on the labels not saved, e.g. "2 labels not saved: cell 12 → Neutrophil, cell 13 →
 * unsure — the server failed (HTTP 503); sent again while this page is open." "" when none.
 * `nameOf(name)` gives a class's display name. */
export function describeUnsaved(unsaved, nameOf = (name) => name, limit = 8) {
  const failed = [...unsaved.values()].filter((entry) => entry.error);
  if (!failed.length) return "";
  const byCell = unsavedByCell(unsaved);
  const shown = [...byCell].slice(0, limit).map(([cell, what]) => `cell ${cell} → ${what === "unsure" ? "unsure" : nameOf(what)}`);
  const more = byCell.size > limit ? ` and ${byCell.size - limit} more` : "";
  const count = byCell.size === 1 ? "1 label" : `${byCell.size} labels`;
  const error = failed[failed.length - 1].error;
  const pending = failed.some((entry) => !entry.final);
  const what = pending ? "sent again while this page is open" : "refused by the server: label again to retry";
  return `${count} not saved: ${shown.join(", ")}${more} — ${error}; ${what}.`;
}

// --- the focused-cell view --------------------------------------------------------------------------
// The focused cell at a chosen zoom (1 = one image pixel per CSS pixel) with brightness and contrast as
// CSS filters: the view's state is {zoom, brightness, contrast} (brightness and contrast in percent).

export const ZOOM_STEPS = Object.freeze([0.5, 0.75, 1, 1.5, 2, 3, 4]);
export const ZOOM_MIN = ZOOM_STEPS[0];
export const ZOOM_MAX = ZOOM_STEPS[ZOOM_STEPS.length - 1];
export const ADJUST_MIN = 50;
export const ADJUST_MAX = 200;

/** The focused view as it opens: native size, the image's own brightness and contrast. */
export function createFocusView() {
  return { zoom: 1, brightness: 100, contrast: 100 };
}

const clamp = (x, lo, hi) => Math.min(Math.max(x, lo), hi);

/** A zoom from a slider or a button, clamped; anything not a number is 1. */
export function clampZoom(zoom) {
  const z = Number(zoom);
  return Number.isFinite(z) && z > 0 ? clamp(z, ZOOM_MIN, ZOOM_MAX) : 1;
}

/** +/-: the next zoom step above (`direction` > 0) or below the current zoom, which may sit between steps
 * (the slider moves in quarters). */
export function stepZoom(zoom, direction) {
  const z = clampZoom(zoom);
  if (direction > 0) return ZOOM_STEPS.find((s) => s > z + 1e-9) ?? ZOOM_MAX;
  return [...ZOOM_STEPS].reverse().find((s) => s < z - 1e-9) ?? ZOOM_MIN;
}

/** The zoom at which one image pixel is one device pixel (a HiDPI screen draws a CSS pixel with several). */
export function devicePixelZoom(devicePixelRatio) {
  const r = Number(devicePixelRatio);
  return Number.isFinite(r) && r > 0 ? clampZoom(1 / r) : 1;
}

/** A brightness or contrast in percent, clamped; anything not a number is 100. */
export function clampAdjust(percent) {
  const p = Number(percent);
  return Number.isFinite(p) ? clamp(Math.round(p), ADJUST_MIN, ADJUST_MAX) : 100;
}

/** The CSS filter of the focused image: "none" at 100% and 100%, else "brightness(1.2) contrast(0.9)". */
export function viewFilter({ brightness = 100, contrast = 100 } = {}) {
  const b = clampAdjust(brightness);
  const c = clampAdjust(contrast);
  if (b === 100 && c === 100) return "none";
  return `brightness(${b / 100}) contrast(${c / 100})`;
}

/** The image's rendered size at `zoom` for an image of natural size `width` x `height` (whole pixels). */
export function zoomedSize(width, height, zoom) {
  const z = clampZoom(zoom);
  return { width: Math.round(width * z), height: Math.round(height * z) };
}

/** "1x", "1.5x", "0.75x". */
export function zoomLabel(zoom) {
  return `${Number(clampZoom(zoom).toFixed(2))}x`;
}

// --- preferences ------------------------------------------------------------------------------------

export const TILE_MIN = 72;
export const TILE_MAX = 448;

/** A tile size from the slider or the server, clamped to what the server accepts; 160 if not a number. */
export function clampTileSize(size) {
  const s = Number(size);
  return Number.isFinite(s) ? clamp(Math.round(s), TILE_MIN, TILE_MAX) : 160;
}

// --- suggestions ------------------------------------------------------------------------------------

/** What a tile says about the model's suggestion: {kind, label, confidence}. kind is "shown", "blind"
 * (the user hides suggestions), "unlike" (the cell is unlike the labelled cells: the model abstains),
 * "low" (below the lead's threshold: the server did not send it) or "none" (no model yet). Only "shown"
 * carries the class name. */
export function suggestionView(item) {
  if (item.suggestion) return { kind: "shown", label: item.suggestion, confidence: item.confidence };
  if (item.suggestion_withheld === "blind") return { kind: "blind" };
  if (item.suggestion_withheld === "unlike_labelled") return { kind: "unlike" };
  if (item.suggestion_withheld === "low_confidence") return { kind: "low" };
  return { kind: "none" };
}

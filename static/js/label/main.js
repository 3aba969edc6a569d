// The labelling page: keyboard-first labelling of the current query batch. The server holds all state;
// this module renders the batch, sends labels and polls the loop's progress. The rules live in state.js
// (pure, unit-tested), the calls in api.js, the drawing in render.js.
//
// A label is sent with a client key and retried with backoff when the server cannot be reached or fails
// (api.js); one still not saved is listed above the grid, marked on its tile, and sent again (same key,
// so it lands once) each time the loop's poll finds the server answering.
import { ApiError, createApi, isRetryable, newClientKey } from "./api.js";
import { $, ConfirmDialog, gridColumns } from "./dom.js";
import { createComments } from "./comments.js";
import * as render from "./render.js";
import { createSaliencyControls } from "./saliency.js";
import {
  MODES,
  UndoStack,
  attributeRow,
  attributeStep,
  takeAttributeSuggestions,
  buildKeyMap,
  clampAdjust,
  clampTileSize,
  clampZoom,
  clickCell,
  createFocusView,
  createSelection,
  describeUnsaved,
  devicePixelZoom,
  dropUnsaved,
  isDone,
  keyAction,
  moveFocus,
  nextOpen,
  openAttributePanel,
  planAttributeSave,
  planLabelRequests,
  refreshPanelSuggestions,
  remainingEntry,
  secondsSpent,
  stepZoom,
  submitCheck,
  targets,
  undoSteps,
  unsavedByCell,
} from "./state.js";

const config = JSON.parse($("label-config").textContent);
const api = createApi(config.api);
const grid = $("grid");
const keyMap = buildKeyMap(config.classes);
const byName = Object.fromEntries(config.classes.map((c) => [c.name, c]));
const confirmDialog = new ConfirmDialog($("confirm-dialog"));
const comments = createComments({
  urlTemplate: config.api.comments,
  maxChars: config.comment_max_chars,
  onDone: () => grid.focus(),
});
const saliencyControls = createSaliencyControls({
  legend: $("saliency-legend"),
  slider: $("saliency-opacity"),
  target: $("label-page"),
  onDone: () => grid.focus(),
});

const page = {
  batch: null, // the batch as the server sent it
  sel: createSelection(), // focus, anchor and selected indices into batch.items
  undo: new UndoStack(),
  lastActionAt: performance.now(),
  submitting: false,
  saliencyOn: false,
  panel: null, // the attribute panel while open: {cells, row, values}
  pending: {}, // attribute values kept for cells without a label, by cell id
  loop: null,
  flash: null, // {text, isError}
  unsaved: new Map(), // label requests not confirmed by the server, by client key (state.js)
  resending: false,
  focusView: createFocusView(), // zoom, brightness and contrast of the focused-cell view
  blind: Boolean(config.page_settings && config.page_settings.blind_mode),
};

const items = () => (page.batch ? page.batch.items : []);

function flash(text, isError = false) {
  page.flash = { text, isError };
  render.renderStatus($("loop-status"), page.loop, page.flash);
}

/** Run an action; a failed call shows its error text (the server's `detail`) in the status line. */
function act(what, fn) {
  return Promise.resolve()
    .then(fn)
    .catch((error) => {
      const detail = error instanceof ApiError ? error.detail : error.message;
      flash(`${what}: ${detail}`, true);
      if (!(error instanceof ApiError)) console.error(error);
    });
}

// --- rendering ----------------------------------------------------------------------------------------
function draw() {
  $("empty").hidden = items().length > 0;
  render.renderGrid(grid, {
    items: items(),
    sel: page.sel,
    byName,
    pending: page.pending,
    unsaved: unsavedByCell(page.unsaved),
    saliencyOn: page.saliencyOn,
    saliencyUrl: api.saliencyUrl,
  });
  render.renderMeta($("batch-meta"), page.batch);
  drawFocus();
}

const focusNodes = { image: $("focus-image"), caption: $("focus-caption"), zoomValue: $("zoom-value") };

function drawFocus() {
  const item = items()[page.sel.focus];
  render.renderFocus(focusNodes, item, byName, page.focusView);
  const focused = item ? item.cell : null;
  comments.show(focused);
  render.markStale($("detail-title"), $("detail-body"), focused);
  render.markStale($("similar-title"), $("similar-body"), focused);
  $("zoom").value = String(page.focusView.zoom);
  $("brightness").value = String(page.focusView.brightness);
  $("contrast").value = String(page.focusView.contrast);
  for (const b of document.querySelectorAll(".zoom-preset")) {
    b.setAttribute("aria-pressed", String(Number(b.dataset.zoom) === page.focusView.zoom));
  }
}

function drawStatus() {
  const loop = page.loop;
  render.renderStatus($("loop-status"), loop, page.flash);
  if (!loop) return;
  const reviewCount = $("review-count");
  // Cells that train nothing until decided, plus labels doubted by label-mistake finding.
  if (reviewCount) reviewCount.textContent = loop.review_count + (loop.suspected_count || 0);
  if (!page.batch) {
    $("empty").hidden = false;
    $("empty").textContent = render.emptyMessage(loop);
  }
}

function advance() {
  const k = nextOpen(items(), page.sel.focus);
  if (k >= 0) {
    page.sel.focus = k;
    page.sel.anchor = k;
  }
}

function afterChange(maySubmit = true) {
  draw();
  if (maySubmit && page.batch && !page.batch.submitted && items().length && items().every(isDone)) {
    return act("Not submitted", () => submit({ auto: true }));
  }
  return undefined;
}

function currentTargets() {
  return targets(page.sel, items().length);
}

// --- labels -------------------------------------------------------------------------------------------
/** Label the cells `indices`: `labelOf(item)` says what each gets ({label} or {unsure}); attribute values
 * kept for a cell go with it. One undo entry for the whole action. */
async function label(indices, labelOf) {
  const plan = planLabelRequests(items(), indices, labelOf, page.pending);
  await send(plan);
}

async function send(plan) {
  if (!plan.length) return;
  const now = performance.now();
  const seconds = secondsSpent(page.lastActionAt, now);
  page.lastActionAt = now;
  const total = plan.reduce((n, p) => n + p.indices.length, 0);
  const annotationIds = [];
  const labelled = [];
  let failure = null;
  try {
    // Every request of the action is tried, whatever happened to the one before: a failed one is kept
    // (page.unsaved) and shown, the others land.
    for (const { indices, body } of plan) {
      const cells = indices.map((i) => items()[i].cell);
      const share = Math.round(((seconds * indices.length) / total) * 100) / 100;
      const request = { cells, seconds_spent: share, ...body, client_key: newClientKey() };
      try {
        const saved = applySaved(await save(request));
        annotationIds.push(...saved.annotationIds);
        labelled.push(...saved.labelled);
      } catch (error) {
        failure = failure || error;
      }
    }
  } finally {
    page.undo.pushLabel(annotationIds, labelled);
    if (labelled.length) {
      page.sel.selected.clear();
      advance();
    }
    draw();
  }
  if (failure) throw failure;
  await afterChange();
}

/** The annotations the server answered with, onto the batch's cells: {annotationIds, labelled}. */
function applySaved(data) {
  const indexOf = new Map(items().map((item, i) => [item.cell, i]));
  const annotationIds = [];
  const labelled = [];
  for (const a of data.annotations) {
    const i = indexOf.get(a.cell);
    if (i === undefined) continue;
    items()[i].mine = a;
    delete page.pending[a.cell];
    annotationIds.push(a.id);
    labelled.push(i);
  }
  return { annotationIds, labelled };
}

const detailOf = (error) => (error instanceof ApiError ? error.detail : String((error && error.message) || error));

function showUnsaved() {
  const nameOf = (name) => (byName[name] ? byName[name].display_name : name);
  render.renderUnsaved($("unsaved"), describeUnsaved(page.unsaved, nameOf));
}

/** Save one label request, tried again with backoff while the failure may pass (api.js). Until the server
 * confirms it, it is in page.unsaved; a newer label of its cells takes it out (and stops its retries). */
async function save(request) {
  const key = request.client_key;
  page.unsaved = dropUnsaved(page.unsaved, request.cells, newClientKey);
  const entry = { request, error: "", final: false, retrying: true };
  page.unsaved.set(key, entry);
  const current = () => page.unsaved.get(key) === entry;
  try {
    const data = await api.annotate(request, {
      retryable: (error) => current() && isRetryable(error),
      onRetry: ({ attempt, error, delayMs }) => {
        entry.error = detailOf(error);
        showUnsaved();
        draw();
        flash(`Label not saved yet (try ${attempt}): ${entry.error}. Trying again in ${(delayMs / 1000).toFixed(1)} s…`, true);
      },
    });
    if (current()) page.unsaved.delete(key);
    if (page.flash && page.flash.isError && !page.unsaved.size) page.flash = null;
    return data;
  } catch (error) {
    entry.error = detailOf(error);
    entry.final = !isRetryable(error);
    throw error;
  } finally {
    entry.retrying = false;
    showUnsaved();
  }
}

/** Send again the labels that failed (each once, same key); called when the server answers a poll. */
async function resendUnsaved() {
  if (page.resending) return;
  const due = [...page.unsaved.values()].filter((entry) => entry.error && !entry.final && !entry.retrying);
  if (!due.length) return;
  page.resending = true;
  try {
    for (const entry of due) {
      const key = entry.request.client_key;
      if (page.unsaved.get(key) !== entry) continue; // relabelled meanwhile
      try {
        const data = await api.annotate(entry.request, { delays: [] });
        if (page.unsaved.get(key) === entry) {
          page.unsaved.delete(key);
          applySaved(data);
        }
      } catch (error) {
        entry.error = detailOf(error);
        entry.final = !isRetryable(error);
      }
    }
  } finally {
    page.resending = false;
    showUnsaved();
    draw();
  }
  if (!page.unsaved.size) {
    flash("Every label is saved.");
    await afterChange();
  }
}

function labelWith(name) {
  return label(currentTargets(), () => ({ label: name }));
}

function acceptSuggestion() {
  const indices = currentTargets().filter((i) => items()[i].suggestion);
  if (!indices.length) {
    flash(page.blind ? "Blind mode: suggestions are hidden; press the class key." : "No suggestion to accept: press the class key instead.");
    return undefined;
  }
  return label(indices, (item) => ({ label: item.suggestion }));
}

async function skip(indices) {
  const open = indices.filter((i) => !items()[i].skipped);
  if (!open.length) {
    flash("Already skipped.");
    return;
  }
  const done = [];
  try {
    for (const i of open) {
      const item = items()[i];
      await api.skip(page.batch.id, item.cell);
      item.skipped = true;
      done.push(i);
    }
  } finally {
    page.undo.pushSkip(
      done.map((i) => items()[i].cell),
      done,
    );
    if (done.length) {
      page.sel.selected.clear();
      advance();
      draw();
    }
  }
  await afterChange();
}

async function undo() {
  const entry = page.undo.pop();
  if (!entry) {
    flash("Nothing to undo.");
    return;
  }
  let done = 0;
  try {
    for (const step of undoSteps(entry)) {
      const item = items()[step.index];
      if (entry.kind === "label") {
        const data = await api.undoAnnotation(step.annotationId);
        item.mine = data.restored;
      } else {
        const data = await api.unskip(page.batch.id, step.cell);
        // The batch item as the current batch lists it; whatever else it says, it is no longer skipped.
        if (data && typeof data === "object" && data.cell === item.cell) Object.assign(item, data);
        item.skipped = Boolean(data && data.cell === item.cell && data.skipped);
      }
      done++;
    }
  } catch (error) {
    page.undo.restore(remainingEntry(entry, done));
    draw();
    throw error;
  }
  page.sel.focus = entry.indices[0];
  page.sel.anchor = entry.indices[0];
  page.sel.selected.clear();
  afterChange(false);
}

// --- submitting ---------------------------------------------------------------------------------------
/** Submit the batch. Nothing labelled: refused. Cells still open: only after the in-page dialog says so.
 * `auto`: the last cell was just labelled. */
async function submit({ auto = false } = {}) {
  if (!page.batch || page.submitting) return;
  const batch = page.batch;
  const check = submitCheck(items());
  if (check.kind === "empty") {
    flash(`Batch ${batch.number} has no labelled cell: label at least one before submitting.`, true);
    return;
  }
  if (check.kind === "confirm" && !auto) {
    const unlabelled = check.open === 1 ? "1 cell is" : `${check.open} cells are`;
    const ok = await confirmDialog.ask(
      `${unlabelled} not labelled yet (${check.open} of ${check.total}). Submit batch ${batch.number} anyway?`,
      { confirm: "Submit anyway", cancel: "Keep labelling" },
    );
    if (!ok) {
      flash(`Batch ${batch.number} not submitted.`);
      grid.focus();
      return;
    }
    grid.focus();
  }
  if (page.batch !== batch || page.submitting) return;
  page.submitting = true;
  try {
    await api.submit(batch.id);
    batch.submitted = true;
    flash(`Batch ${batch.number} submitted: retraining…`);
  } finally {
    page.submitting = false;
  }
  await poll();
}

async function loadBatch() {
  const data = await api.currentBatch();
  const previous = page.batch ? page.batch.id : null;
  page.batch = data.batch;
  if (!page.batch || page.batch.id !== previous) {
    page.sel = createSelection();
    page.undo.clear();
    page.pending = {};
    page.lastActionAt = performance.now();
    closeAttributes();
    if (page.batch) {
      const first = items().findIndex((item) => !isDone(item));
      page.sel = createSelection(Math.max(first, 0));
    }
  }
  $("next-batch").hidden = true;
  page.flash = null;
  draw();
  drawStatus();
}

// --- the detail panel: why, similar, saliency ---------------------------------------------------------
async function showWhy() {
  const item = items()[page.sel.focus];
  if (!item) return;
  const data = await api.why(item.cell);
  render.renderWhy($("detail-title"), $("detail-body"), item.cell, data);
  drawFocus();
}

async function showSimilar() {
  const item = items()[page.sel.focus];
  if (!item) return;
  const data = await api.similar(item.cell, 8);
  render.renderSimilar($("similar-title"), $("similar-body"), item.cell, data, byName);
  drawFocus();
}

// --- the focused-cell view and the user's preferences -------------------------------------------------
function setZoom(zoom) {
  page.focusView.zoom = clampZoom(zoom);
  drawFocus();
}

function setAdjust(name, percent) {
  page.focusView[name] = clampAdjust(percent);
  drawFocus();
}

function drawBlind() {
  $("blind-mode").setAttribute("aria-pressed", String(page.blind));
  $("blind-state").textContent = page.blind ? "on" : "off";
}

/** Blind mode on or off: saved on the server (it follows the user), then the batch is fetched again so
 * that the suggestions the server now withholds or sends are what the tiles show. */
async function toggleBlind() {
  const prefs = await api.savePreferences({ blind_mode: !page.blind });
  page.blind = Boolean(prefs.blind_mode);
  drawBlind();
  flash(page.blind ? "Blind mode: suggestions hidden." : "Blind mode off: suggestions shown above the threshold.");
  await refreshSuggestions();
}

/** The current batch's suggestions as the server sends them now; labels, selection and undo are kept. */
async function refreshSuggestions() {
  const data = await api.currentBatch();
  if (!data.batch || !page.batch || data.batch.id !== page.batch.id) return loadBatch();
  const fresh = new Map(data.batch.items.map((item) => [item.cell, item]));
  for (const item of items()) {
    const now = fresh.get(item.cell);
    if (!now) continue;
    item.suggestion = now.suggestion;
    item.confidence = now.confidence;
    item.suggestion_withheld = now.suggestion_withheld;
    item.attribute_suggestions = now.attribute_suggestions;
  }
  draw();
  if (refreshPanelSuggestions(page.panel, items())) drawAttributes();
  return undefined;
}

function setTileSize(size) {
  const tile = clampTileSize(size);
  grid.style.setProperty("--tile", `${tile}px`);
  return tile;
}

function toggleSaliency() {
  page.saliencyOn = !page.saliencyOn;
  saliencyControls.show(page.saliencyOn);
  draw();
}

// --- the attribute panel ------------------------------------------------------------------------------
// While it is open it owns the keyboard (state.keyAction): Enter saves attributes only, never a label.
function openAttributes() {
  const chosen = currentTargets();
  if (!chosen.length) return;
  const focus = page.sel.focus;
  const ordered = chosen.includes(focus) ? [focus, ...chosen.filter((i) => i !== focus)] : chosen;
  page.panel = openAttributePanel(items(), ordered, page.pending);
  const n = page.panel.cells.length;
  $("attribute-target").textContent = n === 1 ? `cell ${page.panel.cells[0]}` : `${n} cells`;
  $("attribute-panel").hidden = false;
  $("classes-card").hidden = true; // the panel owns the keys meanwhile; its rows need the room
  drawAttributes();
}

function drawAttributes() {
  if (!page.panel) return;
  render.renderAttributes($("attribute-rows"), config.attributes, page.panel, (name, value) => {
    page.panel.values[name] = value;
    drawAttributes();
  });
}

function closeAttributes() {
  page.panel = null;
  $("attribute-panel").hidden = true;
  $("classes-card").hidden = false;
  grid.focus();
}

async function saveAttributes() {
  const panel = page.panel;
  if (!panel) return;
  closeAttributes();
  const { requests, keep } = planAttributeSave(items(), panel);
  if (keep.length) {
    for (const cell of keep) page.pending[cell] = { ...panel.values };
    const which = keep.length === 1 ? "this cell has" : `${keep.length} cells have`;
    flash(`Attributes kept, not saved: ${which} no label yet; they are saved together with the label you give.`);
    draw();
  }
  await send(requests);
}

function attributeAction(action) {
  if (action.type === "attr-close") closeAttributes();
  else if (action.type === "attr-save") return act("Not saved", saveAttributes);
  else if (action.type === "attr-row") attributeRow(page.panel, action.delta, config.attributes.length);
  else if (action.type === "attr-value") attributeStep(page.panel, config.attributes, action.delta);
  else if (action.type === "attr-suggested") {
    const filled = takeAttributeSuggestions(page.panel, config.attributes);
    if (!filled) flash(Object.keys(page.panel.suggested).length ? "Every attribute already has a value." : "No attribute suggestions for this cell.");
  }
  drawAttributes();
  return undefined;
}

// --- keyboard -----------------------------------------------------------------------------------------
function move(delta, extend) {
  moveFocus(page.sel, delta, items().length, extend);
  draw();
  const tile = grid.querySelector(".tile.focused");
  if (tile) tile.scrollIntoView({ block: "nearest" });
}

function mode() {
  if (confirmDialog.isOpen) return MODES.DIALOG;
  if (page.panel) return MODES.ATTRIBUTES;
  return MODES.GRID;
}

function dispatch(action) {
  switch (action.type) {
    case "dialog-confirm":
      return confirmDialog.close(true);
    case "dialog-cancel":
      return confirmDialog.close(false);
    case "swallow":
      return undefined;
    case "attr-close":
    case "attr-save":
    case "attr-row":
    case "attr-value":
    case "attr-suggested":
      return attributeAction(action);
    case "submit":
      return act("Not submitted", () => submit());
    case "undo":
      return act("Not undone", undo);
    case "label":
      return act("Not saved", () => labelWith(action.label));
    case "move":
      return move(action.delta, action.extend);
    case "accept":
      return act("Not saved", acceptSuggestion);
    case "unsure":
      return act("Not saved", () => label(currentTargets(), () => ({ unsure: true })));
    case "skip":
      return act("Not skipped", () => skip(currentTargets()));
    case "attributes":
      return openAttributes();
    case "similar":
      return act("Could not load", showSimilar);
    case "saliency":
      return toggleSaliency();
    case "why":
      return act("Could not load", showWhy);
    case "next-batch":
      return act("Could not load", loadBatch);
    case "blind":
      return act("Blind mode not changed", toggleBlind);
    case "zoom":
      return setZoom(stepZoom(page.focusView.zoom, action.direction));
    case "clear-selection":
      page.sel.selected.clear();
      return draw();
    default:
      return undefined;
  }
}

document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement) return;
  const action = keyAction(event, {
    mode: mode(),
    keyMap,
    columns: gridColumns(grid),
    nextBatchOffered: !$("next-batch").hidden,
  });
  if (!action) return;
  event.preventDefault();
  dispatch(action);
});

grid.addEventListener("click", (event) => {
  const tile = event.target.closest(".tile");
  if (!tile || !grid.contains(tile)) return;
  clickCell(page.sel, Number(tile.dataset.index), { shift: event.shiftKey, ctrl: event.ctrlKey || event.metaKey });
  draw();
  grid.focus();
});

// --- polling the loop ---------------------------------------------------------------------------------
async function poll() {
  let loop;
  try {
    loop = await api.loop();
  } catch {
    return;
  }
  page.loop = loop;
  drawStatus();
  await resendUnsaved();
  const newest = loop.batch;
  if (newest && page.batch && newest.id === page.batch.id && page.batch.attribute_suggestions_pending) {
    // The retrain measures the cells it had not measured after writing the batch, a few at a time:
    // their attribute suggestions are fetched on each poll until it says it is done, and once more then.
    page.batch.attribute_suggestions_pending = newest.attribute_suggestions_pending;
    await refreshSuggestions();
  }
  if (newest && (!page.batch || newest.id !== page.batch.id)) {
    const finished = !page.batch || items().every(isDone);
    if (finished) await loadBatch();
    else {
      $("next-batch-text").textContent = `Batch ${newest.number} is ready${
        newest.classifier_version ? ` (model v${newest.classifier_version})` : ""
      }.`;
      $("next-batch").hidden = false;
    }
  }
}

$("submit-batch").addEventListener("click", () => act("Not submitted", () => submit()));
$("load-next").addEventListener("click", () => act("Could not load", loadBatch));
for (const b of document.querySelectorAll(".class-button")) {
  b.addEventListener("click", () => act("Not saved", () => labelWith(b.dataset.label)));
}
const start = $("start-pretrain");
if (start) {
  start.addEventListener("click", () =>
    act("Not started", async () => {
      const ok = await confirmDialog.ask(
        "Pretrain a new encoder? It learns from every cell without labels in the background (minutes to " +
          "hours) while labelling goes on; then the cells are re-indexed and the next batch comes from it.",
        { confirm: "Pretrain", cancel: "Cancel" },
      );
      if (!ok) return;
      await api.startPretrain();
      await poll();
    }),
  );
}
const tune = $("start-finetune");
if (tune) {
  tune.addEventListener("click", () =>
    act("Not started", async () => {
      const ok = await confirmDialog.ask(
        "Fine-tune the encoder on the labels so far? It trains the whole network for minutes, then " +
          "re-indexes the cells and retrains the classifier.",
        { confirm: "Fine-tune", cancel: "Cancel" },
      );
      if (!ok) return;
      await api.startFinetune();
      await poll();
    }),
  );
}
$("tile-size").addEventListener("input", (e) => {
  setTileSize(e.target.value);
});
// Saved when the slider is let go (one request, not one per step): it follows the user to any browser.
$("tile-size").addEventListener("change", (e) => {
  const tile = setTileSize(e.target.value);
  act("Tile size not saved", () => api.savePreferences({ tile_size: tile }));
});
setTileSize(config.page_settings ? config.page_settings.tile_size : 160);
$("blind-mode").addEventListener("click", () => {
  act("Blind mode not changed", toggleBlind);
  grid.focus();
});
drawBlind();
focusNodes.image.addEventListener("load", () => drawFocus());
// A click on a button of the view gives the keys back to the grid (Enter on a focused button would
// otherwise both press it and accept a suggestion).
const backToGrid = (fn) => () => {
  fn();
  grid.focus({ preventScroll: true });
};
for (const b of document.querySelectorAll(".zoom-preset")) b.addEventListener("click", backToGrid(() => setZoom(Number(b.dataset.zoom))));
// On a high-density screen 1x draws each image pixel with several screen pixels; this button shows them 1:1.
if (window.devicePixelRatio && window.devicePixelRatio !== 1) {
  $("zoom-device").hidden = false;
  $("zoom-device").addEventListener("click", backToGrid(() => setZoom(devicePixelZoom(window.devicePixelRatio))));
}
$("zoom-in").addEventListener("click", backToGrid(() => setZoom(stepZoom(page.focusView.zoom, 1))));
$("zoom-out").addEventListener("click", backToGrid(() => setZoom(stepZoom(page.focusView.zoom, -1))));
$("zoom").addEventListener("input", (e) => setZoom(e.target.value));
$("brightness").addEventListener("input", (e) => setAdjust("brightness", e.target.value));
$("contrast").addEventListener("input", (e) => setAdjust("contrast", e.target.value));
$("adjust-reset").addEventListener(
  "click",
  backToGrid(() => {
    page.focusView = { ...createFocusView(), zoom: page.focusView.zoom };
    drawFocus();
  }),
);

act("Could not load", loadBatch).then(poll);
setInterval(poll, config.poll_ms);

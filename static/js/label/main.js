// The labelling page: keyboard-first labelling of the current query batch. The server holds all state;
// this module renders the batch, sends labels and polls the loop's progress. The rules live in state.js
// (pure, unit-tested), the calls in api.js, the drawing in render.js.
import { ApiError, createApi } from "./api.js";
import { $, gridColumns } from "./dom.js";
import * as render from "./render.js";
import {
  MODES,
  UndoStack,
  attributeRow,
  attributeStep,
  buildKeyMap,
  clickCell,
  createSelection,
  isDone,
  keyAction,
  moveFocus,
  nextOpen,
  openAttributePanel,
  planLabelRequests,
  remainingEntry,
  secondsSpent,
  targets,
  undoSteps,
} from "./state.js";

const config = JSON.parse($("label-config").textContent);
const api = createApi(config.api);
const grid = $("grid");
const keyMap = buildKeyMap(config.classes);
const byName = Object.fromEntries(config.classes.map((c) => [c.name, c]));

const page = {
  batch: null, // the batch as the server sent it
  sel: createSelection(), // focus, anchor and selected indices into batch.items
  undo: new UndoStack(),
  lastActionAt: performance.now(),
  submitting: false,
  saliencyOn: false,
  panel: null, // the attribute panel while open: {cells, row, values}
  loop: null,
  flash: null, // {text, isError}
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
    saliencyOn: page.saliencyOn,
    saliencyUrl: api.saliencyUrl,
  });
  render.renderMeta($("batch-meta"), page.batch);
}

function drawStatus() {
  const loop = page.loop;
  render.renderStatus($("loop-status"), loop, page.flash);
  if (!loop) return;
  const reviewCount = $("review-count");
  if (reviewCount) reviewCount.textContent = loop.review_count;
  if (!page.batch) {
    $("empty").hidden = false;
    $("empty").textContent =
      loop.stage === "idle"
        ? "Nothing to label yet: a lead starts the loop (pretrain an encoder)."
        : `Preparing the first batch (${loop.stage})…`;
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
    return act("Not submitted", submit);
  }
  return undefined;
}

function currentTargets() {
  return targets(page.sel, items().length);
}

// --- labels -------------------------------------------------------------------------------------------
/** Label the cells `indices`: `labelOf(item)` says what each gets ({label} or {unsure}). One undo entry
 * for the whole action. */
async function label(indices, labelOf) {
  const plan = planLabelRequests(items(), indices, labelOf);
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
  try {
    for (const { indices, body } of plan) {
      const cells = indices.map((i) => items()[i].cell);
      const share = Math.round(((seconds * indices.length) / total) * 100) / 100;
      const data = await api.annotate({ cells, seconds_spent: share, ...body });
      const indexOf = new Map(indices.map((i) => [items()[i].cell, i]));
      for (const a of data.annotations) {
        const i = indexOf.get(a.cell);
        if (i === undefined) continue;
        items()[i].mine = a;
        annotationIds.push(a.id);
        labelled.push(i);
      }
    }
  } finally {
    page.undo.pushLabel(annotationIds, labelled);
    if (labelled.length) {
      page.sel.selected.clear();
      advance();
      draw();
    }
  }
  await afterChange();
}

function labelWith(name) {
  return label(currentTargets(), () => ({ label: name }));
}

function acceptSuggestion() {
  const indices = currentTargets().filter((i) => items()[i].suggestion);
  if (!indices.length) {
    flash("No suggestion to accept yet: press the class key instead.");
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
  if (entry.kind === "skip") {
    flash("A skip cannot be undone: the cell left the batch.");
    return;
  }
  let done = 0;
  try {
    for (const step of undoSteps(entry)) {
      const item = items()[step.index];
      if (entry.kind === "label") {
        const data = await api.undoAnnotation(step.annotationId);
        item.mine = data.restored;
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
async function submit() {
  if (!page.batch || page.submitting) return;
  const batch = page.batch;
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
}

async function showSimilar() {
  const item = items()[page.sel.focus];
  if (!item) return;
  const data = await api.similar(item.cell, 8);
  render.renderSimilar($("detail-title"), $("detail-body"), item.cell, data, byName);
}

function toggleSaliency() {
  page.saliencyOn = !page.saliencyOn;
  draw();
}

// --- the attribute panel ------------------------------------------------------------------------------
function openAttributes() {
  const chosen = currentTargets();
  if (!chosen.length) return;
  const focus = page.sel.focus;
  const ordered = chosen.includes(focus) ? [focus, ...chosen.filter((i) => i !== focus)] : chosen;
  page.panel = openAttributePanel(items(), ordered);
  $("attribute-panel").hidden = false;
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
  grid.focus();
}

async function saveAttributes() {
  const panel = page.panel;
  if (!panel) return;
  const indices = currentTargets();
  const item = items()[indices[0]];
  const current = item && item.mine;
  const labelName = current ? current.label : item && item.suggestion;
  if (!labelName && !(current && current.unsure)) {
    flash("Give the cell a class first, then its attributes.");
    return;
  }
  closeAttributes();
  const body = { attributes: panel.values };
  if (labelName) body.label = labelName;
  else body.unsure = true;
  await send([{ indices, body }]);
}

function attributeAction(action) {
  if (action.type === "attr-close") closeAttributes();
  else if (action.type === "attr-save") return act("Not saved", saveAttributes);
  else if (action.type === "attr-row") attributeRow(page.panel, action.delta, config.attributes.length);
  else if (action.type === "attr-value") attributeStep(page.panel, config.attributes, action.delta);
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
  if (page.panel) return MODES.ATTRIBUTES;
  return MODES.GRID;
}

function dispatch(action) {
  switch (action.type) {
    case "attr-close":
    case "attr-save":
    case "attr-row":
    case "attr-value":
      return attributeAction(action);
    case "submit":
      return act("Not submitted", submit);
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
  const newest = loop.batch;
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

$("submit-batch").addEventListener("click", () => act("Not submitted", submit));
$("load-next").addEventListener("click", () => act("Could not load", loadBatch));
for (const b of document.querySelectorAll(".class-button")) {
  b.addEventListener("click", () => act("Not saved", () => labelWith(b.dataset.label)));
}
const start = $("start-pretrain");
if (start) {
  start.addEventListener("click", () => act("Not started", () => api.startPretrain().then(poll)));
}
const tune = $("start-finetune");
if (tune) tune.addEventListener("click", () => act("Not started", () => api.startFinetune().then(poll)));
$("tile-size").addEventListener("input", (e) => {
  grid.style.setProperty("--tile", `${e.target.value}px`);
});

act("Could not load", loadBatch).then(poll);
setInterval(poll, config.poll_ms);

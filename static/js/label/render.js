// Rendering of the labelling page: the grid of cells, the batch line, the loop's status, the detail
// panel (why, similar) and the attribute panel. Every server string goes in as text (see dom.js).
import { el, fill } from "./dom.js";
import { isDone, suggestionView, viewFilter, zoomLabel, zoomedSize } from "./state.js";

const pct = (x) => `${Math.round(100 * x)}%`;

/** The class's display name; the raw name when the page does not know the class. */
export function displayName(byName, name) {
  return byName[name] ? byName[name].display_name : String(name);
}

/** The suggestion line of a tile or of the focused view; null in blind mode (nothing to say). */
function suggestionLine(item, byName) {
  const view = suggestionView(item);
  if (view.kind === "shown") {
    const confidence = view.confidence == null ? "" : ` ${pct(view.confidence)}`;
    return el("span", { className: "suggestion" }, `${displayName(byName, view.label)}${confidence}`);
  }
  if (view.kind === "blind") return null;
  if (view.kind === "unlike") {
    return el("span", { className: "suggestion none unlike", title: "this cell lies far from every labelled cell, or from the labelled cells of the class the model would name (another lab or stain, say): the model's class would be a guess" }, "unlike the labelled cells");
  }
  if (view.kind === "low") {
    return el("span", { className: "suggestion none low", title: "the model's confidence is below the project's threshold" }, "no confident suggestion");
  }
  return el("span", { className: "suggestion none" }, "no suggestion yet");
}

function tileCaption(item, byName, pending, unsaved) {
  const parts = [suggestionLine(item, byName)];
  const mine = item.mine;
  if (mine) parts.push(el("span", { className: "mine" }, mine.unsure ? "unsure" : displayName(byName, mine.label)));
  else if (item.skipped) parts.push(el("span", { className: "mine" }, "skipped"));
  if (pending) parts.push(el("span", { className: "pending-attributes", title: "saved with the cell's label" }, "attributes kept"));
  if (unsaved) {
    const what = unsaved === "unsure" ? "unsure" : displayName(byName, unsaved);
    parts.push(el("span", { className: "unsaved-label", title: "the server has not saved this label yet" }, `${what}: not saved`));
  }
  return el("figcaption", {}, parts);
}

/** The tiles of the batch. `view`: {items, sel, byName, pending, unsaved, saliencyOn, saliencyUrl};
 * `unsaved`: a Map from cell id to the label (class name or "unsure") the server has not saved yet. */
export function renderGrid(grid, view) {
  const { items, sel, byName, pending, saliencyOn, saliencyUrl } = view;
  const unsaved = view.unsaved || new Map();
  const tiles = items.map((item, i) => {
    const tile = el("figure", { className: "tile", dataset: { index: i, cell: item.cell } });
    const mine = item.mine;
    if (mine) {
      tile.classList.add(mine.unsure ? "unsure" : "labelled");
      if (mine.label && byName[mine.label]) tile.style.setProperty("--c", byName[mine.label].colour);
      // Labelled tiles stay fully readable; a badge in the class's colour marks them.
      const badge = mine.unsure ? "?" : "✓";
      tile.append(el("span", { className: "done-badge", attrs: { "aria-hidden": "true" } }, badge));
    }
    if (item.skipped) tile.classList.add("skipped");
    if (unsaved.has(item.cell)) tile.classList.add("unsaved");
    if (i === sel.focus) tile.classList.add("focused");
    if (sel.selected.has(i)) tile.classList.add("selected");
    const frame = el(
      "div",
      { className: "frame" },
      el("img", { src: item.image_url, alt: `cell ${item.cell}`, loading: "lazy" }),
      saliencyOn && i === sel.focus ? el("img", { className: "saliency", src: saliencyUrl(item.cell), alt: "saliency" }) : null,
    );
    tile.append(frame, tileCaption(item, byName, pending[item.cell], unsaved.get(item.cell)));
    return tile;
  });
  grid.replaceChildren(...tiles);
}

/** The line on labels the server has not saved (state.describeUnsaved); hidden when there are none. */
export function renderUnsaved(node, text) {
  node.textContent = text;
  node.hidden = !text;
}

/** "Batch 3 · model v2 · index v1 · strategy margin · 4 of 12 done" (ids kept for the tests). */
export function renderMeta(node, batch) {
  if (!batch) {
    node.textContent = "No batch yet.";
    return;
  }
  const items = batch.items;
  const done = items.filter(isDone).length;
  const model = batch.classifier_version ? `model v${batch.classifier_version}` : "no model yet (cold start)";
  fill(
    node,
    "Batch ",
    el("b", { id: "batch-number" }, String(batch.number)),
    " · ",
    el("span", { id: "batch-model" }, model),
    batch.index_version == null ? " · no index yet" : ` · index v${batch.index_version}`,
    ` · strategy ${batch.strategy} · `,
    el("span", { id: "batch-progress" }, `${done} of ${items.length} done`),
  );
}

/** The loop's status line: a message of the page (`flash`), running jobs, the last failure, the budget. */
export function renderStatus(node, loop, flash) {
  const parts = [];
  if (flash) parts.push(el("span", { className: "flash" }, flash.text));
  node.classList.toggle("error", Boolean(flash && flash.isError));
  if (loop) {
    for (const job of loop.jobs) {
      const span = el("span", { className: "job", dataset: { kind: job.kind, status: job.status } }, `${job.kind} ${job.status}`);
      if (job.status === "running") {
        const bar = el("progress", { max: 1 });
        bar.value = Number(job.progress) || 0;
        span.append(" ", bar, ` ${job.message || ""}`);
      }
      parts.push(span);
    }
    if (loop.last_failed && !loop.jobs.length) {
      parts.push(el("span", { className: "error" }, `last ${loop.last_failed.kind} job failed: ${loop.last_failed.error}`));
    }
    const f1 = loop.validation_macro_f1 == null ? "" : ` · validation macro-F1 ${loop.validation_macro_f1.toFixed(3)}`;
    parts.push(el("span", { className: "meta", id: "label-count" }, `${loop.labels.count} of ${loop.labels.budget} labels${f1}`));
    node.dataset.stage = loop.stage;
  }
  const spaced = [];
  parts.forEach((p, k) => spaced.push(...(k ? [" ", p] : [p])));
  fill(node, spaced);
}

/** Why the cell was queried, and its label history. */
export function renderWhy(title, body, cell, data) {
  title.textContent = `Why cell ${cell}`;
  body.dataset.cell = String(cell);
  const rows = data.queried.map((q) => {
    const li = el("li", {}, `batch ${q.batch} by `, el("b", {}, String(q.strategy)));
    let text = "";
    if (q.strategy !== q.requested_strategy) text += ` (cold start for ${q.requested_strategy})`;
    text += `, rank ${q.rank + 1} of ${q.batch_size}`;
    if (q.score != null) text += `, uncertainty ${Number(q.score).toFixed(3)}`;
    text += q.classifier_version ? `, model v${q.classifier_version}` : ", no model yet";
    text += q.index_version == null ? ", no index yet" : `, index v${q.index_version}`;
    li.append(text);
    return li;
  });
  const history = data.history.map((h) =>
    el("li", {}, `${h.annotator}: ${h.unsure ? "unsure" : h.label}${h.withdrawn ? " (undone)" : ""}`),
  );
  fill(body, el("ul", { id: "why-list" }, rows), history.length ? [el("h4", {}, "History"), el("ul", {}, history)] : null);
}

/** The cell's nearest neighbours with their labels (an annotator's own labels only: data.labels "yours"). */
export function renderSimilar(title, body, cell, data, byName) {
  // "—" keeps the captions short under the 96 px cells; the title says what it means.
  const none = data.labels === "yours" ? "not labelled by you" : "unlabelled";
  fill(title, `Cells like cell ${cell}`, el("span", { className: "legend-note" }, ` · — ${none}`));
  const figures = data.neighbours.map((n) => {
    const similarity = Number(n.similarity).toFixed(2);
    const name = n.label ? displayName(byName, n.label) : "—";
    return el(
      "figure",
      { attrs: { title: `cell ${n.cell}: ${n.label ? name : none}, similarity ${similarity}` } },
      el("img", { src: n.image_url, alt: `cell ${n.cell}` }),
      el("figcaption", {}, `${name} · ${similarity}`),
    );
  });
  body.dataset.cell = String(cell);
  fill(body, el("div", { className: "similar", id: "similar-list" }, figures));
}

/** The attribute panel's rows; a click on a value calls onPick(name, value). The model's suggested value
 * is outlined, its probability in the title. */
export function renderAttributes(node, specs, panel, onPick) {
  const rows = specs.map((spec, r) => {
    const guess = panel.suggested ? panel.suggested[spec.name] : undefined;
    const buttons = spec.values.map((v) => {
      const suggested = Boolean(guess) && guess.value === v;
      const button = el(
        "button",
        {
          type: "button",
          className: `attr-value${panel.values[spec.name] === v ? " chosen" : ""}${suggested ? " suggested" : ""}`,
          dataset: { attr: spec.name, value: v },
          title: suggested ? `the model suggests this (${pct(guess.confidence)}); M takes its suggestions` : undefined,
        },
        v,
      );
      button.addEventListener("click", () => onPick(spec.name, v));
      return button;
    });
    return el("div", { className: `attr-row${r === panel.row ? " active" : ""}` }, el("span", {}, spec.name.replaceAll("_", " ")), buttons);
  });
  fill(node, rows);
}

/** The focused cell, large: its image at `view.zoom` (1 = natural size) with brightness and contrast as
 * a CSS filter, and a caption. `nodes`: {image, zoomValue, caption}. The image keeps its source while the
 * focus stays on the cell, so that moving a slider does not reload it. */
export function renderFocus(nodes, item, byName, view) {
  const { image, caption, zoomValue } = nodes;
  zoomValue.textContent = zoomLabel(view.zoom);
  image.style.filter = viewFilter(view);
  if (!item) {
    image.hidden = true;
    image.removeAttribute("src");
    delete image.dataset.cell;
    caption.textContent = "No cell focused.";
    return;
  }
  image.hidden = false;
  if (image.dataset.cell !== String(item.cell)) {
    image.dataset.cell = String(item.cell);
    image.alt = `cell ${item.cell}, large`;
    image.src = item.image_url;
  }
  sizeFocusImage(image, view.zoom);
  const mine = item.mine;
  const yours = mine ? (mine.unsure ? "unsure" : displayName(byName, mine.label)) : item.skipped ? "skipped" : "not labelled";
  fill(caption, el("b", {}, `Cell ${item.cell}`), " · ", suggestionLine(item, byName) || "suggestions hidden (blind)", " · yours: ", el("span", { className: "mine" }, yours));
}

/** The focused image at `zoom` times its natural size; nothing until it has loaded (its size is unknown). */
export function sizeFocusImage(image, zoom) {
  if (!image.naturalWidth) return;
  const { width, height } = zoomedSize(image.naturalWidth, image.naturalHeight, zoom);
  image.style.width = `${width}px`;
  image.style.height = `${height}px`;
}

/** A panel that shows another cell than the focused one (why, similar) is dimmed, its title saying so. */
export function markStale(title, body, focusedCell) {
  const shown = body.dataset.cell;
  const stale = shown !== undefined && shown !== String(focusedCell);
  body.classList.toggle("stale", stale);
  let note = title.querySelector(".stale-note");
  if (stale && !note) {
    note = el("span", { className: "stale-note" }, " · not the focused cell");
    title.append(note);
  } else if (!stale && note) note.remove();
}

/** What the page says where there is no batch to label. */
export function emptyMessage(loop) {
  // A spent budget comes first: a background pretrain or fine-tune then builds no batch either.
  if (loop.index_version !== null && loop.labels.left <= 0) {
    return `The label budget is spent (${loop.labels.count} of ${loop.labels.budget} labels): ` +
      "a lead raises it in the project's settings to go on.";
  }
  if (loop.stage !== "idle") return `Preparing the next batch (${loop.stage})…`;
  if (loop.index_version === null) return "Nothing to label yet: a lead starts the loop (pretrain an encoder).";
  if (loop.last_failed) return "No batch: the last loop job failed (above); a lead starts it again.";
  return "Asking for the next batch…";
}

// The labelling page: keyboard-first labelling of the current query batch. Plain JS, no framework:
// the server holds all state; this file renders the batch, sends labels and polls the loop's progress.
(() => {
  "use strict";
  const config = JSON.parse(document.getElementById("label-config").textContent);
  const api = config.api;
  const $ = (id) => document.getElementById(id);
  const grid = $("grid");
  const byKey = Object.fromEntries(config.classes.filter((c) => c.key).map((c) => [c.key, c]));
  const byName = Object.fromEntries(config.classes.map((c) => [c.name, c]));

  const state = {
    batch: null, // the batch as the server sent it
    focus: 0, // index into batch.items
    anchor: 0, // start of a shift-selection
    selected: new Set(), // indices
    undo: [], // stack of {annotationIds: [...], cells: [...]} or {skipCell}
    lastActionAt: performance.now(),
    submitting: false,
    saliencyOn: false,
    attrRow: 0,
    attrValues: {},
  };

  function csrf() {
    const m = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  async function call(method, url, body) {
    const response = await fetch(url, {
      method,
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const message = (data.error && data.error.detail) || data.detail || JSON.stringify(data);
      flash(`Not saved: ${message}`, true);
      throw new Error(message);
    }
    return data;
  }

  function flash(text, isError = false) {
    const status = $("loop-status");
    status.dataset.flash = text;
    status.classList.toggle("error", isError);
    renderStatus(state.loop);
  }

  // --- rendering ----------------------------------------------------------------------------------
  function items() {
    return state.batch ? state.batch.items : [];
  }

  function isDone(item) {
    return item.skipped || (item.mine !== null && item.mine !== undefined);
  }

  function pct(x) {
    return `${Math.round(100 * x)}%`;
  }

  function render() {
    const list = items();
    grid.innerHTML = "";
    $("empty").hidden = list.length > 0;
    list.forEach((item, i) => {
      const tile = document.createElement("figure");
      tile.className = "tile";
      tile.dataset.index = i;
      tile.dataset.cell = item.cell;
      const mine = item.mine;
      if (mine) {
        tile.classList.add(mine.unsure ? "unsure" : "labelled");
        if (mine.label) tile.style.setProperty("--c", byName[mine.label].colour);
      }
      if (item.skipped) tile.classList.add("skipped");
      if (i === state.focus) tile.classList.add("focused");
      if (state.selected.has(i)) tile.classList.add("selected");
      const suggestion = item.suggestion
        ? `<span class="suggestion">${byName[item.suggestion].display_name} ${pct(item.confidence)}</span>`
        : `<span class="suggestion none">no suggestion yet</span>`;
      const label = mine
        ? `<span class="mine">${mine.unsure ? "unsure" : byName[mine.label].display_name}</span>`
        : item.skipped
          ? `<span class="mine">skipped</span>`
          : "";
      tile.innerHTML =
        `<div class="frame"><img src="${item.image_url}" alt="cell ${item.cell}" loading="lazy">` +
        (state.saliencyOn && i === state.focus
          ? `<img class="saliency" src="${api.saliency.replace("{id}", item.cell)}" alt="saliency">`
          : "") +
        `</div><figcaption>${suggestion}${label}</figcaption>`;
      tile.addEventListener("click", (event) => onTileClick(event, i));
      grid.appendChild(tile);
    });
    renderMeta();
  }

  function renderMeta() {
    const b = state.batch;
    if (!b) {
      $("batch-meta").textContent = "No batch yet.";
      return;
    }
    const done = items().filter(isDone).length;
    const model = b.classifier_version ? `model v${b.classifier_version}` : "no model yet (cold start)";
    $("batch-meta").innerHTML =
      `Batch <b id="batch-number">${b.number}</b> · <span id="batch-model">${model}</span> · ` +
      `index v${b.index_version} · strategy ${b.strategy} · ` +
      `<span id="batch-progress">${done} of ${items().length} done</span>`;
  }

  function renderStatus(loop) {
    if (!loop) return;
    const status = $("loop-status");
    const parts = [];
    if (status.dataset.flash) parts.push(`<span class="flash">${status.dataset.flash}</span>`);
    for (const job of loop.jobs) {
      parts.push(
        `<span class="job" data-kind="${job.kind}" data-status="${job.status}">${job.kind} ${job.status}` +
          (job.status === "running" ? ` <progress max="1" value="${job.progress}"></progress> ${job.message}` : "") +
          `</span>`,
      );
    }
    if (loop.last_failed && !loop.jobs.length) {
      parts.push(`<span class="error">last ${loop.last_failed.kind} job failed: ${loop.last_failed.error}</span>`);
    }
    const f1 = loop.validation_macro_f1 == null ? "" : ` · validation macro-F1 ${loop.validation_macro_f1.toFixed(3)}`;
    parts.push(
      `<span class="meta" id="label-count">${loop.labels.count} of ${loop.labels.budget} labels${f1}</span>`,
    );
    status.innerHTML = parts.join(" ");
    status.dataset.stage = loop.stage;
    const reviewCount = $("review-count");
    if (reviewCount) reviewCount.textContent = loop.review_count;
    if (!state.batch) {
      $("empty").hidden = false;
      $("empty").textContent =
        loop.stage === "idle"
          ? "Nothing to label yet: a lead starts the loop (pretrain an encoder)."
          : `Preparing the first batch (${loop.stage})…`;
    }
  }

  function onTileClick(event, i) {
    if (event.shiftKey) {
      selectRange(state.anchor, i);
    } else if (event.ctrlKey || event.metaKey) {
      if (state.selected.has(i)) state.selected.delete(i);
      else state.selected.add(i);
      state.anchor = i;
    } else {
      state.selected.clear();
      state.anchor = i;
    }
    state.focus = i;
    render();
    grid.focus();
  }

  function selectRange(a, b) {
    state.selected.clear();
    for (let k = Math.min(a, b); k <= Math.max(a, b); k++) state.selected.add(k);
  }

  function columns() {
    const tiles = grid.querySelectorAll(".tile");
    if (tiles.length < 2) return 1;
    const top = tiles[0].offsetTop;
    let n = 0;
    for (const t of tiles) {
      if (t.offsetTop !== top) break;
      n++;
    }
    return Math.max(1, n);
  }

  // The cells an action applies to: the selection, else the focused cell.
  function targets() {
    const chosen = state.selected.size ? [...state.selected].sort((a, b) => a - b) : [state.focus];
    return chosen.filter((i) => i >= 0 && i < items().length);
  }

  function secondsSinceLastAction() {
    const now = performance.now();
    const seconds = Math.min((now - state.lastActionAt) / 1000, 300);
    state.lastActionAt = now;
    return Math.round(seconds * 100) / 100;
  }

  // --- actions --------------------------------------------------------------------------------------
  async function label(indices, payload) {
    if (!indices.length) return;
    const cells = indices.map((i) => items()[i].cell);
    const body = { cells, seconds_spent: secondsSinceLastAction(), ...payload };
    const data = await call("POST", api.annotate, body);
    data.annotations.forEach((a, k) => {
      items()[indices[k]].mine = a;
    });
    state.undo.push({ annotationIds: data.annotations.map((a) => a.id), indices });
    state.selected.clear();
    advance();
    afterChange();
  }

  function acceptSuggestion(indices) {
    const withSuggestion = indices.filter((i) => items()[i].suggestion);
    if (!withSuggestion.length) {
      flash("No suggestion to accept yet: press the class key instead.");
      return;
    }
    // Cells of one request share one label, so group by suggestion.
    const groups = {};
    for (const i of withSuggestion) (groups[items()[i].suggestion] ||= []).push(i);
    return Promise.all(Object.entries(groups).map(([name, idx]) => label(idx, { label: name })));
  }

  async function undo() {
    const last = state.undo.pop();
    if (!last) {
      flash("Nothing to undo.");
      return;
    }
    if (last.skipIndex !== undefined) {
      flash("A skip cannot be undone: the cell left the batch.");
      return;
    }
    for (let k = last.annotationIds.length - 1; k >= 0; k--) {
      const data = await call("POST", api.undo.replace("{id}", last.annotationIds[k]));
      items()[last.indices[k]].mine = data.restored;
    }
    state.focus = last.indices[0];
    render();
    afterChange(false);
  }

  async function skip(indices) {
    for (const i of indices) {
      const item = items()[i];
      await call("POST", api.skip.replace("{id}", state.batch.id), { cell: item.cell });
      item.skipped = true;
      state.undo.push({ skipIndex: i });
    }
    state.selected.clear();
    advance();
    afterChange();
  }

  function advance() {
    const list = items();
    for (let step = 1; step <= list.length; step++) {
      const k = (state.focus + step) % list.length;
      if (!isDone(list[k])) {
        state.focus = k;
        state.anchor = k;
        return;
      }
    }
  }

  function afterChange(maySubmit = true) {
    render();
    if (maySubmit && state.batch && !state.batch.submitted && items().length && items().every(isDone)) {
      submit();
    }
  }

  async function submit() {
    if (!state.batch || state.submitting) return;
    state.submitting = true;
    try {
      await call("POST", api.submit.replace("{id}", state.batch.id));
      state.batch.submitted = true;
      flash(`Batch ${state.batch.number} submitted: retraining…`);
    } finally {
      state.submitting = false;
    }
    poll();
  }

  async function loadBatch() {
    const data = await call("GET", api.batch);
    const previous = state.batch ? state.batch.id : null;
    state.batch = data.batch;
    if (!state.batch || state.batch.id !== previous) {
      state.focus = 0;
      state.selected.clear();
      state.undo = [];
      state.lastActionAt = performance.now();
      if (state.batch) {
        const first = items().findIndex((item) => !isDone(item));
        state.focus = Math.max(first, 0);
      }
    }
    $("next-batch").hidden = true;
    const status = $("loop-status");
    delete status.dataset.flash;
    render();
  }

  // --- the cell detail panel: why, similar, saliency -------------------------------------------------
  async function showWhy() {
    const item = items()[state.focus];
    if (!item) return;
    const data = await call("GET", api.why.replace("{id}", item.cell));
    const rows = data.queried
      .map(
        (q) =>
          `<li>batch ${q.batch} by <b>${q.strategy}</b>` +
          (q.strategy !== q.requested_strategy ? ` (cold start for ${q.requested_strategy})` : "") +
          `, rank ${q.rank + 1} of ${q.batch_size}` +
          (q.score == null ? "" : `, uncertainty ${q.score.toFixed(3)}`) +
          (q.classifier_version ? `, model v${q.classifier_version}` : ", no model yet") +
          `, index v${q.index_version}</li>`,
      )
      .join("");
    const history = data.history
      .map((h) => `<li>${h.annotator}: ${h.unsure ? "unsure" : h.label}${h.withdrawn ? " (undone)" : ""}</li>`)
      .join("");
    $("detail-title").textContent = `Why cell ${item.cell}`;
    $("detail-body").innerHTML = `<ul id="why-list">${rows}</ul>` + (history ? `<h4>History</h4><ul>${history}</ul>` : "");
  }

  async function showSimilar() {
    const item = items()[state.focus];
    if (!item) return;
    const data = await call("GET", `${api.similar.replace("{id}", item.cell)}?k=8`);
    $("detail-title").textContent = `Cells like ${item.cell}`;
    $("detail-body").innerHTML =
      `<div class="similar" id="similar-list">` +
      data.neighbours
        .map(
          (n) =>
            `<figure><img src="${n.image_url}" alt="cell ${n.cell}"><figcaption>${
              n.label ? byName[n.label].display_name : "unlabelled"
            } · ${n.similarity.toFixed(2)}</figcaption></figure>`,
        )
        .join("") +
      `</div>`;
  }

  function toggleSaliency() {
    state.saliencyOn = !state.saliencyOn;
    render();
  }

  // --- attributes panel ------------------------------------------------------------------------------
  function openAttributes() {
    const item = items()[state.focus];
    if (!item) return;
    state.attrValues = { ...((item.mine && item.mine.attributes) || {}) };
    state.attrRow = 0;
    $("attribute-panel").hidden = false;
    renderAttributes();
  }

  function renderAttributes() {
    const rows = config.attributes
      .map((spec, r) => {
        const values = spec.values
          .map(
            (v) =>
              `<button type="button" class="attr-value${state.attrValues[spec.name] === v ? " chosen" : ""}" ` +
              `data-attr="${spec.name}" data-value="${v}">${v}</button>`,
          )
          .join("");
        return `<div class="attr-row${r === state.attrRow ? " active" : ""}"><span>${spec.name.replaceAll("_", " ")}</span>${values}</div>`;
      })
      .join("");
    $("attribute-rows").innerHTML = rows;
    for (const b of $("attribute-rows").querySelectorAll(".attr-value")) {
      b.addEventListener("click", () => {
        state.attrValues[b.dataset.attr] = b.dataset.value;
        renderAttributes();
      });
    }
  }

  function closeAttributes() {
    $("attribute-panel").hidden = true;
    grid.focus();
  }

  async function saveAttributes() {
    const indices = targets();
    const item = items()[indices[0]];
    const current = item && item.mine;
    const labelName = current ? current.label : item && item.suggestion;
    if (!labelName && !(current && current.unsure)) {
      flash("Give the cell a class first, then its attributes.");
      return;
    }
    closeAttributes();
    const payload = { attributes: state.attrValues };
    if (labelName) payload.label = labelName;
    else payload.unsure = true;
    await label(indices, payload);
  }

  function attributeKey(event) {
    const specs = config.attributes;
    const spec = specs[state.attrRow];
    if (event.key === "Escape") closeAttributes();
    else if (event.key === "Enter") saveAttributes();
    else if (event.key === "ArrowDown") state.attrRow = Math.min(state.attrRow + 1, specs.length - 1);
    else if (event.key === "ArrowUp") state.attrRow = Math.max(state.attrRow - 1, 0);
    else if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
      const k = spec.values.indexOf(state.attrValues[spec.name]);
      const step = event.key === "ArrowRight" ? 1 : -1;
      const next = k < 0 ? (step > 0 ? 0 : spec.values.length - 1) : (k + step + spec.values.length) % spec.values.length;
      state.attrValues[spec.name] = spec.values[next];
    } else return;
    event.preventDefault();
    if (!$("attribute-panel").hidden) renderAttributes();
  }

  // --- keyboard ----------------------------------------------------------------------------------------
  function move(delta, extend) {
    const n = items().length;
    if (!n) return;
    state.focus = Math.min(Math.max(state.focus + delta, 0), n - 1);
    if (extend) selectRange(state.anchor, state.focus);
    else {
      state.selected.clear();
      state.anchor = state.focus;
    }
    render();
    const tile = grid.querySelector(".tile.focused");
    if (tile) tile.scrollIntoView({ block: "nearest" });
  }

  document.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement) return;
    if (!$("attribute-panel").hidden) {
      attributeKey(event);
      return;
    }
    const key = event.key;
    const lower = key.length === 1 ? key.toLowerCase() : key;
    if (key === "Enter" && event.shiftKey) submit();
    else if ((key === "z" && (event.ctrlKey || event.metaKey)) || (lower === "z" && !event.ctrlKey)) undo();
    else if (event.ctrlKey || event.metaKey || event.altKey) return;
    else if (byKey[key]) label(targets(), { label: byKey[key].name });
    else if (key === "ArrowRight") move(1, event.shiftKey);
    else if (key === "ArrowLeft") move(-1, event.shiftKey);
    else if (key === "ArrowDown") move(columns(), event.shiftKey);
    else if (key === "ArrowUp") move(-columns(), event.shiftKey);
    else if (key === "Enter" || key === " ") acceptSuggestion(targets());
    else if (lower === "u") label(targets(), { unsure: true });
    else if (lower === "x") skip(targets());
    else if (lower === "a") openAttributes();
    else if (lower === "s") showSimilar();
    else if (lower === "g") toggleSaliency();
    else if (lower === "w") showWhy();
    else if (lower === "n" && !$("next-batch").hidden) loadBatch();
    else if (key === "Escape") {
      state.selected.clear();
      render();
    } else return;
    event.preventDefault();
  });

  // --- polling the loop ------------------------------------------------------------------------------
  async function poll() {
    let loop;
    try {
      loop = await call("GET", api.loop);
    } catch {
      return;
    }
    state.loop = loop;
    renderStatus(loop);
    const newest = loop.batch;
    if (newest && (!state.batch || newest.id !== state.batch.id)) {
      const finished = !state.batch || items().every(isDone);
      if (finished) await loadBatch();
      else {
        $("next-batch-text").textContent = `Batch ${newest.number} is ready${
          newest.classifier_version ? ` (model v${newest.classifier_version})` : ""
        }.`;
        $("next-batch").hidden = false;
      }
    }
  }

  $("submit-batch").addEventListener("click", submit);
  $("load-next").addEventListener("click", loadBatch);
  for (const b of document.querySelectorAll(".class-button")) {
    b.addEventListener("click", () => label(targets(), { label: b.dataset.label }));
  }
  const start = $("start-pretrain");
  if (start) start.addEventListener("click", () => call("POST", api.start, {}).then(poll));
  const tune = $("start-finetune");
  if (tune) tune.addEventListener("click", () => call("POST", api.finetune, {}).then(poll));
  $("tile-size").addEventListener("input", (e) => {
    grid.style.setProperty("--tile", `${e.target.value}px`);
  });

  loadBatch().then(poll);
  setInterval(poll, config.poll_ms);
})();

/* The project lead's dashboard: reads data.json and map.json and draws them with Chart.js (vendored). */
(function () {
  "use strict";

  const root = document.getElementById("dashboard");
  if (!root || typeof Chart === "undefined") return;
  const config = JSON.parse(document.getElementById("dashboard-config").textContent);
  const $ = (id) => document.getElementById(id);
  const classColour = Object.fromEntries(config.classes.map((c) => [c.name, c.colour]));
  const classTitle = Object.fromEntries(config.classes.map((c) => [c.name, c.display_name]));
  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#475569", "#ea580c"];
  const UNLABELLED = "#d0d5dd";
  const charts = {};
  window.leukoloopDashboard = charts;

  const fmt = (v, digits = 3) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
  const withAlpha = (hex, alpha) => {
    const h = (hex || "#777777").replace("#", "");
    const n = parseInt(h.length === 3 ? h.split("").map((c) => c + c).join("") : h, 16);
    return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
  };
  const el = (tag, attrs = {}, text = "") => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== "") node.textContent = text;
    return node;
  };
  const draw = (key, canvasId, spec) => {
    if (charts[key]) charts[key].destroy();
    charts[key] = new Chart($(canvasId), spec);
    return charts[key];
  };

  // --- Budget and classes -------------------------------------------------------------------------
  function renderBudget(data) {
    const b = data.budget;
    $("budget-used").textContent = b.used;
    $("budget-total").textContent = b.total;
    $("budget-left").textContent = b.left;
    $("budget-review").textContent = b.in_review;
    $("budget-batches").textContent = b.in_batches;
    $("budget-fill").style.width = `${Math.min(100, (100 * b.used) / Math.max(b.total, 1))}%`;
    draw("classes", "class-chart", {
      type: "bar",
      data: {
        labels: data.class_counts.map((c) => c.display_name),
        datasets: [{
          label: "labels",
          data: data.class_counts.map((c) => c.count),
          backgroundColor: data.class_counts.map((c) => withAlpha(c.colour, 0.8)),
        }],
      },
      options: { maintainAspectRatio: false, plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
  }

  // --- Learning curve -----------------------------------------------------------------------------
  function renderCurve(curve) {
    const points = curve.map((p) => ({ x: p.labels, y: p.macro_f1, version: p.version, interval: p.interval, index: p.index_version }));
    const banded = curve.filter((p) => p.interval);
    draw("curve", "curve-chart", {
      type: "line",
      data: {
        datasets: [
          {
            label: "validation macro-F1",
            data: points,
            borderColor: "#6d28d9",
            backgroundColor: "#6d28d9",
            pointRadius: 4,
            tension: 0,
          },
          {
            label: "95% interval (low)",
            data: banded.map((p) => ({ x: p.labels, y: p.interval[0] })),
            borderColor: "rgba(109, 40, 217, 0.25)",
            pointRadius: 0,
            fill: false,
          },
          {
            label: "95% bootstrap interval",
            data: banded.map((p) => ({ x: p.labels, y: p.interval[1] })),
            borderColor: "rgba(109, 40, 217, 0.25)",
            backgroundColor: "rgba(109, 40, 217, 0.15)",
            pointRadius: 0,
            fill: 1,
          },
        ],
      },
      options: {
        maintainAspectRatio: false,
        parsing: { xAxisKey: "x", yAxisKey: "y" },
        scales: {
          x: { type: "linear", title: { display: true, text: "labels used" }, beginAtZero: true },
          y: { min: 0, max: 1, title: { display: true, text: "validation macro-F1" } },
        },
        plugins: {
          legend: { labels: { filter: (item) => item.datasetIndex !== 1 } },
          tooltip: {
            filter: (item) => item.datasetIndex === 0,
            callbacks: {
              title: (items) => (items.length ? `classifier v${items[0].raw.version} · index v${items[0].raw.index ?? "–"}` : ""),
              label: (item) => {
                const r = item.raw;
                const band = r.interval ? ` [${fmt(r.interval[0])}, ${fmt(r.interval[1])}]` : "";
                return `macro-F1 ${fmt(r.y)}${band} with ${r.x} labels`;
              },
            },
          },
        },
      },
    });
  }

  // --- Current model ------------------------------------------------------------------------------
  function renderModel(model) {
    if (!model) {
      $("model-summary").textContent = "No classifier yet: submit a batch of labels to train one.";
      return;
    }
    $("model-version").textContent = `v${model.version}`;
    const band = model.interval ? ` (95% interval ${fmt(model.interval[0])}–${fmt(model.interval[1])})` : "";
    $("model-summary").textContent =
      `macro-F1 ${fmt(model.macro_f1)}${band} · accuracy ${fmt(model.accuracy)} · ECE ${fmt(model.ece)} · ` +
      `${model.n_validation ?? 0} validation cells · trained on ${model.labels} labels`;
    const names = Object.keys(model.per_class_f1);
    draw("f1", "f1-chart", {
      type: "bar",
      data: {
        labels: names.map((n) => classTitle[n] || n),
        datasets: [{
          label: "F1",
          data: names.map((n) => model.per_class_f1[n]),
          backgroundColor: names.map((n) => withAlpha(classColour[n], 0.8)),
        }],
      },
      options: { maintainAspectRatio: false, plugins: { legend: { display: false } }, scales: { y: { min: 0, max: 1 } } },
    });
    renderConfusion(model.confusion);
  }

  function renderConfusion(confusion) {
    const box = $("confusion");
    box.replaceChildren();
    if (!confusion || !confusion.labels || !confusion.labels.length) {
      box.append(el("p", { class: "meta" }, "No validation cells scored."));
      return;
    }
    const table = el("table", { class: "confusion", id: "confusion-table" });
    const head = el("tr");
    head.append(el("th"));
    confusion.labels.forEach((l) => head.append(el("th", { scope: "col" }, classTitle[l] || l)));
    const thead = el("thead");
    thead.append(head);
    table.append(thead);
    const body = el("tbody");
    confusion.matrix.forEach((row, i) => {
      const tr = el("tr");
      tr.append(el("th", { class: "row", scope: "row" }, classTitle[confusion.labels[i]] || confusion.labels[i]));
      const total = row.reduce((a, b) => a + b, 0) || 1;
      row.forEach((count, j) => {
        const td = el("td", { class: i === j ? "diag" : "" }, String(count));
        const share = count / total;
        td.style.background = withAlpha(i === j ? "#16a34a" : "#dc2626", count ? 0.12 + 0.6 * share : 0);
        td.title = `${count} of ${total} true ${confusion.labels[i]} predicted ${confusion.labels[j]}`;
        tr.append(td);
      });
      body.append(tr);
    });
    table.append(body);
    box.append(table);
  }

  // --- Stopping and annotators --------------------------------------------------------------------
  function renderStopping(signal) {
    const state = $("stop-state");
    const words = {
      stop: "Stop labelling",
      continue: "Keep labelling",
      "too-early": "Too early to tell",
      "too-noisy": "Flat, but too noisy to tell",
    };
    state.textContent = words[signal.state] || signal.state;
    state.className = `stop-state ${signal.state}`;
    state.dataset.state = signal.state;
    $("stop-reason").textContent = signal.reason;
    $("stop-rule").textContent = signal.rule;
  }

  // "0.90 (9 of 10)": how many hidden gold cells the annotator labelled as the reviewer decided.
  function goldText(gold) {
    if (!gold || !gold.answered) return "–";
    return `${fmt(gold.accuracy)} (${gold.correct} of ${gold.answered})`;
  }

  function queueText(p) {
    if (p.paused) return "paused";
    if (p.open_batch === undefined) return "–";
    if (p.open_batch === null) return "no open batch";
    return `batch ${p.open_batch}: ${p.open_left} left`;
  }

  function renderAnnotators(info) {
    const body = $("annotator-table").querySelector("tbody");
    body.replaceChildren();
    if (!info.people.length) {
      const tr = el("tr");
      tr.append(el("td", { colspan: "8", class: "meta" }, "Nobody has labelled in leukoloop yet."));
      body.append(tr);
    }
    info.people.forEach((p) => {
      const tr = el("tr", { "data-annotator": p.annotator });
      [p.annotator, p.labels, fmt(p.labels_per_hour, 1), fmt(p.median_seconds, 1), fmt(p.kappa), fmt(p.agreement), goldText(p.gold), queueText(p)].forEach((v) => tr.append(el("td", {}, String(v))));
      body.append(tr);
    });
    const pairs = $("pair-table").querySelector("tbody");
    pairs.replaceChildren();
    $("twice-count").textContent = `(${info.cells_labelled_twice} cells labelled by more than one person)`;
    if (!info.pairs.length) {
      const tr = el("tr");
      tr.append(el("td", { colspan: "4", class: "meta" }, "No two annotators share two or more cells yet."));
      pairs.append(tr);
    }
    info.pairs.forEach((p) => {
      const tr = el("tr");
      [`${p.a} · ${p.b}`, p.shared, fmt(p.agreement), p.kappa === null ? "undefined" : fmt(p.kappa)].forEach((v) => tr.append(el("td", {}, String(v))));
      pairs.append(tr);
    });
    renderSeconds(info.seconds_by_class);
  }

  // Median seconds per label by class: the project's (what cost-aware acquisition uses) and each person's.
  function renderSeconds(table) {
    const head = $("seconds-table").querySelector("thead");
    const body = $("seconds-table").querySelector("tbody");
    head.replaceChildren();
    body.replaceChildren();
    if (!table || !table.classes.length) {
      const tr = el("tr");
      tr.append(el("td", { class: "meta" }, "No timed label yet."));
      body.append(tr);
      return;
    }
    const tr = el("tr");
    ["", ...table.classes].forEach((c) => tr.append(el("th", {}, c)));
    head.append(tr);
    const row = (name, cells, attrs) => {
      const r = el("tr", attrs);
      r.append(el("td", {}, name));
      table.classes.forEach((c) => r.append(el("td", {}, cells[c] ? `${fmt(cells[c].median, 1)} (${cells[c].n})` : "–")));
      body.append(r);
    };
    row("project", table.project, { "data-row": "project" });
    table.annotators.forEach((a) => row(a.annotator, a.by_class, { "data-annotator": a.annotator }));
  }

  // --- Embedding map ------------------------------------------------------------------------------
  let mapData = null;
  let pinned = null;

  function categoryColour(mode, value, order) {
    if (value === null || value === undefined) return UNLABELLED;
    if ((mode === "label" || mode === "prediction") && classColour[value]) return classColour[value];
    if (value === "(in review)") return "#f79009";
    return PALETTE[order % PALETTE.length];
  }

  function showCell(point) {
    const img = $("map-image");
    if (!point) {
      img.hidden = true;
      $("map-caption").textContent = "No cell selected.";
      return;
    }
    const p = mapData.points;
    const i = point.i;
    img.src = config.image_url.replace("{id}", p.cell[i]);
    img.alt = `cell ${p.cell[i]}`;
    img.hidden = false;
    img.dataset.cell = p.cell[i];
    const caption = $("map-caption");
    caption.replaceChildren();
    caption.append(el("div", {}, `cell ${p.cell[i]}${pinned ? " (pinned: click again to release)" : ""}`));
    caption.append(el("div", {}, `label: ${p.label[i] ? classTitle[p.label[i]] || p.label[i] : "unlabelled"}`));
    caption.append(el("div", {}, `prediction: ${p.prediction[i] ? classTitle[p.prediction[i]] || p.prediction[i] : "–"}`));
    caption.append(el("div", {}, `uncertainty: ${fmt(p.uncertainty[i])}`));
    caption.append(el("div", {}, `source: ${p.source[i]}`));
    const link = el("a", { href: img.src, target: "_blank", rel: "noopener" }, "open image");
    caption.append(link);
  }

  function mapDatasets(mode) {
    const p = mapData.points;
    const n = p.cell.length;
    if (mode === "uncertainty") {
      const data = [];
      const colours = [];
      const known = p.uncertainty.filter((u) => u !== null);
      const top = Math.max(1e-6, ...known);
      for (let i = 0; i < n; i++) {
        data.push({ x: p.x[i], y: p.y[i], i });
        const u = p.uncertainty[i];
        colours.push(u === null ? UNLABELLED : `rgba(220, 38, 38, ${0.12 + 0.88 * Math.min(1, u / top)})`);
      }
      const label = `uncertainty (1 − top probability): darker = less sure; darkest = ${fmt(top, 2)}`;
      return [{ label, data, backgroundColor: colours, pointRadius: 3.5 }];
    }
    const groups = new Map();
    for (let i = 0; i < n; i++) {
      const key = p[mode][i] ?? null;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push({ x: p.x[i], y: p.y[i], i });
    }
    const keys = [...groups.keys()].sort((a, b) => (a === null) - (b === null) || String(a).localeCompare(String(b)));
    return keys.map((key, order) => ({
      label: key === null ? (mode === "prediction" ? "no prediction" : "unlabelled") : classTitle[key] || key,
      data: groups.get(key),
      backgroundColor: withAlpha(categoryColour(mode, key, order), key === null ? 0.5 : 0.85),
      pointRadius: key === null ? 2.5 : 3.5,
    }));
  }

  function renderMap() {
    if (!mapData || !mapData.points) return;
    const mode = $("map-colour").value;
    draw("map", "map-chart", {
      type: "scatter",
      data: { datasets: mapDatasets(mode) },
      options: {
        maintainAspectRatio: false,
        animation: false,
        scales: { x: { display: false }, y: { display: false } },
        plugins: {
          legend: { position: "bottom" },
          tooltip: {
            callbacks: {
              label: (item) => {
                const p = mapData.points;
                const i = item.raw.i;
                return `cell ${p.cell[i]} · ${p.label[i] || "unlabelled"}`;
              },
            },
          },
        },
        onHover: (_event, elements, chart) => {
          if (pinned || !elements.length) return;
          showCell(chart.data.datasets[elements[0].datasetIndex].data[elements[0].index]);
        },
        onClick: (_event, elements, chart) => {
          if (!elements.length) {
            pinned = null;
            return;
          }
          const point = chart.data.datasets[elements[0].datasetIndex].data[elements[0].index];
          pinned = pinned && pinned.i === point.i ? null : point;
          showCell(point);
        },
      },
    });
    root.dataset.mapColour = mode;
  }

  const MAP_POLL_MS = 2000;

  async function loadMap() {
    const response = await fetch(config.map_url, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`map: HTTP ${response.status}`);
    mapData = await response.json();
    if (mapData.pending) {
      // A background job draws the map (UMAP); ask again until it is there.
      $("map-meta").textContent = mapData.note;
      root.dataset.map = "pending";
      window.setTimeout(() => loadMap().catch(showMapError), MAP_POLL_MS);
      return;
    }
    if (!mapData.points) {
      $("map-meta").textContent = mapData.note || "No embeddings yet.";
      root.dataset.map = "empty";
      return;
    }
    const sampled = mapData.n_shown < mapData.n_total ? ` (a random ${mapData.n_shown} of ${mapData.n_total})` : "";
    const model = mapData.classifier_version
      ? `predictions and uncertainty from classifier v${mapData.classifier_version}`
      : "no classifier trained on this index yet, so no predictions";
    $("map-meta").textContent =
      `${mapData.method.toUpperCase()} of index v${mapData.index_version}: ${mapData.n_shown} cells${sampled}; ${model}. ` +
      "Hover a point to see the cell; click to keep it.";
    $("map-colour").querySelector("option[value=prediction]").disabled = !mapData.classifier_version;
    $("map-colour").querySelector("option[value=uncertainty]").disabled = !mapData.classifier_version;
    renderMap();
    root.dataset.map = "ready";
  }

  async function load() {
    const response = await fetch(config.data_url, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`data: HTTP ${response.status}`);
    const data = await response.json();
    renderBudget(data);
    renderCurve(data.learning_curve);
    renderModel(data.current_model);
    renderStopping(data.stopping);
    renderAnnotators(data.annotators);
    $("dash-status").textContent = `${data.learning_curve.length} classifier version(s) · batch size ${data.project.batch_size}`;
    root.dataset.loaded = "true";
  }

  $("map-colour").addEventListener("change", renderMap);
  load().catch((error) => {
    $("dash-status").textContent = `Could not load the dashboard: ${error.message}`;
    $("dash-status").classList.add("error");
    root.dataset.loaded = "error";
  });
  function showMapError(error) {
    $("map-meta").textContent = `Could not load the map: ${error.message}`;
    root.dataset.map = "error";
  }
  loadMap().catch(showMapError);
})();

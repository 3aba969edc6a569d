/* Evaluation report of a classifier version: reliability diagram and differential counts (Chart.js, vendored). */
(function () {
  "use strict";

  const root = document.getElementById("evaluation-report");
  if (!root || typeof Chart === "undefined") return;
  const data = JSON.parse(document.getElementById("evaluation-report-data").textContent);
  const $ = (id) => document.getElementById(id);
  const charts = {};
  window.leukoloopEvaluationReport = charts;

  function reliability(rel) {
    if (!rel || !$("reliability-chart")) return;
    const centres = rel.bins.map((b) => (b.lo + b.hi) / 2);
    charts.reliability = new Chart($("reliability-chart"), {
      data: {
        datasets: [
          {
            type: "bar",
            label: "accuracy",
            data: rel.bins.map((b, i) => ({ x: centres[i], y: b.accuracy })),
            backgroundColor: "rgba(37, 99, 235, 0.6)",
            barPercentage: 1.0,
            categoryPercentage: 1.0,
          },
          {
            type: "line",
            label: "mean confidence",
            data: rel.bins.filter((b) => b.n > 0).map((b) => ({ x: b.confidence, y: b.confidence })),
            borderColor: "#dc2626",
            backgroundColor: "#dc2626",
            showLine: false,
          },
          {
            type: "line",
            label: "perfect calibration",
            data: [{ x: 0, y: 0 }, { x: 1, y: 1 }],
            borderColor: "#475569",
            borderDash: [4, 4],
            pointRadius: 0,
          },
        ],
      },
      options: {
        maintainAspectRatio: false,
        scales: {
          x: { type: "linear", min: 0, max: 1, title: { display: true, text: "confidence" } },
          y: { min: 0, max: 1, title: { display: true, text: "accuracy" } },
        },
        plugins: {
          tooltip: {
            callbacks: {
              afterLabel: (ctx) => (ctx.datasetIndex === 0 ? `cells: ${rel.bins[ctx.dataIndex].n}` : ""),
            },
          },
        },
      },
    });
  }

  function differential(diff) {
    if (!diff || !$("differential-chart")) return;
    charts.differential = new Chart($("differential-chart"), {
      type: "bar",
      data: {
        labels: diff.classes,
        datasets: [{ label: "mean |predicted − true| proportion across slides", data: diff.classes.map((c) => diff.mean_abs_diff[c]), backgroundColor: "rgba(217, 119, 6, 0.7)" }],
      },
      options: { maintainAspectRatio: false, scales: { y: { beginAtZero: true } } },
    });
    const select = $("slide-select");
    diff.slides.forEach((s, i) => {
      const option = document.createElement("option");
      option.value = String(i);
      option.textContent = `${s.slide} (${s.n} cells)`;
      select.appendChild(option);
    });
    const drawSlide = () => {
      const s = diff.slides[Number(select.value)];
      if (!s) return;
      if (charts.slide) charts.slide.destroy();
      charts.slide = new Chart($("slide-chart"), {
        type: "bar",
        data: {
          labels: diff.classes,
          datasets: [
            { label: "true proportion", data: diff.classes.map((c) => s.true[c]), backgroundColor: "rgba(22, 163, 74, 0.7)" },
            { label: "predicted proportion", data: diff.classes.map((c) => s.predicted[c]), backgroundColor: "rgba(37, 99, 235, 0.7)" },
          ],
        },
        options: { maintainAspectRatio: false, scales: { y: { beginAtZero: true, max: 1 } } },
      });
    };
    select.addEventListener("change", drawSlide);
    drawSlide();
  }

  reliability(data.reliability);
  differential(data.differential);
})();

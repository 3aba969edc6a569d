/* The exports page: starts exports and lists them through the export API, polling while any runs. */
(() => {
  "use strict";
  const root = document.getElementById("exports");
  const listUrl = root.dataset.listUrl;
  const POLL_MS = 1000;
  let timer = null;

  function csrf() {
    const m = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function row(job) {
    const tr = document.createElement("tr");
    tr.dataset.job = job.id;
    tr.dataset.status = job.status;
    tr.append(cell(job.id), cell(job.format), cell(job.status));
    const progress = document.createElement("td");
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = job.progress;
    progress.append(bar);
    tr.append(progress, cell((job.created_at || "").slice(0, 19).replace("T", " ")));
    const result = document.createElement("td");
    if (job.download_url) {
      const a = document.createElement("a");
      a.href = job.download_url;
      a.textContent = "Download";
      a.className = "download";
      result.append(a);
      if (job.result && job.result.size_bytes) result.append(` (${(job.result.size_bytes / 1e6).toFixed(2)} MB)`);
    } else if (job.status === "failed") {
      result.textContent = job.error ? job.error.split("\n")[0] : "failed";
      result.className = "error";
    } else {
      result.textContent = job.message || "";
    }
    tr.append(result);
    return tr;
  }

  async function refresh() {
    const response = await fetch(listUrl, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const jobs = (await response.json()).results;
    const body = document.querySelector("#export-table tbody");
    body.replaceChildren(...jobs.map(row));
    document.getElementById("export-empty").hidden = jobs.length > 0;
    const running = jobs.some((j) => j.status === "queued" || j.status === "running");
    root.dataset.running = String(running);
    window.clearTimeout(timer);
    if (running) timer = window.setTimeout(() => refresh().catch(showError), POLL_MS);
  }

  function showError(error) {
    document.getElementById("export-message").textContent = `Could not load the exports: ${error.message}`;
  }

  document.getElementById("export-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = document.getElementById("export-message");
    const format = document.getElementById("export-format").value;
    const response = await fetch(listUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify({ format }),
    });
    const body = await response.json();
    message.textContent = response.ok ? `Export ${body.id} (${format}) started.` : body.error.detail;
    await refresh();
  });

  refresh().catch(showError);
})();

/* The settings page's taxonomy section: each form.taxonomy-form is sent to the taxonomy API as JSON
   (data-url, data-method; its named fields, the CSRF token left out), after a confirmation when it has
   data-confirm. On success the page reloads (the server draws the classes, keys and history); a refusal's
   detail is shown as text in #taxonomy-error. Kept out of the HTML for the Content-Security-Policy. */
(function () {
  "use strict";

  function showError(text) {
    const box = document.getElementById("taxonomy-error");
    if (!box) return;
    box.textContent = text;
    box.hidden = !text;
  }

  function bodyOf(form) {
    const body = {};
    for (const [name, value] of new FormData(form).entries()) {
      if (name === "csrfmiddlewaretoken" || typeof value !== "string") continue;
      if (value.trim() === "" && name !== "display_name") continue; // optional fields left empty
      body[name] = value;
    }
    return body;
  }

  async function send(form) {
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    const token = form.querySelector("input[name=csrfmiddlewaretoken]");
    const buttons = form.querySelectorAll("button");
    for (const b of buttons) b.disabled = true;
    showError("");
    try {
      const response = await fetch(form.dataset.url, {
        method: form.dataset.method || "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          Accept: "application/json",
          "X-CSRFToken": token ? token.value : "",
        },
        body: JSON.stringify(bodyOf(form)),
      });
      if (response.ok) {
        window.location.reload();
        return;
      }
      let detail = `the server refused the change (HTTP ${response.status})`;
      try {
        const data = await response.json();
        if (data && data.error && typeof data.error.detail === "string") detail = data.error.detail;
      } catch (_) {
        /* not JSON: keep the status line */
      }
      showError(`Not changed: ${detail}`);
    } catch (error) {
      showError(`Not changed: the server cannot be reached (${error && error.message})`);
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  }

  function ready() {
    for (const form of document.querySelectorAll("form.taxonomy-form")) {
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        send(form);
      });
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", ready);
  else ready();
})();

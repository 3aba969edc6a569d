// The labelling page's calls to the server: fetch with the CSRF token, JSON in and out, and one error
// shape, {"error": {"status", "code", "detail", "fields"}}, as the API answers (annotation/api/errors.py).

/** An API error; `status`, `code`, `detail` and `fields` as the server's error body gives them. */
export class ApiError extends Error {
  constructor({ status, code, detail, fields }) {
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.fields = fields || {};
  }
}

/** Django's CSRF token from a cookie string. */
export function csrfToken(cookie) {
  const m = (cookie || "").match(/(?:^|; )csrftoken=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

/** The error shape of a failed response body, whatever the body was (JSON error, DRF detail, nothing). */
export function errorOf(status, data) {
  const error = data && typeof data === "object" && data.error && typeof data.error === "object" ? data.error : null;
  if (error) {
    return {
      status: error.status ?? status,
      code: error.code || "error",
      detail: String(error.detail || `HTTP ${status}`),
      fields: error.fields || {},
    };
  }
  const detail = data && typeof data === "object" && data.detail ? String(data.detail) : `HTTP ${status}`;
  return { status, code: "error", detail, fields: {} };
}

/** One JSON request. Resolves to the response body; rejects with an ApiError. */
export async function request(method, url, body, { fetchImpl = globalThis.fetch, cookie } = {}) {
  const token = csrfToken(cookie ?? (typeof document === "undefined" ? "" : document.cookie));
  let response;
  try {
    response = await fetchImpl(url, {
      method,
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": token },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch (exc) {
    throw new ApiError({ status: 0, code: "network", detail: `the server cannot be reached (${exc.message})` });
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(errorOf(response.status, data));
  return data ?? {};
}

const fill = (template, id) => template.replace("{id}", encodeURIComponent(String(id)));

/** The unskip URL: the page config's own, else the skip URL's sibling (…/batches/<id>/unskip/). */
export function unskipTemplate(urls) {
  return urls.unskip || urls.skip.replace(/skip\/$/, "unskip/");
}

/** The labelling page's endpoints, from the page config's `api` URLs ("{id}" is filled in). */
export function createApi(urls, options = {}) {
  const call = (method, url, body) => request(method, url, body, options);
  return {
    loop: () => call("GET", urls.loop),
    currentBatch: () => call("GET", urls.batch),
    annotate: (body) => call("POST", urls.annotate, body),
    undoAnnotation: (annotationId) => call("POST", fill(urls.undo, annotationId)),
    submit: (batchId) => call("POST", fill(urls.submit, batchId)),
    skip: (batchId, cell) => call("POST", fill(urls.skip, batchId), { cell }),
    unskip: (batchId, cell) => call("POST", fill(unskipTemplate(urls), batchId), { cell }),
    why: (cell) => call("GET", fill(urls.why, cell)),
    similar: (cell, k = 8) => call("GET", `${fill(urls.similar, cell)}?k=${k}`),
    startPretrain: () => call("POST", urls.start, {}),
    startFinetune: () => call("POST", urls.finetune, {}),
    saliencyUrl: (cell) => fill(urls.saliency, cell),
  };
}

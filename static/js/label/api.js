// The labelling page's calls to the server: fetch with the CSRF token, JSON in and out, and one error
// shape, {"error": {"status", "code", "detail", "fields"}}, as the API answers (annotation/api/errors.py).
// A label is sent with a client key and sent again with backoff when the server could not be reached or
// failed: the key makes the repeat land once (the server answers a repeat like the first).

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

/** One readable sentence from whatever a server put in `detail`: text as it is, field messages joined,
 * and for an empty or missing one what the status says (never "{}" or "[object Object]"). */
export function readableDetail(detail, status) {
  if (typeof detail === "string" && detail.trim()) return detail.trim();
  if (Array.isArray(detail)) {
    const parts = detail.map((d) => readableDetail(d, null)).filter(Boolean);
    if (parts.length) return parts.join("; ");
  } else if (detail && typeof detail === "object") {
    const parts = Object.entries(detail)
      .map(([key, value]) => [key, readableDetail(value, null)])
      .filter(([, text]) => text)
      .map(([key, text]) => `${key}: ${text}`);
    if (parts.length) return parts.join("; ");
  } else if (typeof detail === "number" || typeof detail === "boolean") {
    return String(detail);
  }
  if (status === null || status === undefined) return "";
  if (status === 0) return "the server cannot be reached";
  if (status >= 500) return `the server failed (HTTP ${status})`;
  if (status === 429) return "too many requests: wait a moment";
  return `the server refused the request (HTTP ${status})`;
}

/** The error shape of a failed response body, whatever the body was (JSON error, DRF detail, nothing). */
export function errorOf(status, data) {
  const error = data && typeof data === "object" && data.error && typeof data.error === "object" ? data.error : null;
  if (error) {
    const fields = error.fields && typeof error.fields === "object" ? error.fields : {};
    return {
      status: error.status ?? status,
      code: error.code || "error",
      detail: readableDetail(error.detail, null) || readableDetail(fields, null) || readableDetail(null, status),
      fields,
    };
  }
  const detail = data && typeof data === "object" ? readableDetail(data.detail ?? data, status) : readableDetail(null, status);
  return { status, code: "error", detail, fields: {} };
}

/** Whether a failed call may succeed when sent again: the server was not reached, timed out, was busy or
 * failed (5xx). A refusal (400, 403, 404, 409) would be refused again. */
export function isRetryable(error) {
  if (!(error instanceof ApiError)) return false;
  return error.status === 0 || error.status === 408 || error.status === 429 || error.status >= 500;
}

/** Waits (ms) before each new try: doubling from `baseMs`, capped at `maxMs`, each scaled by a random
 * factor in [0.5, 1) so that many pages that lost the server at once do not come back in step. */
export function backoffDelays({ retries = 4, baseMs = 500, maxMs = 8000, random = Math.random } = {}) {
  const delays = [];
  for (let k = 0; k < retries; k++) {
    const cap = Math.min(maxMs, baseMs * 2 ** k);
    delays.push(Math.round(cap * (0.5 + random() / 2)));
  }
  return delays;
}

const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Call `fn` until it resolves, fails for good (not `retryable`), or the `delays` run out; then the last
 * error is thrown. `onRetry({attempt, error, delayMs})` is told before each wait. */
export async function withRetry(fn, { delays = backoffDelays(), sleep = wait, retryable = isRetryable, onRetry } = {}) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (attempt >= delays.length || !retryable(error)) throw error;
      if (onRetry) onRetry({ attempt: attempt + 1, error, delayMs: delays[attempt] });
      await sleep(delays[attempt]);
    }
  }
}

/** A random client key (UUID v4 form) for a label request. crypto.randomUUID exists only on secure
 * (https, localhost) pages; getRandomValues exists on every page. */
export function newClientKey(cryptoImpl = globalThis.crypto) {
  const bytes = new Uint8Array(16);
  cryptoImpl.getRandomValues(bytes);
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
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
    const why = exc && exc.message ? ` (${exc.message})` : "";
    throw new ApiError({ status: 0, code: "network", detail: `the server cannot be reached${why}` });
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

/** The labelling page's endpoints, from the page config's `api` URLs ("{id}" is filled in).
 * `options.retry`: withRetry's options for label saves (delays, sleep, onRetry). */
export function createApi(urls, options = {}) {
  const call = (method, url, body) => request(method, url, body, options);
  return {
    loop: () => call("GET", urls.loop),
    currentBatch: () => call("GET", urls.batch),
    /** Save a label request; `body.client_key` (added when missing) is sent with every try, so a try
     * whose answer was lost and the next one make one label. `retry`: withRetry options for this call. */
    annotate: (body, retry = {}) => {
      const keyed = body.client_key ? body : { ...body, client_key: newClientKey() };
      return withRetry(() => call("POST", urls.annotate, keyed), { ...options.retry, ...retry });
    },
    undoAnnotation: (annotationId) => call("POST", fill(urls.undo, annotationId)),
    submit: (batchId) => call("POST", fill(urls.submit, batchId)),
    skip: (batchId, cell) => call("POST", fill(urls.skip, batchId), { cell }),
    unskip: (batchId, cell) => call("POST", fill(unskipTemplate(urls), batchId), { cell }),
    why: (cell) => call("GET", fill(urls.why, cell)),
    similar: (cell, k = 8) => call("GET", `${fill(urls.similar, cell)}?k=${k}`),
    startPretrain: () => call("POST", urls.start, {}),
    startFinetune: () => call("POST", urls.finetune, {}),
    saliencyUrl: (cell) => fill(urls.saliency, cell),
    /** The caller's own page preferences: {tile_size, blind_mode}; send only what changes. */
    savePreferences: (changes) => call("PATCH", urls.page_settings, changes),
  };
}

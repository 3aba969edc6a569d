// Unit tests of saving labels when the server fails: retry with backoff under one client key
// (static/js/label/api.js), readable errors, and the page's list of labels not saved (state.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  ApiError,
  backoffDelays,
  createApi,
  errorOf,
  isRetryable,
  newClientKey,
  readableDetail,
  withRetry,
} from "../../static/js/label/api.js";
import { describeUnsaved, dropUnsaved, unsavedByCell } from "../../static/js/label/state.js";

const URLS = { annotate: "/api/projects/3/annotations/" };

/** A fetch that answers each call with the next of `answers`: a status number, or "down" (no answer). */
function scriptedFetch(answers) {
  const calls = [];
  const fetchImpl = async (url, init) => {
    calls.push({ url, ...init });
    const answer = answers[Math.min(calls.length - 1, answers.length - 1)];
    if (answer === "down") throw new TypeError("Failed to fetch");
    const ok = answer >= 200 && answer < 300;
    const body = ok
      ? { annotations: [{ id: 40, cell: 12, label: "neutrophil" }] }
      : answer === 500
        ? null
        : { error: { status: answer, code: "invalid", detail: "label: 'x' is not a class of this project" } };
    return { ok, status: answer, json: async () => (body === null ? Promise.reject(new SyntaxError("HTML")) : body) };
  };
  return { fetchImpl, calls };
}

function recorder() {
  const slept = [];
  return { slept, sleep: async (ms) => void slept.push(ms) };
}

test("backoff doubles from the base, is capped, and is jittered into [0.5, 1) of each step", () => {
  assert.deepEqual(backoffDelays({ retries: 6, baseMs: 500, maxMs: 8000, random: () => 0.999999 }), [500, 1000, 2000, 4000, 8000, 8000]);
  assert.deepEqual(backoffDelays({ retries: 3, baseMs: 500, maxMs: 8000, random: () => 0 }), [250, 500, 1000]);
  for (const d of backoffDelays()) assert.ok(d >= 250 && d <= 8000);
  assert.equal(backoffDelays().length, 4);
});

test("what may pass is retried; a refusal is not", () => {
  for (const status of [0, 408, 429, 500, 502, 503, 504]) assert.ok(isRetryable(new ApiError({ status, code: "x", detail: "" })), status);
  for (const status of [400, 401, 403, 404, 409]) assert.ok(!isRetryable(new ApiError({ status, code: "x", detail: "" })), status);
  assert.ok(!isRetryable(new TypeError("a bug in the page")));
});

test("withRetry tries again after each delay, then gives up with the last error", async () => {
  const { slept, sleep } = recorder();
  const told = [];
  let tries = 0;
  const fail = async () => {
    tries++;
    throw new ApiError({ status: 503, code: "error", detail: `busy ${tries}` });
  };
  await assert.rejects(withRetry(fail, { delays: [10, 20, 40], sleep, onRetry: (r) => told.push([r.attempt, r.delayMs, r.error.detail]) }), {
    detail: "busy 4",
  });
  assert.equal(tries, 4);
  assert.deepEqual(slept, [10, 20, 40]);
  assert.deepEqual(told, [
    [1, 10, "busy 1"],
    [2, 20, "busy 2"],
    [3, 40, "busy 3"],
  ]);
});

test("withRetry returns as soon as a try succeeds, and stops at once on a refusal", async () => {
  const { slept, sleep } = recorder();
  let tries = 0;
  const flaky = async () => {
    if (++tries < 3) throw new ApiError({ status: 0, code: "network", detail: "down" });
    return "saved";
  };
  assert.equal(await withRetry(flaky, { delays: [1, 2, 3, 4], sleep }), "saved");
  assert.deepEqual(slept, [1, 2]);
  const refused = async () => {
    tries++;
    throw new ApiError({ status: 409, code: "client_key_reused", detail: "no" });
  };
  tries = 0;
  await assert.rejects(withRetry(refused, { delays: [1, 2], sleep }), { status: 409 });
  assert.equal(tries, 1);
});

test("a label save is retried with the same client key until it lands", async () => {
  const { fetchImpl, calls } = scriptedFetch(["down", 502, 201]);
  const { slept, sleep } = recorder();
  const api = createApi(URLS, { fetchImpl, cookie: "", retry: { delays: [5, 10, 20], sleep } });
  const data = await api.annotate({ cells: [12], label: "neutrophil" });
  assert.deepEqual(data.annotations.map((a) => a.id), [40]);
  assert.equal(calls.length, 3);
  const keys = calls.map((c) => JSON.parse(c.body).client_key);
  assert.match(keys[0], /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.deepEqual(new Set(keys).size, 1);
  assert.deepEqual(slept, [5, 10]);
  // A key the page chose is kept; a refusal is not sent again.
  const refused = scriptedFetch([400]);
  const api2 = createApi(URLS, { fetchImpl: refused.fetchImpl, cookie: "", retry: { delays: [5], sleep } });
  await assert.rejects(api2.annotate({ cells: [12], label: "x", client_key: "k-1" }), {
    status: 400,
    detail: "label: 'x' is not a class of this project",
  });
  assert.equal(refused.calls.length, 1);
  assert.equal(JSON.parse(refused.calls[0].body).client_key, "k-1");
});

test("client keys are UUIDs made without crypto.randomUUID (absent on plain-http pages)", () => {
  const keys = new Set(Array.from({ length: 200 }, () => newClientKey()));
  assert.equal(keys.size, 200);
  const zeros = newClientKey({ getRandomValues: (bytes) => bytes.fill(0) });
  assert.equal(zeros, "00000000-0000-4000-8000-000000000000");
});

test("errors read as sentences: never {} or [object Object]", () => {
  assert.equal(errorOf(400, { error: { status: 400, code: "invalid", detail: {} } }).detail, "the server refused the request (HTTP 400)");
  assert.equal(
    errorOf(400, { error: { status: 400, code: "invalid", detail: "", fields: { label: ["not a class"] } } }).detail,
    "label: not a class",
  );
  assert.equal(errorOf(400, { label: ["not a class"], cells: ["too many"] }).detail, "label: not a class; cells: too many");
  assert.equal(errorOf(500, null).detail, "the server failed (HTTP 500)");
  assert.equal(errorOf(503, {}).detail, "the server failed (HTTP 503)");
  assert.equal(readableDetail({ a: {} }, 409), "the server refused the request (HTTP 409)");
  assert.equal(readableDetail(null, 0), "the server cannot be reached");
  assert.equal(readableDetail("  plain  ", 400), "plain");
});

const entry = (key, cells, label, error = "down", final = false) => [
  key,
  { request: { cells, label, seconds_spent: 2 * cells.length, client_key: key }, error, final },
];

test("the unsaved list names each cell and what it was to get, with the error", () => {
  const unsaved = new Map([entry("a", [12, 13], "neutrophil"), entry("b", [14], undefined, "the server failed (HTTP 503)")]);
  unsaved.get("b").request.unsure = true;
  assert.deepEqual([...unsavedByCell(unsaved)], [
    [12, "neutrophil"],
    [13, "neutrophil"],
    [14, "unsure"],
  ]);
  const text = describeUnsaved(unsaved, (name) => name.toUpperCase());
  assert.equal(
    text,
    "3 labels not saved: cell 12 → NEUTROPHIL, cell 13 → NEUTROPHIL, cell 14 → unsure — the server failed (HTTP 503); sent again while this page is open.",
  );
  assert.doesNotMatch(text, /\{\}|object Object/);
  // A request whose first try is still on its way is not listed as unsaved.
  assert.equal(describeUnsaved(new Map([entry("c", [15], "eosinophil", "")])), "");
  assert.match(describeUnsaved(new Map([entry("d", [16], "eosinophil", "refused", true)])), /^1 label not saved: cell 16 → eosinophil — refused; refused by the server/);
  const many = new Map([entry("e", Array.from({ length: 12 }, (_, i) => 100 + i), "monocyte")]);
  assert.match(describeUnsaved(many), /cell 107 → monocyte and 4 more/);
});

test("a new label of a cell takes it out of the unsaved requests, which keep their other cells under a new key", () => {
  const unsaved = new Map([entry("a", [12, 13], "neutrophil"), entry("b", [14], "basophil")]);
  let n = 0;
  const next = dropUnsaved(unsaved, [13, 14], () => `new-${++n}`);
  assert.deepEqual([...next.keys()], ["new-1"]);
  const kept = next.get("new-1");
  assert.deepEqual(kept.request, { cells: [12], label: "neutrophil", seconds_spent: 2, client_key: "new-1" });
  assert.equal(kept.error, "down");
  assert.deepEqual([...unsaved.keys()], ["a", "b"]); // the old map is left as it was
  assert.equal(dropUnsaved(unsaved, [99], () => "x").get("a"), unsaved.get("a"));
});

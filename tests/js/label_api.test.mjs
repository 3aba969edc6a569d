// Unit tests of the labelling page's API module (static/js/label/api.js) with a stand-in fetch.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiError, createApi, csrfToken, errorOf, request, unskipTemplate } from "../../static/js/label/api.js";

function fakeFetch(status, body) {
  const calls = [];
  const fetchImpl = async (url, init) => {
    calls.push({ url, ...init });
    return {
      ok: status >= 200 && status < 300,
      status,
      json: async () => {
        if (body === undefined) throw new SyntaxError("no JSON");
        return body;
      },
    };
  };
  return { fetchImpl, calls };
}

const URLS = {
  loop: "/api/projects/3/loop/",
  batch: "/api/projects/3/batches/current/",
  annotate: "/api/projects/3/annotations/",
  submit: "/api/projects/3/batches/{id}/submit/",
  skip: "/api/projects/3/batches/{id}/skip/",
  undo: "/api/annotations/{id}/undo/",
  why: "/api/cells/{id}/why/",
  similar: "/api/cells/{id}/similar/",
  saliency: "/cells/{id}/saliency.png",
  start: "/api/projects/3/loop/start/",
  finetune: "/api/projects/3/loop/finetune/",
};

test("the CSRF token comes from Django's cookie", () => {
  assert.equal(csrfToken("a=1; csrftoken=abc%3D; b=2"), "abc=");
  assert.equal(csrfToken("a=1"), "");
  assert.equal(csrfToken(undefined), "");
});

test("the server's error shape is kept; other bodies get the same shape", () => {
  const body = { error: { status: 409, code: "empty_batch", detail: "nothing labelled", fields: {} } };
  assert.deepEqual(errorOf(409, body), { status: 409, code: "empty_batch", detail: "nothing labelled", fields: {} });
  assert.deepEqual(errorOf(403, { detail: "no" }), { status: 403, code: "error", detail: "no", fields: {} });
  assert.deepEqual(errorOf(502, null), { status: 502, code: "error", detail: "the server failed (HTTP 502)", fields: {} });
});

test("a request sends JSON with the CSRF token and returns the body", async () => {
  const { fetchImpl, calls } = fakeFetch(201, { annotations: [] });
  const data = await request("POST", "/x/", { cells: [1] }, { fetchImpl, cookie: "csrftoken=t0k" });
  assert.deepEqual(data, { annotations: [] });
  assert.equal(calls[0].method, "POST");
  assert.equal(calls[0].headers["X-CSRFToken"], "t0k");
  assert.equal(calls[0].body, JSON.stringify({ cells: [1] }));
  assert.equal(calls[0].credentials, "same-origin");
});

test("a failed request rejects with an ApiError carrying the server's detail and code", async () => {
  const { fetchImpl } = fakeFetch(409, { error: { status: 409, code: "empty_batch", detail: "the batch has no label" } });
  await assert.rejects(request("POST", "/x/", undefined, { fetchImpl, cookie: "" }), (error) => {
    assert.ok(error instanceof ApiError);
    assert.equal(error.status, 409);
    assert.equal(error.code, "empty_batch");
    assert.equal(error.message, "the batch has no label");
    return true;
  });
  const down = async () => {
    throw new TypeError("Failed to fetch");
  };
  await assert.rejects(request("GET", "/x/", undefined, { fetchImpl: down, cookie: "" }), { code: "network" });
});

test("the endpoints fill in their ids; unskip sits next to skip", async () => {
  assert.equal(unskipTemplate(URLS), "/api/projects/3/batches/{id}/unskip/");
  assert.equal(unskipTemplate({ ...URLS, unskip: "/custom/{id}/" }), "/custom/{id}/");
  const { fetchImpl, calls } = fakeFetch(200, {});
  const api = createApi(URLS, { fetchImpl, cookie: "" });
  await api.skip(7, 99);
  await api.unskip(7, 99);
  await api.submit(7);
  await api.undoAnnotation(12);
  await api.similar(99, 8);
  assert.deepEqual(
    calls.map((c) => [c.method, c.url, c.body]),
    [
      ["POST", "/api/projects/3/batches/7/skip/", '{"cell":99}'],
      ["POST", "/api/projects/3/batches/7/unskip/", '{"cell":99}'],
      ["POST", "/api/projects/3/batches/7/submit/", undefined],
      ["POST", "/api/annotations/12/undo/", undefined],
      ["GET", "/api/cells/99/similar/?k=8", undefined],
    ],
  );
  assert.equal(api.saliencyUrl(5), "/cells/5/saliency.png");
});

// Unit tests of the labelling page's messages (static/js/label/render.js): `make jstest`.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { emptyMessage } from "../../static/js/label/render.js";

const loop = (over) => ({
  stage: "idle",
  index_version: 1,
  last_failed: null,
  labels: { count: 811, budget: 811, left: 0 },
  ...over,
});

describe("the page without a batch", () => {
  test("says the budget is spent, with the counts, and who can raise it", () => {
    const text = emptyMessage(loop({}));
    assert.match(text, /label budget is spent \(811 of 811 labels\)/);
    assert.match(text, /raises it in the project's settings/);
  });
  test("says nothing of the budget while cells are left", () => {
    assert.equal(emptyMessage(loop({ labels: { count: 700, budget: 811, left: 111 } })), "Asking for the next batch…");
  });
  test("before the loop starts, and while a job builds the batch", () => {
    assert.match(emptyMessage(loop({ index_version: null })), /a lead starts the loop/);
    const left = { count: 5, budget: 811, left: 806 };
    assert.equal(emptyMessage(loop({ stage: "retraining", labels: left })), "Preparing the next batch (retraining)…");
  });
  test("a background job does not hide a spent budget: it builds no batch either", () => {
    assert.match(emptyMessage(loop({ stage: "pretraining" })), /label budget is spent/);
  });
  test("a failed loop job is named, not waited for", () => {
    const text = emptyMessage(loop({ labels: { count: 5, budget: 811, left: 806 }, last_failed: { id: 3 } }));
    assert.match(text, /last loop job failed/);
  });
});

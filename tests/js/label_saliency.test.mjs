// Unit tests of the saliency controls (static/js/label/saliency.js) with stand-in elements and storage.
import assert from "node:assert/strict";
import { test } from "node:test";

import { DEFAULT_OPACITY, OPACITY_KEY, createSaliencyControls, parseOpacity } from "../../static/js/label/saliency.js";

function fakeElement(props = {}) {
  const listeners = {};
  const styles = {};
  return {
    ...props,
    style: { setProperty: (k, v) => (styles[k] = v) },
    styles,
    setAttribute() {},
    addEventListener: (type, fn) => (listeners[type] = fn),
    fire: (type) => listeners[type](),
  };
}

function fakeStorage(initial = {}) {
  const data = { ...initial };
  return { data, getItem: (k) => (k in data ? data[k] : null), setItem: (k, v) => (data[k] = String(v)) };
}

test("parseOpacity clamps to whole percents and falls back to the default", () => {
  assert.equal(parseOpacity("35"), 35);
  assert.equal(parseOpacity("140"), 100);
  assert.equal(parseOpacity(-3), 0);
  assert.equal(parseOpacity("x"), DEFAULT_OPACITY);
  assert.equal(parseOpacity(null), DEFAULT_OPACITY);
});

test("the slider sets --saliency-opacity, is remembered, and the legend follows show()", () => {
  const storage = fakeStorage({ [OPACITY_KEY]: "40" });
  const legend = { hidden: true };
  const slider = fakeElement({ value: "80" });
  const target = fakeElement();
  let done = 0;
  const controls = createSaliencyControls({ legend, slider, target, storage, onDone: () => done++ });
  assert.equal(slider.value, "40");
  assert.equal(target.styles["--saliency-opacity"], "0.4");
  slider.value = "25";
  slider.fire("input");
  assert.equal(target.styles["--saliency-opacity"], "0.25");
  assert.equal(storage.data[OPACITY_KEY], "25");
  slider.fire("change");
  assert.equal(done, 1);
  controls.show(true);
  assert.equal(legend.hidden, false);
  controls.show(false);
  assert.equal(legend.hidden, true);
});

test("storage that throws leaves the default and still applies the slider", () => {
  const storage = { getItem: () => { throw new Error("denied"); }, setItem: () => { throw new Error("denied"); } };
  const slider = fakeElement({ value: "" });
  const target = fakeElement();
  const controls = createSaliencyControls({ legend: { hidden: true }, slider, target, storage });
  assert.equal(controls.opacity(), DEFAULT_OPACITY / 100);
  slider.value = "10";
  slider.fire("input");
  assert.equal(target.styles["--saliency-opacity"], "0.1");
});

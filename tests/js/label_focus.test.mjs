// Unit tests of the focused-cell view's and the preferences' pure rules (static/js/label/state.js):
// zoom steps, brightness/contrast filter, tile size, what a tile says about a suggestion, and the keys.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  MODES,
  TILE_MAX,
  TILE_MIN,
  ZOOM_MAX,
  ZOOM_MIN,
  clampAdjust,
  clampTileSize,
  clampZoom,
  createFocusView,
  devicePixelZoom,
  keyAction,
  stepZoom,
  suggestionView,
  viewFilter,
  zoomLabel,
  zoomedSize,
} from "../../static/js/label/state.js";

describe("zoom of the focused view", () => {
  test("it opens at native size with the image's own brightness and contrast", () => {
    assert.deepEqual(createFocusView(), { zoom: 1, brightness: 100, contrast: 100 });
  });

  test("1x is the natural size, 2x doubles it", () => {
    assert.deepEqual(zoomedSize(224, 224, 1), { width: 224, height: 224 });
    assert.deepEqual(zoomedSize(224, 200, 2), { width: 448, height: 400 });
    assert.deepEqual(zoomedSize(360, 363, 0.75), { width: 270, height: 272 });
  });

  test("+ and - walk the steps, from between steps too, and stop at the ends", () => {
    assert.equal(stepZoom(1, 1), 1.5);
    assert.equal(stepZoom(1.5, 1), 2);
    assert.equal(stepZoom(2, -1), 1.5);
    assert.equal(stepZoom(1.25, 1), 1.5, "the slider's quarter steps lie between the key's steps");
    assert.equal(stepZoom(1.25, -1), 1);
    assert.equal(stepZoom(ZOOM_MAX, 1), ZOOM_MAX);
    assert.equal(stepZoom(ZOOM_MIN, -1), ZOOM_MIN);
  });

  test("a zoom is clamped; nonsense is 1x", () => {
    assert.equal(clampZoom("2"), 2);
    assert.equal(clampZoom(40), ZOOM_MAX);
    assert.equal(clampZoom(0.1), ZOOM_MIN);
    for (const bad of [0, -1, "x", NaN, undefined]) assert.equal(clampZoom(bad), 1, String(bad));
    assert.equal(zoomLabel(1), "1x");
    assert.equal(zoomLabel(1.5), "1.5x");
    assert.equal(zoomLabel(0.75), "0.75x");
  });

  test("one image pixel per device pixel on a HiDPI screen", () => {
    assert.equal(devicePixelZoom(1), 1);
    assert.equal(devicePixelZoom(2), 0.5);
    assert.equal(devicePixelZoom(undefined), 1);
  });
});

describe("brightness and contrast", () => {
  test("100% and 100% is no filter at all", () => {
    assert.equal(viewFilter(createFocusView()), "none");
  });

  test("the filter follows the sliders, clamped to 50-200%", () => {
    assert.equal(viewFilter({ brightness: 150, contrast: 80 }), "brightness(1.5) contrast(0.8)");
    assert.equal(viewFilter({ brightness: 100, contrast: 120 }), "brightness(1) contrast(1.2)");
    assert.equal(viewFilter({ brightness: 500, contrast: 10 }), "brightness(2) contrast(0.5)");
    assert.equal(clampAdjust("x"), 100);
    assert.equal(clampAdjust("133.4"), 133);
  });
});

describe("tile size", () => {
  test("it reaches twice the 224 px of the cells and is clamped to what the server takes", () => {
    assert.equal(TILE_MIN, 72);
    assert.equal(TILE_MAX, 448);
    assert.equal(clampTileSize("224"), 224);
    assert.equal(clampTileSize(1000), TILE_MAX);
    assert.equal(clampTileSize(10), TILE_MIN);
    assert.equal(clampTileSize(null), 72, "Number(null) is 0: clamped up");
    assert.equal(clampTileSize("wide"), 160);
  });
});

describe("what a tile says about the model's suggestion", () => {
  test("shown with its confidence; withheld ones never carry a class name", () => {
    assert.deepEqual(suggestionView({ suggestion: "blast", confidence: 0.8, suggestion_withheld: null }), {
      kind: "shown",
      label: "blast",
      confidence: 0.8,
    });
    assert.deepEqual(suggestionView({ suggestion: null, confidence: null, suggestion_withheld: "low_confidence" }), { kind: "low" });
    assert.deepEqual(suggestionView({ suggestion: null, confidence: null, suggestion_withheld: "blind" }), { kind: "blind" });
    assert.deepEqual(suggestionView({ suggestion: null, confidence: null, suggestion_withheld: "unlike_labelled" }), { kind: "unlike" });
    assert.deepEqual(suggestionView({ suggestion: null, confidence: null }), { kind: "none" });
  });
});

describe("keys of the view", () => {
  const keyMap = { 1: "neutrophil" };
  const grid = (key, mods = {}) => keyAction({ key, ...mods }, { mode: MODES.GRID, keyMap, columns: 4 });

  test("B toggles blind mode; + and - (also = and _) zoom", () => {
    assert.deepEqual(grid("b"), { type: "blind" });
    assert.deepEqual(grid("B", { shiftKey: true }), { type: "blind" });
    assert.deepEqual(grid("+", { shiftKey: true }), { type: "zoom", direction: 1 });
    assert.deepEqual(grid("="), { type: "zoom", direction: 1 });
    assert.deepEqual(grid("-"), { type: "zoom", direction: -1 });
    assert.deepEqual(grid("_", { shiftKey: true }), { type: "zoom", direction: -1 });
    assert.equal(grid("b", { ctrlKey: true }), null, "the browser's own shortcuts stay the browser's");
  });

  test("the attribute panel and a dialog keep B and +/- to themselves", () => {
    for (const mode of [MODES.ATTRIBUTES, MODES.DIALOG]) {
      for (const key of ["b", "+", "-"]) assert.deepEqual(keyAction({ key }, { mode, keyMap }), { type: "swallow" }, `${mode} ${key}`);
    }
  });

  test("a class key bound to one of these letters still labels", () => {
    assert.deepEqual(keyAction({ key: "b" }, { mode: MODES.GRID, keyMap: { b: "basophil" } }), { type: "label", label: "basophil" });
  });
});

// Unit tests of the labelling page's pure state module (static/js/label/state.js): `make jstest`.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  MODES,
  UndoStack,
  arrowDelta,
  attributeRow,
  attributeStep,
  buildKeyMap,
  clickCell,
  createSelection,
  isDone,
  isLabelled,
  keyAction,
  moveFocus,
  nextOpen,
  openAttributePanel,
  planAttributeSave,
  planLabelRequests,
  refreshPanelSuggestions,
  remainingEntry,
  secondsSpent,
  selectRange,
  submitCheck,
  takeAttributeSuggestions,
  targets,
  undoSteps,
} from "../../static/js/label/state.js";

const selected = (sel) => [...sel.selected].sort((a, b) => a - b);
const key = (k, mods = {}) => ({ key: k, shiftKey: false, ctrlKey: false, metaKey: false, altKey: false, ...mods });
const CLASSES = [
  { name: "neutrophil", key: "1" },
  { name: "eosinophil", key: "2" },
  { name: "basophil", key: "3" },
  { name: "lymphocyte", key: "4" },
  { name: "monocyte", key: "5" },
  { name: "ig", key: "6" },
  { name: "erythroblast", key: "7" },
  { name: "platelet", key: "8" },
  { name: "blast", key: "9" },
  { name: "artefact", key: "" },
];
const keyMap = buildKeyMap(CLASSES);
const grid = (k, extra = {}) => keyAction(key(k.key ?? k, k.mods), { mode: MODES.GRID, keyMap, columns: 4, ...extra });

function item(cell, { mine = null, skipped = false, suggestion = null, attribute_suggestions = {} } = {}) {
  const confidence = suggestion ? 0.9 : null;
  return { cell, mine, skipped, suggestion, confidence, attribute_suggestions, image_url: `/cells/${cell}/image` };
}

// --- cells ------------------------------------------------------------------------------------------

describe("done and submit rules", () => {
  test("a cell is done when labelled (a class or unsure) or skipped", () => {
    assert.equal(isDone(item(1)), false);
    assert.equal(isDone(item(1, { mine: { label: "blast", unsure: false } })), true);
    assert.equal(isDone(item(1, { mine: { label: null, unsure: true } })), true);
    assert.equal(isDone(item(1, { skipped: true })), true);
    assert.equal(isLabelled(item(1, { skipped: true })), false);
    assert.equal(isDone({ cell: 1, skipped: false }), false); // mine missing
  });

  test("the next open cell wraps round and is -1 when every cell is done", () => {
    const items = [item(1), item(2, { skipped: true }), item(3), item(4, { mine: { label: "x" } })];
    assert.equal(nextOpen(items, 0), 2);
    assert.equal(nextOpen(items, 2), 0);
    assert.equal(nextOpen(items, 3), 0);
    items[0].mine = { label: "x" };
    assert.equal(nextOpen(items, 2), 2); // only itself left
    items[2].skipped = true;
    assert.equal(nextOpen(items, 2), -1);
  });

  test("an untouched batch is empty; a half-done batch asks; a done or all-skipped batch submits", () => {
    assert.equal(submitCheck([item(1), item(2)]).kind, "empty");
    assert.equal(submitCheck([item(1, { skipped: true }), item(2, { skipped: true })]).kind, "ok");
    assert.equal(submitCheck([item(1, { skipped: true }), item(2)]).kind, "confirm");
    const half = submitCheck([item(1, { mine: { label: "x" } }), item(2), item(3), item(4, { skipped: true })]);
    assert.deepEqual(half, { kind: "confirm", labelled: 1, open: 2, total: 4 });
    assert.equal(submitCheck([item(1, { mine: { label: "x" } }), item(2, { skipped: true })]).kind, "ok");
  });
});

// --- selection ----------------------------------------------------------------------------------------

describe("selection", () => {
  test("shift+click selects the range from the anchor, in either direction", () => {
    const sel = createSelection();
    clickCell(sel, 2);
    clickCell(sel, 5, { shift: true });
    assert.deepEqual(selected(sel), [2, 3, 4, 5]);
    assert.equal(sel.focus, 5);
    assert.equal(sel.anchor, 2, "shift+click keeps the anchor");
    clickCell(sel, 0, { shift: true });
    assert.deepEqual(selected(sel), [0, 1, 2], "a new range from the same anchor replaces the old one");
  });

  test("a plain click clears the selection and moves the anchor", () => {
    const sel = createSelection();
    clickCell(sel, 1);
    clickCell(sel, 3, { shift: true });
    clickCell(sel, 6);
    assert.deepEqual(selected(sel), []);
    assert.equal(sel.anchor, 6);
    assert.equal(sel.focus, 6);
    clickCell(sel, 4, { shift: true });
    assert.deepEqual(selected(sel), [4, 5, 6]);
  });

  test("ctrl+click toggles one cell and moves the anchor there", () => {
    const sel = createSelection();
    clickCell(sel, 1, { ctrl: true });
    clickCell(sel, 4, { ctrl: true });
    assert.deepEqual(selected(sel), [1, 4]);
    clickCell(sel, 1, { ctrl: true });
    assert.deepEqual(selected(sel), [4]);
    assert.equal(sel.anchor, 1);
    clickCell(sel, 3, { shift: true });
    assert.deepEqual(selected(sel), [1, 2, 3], "shift after ctrl ranges from the toggled cell");
  });

  test("shift+arrows extend a range from the anchor; a plain arrow drops it", () => {
    const sel = createSelection(5);
    moveFocus(sel, 1, 12, true);
    moveFocus(sel, 1, 12, true);
    assert.deepEqual(selected(sel), [5, 6, 7]);
    moveFocus(sel, -4, 12, true); // shift+up on a 4-column grid
    assert.deepEqual(selected(sel), [3, 4, 5], "the range turns round at the anchor");
    assert.equal(sel.anchor, 5);
    moveFocus(sel, 1, 12, false);
    assert.deepEqual(selected(sel), []);
    assert.equal(sel.anchor, 4);
    assert.equal(sel.focus, 4);
  });

  test("selectRange replaces the selection", () => {
    const sel = createSelection();
    sel.selected.add(9);
    selectRange(sel, 3, 1);
    assert.deepEqual(selected(sel), [1, 2, 3]);
  });

  test("actions apply to the selection in grid order, else to the focused cell", () => {
    const sel = createSelection(2);
    assert.deepEqual(targets(sel, 10), [2]);
    clickCell(sel, 7, { ctrl: true });
    clickCell(sel, 3, { ctrl: true });
    assert.deepEqual(targets(sel, 10), [3, 7]);
    assert.deepEqual(targets(createSelection(4), 3), [], "a focus outside the batch targets nothing");
  });
});

describe("focus movement", () => {
  test("arrows move by one, up and down by a row of the grid", () => {
    assert.equal(arrowDelta("ArrowRight", 5), 1);
    assert.equal(arrowDelta("ArrowLeft", 5), -1);
    assert.equal(arrowDelta("ArrowDown", 5), 5);
    assert.equal(arrowDelta("ArrowUp", 5), -5);
    assert.equal(arrowDelta("ArrowDown", 0), 1, "a grid has at least one column");
    assert.equal(arrowDelta("x", 5), 0);
  });

  test("the focus is clamped at the edges of the grid", () => {
    const sel = createSelection(0);
    assert.equal(moveFocus(sel, -1, 10), false);
    assert.equal(sel.focus, 0);
    moveFocus(sel, arrowDelta("ArrowUp", 4), 10);
    assert.equal(sel.focus, 0);
    moveFocus(sel, arrowDelta("ArrowDown", 4), 10);
    assert.equal(sel.focus, 4);
    moveFocus(sel, arrowDelta("ArrowDown", 4), 10);
    assert.equal(sel.focus, 8);
    moveFocus(sel, arrowDelta("ArrowDown", 4), 10); // the last row is short: stop at the last cell
    assert.equal(sel.focus, 9);
    assert.equal(moveFocus(sel, 1, 10), false);
    assert.equal(sel.focus, 9);
    assert.equal(moveFocus(createSelection(0), 1, 0), false, "an empty batch has nowhere to go");
  });
});

// --- undo ---------------------------------------------------------------------------------------------

describe("undo stack", () => {
  test("entries come back newest first", () => {
    const undo = new UndoStack();
    undo.pushLabel([101], [0]);
    undo.pushSkip([55], [1]);
    undo.pushLabel([102, 103, 104], [2, 3, 4]);
    assert.equal(undo.size, 3);
    assert.deepEqual(undo.pop(), { kind: "label", annotationIds: [102, 103, 104], indices: [2, 3, 4] });
    assert.deepEqual(undo.pop(), { kind: "skip", cells: [55], indices: [1] });
    assert.deepEqual(undo.pop(), { kind: "label", annotationIds: [101], indices: [0] });
    assert.equal(undo.pop(), undefined);
    assert.equal(undo.size, 0);
  });

  test("an action on a selection is one entry, undone cell by cell from the last", () => {
    const undo = new UndoStack();
    undo.pushLabel([7, 8, 9], [3, 4, 5]);
    const entry = undo.pop();
    assert.deepEqual(undoSteps(entry), [
      { index: 5, annotationId: 9 },
      { index: 4, annotationId: 8 },
      { index: 3, annotationId: 7 },
    ]);
    undo.pushSkip([40, 41], [0, 1]);
    assert.deepEqual(undoSteps(undo.pop()), [
      { index: 1, cell: 41 },
      { index: 0, cell: 40 },
    ]);
  });

  test("an action that saved nothing leaves no entry; a mismatched entry is refused", () => {
    const undo = new UndoStack();
    undo.pushLabel([], []);
    undo.pushSkip([], []);
    assert.equal(undo.size, 0);
    assert.throws(() => undo.pushLabel([1, 2], [0]));
  });

  test("a half-failed undo puts back what is still to undo", () => {
    const undo = new UndoStack();
    undo.pushLabel([7, 8, 9], [3, 4, 5]);
    const entry = undo.pop();
    undo.restore(remainingEntry(entry, 1)); // annotation 9 was withdrawn, 8 failed
    assert.deepEqual(undo.pop(), { kind: "label", annotationIds: [7, 8], indices: [3, 4] });
    undo.restore(remainingEntry({ kind: "skip", cells: [1], indices: [0] }, 1));
    assert.equal(undo.size, 0, "nothing left, nothing put back");
  });

  test("clear empties the stack", () => {
    const undo = new UndoStack();
    undo.pushLabel([1], [0]);
    undo.clear();
    assert.equal(undo.pop(), undefined);
  });
});

// --- keys ---------------------------------------------------------------------------------------------

describe("key map in the grid", () => {
  test("class keys 1-9 label with their class; classes without a key get none", () => {
    assert.equal(Object.keys(keyMap).length, 9);
    for (const c of CLASSES.filter((x) => x.key)) assert.deepEqual(grid(c.key), { type: "label", label: c.name });
    assert.equal(grid("0"), null);
  });

  test("Enter and Space accept the suggestion; Shift+Enter submits", () => {
    assert.deepEqual(grid("Enter"), { type: "accept" });
    assert.deepEqual(grid(" "), { type: "accept" });
    assert.deepEqual(grid({ key: "Enter", mods: { shiftKey: true } }), { type: "submit" });
  });

  test("letters: U unsure, X skip, Z undo, A attributes, S similar, G saliency, W why (either case)", () => {
    const expect = { u: "unsure", x: "skip", z: "undo", a: "attributes", s: "similar", g: "saliency", w: "why" };
    for (const [letter, type] of Object.entries(expect)) {
      assert.deepEqual(grid(letter), { type }, letter);
      assert.deepEqual(grid({ key: letter.toUpperCase(), mods: { shiftKey: true } }), { type }, letter.toUpperCase());
    }
  });

  test("Ctrl+Z and Cmd+Z undo; other Ctrl/Alt combinations are the browser's", () => {
    assert.deepEqual(grid({ key: "z", mods: { ctrlKey: true } }), { type: "undo" });
    assert.deepEqual(grid({ key: "z", mods: { metaKey: true } }), { type: "undo" });
    assert.equal(grid({ key: "1", mods: { ctrlKey: true } }), null);
    assert.equal(grid({ key: "x", mods: { altKey: true } }), null);
    assert.equal(grid({ key: "c", mods: { ctrlKey: true } }), null);
  });

  test("arrows move by the grid's columns, Shift extends", () => {
    assert.deepEqual(grid("ArrowRight"), { type: "move", delta: 1, extend: false });
    assert.deepEqual(grid("ArrowLeft"), { type: "move", delta: -1, extend: false });
    assert.deepEqual(grid("ArrowDown"), { type: "move", delta: 4, extend: false });
    assert.deepEqual(grid({ key: "ArrowUp", mods: { shiftKey: true } }), { type: "move", delta: -4, extend: true });
  });

  test("N loads the next batch only when it is offered; Escape clears the selection", () => {
    assert.equal(grid("n"), null);
    assert.deepEqual(grid("n", { nextBatchOffered: true }), { type: "next-batch" });
    assert.deepEqual(grid("Escape"), { type: "clear-selection" });
  });
});

describe("keys while the attribute panel is open", () => {
  const panel = (k, mods) => keyAction(key(k, mods), { mode: MODES.ATTRIBUTES, keyMap, columns: 4 });

  test("Enter saves the attributes, never accepts a suggestion or submits", () => {
    assert.deepEqual(panel("Enter"), { type: "attr-save" });
    assert.deepEqual(panel("Enter", { shiftKey: true }), { type: "swallow" });
    assert.deepEqual(panel("Escape"), { type: "attr-close" });
  });

  test("arrows pick the attribute and its value", () => {
    assert.deepEqual(panel("ArrowDown"), { type: "attr-row", delta: 1 });
    assert.deepEqual(panel("ArrowUp"), { type: "attr-row", delta: -1 });
    assert.deepEqual(panel("ArrowRight"), { type: "attr-value", delta: 1 });
    assert.deepEqual(panel("ArrowLeft"), { type: "attr-value", delta: -1 });
  });

  test("the grid's keys do nothing while the panel is open", () => {
    for (const k of ["1", "9", " ", "u", "x", "z", "a", "s", "g", "w", "n"]) {
      assert.deepEqual(panel(k), { type: "swallow" }, k);
    }
    assert.equal(panel("Tab"), null);
  });
});

describe("keys while a dialog is open", () => {
  const dialog = (k, mods) => keyAction(key(k, mods), { mode: MODES.DIALOG, keyMap, columns: 4 });

  test("Enter confirms, Escape cancels, everything else is held back", () => {
    assert.deepEqual(dialog("Enter"), { type: "dialog-confirm" });
    assert.deepEqual(dialog("Escape"), { type: "dialog-cancel" });
    assert.equal(dialog("Tab"), null);
    for (const k of ["1", "x", "z", "ArrowRight"]) assert.deepEqual(dialog(k), { type: "swallow" }, k);
    assert.deepEqual(dialog("Enter", { shiftKey: true }), { type: "dialog-confirm" });
  });

  test("a held key (auto-repeat of the Shift+Enter that opened it) does not answer the dialog", () => {
    assert.deepEqual(dialog("Enter", { shiftKey: true, repeat: true }), { type: "swallow" });
    assert.deepEqual(dialog("Escape", { repeat: true }), { type: "swallow" });
  });
});

// --- labels and attributes ------------------------------------------------------------------------------

describe("label requests", () => {
  test("one request per label; attribute values kept for a cell travel with it", () => {
    const items = [item(10, { suggestion: "blast" }), item(11, { suggestion: "ig" }), item(12, { suggestion: "blast" })];
    const plan = planLabelRequests(items, [0, 1, 2], (it) => ({ label: it.suggestion }), { 12: { granules: "few" } });
    assert.deepEqual(plan, [
      { indices: [0], body: { label: "blast" } },
      { indices: [1], body: { label: "ig" } },
      { indices: [2], body: { label: "blast", attributes: { granules: "few" } } },
    ]);
    const same = planLabelRequests(items, [0, 1, 2], () => ({ unsure: true }));
    assert.deepEqual(same, [{ indices: [0, 1, 2], body: { unsure: true } }]);
    assert.deepEqual(planLabelRequests(items, [0], () => null), []);
  });

  test("seconds spent are capped at five minutes", () => {
    assert.equal(secondsSpent(1000, 3500), 2.5);
    assert.equal(secondsSpent(0, 10 * 60 * 1000), 300);
    assert.equal(secondsSpent(5000, 1000), 0);
  });
});

describe("attribute panel", () => {
  const specs = [
    { name: "granules", values: ["none", "few", "many"] },
    { name: "nucleus_shape", values: ["round", "lobed"] },
  ];

  test("↑↓ are clamped, ←→ wrap round; from no value → picks the first, ← the last", () => {
    const panel = openAttributePanel([item(1)], [0]);
    attributeRow(panel, -1, specs.length);
    assert.equal(panel.row, 0);
    attributeStep(panel, specs, 1);
    assert.equal(panel.values.granules, "none");
    attributeStep(panel, specs, -1);
    assert.equal(panel.values.granules, "many");
    attributeStep(panel, specs, 1);
    assert.equal(panel.values.granules, "none");
    attributeRow(panel, 5, specs.length);
    assert.equal(panel.row, 1);
    attributeStep(panel, specs, -1);
    assert.deepEqual(panel.values, { granules: "none", nucleus_shape: "lobed" });
  });

  test("the panel starts from the focused cell's saved or kept values", () => {
    const labelled = item(1, { mine: { label: "blast", unsure: false, attributes: { granules: "few" } } });
    assert.deepEqual(openAttributePanel([labelled], [0]).values, { granules: "few" });
    assert.deepEqual(openAttributePanel([item(2)], [0], { 2: { granules: "many" } }).values, { granules: "many" });
    assert.deepEqual(openAttributePanel([item(2)], [0]).cells, [2]);
  });

  test("M takes the model's suggestions for the attributes still without a value, and only those", () => {
    const guesses = {
      granules: { value: "many", confidence: 0.9 },
      nucleus_shape: { value: "lobed", confidence: 0.7 },
      colour: { value: "blue", confidence: 0.8 }, // not in the schema any more: ignored
    };
    const mine = { label: "ig", unsure: false, attributes: { granules: "few" } };
    const panel = openAttributePanel([item(1, { mine, attribute_suggestions: guesses })], [0]);
    assert.equal(keyAction(key("m"), { mode: MODES.ATTRIBUTES }).type, "attr-suggested");
    assert.equal(keyAction(key("M", { shiftKey: true }), { mode: MODES.ATTRIBUTES }).type, "attr-suggested");
    assert.equal(takeAttributeSuggestions(panel, specs), 1);
    assert.deepEqual(panel.values, { granules: "few", nucleus_shape: "lobed" }, "the expert's value stays");
    assert.equal(takeAttributeSuggestions(panel, specs), 0);
  });

  test("an open panel takes the suggestions that arrive for its cell, and keeps the values shown", () => {
    const items = [item(1), item(2)];
    const panel = openAttributePanel(items, [0]);
    panel.values.granules = "few";
    assert.equal(refreshPanelSuggestions(panel, items), false, "nothing new yet");
    items[1].attribute_suggestions = { granules: { value: "many", confidence: 0.9 } };
    assert.equal(refreshPanelSuggestions(panel, items), false, "another cell's");
    const arrived = { granules: { value: "many", confidence: 0.9 }, nucleus_shape: { value: "lobed", confidence: 0.8 } };
    items[0].attribute_suggestions = arrived;
    assert.equal(refreshPanelSuggestions(panel, items), true);
    assert.deepEqual(panel.suggested, arrived);
    assert.deepEqual(panel.values, { granules: "few" });
    assert.equal(refreshPanelSuggestions(panel, items), false, "the same again");
    assert.equal(takeAttributeSuggestions(panel, specs), 1);
    const both = openAttributePanel(items, [0, 1]);
    assert.equal(refreshPanelSuggestions(both, items), false, "several cells: none");
    assert.equal(refreshPanelSuggestions(null, items), false);
  });

  test("a panel for several cells offers no suggestions (one cell's guesses are not the others')", () => {
    const guesses = { granules: { value: "many", confidence: 0.9 } };
    const items = [item(1, { attribute_suggestions: guesses }), item(2, { attribute_suggestions: guesses })];
    assert.deepEqual(openAttributePanel(items, [0]).suggested, guesses);
    const both = openAttributePanel(items, [0, 1]);
    assert.deepEqual(both.suggested, {});
    assert.equal(takeAttributeSuggestions(both, specs), 0);
    assert.deepEqual(both.values, {});
  });

  test("saving never gives an unlabelled cell a label: its values are kept for its class key", () => {
    const items = [
      item(1, { suggestion: "blast" }),
      item(2, { mine: { label: "ig", unsure: false, attributes: {} }, suggestion: "blast" }),
      item(3, { mine: { label: null, unsure: true, attributes: {} } }),
    ];
    const panel = { cells: [1, 2, 3], row: 0, values: { granules: "few" } };
    const { requests, keep } = planAttributeSave(items, panel);
    assert.deepEqual(keep, [1]);
    assert.deepEqual(requests, [
      { indices: [1], body: { label: "ig", attributes: { granules: "few" } } },
      { indices: [2], body: { unsure: true, attributes: { granules: "few" } } },
    ]);
    for (const r of requests) assert.notEqual(r.body.label, "blast", "the suggestion is never written");
  });
});

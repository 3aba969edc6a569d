// Small DOM helpers. Every string from the server goes into the page as text (textContent, attributes,
// properties), never as HTML: no innerHTML, insertAdjacentHTML or outerHTML anywhere in the page.

export const $ = (id) => document.getElementById(id);

/** An element: `el("span", {className: "x", dataset: {cell: 3}, attrs: {title: "t"}}, "text", node, …)`.
 * Children are nodes or strings (which become text nodes); null, undefined and false are left out. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  const { className, dataset, attrs, style, ...rest } = props;
  if (className) node.className = className;
  if (dataset) for (const [k, v] of Object.entries(dataset)) node.dataset[k] = String(v);
  if (attrs) for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  if (style) for (const [k, v] of Object.entries(style)) node.style.setProperty(k, v);
  for (const [k, v] of Object.entries(rest)) if (v !== undefined) node[k] = v;
  append(node, children);
  return node;
}

/** Append nodes and strings (as text) to `parent`. */
export function append(parent, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replace the children of `parent` with `children`. */
export function fill(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

/** How many tiles one row of the grid holds, as laid out now. */
export function gridColumns(grid) {
  const tiles = grid.querySelectorAll(".tile");
  if (tiles.length < 2) return 1;
  const top = tiles[0].offsetTop;
  let n = 0;
  for (const t of tiles) {
    if (t.offsetTop !== top) break;
    n++;
  }
  return Math.max(1, n);
}

/** An in-page confirmation (a modal <dialog>, not window.confirm). Resolves true when confirmed (its
 * button or Enter), false when cancelled (its button, Escape). main.js routes Enter and Escape here.
 * The dialog itself takes the focus, not a button, so that a Space meant for the grid answers nothing. */
export class ConfirmDialog {
  constructor(dialog) {
    this.dialog = dialog;
    this.text = dialog.querySelector("[data-role=text]");
    this.ok = dialog.querySelector("[data-role=ok]");
    this.cancel = dialog.querySelector("[data-role=cancel]");
    this.resolve = null;
    this.ok.addEventListener("click", () => this.close(true));
    this.cancel.addEventListener("click", () => this.close(false));
    // The browser's own Escape handling (and any other way the dialog is cancelled) means "no".
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      this.close(false);
    });
  }

  get isOpen() {
    return this.dialog.open;
  }

  /** Ask; a second question while one is open answers the first "no". */
  ask(message, { confirm = "Confirm", cancel = "Cancel" } = {}) {
    if (this.resolve) this.close(false);
    this.text.textContent = message;
    this.ok.textContent = `${confirm} (Enter)`;
    this.cancel.textContent = `${cancel} (Esc)`;
    this.returnFocus = document.activeElement;
    this.dialog.showModal();
    this.dialog.focus();
    return new Promise((resolve) => {
      this.resolve = resolve;
    });
  }

  close(answer) {
    const resolve = this.resolve;
    this.resolve = null;
    if (this.dialog.open) this.dialog.close();
    if (this.returnFocus && typeof this.returnFocus.focus === "function") this.returnFocus.focus();
    this.returnFocus = null;
    if (resolve) resolve(answer);
  }
}

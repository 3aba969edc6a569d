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

// The saliency overlay's controls: its legend (colour scale low -> high, the outline's level) and an
// opacity slider remembered in localStorage. The overlay itself is an RGBA PNG from the server
// (colour scale, alpha proportional to saliency, outline of the half-peak region) that render.js lays
// over the focused cell as `img.saliency`; its opacity is the CSS variable --saliency-opacity, set here on
// a container so every overlay inside it (grid tile or another view) follows the slider.

export const OPACITY_KEY = "leukoloop.saliencyOpacity";
export const DEFAULT_OPACITY = 80; // percent

/** A stored or typed opacity as a whole percent in [0, 100]; anything unreadable gives the default. */
export function parseOpacity(value) {
  if (value === null || value === undefined || value === "") return DEFAULT_OPACITY;
  const n = Math.round(Number(value));
  return Number.isFinite(n) ? Math.min(100, Math.max(0, n)) : DEFAULT_OPACITY;
}

function readStored(storage) {
  try {
    return parseOpacity(storage ? storage.getItem(OPACITY_KEY) : null);
  } catch {
    return DEFAULT_OPACITY; // storage refused (private mode, disabled): the default, not an error
  }
}

/**
 * Wire the legend and slider. `legend`: the element to show while the overlay is on; `slider`: an
 * `<input type="range">` 0-100; `target`: the element that holds --saliency-opacity; `onDone`: called
 * when the slider is released (e.g. to give the keyboard back to the grid, so `G` works again).
 * Returns {show(on), opacity()}.
 */
export function createSaliencyControls({ legend, slider, target, storage = globalThis.localStorage, onDone }) {
  let percent = readStored(storage);
  const apply = () => {
    slider.value = String(percent);
    target.style.setProperty("--saliency-opacity", String(percent / 100));
    slider.setAttribute("aria-valuetext", `${percent}%`);
  };
  slider.addEventListener("input", () => {
    percent = parseOpacity(slider.value);
    apply();
    try {
      storage?.setItem(OPACITY_KEY, String(percent));
    } catch {
      // not remembered, still applied
    }
  });
  if (onDone) slider.addEventListener("change", () => onDone());
  apply();
  return {
    show(on) {
      legend.hidden = !on;
    },
    opacity: () => percent / 100,
  };
}

// DOM builders for the monitor pages. Text from upstream APIs and feeds reaches the page
// only through textContent and attribute setters, never through HTML parsing, so a feed
// title such as "<img onerror=...>" shows as text and runs nothing.

const SVG_NS = "http://www.w3.org/2000/svg";

/**
 * Create an element.
 * options: {className, text, attrs: {name: value}, dataset: {key: value}}.
 * children: nodes or strings (strings become text nodes).
 */
export function el(tag, options = {}, children = []) {
  const node = document.createElement(tag);
  applyOptions(node, options);
  node.append(...children);
  return node;
}

/** Create an SVG element with presentation attributes (CSP allows these, unlike style="..."). */
export function svgEl(tag, attrs = {}, children = []) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    node.setAttribute(name, String(value));
  }
  node.append(...children);
  return node;
}

function applyOptions(node, { className, text, attrs, dataset } = {}) {
  if (className) {
    node.className = className;
  }
  if (text !== undefined && text !== null) {
    node.textContent = String(text);
  }
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) {
      continue;
    }
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const [key, value] of Object.entries(dataset || {})) {
    node.dataset[key] = String(value);
  }
}

/** Find the element with `data-role="role"` inside `root`, or throw naming the missing role. */
export function role(root, name) {
  const node = root.querySelector(`[data-role="${name}"]`);
  if (!node) {
    throw new Error(`page markup is missing data-role="${name}" inside #${root.id || root.tagName}`);
  }
  return node;
}

/** Format a time as "14:05" in the user's locale. */
export function formatClock(date) {
  return date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

/** Format how long ago `date` was: "just now", "5 min ago", "3 h ago", or a date. */
export function formatAge(date, now = new Date()) {
  const seconds = Math.round((now.getTime() - date.getTime()) / 1000);
  if (!Number.isFinite(seconds)) {
    return "";
  }
  if (seconds < 60) {
    return "just now";
  }
  if (seconds < 3600) {
    return `${Math.floor(seconds / 60)} min ago`;
  }
  if (seconds < 86400) {
    return `${Math.floor(seconds / 3600)} h ago`;
  }
  return date.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
}

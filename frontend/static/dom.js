// Tiny DOM helpers. Text always goes in through text nodes, never as HTML,
// because variable and run names come from user code and may contain markup.

/**
 * Creates an element.
 *
 * Args:
 *   tag: element name.
 *   props: {className, title, text, dataset: {}, attrs: {}, style: {}, on: {event: fn}}
 *     plus any other writable property (value, checked, type, ...).
 *   children: nodes, strings (as text), arrays of those; null/false skipped.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") Object.assign(node.style, value);
    else if (key === "attrs") for (const [name, v] of Object.entries(value)) node.setAttribute(name, String(v));
    else if (key === "on") for (const [name, fn] of Object.entries(value)) node.addEventListener(name, fn);
    else node[key] = value;
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces all children of `node`. */
export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** The value of a CSS custom property on the document, for canvas and charts. */
export function cssVar(name, fallback = "") {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

// Building the page from data: every string becomes a text node (textContent), never markup.
// Nothing in the web UI assigns innerHTML, outerHTML or insertAdjacentHTML.

/** An element with attributes and children; string children become text nodes. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === 'class') node.className = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

/** Replaces the children of `node` with `children`. */
export function show(node, ...children) {
  node.replaceChildren(...children.flat());
}

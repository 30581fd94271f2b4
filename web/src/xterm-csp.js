// Lets xterm.js's DOM renderer run under the page's strict Content-Security-Policy
// (`style-src 'self'`, no 'unsafe-inline'). The renderer writes its CSS two ways a strict policy
// refuses: the text of `<style>` elements it creates (cell sizes, the theme), and `style`
// attributes (24-bit colours). Both are routed here through the CSSOM, which the policy does
// not govern (it guards markup, not script that already runs under `script-src 'self'`): a
// `<style>` element's text becomes a constructed stylesheet adopted by the document, and a
// `style` attribute becomes `element.style.cssText`. The renderer gets an inert `<template>`
// in place of each `<style>` (even an empty `<style>` in the document is checked, and refused),
// so nothing is refused and the policy needs no exception.
//
// Installed once, before the first terminal opens; it changes only `<style>` elements made
// through `document.createElement` and `setAttribute('style', …)`, which no other page uses.

let installed = false;

function adopt(doc, node) {
  const sheet = new doc.defaultView.CSSStyleSheet();
  let text = '';
  Object.defineProperty(node, 'textContent', {
    configurable: true,
    get: () => text,
    set: (value) => {
      text = String(value ?? '');
      sheet.replaceSync(text);
    },
  });
  const remove = node.remove.bind(node);
  node.remove = () => {
    doc.adoptedStyleSheets = doc.adoptedStyleSheets.filter((s) => s !== sheet);
    remove();
  };
  doc.adoptedStyleSheets = [...doc.adoptedStyleSheets, sheet];
}

/** Routes `<style>` text and `style` attributes through the CSSOM (once per page). */
export function cspSafeStyles(doc = document) {
  if (installed) return;
  installed = true;
  const create = doc.createElement.bind(doc);
  doc.createElement = (tag, options) => {
    if (String(tag).toLowerCase() !== 'style') return create(tag, options);
    const node = create('template');
    adopt(doc, node);
    return node;
  };
  const setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function setAttributeCspSafe(name, value) {
    if (String(name).toLowerCase() === 'style' && this.style) {
      this.style.cssText = String(value);
      return;
    }
    setAttribute.call(this, name, value);
  };
}

// The audit log page: search by time range, event type and user, newest first, a page at a
// time (the server's cursor moves to the next page). Only roles with the `event` `list` rule
// (auditor, editor) may search: the server refuses everyone else, and the page says so.
import { auditSearch } from '/web/assets/api.js';
import { el, show } from '/web/assets/dom.js';

const TYPES = [
  'user.login', 'user.create', 'user.locked', 'session.start', 'session.end', 'session.join',
  'session.recording.access', 'exec', 'db.session.start', 'app.session.start', 'access.refused',
  'resource.create', 'lock.created',
];
// Fields every event has, shown in their own columns or not at all.
const OWN = new Set(['event', 'code', 'time', 'id', 'user', 'cluster', 'success', 'seq', 'chain', 'prev_hash', 'hash']);

const iso = (local) => (local ? new Date(local).toISOString() : '');

function details(ev) {
  const rest = Object.fromEntries(Object.entries(ev).filter(([k]) => !OWN.has(k)));
  return JSON.stringify(rest);
}

function eventRow(ev) {
  return el('tr', { class: 'event', 'data-event': ev.event || '', 'data-user': ev.user || '' },
    el('td', {}, ev.time ? new Date(ev.time).toLocaleString() : ''),
    el('td', { class: 'type' }, ev.event || ''),
    el('td', { class: 'user' }, ev.user || ''),
    el('td', {}, ev.success === false ? 'failed' : 'ok'),
    el('td', { class: 'details' }, details(ev)));
}

/** Shows the audit page in `view`. */
export async function auditPage(view) {
  const input = (id, label, attrs = {}) => {
    const i = el('input', { id, name: id, ...attrs });
    return [i, el('label', { for: id }, label, i)];
  };
  const [from, fromLabel] = input('audit-from', 'From', { type: 'datetime-local' });
  const [to, toLabel] = input('audit-to', 'To', { type: 'datetime-local' });
  const [type, typeLabel] = input('audit-type', 'Event type', { list: 'audit-types', placeholder: 'any' });
  const [user, userLabel] = input('audit-user', 'User', { placeholder: 'any' });
  const types = el('datalist', { id: 'audit-types' }, TYPES.map((t) => el('option', { value: t })));
  const search = el('button', { id: 'audit-search', type: 'submit' }, 'Search');
  const more = el('button', { id: 'audit-next', type: 'button', hidden: '' }, 'Next page');
  const message = el('p', { id: 'audit-error', class: 'error', role: 'alert' });
  const body = el('tbody', {});
  const summary = el('p', { id: 'audit-summary', class: 'muted' });
  const form = el('form', { id: 'audit-form', class: 'filters' },
    fromLabel, toLabel, typeLabel, userLabel, types, search);
  let cursor = null;
  let params = {};

  async function fetchPage(first) {
    message.textContent = '';
    search.disabled = true;
    more.disabled = true;
    try {
      const page = await auditSearch(first ? params : { ...params, cursor });
      if (first) body.replaceChildren();
      body.append(...page.events.map(eventRow));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      summary.textContent = `${body.children.length} events${cursor ? ' (more on the next page)' : ''}`;
    } catch (e) {
      message.textContent = e.message;
    } finally {
      search.disabled = false;
      more.disabled = false;
    }
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    params = { from: iso(from.value), to: iso(to.value), type: type.value.trim(), user: user.value.trim() };
    fetchPage(true);
  });
  more.addEventListener('click', () => fetchPage(false));
  show(view,
    el('div', { class: 'toolbar' }, el('h1', {}, 'Audit log')),
    form, message, summary,
    el('table', { id: 'audit' },
      el('thead', {}, el('tr', {}, ['Time', 'Type', 'User', 'Outcome', 'Details'].map((h) => el('th', {}, h)))),
      body),
    more);
  const link = document.querySelector('link[data-sheet="/web/assets/player.css"]');
  if (!link) document.head.append(el('link', { rel: 'stylesheet', href: '/web/assets/player.css', 'data-sheet': '/web/assets/player.css' }));
  await fetchPage(true);
}

// The locks page (editors): every lock with its target, message, expiry and author; lock a user,
// a role or a login (with a message and an optional expiry); remove a lock.
import { api } from '/web/assets/api.js';
import { el, show } from '/web/assets/dom.js';

/** Shows the locks page in `view`. */
export async function locksPage(view) {
  const message = el('p', { id: 'locks-error', class: 'error', role: 'alert' });
  const { locks } = await api('GET', '/web/api/locks');
  const rows = locks.map((l) => el('tr', { class: 'lock', 'data-id': l.id },
    el('td', { class: 'target' }, l.target),
    el('td', {}, l.message),
    el('td', {}, l.expires || 'never'),
    el('td', {}, l.created_by),
    el('td', {}, el('button', { type: 'button', class: 'remove', onclick: async () => {
      try {
        await api('DELETE', `/web/api/locks/${encodeURIComponent(l.id)}`);
        await locksPage(view);
      } catch (e) {
        message.textContent = e.message;
      }
    } }, 'Remove'))));
  const kind = el('select', { id: 'lock-kind', 'aria-label': 'What to lock' },
    ['user', 'role', 'login'].map((k) => el('option', { value: k }, k)));
  const target = el('input', { id: 'lock-target', required: '', 'aria-label': 'Name' });
  const text = el('input', { id: 'lock-message', placeholder: 'Why', 'aria-label': 'Message' });
  const ttl = el('input', { id: 'lock-ttl', type: 'number', min: '0', value: '0', 'aria-label': 'Seconds (0: until removed)' });
  const form = el('form', { id: 'add-lock', class: 'inline' }, kind, target, text, ttl,
    el('button', { id: 'add-lock-submit', type: 'submit' }, 'Lock'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await api('POST', '/web/api/locks',
        { [kind.value]: target.value, message: text.value, ttl_seconds: Number(ttl.value) || 0 });
      await locksPage(view);
    } catch (e) {
      message.textContent = e.message;
    }
  });
  show(view, el('h1', {}, 'Locks'), form, message,
    el('table', { id: 'locks' },
      el('thead', {}, el('tr', {}, ['Target', 'Message', 'Expires', 'Created by', ''].map((h) => el('th', {}, h)))),
      el('tbody', {}, rows)));
}

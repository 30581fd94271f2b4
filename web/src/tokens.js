// The join tokens page (editors): the tokens with their roles, expiry and uses left; create one
// (its secret is in the answer only, shown once here); delete one.
import { api } from '/web/assets/api.js';
import { el, show } from '/web/assets/dom.js';

/** Shows the join tokens page in `view`. */
export async function tokensPage(view, _session, _rest, shown = null) {
  const message = el('p', { id: 'tokens-error', class: 'error', role: 'alert' });
  const { tokens } = await api('GET', '/web/api/tokens');
  const rows = tokens.map((t) => el('tr', { class: 'token', 'data-id': t.id },
    el('td', { class: 'name' }, t.id),
    el('td', {}, t.roles.join(', ')),
    el('td', {}, t.expires || '-'),
    el('td', {}, t.uses_left === null || t.uses_left === undefined ? 'any' : String(t.uses_left)),
    el('td', {}, el('button', { type: 'button', class: 'remove', onclick: async () => {
      try {
        await api('DELETE', `/web/api/tokens/${encodeURIComponent(t.id)}`);
        await tokensPage(view);
      } catch (e) {
        message.textContent = e.message;
      }
    } }, 'Delete'))));
  const roles = el('input', { id: 'token-roles', placeholder: 'node', required: '' });
  const ttl = el('input', { id: 'token-ttl', type: 'number', min: '60', value: '1800', 'aria-label': 'TTL in seconds' });
  const form = el('form', { id: 'add-token', class: 'inline' },
    el('label', { for: 'token-roles' }, 'Roles'), roles,
    el('label', { for: 'token-ttl' }, 'Valid for (s)'), ttl,
    el('button', { id: 'add-token-submit', type: 'submit' }, 'Create token'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const t = await api('POST', '/web/api/tokens', {
        roles: roles.value.split(',').map((r) => r.trim()).filter((r) => r),
        ttl_seconds: Number(ttl.value) || 0,
      });
      await tokensPage(view, null, '', t);
    } catch (e) {
      message.textContent = e.message;
    }
  });
  const secret = shown ? el('div', { id: 'token-new', class: 'notice' },
    el('p', {}, `Join token ${shown.id} for ${shown.roles.join(', ')}, valid until ${shown.expires}. Its secret is shown this once:`),
    el('code', { id: 'token-secret' }, shown.secret)) : null;
  show(view, el('h1', {}, 'Join tokens'), form, message, secret,
    el('table', { id: 'tokens' },
      el('thead', {}, el('tr', {}, ['ID', 'Roles', 'Expires', 'Uses left', ''].map((h) => el('th', {}, h)))),
      el('tbody', {}, rows)));
}

// The roles page (editors): the roles by name; a role's YAML in a textarea, saved through the
// parser `hop admin create` uses. A document that does not parse or validate is not saved: the
// error is shown next to the editor with its line and field. New roles start from a template.
import { ApiError, api } from '/web/assets/api.js';
import { el, show } from '/web/assets/dom.js';

const TEMPLATE = `kind: role
version: v7
metadata:
  name: new-role
spec:
  allow:
    logins: []
    node_labels: {}
`;

/** Shows the roles page in `view`; `rest` is `/NAME` when a role is open. */
export async function rolesPage(view, _session, rest) {
  const open = rest.replace(/^\//, '');
  const { roles } = await api('GET', '/web/api/roles');
  const links = roles.map((r) => el('li', { class: 'role', 'data-name': r },
    el('a', { href: `/web/roles/${encodeURIComponent(r)}`, 'data-nav': '' }, r)));
  const editor = el('textarea', { id: 'role-yaml', rows: '22', cols: '80', spellcheck: 'false', 'aria-label': 'Role YAML' });
  const error = el('div', { id: 'role-error', class: 'error', role: 'alert' });
  const saved = el('p', { id: 'role-saved', class: 'muted' });
  let current = open;
  if (open) {
    const r = await api('GET', `/web/api/roles/${encodeURIComponent(open)}`);
    editor.value = r.yaml;
  } else {
    editor.value = TEMPLATE;
  }
  const save = async () => {
    error.replaceChildren();
    saved.textContent = '';
    try {
      const r = current
        ? await api('PUT', `/web/api/roles/${encodeURIComponent(current)}`, { yaml: editor.value })
        : await api('POST', '/web/api/roles', { yaml: editor.value });
      saved.textContent = `Saved role ${r.name}.${r.warnings.length ? ` Warnings: ${r.warnings.join('; ')}` : ''}`;
      if (!current) {
        current = r.name;
        history.pushState({}, '', `/web/roles/${encodeURIComponent(r.name)}`);
        await rolesPage(view, _session, `/${r.name}`);
        document.getElementById('role-saved').textContent = `Saved role ${r.name}.`;
      }
    } catch (e) {
      const where = e instanceof ApiError && e.body && e.body.line ? `line ${e.body.line}` : '';
      const field = e instanceof ApiError && e.body && e.body.field ? `field ${e.body.field}` : '';
      error.replaceChildren(
        el('span', { id: 'role-error-where' }, [where, field].filter((x) => x).join(', ')),
        el('span', { id: 'role-error-message' }, e.message));
      if (e.body && e.body.line) selectLine(editor, e.body.line);
    }
  };
  const remove = async () => {
    error.replaceChildren();
    try {
      await api('DELETE', `/web/api/roles/${encodeURIComponent(current)}`);
      history.pushState({}, '', '/web/roles');
      await rolesPage(view, _session, '');
    } catch (e) {
      error.replaceChildren(el('span', { id: 'role-error-message' }, e.message));
    }
  };
  show(view,
    el('h1', {}, 'Roles'),
    el('div', { class: 'split' },
      el('ul', { id: 'roles', class: 'plain' }, links,
        el('li', {}, el('a', { href: '/web/roles', 'data-nav': '', id: 'new-role' }, '+ New role'))),
      el('div', { class: 'editor' },
        el('h2', { id: 'role-title' }, open ? `Role ${open}` : 'New role'),
        editor, error, saved,
        el('div', { class: 'toolbar' },
          el('button', { id: 'role-save', type: 'button', onclick: save }, 'Save'),
          open ? el('button', { id: 'role-delete', type: 'button', onclick: remove }, 'Delete') : null))));
}

/** Selects line `n` (1-based) of a textarea, so the error's place is visible. */
function selectLine(area, n) {
  const lines = area.value.split('\n');
  const start = lines.slice(0, n - 1).reduce((a, l) => a + l.length + 1, 0);
  area.focus();
  area.setSelectionRange(start, start + (lines[n - 1] || '').length);
}

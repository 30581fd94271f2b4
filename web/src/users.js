// The users page (editors): every user with roles, logins and lock; add a user (the answer is an
// invitation link, shown once), lock with a reason, unlock, reset (a new link; the old password
// and devices stop working), remove. The API authorizes every call; this page only asks.
import { api } from '/web/assets/api.js';
import { el, show } from '/web/assets/dom.js';

const list = (s) => s.split(',').map((x) => x.trim()).filter((x) => x);
const enc = encodeURIComponent;

function inviteBox(answer, what) {
  return el('div', { id: 'invite', class: 'notice' },
    el('p', {}, `${what} ${answer.user}. Share this link (valid until ${answer.expires}); it is shown once:`),
    el('p', {}, el('a', { id: 'invite-link', href: answer.path, 'data-path': answer.path }, answer.url)));
}

/** Shows the users page in `view`. */
export async function usersPage(view) {
  const message = el('p', { id: 'users-error', class: 'error', role: 'alert' });
  const result = el('div', { id: 'users-result' });
  const redraw = async (...shown) => {
    await usersPage(view);
    document.getElementById('users-result').replaceChildren(...shown);
  };
  const act = (fn) => async () => {
    message.textContent = '';
    try {
      await fn();
    } catch (e) {
      message.textContent = e.message;
    }
  };
  const { users } = await api('GET', '/web/api/users');
  const reason = el('input', { id: 'lock-reason', placeholder: 'Lock reason', 'aria-label': 'Lock reason' });
  const ttl = el('input', {
    id: 'lock-ttl', type: 'number', min: '0', value: '0', 'aria-label': 'Lock for (seconds, 0: until unlocked)',
    title: 'Lock for (seconds, 0: until unlocked)',
  });
  const rows = users.map((u) => el('tr', { class: 'user', 'data-name': u.name },
    el('td', { class: 'name' }, u.name),
    el('td', {}, u.roles.join(', ')),
    el('td', {}, u.logins.join(', ')),
    el('td', { class: 'locked' }, u.locked ? `locked until ${u.locked_until || '?'}: ${u.lock_reason || ''}` : '-'),
    el('td', { class: 'actions' },
      u.locked
        ? el('button', { type: 'button', class: 'unlock', onclick: act(async () => {
          await api('POST', `/web/api/users/${enc(u.name)}/unlock`, {});
          await redraw();
        }) }, 'Unlock')
        : el('button', { type: 'button', class: 'lock', onclick: act(async () => {
          await api('POST', `/web/api/users/${enc(u.name)}/lock`,
            { reason: reason.value, ttl_seconds: Number(ttl.value) || 0 });
          await redraw();
        }) }, 'Lock'),
      el('button', { type: 'button', class: 'reset', onclick: act(async () => {
        const r = await api('POST', `/web/api/users/${enc(u.name)}/reset`, {});
        await redraw(inviteBox(r, 'Reset'));
      }) }, 'Reset'),
      el('button', { type: 'button', class: 'remove', onclick: act(async () => {
        await api('DELETE', `/web/api/users/${enc(u.name)}`);
        await redraw();
      }) }, 'Remove'))));
  const name = el('input', { id: 'new-user', placeholder: 'alice', required: '' });
  const roles = el('input', { id: 'new-user-roles', placeholder: 'access', required: '' });
  const logins = el('input', { id: 'new-user-logins', placeholder: 'alice, ubuntu' });
  const form = el('form', { id: 'add-user', class: 'inline' },
    el('label', { for: 'new-user' }, 'User'), name,
    el('label', { for: 'new-user-roles' }, 'Roles'), roles,
    el('label', { for: 'new-user-logins' }, 'Logins'), logins,
    el('button', { id: 'add-user-submit', type: 'submit' }, 'Add user'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    act(async () => {
      const r = await api('POST', '/web/api/users',
        { name: name.value, roles: list(roles.value), logins: list(logins.value) });
      await redraw(inviteBox(r, 'Created'));
    })();
  });
  show(view,
    el('h1', {}, 'Users'), form, message, result,
    el('div', { class: 'inline' }, el('label', { for: 'lock-reason' }, 'Lock with reason'), reason,
      el('label', { for: 'lock-ttl' }, 'for (s, 0: until unlocked)'), ttl),
    el('table', { id: 'users' },
      el('thead', {}, el('tr', {}, ['User', 'Roles', 'Logins', 'Locked', ''].map((h) => el('th', {}, h)))),
      el('tbody', {}, rows)));
}

// The active sessions page: the live SSH sessions this user may see (from the session trackers,
// filtered by the server as `hop sessions ls` is), with a link to join each in the modes the
// user's roles allow (`join_sessions`; the owner may always join their own).
import { activeSessions } from '/web/assets/api.js';
import { el, show } from '/web/assets/dom.js';

function joinLinks(s) {
  if (!s.join_modes.length) return el('span', { class: 'muted' }, 'not allowed');
  return s.join_modes.map((mode) => el('a', {
    class: 'join', 'data-mode': mode, 'data-nav': '',
    href: `/web/join/${encodeURIComponent(s.session_id)}/${mode}`,
  }, `Join as ${mode}`));
}

/** Shows the active sessions page in `view`. */
export async function sessionsPage(view) {
  show(view, el('p', { class: 'muted' }, 'Loading sessions…'));
  const r = await activeSessions();
  const rows = r.sessions.map((s) => el('tr', { class: 'session', 'data-id': s.session_id },
    el('td', { class: 'name' }, s.user),
    el('td', {}, `${s.login}@${s.server}`),
    el('td', {}, s.participants.join(', ')),
    el('td', {}, s.created),
    el('td', { class: 'actions' }, joinLinks(s)),
    el('td', { class: 'muted' }, s.session_id)));
  show(view,
    el('div', { class: 'toolbar' }, el('h1', {}, 'Active sessions')),
    rows.length ? el('table', { id: 'sessions' },
      el('thead', {}, el('tr', {}, ['User', 'Login and server', 'Participants', 'Started', 'Join', 'Session']
        .map((h) => el('th', {}, h)))),
      el('tbody', {}, rows))
      : el('p', { id: 'sessions', class: 'muted' }, 'No live sessions you may see.'));
}

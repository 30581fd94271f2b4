// The recordings page: the session recordings this user may see (all of them for auditors and
// editors, the sessions the user took part in for the access role: the server filters), newest
// first, each linking to its player.
import { recordings } from '/web/assets/api.js';
import { el, show } from '/web/assets/dom.js';
import { clock, playerPage } from '/web/assets/player.js';

const when = (rfc3339) => new Date(rfc3339).toLocaleString();

/** Shows the list (`rest` empty) or the player of recording `rest` (`/ID`) in `view`. */
export async function recordingsPage(view, session, rest) {
  const id = rest.replace(/^\/+/, '');
  if (id) {
    await playerPage(view, id);
    return;
  }
  show(view, el('p', { class: 'muted' }, 'Loading recordings…'));
  const r = await recordings();
  const rows = r.recordings.map((rec) =>
    el('tr', { class: 'recording', 'data-id': rec.id, 'data-user': rec.user },
      el('td', {}, when(rec.start)),
      el('td', { class: 'user' }, rec.user),
      el('td', {}, rec.login),
      el('td', {}, rec.server),
      el('td', {}, clock(rec.duration_ms)),
      el('td', {}, el('a', { class: 'play', href: `/web/recordings/${encodeURIComponent(rec.id)}` }, 'Play'))));
  show(view,
    el('div', { class: 'toolbar' }, el('h1', {}, 'Session recordings')),
    rows.length
      ? el('table', { id: 'recordings' },
        el('thead', {}, el('tr', {}, ['Started', 'User', 'Login', 'Server', 'Duration', ''].map((h) => el('th', {}, h)))),
        el('tbody', {}, rows))
      : el('p', { id: 'no-recordings', class: 'muted' }, 'No recordings you may see.'));
}

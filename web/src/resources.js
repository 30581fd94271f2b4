// The resources page: the nodes, applications and databases this user may reach (filtered by
// the server with the user's roles, as `hop ls` is), with their labels, the logins and database
// users allowed, a terminal link per login on each node, and a search box that filters the rows.
import { resources } from '/web/assets/api.js';
import { el, show } from '/web/assets/dom.js';

const labelList = (labels) =>
  el('ul', { class: 'labels' },
    Object.entries(labels || {}).map(([k, v]) => el('li', { class: 'label' }, `${k}: ${v}`)));

const words = (list) => (list || []).join(', ');

function table(id, title, head, rows) {
  return el('section', { id },
    el('h2', {}, title),
    el('table', {},
      el('thead', {}, el('tr', {}, head.map((h) => el('th', {}, h)))),
      el('tbody', {}, rows)));
}

function row(kind, name, labels, cells) {
  const text = [name, ...Object.entries(labels || {}).flat(), ...cells].join(' ').toLowerCase();
  const tr = el('tr', { class: 'resource', 'data-kind': kind, 'data-name': name },
    el('td', { class: 'name' }, name), el('td', {}, labelList(labels)),
    cells.map((c) => el('td', {}, c)));
  tr.dataset.search = text;
  return tr;
}

/** Shows the resources page in `view`. */
export async function resourcesPage(view) {
  show(view, el('p', { class: 'muted' }, 'Loading resources…'));
  const r = await resources();
  const nodes = r.nodes.map((n) => {
    const tr = row('node', n.name, n.labels, [words(n.logins)]);
    tr.append(el('td', { class: 'actions' }, (n.logins || []).map((login) => el('a', {
      class: 'connect', 'data-nav': '', 'data-login': login,
      href: `/web/terminal/${encodeURIComponent(login)}@${encodeURIComponent(n.name)}`,
    }, `Connect as ${login}`))));
    return tr;
  });
  const apps = r.apps.map((a) => {
    const tr = row('app', a.name, a.labels, []);
    // An HTTP application opens at NAME.<this host> (the proxy's public address).
    tr.append(el('td', { class: 'actions' }, a.http
      ? el('a', { class: 'open', href: `https://${a.name}.${location.host}/`, target: '_blank', rel: 'noopener' }, 'Open')
      : 'hop proxy app'));
    return tr;
  });
  const dbs = r.databases.map((d) =>
    row('db', d.name, d.labels, [d.protocol, words(d.db_users), words(d.db_names)]));
  const search = el('input', {
    id: 'search', type: 'search', placeholder: 'Search by name or label', 'aria-label': 'Search',
  });
  const all = [...nodes, ...apps, ...dbs];
  search.addEventListener('input', () => {
    const q = search.value.trim().toLowerCase();
    for (const tr of all) tr.hidden = q !== '' && !tr.dataset.search.includes(q);
  });
  show(view,
    el('div', { class: 'toolbar' }, el('h1', {}, 'Resources'), search),
    table('nodes', 'Servers', ['Name', 'Labels', 'Logins', 'Terminal'], nodes),
    table('apps', 'Applications', ['Name', 'Labels', 'Open'], apps),
    table('databases', 'Databases', ['Name', 'Labels', 'Protocol', 'Database users', 'Database names'], dbs));
  search.focus();
}

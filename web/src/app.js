// The web UI's entry: which page the address names, the header with the user and logout, and
// the watch that sends the user back to the login page once the web session ends.
import { ApiError, currentSession, logout, onSessionEnded } from '/web/assets/api.js';
import { el, show } from '/web/assets/dom.js';
import { loginPage } from '/web/assets/login.js';
import { resourcesPage } from '/web/assets/resources.js';
import { api } from '/web/assets/api.js';
import { accountPage } from '/web/assets/account.js';
import { invitePage } from '/web/assets/invite.js';
import { locksPage } from '/web/assets/locks.js';
import { rolesPage } from '/web/assets/roles.js';
import { tokensPage } from '/web/assets/tokens.js';
import { usersPage } from '/web/assets/users.js';
import { sessionsPage } from '/web/assets/sessions.js';
import { joinPage, terminalPage } from '/web/assets/terminal.js';
import { recordingsPage } from '/web/assets/recordings.js';
import { auditPage } from '/web/assets/audit.js';
import { launchPage } from '/web/assets/launch.js';
import { requestsPage } from '/web/assets/requests.js';

// Each page: the address prefix that shows it, and the function that draws it into the view
// (given the view, the web session, and the rest of the address after the prefix).
const PAGES = [
  { prefix: '/web/resources', draw: (v) => resourcesPage(v) },
  { prefix: '/web/sessions', draw: (v) => sessionsPage(v) },
  { prefix: '/web/terminal/', draw: (v, s, rest) => terminalPage(v, s, rest) },
  { prefix: '/web/join/', draw: (v, s, rest) => joinPage(v, s, rest) },
  { prefix: '/web/account', draw: (v) => accountPage(v) },
  { prefix: '/web/users', draw: (v) => usersPage(v) },
  { prefix: '/web/roles', draw: (v, s, rest) => rolesPage(v, s, rest) },
  { prefix: '/web/tokens', draw: (v, s, rest) => tokensPage(v, s, rest) },
  { prefix: '/web/locks', draw: (v) => locksPage(v) },
  { prefix: '/web/recordings', draw: (v, s, rest) => recordingsPage(v, s, rest) },
  { prefix: '/web/audit', draw: (v) => auditPage(v) },
  { prefix: '/web/requests', draw: (v) => requestsPage(v) },
  { prefix: '/web/launch/', draw: (v, s, rest) => launchPage(v, rest) },
];

const view = document.getElementById('view');
const bar = document.getElementById('bar');
const who = document.getElementById('who');
let watch = 0;
// What the page now shown needs done when it goes (a terminal closes its socket).
let leave = null;

// A web application's launch that waits for the login (its address, with the state).
let afterLogin = '';

// How often an open page asks whether its session still holds (a lock ends it within seconds).
const WATCH_MS = 1000;

function go(path) {
  if (location.pathname !== path) history.pushState({}, '', path);
  route();
}

function loggedOut(notice) {
  if (leave) leave();
  leave = null;
  clearInterval(watch);
  watch = 0;
  bar.hidden = true;
  who.textContent = '';
  if (location.pathname.startsWith('/web/launch/')) afterLogin = location.pathname + location.search;
  if (location.pathname !== '/web/login') history.pushState({}, '', '/web/login');
  loginPage(view, loggedIn, notice);
}

// Shows the editor pages' links the user's roles allow (a hint: the API refuses the rest).
async function showEditorLinks() {
  const links = document.querySelectorAll('#nav a[data-editor]');
  for (const a of links) a.hidden = true;
  try {
    const may = await api('GET', '/web/api/editor');
    for (const a of links) a.hidden = !may[a.dataset.editor];
  } catch {
    // No hint: the links stay hidden.
  }
}

function loggedIn(session) {
  who.textContent = `${session.user} (${session.roles.join(', ')})`;
  bar.hidden = false;
  showEditorLinks();
  if (!watch) watch = setInterval(() => currentSession().catch(() => {}), WATCH_MS);
  if (afterLogin) {
    history.replaceState({}, '', afterLogin);
    afterLogin = '';
    route();
  } else if (location.pathname === '/web/login' || location.pathname === '/web' || location.pathname === '/web/') {
    go('/web/resources');
  } else {
    route();
  }
}

async function route() {
  // An invitation link is for someone without a session.
  if (location.pathname.startsWith('/web/invite/')) {
    await invitePage(view, decodeURIComponent(location.pathname.slice('/web/invite/'.length)));
    return;
  }
  let session;
  try {
    session = await currentSession();
  } catch (e) {
    // The proxy is unreachable (or the page is being left): say so, keep the page.
    view.textContent = `Cannot reach Hop: ${e.message}`;
    return;
  }
  if (!session) {
    loggedOut('');
    return;
  }
  if (bar.hidden) {
    loggedIn(session);
    return;
  }
  const page = PAGES.find((p) => location.pathname.startsWith(p.prefix));
  if (!page) {
    view.textContent = `No page at ${location.pathname}.`;
    return;
  }
  if (leave) leave();
  leave = null;
  try {
    const left = await page.draw(view, session, decodeURIComponent(location.pathname.slice(page.prefix.length)));
    if (typeof left === 'function') leave = left;
  } catch (e) {
    view.textContent = e.message;
  }
}

// A click on a nav link (in the bar or a page) changes the view without reloading the page.
const navigate = (e) => {
  const a = e.target.closest('a[data-nav]');
  if (!a) return;
  e.preventDefault();
  go(a.getAttribute('href'));
};
document.getElementById('nav').addEventListener('click', navigate);
view.addEventListener('click', navigate);

onSessionEnded((message) => loggedOut(`Your web session ended: ${message}`));
document.getElementById('logout').addEventListener('click', async () => {
  try {
    await logout();
  } catch (e) {
    // 401: the session had ended already. Anything else: the proxy did not end it, so the page
    // must not say it did (on a shared computer the next user would be logged in).
    if (!(e instanceof ApiError && e.status === 401)) {
      show(view, el('p', { id: 'logout-error', class: 'error', role: 'alert' },
        `Logging out failed (${e.message}): your web session is still open. Try again.`));
      return;
    }
  }
  loggedOut('You logged out.');
});
window.addEventListener('popstate', route);
route();

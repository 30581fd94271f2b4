// The web UI's entry: which page the address names, the header with the user and logout, and
// the watch that sends the user back to the login page once the web session ends.
import { ApiError, currentSession, logout, onSessionEnded } from '/web/assets/api.js';
import { el, show } from '/web/assets/dom.js';
import { loginPage } from '/web/assets/login.js';
import { resourcesPage } from '/web/assets/resources.js';
import { recordingsPage } from '/web/assets/recordings.js';
import { auditPage } from '/web/assets/audit.js';

// Each page: the address prefix that shows it, and the function that draws it into the view
// (given the view, the web session, and the rest of the address after the prefix).
const PAGES = [
  { prefix: '/web/resources', draw: (v) => resourcesPage(v) },
  { prefix: '/web/recordings', draw: (v, s, rest) => recordingsPage(v, s, rest) },
  { prefix: '/web/audit', draw: (v) => auditPage(v) },
];

const view = document.getElementById('view');
const bar = document.getElementById('bar');
const who = document.getElementById('who');
let watch = 0;

// How often an open page asks whether its session still holds (a lock ends it within seconds).
const WATCH_MS = 1000;

function go(path) {
  if (location.pathname !== path) history.pushState({}, '', path);
  route();
}

function loggedOut(notice) {
  clearInterval(watch);
  watch = 0;
  bar.hidden = true;
  who.textContent = '';
  if (location.pathname !== '/web/login') history.pushState({}, '', '/web/login');
  loginPage(view, loggedIn, notice);
}

function loggedIn(session) {
  who.textContent = `${session.user} (${session.roles.join(', ')})`;
  bar.hidden = false;
  if (!watch) watch = setInterval(() => currentSession().catch(() => {}), WATCH_MS);
  if (location.pathname === '/web/login' || location.pathname === '/web' || location.pathname === '/web/') {
    go('/web/resources');
  } else {
    route();
  }
}

async function route() {
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
  try {
    await page.draw(view, session, decodeURIComponent(location.pathname.slice(page.prefix.length)));
  } catch (e) {
    view.textContent = e.message;
  }
}

// A click on a nav link changes the view without reloading the page.
document.getElementById('nav').addEventListener('click', (e) => {
  const a = e.target.closest('a[data-nav]');
  if (!a) return;
  e.preventDefault();
  go(a.getAttribute('href'));
});

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

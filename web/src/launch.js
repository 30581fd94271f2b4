// The launch page of a web application (`/web/launch/NAME?state=S`): the application's host
// sent the browser here with its state; the page asks the proxy for a one-time code for this
// user, application and state, then goes to the application's callback with it. A refusal
// (no role grants the application, a lock) is shown here, with the reason.
import { api } from '/web/assets/api.js';
import { el, show } from '/web/assets/dom.js';

/** Launches application `app` in `view`. */
export async function launchPage(view, app) {
  const state = new URLSearchParams(location.search).get('state') || '';
  show(view, el('p', { id: 'launch-status', class: 'muted' }, `Opening ${app}…`));
  try {
    const r = await api('POST', `/web/api/apps/${encodeURIComponent(app)}/launch`, { state });
    // Replace: going back must not land on a spent launch.
    location.replace(r.redirect);
  } catch (e) {
    show(view, el('p', { id: 'launch-error', class: 'error', role: 'alert' },
      `Cannot open ${app}: ${e.message}`));
  }
}

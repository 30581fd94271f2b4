// The launch page of a web application (`/web/launch/NAME?state=S`): the application's host
// sent the browser here with its state; the page asks the proxy for a one-time code for this
// user, application and state, then goes to the application's callback with it. A refusal
// (no role grants the application, a lock) is shown here, with the reason. Under a role's
// require_session_mfa the proxy first answers with a challenge for this application (`mfa`):
// the page asks the security key and posts again with its assertion.
import { api } from '/web/assets/api.js';
import { el, show } from '/web/assets/dom.js';
import { getAssertion } from '/web/assets/webauthn.js';

/** Launches application `app` in `view`. */
export async function launchPage(view, app) {
  const state = new URLSearchParams(location.search).get('state') || '';
  show(view, el('p', { id: 'launch-status', class: 'muted' }, `Opening ${app}…`));
  const path = `/web/api/apps/${encodeURIComponent(app)}/launch`;
  try {
    let r = await api('POST', path, { state });
    if (r.mfa) {
      show(view, el('p', { id: 'launch-status', class: 'muted' },
        `A role requires a security key tap for each session (${r.target}): touch your key…`));
      let webauthn;
      try {
        webauthn = await getAssertion(r.mfa);
      } catch (e) {
        throw new Error(`per-session MFA: the browser gave no assertion: ${e.name || ''} ${e.message}`);
      }
      r = await api('POST', path, { state, webauthn });
    }
    // Replace: going back must not land on a spent launch.
    location.replace(r.redirect);
  } catch (e) {
    show(view, el('p', { id: 'launch-error', class: 'error', role: 'alert' },
      `Cannot open ${app}: ${e.message}`));
  }
}

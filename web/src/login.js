// The login page: user name, password and one-time code (or a security key), checked by Auth
// like `hop login`; and a button per SSO connector, which starts the browser flow (`hop login
// --auth` in a browser).
import { login, loginPasskey } from '/web/assets/api.js';
import { el, show } from '/web/assets/dom.js';
import { loginAssertion, passkeyAssertion, webauthnAvailable } from '/web/assets/webauthn.js';

/** Shows the login form in `view`; calls `done(session)` once logged in. */
export function loginPage(view, done, notice = '') {
  const message = el('p', { id: 'login-error', class: 'error', role: 'alert' }, notice);
  const user = el('input', { id: 'user', name: 'user', autocomplete: 'username', required: '' });
  const password = el('input', {
    id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: '',
  });
  // Not required here: a cluster whose second_factor is off asks for none, and Auth says
  // clearly when one is missing.
  const otp = el('input', {
    id: 'otp', name: 'otp', inputmode: 'numeric', autocomplete: 'one-time-code',
  });
  const submit = el('button', { id: 'login-submit', type: 'submit' }, 'Log in');
  // Password + security key: the key answers a challenge for this user, then both go to login.
  const withKey = el('button', { id: 'login-webauthn', type: 'button' }, 'Log in with a security key');
  withKey.hidden = true;
  withKey.addEventListener('click', async () => {
    if (!form.reportValidity()) return;
    withKey.disabled = true;
    message.textContent = '';
    try {
      const assertion = await loginAssertion(user.value);
      done(await login(user.value, password.value, '', assertion));
    } catch (e) {
      message.textContent = e.message;
    } finally {
      withKey.disabled = false;
    }
  });
  // A passkey alone (with its PIN or biometric): no user name, no password.
  const passkey = el('button', { id: 'login-passkey', type: 'button' }, 'Sign in with a passkey');
  passkey.hidden = true;
  passkey.addEventListener('click', async () => {
    passkey.disabled = true;
    message.textContent = '';
    try {
      done(await loginPasskey(await passkeyAssertion()));
    } catch (e) {
      message.textContent = e.message;
    } finally {
      passkey.disabled = false;
    }
  });
  const form = el('form', { id: 'login', class: 'card' },
    el('h1', {}, 'Log in to Hop'),
    el('label', { for: 'user' }, 'User name'), user,
    el('label', { for: 'password' }, 'Password'), password,
    el('label', { for: 'otp' }, 'One-time code'), otp,
    submit, withKey, passkey, message);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    message.textContent = '';
    try {
      done(await login(user.value, password.value, otp.value.trim()));
    } catch (e) {
      message.textContent = e.message;
    } finally {
      submit.disabled = false;
    }
  });
  // The key buttons only where the cluster takes keys (second_factor on, optional, webauthn).
  if (webauthnAvailable()) {
    fetch('/webapi/ping', { cache: 'no-store' }).then((r) => r.json()).then((p) => {
      const keys = ['on', 'optional', 'webauthn'].includes(p.auth && p.auth.second_factor);
      withKey.hidden = !keys;
      passkey.hidden = !keys;
    }).catch(() => {});
  }
  show(view, form);
  user.focus();
  ssoButtons(form);
}

/** Adds a button per SSO connector under the form; each starts the browser flow at the proxy. */
async function ssoButtons(form) {
  let list = [];
  try {
    const res = await fetch('/web/api/sso/connectors', { credentials: 'same-origin', cache: 'no-store' });
    if (res.ok) list = (await res.json()).connectors || [];
  } catch (_) {
    return;
  }
  if (!list.length) return;
  const links = list.map((c) => el('a', {
    id: `sso-${c.name}`,
    class: 'button sso',
    href: `/v1/webapi/${['github', 'saml'].includes(c.type) ? c.type : 'oidc'}/login?connector=${encodeURIComponent(c.name)}`,
  }, `Log in with ${c.display || c.name}`));
  form.append(el('div', { id: 'sso', class: 'sso' }, el('p', {}, 'Or use single sign-on:'), links));
}

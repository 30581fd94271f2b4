// The account page (every user): change the password (old password and a one-time code), and
// the one-time-code devices: list, add one (a fresh secret shown once, confirmed with its first
// code, the password and a code from a device already there), remove one (the password and a
// code from a device, or a key's tap; never the last: the server refuses); and security keys
// where the cluster takes them (second_factor on or optional).
import { api } from '/web/assets/api.js';
import { el, show } from '/web/assets/dom.js';
import { enrollBox } from '/web/assets/enroll.js';
import { createCredential, proofAssertion, webauthnAvailable } from '/web/assets/webauthn.js';

const input = (id, label, attrs = {}) => [el('label', { for: id }, label), el('input', { id, required: '', ...attrs })];

function passwordForm() {
  const message = el('p', { id: 'password-message', role: 'alert' });
  const form = el('form', { id: 'password-form', class: 'card left' },
    el('h2', {}, 'Change password'),
    input('old-password', 'Current password', { type: 'password', autocomplete: 'current-password' }),
    input('password-otp', 'One-time code', { inputmode: 'numeric', autocomplete: 'one-time-code' }),
    input('new-password', 'New password', { type: 'password', autocomplete: 'new-password' }),
    el('button', { id: 'password-submit', type: 'submit' }, 'Change password'), message);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const v = (id) => document.getElementById(id).value;
    message.className = '';
    try {
      await api('POST', '/web/api/account/password',
        { old_password: v('old-password'), otp: v('password-otp').trim(), new_password: v('new-password') });
      message.textContent = 'Your password has been changed.';
      form.reset();
    } catch (e) {
      message.className = 'error';
      message.textContent = e.message;
    }
  });
  return form;
}

function devicesBox(view, devices, hasKeys) {
  const message = el('p', { id: 'devices-message', role: 'alert' });
  const fail = (e) => { message.className = 'error'; message.textContent = e.message; };
  const password = el('input', { id: 'device-password', type: 'password', 'aria-label': 'Current password', placeholder: 'Current password' });
  const proofCode = el('input', {
    id: 'device-proof-code', inputmode: 'numeric', 'aria-label': 'A code from a device you keep',
    placeholder: hasKeys ? 'Code (blank: tap a key)' : 'Code from a device you keep',
  });
  const rows = devices.map((d) => el('tr', { class: 'device', 'data-id': d.id },
    el('td', { class: 'name' }, d.name), el('td', {}, d.added || '-'),
    el('td', {}, el('button', { type: 'button', class: 'remove', onclick: async () => {
      try {
        const body = { password: password.value, existing_code: proofCode.value.trim() };
        // No code: a tap on a security key proves a device is at hand.
        if (!body.existing_code && hasKeys) body.proof = await proofAssertion();
        await api('POST', `/web/api/account/devices/${encodeURIComponent(d.id)}/remove`, body);
        await accountPage(view);
      } catch (e) { fail(e); }
    } }, 'Remove'))));
  const adding = el('div', { id: 'device-new' });
  const start = el('button', { id: 'device-add', type: 'button', onclick: async () => {
    try {
      const e = await api('POST', '/web/api/account/devices/enroll', {});
      const name = el('input', { id: 'device-name', placeholder: 'phone', 'aria-label': 'Device name' });
      const code = el('input', { id: 'device-code', inputmode: 'numeric', 'aria-label': 'Its first code', placeholder: 'Its first code' });
      const existing = el('input', {
        id: 'device-existing-code', inputmode: 'numeric', 'aria-label': 'A code from a device you already have',
        placeholder: 'Code from a device you have',
      });
      const form = el('form', { id: 'device-form', class: 'inline' }, name, code, existing,
        el('button', { id: 'device-submit', type: 'submit' }, 'Add device'));
      form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        try {
          const body = {
            password: password.value, existing_code: existing.value.trim(),
            name: name.value, secret: e.secret, code: code.value.trim(),
          };
          // No code: a tap on a security key proves a device is at hand.
          if (!body.existing_code && hasKeys) body.proof = await proofAssertion();
          await api('POST', '/web/api/account/devices', body);
          await accountPage(view);
          document.getElementById('devices-message').textContent = `Device ${name.value} added.`;
        } catch (err) { fail(err); }
      });
      adding.replaceChildren(el('p', {}, 'Scan this with your authenticator app, then enter its first code and a code from a device you already have:'),
        enrollBox(e), form);
    } catch (err) { fail(err); }
  } }, 'Add a device');
  return el('section', { id: 'devices-section' },
    el('h2', {}, 'One-time-code devices'),
    el('p', { class: 'muted' }, 'Adding or removing a device needs your current password and a code from a device you keep (or a tap on a security key):'),
    password, proofCode,
    el('table', { id: 'devices' }, el('tbody', {}, rows)), start, adding, message);
}

// Security keys: list, add (navigator.credentials.create with Auth's options), remove. Both
// changes need the current password and a fresh proof: a code from a one-time-code device, or
// (when the code box is empty and the user has a key) a tap on one of the keys.
function keysBox(view, keys) {
  const message = el('p', { id: 'keys-message', role: 'alert' });
  const fail = (e) => { message.className = 'error'; message.textContent = e.message; };
  const password = el('input', { id: 'key-password', type: 'password', 'aria-label': 'Current password', placeholder: 'Current password' });
  const code = el('input', {
    id: 'key-existing-code', inputmode: 'numeric', 'aria-label': 'A code from a device you already have',
    placeholder: 'Code (blank: tap a key)',
  });
  const reauth = async () => {
    const body = { password: password.value, existing_code: code.value.trim() };
    if (!body.existing_code && keys.length > 0) body.proof = await proofAssertion();
    return body;
  };
  const rows = keys.map((k) => el('tr', { class: 'key', 'data-id': k.id },
    el('td', { class: 'name' }, k.name), el('td', {}, k.added), el('td', {}, k.last_used || 'never'),
    el('td', {}, el('button', { type: 'button', class: 'remove', onclick: async () => {
      try {
        await api('POST', `/web/api/account/webauthn/${encodeURIComponent(k.id)}/remove`, await reauth());
        await accountPage(view);
      } catch (e) { fail(e); }
    } }, 'Remove'))));
  const name = el('input', { id: 'key-name', placeholder: 'yubikey', 'aria-label': 'Key name' });
  const add = el('button', { id: 'key-add', type: 'button', onclick: async () => {
    try {
      const body = await reauth();
      const options = await api('POST', '/web/api/account/webauthn/register', {});
      const response = await createCredential(options);
      await api('POST', '/web/api/account/webauthn', { ...body, name: name.value, response });
      await accountPage(view);
      document.getElementById('keys-message').textContent = `Security key ${name.value} added.`;
    } catch (e) { fail(e); }
  } }, 'Add a security key');
  add.disabled = !webauthnAvailable();
  return el('section', { id: 'keys-section' },
    el('h2', {}, 'Security keys'),
    el('p', { class: 'muted' }, 'Adding or removing a key needs your current password and a code from a device you have, or a tap on a key:'),
    password, code,
    el('table', { id: 'keys' }, el('tbody', {}, rows)), name, add, message);
}

/** Shows the account page in `view`. */
export async function accountPage(view) {
  const a = await api('GET', '/web/api/account');
  const k = await api('GET', '/web/api/account/webauthn');
  const parts = [el('h1', {}, `Account: ${a.user}`), passwordForm(), devicesBox(view, a.devices, k.keys.length > 0)];
  if (k.enabled) parts.push(keysBox(view, k.keys));
  show(view, ...parts);
}

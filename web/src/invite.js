// The invitation page (`/web/invite/TOKEN`, no session needed): whose invitation it is, a new
// password (twice) and a one-time-code device (a fresh secret shown once, confirmed with its
// first code). Completing it uses the invitation up; the user then logs in.
import { api } from '/web/assets/api.js';
import { el, show } from '/web/assets/dom.js';
import { enrollBox } from '/web/assets/enroll.js';

/** Shows the invitation page for `token` in `view`. */
export async function invitePage(view, token) {
  let invite;
  try {
    invite = await api('POST', '/web/api/invite/check', { token });
  } catch (e) {
    show(view, el('div', { class: 'card' }, el('h1', {}, 'Invitation'),
      el('p', { id: 'invite-error', class: 'error', role: 'alert' }, e.message)));
    return;
  }
  const message = el('p', { id: 'invite-error', class: 'error', role: 'alert' });
  const password = el('input', { id: 'invite-password', type: 'password', autocomplete: 'new-password', required: '' });
  const again = el('input', { id: 'invite-password2', type: 'password', autocomplete: 'new-password', required: '' });
  const code = el('input', { id: 'invite-otp', inputmode: 'numeric', autocomplete: 'one-time-code' });
  const submit = el('button', { id: 'invite-submit', type: 'submit' }, invite.reset ? 'Reset my password' : 'Sign up');
  const form = el('form', { id: 'invite-form', class: 'card' },
    el('h1', {}, `${invite.reset ? 'Reset' : 'Welcome'}, ${invite.user}`),
    el('p', { class: 'muted' }, `This link is valid until ${invite.expires}.`),
    el('label', { for: 'invite-password' }, 'New password'), password,
    el('label', { for: 'invite-password2' }, 'Repeat it'), again,
    invite.second_factor_required ? [
      el('p', {}, 'Scan this with your authenticator app, then enter its first code:'),
      enrollBox(invite.enrollment),
      el('label', { for: 'invite-otp' }, 'One-time code'), code] : null,
    submit, message);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    message.textContent = '';
    if (password.value !== again.value) {
      message.textContent = 'The passwords do not match.';
      return;
    }
    submit.disabled = true;
    try {
      const done = await api('POST', '/web/api/invite/complete', {
        token, password: password.value, otp: code.value.trim(),
        secret: invite.second_factor_required ? invite.enrollment.secret : '',
      });
      show(view, el('div', { id: 'invite-done', class: 'card' }, el('h1', {}, 'All set'),
        el('p', {}, `You can now log in as ${done.user}.`),
        el('a', { id: 'invite-login', href: '/web/login' }, 'Log in')));
    } catch (e) {
      message.textContent = e.message;
    } finally {
      submit.disabled = false;
    }
  });
  show(view, form);
  password.focus();
}

// The access requests page: the user's own requests and those they may review (Auth decides
// which), a form to request roles with a reason, and Approve/Deny with a reason on the others'
// pending requests. An approved request is used with `hop login --request-id ID`.
import { api } from '/web/assets/api.js';
import { el, show } from '/web/assets/dom.js';

function reviews(r) {
  return r.reviews.map((v) => `${v.author}: ${v.approve ? 'approved' : 'denied'}${v.reason ? ` (${v.reason})` : ''}`).join('; ');
}

function reviewCell(view, r, message) {
  if (r.mine || r.state !== 'pending') return el('td', {});
  const why = el('input', { class: 'review-reason', placeholder: 'Reason', 'aria-label': 'Review reason' });
  const send = (approve) => async () => {
    try {
      await api('POST', `/web/api/requests/${encodeURIComponent(r.id)}/review`, { approve, reason: why.value });
      await requestsPage(view);
    } catch (e) {
      message.textContent = e.message;
    }
  };
  return el('td', {}, why,
    el('button', { type: 'button', class: 'approve', onclick: send(true) }, 'Approve'),
    el('button', { type: 'button', class: 'deny', onclick: send(false) }, 'Deny'));
}

/** Shows the access requests page in `view`. */
export async function requestsPage(view) {
  const message = el('p', { id: 'requests-error', class: 'error', role: 'alert' });
  const { requests } = await api('GET', '/web/api/requests');
  const rows = requests.map((r) => el('tr', { class: 'request', 'data-id': r.id, 'data-state': r.state },
    el('td', { class: 'requester' }, r.user),
    el('td', { class: 'roles' }, r.roles.join(', ')),
    el('td', { class: 'reason' }, r.reason),
    el('td', { class: 'state' }, r.state),
    el('td', {}, r.expires),
    el('td', { class: 'reviews' }, reviews(r)),
    el('td', { class: 'id' }, el('code', {}, r.id)),
    reviewCell(view, r, message)));
  const roles = el('input', { id: 'request-roles', required: '', placeholder: 'role, role', 'aria-label': 'Roles' });
  const reason = el('input', { id: 'request-reason', placeholder: 'Why', 'aria-label': 'Reason' });
  const form = el('form', { id: 'new-request', class: 'inline' }, roles, reason,
    el('button', { id: 'new-request-submit', type: 'submit' }, 'Request'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const made = await api('POST', '/web/api/requests',
        { roles: roles.value.split(',').map((s) => s.trim()).filter(Boolean), reason: reason.value });
      await requestsPage(view);
      message.textContent = `Requested: use it with hop login --request-id ${made.id} once approved.`;
    } catch (e) {
      message.textContent = e.message;
    }
  });
  show(view, el('h1', {}, 'Access requests'), form, message,
    el('table', { id: 'requests' },
      el('thead', {}, el('tr', {}, ['Requester', 'Roles', 'Reason', 'State', 'Expires', 'Reviews', 'Id', ''].map((h) => el('th', {}, h)))),
      el('tbody', {}, rows)));
}

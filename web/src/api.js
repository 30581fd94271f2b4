// The web API as the pages use it: JSON over fetch with the session cookie (HttpOnly, so never
// visible here), and the session's CSRF token on every state-changing request.

let csrf = '';
const ended = new Set();

/** Called with the server's message when the web session has ended (logout, lock, expiry). */
export function onSessionEnded(fn) {
  ended.add(fn);
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body.error || `HTTP ${status}`);
    this.status = status;
    this.code = body.code || '';
    this.body = body;
  }
}

async function call(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    if (csrf) headers['X-Hop-Csrf'] = csrf;
  }
  const res = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const data = text ? JSON.parse(text) : {};
  if (!res.ok) {
    const err = new ApiError(res.status, data);
    // A session the page had ended: tell the page why (a first visit has none to lose).
    if (res.status === 401 && csrf && path !== '/web/api/login') {
      csrf = '';
      for (const fn of ended) fn(err.message);
    }
    throw err;
  }
  return data;
}

/** The current web session, or null when there is none. */
export async function currentSession() {
  try {
    const s = await call('GET', '/web/api/session');
    csrf = s.csrf_token;
    return s;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return null;
    throw e;
  }
}

export async function login(user, password, otp, webauthn) {
  const body = webauthn ? { user, password, webauthn } : { user, password, otp };
  const s = await call('POST', '/web/api/login', body);
  csrf = s.csrf_token;
  return s;
}

/** A passwordless login with a passkey's assertion (see webauthn.js). */
export async function loginPasskey(assertion) {
  const s = await call('POST', '/web/api/login/passkey/finish', assertion);
  csrf = s.csrf_token;
  return s;
}

/** Ends the web session; throws (keeping the CSRF token for a retry) when the proxy did not. */
export async function logout() {
  await call('POST', '/web/api/logout', {});
  csrf = '';
}

export const resources = () => call('GET', '/web/api/resources');

/** Any web API call (the editor and account pages): JSON in, JSON out, errors as ApiError. */
export const api = (method, path, body) => call(method, path, body);
/** The session's CSRF token (the web terminal offers it as a WebSocket subprotocol). */
export const csrfToken = () => csrf;

export const activeSessions = () => call('GET', '/web/api/sessions');
// Recordings and the audit log (read-only; the server decides what this user may see).
const query = (params) => {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '' && v != null));
  const s = q.toString();
  return s ? `?${s}` : '';
};
export const recordings = () => call('GET', '/web/api/recordings');
export const recording = (id) => call('GET', `/web/api/recordings/${encodeURIComponent(id)}`);
export const recordingEvents = (id, from) =>
  call('GET', `/web/api/recordings/${encodeURIComponent(id)}/events${query({ from })}`);
export const auditSearch = (params) => call('GET', `/web/api/audit${query(params)}`);

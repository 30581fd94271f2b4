// Security keys (WebAuthn) in the browser: the options Auth sends carry binary fields as
// base64url strings; navigator.credentials wants ArrayBuffers, and its answers go back as
// base64url again. No key material is ever seen here: the authenticator signs.
import { api } from '/web/assets/api.js';

/** base64url (no padding) -> ArrayBuffer. */
export function fromB64url(s) {
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4);
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i += 1) out[i] = bin.charCodeAt(i);
  return out.buffer;
}

/** ArrayBuffer -> base64url (no padding). */
export function toB64url(buf) {
  const bytes = new Uint8Array(buf);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

const creds = (list) => (list || []).map((c) => ({ ...c, id: fromB64url(c.id) }));

/** Whether this browser can use security keys here (a secure context with WebAuthn). */
export const webauthnAvailable = () => window.isSecureContext && !!window.PublicKeyCredential;

/** Runs navigator.credentials.get with Auth's request options; the assertion as the API takes it. */
export async function getAssertion(options) {
  const pk = options.publicKey;
  const cred = await navigator.credentials.get({
    publicKey: {
      ...pk,
      challenge: fromB64url(pk.challenge),
      allowCredentials: creds(pk.allowCredentials),
    },
  });
  if (!cred) throw new Error('the security key gave no answer');
  const out = {
    credential_id: toB64url(cred.rawId),
    client_data_json: toB64url(cred.response.clientDataJSON),
    authenticator_data: toB64url(cred.response.authenticatorData),
    signature: toB64url(cred.response.signature),
  };
  if (cred.response.userHandle) out.user_handle = toB64url(cred.response.userHandle);
  return out;
}

/** Runs navigator.credentials.create with Auth's creation options; the answer as the API takes it. */
export async function createCredential(options) {
  const pk = options.publicKey;
  const cred = await navigator.credentials.create({
    publicKey: {
      ...pk,
      challenge: fromB64url(pk.challenge),
      user: { ...pk.user, id: fromB64url(pk.user.id) },
      excludeCredentials: creds(pk.excludeCredentials),
    },
  });
  if (!cred) throw new Error('the security key gave no answer');
  return {
    client_data_json: toB64url(cred.response.clientDataJSON),
    attestation_object: toB64url(cred.response.attestationObject),
  };
}

/** A login assertion for `user` (the challenge first, then the key). */
export async function loginAssertion(user) {
  return getAssertion(await api('POST', '/web/api/login/webauthn', { user }));
}

/** An assertion proving one of the user's keys is at hand, for an account change. */
export async function proofAssertion() {
  return getAssertion(await api('POST', '/web/api/account/webauthn/challenge', {}));
}

/** A passwordless login with a passkey: a challenge for no user, the passkey names its user. */
export async function passkeyAssertion() {
  const a = await getAssertion(await api('POST', '/web/api/login/passkey', {}));
  if (!a.user_handle) throw new Error('this security key holds no passkey for Hop: log in with your password');
  return a;
}

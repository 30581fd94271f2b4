// Drives headless Chromium through Hop's web application flow (appliance/tests/it/apps_http_browser.rs):
// an application at https://NAME.DOMAIN:PORT with no session goes through the web UI's login and
// the launch, and lands back on the application with a host-only cookie.
//   node app_flow.mjs PROXY_URL ARTIFACT_DIR
// PROXY_URL is https://DOMAIN:PORT; DOMAIN and every NAME.DOMAIN resolve to loopback here.
import { launch, serve, virtualAuthenticator } from './harness.mjs';
import { join } from 'node:path';

const [base, artifacts] = process.argv.slice(2);
const domain = new URL(base).hostname;
const browser = await launch([`--host-resolver-rules=MAP ${domain} 127.0.0.1, MAP *.${domain} 127.0.0.1`]);
// One context per user (its own cookies), made on first use.
const contexts = new Map();

async function pageOf(who) {
  if (!contexts.has(who)) {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    contexts.set(who, { context, page, statuses: [] });
    page.on('response', (r) => contexts.get(who).statuses.push({ url: r.url(), status: r.status() }));
  }
  return contexts.get(who);
}

const bodyText = (page) => page.evaluate(() => document.body ? document.body.innerText : '');

const commands = {
  // Navigates to `url`; answers where the browser ended up, the last status and the page's text.
  async open({ who, url }) {
    const { page } = await pageOf(who);
    const res = await page.goto(url, { timeout: 20000 });
    await page.waitForLoadState('load');
    return { url: page.url(), status: res ? res.status() : 0, text: await bodyText(page) };
  },
  // Fills the web UI's login form, then waits until the browser is back on `until` (an origin).
  async login({ who, user, password, otp, until }) {
    const { page } = await pageOf(who);
    await page.waitForSelector('form#login', { timeout: 15000 });
    await page.fill('#user', user);
    await page.fill('#password', password);
    await page.fill('#otp', otp);
    await page.click('#login-submit');
    try {
      await page.waitForURL((u) => u.origin === until, { timeout: 20000 });
      await page.waitForLoadState('load');
    } catch (e) {
      return { url: page.url(), landed: false, text: await bodyText(page) };
    }
    return { url: page.url(), landed: true, text: await bodyText(page) };
  },
  // Per-session MFA (mfa_apps.rs): a virtual authenticator holding the credential `cred` the
  // CLI's software key registered (its fields as that key's file keeps them, base64url).
  async key({ who, cred }) {
    const { page } = await pageOf(who);
    const { cdp, authenticatorId } = await virtualAuthenticator(page);
    const std = (s) => Buffer.from(s, 'base64url').toString('base64');
    await cdp.send('WebAuthn.addCredential', { authenticatorId, credential: {
      credentialId: std(cred.credential_id), isResidentCredential: false, rpId: cred.rp_id,
      privateKey: std(cred.pkcs8), signCount: cred.counter } });
    return {};
  },
  // The web UI's login with the password and the security key, then back on `until`.
  async loginKey({ who, user, password, until }) {
    const { page } = await pageOf(who);
    await page.waitForSelector('form#login', { timeout: 15000 });
    await page.fill('#user', user);
    await page.fill('#password', password);
    await page.click('#login-webauthn');
    try {
      await page.waitForURL((u) => u.origin === until, { timeout: 20000 });
      await page.waitForLoadState('load');
    } catch (e) {
      return { url: page.url(), landed: false, text: await bodyText(page) };
    }
    return { url: page.url(), landed: true, text: await bodyText(page) };
  },
  async cookies({ who, url }) {
    const { context } = await pageOf(who);
    return { cookies: await context.cookies(url ? [url] : undefined) };
  },
  // From the page (on the application's origin): a WebSocket to `url`, each message sent and
  // its echo awaited.
  async ws({ who, url, messages }) {
    const { page } = await pageOf(who);
    return page.evaluate(async ({ url, messages }) => {
      const ws = new WebSocket(url);
      await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = () => fail(new Error('WebSocket failed to open')); });
      const echoes = [];
      for (const m of messages) {
        const got = new Promise((ok) => { ws.onmessage = (e) => ok(e.data); });
        ws.send(m);
        echoes.push(await got);
      }
      ws.close();
      return { echoes };
    }, { url, messages });
  },
  async statuses({ who }) {
    return { statuses: (await pageOf(who)).statuses };
  },
  async screenshot({ who, name }) {
    const { page } = await pageOf(who);
    const path = join(artifacts, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    return { path };
  },
};

await serve(browser, commands);

// Drives Debian's headless Chromium for the editor and account pages' end-to-end test
// (appliance/tests/it/web_admin.rs) through playwright-core, as driver.mjs does for web.rs: one
// JSON command per input line, one JSON answer per output line. The commands are small and
// generic (open, fill, click, read) so that the Rust test states each step.
//   node admin.mjs BASE_URL ARTIFACT_DIR
import { launch, serve, virtualAuthenticator } from './harness.mjs';
import { join } from 'node:path';

const [base, artifacts] = process.argv.slice(2);
const browser = await launch();
const contexts = new Map();
const errors = [];
const WAIT = 15000;

async function pageOf(who) {
  if (!contexts.has(who)) {
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 800 } });
    const page = await context.newPage();
    page.on('pageerror', (e) => errors.push(`${who}: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(`${who}: console: ${m.text()}`); });
    contexts.set(who, { context, page });
  }
  return contexts.get(who).page;
}

const commands = {
  // Opens `path` and waits for `wait` (a selector).
  async open({ who, path, wait }) {
    const page = await pageOf(who);
    await page.goto(base + path);
    try {
      await page.waitForSelector(wait, { timeout: WAIT });
    } catch (e) {
      const shown = await page.content().catch((x) => String(x));
      throw new Error(`${e.message}; the page shows: ${shown}; errors: ${errors.join(' | ')}`);
    }
    return { url: page.url() };
  },
  async login({ who, user, password, otp }) {
    const page = await pageOf(who);
    await page.goto(`${base}/web/login`);
    await page.waitForSelector('form#login', { timeout: WAIT });
    await page.fill('#user', user);
    await page.fill('#password', password);
    await page.fill('#otp', otp);
    await page.click('#login-submit');
    await page.waitForFunction(() => document.querySelector('#nodes')
      || document.querySelector('#login-error')?.textContent, null, { timeout: WAIT });
    const error = await page.locator('#login-error').count() ? await page.locator('#login-error').innerText() : '';
    return { error, who: await page.locator('#who').innerText() };
  },
  async fill({ who, sel, value }) {
    const page = await pageOf(who);
    await page.fill(sel, value, { timeout: WAIT });
    return {};
  },
  async select({ who, sel, value }) {
    const page = await pageOf(who);
    await page.selectOption(sel, value, { timeout: WAIT });
    return {};
  },
  // Clicks `sel`, then waits for `wait` (a selector), if given.
  async click({ who, sel, wait }) {
    const page = await pageOf(who);
    await page.click(sel, { timeout: WAIT });
    if (wait) await page.waitForSelector(wait, { timeout: WAIT });
    return {};
  },
  // Waits until `sel`'s text contains `has`; answers its text.
  async text({ who, sel, has }) {
    const page = await pageOf(who);
    const loc = page.locator(sel).first();
    if (has !== undefined) {
      await page.waitForFunction(({ sel, has }) => document.querySelector(sel)?.textContent.includes(has),
        { sel, has }, { timeout: WAIT });
    }
    return { text: await loc.textContent({ timeout: WAIT }) };
  },
  // Every element matching `sel`: its text, tags below it, data attributes, visibility.
  async all({ who, sel }) {
    const page = await pageOf(who);
    const items = await page.$$eval(sel, (es) => es.map((e) => ({
      text: e.textContent,
      data: { ...e.dataset },
      hidden: e.hidden || e.offsetParent === null,
      elements: [...e.querySelectorAll('*')].map((c) => c.tagName.toLowerCase()),
    })));
    return { items, xss: await page.evaluate(() => window.__xss ?? null) };
  },
  // Waits until no element matches `sel`.
  async gone({ who, sel }) {
    const page = await pageOf(who);
    await page.waitForSelector(sel, { state: 'detached', timeout: WAIT });
    return {};
  },
  // Gives `who`'s page a CDP virtual authenticator (CTAP2 security key that is always touched,
  // with user verification), as web_webauthn.rs needs; answers its id.
  async authenticator({ who }) {
    const page = await pageOf(who);
    const { cdp, authenticatorId } = await virtualAuthenticator(page);
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    return { authenticatorId, credentials: credentials.length };
  },
  // Logs in on the login page with a password and the security key (the page's own button).
  async loginKey({ who, user, password }) {
    const page = await pageOf(who);
    await page.context().clearCookies();
    await page.goto(`${base}/web/login`);
    await page.waitForSelector('form#login', { timeout: WAIT });
    await page.fill('#user', user);
    await page.fill('#password', password);
    await page.click('#login-webauthn');
    await page.waitForFunction(() => document.querySelector('#nodes')
      || document.querySelector('#login-error')?.textContent, null, { timeout: WAIT });
    const error = await page.locator('#login-error').count() ? await page.locator('#login-error').innerText() : '';
    return { error };
  },
  // Logs in with a passkey alone (no user name, no password): the page's passkey button.
  async loginPasskey({ who }) {
    const page = await pageOf(who);
    await page.context().clearCookies();
    await page.goto(`${base}/web/login`);
    await page.waitForSelector('form#login', { timeout: WAIT });
    await page.click('#login-passkey');
    await page.waitForFunction(() => document.querySelector('#nodes')
      || document.querySelector('#login-error')?.textContent, null, { timeout: WAIT });
    const error = await page.locator('#login-error').count() ? await page.locator('#login-error').innerText() : '';
    return { error, who: error ? '' : await page.locator('#who').innerText() };
  },
  async screenshot({ who, name }) {
    const page = await pageOf(who);
    const path = join(artifacts, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    return { path };
  },
  async errors() {
    return { errors };
  },
};

await serve(browser, commands);

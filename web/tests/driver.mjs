// Drives Debian's headless Chromium for the web UI's end-to-end tests (appliance/tests/it/web.rs)
// through playwright-core (no browser download: executablePath is the system's Chromium).
//
// A line-oriented protocol on stdin/stdout, so the Rust test stays in charge of the cluster
// between steps: each input line is a JSON command, each output line its JSON answer.
//   node driver.mjs BASE_URL ARTIFACT_DIR
import { launch, serve } from './harness.mjs';
import { join } from 'node:path';

const [base, artifacts] = process.argv.slice(2);
const browser = await launch();
// One context per user (its own cookies), made on first use.
const contexts = new Map();
const errors = [];

async function pageOf(who) {
  if (!contexts.has(who)) {
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 700 } });
    const page = await context.newPage();
    page.on('pageerror', (e) => errors.push(`${who}: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(`${who}: console: ${m.text()}`); });
    contexts.set(who, { context, page });
  }
  return contexts.get(who);
}

const visibleText = (page, sel) => page.locator(sel).innerText({ timeout: 10000 });

async function rows(page) {
  return page.$$eval('tr.resource', (trs) => trs.map((tr) => ({
    kind: tr.dataset.kind,
    name: tr.dataset.name,
    hidden: tr.hidden,
    text: tr.innerText,
    elements: [...tr.querySelectorAll('*')].map((e) => e.tagName.toLowerCase()),
  })));
}

const commands = {
  async open({ who, path }) {
    const { page } = await pageOf(who);
    await page.goto(base + path);
    await page.waitForSelector('form#login, tr.resource, #nodes', { timeout: 15000 });
    return { url: page.url() };
  },
  async login({ who, user, password, otp }) {
    const { page } = await pageOf(who);
    await page.fill('#user', user);
    await page.fill('#password', password);
    await page.fill('#otp', otp);
    await page.click('#login-submit');
    await page.waitForFunction(() => document.querySelector('#nodes, #launch-error')
      || document.querySelector('#login-error')?.textContent, null, { timeout: 15000 });
    const error = await page.locator('#login-error').count() ? await visibleText(page, '#login-error') : '';
    return { url: page.url(), error, who: await page.locator('#who').innerText() };
  },
  // Reloads the resources page until every name in `want` is listed (agents connect in the
  // background), then answers the rows.
  async resources({ who, want }) {
    const { page } = await pageOf(who);
    for (let i = 0; i < 60; i++) {
      await page.goto(`${base}/web/resources`);
      await page.waitForSelector('#nodes', { timeout: 15000 });
      const names = (await rows(page)).map((r) => r.name);
      if (want.every((w) => names.includes(w))) break;
      await page.waitForTimeout(500);
    }
    return { rows: await rows(page), xss: await page.evaluate(() => window.__xss ?? null) };
  },
  async search({ who, q }) {
    const { page } = await pageOf(who);
    await page.fill('#search', q);
    return { rows: await rows(page) };
  },
  async screenshot({ who, name }) {
    const { page } = await pageOf(who);
    const path = join(artifacts, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    return { path };
  },
  async cookies({ who }) {
    const { context, page } = await pageOf(who);
    return { cookies: await context.cookies(), script_sees: await page.evaluate(() => document.cookie) };
  },
  // A request from the page's own origin, as a script on the page could make it.
  async fetch({ who, method, path, csrf }) {
    const { page } = await pageOf(who);
    return page.evaluate(async ({ method, path, csrf }) => {
      const headers = { 'Content-Type': 'application/json' };
      if (csrf) headers['X-Hop-Csrf'] = csrf;
      const res = await fetch(path, { method, headers, credentials: 'same-origin',
        body: method === 'GET' ? undefined : '{}' });
      return { status: res.status, body: await res.text() };
    }, { method, path, csrf });
  },
  async logout({ who }) {
    const { page } = await pageOf(who);
    await page.click('#logout');
    await page.waitForSelector('form#login', { timeout: 10000 });
    return { notice: await visibleText(page, '#login-error') };
  },
  // Waits until the page shows the login form again (its session ended), at most `ms`.
  async wait_login({ who, ms }) {
    const { page } = await pageOf(who);
    const t0 = Date.now();
    await page.waitForSelector('form#login', { timeout: ms });
    return { after_ms: Date.now() - t0, notice: await visibleText(page, '#login-error') };
  },
  // The text of the element `sel` once it is shown (at most 10 s).
  async text({ who, sel }) {
    const { page } = await pageOf(who);
    return { text: await visibleText(page, sel), url: page.url() };
  },
  // The login page's SSO button for `connector`, then the identity provider's own pages
  // (oidc-provider's dev login and consent: any password) until the browser is back on Hop's
  // resources page; answers the buttons the page showed and who is logged in.
  async sso_login({ who, connector, login }) {
    const { page } = await pageOf(who);
    await page.goto(`${base}/web`);
    await page.waitForSelector(`#sso-${connector}`, { timeout: 15000 });
    const buttons = await page.$$eval('#sso a', (as) => as.map((a) => a.textContent));
    await page.click(`#sso-${connector}`);
    for (let i = 0; i < 5 && !page.url().startsWith(base); i++) {
      await page.waitForSelector('form button, form [type=submit]', { timeout: 15000 });
      if (await page.locator('input[name=login]').count()) {
        await page.fill('input[name=login]', login);
        await page.fill('input[name=password]', 'any');
      }
      await Promise.all([
        page.waitForNavigation({ timeout: 15000 }),
        page.click('form [type=submit], form button'),
      ]);
    }
    await page.waitForSelector('#nodes', { timeout: 15000 });
    return { buttons, url: page.url(), who: await page.locator('#who').innerText() };
  },
  async errors() {
    return { errors };
  },
};

await serve(browser, commands);

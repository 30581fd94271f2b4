// Drives Debian's headless Chromium for the web terminal's end-to-end test
// (appliance/tests/it/web_terminal.rs) through playwright-core, like driver.mjs: one JSON command
// per input line, one JSON answer per output line.
//   node terminal.mjs BASE_URL ARTIFACT_DIR
import { launch, serve, virtualAuthenticator } from './harness.mjs';
import { join } from 'node:path';

const [base, artifacts] = process.argv.slice(2);
const browser = await launch();
// One context per browser user (its own cookies), made on first use; the status frames each
// page's terminal sockets received.
const contexts = new Map();
const errors = [];

// `who` names a page: `t` is user t's first tab, `t#2` a second tab sharing its cookies.
async function pageOf(who) {
  if (!contexts.has(who)) {
    const user = who.split('#')[0];
    let context;
    if (user !== who) context = (await pageOf(user)).context;
    else context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1000, height: 640 } });
    const page = await context.newPage();
    const state = { context, page, frames: [] };
    page.on('pageerror', (e) => errors.push(`${who}: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(`${who}: console: ${m.text()}`); });
    page.on('websocket', (ws) => ws.on('framereceived', (f) => {
      if (typeof f.payload === 'string') state.frames.push(f.payload);
    }));
    contexts.set(who, state);
  }
  return contexts.get(who);
}

// The terminal's text, row by row (the DOM renderer's rows).
const screen = (page) => page.$$eval('#terminal .xterm-rows > div', (rows) => rows.map((r) => r.textContent).join('\n'));

async function statusOf(page) {
  return page.evaluate(() => ({
    status: document.querySelector('#terminal-status')?.textContent ?? '',
    ended: document.querySelector('#terminal')?.dataset.ended ?? '',
    login_notice: document.querySelector('#login-error')?.textContent ?? '',
    cols: Number(document.querySelector('#terminal')?.dataset.cols ?? 0),
    rows: Number(document.querySelector('#terminal')?.dataset.rows ?? 0),
  }));
}

const commands = {
  async login({ who, user, password, otp }) {
    const { page } = await pageOf(who);
    await page.goto(`${base}/web/login`);
    await page.waitForSelector('form#login', { timeout: 15000 });
    await page.fill('#user', user);
    await page.fill('#password', password);
    await page.fill('#otp', otp);
    await page.click('#login-submit');
    await page.waitForSelector('#nodes', { timeout: 15000 });
    return { who: await page.locator('#who').innerText() };
  },
  // The resources page until `node` is listed with its terminal links; then a click on the one
  // for `login`, and the terminal until the proxy says it is ready (or it ended).
  async connect({ who, node, login }) {
    const { page } = await pageOf(who);
    const link = `tr.resource[data-name="${node}"] a.connect[data-login="${login}"]`;
    for (let i = 0; i < 60; i++) {
      await page.goto(`${base}/web/resources`);
      await page.waitForSelector('#nodes', { timeout: 15000 });
      if (await page.locator(link).count()) break;
      await page.waitForTimeout(500);
    }
    await page.click(link);
    await page.waitForSelector('#terminal[data-ready], #terminal[data-ended]', { timeout: 20000 });
    return { url: page.url(), ...(await statusOf(page)) };
  },
  // Any page address (a terminal to a login the role does not allow, a join).
  async goto({ who, path, wait }) {
    const { page } = await pageOf(who);
    await page.goto(base + path);
    await page.waitForSelector(wait, { timeout: 20000 });
    return { url: page.url(), ...(await statusOf(page)) };
  },
  async type({ who, text }) {
    const { page } = await pageOf(who);
    await page.focus('#terminal .xterm-helper-textarea');
    await page.keyboard.type(text);
    await page.keyboard.press('Enter');
    return {};
  },
  // Puts `text` on the clipboard and pastes it with Ctrl+Shift+V, then Enter.
  async paste({ who, text }) {
    const { context, page } = await pageOf(who);
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
    await page.evaluate((t) => navigator.clipboard.writeText(t), text);
    await page.focus('#terminal .xterm-helper-textarea');
    await page.keyboard.press('Control+Shift+V');
    await page.waitForTimeout(200);
    await page.keyboard.press('Enter');
    return {};
  },
  // Waits until the terminal shows `want` (at most `ms`).
  async wait_text({ who, want, ms }) {
    const { page } = await pageOf(who);
    const t0 = Date.now();
    for (;;) {
      const text = await screen(page);
      if (text.includes(want)) return { text, after_ms: Date.now() - t0 };
      if (Date.now() - t0 > ms) return { text, missing: want };
      await page.waitForTimeout(100);
    }
  },
  async resize({ who, width, height }) {
    const { page } = await pageOf(who);
    const before = await statusOf(page);
    await page.setViewportSize({ width, height });
    await page.waitForFunction((c) => Number(document.querySelector('#terminal')?.dataset.cols) !== c,
      before.cols, { timeout: 5000 });
    return await statusOf(page);
  },
  // Waits until the terminal ended (a status from the proxy or a dropped socket) or the page went
  // back to the login form; answers what the page shows and the status frames received.
  async wait_end({ who, ms }) {
    const { page, frames } = await pageOf(who);
    const t0 = Date.now();
    await page.waitForSelector('#terminal[data-ended], form#login', { timeout: ms });
    return { after_ms: Date.now() - t0, frames, ...(await statusOf(page)) };
  },
  async sessions({ who }) {
    const { page } = await pageOf(who);
    await page.goto(`${base}/web/sessions`);
    await page.waitForSelector('#sessions', { timeout: 15000 });
    const rows = await page.$$eval('tr.session', (trs) => trs.map((tr) => ({
      id: tr.dataset.id,
      text: tr.innerText,
      join: [...tr.querySelectorAll('a.join')].map((a) => a.dataset.mode),
    })));
    return { rows };
  },
  // The recordings page until `id` is listed, then its player at 8x until it shows `want`.
  async replay({ who, id, want }) {
    const { page } = await pageOf(who);
    const row = `tr.recording[data-id="${id}"]`;
    for (let i = 0; i < 40; i++) {
      await page.goto(`${base}/web/recordings`);
      await page.waitForSelector('#recordings, #no-recordings', { timeout: 15000 });
      if (await page.locator(row).count()) break;
      await page.waitForTimeout(500);
    }
    const listed = await page.locator(row).count();
    if (!listed) return { listed: false };
    await page.click(`${row} a.play`);
    await page.waitForSelector('#player[data-loaded="true"]', { timeout: 15000 });
    await page.selectOption('#speed', '8');
    await page.click('#play');
    await page.waitForFunction((w) =>
      (document.querySelector('#screen .xterm-rows')?.innerText ?? '').includes(w), want, { timeout: 20000 });
    return { listed: true, screen: await page.locator('#screen .xterm-rows').innerText() };
  },
  async click({ who, selector, wait }) {
    const { page } = await pageOf(who);
    await page.click(selector);
    await page.waitForSelector(wait, { timeout: 20000 });
    return { url: page.url(), ...(await statusOf(page)) };
  },
  async screenshot({ who, name }) {
    const { page } = await pageOf(who);
    const path = join(artifacts, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    return { path };
  },
  // A terminal socket opened by a script in the page, outside the app (which closes its own
  // terminal when it sees the session end): shows what the proxy itself does to a socket.
  async raw_open({ who, node, login }) {
    const { page } = await pageOf(who);
    await page.goto(`${base}/web/resources`);
    await page.waitForSelector('#nodes', { timeout: 15000 });
    return page.evaluate(async ({ node, login }) => {
      const s = await (await fetch('/web/api/session')).json();
      const q = new URLSearchParams({ login, node, cols: 80, rows: 24 });
      const raw = { frames: [], closed: null };
      window.hopRaw = raw;
      const ws = new WebSocket(`wss://${location.host}/web/api/terminal?${q}`,
        ['hop-terminal', `hop-csrf.${s.csrf_token}`]);
      ws.onmessage = (m) => { if (typeof m.data === 'string') raw.frames.push(m.data); };
      ws.onclose = (e) => { raw.closed = e.code; };
      await new Promise((done) => {
        const t = setInterval(() => {
          if (raw.frames.length || raw.closed !== null) { clearInterval(t); done(); }
        }, 50);
      });
      return { frames: raw.frames, closed: raw.closed };
    }, { node, login });
  },
  async raw_wait_end({ who, ms }) {
    const { page } = await pageOf(who);
    const t0 = Date.now();
    await page.waitForFunction(() => window.hopRaw && window.hopRaw.closed !== null, null, { timeout: ms });
    return { after_ms: Date.now() - t0, ...(await page.evaluate(() => window.hopRaw)) };
  },
  // The session cookie's value (the test ends the session from outside the page with it).
  async cookie({ who }) {
    const { context } = await pageOf(who);
    const c = (await context.cookies()).find((k) => k.name === '__Host-hop_session');
    return { value: c ? c.value : '' };
  },
  async frames({ who }) {
    const { page, frames } = await pageOf(who);
    return { frames, ...(await statusOf(page)) };
  },
  // Per-session MFA (web_session_mfa.rs): a virtual security key for `who`'s page.
  async authenticator({ who }) {
    const state = await pageOf(who);
    state.key = await virtualAuthenticator(state.page);
    return { authenticatorId: state.key.authenticatorId };
  },
  // The key from now on signs with a bogus signature (Auth must refuse the assertion).
  async bogus_signature({ who }) {
    const { key } = await pageOf(who);
    await key.cdp.send('WebAuthn.setResponseOverrideBits',
      { authenticatorId: key.authenticatorId, isBogusSignature: true });
    return {};
  },
  // From the next page load on, navigator.credentials.get fails as when the user cancels the
  // browser's security key prompt (NotAllowedError).
  async cancel_keys({ who }) {
    const { page } = await pageOf(who);
    await page.addInitScript(() => {
      navigator.credentials.get = async () => {
        throw new DOMException('The operation either timed out or was not allowed.', 'NotAllowedError');
      };
    });
    return {};
  },
  async fill({ who, sel, value }) {
    const { page } = await pageOf(who);
    await page.fill(sel, value, { timeout: 15000 });
    return {};
  },
  // Waits until `sel`'s text contains `has`; answers its text.
  async text({ who, sel, has }) {
    const { page } = await pageOf(who);
    await page.waitForFunction(({ sel, has }) => document.querySelector(sel)?.textContent.includes(has),
      { sel, has }, { timeout: 15000 });
    return { text: await page.locator(sel).first().textContent() };
  },
  // A terminal socket opened by a script in the page: answers the proxy's MFA prompt with the
  // text frame `answer` (as a forged page could), then waits for the socket to close.
  async raw_mfa({ who, node, login, answer }) {
    const { page } = await pageOf(who);
    await page.goto(`${base}/web/resources`);
    await page.waitForSelector('#nodes', { timeout: 15000 });
    return page.evaluate(async ({ node, login, answer }) => {
      const s = await (await fetch('/web/api/session')).json();
      const q = new URLSearchParams({ login, node, cols: 80, rows: 24 });
      const ws = new WebSocket(`wss://${location.host}/web/api/terminal?${q}`,
        ['hop-terminal', `hop-csrf.${s.csrf_token}`]);
      const frames = [];
      const closed = await new Promise((done) => {
        ws.onmessage = (m) => {
          if (typeof m.data !== 'string') return;
          frames.push(m.data);
          if (JSON.parse(m.data).type === 'mfa') ws.send(answer);
        };
        ws.onclose = (e) => done(e.code);
      });
      return { frames, closed };
    }, { node, login, answer });
  },
  async errors() {
    return { errors };
  },
};

await serve(browser, commands);

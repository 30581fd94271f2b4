// Drives Debian's headless Chromium for the recordings, player and audit pages' end-to-end test
// (appliance/tests/it/web_recordings.rs) through playwright-core, with the line protocol of
// driver.mjs: each input line a JSON command, each output line its JSON answer.
//   node recordings.mjs BASE_URL ARTIFACT_DIR
import { launch, serve } from './harness.mjs';
import { join } from 'node:path';

const [base, artifacts] = process.argv.slice(2);
const browser = await launch();
const contexts = new Map();
const errors = [];

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

// The player's state, its position and what its terminal shows.
const player = (page) => page.evaluate(() => {
  const p = document.querySelector('#player');
  return {
    state: p?.dataset.state, position: Number(p?.dataset.position), speed: p?.dataset.speed,
    loaded: p?.dataset.loaded === 'true', max: Number(document.querySelector('#seek')?.max),
    screen: document.querySelector('#screen .xterm-rows')?.innerText ?? '',
    status: document.querySelector('#player-status')?.textContent ?? '',
  };
});

const commands = {
  async login({ who, user, password, otp }) {
    const page = await pageOf(who);
    await page.goto(`${base}/web/login`);
    await page.waitForSelector('form#login', { timeout: 15000 });
    await page.fill('#user', user);
    await page.fill('#password', password);
    await page.fill('#otp', otp);
    await page.click('#login-submit');
    await page.waitForSelector('#bar:not([hidden])', { timeout: 15000 });
    return { who: await page.locator('#who').innerText() };
  },
  // The recordings page (opened from the nav bar), reloaded until `want` is listed.
  async recordings({ who, want }) {
    const page = await pageOf(who);
    for (let i = 0; i < 40; i++) {
      await page.click('nav a[href="/web/recordings"]');
      await page.waitForSelector('#recordings, #no-recordings', { timeout: 15000 });
      const ids = await page.$$eval('tr.recording', (trs) => trs.map((tr) => tr.dataset.id));
      if (!want || ids.includes(want)) break;
      await page.waitForTimeout(500);
    }
    return {
      rows: await page.$$eval('tr.recording', (trs) => trs.map((tr) => ({
        id: tr.dataset.id, user: tr.dataset.user, text: tr.innerText,
      }))),
    };
  },
  // Opens the player of `id` from its row and waits until every event is loaded.
  async open_player({ who, id }) {
    const page = await pageOf(who);
    await page.click(`tr.recording[data-id="${id}"] a.play`);
    await page.waitForSelector('#player[data-loaded="true"]', { timeout: 15000 });
    return player(page);
  },
  async click({ who, sel }) {
    const page = await pageOf(who);
    await page.click(sel);
    return player(page);
  },
  async speed({ who, value }) {
    const page = await pageOf(who);
    await page.selectOption('#speed', String(value));
    return player(page);
  },
  // Moves the position slider to `ms` as a user's drag does (an `input` event).
  async seek({ who, ms }) {
    const page = await pageOf(who);
    await page.$eval('#seek', (s, v) => {
      s.value = String(v);
      s.dispatchEvent(new Event('input', { bubbles: true }));
    }, ms);
    await page.waitForTimeout(300);
    return player(page);
  },
  // Waits until the screen shows `text` (or the player reaches `state`), at most `ms`.
  async wait_player({ who, text, state, ms }) {
    const page = await pageOf(who);
    const t0 = Date.now();
    await page.waitForFunction(({ text, state }) => {
      const p = document.querySelector('#player');
      const screen = document.querySelector('#screen .xterm-rows')?.innerText ?? '';
      return (!text || screen.includes(text)) && (!state || p?.dataset.state === state);
    }, { text, state }, { timeout: ms });
    return { after_ms: Date.now() - t0, ...(await player(page)) };
  },
  async player({ who, ms }) {
    const page = await pageOf(who);
    if (ms) await page.waitForTimeout(ms);
    return player(page);
  },
  // The audit page: search by user and type; the rows found.
  async audit({ who, user, type }) {
    const page = await pageOf(who);
    await page.click('nav a[href="/web/audit"]');
    await page.waitForSelector('#audit-form', { timeout: 15000 });
    await page.fill('#audit-user', user || '');
    await page.fill('#audit-type', type || '');
    await page.click('#audit-search');
    await page.waitForFunction(() => document.querySelector('#audit-summary')?.textContent
      || document.querySelector('#audit-error')?.textContent, null, { timeout: 15000 });
    await page.waitForTimeout(200);
    return {
      error: await page.locator('#audit-error').innerText(),
      rows: await page.$$eval('tr.event', (trs) => trs.map((tr) => ({
        event: tr.dataset.event, user: tr.dataset.user, text: tr.innerText,
      }))),
    };
  },
  async screenshot({ who, name }) {
    const page = await pageOf(who);
    const path = join(artifacts, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    return { path };
  },
  // The session cookie's value, for the test's own API calls with this session.
  async cookie({ who }) {
    await pageOf(who);
    const jar = await contexts.get(who).context.cookies();
    return { token: jar.find((c) => c.name === '__Host-hop_session')?.value ?? '' };
  },
  async errors() {
    return { errors };
  },
};

await serve(browser, commands);

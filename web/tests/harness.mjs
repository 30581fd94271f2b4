// What every browser driver of the web UI's end-to-end tests shares: Debian's headless Chromium
// through playwright-core (no browser download), and the line protocol the Rust tests speak:
// each stdin line a JSON command `{"do": NAME, ...}`, each stdout line its JSON answer
// (`{"ok": true, ...}` or `{"ok": false, "error": ...}`), `{"ready": true}` first, `quit` last.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';

/** Chromium as the tests run it (`HOP_CHROMIUM` names another binary), with `extraArgs`
 * (e.g. `--host-resolver-rules=...` for names that resolve only in the test). */
export function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.HOP_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...extraArgs],
  });
}

/** Answers commands from stdin with `commands[cmd.do](cmd)` until `quit`, then closes `browser`. */
export async function serve(browser, commands) {
  const out = (v) => process.stdout.write(`${JSON.stringify(v)}\n`);
  out({ ready: true, browser: browser.version() });
  for await (const line of createInterface({ input: process.stdin })) {
    const cmd = JSON.parse(line);
    if (cmd.do === 'quit') break;
    try {
      out({ ok: true, ...(await commands[cmd.do](cmd)) });
    } catch (e) {
      out({ ok: false, error: String(e && e.stack || e) });
    }
  }
  await browser.close();
}

/** Gives `page` a CDP virtual authenticator: a CTAP2 security key that is always touched, holds
 * resident keys (passkeys) and verifies its user; answers its id and the CDP session. */
export async function virtualAuthenticator(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', { options: {
    protocol: 'ctap2', transport: 'usb', hasResidentKey: true, hasUserVerification: true,
    isUserVerified: true, automaticPresenceSimulation: true } });
  return { cdp, authenticatorId };
}

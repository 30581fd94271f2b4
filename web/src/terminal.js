// The web terminal: xterm.js over a WebSocket to `/web/api/terminal`, which the proxy carries
// into the same SSH path as `hop ssh` (a shell as LOGIN on NODE) or into a live session joined
// as `hop join` joins it. Binary frames are terminal bytes both ways; text frames are control
// (`resize COLS ROWS` from here, JSON status from the proxy). The session's CSRF token goes as
// a WebSocket subprotocol (`hop-csrf.TOKEN`): a socket cannot carry a header. Under per-session
// MFA the proxy first sends `{"type":"mfa","target":…,"options":…}`: the page asks the security
// key (navigator.credentials.get with those options, a challenge for that node and login) and
// answers `mfa-assertion ID CLIENT_DATA AUTHENTICATOR_DATA SIGNATURE`, or `mfa-cancel REASON`.
import { Terminal } from '/web/assets/xterm.js';
import { FitAddon } from '/web/assets/xterm-addon-fit.js';
import { csrfToken } from '/web/assets/api.js';
import { el, show } from '/web/assets/dom.js';
import { cspSafeStyles } from '/web/assets/xterm-csp.js';
import { getAssertion, webauthnAvailable } from '/web/assets/webauthn.js';

// The largest frame the proxy takes; a longer paste goes in pieces.
const MAX_FRAME = 32 * 1024;

function socketUrl(params) {
  const q = new URLSearchParams(params);
  return `wss://${location.host}/web/api/terminal?${q}`;
}

// Sends `text` as UTF-8 in frames under MAX_FRAME, never splitting a character: the string is
// cut between UTF-16 units (a surrogate pair kept whole), each piece encoded on its own (a unit
// is at most 3 bytes, a pair 4).
function sendKeys(ws, encoder, text) {
  const step = MAX_FRAME / 4;
  let i = 0;
  while (i < text.length) {
    let end = Math.min(text.length, i + step);
    const last = text.charCodeAt(end - 1);
    if (end < text.length && last >= 0xd800 && last <= 0xdbff) end += 1;
    ws.send(encoder.encode(text.slice(i, end)));
    i = end;
  }
}

// Answers the proxy's per-session MFA prompt `s` on `ws`, telling the user through `say`.
async function answerMfa(ws, s, say) {
  say(`A role requires a security key tap for each session (${s.target}): touch your key…`, 'muted');
  let frame;
  try {
    if (!webauthnAvailable()) throw new Error('this browser offers no security keys here');
    const a = await getAssertion(s.options);
    frame = `mfa-assertion ${a.credential_id} ${a.client_data_json} ${a.authenticator_data} ${a.signature}`;
    say('Security key accepted; connecting to the node…', 'muted');
  } catch (e) {
    const words = String((e && (e.name ? `${e.name}: ${e.message}` : e.message)) || e)
      .replace(/[^\x20-\x7e]/g, ' ').slice(0, 200);
    frame = `mfa-cancel ${words}`;
  }
  if (ws.readyState === WebSocket.OPEN) ws.send(frame);
}

/**
 * Opens a terminal in `view`: `params` is `{login, node}` for a shell or `{session, mode}` to
 * join. Returns a function that closes it (the page calls it when the view changes).
 */
export function openTerminal(view, title, params) {
  cspSafeStyles();
  const status = el('p', { id: 'terminal-status', class: 'muted', role: 'status' }, 'Connecting…');
  const box = el('div', { id: 'terminal', class: 'terminal' });
  show(view, el('div', { class: 'toolbar' }, el('h1', {}, title), status), box);
  const observer = params.mode === 'observer';
  const term = new Terminal({
    cursorBlink: true,
    convertEol: false,
    disableStdin: observer,
    fontFamily: 'ui-monospace, Menlo, Consolas, monospace',
    scrollback: 5000,
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  const size = () => {
    box.dataset.cols = String(term.cols);
    box.dataset.rows = String(term.rows);
  };
  size();
  // Copy and paste: the browser's own (select + Ctrl+Insert / Shift+Insert, the context menu),
  // and Ctrl+Shift+C / Ctrl+Shift+V as in desktop terminals (Ctrl+C stays an interrupt).
  term.attachCustomKeyEventHandler((e) => {
    if (e.type !== 'keydown' || !e.ctrlKey || !e.shiftKey) return true;
    if (e.code === 'KeyC' && term.hasSelection()) {
      navigator.clipboard?.writeText(term.getSelection()).catch(() => {});
      return false;
    }
    if (e.code === 'KeyV') {
      navigator.clipboard?.readText().then((t) => term.paste(t)).catch(() => {});
      return false;
    }
    return true;
  });
  const shell = params.login !== undefined;
  const query = shell ? { ...params, cols: term.cols, rows: term.rows } : params;
  const ws = new WebSocket(socketUrl(query), ['hop-terminal', `hop-csrf.${csrfToken()}`]);
  ws.binaryType = 'arraybuffer';
  const encoder = new TextEncoder();
  let ended = '';
  const say = (text, cls) => {
    status.textContent = text;
    status.className = cls;
  };
  ws.addEventListener('open', () => say('Connecting to the node…', 'muted'));
  ws.addEventListener('message', (m) => {
    if (typeof m.data !== 'string') {
      term.write(new Uint8Array(m.data));
      return;
    }
    let s;
    try { s = JSON.parse(m.data); } catch { return; }
    if (s.type === 'mfa') {
      box.dataset.mfa = 'asked';
      answerMfa(ws, s, say);
    } else if (s.type === 'ready') {
      say(observer ? 'Connected (observing: your keys are not sent).' : 'Connected.', 'ok');
      box.dataset.ready = 'true';
      term.focus();
    } else if (s.type === 'end') {
      ended = s.reason || 'the session ended';
      box.dataset.ended = s.code || 'ended';
      say(`Session ended: ${ended}`, s.code === 'exit' || s.code === 'closed' ? 'muted' : 'error');
    }
  });
  ws.addEventListener('close', (e) => {
    term.options.disableStdin = true;
    if (!ended) {
      box.dataset.ended = 'dropped';
      say(`The connection to Hop was lost (code ${e.code}); reload the page to start a new session.`, 'error');
    }
  });
  term.onData((text) => {
    if (ws.readyState === WebSocket.OPEN && !observer) sendKeys(ws, encoder, text);
  });
  term.onResize(({ cols, rows }) => {
    size();
    if (ws.readyState === WebSocket.OPEN && shell) ws.send(`resize ${cols} ${rows}`);
  });
  const refit = () => fit.fit();
  window.addEventListener('resize', refit);
  return () => {
    window.removeEventListener('resize', refit);
    ws.close(1000);
    term.dispose();
  };
}

/** `/web/terminal/LOGIN@NODE`: a shell. */
export function terminalPage(view, session, rest) {
  const at = rest.lastIndexOf('@');
  const login = rest.slice(0, at);
  const node = rest.slice(at + 1);
  if (at <= 0 || !node) {
    show(view, el('p', { class: 'error' }, 'The terminal address is /web/terminal/LOGIN@NODE.'));
    return undefined;
  }
  return openTerminal(view, `${login}@${node}`, { login, node });
}

/** `/web/join/SESSION/MODE`: a live session, joined as an observer or a peer. */
export function joinPage(view, session, rest) {
  const [id, mode = 'observer'] = rest.split('/');
  return openTerminal(view, `Session ${id} (${mode})`, { session: id, mode });
}

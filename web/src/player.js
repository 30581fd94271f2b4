// The session player: a recording's terminal output replayed in xterm.js with its real timing,
// with play and pause, a position slider (seeking back replays from the start), and speed
// (1×, 2×, 4×, 8×). The recording arrives page by page from the server (each page checked
// against the user's roles there); typed input is never sent to the page.
import { Terminal } from '/web/assets/xterm.js';
import { recording, recordingEvents } from '/web/assets/api.js';
import { el, show } from '/web/assets/dom.js';
import { cspSafeStyles } from '/web/assets/xterm-csp.js';

const SPEEDS = [1, 2, 4, 8];
// How often a playing player draws what has become due.
const TICK_MS = 20;

/** `m:ss` (or `h:mm:ss`) of a number of milliseconds. */
export function clock(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const two = (n) => String(n).padStart(2, '0');
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h ? `${h}:${two(m)}:${two(s % 60)}` : `${m}:${two(s % 60)}`;
}

/** Adds a stylesheet of this origin once. */
function stylesheet(href) {
  if (document.querySelector(`link[data-sheet="${href}"]`)) return;
  document.head.append(el('link', { rel: 'stylesheet', href, 'data-sheet': href }));
}

function bytes(b64) {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i += 1) out[i] = s.charCodeAt(i);
  return out;
}

/** One recording's events, fetched page by page; `onPage` after each. */
async function load(id, first, events, alive, onPage) {
  let from = first;
  for (;;) {
    const page = await recordingEvents(id, from);
    for (const e of page.events) events.push(e.k === 'o' ? { ...e, d: bytes(e.d) } : e);
    from = page.next;
    onPage();
    if (page.done || !alive()) return;
  }
}

/** Shows the player of recording `id` in `view`. */
export async function playerPage(view, id) {
  stylesheet('/web/assets/xterm.css');
  stylesheet('/web/assets/player.css');
  show(view, el('p', { class: 'muted' }, 'Loading recording…'));
  const meta = await recording(id);
  const cols = meta.cols || 80;
  const rows = meta.rows || 24;
  const events = [];
  let loaded = false;
  let duration = meta.duration_ms;

  const screen = el('div', { id: 'screen' });
  const play = el('button', { id: 'play', type: 'button' }, 'Play');
  const seek = el('input', {
    id: 'seek', type: 'range', min: '0', max: String(duration), step: '1', value: '0', 'aria-label': 'Position',
  });
  const speed = el('select', { id: 'speed', 'aria-label': 'Speed' },
    SPEEDS.map((s) => el('option', { value: String(s) }, `${s}×`)));
  const time = el('span', { id: 'time' });
  const status = el('span', { id: 'player-status', class: 'muted', role: 'status' }, 'Loading…');
  const root = el('section', { id: 'player', 'data-state': 'paused', 'data-position': '0' },
    el('div', { class: 'toolbar' },
      el('h1', {}, 'Recording'),
      el('a', { href: '/web/recordings' }, 'All recordings')),
    el('p', { id: 'recording-info' },
      `${meta.user} as ${meta.login} on ${meta.server}, ${new Date(meta.start).toLocaleString()}`),
    screen,
    el('div', { class: 'controls' }, play, seek, time, el('label', {}, 'Speed ', speed), status));
  show(view, root);

  cspSafeStyles();
  const term = new Terminal({ cols, rows, disableStdin: true, scrollback: 5000 });
  term.open(screen);

  let pos = 0; // milliseconds into the recording
  let next = 0; // index of the first event not yet drawn
  let playing = false;
  let last = 0;
  let timer = 0;

  const known = () => (loaded ? duration : Math.min(duration, events.length ? events[events.length - 1].t : 0));

  function render() {
    seek.max = String(duration);
    seek.value = String(Math.round(pos));
    time.textContent = `${clock(pos)} / ${clock(duration)}`;
    root.dataset.position = String(Math.round(pos));
    root.dataset.speed = speed.value;
    const ended = loaded && pos >= duration && next >= events.length;
    root.dataset.state = playing ? 'playing' : (ended ? 'ended' : 'paused');
    play.textContent = playing ? 'Pause' : 'Play';
  }

  // Draws every event due by `upTo` that is not drawn yet.
  function draw(upTo) {
    while (next < events.length && events[next].t <= upTo) {
      const e = events[next];
      next += 1;
      if (e.k === 'o') term.write(e.d);
      else if (e.k === 'r') term.resize(e.cols, e.rows);
    }
  }

  function seekTo(target) {
    const to = Math.max(0, Math.min(known(), target));
    if (to < pos) {
      // Back: replay from the start into a clean terminal.
      term.reset();
      term.resize(cols, rows);
      next = 0;
    }
    pos = to;
    draw(pos);
    render();
  }

  function stop() {
    playing = false;
    clearTimeout(timer);
    render();
  }

  function tick() {
    if (!root.isConnected) {
      stop();
      term.dispose();
      return;
    }
    const now = performance.now();
    pos = Math.min(known(), pos + (now - last) * Number(speed.value));
    last = now;
    draw(pos);
    if (loaded && pos >= duration) {
      draw(Infinity);
      stop();
      return;
    }
    render();
    timer = setTimeout(tick, TICK_MS);
  }

  function start() {
    if (loaded && pos >= duration) seekTo(0);
    playing = true;
    last = performance.now();
    render();
    tick();
  }

  play.addEventListener('click', () => (playing ? stop() : start()));
  seek.addEventListener('input', () => seekTo(Number(seek.value)));
  speed.addEventListener('change', render);
  render();

  try {
    await load(id, meta.first, events, () => root.isConnected, () => {
      status.textContent = `${events.length} events loaded…`;
    });
    loaded = true;
    if (events.length) duration = Math.max(duration, Math.ceil(events[events.length - 1].t));
    status.textContent = `${events.length} events`;
    root.dataset.loaded = 'true';
    render();
  } catch (e) {
    stop();
    status.textContent = `Cannot load the recording: ${e.message}`;
    status.className = 'error';
  }
}

// ringmaster dashboard: a live view of the cluster fed by Server-Sent Events
// from /events ("snapshot" on every (re)connect, then one "tick" a second).
// No dependencies. All server text goes through textContent.
'use strict';

// Uncaught errors (and CSP violations) are collected here so an automated
// browser test can assert that the page ran cleanly.
window.__errors = [];
window.addEventListener('error', (e) => window.__errors.push(String(e.message || e)));
window.addEventListener('unhandledrejection', (e) => window.__errors.push(String(e.reason)));
document.addEventListener('securitypolicyviolation',
  (e) => window.__errors.push(`CSP: ${e.violatedDirective} ${e.blockedURI}`));

const WINDOW_MS = 5 * 60 * 1000;  // charts show the last 5 minutes
const MAX_LOG_LINES = 500;
const GAP_MS = 2500;              // points further apart than this are not joined by a line
const HEARTBEAT_WARN_MS = 5000;   // flag heartbeats older than this
const PALETTE = ['#2f7ed8', '#e8743b', '#19a979', '#a35bd1', '#d4526e',
  '#13a4b4', '#c28f00', '#6b7fd7', '#7cb342', '#a1887f'];

const state = {
  history: [],    // Points, oldest first, at most WINDOW_MS wide
  status: null,   // latest ClusterStatus
  logs: [],       // latest MAX_LOG_LINES LogLines
  lastAt: 0,      // Date.now() when the newest point arrived
  ticks: 0,
  live: false,
  logFilter: '',  // lower-cased substring, '' = show all
};

// ---------------------------------------------------------------- helpers

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

// "3h 12m", "4m 05s", "12s"; two units are plenty for a dashboard.
function fmtDuration(ms) {
  if (!isNum(ms)) return '–';
  const s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${String(sec).padStart(2, '0')}s`;
  return `${sec}s`;
}

// Short ages such as heartbeats: "350 ms", "2.4 s", then fmtDuration.
function fmtAge(ms) {
  if (!isNum(ms)) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return fmtDuration(ms);
}

function fmtNum(v, digits = 0) {
  if (!isNum(v)) return '–';
  if (Math.abs(v) >= 10000) return `${(v / 1000).toFixed(1)}k`;
  return v.toFixed(digits);
}

function fmtMs(v) {
  if (!isNum(v)) return '–';
  return v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0);
}

const fmtMiB = (bytes) => (isNum(bytes) ? (bytes / 1048576).toFixed(1) : '–');

// Compact axis labels: 0, 0.25, 750, 1.5k, 2M.
function fmtAxis(v) {
  if (v >= 1e6) return `${+(v / 1e6).toFixed(2)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toFixed(2)}k`;
  return String(+v.toFixed(3));
}

// The status carries no clock, so "now" is the newest point's server time
// plus the time elapsed since it arrived; this avoids browser clock skew.
function serverNow() {
  const last = state.history[state.history.length - 1];
  return last ? last.t + (Date.now() - state.lastAt) : Date.now();
}

const fmtAgo = (atMs) => (isNum(atMs) ? `${fmtDuration(serverNow() - atMs)} ago` : '');

// ExitInfo -> "signal 9 (SIGKILL) · unexpected exit · 5m 02s ago"
function exitText(x) {
  if (!x) return '';
  return [x.status, x.reason, fmtAgo(x.at_ms)].filter(Boolean).join(' · ');
}

// ---------------------------------------------------------------- stream

function connect() {
  const es = new EventSource('/events');
  es.addEventListener('snapshot', (e) => handleEvent(e, onSnapshot));
  es.addEventListener('tick', (e) => handleEvent(e, onTick));
  es.addEventListener('error', () => {
    setLive(false);
    // CONNECTING: the browser retries by itself. CLOSED: it gave up (e.g. a
    // non-200 reply while the server restarts), so retry on our own.
    if (es.readyState === EventSource.CLOSED) {
      es.close();
      setTimeout(connect, 3000);
    }
  });
}

function handleEvent(e, apply) {
  let data;
  try {
    data = JSON.parse(e.data);
  } catch (err) {
    window.__errors.push(`bad ${e.type} event: ${err}`);
    return;
  }
  apply(data);
  render();
}

function onSnapshot(data) {
  state.history = Array.isArray(data.history) ? data.history.slice() : [];
  state.status = data.status || null;
  state.logs = (data.logs || []).slice(-MAX_LOG_LINES);
  state.lastAt = Date.now();
  trimHistory();
  renderLogs(state.logs, true);
  setLive(true);
}

function onTick(data) {
  state.ticks += 1;
  document.body.dataset.ticks = String(state.ticks);
  if (data.point) addPoint(data.point);
  if (data.status) state.status = data.status;
  const fresh = data.logs || [];
  if (fresh.length) {
    state.logs = state.logs.concat(fresh).slice(-MAX_LOG_LINES);
    renderLogs(fresh, false);
  }
}

function addPoint(p) {
  const h = state.history;
  const last = h[h.length - 1];
  if (last && p.t === last.t) {
    h[h.length - 1] = p;           // same second sent twice: keep the newer data
  } else if (last && p.t < last.t) {
    state.history = [p];           // server clock stepped back: start the window afresh
  } else {
    h.push(p);
  }
  state.lastAt = Date.now();
  trimHistory();
}

function trimHistory() {
  const h = state.history;
  if (!h.length) return;
  const from = h[h.length - 1].t - WINDOW_MS;
  let i = 0;
  while (i < h.length && h[i].t < from) i++;
  if (i) h.splice(0, i);
}

function setLive(live) {
  state.live = live;
  const conn = $('conn');
  conn.textContent = live ? 'live' : 'reconnecting';
  conn.dataset.state = conn.textContent;
  document.body.classList.toggle('stale', !live);
}

// ---------------------------------------------------------------- render

function render() {
  const st = state.status;
  if (st) {
    renderHeader(st);
    renderGroups(st);
    renderWorkers(st);
  }
  renderCharts();
}

function renderHeader(st) {
  $('master-pid').textContent = st.master_pid ?? '–';
  $('master-uptime').textContent = fmtDuration(st.uptime_ms);
  const cs = $('cluster-state');
  cs.dataset.state = st.state || '';
  cs.textContent = (st.state || '–') + reloadText(st.reload);
  const ipc = st.ipc;
  const box = $('ipc');
  if (!ipc) { box.textContent = '–'; return; }
  box.textContent = `${ipc.received} recv · ${ipc.routed} routed · ${ipc.dropped} dropped · `
    + `${ipc.pending_requests} pending · ${ipc.failed_requests} failed`;
  box.toggleAttribute('data-warn', ipc.dropped > 0 || ipc.failed_requests > 0);
}

function reloadText(r) {
  if (!r) return '';
  return ` (${(r.groups || []).join(', ')} ${r.done}/${r.total})`;
}

function renderGroups(st) {
  const latest = state.history[state.history.length - 1];
  const cards = (st.groups || []).map((g) => groupCard(g, latest && latest.groups && latest.groups[g.name]));
  $('groups').replaceChildren(...cards);
}

function groupCard(g, m) {
  const card = el('div', 'group-card');
  card.dataset.state = g.state;
  const head = el('div', 'group-head');
  const badge = el('span', 'badge', g.state);
  badge.dataset.state = g.state;
  head.append(el('span', 'group-name', g.name), badge);
  card.append(head);
  if (g.listen) card.append(el('div', 'sub', g.listen + (g.listen_mode ? ` (${g.listen_mode})` : '')));
  card.append(el('div', 'line', `${g.ready}/${g.count} ready`));
  if (m) card.append(el('div', 'line', `${fmtNum(m.rps, 1)} req/s · p99 ${isNum(m.p99_ms) ? `${fmtMs(m.p99_ms)} ms` : '–'}`));
  if (g.state !== 'ok' && g.last_exit) {
    card.append(el('div', 'group-exit', `last exit: ${exitText(g.last_exit)}`));
  }
  return card;
}

// Workers table: [class, cell text, right-aligned?] per column, in header order.
// The "restarts" and "state" cells must hold the bare value (test hooks).
const COLUMNS = [
  ['group', (w, g) => g.name],
  ['slot', (w) => w.slot, true],
  ['pid', (w) => w.pid ?? '–', true],
  ['state', (w) => w.state],
  ['note', workerNote],
  ['gen', (w) => w.generation, true],
  ['uptime', (w) => (w.pid == null ? '–' : fmtDuration(w.uptime_ms)), true],
  ['restarts', (w) => w.restarts ?? 0, true],
  ['last-exit', (w) => exitText(w.last_exit)],
  ['heartbeat', (w) => fmtAge(w.heartbeat_age_ms), true],
  ['rss', (w) => fmtMiB(w.rss_bytes), true],
  ['cpu', (w) => fmtNum(w.cpu_percent, 1), true],
  ['in-flight', (w) => w.in_flight ?? '–', true],
  ['rps', (w) => fmtNum(w.requests_per_sec, 1), true],
  ['p99', (w) => fmtMs(w.p99_ms), true],
];

function workerNote(w) {
  const parts = [];
  if (w.reason) parts.push(w.reason);
  if (w.state === 'waiting' && isNum(w.restart_in_ms)) parts.push(`restart in ${fmtAge(w.restart_in_ms)}`);
  return parts.join(' · ');
}

function renderWorkers(st) {
  const rows = [];
  for (const g of st.groups || []) {
    for (const w of g.workers || []) rows.push(workerRow(g, w));
  }
  if (!rows.length) {
    const tr = el('tr', 'empty');
    const td = el('td', '', 'no workers');
    td.colSpan = COLUMNS.length;
    tr.append(td);
    rows.push(tr);
  }
  $('workers').replaceChildren(...rows);
}

function workerRow(g, w) {
  const tr = el('tr', 'worker');
  tr.dataset.group = g.name;
  tr.dataset.slot = String(w.slot);
  tr.dataset.pid = w.pid == null ? '' : String(w.pid);
  tr.dataset.state = w.state;
  for (const [cls, text, num] of COLUMNS) {
    const td = el('td', cls, text(w, g));  // the class is exactly the column name (test hooks)
    if (num) td.dataset.num = '';
    tr.append(td);
  }
  flagCell(tr, 'heartbeat', isNum(w.heartbeat_age_ms) && w.heartbeat_age_ms > HEARTBEAT_WARN_MS);
  flagCell(tr, 'restarts', w.restarts > 0);
  return tr;
}

// data-warn rather than an extra class, so td.className stays the plain hook name.
function flagCell(tr, cls, on) {
  if (on) tr.querySelector(`td.${cls}`).setAttribute('data-warn', '');
}

// ---------------------------------------------------------------- chart data

// One colour per key for the page's lifetime, so lines don't swap colours
// when a group or worker appears or disappears.
function colourMap() {
  const map = new Map();
  return (key) => {
    if (!map.has(key)) map.set(key, PALETTE[map.size % PALETTE.length]);
    return map.get(key);
  };
}
const groupColour = colourMap();
const workerColour = colourMap();

// Group names in configuration order, then any only seen in history.
function groupNames() {
  const names = (state.status && state.status.groups || []).map((g) => g.name);
  const seen = new Set(names);
  const extra = new Set();
  for (const p of state.history) {
    for (const k of Object.keys(p.groups || {})) if (!seen.has(k)) extra.add(k);
  }
  return names.concat([...extra].sort());
}

// A missing group in a point, or a null field, becomes a gap (null).
function groupSeries(field, labelSuffix = '', dash = false) {
  return groupNames().map((name) => ({
    label: name + labelSuffix,
    colour: groupColour(name),
    dash,
    values: state.history.map((p) => {
      const m = p.groups && p.groups[name];
      return m && isNum(m[field]) ? m[field] : null;
    }),
  }));
}

function latencySeries() {
  const p50 = groupSeries('p50_ms', ' p50', true);
  const p99 = groupSeries('p99_ms', ' p99');
  return p50.flatMap((s, i) => [s, p99[i]]);  // keep each group's pair together
}

// "group/slot" keys in group configuration order, then by slot number.
function workerKeyOrder() {
  const order = new Map(groupNames().map((name, i) => [name, i]));
  const rank = (key) => {
    const [group, slot] = key.split('/');
    return [order.has(group) ? order.get(group) : order.size, Number(slot) || 0];
  };
  return (a, b) => {
    const [ga, sa] = rank(a), [gb, sb] = rank(b);
    return ga - gb || sa - sb || a.localeCompare(b);
  };
}

function rssSeries() {
  const keys = new Set();
  for (const p of state.history) for (const k of Object.keys(p.rss || {})) keys.add(k);
  return [...keys].sort(workerKeyOrder()).map((key) => ({
    label: key,
    colour: workerColour(key),
    dash: false,
    values: state.history.map((p) => (p.rss && isNum(p.rss[key]) ? p.rss[key] / 1048576 : null)),
  }));
}

// Restart marks: one per second that saw restarts, labelled "web/1 api/0".
function restartMarks() {
  return state.history
    .filter((p) => Array.isArray(p.restarts) && p.restarts.length)
    .map((p) => ({ t: p.t, label: p.restarts.map((r) => `${r.group}/${r.slot}`).join(' ') }));
}

// ---------------------------------------------------------------- charts

const CHARTS = [
  { id: 'chart-rps', series: () => groupSeries('rps'), fmt: (v) => fmtNum(v, 1) },
  { id: 'chart-latency', series: latencySeries, fmt: fmtMs },
  { id: 'chart-errors', series: () => groupSeries('errors_per_sec'), fmt: (v) => fmtNum(v, 1) },
  { id: 'chart-rss', series: rssSeries, fmt: (v) => (isNum(v) ? v.toFixed(1) : '–') },
];

function initCharts() {
  for (const c of CHARTS) {
    c.canvas = $(c.id);
    c.legend = c.canvas.parentElement.querySelector('.legend');
    c.view = null;
    // Redraw on any size change (window resize, layout changes).
    new ResizeObserver(() => drawChart(c)).observe(c.canvas);
  }
  // Theme colours come from CSS; redraw when the scheme flips.
  matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => CHARTS.forEach(drawChart));
}

function renderCharts() {
  const xs = state.history.map((p) => p.t);
  const marks = restartMarks();
  for (const c of CHARTS) {
    c.view = { xs, marks, series: c.series() };
    drawChart(c);
    renderLegend(c);
  }
  updateRpsHooks();
}

// Test hooks on the requests/s canvas: points plotted, how many of them
// have rps > 0 for at least one group, and per group (data-nonzero-NAME).
function updateRpsHooks() {
  const canvas = $('chart-rps');
  const nonzero = state.history.filter((p) =>
    Object.values(p.groups || {}).some((m) => m && m.rps > 0)).length;
  canvas.dataset.points = String(state.history.length);
  canvas.dataset.nonzero = String(nonzero);
  const perGroup = {};
  for (const p of state.history) {
    for (const [name, m] of Object.entries(p.groups || {})) {
      perGroup[name] = (perGroup[name] || 0) + (m && m.rps > 0 ? 1 : 0);
    }
  }
  for (const [name, n] of Object.entries(perGroup)) {
    canvas.setAttribute('data-nonzero-' + name, String(n));
  }
}

function renderLegend(c) {
  const items = c.view.series.map((s) => {
    const li = el('li');
    const sw = el('span', 'swatch');
    sw.style.borderTopColor = s.colour;
    sw.style.borderTopStyle = s.dash ? 'dashed' : 'solid';
    const last = s.values[s.values.length - 1];
    li.append(sw, el('span', 'label', s.label), el('span', 'value', c.fmt(last)));
    return li;
  });
  c.legend.replaceChildren(...items);
}

function readTheme() {
  const cs = getComputedStyle(document.documentElement);
  const v = (name) => cs.getPropertyValue(name).trim();
  return { fg: v('--muted'), grid: v('--grid'), mark: v('--mark'), font: `11px ${v('--sans')}` };
}

// Sizes the backing store to CSS size x devicePixelRatio and returns a
// context scaled so drawing code works in CSS pixels.
function sizeCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return null;
  const pw = Math.round(w * dpr), ph = Math.round(h * dpr);
  if (canvas.width !== pw || canvas.height !== ph) {
    canvas.width = pw;
    canvas.height = ph;
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return { ctx, w, h };
}

// Round the y range up to a "nice" top with 3-5 steps of 1/2/2.5/5 x 10^n.
function niceScale(max) {
  if (!(max > 0)) max = 1;
  const raw = max / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw);
  return { step, top: Math.ceil(max / step - 1e-9) * step };
}

function seriesMax(series) {
  let max = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
  return max;
}

// Maps data to CSS pixels inside the plot area. The x range always ends at
// the newest point, so "now" is the server's latest second.
function geometry(w, h, xs, top) {
  const g = { left: 46, right: w - 10, top: 16, bottom: h - 18 };
  g.tMax = xs.length ? xs[xs.length - 1] : Date.now();
  g.tMin = g.tMax - WINDOW_MS;
  g.x = (t) => g.left + ((t - g.tMin) / WINDOW_MS) * (g.right - g.left);
  g.y = (v) => g.bottom - (v / top) * (g.bottom - g.top);
  return g;
}

function drawChart(c) {
  if (!c.view) return;
  const sized = sizeCanvas(c.canvas);
  if (!sized) return;
  const { ctx, w, h } = sized;
  const theme = readTheme();
  const scale = niceScale(seriesMax(c.view.series));
  const g = geometry(w, h, c.view.xs, scale.top);
  ctx.font = theme.font;
  drawYAxis(ctx, g, scale, theme);
  drawXAxis(ctx, g, theme);
  ctx.save();
  ctx.beginPath();
  ctx.rect(g.left, g.top - 1, g.right - g.left, g.bottom - g.top + 2);
  ctx.clip();
  for (const s of c.view.series) drawSeries(ctx, g, c.view.xs, s);
  ctx.restore();
  drawMarks(ctx, g, c.view.marks, theme);
  if (!c.view.xs.length) drawEmpty(ctx, g, theme);
}

function drawYAxis(ctx, g, scale, theme) {
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  ctx.lineWidth = 1;
  for (let v = 0; v <= scale.top + scale.step / 2; v += scale.step) {
    const y = Math.round(g.y(v)) + 0.5;  // crisp 1px lines
    ctx.strokeStyle = theme.grid;
    ctx.beginPath();
    ctx.moveTo(g.left, y);
    ctx.lineTo(g.right, y);
    ctx.stroke();
    ctx.fillStyle = theme.fg;
    ctx.fillText(fmtAxis(v), g.left - 6, y);
  }
}

function drawXAxis(ctx, g, theme) {
  ctx.textBaseline = 'top';
  ctx.fillStyle = theme.fg;
  for (let k = 5; k >= 0; k--) {
    const x = g.x(g.tMax - k * 60000);
    ctx.textAlign = k === 0 ? 'right' : k === 5 ? 'left' : 'center';
    ctx.fillText(k ? `-${k}m` : 'now', x, g.bottom + 4);
  }
}

// Two points are joined only if both exist and are about one second apart;
// a point with no joinable neighbour is drawn as a dot so it stays visible.
function drawSeries(ctx, g, xs, s) {
  const v = s.values;
  const joins = (i, j) => j >= 0 && j < xs.length && v[i] !== null && v[j] !== null
    && Math.abs(xs[j] - xs[i]) <= GAP_MS;
  const dots = [];
  ctx.strokeStyle = s.colour;
  ctx.fillStyle = s.colour;
  ctx.lineWidth = 1.5;
  ctx.lineJoin = 'round';
  ctx.setLineDash(s.dash ? [4, 3] : []);
  ctx.beginPath();
  for (let i = 0; i < xs.length; i++) {
    if (v[i] === null) continue;
    const x = g.x(xs[i]), y = g.y(v[i]);
    if (joins(i, i - 1)) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    if (!joins(i, i - 1) && !joins(i, i + 1)) dots.push([x, y]);
  }
  ctx.stroke();
  ctx.setLineDash([]);
  for (const [x, y] of dots) ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
}

// Vertical marks for restarts, labelled above the plot. A label that would
// overlap the previous one is dropped (the mark itself is always drawn).
function drawMarks(ctx, g, marks, theme) {
  ctx.strokeStyle = theme.mark;
  ctx.fillStyle = theme.mark;
  ctx.lineWidth = 1;
  ctx.textAlign = 'center';
  ctx.textBaseline = 'bottom';
  let lastEnd = -Infinity;
  for (const m of marks) {
    const raw = g.x(m.t);
    if (raw < g.left - 1 || raw > g.right + 1) continue;
    const x = Math.min(Math.round(raw), Math.round(g.right) - 1) + 0.5;  // crisp, inside the plot
    ctx.setLineDash([3, 3]);
    ctx.beginPath();
    ctx.moveTo(x, g.top);
    ctx.lineTo(x, g.bottom);
    ctx.stroke();
    ctx.setLineDash([]);
    const half = ctx.measureText(m.label).width / 2;
    const lx = Math.min(Math.max(x, g.left + half), g.right - half);
    if (lx - half > lastEnd + 4) {
      ctx.fillText(m.label, lx, g.top - 2);
      lastEnd = lx + half;
    }
  }
}

function drawEmpty(ctx, g, theme) {
  ctx.fillStyle = theme.fg;
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  ctx.fillText('no data yet', (g.left + g.right) / 2, (g.top + g.bottom) / 2);
}

// ---------------------------------------------------------------- log tail

function levelOf(line) {
  const l = String(line.level || '').toUpperCase();
  if (l === 'ERROR' || l === 'FATAL' || l === 'CRITICAL') return 'error';
  if (l === 'WARN' || l === 'WARNING') return 'warn';
  if (l === 'DEBUG' || l === 'TRACE') return 'debug';
  return '';
}

function logElement(line) {
  const d = el('div', '', line.text);
  const lvl = levelOf(line);
  if (lvl) d.dataset.level = lvl;
  return d;
}

const logMatches = (line) => !state.logFilter
  || String(line.text).toLowerCase().includes(state.logFilter);

// Near the bottom counts as "at the bottom" (sub-pixel scroll positions).
function atBottom(box) {
  return box.scrollHeight - box.scrollTop - box.clientHeight < 24;
}

// replace=true rebuilds the tail (snapshot, filter change); otherwise appends.
function renderLogs(lines, replace) {
  const box = $('log');
  const follow = atBottom(box);
  const nodes = lines.filter(logMatches).map(logElement);
  if (replace) box.replaceChildren(...nodes); else box.append(...nodes);
  while (box.childElementCount > MAX_LOG_LINES) box.firstElementChild.remove();
  if (follow) box.scrollTop = box.scrollHeight;
  updateFollowButton();
}

function updateFollowButton() {
  $('log-follow').hidden = atBottom($('log'));
}

function initLog() {
  const box = $('log');
  box.addEventListener('scroll', updateFollowButton, { passive: true });
  $('log-follow').addEventListener('click', () => {
    box.scrollTop = box.scrollHeight;
    updateFollowButton();
  });
  $('log-filter').addEventListener('input', (e) => {
    state.logFilter = e.target.value.trim().toLowerCase();
    box.scrollTop = box.scrollHeight;  // a new filter starts at the newest lines
    renderLogs(state.logs, true);
  });
}

// ---------------------------------------------------------------- start

function start() {
  document.body.dataset.ticks = '0';
  initCharts();
  initLog();
  renderCharts();  // empty axes until the first snapshot
  setLive(false);
  connect();
}

start();

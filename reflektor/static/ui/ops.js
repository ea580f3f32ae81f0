// reflektor's operations page. No build step, no dependencies. The admin token lives in this
// tab's sessionStorage and travels as a bearer header; every value from the server is written
// with textContent (a host's answer or a record's target is hostile input).
'use strict';

const TOKEN_KEY = 'reflektor.admin-token';
const REFRESH_MS = 2000;
const SPARK_POINTS = 60;

const $ = (id) => document.getElementById(id);
let timer = null;
let previous = null; // { at, head, applied: Map(hostId -> applied) }
const history = { intake: [], delivery: [] };

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token() || ''}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok) {
    const code = (data && data.error) || String(res.status);
    const message = (data && data.message) || res.statusText;
    throw new ApiError(res.status, code, message);
  }
  return data;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function banner(text) {
  const b = $('banner');
  b.textContent = text || '';
  b.hidden = !text;
}

function notice(text) {
  $('notice').textContent = text || '';
}

function showLogin(message) {
  stop();
  $('console').hidden = true;
  $('logout').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('token').focus();
}

function showConsole() {
  $('login').hidden = true;
  $('console').hidden = false;
  $('logout').hidden = false;
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  previous = null;
  history.intake.length = 0;
  history.delivery.length = 0;
  showLogin(message);
}

/** Handle an API failure: a refused token sends the operator back to the login form. */
function failed(err) {
  if (err instanceof ApiError && err.status === 401) {
    logout('The token was refused. Enter the admin token.');
  } else if (err instanceof ApiError && err.code === 'admin_disabled') {
    logout('The admin API is disabled: start reflektor with --admin-token or --admin-token-file.');
  } else {
    banner(`reflektor did not answer as expected: ${err.message}`);
  }
}

function fmtRate(n) {
  if (!Number.isFinite(n)) return '–';
  return n >= 100 ? Math.round(n).toLocaleString() : n.toFixed(1);
}

function fmtLag(h) {
  const secs = Number(h.lag_seconds || 0);
  const s = secs < 1 ? `${Math.round(secs * 1000)} ms` : `${secs.toFixed(1)} s`;
  return `${Number(h.lag_records).toLocaleString()} records, ${s}`;
}

function spark(svgId, values) {
  const svg = $(svgId);
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  if (values.length < 2) return;
  const max = Math.max(1, ...values);
  const step = 120 / (SPARK_POINTS - 1);
  const start = SPARK_POINTS - values.length;
  const points = values.map((v, i) => `${((start + i) * step).toFixed(1)},${(23 - (v / max) * 22).toFixed(1)}`);
  const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
  line.setAttribute('points', points.join(' '));
  svg.appendChild(line);
}

function push(series, v) {
  series.push(v);
  if (series.length > SPARK_POINTS) series.shift();
}

function renderHosts(data, rates) {
  $('epoch').textContent = `epoch ${data.epoch}`;
  $('log-range').textContent = `${data.oldest} … ${data.head}`;
  const body = $('hosts').tBodies[0];
  body.replaceChildren();
  for (const h of data.hosts) {
    const tr = el('tr');
    tr.dataset.hostId = h.id;
    const name = el('td');
    name.append(el('div', h.url), el('div', h.id, 'muted'));
    tr.append(name, el('td', h.mode));
    tr.append(el('td', h.healthy ? 'healthy' : 'unhealthy', h.healthy ? 'healthy' : 'unhealthy'));
    tr.append(el('td', h.cursor, 'num'), el('td', h.applied, 'num'), el('td', fmtLag(h), 'num'));
    tr.append(el('td', rates.has(h.id) ? `${fmtRate(rates.get(h.id))}/s` : '–', 'num'));
    tr.append(el('td', h.last_error || '', 'err'));
    const actions = el('td');
    const remove = el('button', 'Remove');
    remove.type = 'button';
    remove.className = 'remove';
    remove.addEventListener('click', () => removeHost(h));
    actions.append(remove);
    tr.append(actions);
    body.append(tr);
  }
  $('host-count').textContent = `(${data.hosts.length})`;
  $('no-hosts').hidden = data.hosts.length > 0;
}

function renderDeadLetters(list) {
  const body = $('dead-letters').tBodies[0];
  body.replaceChildren();
  for (const d of list) {
    const tr = el('tr');
    tr.dataset.deadLetterId = d.id;
    tr.append(el('td', d.id, 'num'), el('td', d.offset, 'num'));
    tr.append(el('td', d.host_url));
    tr.append(el('td', `${d.method} ${d.target} (${d.body_bytes} bytes)`));
    tr.append(el('td', `${d.status ?? ''} ${d.error || ''}`.trim(), 'err'));
    tr.append(el('td', d.at_ms ? new Date(d.at_ms).toISOString().replace('T', ' ').slice(0, 19) : ''));
    const actions = el('td');
    const redrive = el('button', 'Redrive');
    redrive.type = 'button';
    redrive.className = 'redrive';
    redrive.addEventListener('click', () => redriveOne(d, redrive));
    actions.append(redrive);
    tr.append(actions);
    body.append(tr);
  }
  $('dead-count').textContent = `(${list.length})`;
  $('no-dead').hidden = list.length > 0;
}

async function refresh() {
  const [hosts, dead] = await Promise.all([api('GET', '/_reflektor/hosts'), api('GET', '/_reflektor/dead-letters')]);
  const now = performance.now();
  const applied = new Map(hosts.hosts.map((h) => [h.id, Number(h.applied)]));
  const rates = new Map();
  if (previous) {
    const dt = (now - previous.at) / 1000;
    if (dt > 0) {
      const intake = Math.max(0, (Number(hosts.head) - previous.head) / dt);
      let delivery = 0;
      for (const [id, a] of applied) {
        if (previous.applied.has(id)) {
          const r = Math.max(0, (a - previous.applied.get(id)) / dt);
          rates.set(id, r);
          delivery += r;
        }
      }
      push(history.intake, intake);
      push(history.delivery, delivery);
      $('intake-rate').textContent = fmtRate(intake);
      $('delivery-rate').textContent = fmtRate(delivery);
      spark('intake-spark', history.intake);
      spark('delivery-spark', history.delivery);
    }
  }
  previous = { at: now, head: Number(hosts.head), applied };
  renderHosts(hosts, rates);
  renderDeadLetters(dead.dead_letters);
  $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
  banner('');
}

async function tick() {
  timer = null;
  try {
    await refresh();
  } catch (err) {
    failed(err);
    if (!token()) return;
  }
  if (token() && timer === null) timer = setTimeout(tick, REFRESH_MS);
}

function stop() {
  if (timer !== null) clearTimeout(timer);
  timer = null;
}

async function start() {
  showConsole();
  stop();
  await tick();
}

async function removeHost(h) {
  if (!window.confirm(`Remove ${h.url} from the pool? Its cursor is forgotten.`)) return;
  try {
    await api('DELETE', `/_reflektor/hosts/${encodeURIComponent(h.id)}`);
    notice(`Removed ${h.url}.`);
    await refresh();
  } catch (err) {
    if (err instanceof ApiError && err.status !== 401) notice(`Could not remove ${h.url}: ${err.message}`);
    else failed(err);
  }
}

async function redriveOne(d, button) {
  button.disabled = true;
  try {
    await api('POST', `/_reflektor/dead-letters/${encodeURIComponent(d.id)}/redrive`);
    notice(`Dead letter ${d.id} (offset ${d.offset}) redriven to ${d.host_url}.`);
    await refresh();
  } catch (err) {
    button.disabled = false;
    if (err instanceof ApiError && err.status !== 401) notice(`Redrive of ${d.id} failed: ${err.message}`);
    else failed(err);
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const value = $('token').value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $('token').value = '';
    await start();
  });
  $('logout').addEventListener('click', () => logout(''));
  $('add-host').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { url: $('host-url').value.trim(), mode: $('host-mode').value };
    if ($('host-start').value) body.start = $('host-start').value;
    try {
      const h = await api('POST', '/_reflektor/hosts', body);
      notice(`Added ${h.url} (${h.mode}).`);
      $('host-url').value = '';
      await refresh();
    } catch (err) {
      if (err instanceof ApiError && err.status !== 401) notice(`Could not add ${body.url}: ${err.message}`);
      else failed(err);
    }
  });
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) stop();
    else if (token() && timer === null) tick();
  });
  if (token()) start();
  else showLogin('');
});

'use strict';
// Shared fixtures for the browser tests: the real ekg and reflektor binaries, a headless
// Chromium with a fresh profile, and deadline-bounded waits.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const ROOT = path.resolve(__dirname, '../..');
const EKG_BIN = process.env.EKG_BIN || path.join(ROOT, 'target/debug/ekg');
const REFLEKTOR_BIN = process.env.REFLEKTOR_BIN || path.join(ROOT, 'target/debug/reflektor');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OUT_DIR = path.join(__dirname, 'out');
const TOKEN = 'browser-test-token';
const WAIT_MS = Number(process.env.WAIT_MS || 10000);

function tempDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/**
 * Start a binary and resolve once it prints `<name> listening on http://...` on stdout.
 * The process is killed by its pid in stop().
 */
function startServer(name, bin, args, { timeoutMs = 15000 } = {}) {
  return new Promise((resolve, reject) => {
    if (!fs.existsSync(bin)) {
      reject(new Error(`${bin} does not exist; build it with cargo build -p ${name}`));
      return;
    }
    const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' } });
    let stdout = '';
    let stderr = '';
    let done = false;
    const timer = setTimeout(() => finish(new Error(`${name} did not announce itself within ${timeoutMs} ms\nstderr:\n${stderr}`)), timeoutMs);
    function finish(err, url) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) {
        try {
          proc.kill('SIGKILL');
        } catch {}
        reject(err);
        return;
      }
      const server = {
        name,
        url,
        port: Number(new URL(url).port),
        proc,
        stderr: () => stderr,
        exited: new Promise((r) => (proc.exitCode !== null ? r() : proc.once('exit', () => r()))),
        async stop(signal = 'SIGKILL') {
          if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
          await server.exited;
        },
      };
      resolve(server);
    }
    proc.stdout.setEncoding('utf8');
    proc.stderr.setEncoding('utf8');
    proc.stdout.on('data', (chunk) => {
      stdout += chunk;
      const m = stdout.match(new RegExp(`${name} listening on (http://\\S+)`));
      if (m) finish(null, m[1].replace(/\/$/, ''));
    });
    proc.stderr.on('data', (chunk) => {
      stderr += chunk;
      if (stderr.length > 200000) stderr = stderr.slice(-100000);
    });
    proc.once('exit', (code, sig) => finish(new Error(`${name} exited (${code ?? sig}) before announcing\nstderr:\n${stderr}`)));
    proc.once('error', (err) => finish(err));
  });
}

function startEkg({ port = 0, standalone = true, args = [] } = {}) {
  const base = ['--listen', `127.0.0.1:${port}`];
  if (standalone) base.push('--standalone', '--token', TOKEN);
  return startServer('ekg', EKG_BIN, [...base, ...args]);
}

function startReflektor({ hosts, dataDir, args = [] }) {
  const base = ['--listen', '127.0.0.1:0', '--data-dir', dataDir, '--fsync', 'never'];
  for (const h of hosts) base.push('--host', h);
  return startServer('reflektor', REFLEKTOR_BIN, [...base, ...args]);
}

async function request(method, url, body, { token = TOKEN } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${url} -> ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

const api = {
  post: (base, room, msg, opts) => request('POST', `${base}/rooms/${room}/messages`, msg, opts),
  put: (base, room, id, msg, opts) => request('PUT', `${base}/rooms/${room}/messages/${id}`, msg, opts),
  del: (base, room, id, opts) => request('DELETE', `${base}/rooms/${room}/messages/${id}`, undefined, opts),
  event: (base, room, ev, opts) => request('POST', `${base}/rooms/${room}/events`, ev, opts),
};

/** Poll `fn` until it returns a truthy value, or fail after `timeoutMs` with `what`. */
async function waitUntil(what, fn, { timeoutMs = WAIT_MS, intervalMs = 25 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

async function launchBrowser() {
  const profile = tempDir('ekg-chromium-');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 900, height: 700 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  return {
    context,
    async close() {
      await context.close();
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Open the demo page. Uncaught exceptions are collected in page.errors; console errors (the
 * browser logs every refused connection while a host is down) in page.consoleErrors.
 */
async function openRoom(context, ekgUrl, params) {
  const page = await context.newPage();
  page.errors = [];
  page.consoleErrors = [];
  page.on('pageerror', (err) => page.errors.push(String(err)));
  page.on('console', (msg) => {
    if (msg.type() === 'error') page.consoleErrors.push(msg.text());
  });
  const qs = new URLSearchParams(params).toString();
  await page.goto(`${ekgUrl}/?${qs}`);
  return page;
}

/** The texts shown in the demo page's message list, top to bottom. */
function shownTexts(page) {
  return page.evaluate(() => [...document.querySelectorAll('#messages li .text')].map((e) => e.textContent));
}

/** Wait until the page shows exactly `expected` (in order). */
async function waitForTexts(page, expected, timeout = WAIT_MS) {
  try {
    await page.waitForFunction(
      (want) => {
        const got = [...document.querySelectorAll('#messages li .text')].map((e) => e.textContent);
        return got.length === want.length && got.every((t, i) => t === want[i]);
      },
      expected,
      { timeout, polling: 50 },
    );
  } catch (err) {
    const got = await shownTexts(page).catch(() => []);
    throw new Error(`page did not show the expected ${expected.length} messages: got ${got.length}: ${JSON.stringify(got.slice(0, 10))}...${JSON.stringify(got.slice(-5))}\n${err.message}`);
  }
}

async function waitForStatus(page, state, transport, timeout = WAIT_MS) {
  await page.waitForFunction(
    ([s, t]) => {
      const b = document.querySelector('#status');
      return b.dataset.state === s && (!t || b.dataset.transport === t);
    },
    [state, transport],
    { timeout, polling: 25 },
  );
}

module.exports = {
  ROOT, OUT_DIR, TOKEN, EKG_BIN, REFLEKTOR_BIN, WAIT_MS,
  tempDir, startEkg, startReflektor, startServer, request, api, waitUntil,
  launchBrowser, openRoom, shownTexts, waitForTexts, waitForStatus,
};

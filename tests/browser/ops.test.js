'use strict';
// reflektor's operations page (/_reflektor/ui) in headless Chromium: the login form and the
// token in session storage, hosts with health, cursor, lag and last error, dead letters and a
// redrive, adding and removing a host, live intake and delivery rates. The pool's host is a
// small replay host run by this test, which refuses one record until it is "fixed".

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { OUT_DIR, ROOT, tempDir, startReflektor, waitUntil, launchBrowser } = require('./lib');

const INTAKE = 'ops-page-intake-token';
// /_reflektor/* takes the same bearer token as intake (--token).
const ADMIN = INTAKE;
// The host's answer to the refused record: markup that would show as bold if the page wrote
// it as HTML (and could run script the same way); the page must show it as text.
const HOSTILE = '{"error":"bad_message","message":"text must <b>not</b> contain poison"}';

let browser;
const cleanup = [];

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  for (const fn of cleanup.reverse()) await fn();
  await browser?.close();
});

/** A replay host on loopback: 200 for every request, 422 for a "poison" body until fixed. */
function startReplayHost() {
  const host = { fixed: false, received: [] };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      host.received.push({ offset: req.headers['x-reflektor-offset'], body });
      if (body.includes('poison') && !host.fixed) {
        res.writeHead(422, { 'Content-Type': 'application/json' });
        res.end(HOSTILE);
      } else {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end('{}');
      }
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      host.url = `http://127.0.0.1:${server.address().port}`;
      host.close = () => new Promise((r) => server.close(() => r()));
      resolve(host);
    });
  });
}

async function post(intake, body) {
  const res = await fetch(`${intake}/rooms/ops/messages`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${INTAKE}` },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 202, `intake answered ${res.status}: ${await res.text()}`);
}

const rowCount = (page, table) => page.locator(`#${table} tbody tr`).count();

test('the ops page shows hosts, rates and dead letters, redrives one, and adds and removes a host', async () => {
  const replay = await startReplayHost();
  cleanup.push(() => replay.close());
  const spare = await startReplayHost();
  cleanup.push(() => spare.close());
  const dataDir = tempDir('reflektor-ops-page-');
  const reflektor = await startReflektor({
    hosts: [],
    dataDir,
    args: ['--replay-host', replay.url, '--token', INTAKE],
  });
  cleanup.push(async () => {
    await reflektor.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  const page = await browser.context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(String(err)));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !/status of 401/.test(msg.text())) errors.push(msg.text());
  });
  await page.goto(`${reflektor.url}/_reflektor/ui`);

  // Without a token: the login form, nothing else.
  await page.locator('#login').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#console').isVisible(), false);

  // A wrong token is refused and forgotten.
  await page.fill('#token', 'not-the-token');
  await page.click('#login-form button[type=submit]');
  await page.waitForFunction(() => /refused/.test(document.querySelector('#login-error').textContent));
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);

  // The admin token opens the console and stays in this tab's session storage only.
  await page.fill('#token', ADMIN);
  await page.click('#login-form button[type=submit]');
  await page.locator('#console').waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('reflektor.admin-token')), ADMIN);
  assert.equal(await page.evaluate(() => localStorage.length), 0);

  // Traffic: good records and one the host refuses. The host shows healthy with its cursor,
  // the refused record shows as a dead letter with the host's answer, written as text.
  for (let i = 1; i <= 5; i += 1) await post(reflektor.url, { id: `m${i}`, text: `hello ${i}` });
  await post(reflektor.url, { id: 'bad', text: 'poison' });
  for (let i = 6; i <= 8; i += 1) await post(reflektor.url, { id: `m${i}`, text: `hello ${i}` });
  await page.waitForFunction(() => document.querySelectorAll('#dead-letters tbody tr').length === 1, null, { timeout: 15000 });
  const deadRow = page.locator('#dead-letters tbody tr').first();
  const deadText = await deadRow.textContent();
  assert.match(deadText, /422/);
  assert.match(deadText, /POST \/rooms\/ops\/messages/);
  assert.ok(deadText.includes('<b>not</b>'), `the answer is shown as text: ${deadText}`);
  assert.equal(await page.locator('#dead-letters b, #hosts b').count(), 0);
  await page.waitForFunction(() => {
    const row = document.querySelector('#hosts tbody tr');
    return row && row.children[2].textContent === 'healthy' && row.children[4].textContent === '9';
  }, null, { timeout: 15000 });
  const hostRow = await page.locator('#hosts tbody tr').first().textContent();
  assert.ok(hostRow.includes(replay.url), hostRow);
  assert.match(hostRow, /replay/);

  // Live rates: posts while the page refreshes show a non-zero intake and delivery rate.
  const posting = (async () => {
    for (let i = 100; i < 160; i += 1) await post(reflektor.url, { id: `r${i}`, text: `rate ${i}` });
  })();
  await page.waitForFunction(() => {
    const n = (id) => Number(document.getElementById(id).textContent.replace(/,/g, ''));
    return n('intake-rate') > 0 && n('delivery-rate') > 0;
  }, null, { timeout: 20000, polling: 100 });
  await posting;

  fs.mkdirSync(OUT_DIR, { recursive: true });
  await page.screenshot({ path: path.join(OUT_DIR, 'ops-page.png'), fullPage: true });
  if (process.env.OPS_SCREENSHOT) {
    await page.screenshot({ path: path.resolve(ROOT, process.env.OPS_SCREENSHOT), fullPage: true });
  }

  // Redrive: the host now takes the record; the entry leaves the list.
  replay.fixed = true;
  await page.click('#dead-letters tbody tr button.redrive');
  await page.waitForFunction(() => document.querySelectorAll('#dead-letters tbody tr').length === 0, null, { timeout: 15000 });
  assert.match(await page.locator('#notice').textContent(), /redriven/);
  const poisoned = replay.received.filter((r) => r.body.includes('poison'));
  assert.equal(poisoned.length, 2, 'refused once, then redriven once');

  // Add a host from the form, then remove it (confirming the dialog).
  await page.fill('#host-url', spare.url);
  await page.selectOption('#host-mode', 'replay');
  await page.click('#add-host button[type=submit]');
  await page.waitForFunction(() => document.querySelectorAll('#hosts tbody tr').length === 2);
  assert.match(await page.locator('#notice').textContent(), /Added/);
  await waitUntil('the new host receives the log', () => spare.received.length > 0);
  page.once('dialog', (d) => d.accept());
  const spareRow = page.locator('#hosts tbody tr', { hasText: spare.url });
  await spareRow.locator('button.remove').click();
  await page.waitForFunction(() => document.querySelectorAll('#hosts tbody tr').length === 1);
  assert.equal(await rowCount(page, 'hosts'), 1);

  // A reload keeps the session; logging out forgets the token.
  await page.reload();
  await page.locator('#console').waitFor({ state: 'visible' });
  await page.click('#logout');
  await page.locator('#login').waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('reflektor.admin-token')), null);

  assert.deepEqual(errors, [], 'no script errors or CSP violations');
  await page.close();
});

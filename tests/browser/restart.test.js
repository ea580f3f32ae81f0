'use strict';
// The demo page against ekg hosts fed by reflektor, through faults: a host killed and
// restarted (rebuilt from reflektor's log), a host draining (reconnect frame), a burst that
// makes connections lag; posting from the page through the intake; and a standalone host
// restarting empty (the page starts over).

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const {
  REFLEKTOR_BIN, tempDir, startEkg, startReflektor, api, launchBrowser, openRoom, waitForTexts, waitForStatus,
} = require('./lib');

const SECRET = 'browser-restart-secret';
let browser;
const cleanup = [];

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  for (const fn of cleanup.reverse()) await fn();
  await browser?.close();
});

const texts = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => `note ${from + i}`);

async function postVia(intake, from, to, room = 'crash') {
  for (let i = from; i <= to; i += 1) {
    const res = await fetch(`${intake}/rooms/${room}/messages`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ id: `n${i}`, user: 'ops', text: `note ${i}` }),
    });
    assert.equal(res.status, 202, `intake answered ${res.status}: ${await res.text()}`);
  }
}

test('a page reconnects after its ekg host is killed and restarted, and misses nothing', async (t) => {
  if (!fs.existsSync(REFLEKTOR_BIN)) {
    t.skip(`${REFLEKTOR_BIN} is missing`);
    return;
  }
  const dataDir = tempDir('ekg-browser-reflektor-');
  cleanup.push(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  let ekg = await startEkg({ standalone: false, args: ['--secret', SECRET] });
  cleanup.push(() => ekg.stop());
  const reflektor = await startReflektor({ hosts: [ekg.url], dataDir, args: ['--secret', SECRET] });
  cleanup.push(async () => {
    await reflektor.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  await postVia(reflektor.url, 1, 5);
  const ws = await openRoom(browser.context, ekg.url, { room: 'crash', transport: 'ws' });
  const sse = await openRoom(browser.context, ekg.url, { room: 'crash', transport: 'sse' });
  for (const page of [ws, sse]) {
    await waitForStatus(page, 'connected');
    await waitForTexts(page, texts(1, 5));
  }
  await postVia(reflektor.url, 6, 7);
  for (const page of [ws, sse]) await waitForTexts(page, texts(1, 7));

  // Crash the host; the pages notice and keep retrying.
  const port = ekg.port;
  await ekg.stop('SIGKILL');
  for (const page of [ws, sse]) {
    await page.waitForFunction(() => document.querySelector('#status').dataset.state === 'reconnecting', null, { timeout: 10000 });
  }
  // Accepted by the intake while no host is up.
  await postVia(reflektor.url, 8, 12);

  // The same address again: reflektor replays its log into the empty host.
  ekg = await startEkg({ port, standalone: false, args: ['--secret', SECRET] });
  for (const page of [ws, sse]) {
    await waitForStatus(page, 'connected', undefined, 30000);
    await waitForTexts(page, texts(1, 12), 30000);
  }
  await postVia(reflektor.url, 13, 13);
  for (const page of [ws, sse]) {
    await waitForTexts(page, texts(1, 13));
    const seqs = await page.evaluate(() => [...document.querySelectorAll('#messages li')].map((li) => Number(li.dataset.seq)));
    assert.equal(new Set(seqs).size, seqs.length, 'a message is shown twice');
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
  }
  await ws.close();
  await sse.close();
});

test('a draining host tells the page to reconnect, and the page resumes on the host that replaces it', async (t) => {
  if (!fs.existsSync(REFLEKTOR_BIN)) {
    t.skip(`${REFLEKTOR_BIN} is missing`);
    return;
  }
  const room = 'drain';
  const ekgArgs = ['--secret', SECRET, '--drain-window', '300ms'];
  const dataDir = tempDir('ekg-browser-reflektor-');
  cleanup.push(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  let ekg = await startEkg({ standalone: false, args: ekgArgs });
  cleanup.push(() => ekg.stop());
  const reflektor = await startReflektor({ hosts: [ekg.url], dataDir, args: ['--secret', SECRET] });
  cleanup.push(async () => {
    await reflektor.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
  await postVia(reflektor.url, 1, 3, room);
  const pages = [];
  for (const transport of ['ws', 'sse']) {
    const page = await openRoom(browser.context, ekg.url, { room, transport });
    await waitForStatus(page, 'connected', transport);
    await waitForTexts(page, texts(1, 3));
    await page.evaluate(() => {
      window.reconnectFrames = [];
      window.ekgDemo.client.on('reconnect', (f) => window.reconnectFrames.push(f));
    });
    pages.push(page);
  }

  const port = ekg.port;
  await ekg.stop('SIGTERM');
  assert.equal(ekg.proc.exitCode, 0, `ekg did not drain cleanly\n${ekg.stderr()}`);
  for (const page of pages) {
    const frames = await page.evaluate(() => window.reconnectFrames);
    assert.equal(frames.length, 1, 'one reconnect frame');
    assert.ok(frames[0].after_ms >= 0 && frames[0].after_ms < 1000, `after_ms ${frames[0].after_ms}`);
  }
  await postVia(reflektor.url, 4, 5, room);
  ekg = await startEkg({ port, standalone: false, args: ekgArgs });
  for (const [i, page] of pages.entries()) {
    await waitForStatus(page, 'connected', i === 0 ? 'ws' : 'sse', 30000);
    await waitForTexts(page, texts(1, 5), 30000);
    assert.deepEqual(page.errors, []);
    await page.close();
  }
});

test('a page too slow for a burst is disconnected as lagging and catches up from its cursor', async (t) => {
  if (!fs.existsSync(REFLEKTOR_BIN)) {
    t.skip(`${REFLEKTOR_BIN} is missing`);
    return;
  }
  const room = 'burst';
  const total = 300;
  const dataDir = tempDir('ekg-browser-reflektor-');
  cleanup.push(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  // A tiny send queue: a batch of hundreds of events overflows every connection.
  const ekg = await startEkg({ standalone: false, args: ['--secret', SECRET, '--send-queue', '2'] });
  cleanup.push(() => ekg.stop());
  const reflektor = await startReflektor({ hosts: [ekg.url], dataDir, args: ['--secret', SECRET] });
  cleanup.push(async () => {
    await reflektor.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
  const pages = [];
  for (const transport of ['ws', 'sse']) {
    const page = await openRoom(browser.context, ekg.url, { room, transport });
    await waitForStatus(page, 'connected', transport);
    pages.push(page);
  }
  // Concurrent posts so reflektor delivers them in large batches.
  const posts = [];
  for (let i = 1; i <= total; i += 1) {
    posts.push(fetch(`${reflektor.url}/rooms/${room}/messages`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ id: `b${i}`, user: 'load', text: `note ${i}` }),
    }).then((r) => assert.equal(r.status, 202)));
    if (posts.length % 50 === 0) await Promise.all(posts.slice(-50));
  }
  await Promise.all(posts);
  // Intake order is the post order only per batch of 50; compare as a set, then check order by seq.
  for (const page of pages) {
    await page.waitForFunction((n) => document.querySelectorAll('#messages li').length >= n, total, { timeout: 30000 });
    const got = await page.evaluate(() => [...document.querySelectorAll('#messages li')].map((li) => [Number(li.dataset.seq), li.querySelector('.text').textContent]));
    assert.equal(got.length, total, 'each message exactly once');
    assert.equal(new Set(got.map(([, text]) => text)).size, total);
    const seqs = got.map(([seq]) => seq);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'in seq order');
    assert.deepEqual(page.errors, []);
  }
  const metrics = await (await fetch(`${ekg.url}/metrics`)).text();
  const lagged = [...metrics.matchAll(/^ekg_lagging_disconnects_total\{[^}]*\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
  t.diagnostic(`lagging disconnects during the burst: ${lagged}`);
  assert.ok(lagged > 0, "the burst did not make any connection lag; the test proves nothing");
  for (const page of pages) await page.close();
});

test('the demo page posts through reflektor\'s intake (another origin)', async (t) => {
  if (!fs.existsSync(REFLEKTOR_BIN)) {
    t.skip(`${REFLEKTOR_BIN} is missing`);
    return;
  }
  const help = spawnSync(REFLEKTOR_BIN, ['--help'], { encoding: 'utf8' }).stdout ?? '';
  const cors = help.includes('--cors-origin');
  const room = 'intake';
  const dataDir = tempDir('ekg-browser-reflektor-');
  cleanup.push(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const ekg = await startEkg({ standalone: false, args: ['--secret', SECRET] });
  cleanup.push(() => ekg.stop());
  const reflektor = await startReflektor({
    hosts: [ekg.url], dataDir, args: ['--secret', SECRET, ...(cors ? ['--cors-origin', ekg.url] : [])],
  });
  cleanup.push(async () => {
    await reflektor.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
  const page = await openRoom(browser.context, ekg.url, { room, intake: reflektor.url, user: 'eve' });
  await waitForStatus(page, 'connected');
  await page.fill('#text', 'through the relay');
  await page.click('#send');
  if (cors) {
    await waitForTexts(page, ['through the relay']);
    assert.equal(await page.textContent('#notice'), '');
  } else {
    // Without CORS on the intake the browser refuses the cross-origin POST: the page must say so.
    t.diagnostic('reflektor has no --cors-origin: a page on another origin cannot post through it');
    await page.waitForFunction(() => document.querySelector('#notice').classList.contains('error'), null, { timeout: 10000 });
    assert.match(await page.textContent('#notice'), /Sending failed: cannot reach .*CORS/);
  }
  assert.deepEqual(page.errors, []);
  await page.close();
});

test('a page reloads the room when a standalone host restarts empty on the same port', async () => {
  // A standalone host keeps no log: it restarts empty, seqs from 1 again. The page's cursor
  // is then ahead of the host (reset "cursor_ahead"): it must start over, not drop the new
  // events as duplicates.
  let ekg = await startEkg();
  cleanup.push(() => ekg.stop());
  for (let i = 1; i <= 3; i += 1) await api.post(ekg.url, 'again', { id: `a${i}`, user: 'x', text: `before ${i}` });
  const page = await openRoom(browser.context, ekg.url, { room: 'again', transport: 'auto' });
  await waitForTexts(page, ['before 1', 'before 2', 'before 3']);
  const port = ekg.port;
  await ekg.stop('SIGKILL');
  await page.waitForFunction(() => document.querySelector('#status').dataset.state === 'reconnecting', null, { timeout: 10000 });
  ekg = await startEkg({ port });
  await waitForStatus(page, 'connected', 'ws', 30000);
  await waitForTexts(page, []);
  assert.match(await page.textContent('#notice'), /started over/);
  await api.post(ekg.url, 'again', { id: 'a1', user: 'x', text: 'after 1' });
  await waitForTexts(page, ['after 1']);
  assert.deepEqual(page.errors, []);
  await page.close();
});

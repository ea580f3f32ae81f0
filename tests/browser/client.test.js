'use strict';
// The ekg browser client (/ekg.js) and demo page (/) in headless Chromium, against a real
// standalone ekg host.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const {
  ROOT, OUT_DIR, TOKEN, startEkg, api, launchBrowser, openRoom, shownTexts, waitForTexts, waitForStatus,
} = require('./lib');

let ekg;
let browser;

before(async () => {
  ekg = await startEkg();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await ekg?.stop();
});

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

test('ekg serves this tree\'s client and demo page', async () => {
  for (const [route, file] of [['/ekg.js', 'ekg/static/ekg.js'], ['/', 'ekg/static/index.html']]) {
    const res = await fetch(ekg.url + route);
    assert.equal(res.status, 200, route);
    const served = await res.text();
    const onDisk = fs.readFileSync(path.join(ROOT, file), 'utf8');
    assert.ok(served === onDisk, `${route} differs from ${file}: the ekg binary is stale, rebuild it (cargo build -p ekg)`);
  }
  const js = await fetch(ekg.url + '/ekg.js');
  assert.match(js.headers.get('content-type') ?? '', /javascript/);
});

test('live messages arrive over WebSocket on one page and over SSE on another', async () => {
  const room = 'live';
  const ws = await openRoom(browser.context, ekg.url, { room, transport: 'ws' });
  const sse = await openRoom(browser.context, ekg.url, { room, transport: 'sse' });
  await waitForStatus(ws, 'connected', 'ws');
  await waitForStatus(sse, 'connected', 'sse');
  assert.match(await ws.textContent('#status'), /connected · WebSocket/);
  assert.match(await sse.textContent('#status'), /connected · SSE/);

  const texts = range(1, 10).map((i) => `live ${i} <b>not bold</b> & "quoted"`);
  for (const [i, text] of texts.entries()) await api.post(ekg.url, room, { id: `m${i + 1}`, user: 'ann', text });
  await waitForTexts(ws, texts);
  await waitForTexts(sse, texts);
  // Rendered as text, never as markup.
  assert.equal(await ws.locator('#messages b').count(), 0);
  assert.equal(await ws.locator('#messages li .user').first().textContent(), 'ann');
  // A custom ephemeral event reaches the page too.
  await api.event(ekg.url, room, { type: 'typing', data: { user: 'bob' }, ephemeral: true });
  await ws.waitForFunction(() => document.querySelector('#typing').textContent.includes('bob is typing'), null, { timeout: 10000 });
  for (const page of [ws, sse]) {
    assert.deepEqual(page.errors, []);
    assert.deepEqual(page.consoleErrors, []);
  }
  await ws.close();
  await sse.close();
});

test('scrolling to the top loads older pages in order, without duplicates', async () => {
  const room = 'paging';
  const total = 120;
  for (const i of range(1, total)) await api.post(ekg.url, room, { id: `p${i}`, user: 'u', text: `msg ${i}` });
  const page = await openRoom(browser.context, ekg.url, { room, transport: 'ws', limit: '50' });
  await waitForStatus(page, 'connected', 'ws');
  // The newest page first.
  await waitForTexts(page, range(total - 49, total).map((i) => `msg ${i}`));
  // Live messages while the history is being paged in.
  for (const i of range(total + 1, total + 3)) await api.post(ekg.url, room, { id: `p${i}`, user: 'u', text: `msg ${i}` });
  await page.waitForFunction((n) => document.querySelectorAll('#messages li').length === n, 53, { timeout: 10000 });

  let loads = 0;
  for (;;) {
    const before = (await shownTexts(page)).length;
    const done = await page.evaluate(() => document.querySelector('#history-state').textContent === 'beginning of the room');
    if (done) break;
    assert.ok(loads < 10, 'too many scrolls to reach the beginning');
    await page.evaluate(() => {
      document.querySelector('#scroller').scrollTop = 0;
    });
    await page.waitForFunction(
      (n) => document.querySelectorAll('#messages li').length > n
        || document.querySelector('#history-state').textContent === 'beginning of the room',
      before,
      { timeout: 10000 },
    );
    loads += 1;
  }
  assert.ok(loads >= 2, `expected at least two older pages, got ${loads}`);
  const want = range(1, total + 3).map((i) => `msg ${i}`);
  await waitForTexts(page, want);
  const seqs = await page.evaluate(() => [...document.querySelectorAll('#messages li')].map((li) => Number(li.dataset.seq)));
  assert.equal(new Set(seqs).size, seqs.length, 'duplicate seqs shown');
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'seqs out of order');
  assert.deepEqual(page.errors, []);
  await page.close();
});

test('an edit changes a message in place and a delete removes it', async () => {
  const room = 'edits';
  for (const i of range(1, 4)) await api.post(ekg.url, room, { id: `e${i}`, user: 'cy', text: `original ${i}` });
  const ws = await openRoom(browser.context, ekg.url, { room, transport: 'ws' });
  const sse = await openRoom(browser.context, ekg.url, { room, transport: 'sse' });
  for (const page of [ws, sse]) {
    await waitForStatus(page, 'connected');
    await waitForTexts(page, ['original 1', 'original 2', 'original 3', 'original 4']);
  }
  const secondBefore = await ws.evaluate(() => document.querySelectorAll('#messages li')[1].dataset.seq);

  await api.put(ekg.url, room, 'e2', { id: 'e2', user: 'cy', text: 'edited 2' });
  await api.del(ekg.url, room, 'e3');
  for (const page of [ws, sse]) {
    await waitForTexts(page, ['original 1', 'edited 2', 'original 4']);
    assert.equal(await page.locator('#messages li[data-id="e2"] .edited').count(), 1);
  }
  // In place: same element position and original seq.
  assert.equal(await ws.evaluate(() => document.querySelectorAll('#messages li')[1].dataset.seq), secondBefore);
  // A fresh page sees the same state from history.
  const fresh = await openRoom(browser.context, ekg.url, { room, transport: 'auto' });
  await waitForTexts(fresh, ['original 1', 'edited 2', 'original 4']);
  assert.equal(await fresh.locator('#messages li[data-id="e2"] .edited').count(), 1);
  for (const page of [ws, sse, fresh]) {
    assert.deepEqual(page.errors, []);
    await page.close();
  }
});

test('the composer posts through the intake and says so when posting fails', async () => {
  const room = 'composer';
  const page = await openRoom(browser.context, ekg.url, { room, intake: ekg.url, token: TOKEN, user: 'dee' });
  await waitForStatus(page, 'connected');
  await page.fill('#text', 'hello from the page');
  await page.click('#send');
  await waitForTexts(page, ['hello from the page']);
  assert.equal(await page.locator('#messages li .user').first().textContent(), 'dee');
  assert.equal(await page.inputValue('#text'), '');

  // Wrong token: the intake refuses, the page says why.
  const bad = await openRoom(browser.context, ekg.url, { room, intake: ekg.url, token: 'wrong' });
  await waitForStatus(bad, 'connected');
  await bad.fill('#text', 'will not go through');
  await bad.click('#send');
  await bad.waitForFunction(() => document.querySelector('#notice').classList.contains('error'), null, { timeout: 10000 });
  assert.match(await bad.textContent('#notice'), /Sending failed: 401/);
  // Unreachable intake.
  const down = await openRoom(browser.context, ekg.url, { room, intake: 'http://127.0.0.1:9' });
  await down.fill('#text', 'nowhere');
  await down.click('#send');
  await down.waitForFunction(() => document.querySelector('#notice').classList.contains('error'), null, { timeout: 10000 });
  assert.match(await down.textContent('#notice'), /Sending failed: cannot reach/);
  // Without an intake the page is read-only and says so.
  const ro = await openRoom(browser.context, ekg.url, { room });
  assert.equal(await ro.isDisabled('#send'), true);
  assert.match(await ro.textContent('#notice'), /Read-only/);
  await waitForTexts(ro, ['hello from the page']);
  for (const p of [page, bad, down, ro]) await p.close();
});

test('auto falls back to SSE where WebSocket cannot connect', async () => {
  const room = 'fallback';
  await api.post(ekg.url, room, { id: 'f1', user: 'x', text: 'first' });
  const page = await browser.context.newPage();
  // A network path that refuses WebSocket (some proxies do): every socket fails to open.
  await page.addInitScript(() => {
    window.wsAttempts = 0;
    window.WebSocket = class {
      constructor() {
        window.wsAttempts += 1;
        setTimeout(() => this.onclose?.({ code: 1006, reason: '' }), 5);
      }
      close() {}
    };
  });
  await page.goto(`${ekg.url}/?room=${room}&transport=auto`);
  await waitForStatus(page, 'connected', 'sse');
  await waitForTexts(page, ['first']);
  await api.post(ekg.url, room, { id: 'f2', user: 'x', text: 'second' });
  await waitForTexts(page, ['first', 'second']);
  assert.equal(await page.evaluate(() => window.wsAttempts), 2);
  await page.close();
});

test('a room can be switched from the page', async () => {
  await api.post(ekg.url, 'switch-a', { id: 'a1', user: 'x', text: 'in a' });
  await api.post(ekg.url, 'switch-b', { id: 'b1', user: 'x', text: 'in b' });
  const page = await openRoom(browser.context, ekg.url, { room: 'switch-a' });
  await waitForTexts(page, ['in a']);
  await page.fill('#room', 'switch-b');
  await page.click('#room-form button');
  await waitForTexts(page, ['in b']);
  await api.post(ekg.url, 'switch-a', { id: 'a2', user: 'x', text: 'a again' });
  await api.post(ekg.url, 'switch-b', { id: 'b2', user: 'x', text: 'b again' });
  await waitForTexts(page, ['in b', 'b again']);
  assert.match(page.url(), /room=switch-b/);
  await page.close();
});

test('the client works from another origin', async (t) => {
  // The page and module come from a plain static server; ekg is only the API.
  const staticDir = path.join(ROOT, 'ekg/static');
  const server = http.createServer((req, res) => {
    const name = req.url.startsWith('/ekg.js') ? 'ekg.js' : 'index.html';
    res.writeHead(200, { 'Content-Type': name.endsWith('.js') ? 'text/javascript' : 'text/html' });
    res.end(fs.readFileSync(path.join(staticDir, name)));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => {
    server.closeAllConnections();
    return new Promise((r) => server.close(r));
  });
  const origin = `http://127.0.0.1:${server.address().port}`;
  const corsEkg = await startEkg({ args: ['--cors-origin', origin] });
  t.after(() => corsEkg.stop());
  await api.post(corsEkg.url, 'cors', { id: 'c1', user: 'x', text: 'history' });
  for (const transport of ['ws', 'sse']) {
    const page = await browser.context.newPage();
    await page.goto(`${origin}/?room=cors&transport=${transport}&ekg=${encodeURIComponent(corsEkg.url + '/')}`);
    await waitForStatus(page, 'connected', transport);
    await waitForTexts(page, ['history', ...(transport === 'sse' ? ['live ws'] : [])]);
    await api.post(corsEkg.url, 'cors', { id: `c-${transport}`, user: 'x', text: `live ${transport}` });
    await waitForTexts(page, ['history', 'live ws', ...(transport === 'sse' ? ['live sse'] : [])]);
    await page.close();
  }
});

test('screenshot of the demo page', async () => {
  const room = 'demo';
  const lines = [
    ['ann', 'Morning! Is the deploy still on for 10:00?'],
    ['bob', 'Yes. reflektor is draining the old hosts now.'],
    ['cy', 'Clients moved over without a gap, seqs line up on every host.'],
    ['ann', 'Nice. Scrolling back through yesterday works too.'],
    ['dee', 'Shipping it.'],
  ];
  for (const [i, [user, text]] of lines.entries()) await api.post(ekg.url, room, { id: `d${i}`, user, text });
  await api.put(ekg.url, room, 'd4', { id: 'd4', user: 'dee', text: 'Shipping it (after the checks pass).' });
  const page = await openRoom(browser.context, ekg.url, { room, intake: ekg.url, token: TOKEN, user: 'you' });
  await waitForStatus(page, 'connected', 'ws');
  await waitForTexts(page, [...lines.slice(0, 4).map(([, t]) => t), 'Shipping it (after the checks pass).']);
  await api.event(ekg.url, room, { type: 'typing', data: { user: 'bob' }, ephemeral: true });
  await page.waitForFunction(() => document.querySelector('#typing').textContent !== '', null, { timeout: 10000 });
  await page.fill('#text', 'Looks good from here');
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const file = path.join(OUT_DIR, 'demo.png');
  await page.screenshot({ path: file });
  assert.ok(fs.statSync(file).size > 10000);
  assert.deepEqual(page.errors, []);
  await page.close();
});

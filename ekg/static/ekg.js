// ekg browser client: live room events over WebSocket or Server-Sent Events, with
// resume from the last seq, reconnect with backoff and jitter, and history paging.
//
//   import { connect } from '/ekg.js';
//   const room = connect('lobby', { transport: 'auto' });
//   room.on('message', (m) => ...);          // {seq, id, data, ts}
//   room.on('update',  (m) => ...);          // {seq, id, data, ts}
//   room.on('delete',  (m) => ...);          // {seq, id, ts}
//   room.on('typing',  (e) => ...);          // custom events, by their `event` name (and as 'event')
//   room.on('reset',   (r) => ...);          // history trimmed: reload the view
//   room.on('status',  (s) => ...);          // {state, transport, attempt?, delayMs?}
//   const { messages, hasMore } = await room.loadOlder(50);
//   room.close();
//
// Guarantees kept here (the server guarantees order and completeness per room):
// - every event with a seq is delivered at most once: anything at or below the last seq seen
//   is dropped, and every reconnect resumes with `after=<last seq seen>`;
// - loadOlder() never returns a message already delivered or loaded, nor one deleted since;
// - the connection is re-established on its own until close() is called.
//
// The protocol is docs/PROTOCOL.md section 4. No dependencies; works cross-origin when the
// ekg host allows the page's origin.

const BACKOFF_BASE_MS = 250;
const BACKOFF_MAX_MS = 15000;
// A connection that delivered its hello and stayed up this long resets the backoff.
const STABLE_MS = 5000;
// 'auto' switches to SSE after this many WebSocket attempts in a row that never opened
// (as long as no WebSocket ever opened in this session).
const WS_FAILURES_BEFORE_SSE = 2;
// The first history page waits this long for the stream's hello, which splits history from live.
const HELLO_WAIT_MS = 5000;
// Frame types the server sends over SSE as named events.
const SSE_EVENT_NAMES = ['hello', 'message', 'update', 'delete', 'event', 'reset', 'lagging', 'reconnect'];
// Names a custom event may not shadow when it is re-emitted under its own name.
const RESERVED = new Set(['hello', 'message', 'update', 'delete', 'event', 'reset', 'status', 'error', 'frame']);

function defaultBaseUrl() {
  try {
    return new URL('./', import.meta.url).href;
  } catch {
    return typeof location !== 'undefined' ? location.href : 'http://127.0.0.1:7080/';
  }
}

function withSlash(url) {
  return url.endsWith('/') ? url : url + '/';
}

/** Full-jitter exponential backoff: uniform in [0, min(max, base * 2^attempt)]. */
export function backoffDelay(attempt, baseMs = BACKOFF_BASE_MS, maxMs = BACKOFF_MAX_MS) {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(Math.random() * cap);
}

class Emitter {
  constructor() {
    this._handlers = new Map();
  }
  on(type, fn) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(fn);
    return () => this.off(type, fn);
  }
  off(type, fn) {
    this._handlers.get(type)?.delete(fn);
  }
  addEventListener(type, fn) {
    this.on(type, fn);
  }
  removeEventListener(type, fn) {
    this.off(type, fn);
  }
  emit(type, detail) {
    const set = this._handlers.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(detail);
      } catch (err) {
        // A broken handler must not break the stream for the others.
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
}

class Room extends Emitter {
  constructor(room, options) {
    super();
    this.room = room;
    this.baseUrl = withSlash(options.baseUrl ?? defaultBaseUrl());
    this.mode = options.transport ?? 'auto';
    if (!['ws', 'sse', 'auto'].includes(this.mode)) {
      throw new TypeError(`transport must be 'ws', 'sse' or 'auto', not ${this.mode}`);
    }
    this.transport = this.mode === 'sse' ? 'sse' : 'ws';
    /** Highest seq delivered; the resume cursor. */
    this.lastSeq = Number.isFinite(options.after) ? options.after : null;
    this.head = null;
    this.oldest = null;
    this.state = 'connecting';
    this._closed = false;
    this._attempt = 0;
    this._wsFailures = 0;
    this._wsOpenedOnce = false;
    this._everConnected = false;
    this._pendingReconnectMs = undefined;
    this._conn = null;
    this._timer = null;
    this._stableTimer = null;
    this._loading = null;
    // Events above this seq come (or came) through the stream; history pages stop at it.
    this._liveFrom = this.lastSeq;
    this._helloWaiters = [];
    // Bumped by every reset: a history page fetched before it is stale.
    this._generation = 0;
    // What the caller has been given, so history pages never repeat it.
    this._shownSeqs = new Set();
    this._oldestShown = null;
    this._hasMore = true;
    this._deletedIds = new Set();
    this._updates = new Map(); // id -> latest update frame not yet merged into a page
    this._onOnline = () => {
      if (this.state === 'reconnecting' && !this._conn) this._reconnectNow();
    };
    if (typeof addEventListener === 'function') addEventListener('online', this._onOnline);
    this._open();
  }

  // ----- connection management -----

  _url(kind) {
    const url = new URL(`rooms/${encodeURIComponent(this.room)}/${kind}`, this.baseUrl);
    if (this.lastSeq !== null) url.searchParams.set('after', String(this.lastSeq));
    if (kind === 'ws') url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return url.href;
  }

  _setStatus(state, extra = {}) {
    this.state = state;
    this.emit('status', { state, transport: this.transport, ...extra });
  }

  _open() {
    if (this._closed) return;
    clearTimeout(this._timer);
    this._timer = null;
    this._setStatus(this._everConnected ? 'reconnecting' : 'connecting');
    if (this.transport === 'ws') this._openWs();
    else this._openSse();
  }

  _openWs() {
    let ws;
    try {
      ws = new WebSocket(this._url('ws'));
    } catch (err) {
      this._lost({ opened: false, reason: String(err) });
      return;
    }
    const conn = { kind: 'ws', opened: false, done: false, socket: ws };
    conn.close = () => {
      conn.done = true;
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    };
    this._conn = conn;
    ws.onopen = () => {
      conn.opened = true;
      this._wsOpenedOnce = true;
      this._wsFailures = 0;
    };
    ws.onmessage = (ev) => {
      if (conn.done || typeof ev.data !== 'string') return;
      this._frame(ev.data, conn);
    };
    ws.onclose = (ev) => {
      if (conn.done) return;
      conn.done = true;
      this._lost({ opened: conn.opened, code: ev.code, reason: ev.reason, lagging: ev.code === 4008 });
    };
    ws.onerror = () => {
      // onclose follows with the details.
    };
  }

  _openSse() {
    let es;
    try {
      es = new EventSource(this._url('sse'));
    } catch (err) {
      this._lost({ opened: false, reason: String(err) });
      return;
    }
    const conn = { kind: 'sse', opened: false, done: false, socket: es };
    conn.close = () => {
      conn.done = true;
      es.close();
    };
    this._conn = conn;
    es.onopen = () => {
      conn.opened = true;
    };
    const onFrame = (ev) => {
      if (!conn.done) this._frame(ev.data, conn);
    };
    for (const name of SSE_EVENT_NAMES) es.addEventListener(name, onFrame);
    es.onerror = () => {
      // EventSource would reconnect with its own fixed delay and Last-Event-ID; ours resumes
      // with backoff and the cursor instead.
      if (conn.done) return;
      conn.done = true;
      es.close();
      this._lost({ opened: conn.opened, lagging: conn.lagging === true });
    };
  }

  _lost(info) {
    if (this._conn) this._conn.done = true;
    this._conn = null;
    clearTimeout(this._stableTimer);
    if (this._closed) return;
    if (this._pendingReconnectMs !== undefined) {
      // The host asked us to move: its delay replaces the backoff.
      const delay = this._pendingReconnectMs;
      this._pendingReconnectMs = undefined;
      this._schedule(delay);
      return;
    }
    if (this.transport === 'ws' && !info.opened) {
      this._wsFailures += 1;
      // Only a path where WebSocket never worked falls back; a host that is down or
      // restarting fails both transports alike.
      if (this.mode === 'auto' && !this._wsOpenedOnce && this._wsFailures >= WS_FAILURES_BEFORE_SSE) {
        this.transport = 'sse';
        this._attempt = 0;
        this._schedule(0);
        return;
      }
    }
    if (info.lagging) {
      // Too slow for the stream: resume at once from the cursor.
      this._schedule(0);
      return;
    }
    const delay = backoffDelay(this._attempt);
    this._attempt += 1;
    this._schedule(delay);
  }

  _schedule(delayMs) {
    this._setStatus('reconnecting', { attempt: this._attempt, delayMs });
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._open(), delayMs);
  }

  _reconnectNow() {
    clearTimeout(this._timer);
    this._open();
  }

  // ----- frames -----

  _frame(text, conn) {
    let f;
    try {
      f = JSON.parse(text);
    } catch {
      return;
    }
    if (!f || typeof f !== 'object') return;
    this.emit('frame', f);
    switch (f.type) {
      case 'hello':
        conn.hello = true;
        this.head = f.head ?? null;
        this.oldest = f.oldest ?? null;
        if (typeof f.head === 'number') {
          if (this._liveFrom === null) this._liveFrom = f.head;
          // Resume from here even if this connection drops before its first event.
          if (this.lastSeq === null) this.lastSeq = f.head;
        }
        for (const wake of this._helloWaiters.splice(0)) wake();
        this._everConnected = true;
        clearTimeout(this._stableTimer);
        this._stableTimer = setTimeout(() => {
          this._attempt = 0;
        }, STABLE_MS);
        this._setStatus('connected');
        this.emit('hello', f);
        return;
      case 'reset': {
        // The cursor cannot be honoured: what the caller shows may have holes or belong to
        // another log. Start over from where this stream now continues:
        // - history_trimmed: every retained event from `oldest` follows;
        // - right after hello (cursor_ahead: a host on another log, or still catching up):
        //   live events after the hello's head follow;
        // - mid-stream (new_log): this stream ends; the next hello decides.
        let from = null;
        if (f.reason === 'history_trimmed' && typeof f.oldest === 'number') from = f.oldest - 1;
        else if (conn.hello && !conn.sawSeq && typeof this.head === 'number') from = this.head;
        this._generation += 1;
        this._shownSeqs.clear();
        this._oldestShown = null;
        this._hasMore = true;
        this.lastSeq = from;
        this._liveFrom = from;
        if (typeof f.oldest === 'number') this.oldest = f.oldest;
        this.emit('reset', f);
        return;
      }
      case 'lagging':
        conn.lagging = true;
        return;
      case 'reconnect': {
        const ms = Number(f.after_ms);
        this._pendingReconnectMs = Number.isFinite(ms) && ms >= 0 ? ms : backoffDelay(0);
        this.emit('reconnect', f);
        // Moving is our decision as much as the server's: close now, reopen after the delay.
        conn.close();
        this._lost({ opened: true });
        return;
      }
      default:
        break;
    }
    if (typeof f.seq === 'number') {
      conn.sawSeq = true;
      if (this.lastSeq !== null && f.seq <= this.lastSeq) return; // already delivered
      this.lastSeq = f.seq;
    }
    switch (f.type) {
      case 'message':
        this._markShown(f.seq);
        this.emit('message', f);
        break;
      case 'update':
        if (f.id !== undefined) this._updates.set(String(f.id), f);
        this.emit('update', f);
        break;
      case 'delete':
        if (f.id !== undefined) {
          this._deletedIds.add(String(f.id));
          this._updates.delete(String(f.id));
        }
        this.emit('delete', f);
        break;
      case 'event':
        this.emit('event', f);
        if (typeof f.event === 'string' && !RESERVED.has(f.event)) this.emit(f.event, f);
        break;
      default:
        this.emit(f.type, f);
    }
  }

  _markShown(seq) {
    if (typeof seq !== 'number') return;
    this._shownSeqs.add(seq);
    if (this._oldestShown === null || seq < this._oldestShown) this._oldestShown = seq;
  }

  // ----- history -----

  /**
   * The page of messages just before the oldest one delivered so far (the newest page when
   * nothing was delivered yet), oldest first, in their latest form. Never repeats a message,
   * and never returns one the stream delivers (seq above the head announced by the first
   * hello), so history and live events interleave without reordering. Concurrent calls share
   * one request.
   */
  loadOlder(limit = 50) {
    if (this._loading) return this._loading;
    this._loading = this._fetchOlder(limit).finally(() => {
      this._loading = null;
    });
    return this._loading;
  }

  _waitForHello(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this._helloWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  get hasMore() {
    return this._hasMore;
  }

  async _fetchOlder(limit) {
    if (!this._hasMore) return { messages: [], hasMore: false };
    let body;
    for (let tries = 0; ; tries += 1) {
      if (this._liveFrom === null) await this._waitForHello(HELLO_WAIT_MS);
      const generation = this._generation;
      const url = new URL(`rooms/${encodeURIComponent(this.room)}/messages`, this.baseUrl);
      if (this._oldestShown !== null) url.searchParams.set('before', String(this._oldestShown));
      url.searchParams.set('limit', String(limit));
      const res = await fetch(url.href, { headers: { Accept: 'application/json' } });
      body = await res.json().catch(() => null);
      if (!res.ok || !body) {
        const err = new Error(body?.message ?? `GET ${url.pathname} failed with ${res.status}`);
        err.status = res.status;
        err.code = body?.error;
        throw err;
      }
      if (generation === this._generation) break;
      if (tries >= 3) return { messages: [], hasMore: this._hasMore }; // resets keep coming
    }
    const page = Array.isArray(body.messages) ? body.messages : [];
    const messages = [];
    for (const m of page) {
      if (typeof m.seq !== 'number' || this._shownSeqs.has(m.seq)) continue;
      if (this._liveFrom !== null && m.seq > this._liveFrom) continue; // the stream delivers it
      const id = m.id === undefined ? undefined : String(m.id);
      if (id !== undefined && this._deletedIds.has(id)) continue;
      let out = m;
      const live = id === undefined ? undefined : this._updates.get(id);
      if (live && live.seq > (m.updated ?? m.seq)) out = { ...m, data: live.data, updated: live.seq };
      messages.push(out);
    }
    messages.sort((a, b) => a.seq - b.seq);
    // Move the cursor by what the server returned, shown or not, so paging always progresses.
    for (const m of page) if (typeof m.seq === 'number') this._markShown(m.seq);
    this._hasMore = Boolean(body.has_more);
    return { messages, hasMore: this._hasMore };
  }

  // ----- lifecycle -----

  close() {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._timer);
    clearTimeout(this._stableTimer);
    if (this._conn) this._conn.close();
    this._conn = null;
    if (typeof removeEventListener === 'function') removeEventListener('online', this._onOnline);
    this._setStatus('closed');
  }
}

/**
 * Subscribe to a room. `transport`: 'ws', 'sse' or 'auto' (WebSocket, falling back to SSE when
 * it cannot be opened). `after`: resume after this seq. `baseUrl`: the ekg host (default: where
 * this module was served from).
 */
export function connect(room, { transport = 'auto', after, baseUrl } = {}) {
  return new Room(room, { transport, after, baseUrl });
}

/**
 * Post a message to a room through an intake (reflektor, or a standalone ekg). Resolves to the
 * intake's JSON answer; rejects with an Error whose message says what went wrong.
 */
export async function post(room, data, { intakeUrl, token, idempotencyKey } = {}) {
  if (!intakeUrl) throw new Error('no intake URL configured');
  const url = new URL(`rooms/${encodeURIComponent(room)}/messages`, withSlash(intakeUrl));
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;
  let res;
  try {
    res = await fetch(url.href, { method: 'POST', headers, body: JSON.stringify(data) });
  } catch (err) {
    throw new Error(`cannot reach ${url.origin} (${err.message}); is it running, and does it allow this origin (CORS)?`);
  }
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    const err = new Error(`${res.status} ${body?.error ?? res.statusText}: ${body?.message ?? 'request refused'}`);
    err.status = res.status;
    throw err;
  }
  return body;
}

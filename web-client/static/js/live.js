// The live channel (/ws): one socket per tab, reconnected with backoff when it drops. Pages
// subscribe to events; a banner says when the connection is lost. After a reconnect the server
// sends a fresh queue.snapshot, and subscribers get a synthetic `live.reconnected` to reload
// (and `live.disconnected` when it drops, `live.connected` with `again` on every open, so that a
// call can show that it is reconnecting and send what could not go out meanwhile).

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 10000];

export class Live {
  constructor(onStatus) {
    this.onStatus = onStatus; // (connected: boolean) => void
    this.handlers = new Set();
    this.ws = null;
    this.attempt = 0;
    this.wanted = false;
    this.everConnected = false;
    this.timer = null;
  }

  /** Opens the socket (after login). */
  start() {
    this.wanted = true;
    if (!this.ws) this.connect();
  }

  /** Closes for good (logout). */
  stop() {
    this.wanted = false;
    clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    ws?.close();
    this.everConnected = false;
    this.onStatus(true);
  }

  /** Registers a handler of events; returns the function that removes it. */
  subscribe(fn) {
    this.handlers.add(fn);
    return () => this.handlers.delete(fn);
  }

  /** Sends a client → server message (`v: 1` added). False when the socket is not open: the
   * caller decides whether it matters (call signaling is sent again after a reconnect). */
  send(msg) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify({ v: 1, ...msg }));
    return true;
  }

  /** True while the socket is open. */
  get open() {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  connect() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/ws`);
    this.ws = ws;
    ws.onopen = () => {
      const again = this.everConnected;
      this.attempt = 0;
      this.everConnected = true;
      this.onStatus(true);
      this.dispatch({ type: 'live.connected', again });
      if (again) this.dispatch({ type: 'live.reconnected' });
    };
    ws.onmessage = (e) => {
      let msg;
      try { msg = JSON.parse(e.data); } catch { return; }
      this.dispatch(msg);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return; // replaced or stopped
      this.ws = null;
      if (!this.wanted) return;
      this.onStatus(false);
      this.dispatch({ type: 'live.disconnected' });
      const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
      this.attempt += 1;
      // Jitter so that many tabs do not all come back at the same instant after a restart.
      this.timer = setTimeout(() => { this.timer = null; if (this.wanted) this.connect(); }, delay * (0.8 + Math.random() * 0.4));
    };
  }

  dispatch(msg) {
    for (const fn of [...this.handlers]) {
      try { fn(msg); } catch (err) { window.dispatchEvent(new ErrorEvent('error', { error: err, message: String(err) })); }
    }
  }
}

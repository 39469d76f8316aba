// The link watch's decisions: what the call panel should send, from readings of its own uplink.
// Pure (readings and times in, a level out), so that they are tested without a browser or a
// clock (tests/e2e/run.mjs); the panel reads getStats() and acts on the level (call.js).

/** Every LINK_WATCH_MS the browser's view of its uplink (the selected pair's
 * availableOutgoingBitrate and round trip, and the loss the relay reports on our audio) decides
 * how much video this page sends. Below LINK_LOW_BPS for two readings the camera goes out at
 * LINK_LOW_FPS frames a second. Starved — that low, and the round trip above LINK_STARVED_RTT_S
 * (a queue the video fills) or the audio losing more than LINK_STARVED_LOSS — for three
 * readings, the camera stops and the panel says so (Chromium's estimate alone never drops below
 * ~70 kbit/s, even on a 40 kbit/s link; and a line's own random loss is no reason to stop). Healthy
 * again (a short round trip, no more loss than that) for LINK_PATIENCE readings, the camera comes
 * back at the low frame rate, and above LINK_RECOVER_BPS for five readings at full; a return that
 * has to stop again within LINK_RETRY_WINDOW_MS doubles the patience (up to LINK_MAX_PATIENCE).
 * The two readings after an outage are not acted on: what they say is about the outage. */
export const LINK_WATCH_MS = 2000;
export const LINK_LOW_BPS = 150_000;
export const LINK_STARVED_LOSS = 0.25;
export const LINK_STARVED_RTT_S = 0.5;
export const LINK_HEALTHY_RTT_S = 0.3;
export const LINK_RECOVER_BPS = 250_000;
export const LINK_LOW_FPS = 10;
export const LINK_PATIENCE = 5;
export const LINK_MAX_PATIENCE = 30;
export const LINK_RETRY_WINDOW_MS = 20000;
/** Readings not acted on after an outage. */
export const LINK_SETTLE_READINGS = 2;

/** The levels: 'good' (the browser's own balance), 'low' (LINK_LOW_FPS), 'audio' (no video). */
export class LinkWatch {
  constructor() {
    this.level = 'good';
    this.streak = { level: 'good', count: 0 };
    this.healthy = 0;
    this.patience = LINK_PATIENCE;
    this.settle = 0;
    this.backAt = null;
  }

  /** The connection is not up: forget what was building, and let the next readings settle. */
  disconnected() {
    this.streak = { level: 'good', count: 0 };
    this.settle = LINK_SETTLE_READINGS;
  }

  /** One reading at `now` (ms): `bps` (the available outgoing bitrate), `rtt` (s) and `loss`
   * (0..1). Returns the new level when it changes, else null. */
  reading({ bps, rtt, loss }, now) {
    if (this.settle > 0) {
      this.settle -= 1;
      return null;
    }
    // What this reading says, and how many readings in a row have said so.
    const starved = bps < LINK_LOW_BPS && (loss > LINK_STARVED_LOSS || rtt > LINK_STARVED_RTT_S);
    const says = starved ? 'audio' : bps < LINK_LOW_BPS ? 'low' : bps > LINK_RECOVER_BPS ? 'good' : 'between';
    this.streak = this.streak.level === says ? { level: says, count: this.streak.count + 1 } : { level: says, count: 1 };
    // Healthy: no queue (a short round trip) and no more loss than a lossy line's own.
    this.healthy = rtt < LINK_HEALTHY_RTT_S && loss <= LINK_STARVED_LOSS ? this.healthy + 1 : 0;
    const { count } = this.streak;
    let next = null;
    if (this.level === 'audio') {
      if (this.healthy >= this.patience) {
        this.backAt = now;
        next = 'low';
      }
    } else if (says === 'audio' && count >= 3) {
      const tooSoon = this.backAt !== null && now - this.backAt < LINK_RETRY_WINDOW_MS;
      this.patience = tooSoon ? Math.min(this.patience * 2, LINK_MAX_PATIENCE) : LINK_PATIENCE;
      this.healthy = 0;
      next = 'audio';
    } else if (says === 'low' && count >= 2 && this.level === 'good') {
      next = 'low';
    } else if (says === 'good' && count >= 5) {
      next = 'good';
    }
    if (next === null || next === this.level) return null;
    this.level = next;
    return next;
  }
}

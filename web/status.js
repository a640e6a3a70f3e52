// @ts-check
// The status line shows only what is true now. Each message has a key: a newer message with
// the same key replaces the older one, `clear(key)` removes it when its situation ends (the
// lobby empties, the connection comes back), and passing notices ("Microphone muted.")
// expire after a few seconds, uncovering the standing message underneath ("You are
// listening…"). Pure: the page calls `current(now)` and shows the text.

/** How long a passing notice stays. */
export const NOTICE_MS = 8000;

export class StatusBoard {
  constructor() {
    /** @type {{key: string, text: string, until: number, seq: number}[]} */
    this.items = [];
    this.seq = 0;
  }

  /**
   * Sets the message for `key`. `ttl` 0 keeps it until replaced or cleared.
   * @param {string} key
   * @param {string} text
   * @param {number} now  milliseconds
   * @param {number} [ttl] milliseconds
   */
  set(key, text, now, ttl = 0) {
    this.items = this.items.filter((i) => i.key !== key);
    this.items.push({ key, text, until: ttl > 0 ? now + ttl : Infinity, seq: ++this.seq });
  }

  /** Removes `key`'s message. @param {string} key */
  clear(key) {
    this.items = this.items.filter((i) => i.key !== key);
  }

  /** Removes every message. */
  reset() {
    this.items = [];
  }

  /** The newest message still current at `now`, or "". @param {number} now */
  current(now) {
    this.items = this.items.filter((i) => i.until > now);
    const last = this.items[this.items.length - 1];
    return last ? last.text : "";
  }

  /** When the shown message may change by itself (the next expiry), or null. @param {number} now */
  nextExpiry(now) {
    const times = this.items.map((i) => i.until).filter((t) => t > now && t !== Infinity);
    return times.length ? Math.min(...times) : null;
  }
}

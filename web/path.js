// @ts-check
// Is the media path alive? The browser says "disconnected" only after several seconds of
// silence (libwebrtc waits for five unanswered checks over five seconds), long after a
// person has noticed. So the client watches its selected candidate pair itself: the server
// answers every ICE check and sends media and RTCP all the time, so checks that go
// unanswered while nothing arrives mean the path broke, and ICE restarts at once. Pure: the
// client feeds it getStats figures and the time.

/** Nothing received for this long… */
export const QUIET_MS = 2500;
/** …while this many checks went unanswered: the path is gone. */
export const UNANSWERED = 2;

/**
 * @typedef {{id: string, bytesReceived: number, requestsSent: number,
 *   responsesReceived: number}} PairFigures
 */

export class PathWatch {
  constructor() {
    /** @type {{id: string, bytes: number, responses: number, requests: number, since: number}|null} */
    this.last = null;
  }

  /**
   * "alive" when the pair is new or something came in since the last sign of life;
   * "quiet" when nothing has for QUIET_MS while UNANSWERED checks went out; else "waiting".
   * @param {PairFigures|null} pair  the selected pair's figures, if there is one
   * @param {number} now  milliseconds
   * @returns {"alive"|"quiet"|"waiting"}
   */
  update(pair, now) {
    if (!pair) return "waiting";
    const l = this.last;
    if (!l || l.id !== pair.id || pair.bytesReceived > l.bytes || pair.responsesReceived > l.responses) {
      this.last = {
        id: pair.id,
        bytes: pair.bytesReceived,
        responses: pair.responsesReceived,
        requests: pair.requestsSent,
        since: now,
      };
      return "alive";
    }
    const unanswered = pair.requestsSent - l.requests;
    return now - l.since >= QUIET_MS && unanswered >= UNANSWERED ? "quiet" : "waiting";
  }
}

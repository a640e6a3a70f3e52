// @ts-check
// Connection quality for the header: good / fair / poor from the round-trip time and the
// share of packets lost since the last look (pure, tested by node).

/**
 * @param {{state: string, rtt: number|null, loss: number}} q  loss 0..1
 * @returns {"good"|"fair"|"poor"|"connecting"}
 */
export function qualityLevel({ state, rtt, loss }) {
  if (state !== "connected") return state === "connecting" || state === "new" ? "connecting" : "poor";
  if ((rtt ?? 0) > 400 || loss > 0.08) return "poor";
  if ((rtt ?? 0) > 150 || loss > 0.02) return "fair";
  return "good";
}

/**
 * Loss between two readings of cumulative counters.
 * @param {{packetsReceived: number, packetsLost: number}|null} before
 * @param {{packetsReceived: number, packetsLost: number}} now
 */
export function lossBetween(before, now) {
  if (!before) return 0;
  const rec = now.packetsReceived - before.packetsReceived;
  const lost = now.packetsLost - before.packetsLost;
  return rec + lost > 0 ? Math.max(0, lost) / (rec + lost) : 0;
}

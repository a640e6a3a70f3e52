// @ts-check
// Coming back after the server went away (a restart or maintenance, announced by
// `going_away`): when to try to join again, and which failures are worth another try. Pure
// functions, no DOM: app.js schedules the attempts, web/test/rejoin.test.mjs tests these.

/** Attempts before the page gives up and offers a button instead. */
export const REJOIN_ATTEMPTS = 10;
/** The longest wait between two attempts. */
export const REJOIN_MAX_DELAY_MS = 60_000;
/** The wait before the first attempt when the server named none. */
export const REJOIN_DEFAULT_MS = 5_000;

/**
 * Milliseconds to wait before rejoin attempt `attempt` (0 for the first): the server's
 * `reconnect_after_ms` (or a default), doubling after each failed attempt, capped, plus up to
 * half again at random so that a whole meeting does not come back in the same instant.
 * @param {number} attempt
 * @param {number|null|undefined} hintMs
 * @param {() => number} [random] in [0, 1)
 */
export function rejoinDelay(attempt, hintMs, random = Math.random) {
  const base = Math.max(1_000, Number.isFinite(hintMs) ? Number(hintMs) : REJOIN_DEFAULT_MS);
  const delay = Math.min(REJOIN_MAX_DELAY_MS, base * 2 ** Math.max(0, Math.min(attempt, 10)));
  return Math.round(delay * (1 + 0.5 * Math.min(Math.max(random(), 0), 1)));
}

/**
 * Whether a join that failed with `code` (an error code, a close reason, or the client's
 * "unreachable"/"closed") may succeed if tried again later: the server was down, starting
 * or draining. A refused grant, a locked room or a host's decision will not change.
 * @param {string|undefined} code
 */
export function mayRetryJoin(code) {
  return ["shutting_down", "server_shutdown", "unavailable", "unreachable", "closed", "internal"]
    .includes(code ?? "");
}

import { test } from "node:test";
import assert from "node:assert/strict";
import { rejoinDelay, mayRetryJoin, REJOIN_MAX_DELAY_MS, REJOIN_DEFAULT_MS } from "../rejoin.js";

test("the first attempt waits what the server said, then the wait doubles up to a cap", () => {
  const none = () => 0;
  assert.equal(rejoinDelay(0, 7000, none), 7000);
  assert.equal(rejoinDelay(1, 7000, none), 14000);
  assert.equal(rejoinDelay(2, 7000, none), 28000);
  assert.equal(rejoinDelay(5, 7000, none), REJOIN_MAX_DELAY_MS);
  assert.equal(rejoinDelay(50, 7000, none), REJOIN_MAX_DELAY_MS);
  assert.equal(rejoinDelay(0, undefined, none), REJOIN_DEFAULT_MS);
  assert.equal(rejoinDelay(0, 10, none), 1000, "at least a second");
});

test("a random share spreads a meeting's returns over up to half again", () => {
  assert.equal(rejoinDelay(0, 4000, () => 0.999999), 6000);
  const seen = new Set([0, 0.25, 0.5, 0.75].map((r) => rejoinDelay(0, 4000, () => r)));
  assert.equal(seen.size, 4);
  for (const d of seen) assert.ok(d >= 4000 && d < 6000);
});

test("only failures of a server that is away are tried again", () => {
  for (const code of ["shutting_down", "server_shutdown", "unreachable", "closed", "unavailable"]) {
    assert.ok(mayRetryJoin(code), code);
  }
  for (const code of ["invalid_grant", "room_locked", "barred", "denied", "removed", undefined]) {
    assert.ok(!mayRetryJoin(code), String(code));
  }
});

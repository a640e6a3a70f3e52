import { test } from "node:test";
import assert from "node:assert/strict";
import { PathWatch, QUIET_MS } from "../path.js";

const pair = (bytes, requests, responses, id = "p1") =>
  ({ id, bytesReceived: bytes, requestsSent: requests, responsesReceived: responses });

test("a path that keeps receiving is alive", () => {
  const w = new PathWatch();
  assert.equal(w.update(pair(100, 1, 1), 0), "alive");
  assert.equal(w.update(pair(200, 2, 2), 500), "alive");
  assert.equal(w.update(pair(300, 2, 2), 9000), "alive", "bytes came in");
});

test("an idle but answering path is never quiet", () => {
  const w = new PathWatch();
  w.update(pair(100, 1, 1), 0);
  // Nothing to receive (an empty room): checks go out and are answered.
  assert.equal(w.update(pair(100, 2, 1), 2000), "waiting");
  assert.equal(w.update(pair(100, 2, 2), 2600), "alive");
  assert.equal(w.update(pair(100, 2, 2), 10_000), "waiting", "no check unanswered");
});

test("unanswered checks with nothing coming in make a quiet path", () => {
  const w = new PathWatch();
  w.update(pair(100, 1, 1), 0);
  assert.equal(w.update(pair(100, 2, 1), 1000), "waiting");
  assert.equal(w.update(pair(100, 3, 1), QUIET_MS - 1), "waiting", "not for long enough");
  assert.equal(w.update(pair(100, 3, 1), QUIET_MS), "quiet");
  assert.equal(w.update(pair(100, 1, 0, "p2"), QUIET_MS + 500), "alive", "a new pair after an ICE restart");
  assert.equal(w.update(null, 0), "waiting");
});

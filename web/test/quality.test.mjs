import { test } from "node:test";
import assert from "node:assert/strict";
import { qualityLevel, lossBetween } from "../quality.js";

test("quality from round trip and loss", () => {
  assert.equal(qualityLevel({ state: "connected", rtt: 20, loss: 0 }), "good");
  assert.equal(qualityLevel({ state: "connected", rtt: 200, loss: 0 }), "fair");
  assert.equal(qualityLevel({ state: "connected", rtt: 20, loss: 0.1 }), "poor");
  assert.equal(qualityLevel({ state: "connecting", rtt: null, loss: 0 }), "connecting");
  assert.equal(qualityLevel({ state: "failed", rtt: null, loss: 0 }), "poor");
});

test("loss between two readings", () => {
  assert.equal(lossBetween(null, { packetsReceived: 10, packetsLost: 5 }), 0);
  assert.equal(lossBetween({ packetsReceived: 100, packetsLost: 0 }, { packetsReceived: 190, packetsLost: 10 }), 0.1);
  assert.equal(lossBetween({ packetsReceived: 100, packetsLost: 5 }, { packetsReceived: 100, packetsLost: 5 }), 0);
});

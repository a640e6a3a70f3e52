// Unit tests of the meeting view's pure layout rules (node --test web/test/).
import { test } from "node:test";
import assert from "node:assert/strict";
import { computeLayout, pickActiveSpeaker, initials, ordinal, pageSizeFor, SPEAKER_HOLD_MS, AUDIO_CHIPS } from "../layout.js";

const people = (n) => Array.from({ length: n }, (_, i) => ({ id: `P${i}`, name: `Person ${i}` }));
const cam = (id, muted = false) => ({ info: { id: `${id}-cam`, muted }, track: null });
const mic = (id, muted = false) => ({ info: { id: `${id}-mic`, muted }, track: null });
const base = (others, sources, extra = {}) => ({
  others, sources, levels: new Map(), handQueue: [], pinned: null, activeSpeaker: null, page: 0, pageSize: 4, ...extra,
});

test("people without video are chips, not grid tiles", () => {
  const others = people(5);
  const sources = new Map([["P0", { camera: cam("P0"), microphone: mic("P0") }], ["P3", { microphone: mic("P3") }]]);
  const l = computeLayout(base(others, sources, { activeSpeaker: "P0" }));
  assert.equal(l.stage, "P0", "the active speaker with video is on the stage");
  assert.deepEqual(l.tiles, []);
  assert.deepEqual(l.audioOnly, ["P3", "P1", "P2", "P4"], "an open microphone comes first, then arrival order");
  assert.deepEqual(l.paused, []);
});

test("an audio-only active speaker does not take the stage", () => {
  const others = people(3);
  const sources = new Map([["P1", { camera: cam("P1") }]]);
  const l = computeLayout(base(others, sources, { activeSpeaker: "P0" }));
  assert.equal(l.stage, null);
  assert.deepEqual(l.tiles, ["P1"]);
});

test("a muted camera counts as no video", () => {
  const others = people(2);
  const sources = new Map([["P0", { camera: cam("P0", true) }], ["P1", { camera: cam("P1") }]]);
  const l = computeLayout(base(others, sources));
  assert.deepEqual(l.tiles, ["P1"]);
  assert.ok(l.audioOnly.includes("P0"));
  assert.deepEqual(l.paused, ["P0-cam"], "the muted camera is paused too");
});

test("pages hold video tiles; tracks off the page are paused", () => {
  const others = people(10);
  const sources = new Map(others.map((p) => [p.id, { camera: cam(p.id) }]));
  const l = computeLayout(base(others, sources, { page: 1, pageSize: 3 }));
  assert.equal(l.pages, 4);
  assert.deepEqual(l.tiles, ["P3", "P4", "P5"]);
  assert.equal(l.paused.length, 7);
  assert.ok(!l.paused.includes("P4-cam"));
  const last = computeLayout(base(others, sources, { page: 99, pageSize: 3 }));
  assert.equal(last.page, 3, "a page past the end is clamped");
  assert.deepEqual(last.tiles, ["P9"]);
});

test("pinned beats a screen share, which beats the active speaker", () => {
  const others = people(3);
  const sources = new Map([
    ["P0", { camera: cam("P0") }],
    ["P1", { camera: cam("P1"), screen: { info: { id: "P1-screen", muted: false }, track: null } }],
    ["P2", { camera: cam("P2") }],
  ]);
  assert.equal(computeLayout(base(others, sources, { activeSpeaker: "P0" })).stage, "P1:screen");
  const pinned = computeLayout(base(others, sources, { activeSpeaker: "P0", pinned: "P2" }));
  assert.equal(pinned.stage, "P2");
  assert.ok(pinned.paused.includes("P1-screen"), "the screen is paused while someone is pinned");
  assert.equal(computeLayout(base(others, sources, { pinned: "gone" })).stage, "P1:screen", "a pin on someone gone is ignored");
});

test("a huge audience shows a bounded number of chips", () => {
  const l = computeLayout(base(people(500), new Map()));
  assert.equal(l.audioOnly.length, AUDIO_CHIPS);
  assert.equal(l.audioHidden, 500 - AUDIO_CHIPS);
});

test("speakers and raised hands come first among the chips", () => {
  const others = people(6);
  const l = computeLayout(base(others, new Map(), { levels: new Map([["P4", 0.5]]), handQueue: ["P5"] }));
  assert.deepEqual(l.audioOnly.slice(0, 2), ["P4", "P5"]);
});

test("the active speaker holds for a while before someone louder takes over", () => {
  const others = people(2);
  const sources = new Map();
  let s = pickActiveSpeaker({ activeSpeaker: null, activeSince: 0 }, others, new Map([["P0", 0.3]]), sources, 1000);
  assert.equal(s.activeSpeaker, "P0");
  s = pickActiveSpeaker(s, others, new Map([["P0", 0.01], ["P1", 0.5]]), sources, 1000 + SPEAKER_HOLD_MS - 1);
  assert.equal(s.activeSpeaker, "P0", "held");
  s = pickActiveSpeaker(s, others, new Map([["P0", 0.01], ["P1", 0.5]]), sources, 1000 + SPEAKER_HOLD_MS + 1);
  assert.equal(s.activeSpeaker, "P1");
  s = pickActiveSpeaker(s, [others[0]], new Map(), sources, 99_999);
  assert.equal(s.activeSpeaker, "P0", "someone who left is replaced");
});

test("small helpers", () => {
  assert.equal(initials("Ada  Lovelace King"), "AL");
  assert.equal(initials(""), "?");
  assert.deepEqual([1, 2, 3, 4, 11, 12, 13, 21, 22, 112].map(ordinal),
    ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "112th"]);
  assert.equal(pageSizeFor(375), 4);
  assert.equal(pageSizeFor(800), 6);
  assert.equal(pageSizeFor(1400), 9);
});

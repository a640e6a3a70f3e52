import { test } from "node:test";
import assert from "node:assert/strict";
import { controlModel } from "../controls.js";

const dev = (o = {}) => ({ publishing: false, muted: true, may: true, present: true, ...o });
const model = (o = {}) => controlModel({
  microphone: dev(o.microphone), camera: dev(o.camera),
  screen: { sharing: false, may: true, supported: true, ...o.screen },
  hand: { raised: false, position: 0, ...o.hand },
});

test("a listener without the floor sees why the microphone is off, disabled", () => {
  const m = model({ microphone: { may: false }, camera: { may: false } });
  assert.equal(m.microphone.label, "Microphone (needs the floor)");
  assert.equal(m.microphone.disabled, true);
  assert.match(m.microphone.hint, /raise your hand/);
  assert.equal(m.camera.label, "Camera (needs permission)");
});

test("publishing: mute and unmute labels follow the state", () => {
  assert.equal(model({ microphone: { publishing: true, muted: false } }).microphone.label, "Mute microphone");
  const muted = model({ microphone: { publishing: true, muted: true } }).microphone;
  assert.equal(muted.label, "Unmute microphone");
  assert.equal(muted.pressed, true);
  assert.equal(muted.disabled, false);
});

test("a missing device is said and disabled; an allowed one can be turned on", () => {
  assert.equal(model({ microphone: { present: false } }).microphone.label, "No microphone found");
  assert.equal(model({ microphone: { present: false } }).microphone.disabled, true);
  assert.equal(model().microphone.label, "Turn microphone on");
  assert.equal(model().microphone.disabled, false);
  assert.equal(model({ camera: { present: false } }).camera.label, "No camera found");
});

test("screen share and hand", () => {
  assert.equal(model({ screen: { supported: false } }).screen.disabled, true);
  assert.equal(model({ screen: { may: false, sharing: true } }).screen.disabled, false, "one can always stop sharing");
  assert.equal(model({ hand: { raised: true, position: 2 } }).hand.label, "Lower hand (2nd in queue)");
});

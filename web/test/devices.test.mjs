import { test } from "node:test";
import assert from "node:assert/strict";
import { planRequest, explainMediaError } from "../devices.js";

test("only existing, wanted devices are asked for", () => {
  assert.deepEqual(planRequest({ microphone: true, camera: true }, new Set(["audioinput"])),
    { ask: ["microphone"], missing: ["camera"] });
  assert.deepEqual(planRequest({ microphone: false, camera: true }, new Set(["audioinput", "videoinput"])),
    { ask: ["camera"], missing: [] });
  assert.deepEqual(planRequest({ microphone: true, camera: true }, new Set()),
    { ask: [], missing: ["microphone", "camera"] });
});

test("failures become sentences a person can act on", () => {
  assert.match(explainMediaError("microphone", { name: "NotAllowedError" }), /did not allow the microphone/);
  assert.equal(explainMediaError("camera", { name: "NotFoundError" }), "No camera found.");
  assert.match(explainMediaError("camera", { name: "NotReadableError" }), /in use by another program/);
  assert.match(explainMediaError("microphone", { name: "Weird", message: "x" }), /not available \(Weird\)/);
});

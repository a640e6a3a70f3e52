import { test } from "node:test";
import assert from "node:assert/strict";
import { StatusBoard } from "../status.js";

test("a cleared message stops showing; the one underneath shows again", () => {
  const b = new StatusBoard();
  b.set("room", "In room gm.", 0);
  b.set("lobby", "1 waiting in the lobby.", 10);
  assert.equal(b.current(20), "1 waiting in the lobby.");
  b.clear("lobby");
  assert.equal(b.current(30), "In room gm.");
});

test("notices pass; a newer message with the same key replaces the older", () => {
  const b = new StatusBoard();
  b.set("room", "standing", 0);
  b.set("notice", "Microphone muted.", 100, 1000);
  assert.equal(b.current(500), "Microphone muted.");
  assert.equal(b.nextExpiry(500), 1100);
  assert.equal(b.current(1200), "standing");
  b.set("room", "replaced", 1300);
  assert.equal(b.items.length, 1);
  assert.equal(b.current(1300), "replaced");
  b.reset();
  assert.equal(b.current(1400), "");
  assert.equal(b.nextExpiry(1400), null);
});

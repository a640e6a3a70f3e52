// The server restarts under a meeting: on SIGTERM it drains, and the page says the meeting
// closes soon; once the session has closed, the page joins again by itself (with a random
// share of backoff) when a new server listens at the same address. Machinery: harness.mjs.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Harness } from "./harness.mjs";

const ROOM = `restart-${process.pid}`;
const h = new Harness({ name: "restart" });

before(() => h.start());
after(() => h.stop());

const banner = (who) => h.page(who).evaluate(() => {
  const b = document.getElementById("banner");
  return b.hidden ? "" : b.textContent;
});

test("a page told going_away says so, and joins again by itself after the restart", async () => {
  try {
    await h.openPage("ann", { room: ROOM, camera: true, mic: true });
    const identity = () => h.page("ann").evaluate(() => window.plenary.client.me.identity);
    const before = await identity();
    const signalled = Date.now();
    const exited = h.signalServer("SIGTERM");
    await h.waitFor("the page to say the server is going away", async () => {
      const text = await banner("ann");
      return /shutting down for a restart/.test(text) || { ok: false, text };
    }, 5_000, 100);
    assert.equal(await exited, 0, "the old server exits cleanly");
    h.log(`old server exited ${Date.now() - signalled} ms after SIGTERM`);
    assert.ok(Date.now() - signalled < 10_000);
    await h.waitFor("the page to plan its return", async () => {
      const text = await banner("ann");
      return /Joining again in \d+ s/.test(text) || { ok: false, text };
    }, 10_000, 100);
    await h.startServer({ httpPort: h.httpPort });
    await h.waitJoined("ann", "ann to join again by herself");
    h.log(`ann back ${Date.now() - signalled} ms after SIGTERM`);
    assert.notEqual(await identity(), before, "a new session, with a fresh grant");
    assert.equal(await banner("ann"), "", "the banner is gone");
    // Her microphone and camera are published again on the new server.
    await h.waitFor("ann to publish again", () =>
      h.page("ann").evaluate(() => window.plenary.client.publishing("microphone")),
    );
  } catch (err) {
    h.showDiagnostics();
    throw err;
  }
});

// End-to-end test of Plenary's web client in headless Chromium.
//
// Starts the Plenary binary on free loopback ports (dev mode is on for loopback), opens
// three publishing pages and one listener in one room, and checks through the page's
// `window.plenary.stats()` that every page decodes the others' video and receives their
// audio; then one page leaves and the others must see it gone, and a newcomer's media flows
// on the m-lines the leaver freed. Shared machinery: harness.mjs (knobs are listed there).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Harness } from "./harness.mjs";

const ROOM = `gm-${process.pid}`;
const h = new Harness({ name: "browser" });
const waitFor = (...a) => h.waitFor(...a);
const openPage = (name, { camera, mic, inBrowser }) =>
  h.openPage(name, { room: ROOM, camera, mic, inBrowser: inBrowser === "listener" ? h.listenerBrowser : undefined });
const myId = (name) => h.myId(name);
const expectMediaFrom = (name, from) => h.expectMediaFrom(name, from);
const screenshot = (name, label) => h.screenshot(name, `${label}-${name}`);
const elapsed = () => h.elapsed();
const pages = h.pages;

before(() => h.start({ listenerBrowser: true }));
after(() => h.stop());

test("three publishers and a listener see and hear each other; a leaver disappears; a newcomer reuses its m-lines", async () => {
  try {
    await scenario();
  } catch (err) {
    h.showDiagnostics();
    throw err;
  }
});

async function scenario() {
  const publishers = ["alice", "bob", "carol"];
  for (const name of publishers) await openPage(name, { camera: true, mic: true });
  console.log(`[${elapsed()}] three publishers joined`);

  const ids = {};
  for (const name of publishers) ids[name] = await myId(name);

  const devMode = await pages.get("alice").page.locator("#dev-mode").isVisible();
  assert.ok(devMode, "the DEV MODE label is visible on a loopback server");

  await Promise.all(
    publishers.map((name) =>
      expectMediaFrom(name, publishers.filter((n) => n !== name).map((n) => ids[n])),
    ),
  );
  console.log(`[${elapsed()}] every publisher decodes the other two`);

  await openPage("dave", { camera: false, mic: false, inBrowser: "listener" });
  ids.dave = await myId("dave");
  const daveTracks = await pages.get("dave").page.evaluate(() =>
    window.plenary.client.publish.length,
  );
  assert.equal(daveTracks, 0, "the listener publishes nothing");
  await expectMediaFrom("dave", publishers.map((n) => ids[n]));
  // The listener's host addresses were hidden (mDNS), so the server got to it through a
  // peer-reflexive candidate.
  const hidden = await pages.get("dave").page.evaluate(async () => {
    const report = await window.plenary.client.pc.getStats();
    const hosts = [];
    report.forEach((s) => {
      if (s.type === "local-candidate" && s.candidateType === "host") hosts.push(s.address ?? "");
    });
    return hosts;
  });
  assert.ok(
    hidden.length > 0 && hidden.every((a) => a === "" || a.endsWith(".local")),
    `the listener's host candidates are hidden behind mDNS (got ${JSON.stringify(hidden)})`,
  );
  console.log(`[${elapsed()}] the listener decodes all three`);

  // Every publisher shows a video tile for each of the two other publishers, and the
  // listener (no video) as a compact chip.
  for (const name of publishers) {
    await waitFor(`${name} to show 2 tiles and the listener's chip`, () =>
      pages.get(name).page.evaluate((dave) =>
        document.querySelectorAll("#grid .tile:not(.self)").length === 2 &&
        !!document.querySelector(`#audio-list .chip[data-participant-id="${dave}"]`), ids.dave),
    );
  }
  for (const name of pages.keys()) await screenshot(name, "joined");

  // Carol leaves; everyone else sees her go.
  await pages.get("carol").page.getByRole("button", { name: "Leave" }).click();
  const gone = ids.carol;
  for (const name of ["alice", "bob", "dave"]) {
    const { page } = pages.get(name);
    await waitFor(`${name} to see carol leave`, () =>
      page.evaluate((id) => {
        const c = window.plenary.client;
        return (
          !c.participants.has(id) &&
          ![...c.remote.values()].some((r) => r.participant_id === id) &&
          !document.querySelector(`[data-participant-id="${id}"]`)
        );
      }, gone),
    );
  }
  console.log(`[${elapsed()}] carol's departure seen by all`);
  for (const name of pages.keys()) await screenshot(name, "after-leave");

  // The remaining two publishers still get each other's media.
  await expectMediaFrom("alice", [ids.bob]);
  await expectMediaFrom("dave", [ids.alice, ids.bob]);

  // Erin joins after carol left: the server gives her tracks carol's freed m-lines (now
  // inactive) instead of new ones, with new SSRCs. Media must flow on the reused m-lines,
  // and the SDP must not have grown.
  const mlines = (name) =>
    pages.get(name).page.evaluate(() =>
      (window.plenary.client.pc.remoteDescription?.sdp ?? "").split("\nm=").length - 1,
    );
  const before = { alice: await mlines("alice"), dave: await mlines("dave") };
  await openPage("erin", { camera: true, mic: true });
  ids.erin = await myId("erin");
  await expectMediaFrom("alice", [ids.bob, ids.erin]);
  await expectMediaFrom("dave", [ids.alice, ids.bob, ids.erin]);
  await expectMediaFrom("erin", [ids.alice, ids.bob]);
  assert.equal(await mlines("alice"), before.alice, "alice's SDP reused carol's m-lines");
  assert.equal(await mlines("dave"), before.dave, "dave's SDP reused carol's m-lines");
  console.log(`[${elapsed()}] erin's media flows on reused m-lines`);
  for (const name of ["alice", "dave", "erin"]) await screenshot(name, "rejoined");
}

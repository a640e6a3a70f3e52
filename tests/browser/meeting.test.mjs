// A general meeting in headless Chromium, driven through the page's buttons: joining through
// the pre-join screen, three participants seeing and hearing each other, chat, the speaker
// queue and the floor (a listener whose publishing the server first refuses), host
// moderation (mute, ask to unmute, remove, lock, lobby admit and deny), only visible tiles
// receiving video, reconnection after the WebSocket is cut, and ending the meeting.
// Screenshots of the main screens go to test-output/browser/. Machinery: harness.mjs.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Harness, sleep } from "./harness.mjs";

const ROOM = `meeting-${process.pid}`;
const h = new Harness({ name: "meeting" });
const ids = {};

before(() => h.start());
after(() => h.stop());

/** Runs a step; on failure prints the consoles and the server log. */
function step(name, fn) {
  test(name, async () => {
    try {
      await fn();
    } catch (err) {
      h.showDiagnostics();
      throw err;
    }
  });
}

const button = (who, name, exact = false) => h.page(who).getByRole("button", { name, exact });

/** Opens the page, checks the pre-join screen and joins by clicking Join. */
async function joinViaPrejoin(who, { host = false, camera = true, mic = true, extra = {}, shot, wait = true } = {}) {
  const query = { room: ROOM, ...extra };
  if (host) query.host = "1";
  if (!camera) query.camera = "0";
  if (!mic) query.mic = "0";
  const { page } = await h.newPage(who, { query });
  await page.getByLabel("Your name").fill(who);
  // The preview opens only on request.
  if (camera || mic) await button(who, "Check camera and microphone").click();
  if (camera) {
    await h.waitFor(`${who}'s camera preview`, () =>
      page.evaluate(() => document.getElementById("prejoin-video").videoWidth > 0));
  }
  if (mic) {
    await h.waitFor(`${who}'s microphone level meter to move`, () =>
      page.evaluate(() => document.getElementById("mic-level").value > 0.005), 15_000, 100);
  }
  if (shot) {
    await button(who, "Test speakers").click();
    await h.waitFor("the test tone", () => page.evaluate(() => !!window.plenary.ui.lastToneAt));
    await h.screenshot(who, shot);
  }
  await button(who, "Join", true).click();
  if (wait) ids[who] = await h.waitJoined(who);
  return page;
}

step("three participants join through the pre-join screen and see and hear each other", async () => {
  await joinViaPrejoin("hana", { host: true, shot: "prejoin" });
  const isHost = await h.page("hana").evaluate(() => window.plenary.client.permissions.is_host);
  assert.ok(isHost, "hana's dev grant (host=1) makes her a host");
  await h.page("hana").getByRole("heading", { name: "Host tools" }).waitFor();
  await joinViaPrejoin("ben");
  await joinViaPrejoin("cleo");
  h.log("hana, ben and cleo joined");
  const trio = ["hana", "ben", "cleo"];
  await Promise.all(trio.map((who) =>
    h.expectMediaFrom(who, trio.filter((o) => o !== who).map((o) => ids[o]))));
  // The people list shows badges.
  const people = await h.page("ben").locator("#people").innerText();
  assert.match(people, /hana[\s\S]*host/, "hana is shown as host");
  assert.match(people, /member/, "members are badged");
  // Speaking indicators come from the receivers' audio levels; the header shows the
  // connection quality from getStats.
  await h.waitFor("ben to measure someone's audio level", () =>
    h.page("ben").evaluate(() => Object.values(window.plenary.ui.levels()).some((l) => l > 0.001)));
  const quality = await h.waitFor("ben's connection quality", () =>
    h.page("ben").evaluate(() => window.plenary.ui.quality()));
  h.log(`ben's connection: ${JSON.stringify(quality)}`);
  await h.page("ben").getByText(/Connection: (good|fair|poor)/).waitFor();
  await h.screenshot("ben", "meeting-grid");
});

step("chat reaches everyone; host messages are highlighted", async () => {
  for (const who of ["hana", "ben", "cleo"]) await h.openTab(who, "Chat");
  await h.page("cleo").getByRole("textbox", { name: "Chat message" }).fill("Hello from cleo");
  await button("cleo", "Send", true).click();
  await h.page("hana").getByRole("textbox", { name: "Chat message" }).fill("Welcome to the general meeting");
  await h.page("hana").getByRole("textbox", { name: "Chat message" }).press("Enter");
  for (const who of ["hana", "ben", "cleo"]) {
    const log = h.page(who).locator("#chat-log");
    await log.getByText("Hello from cleo").waitFor();
    await log.locator(".from-host", { hasText: "Welcome to the general meeting" }).waitFor();
  }
  await h.screenshot("ben", "chat");
  for (const who of ["ben", "cleo"]) await h.openTab(who, "People");
  await h.openTab("hana", "Host");
});

step("a listener is refused, raises a hand, gets the floor and is heard; the floor is taken back", async () => {
  // Lou's grant does not allow publishing (dev grant "publish": false).
  await joinViaPrejoin("lou", { camera: false, mic: false, extra: { publish: "0" } });
  const lou = h.page("lou");
  assert.deepEqual(await lou.evaluate(() => window.plenary.client.permissions.can_publish), []);
  // A client that ignores the UI and offers a microphone anyway is refused by the server.
  await lou.evaluate(async () => {
    const s = await navigator.mediaDevices.getUserMedia({ audio: true });
    await window.plenary.client.addTrack(s.getAudioTracks()[0], "microphone", { force: true });
  });
  const denied = await h.waitFor("the server to refuse lou's microphone", () =>
    lou.evaluate(() => window.plenary.ui.lastDenied || false));
  h.log(`lou refused: ${denied.message}`);
  await sleep(500);
  const louTracks = await h.page("ben").evaluate((id) =>
    [...window.plenary.client.roomTracks.values()].filter((t) => t.participant_id === id).length, ids.lou);
  assert.equal(louTracks, 0, "nobody sees a track from lou");

  // The UI: the microphone button says it needs the floor; lou raises a hand.
  await button("lou", "Microphone (needs the floor)").waitFor();
  await button("lou", "Raise hand").click();
  await button("lou", "Lower hand").waitFor();
  const hana = h.page("hana");
  await hana.locator("#queue").getByText("lou").waitFor();
  // Ben raises his hand too; hana moves lou up the queue (reorder).
  await button("ben", "Raise hand").click();
  await hana.locator("#queue li").nth(1).waitFor();
  await button("hana", "Move ben up").click();
  await h.waitFor("the queue to be reordered", () =>
    hana.evaluate(([b, l]) => JSON.stringify(window.plenary.client.handQueue) === JSON.stringify([b, l]), [ids.ben, ids.lou]));
  await h.screenshot("hana", "host-panel");

  await button("hana", "Give the floor to lou").click();
  await h.waitFor("lou to be given the floor", () =>
    lou.evaluate(() => window.plenary.client.permissions.can_publish.includes("microphone")));
  await h.waitFor("lou to publish the microphone", () =>
    lou.evaluate(() => !!window.plenary.client.ownTrackId("microphone")));
  await h.expectAudioFrom("ben", ids.lou);
  await h.expectAudioFrom("cleo", ids.lou);
  h.log("lou is heard after being given the floor");
  await h.waitFor("lou's hand to be lowered", () =>
    hana.evaluate((id) => !window.plenary.client.handQueue.includes(id), ids.lou));

  await button("hana", "Clear queue").click();
  await h.waitFor("the queue to be cleared", () =>
    hana.evaluate(() => window.plenary.client.handQueue.length === 0));

  await button("hana", "Take the floor back from lou").click();
  await h.waitFor("lou to return to listening", () =>
    lou.evaluate(() => !window.plenary.client.permissions.can_publish.includes("microphone") &&
      !window.plenary.client.publishing("microphone")));
  await h.waitFor("ben to stop receiving lou", () =>
    h.page("ben").evaluate((id) =>
      ![...window.plenary.client.roomTracks.values()].some((t) => t.participant_id === id), ids.lou));
});

/** Opens the moderation menu for `target` on hana's page and picks `item`. */
async function moderate(target, item) {
  await h.openTab("hana", "People");
  await button("hana", `Actions for ${target}`).click();
  await h.page("hana").getByRole("menuitem", { name: item, exact: true }).click();
}

step("only the visible tiles receive video", async () => {
  const hana = h.page("hana");
  // Hana pins lou (no camera: a large avatar on the stage), so the stage no longer follows
  // whoever is loudest. With one video tile per page, ben's camera is on page 1 and cleo's
  // on page 2: on page 2 ben's camera is not shown, so hana pauses it.
  await h.openTab("hana", "People");
  await button("hana", "Pin lou to the main view").click();
  await hana.evaluate(() => window.plenary.ui.setPageSize(1));
  await button("hana", "Next page").click();
  const layout = await h.waitFor("ben's camera to be paused", () =>
    hana.evaluate((ben) => {
      const l = window.plenary.ui.layout();
      const cams = [...window.plenary.client.roomTracks.values()]
        .filter((t) => t.participant_id === ben && t.source === "camera").map((t) => t.id);
      return l.stage === l.pinned && l.page === 1 && cams.length && cams.every((id) => l.paused.includes(id)) ? l : { ok: false, ...l };
    }, ids.ben));
  h.log(`layout: ${JSON.stringify(layout)}`);
  const mutedPaused = await hana.evaluate((ids) =>
    ids.filter((id) => window.plenary.client.roomTracks.get(id)?.muted), layout.paused);
  assert.deepEqual(mutedPaused, [], "the paused cameras are live (not muted), so pausing is what stops them");
  const frames = async () =>
    Object.fromEntries((await h.stats("hana")).filter((s) => s.kind === "video").map((s) => [s.track_id, s.framesDecoded]));
  await sleep(1500);
  const a = await frames();
  await sleep(2500);
  const b = await frames();
  for (const id of layout.paused) {
    assert.ok((b[id] ?? 0) - (a[id] ?? 0) <= 2, `paused track ${id} stopped (frames ${a[id]} → ${b[id]})`);
  }
  await h.screenshot("hana", "pinned-listener");
  // Back to the first page: the track resumes.
  await button("hana", "Previous page").click();
  await h.waitFor("the paused track to resume", async () => {
    const c = await frames();
    await sleep(1000);
    const d = await frames();
    return layout.paused.every((id) => (d[id] ?? 0) > (c[id] ?? 0));
  });
  await hana.evaluate(() => window.plenary.ui.setPageSize(0));
  await button("hana", "Pin lou to the main view").click();
  await h.waitFor("the pin to be lifted", () => hana.evaluate(() => window.plenary.ui.layout().pinned === null));
});

step("the host mutes, asks to unmute (never forced), turns a camera off, makes a host", async () => {
  const ben = h.page("ben");
  await moderate("ben", "Mute");
  await h.waitFor("ben to be muted by the host", () =>
    ben.evaluate(() => window.plenary.client.isMuted("microphone")));
  await button("ben", "Unmute microphone", true).waitFor();
  await h.waitFor("hana to see ben's microphone muted", () =>
    h.page("hana").evaluate((id) => [...window.plenary.client.roomTracks.values()]
      .some((t) => t.participant_id === id && t.source === "microphone" && t.muted), ids.ben));

  // The menu works from the keyboard: Enter opens it on its first item, arrows move,
  // Escape closes it and gives the focus back to its button.
  const hana = h.page("hana");
  await button("hana", "Actions for ben").focus();
  await hana.keyboard.press("Enter");
  await h.waitFor("the menu's first item to have the focus", () =>
    hana.evaluate(() => document.activeElement?.getAttribute("role") === "menuitem"));
  await hana.keyboard.press("ArrowDown");
  await hana.keyboard.press("Escape");
  await h.waitFor("the focus back on the menu button", () =>
    hana.evaluate(() => document.activeElement?.getAttribute("aria-label") === "Actions for ben" &&
      !document.querySelector("[role=menu]")));

  await moderate("ben", "Ask to unmute");
  await ben.getByRole("alert").getByText("asks you to unmute").waitFor();
  assert.ok(await ben.evaluate(() => window.plenary.client.isMuted("microphone")), "asking does not unmute");
  await ben.getByRole("alert").getByRole("button", { name: "Unmute" }).click();
  await h.waitFor("ben to unmute himself", () =>
    ben.evaluate(() => !window.plenary.client.isMuted("microphone")));

  await h.openTab("hana", "Host");
  await button("hana", "Mute everyone").click();
  await h.waitFor("mute_all to mute cleo", () =>
    h.page("cleo").evaluate(() => window.plenary.client.isMuted("microphone")));
  assert.ok(!(await h.page("hana").evaluate(() => window.plenary.client.isMuted("microphone"))),
    "mute everyone spares the hosts");

  await moderate("cleo", "Turn camera off");
  await h.waitFor("cleo's camera to be turned off", () =>
    h.page("cleo").evaluate(() => window.plenary.client.isMuted("camera") || !window.plenary.client.publishing("camera")));

  await moderate("cleo", "Make host");
  await h.page("hana").getByRole("dialog").getByRole("button", { name: "OK" }).click();
  await h.page("cleo").getByRole("heading", { name: "Host tools" }).waitFor();
  await h.waitFor("ben to see cleo as a host", () =>
    h.page("ben").evaluate((id) => window.plenary.client.participants.get(id)?.is_host, ids.cleo));
});

step("the lobby admits and denies; a locked room refuses newcomers", async () => {
  const hana = h.page("hana");
  await h.openTab("hana", "Host");
  await button("hana", "Turn lobby on").click();
  await button("hana", "Turn lobby off").waitFor();

  await joinViaPrejoin("wes", { camera: false, mic: false, wait: false });
  // wes is not in yet: he waits.
  const wes = h.page("wes");
  await wes.getByRole("heading", { name: "Waiting to be let in" }).waitFor();
  await h.screenshot("wes", "lobby-waiting");
  await button("hana", "Admit wes", true).waitFor();
  await h.screenshot("hana", "lobby");
  await button("hana", "Admit wes", true).click();
  ids.wes = await h.waitJoined("wes", "wes to be admitted");

  const vic = (await h.newPage("vic", { query: { room: ROOM, name: "vic", camera: "0", mic: "0", autojoin: "1" } })).page;
  await vic.getByRole("heading", { name: "Waiting to be let in" }).waitFor();
  await button("hana", "Deny vic").click();
  await h.waitFor("vic to be turned away", () =>
    vic.evaluate(() => window.plenary.client?.state === "closed" &&
      /did not let you in/.test(document.getElementById("status").textContent)));
  await button("hana", "Turn lobby off").click();
  await button("hana", "Turn lobby on").waitFor();

  await button("hana", "Lock room").click();
  await button("hana", "Unlock room").waitFor();
  const zed = (await h.newPage("zed", { query: { room: ROOM, name: "zed", camera: "0", mic: "0", autojoin: "1" } })).page;
  await h.waitFor("zed to be refused by the locked room", () =>
    zed.evaluate(() => /locked/.test(document.getElementById("status").textContent)));
  await button("hana", "Unlock room").click();
  await button("hana", "Lock room").waitFor();
});

step("the host removes a participant", async () => {
  await moderate("wes", "Remove from meeting…");
  await h.page("hana").getByRole("dialog").getByLabel("Also bar them").check();
  await h.page("hana").getByRole("dialog").getByRole("button", { name: "OK" }).click();
  await h.waitFor("wes to be removed", () =>
    h.page("wes").evaluate(() => window.plenary.client?.state === "closed" &&
      /removed you/.test(document.getElementById("status").textContent)));
  await h.waitFor("ben to see wes gone", () =>
    h.page("ben").evaluate((id) => !window.plenary.client.participants.has(id), ids.wes));
});

step("a cut WebSocket reconnects with the resume token, without a reload", async () => {
  const ben = h.page("ben");
  const oldId = ids.ben;
  // Ben was muted with everyone else; he unmutes (with the keyboard shortcut) to be heard.
  await ben.locator("body").press("m");
  await button("ben", "Mute microphone", true).waitFor();
  await h.recordStates("ben");
  await ben.evaluate(() => {
    window.__marker = "same page";
    window.plenary.client.ws.close();
  });
  await h.waitFor("ben to show it is reconnecting", () =>
    ben.evaluate(() => window.__seen.includes("reconnecting") &&
      window.__seen.some((x) => /Connection lost: reconnecting/.test(x))));
  ids.ben = await h.waitFor("ben to be back", () =>
    ben.evaluate(() => window.plenary.client.state === "joined" && window.__marker === "same page" &&
      window.plenary.client.me.id));
  assert.notEqual(ids.ben, oldId, "a new participant id after resuming");
  // (Cleo's microphone and camera are off since the host muted everyone and her camera.)
  await h.expectMediaFrom("hana", [ids.ben]);
  await h.expectMediaFrom("ben", [ids.hana]);

  // A token the server does not know: the page says so plainly and offers a new join.
  await ben.evaluate(() => {
    window.plenary.client.resumeToken = "not-a-token";
    window.plenary.client.ws.close();
  });
  await ben.getByRole("alert").getByText("could not be restored").waitFor();
  await ben.getByRole("alert").getByRole("button", { name: "Join again" }).click();
  ids.ben = await h.waitJoined("ben", "ben to join again with a new grant");
});

step("a screen share is shown large; the host can stop it", async () => {
  const hana = h.page("hana");
  await button("ben", "Share screen").click();
  await button("ben", "Stop sharing").waitFor();
  await h.waitFor("hana to show ben's screen on the stage", () =>
    hana.evaluate((id) => {
      const v = document.querySelector(`#grid .tile.stage.screen[data-participant-id="${id}"] video`);
      return !!v && v.videoWidth > 0;
    }, ids.ben));
  const sources = await hana.evaluate((id) => [...window.plenary.client.roomTracks.values()]
    .filter((t) => t.participant_id === id).map((t) => t.source).sort(), ids.ben);
  h.log(`ben publishes ${sources.join(", ")}`);
  assert.ok(sources.includes("screen"), "the screen is published with source screen");
  await h.screenshot("hana", "screen-share");
  await moderate("ben", "Stop screen share");
  await button("ben", "Share screen").waitFor();
  await h.waitFor("ben's screen to be gone for hana", () =>
    hana.evaluate((id) => ![...window.plenary.client.roomTracks.values()]
      .some((t) => t.participant_id === id && t.source === "screen"), ids.ben));
});

step("a phone-sized page joins muted in a large room and is keyboard usable", async () => {
  // muted_above=2: this client treats rooms of more than two as large.
  const { page } = await h.newPage("phone", {
    query: { room: ROOM, name: "pia", muted_above: "2" },
    viewport: { width: 375, height: 740 },
  });
  await page.getByRole("button", { name: "Check camera and microphone" }).click();
  await h.waitFor("pia's camera preview", () =>
    page.evaluate(() => document.getElementById("prejoin-video").videoWidth > 0));
  const prejoinOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(prejoinOverflow <= 1, `pre-join fits 375px (overflow ${prejoinOverflow}px)`);
  await h.screenshot("phone", "prejoin-phone");
  await page.getByRole("button", { name: "Join", exact: true }).click();
  await h.waitJoined("phone");
  await h.waitFor("pia to start muted", () =>
    page.evaluate(() => window.plenary.client.isMuted("microphone") && !!window.plenary.client.ownTrackId("microphone")));
  await page.getByText("You joined muted").waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `no horizontal scrolling at 375px (overflow ${overflow}px)`);
  // Keyboard: the shortcut unmutes; Tab reaches the controls.
  await page.locator("body").press("m");
  await h.waitFor("M to unmute", () => page.evaluate(() => !window.plenary.client.isMuted("microphone")));
  await page.locator("body").press("Tab");
  const focused = await page.evaluate(() => document.activeElement?.textContent?.trim());
  assert.ok(focused, "Tab moves the focus to a control");
  await page.evaluate(() => document.activeElement?.blur());
  await h.waitFor("pia's tiles to show video", () =>
    page.evaluate(() => [...document.querySelectorAll("#grid .tile:not(.self) video")].some((v) => v.videoWidth > 0)));
  await h.screenshot("phone", "meeting-phone");
});

step("the host ends the meeting for everyone", async () => {
  await h.openTab("hana", "Host");
  await button("hana", "End meeting for everyone").click();
  await h.page("hana").getByRole("dialog").getByRole("button", { name: "OK" }).click();
  for (const who of ["ben", "cleo", "lou"]) {
    await h.waitFor(`${who} to see the meeting end`, () =>
      h.page(who).evaluate(() => /meeting has ended/.test(document.getElementById("status").textContent)));
  }
});

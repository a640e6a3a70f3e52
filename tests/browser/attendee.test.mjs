// Every attendee can join, and devices stay private: real Chromium instances with no
// devices, with devices the person refuses, with only a microphone, a microphone that goes
// away mid-meeting, a listener given the floor and then not, switching devices during the
// meeting, the lobby, a media path that breaks (mended by ICE restart), and the layout at desktop and phone sizes
// (screenshots in test-output/browser/). Machinery: harness.mjs.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Harness, sleep } from "./harness.mjs";

const ROOM = `attend-${process.pid}`;
const h = new Harness({ name: "attendee" });
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
const status = (who) => h.page(who).evaluate(() => document.getElementById("status").textContent);
/** Records the client's `unpublished` events in the page (window.__unpublished). */
const recordUnpublished = (who) => h.page(who).evaluate(() => {
  window.__unpublished = [];
  window.plenary.client.addEventListener("unpublished", (e) => window.__unpublished.push(e.detail));
});
const speakers = () => [ids.sam, ids.tess];

/** Opens the pre-join screen in `browser` (no autojoin) and clicks Join. */
async function joinFrom(who, browser, query = {}, { viewport } = {}) {
  const { page } = await h.newPage(who, { inBrowser: browser, query: { room: ROOM, name: who, ...query }, viewport });
  await page.locator("#dev-mode").waitFor();
  await button(who, "Join", true).click();
  ids[who] = await h.waitJoined(who);
  return page;
}

step("speakers and a host join", async () => {
  for (const who of ["sam", "tess"]) {
    await h.openPage(who, { room: ROOM, camera: true, mic: true });
    ids[who] = await h.myId(who);
  }
  await h.openPage("hal", { room: ROOM, camera: false, mic: true, extra: { host: "1" } });
  ids.hal = await h.myId("hal");
  await h.expectMediaFrom("sam", [ids.tess, ids.hal], { video: [ids.tess] });
  // The host stops talking. Fake microphones beep without a pause, like people talking all
  // the time, and the server forwards the three loudest microphones of a room with more:
  // a fourth microphone (mo's, below) is heard once one of the three goes quiet.
  await button("hal", "Mute microphone", true).click();
  await button("hal", "Unmute microphone", true).waitFor();
});

step("an attendee without camera or microphone joins from the pre-join screen and receives everyone", async () => {
  const none = await h.launch("none");
  const { page } = await h.newPage("lis", { inBrowser: none, query: { room: ROOM, name: "lis" } });
  await page.getByText("No microphone found").waitFor();
  await page.getByText("No camera found").waitFor();
  assert.equal(await page.getByLabel("Microphone on").isChecked(), false, "no microphone: the box is unticked");
  assert.equal(await page.getByLabel("Microphone on").isDisabled(), true);
  await h.screenshot("lis", "prejoin-no-devices");
  await button("lis", "Join", true).click();
  ids.lis = await h.waitJoined("lis");
  await h.expectMediaFrom("lis", speakers()); // hal, the host, is muted
  const state = await page.evaluate(() => ({ publish: window.plenary.client.publish.length, asked: window.__media.asked }));
  assert.deepEqual(state, { publish: 0, asked: { audio: 0, video: 0 } }, "nothing published, no device asked for");
  assert.match(await status("lis"), /listening/);
  await button("lis", "No microphone found").waitFor();
  await h.screenshot("lis", "meeting-listener-no-devices");
});

step("an attendee who refuses camera and microphone joins to listen and receives everyone", async () => {
  const denied = await h.launch("denied");
  const page = await joinFrom("den", denied);
  await h.expectMediaFrom("den", speakers());
  assert.match(await status("den"), /did not allow the (microphone|camera)/);
  assert.equal(await page.evaluate(() => window.plenary.client.publish.length), 0);
  assert.deepEqual((await h.heldTracks("den")).filter((t) => !t.endsWith(":ended")), []);
  await h.closePage("den");
});

step("an attendee with only a microphone is heard; unplugging it mid-meeting stops it cleanly", async () => {
  const micOnly = await h.launch("micOnly");
  const { page } = await h.newPage("mo", { inBrowser: micOnly, query: { room: ROOM, name: "mo" } });
  await page.getByText("No camera found").waitFor();
  assert.equal(await page.getByLabel("Microphone on").isChecked(), true);
  await button("mo", "Join", true).click();
  ids.mo = await h.waitJoined("mo");
  await h.waitFor("mo to publish its microphone", () =>
    page.evaluate(() => !!window.plenary.client.ownTrackId("microphone") && !window.plenary.client.publishing("camera")));
  await h.expectAudioFrom("sam", ids.mo);
  await recordUnpublished("mo");

  // The device goes away: its track ends.
  await page.evaluate(() => {
    const t = window.plenary.client.localTrack("microphone");
    t.stop();
    t.dispatchEvent(new Event("ended"));
  });
  await h.waitFor("mo to stop publishing", () => page.evaluate(() => !window.plenary.client.publishing("microphone")));
  await button("mo", "Turn microphone on").waitFor();
  assert.match(await status("mo"), /microphone stopped working/);
  assert.deepEqual(await page.evaluate(() => window.__unpublished), [{ source: "microphone", reason: "ended" }]);
  await h.waitFor("sam to see mo's microphone gone", () =>
    h.page("sam").evaluate((id) => ![...window.plenary.client.roomTracks.values()]
      .some((t) => t.participant_id === id && t.source === "microphone"), ids.mo));
  // Plugged back in: one click turns it on again.
  await button("mo", "Turn microphone on").click();
  await h.waitFor("mo to publish again", () => page.evaluate(() => !!window.plenary.client.ownTrackId("microphone")));
  await h.expectAudioFrom("sam", ids.mo);
  await h.closePage("mo");
});

step("a listener opens no device until given the floor, and none stays open after", async () => {
  // Lou's browser has devices and permission, and the boxes are ticked: only the grant
  // (publish=0) says lou may not speak.
  const page = await joinFrom("lou", undefined, { publish: "0" });
  assert.deepEqual(await page.evaluate(() => window.__media.asked), { audio: 0, video: 0 },
    "a listener's page asks for no device at join");
  const mic = button("lou", "Microphone (needs the floor)");
  assert.equal(await mic.getAttribute("aria-disabled"), "true", "the disabled state is announced");
  const opacity = await mic.evaluate((b) => Number(getComputedStyle(b).opacity));
  assert.ok(opacity < 0.75, `and shown (opacity ${opacity})`);
  assert.equal(await button("lou", "Camera (needs permission)").getAttribute("aria-disabled"), "true");
  assert.equal(await button("lou", "Raise hand").getAttribute("aria-disabled"), "false");
  await recordUnpublished("lou");

  // A client that ignores its UI and offers a microphone anyway is refused, plainly, and
  // the refused track is stopped.
  await page.evaluate(async () => {
    const s = await navigator.mediaDevices.getUserMedia({ audio: true });
    await window.plenary.client.addTrack(s.getAudioTracks()[0], "microphone", { force: true });
  });
  const denied = await h.waitFor("the server to refuse lou's microphone", () =>
    page.evaluate(() => window.plenary.ui.lastDenied || false));
  assert.match(denied.message, /you may not publish your microphone/);
  await h.waitFor("the refused track to stop", async () =>
    (await h.heldTracks("lou")).every((t) => t.endsWith(":ended")));
  await page.evaluate(() => {
    window.__media.asked = { audio: 0, video: 0 };
    window.__unpublished = [];
  });

  await button("lou", "Raise hand").click();
  await h.openTab("hal", "Host");
  await button("hal", "Give the floor to lou").click();
  await h.waitFor("lou to publish the microphone", () => page.evaluate(() => !!window.plenary.client.ownTrackId("microphone")));
  await h.expectAudioFrom("sam", ids.lou);
  assert.deepEqual(await page.evaluate(() => window.__media.asked), { audio: 1, video: 0 }, "one microphone, opened once");
  assert.deepEqual(await page.evaluate(() => window.__unpublished), [], "nothing refused");
  await button("lou", "Mute microphone", true).waitFor();

  // Every label the microphone button shows from now on.
  await page.evaluate(() => {
    window.__labels = [];
    const label = document.querySelector("#mute-mic .label");
    new MutationObserver(() => window.__labels.push(label.textContent)).observe(label, { childList: true, characterData: true, subtree: true });
  });
  await button("hal", "Take the floor back from lou").click();
  await h.waitFor("lou's tracks to be stopped", async () => {
    const t = await h.heldTracks("lou");
    return (t.length > 0 && t.every((x) => x.endsWith(":ended"))) || { ok: false, t };
  });
  await button("lou", "Microphone (needs the floor)").waitFor();
  const labels = await page.evaluate(() => window.__labels);
  assert.deepEqual(labels, ["Microphone (needs the floor)"], "the button never claimed a microphone that was gone");
  assert.deepEqual(await page.evaluate(() => window.__unpublished), [{ source: "microphone", reason: "revoked" }]);
  await h.waitFor("sam to stop receiving lou", () =>
    h.page("sam").evaluate((id) => ![...window.plenary.client.roomTracks.values()].some((t) => t.participant_id === id), ids.lou));
});

step("the lobby shows the room; the host's status forgets the lobby once it empties", async () => {
  await h.openTab("hal", "Host");
  await button("hal", "Turn lobby on").click();
  await button("hal", "Turn lobby off").waitFor();
  const { page } = await h.newPage("wes", { query: { room: ROOM, name: "wes", camera: "0", mic: "0", autojoin: "1" } });
  await page.getByRole("heading", { name: "Waiting to be let in" }).waitFor();
  assert.equal(await page.locator("#waiting-room-name").textContent(), ROOM);
  await button("wes", "Check camera and microphone").click();
  // camera=0, mic=0: nothing to check.
  assert.deepEqual(await page.evaluate(() => window.__media.asked), { audio: 0, video: 0 });
  await h.screenshot("wes", "lobby-waiting");
  const phone = await h.newPage("wes2", {
    query: { room: ROOM, name: "wes2", autojoin: "1" },
    viewport: { width: 375, height: 740 },
  });
  await phone.page.getByRole("heading", { name: "Waiting to be let in" }).waitFor();
  await button("wes2", "Check camera and microphone").click();
  await h.waitFor("wes2's lobby preview", () => phone.page.evaluate(() => document.getElementById("waiting-video").videoWidth > 0));
  await h.screenshot("wes2", "lobby-waiting-phone");

  await h.waitFor("hal's status to count the lobby", async () => /2 waiting in the lobby/.test(await status("hal")));
  await h.screenshot("hal", "host-lobby");
  await button("hal", "Admit wes", true).click();
  ids.wes = await h.waitJoined("wes", "wes to be admitted");
  await h.waitFor("hal's status to say 1", async () => /1 waiting in the lobby/.test(await status("hal")));
  await button("hal", "Deny wes2", true).click();
  await h.waitFor("wes2 to be turned away", async () => /did not let you in/.test(await status("wes2")));
  await h.waitFor("wes2's preview to be closed", async () => (await h.heldTracks("wes2")).every((t) => t.endsWith(":ended")));
  await h.waitFor("hal's status to forget the lobby", async () => !/waiting in the lobby/.test(await status("hal")));
  await button("hal", "Turn lobby off").click();
  await button("hal", "Turn lobby on").waitFor();
});

step("pages load without console errors", async () => {
  const { page } = await h.newPage("fresh", { query: { room: ROOM, name: "fresh" } });
  await page.locator("#dev-mode").waitFor();
  await sleep(1000);
  for (const who of ["fresh", "lis", "sam"]) {
    assert.deepEqual(h.pages.get(who).errors, [], `${who}'s console has no errors`);
  }
  assert.deepEqual(await page.evaluate(() => window.__media.asked), { audio: 0, video: 0 }, "no preview before it is asked for");
  await h.closePage("fresh");
});

step("a speaker switches microphone during the meeting; the others keep hearing them", async () => {
  const sam = h.page("sam");
  const before = await sam.evaluate(() => window.plenary.client.localTrack("microphone").getSettings().deviceId);
  await button("sam", "Devices").click();
  const dialog = sam.getByRole("dialog");
  const option = await sam.evaluate((current) =>
    [...document.querySelectorAll("#set-mic option")].find((o) => o.value !== current && o.value !== "default")?.value, before);
  assert.ok(option, "the fake devices offer a second microphone");
  await dialog.getByLabel("Microphone").selectOption(option);
  await h.waitFor("sam's microphone to be switched", () =>
    sam.evaluate((id) => window.plenary.client.localTrack("microphone")?.getSettings().deviceId === id, option));
  await h.screenshot("sam", "devices-dialog");
  await dialog.getByRole("button", { name: "Done" }).click();
  const held = await h.heldTracks("sam");
  assert.equal(held.filter((t) => t === "audio:live").length, 1, `one live microphone (${held})`);
  await h.expectAudioFrom("tess", ids.sam);
  await h.expectAudioFrom("lis", ids.sam);
});

step("a page whose media path breaks comes back by itself, by ICE restart on the same session", async () => {
  const tess = h.page("tess");
  await tess.evaluate(() => {
    window.__marker = "same page";
  });
  await h.recordStates("tess");
  const before = await tess.evaluate(() => window.plenary.client.iceRestarts);
  const restore = await h.cutMedia("tess");
  try {
    await h.waitFor("tess to notice and restart ICE", () =>
      tess.evaluate((n) => window.plenary.client.iceRestarts > n, before));
    await h.waitFor("tess to say it is mending the media", () =>
      tess.evaluate(() => /reconnecting audio and video/.test(document.getElementById("status").textContent)));
    await h.waitFor("tess to be back on the same session", () =>
      tess.evaluate((old) => window.plenary.client.state === "joined" && window.__marker === "same page" &&
        window.plenary.client.me.id === old && window.plenary.client.pc.connectionState === "connected", ids.tess));
    await h.expectMediaFrom("tess", [ids.sam]);
    await h.expectMediaFrom("sam", [ids.tess]);
    assert.ok(!(await tess.evaluate(() => window.__seen.includes("reconnecting"))), "no new session was needed");
    await h.waitFor("tess's status to forget the trouble", () =>
      tess.evaluate(() => !/reconnecting audio and video/.test(document.getElementById("status").textContent)));
  } finally {
    restore();
  }
});

step("the layout: tabs, compact listeners, readable controls at desktop and 375 px", async () => {
  const hal = h.page("hal");
  // People, chat and host tools are tabs of one panel, one shown at a time.
  assert.deepEqual(await hal.getByRole("tab").allTextContents().then((t) => t.map((x) => x.replace(/\s*\(.*$/, "").trim())),
    ["People", "Chat", "Host"]);
  for (const tab of ["People", "Chat", "Host"]) {
    await h.openTab("hal", tab);
    assert.equal(await hal.locator("[role=tabpanel]:not([hidden])").count(), 1);
    await h.screenshot("hal", `meeting-tab-${tab.toLowerCase()}`);
  }
  // Attendees without video are compact chips, not grid tiles.
  for (const who of ["lis", "lou", "wes"]) {
    assert.equal(await hal.locator(`#grid .tile[data-participant-id="${ids[who]}"]`).count(), 0, `${who} has no tile`);
    await hal.locator(`#audio-list .chip[data-participant-id="${ids[who]}"]`).waitFor();
  }
  await h.screenshot("sam", "meeting-desktop");

  const phone = await h.newPage("pia", { query: { room: ROOM, name: "pia", autojoin: "1" }, viewport: { width: 375, height: 740 } });
  await h.waitJoined("pia");
  await h.waitFor("pia's tiles to show video", () =>
    phone.page.evaluate(() => [...document.querySelectorAll("#grid .tile:not(.self) video")].some((v) => v.videoWidth > 0)));
  const fits = await phone.page.evaluate(() => ({
    overflow: document.documentElement.scrollWidth - window.innerWidth,
    buttons: [...document.querySelectorAll(".controls button:not([hidden])")].map((b) => {
      const r = b.getBoundingClientRect();
      const label = b.querySelector(".label");
      return { name: label.textContent, left: r.left, right: r.right, labelShown: label.getBoundingClientRect().height > 0 };
    }),
  }));
  assert.ok(fits.overflow <= 1, `no horizontal scrolling at 375 px (overflow ${fits.overflow})`);
  for (const b of fits.buttons) {
    assert.ok(b.left >= 0 && b.right <= 375 && b.labelShown, `control "${b.name}" is on screen with its label`);
  }
  await h.screenshot("pia", "meeting-phone");
  await button("pia", "People").click();
  await h.screenshot("pia", "meeting-phone-people");
  await button("pia", "Chat").click();
  await h.screenshot("pia", "meeting-phone-chat");
  const host = await h.newPage("hal2", {
    query: { room: ROOM, name: "hal2", autojoin: "1", camera: "0", mic: "0", host: "1" },
    viewport: { width: 375, height: 740 },
  });
  await h.waitJoined("hal2");
  await button("hal2", "Host tools").click();
  await host.page.getByRole("heading", { name: "Host tools" }).waitFor();
  await h.screenshot("hal2", "meeting-phone-host");
  const prejoin = await h.newPage("pre", { query: { room: ROOM, name: "pre" }, viewport: { width: 375, height: 740 } });
  await button("pre", "Check camera and microphone").click();
  await h.waitFor("the phone's preview", () => prejoin.page.evaluate(() => document.getElementById("prejoin-video").videoWidth > 0));
  await h.screenshot("pre", "prejoin-phone");
  await button("pre", "Stop checking").click();
  await h.waitFor("the preview's tracks to stop", async () => (await h.heldTracks("pre")).every((t) => t.endsWith(":ended")));
});

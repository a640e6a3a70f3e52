// A general meeting's governance in headless Chromium, through the page's buttons: a host,
// three members (one of them in two tabs), a guest and a listener; a quorum set and shown
// to the host; a recorded vote (names shown, the last choice counts, the guest refused); a
// secret ballot with multiple choice (cast once, final); a speaker's countdown running out;
// and the minutes downloaded as Markdown and JSON.
//
// Grants are minted by the test with an API key (dev mode off), so identities are stable:
// a second tab of a member is the same voter. The server keeps the record of meetings
// (meetings.always_record) in a database of its own. Machinery: harness.mjs.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Harness } from "./harness.mjs";

const ROOM = `agm-${process.pid}`;
const h = new Harness({ name: "governance" });
h.env = {
  PLENARY_AUTH_API_KEYS: `{ test = "${h.apiSecret}" }`,
  PLENARY_AUTH_DEV_MODE: "off",
  PLENARY_MEETINGS_ALWAYS_RECORD: "true",
  PLENARY_MEMBERSHIP_DATABASE: path.join(mkdtempSync(path.join(tmpdir(), "plenary-gov-")), "plenary.db"),
};
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

const page = (who) => h.page(who);
const button = (who, name, exact = false) => page(who).getByRole("button", { name, exact });
/** An option button on the motion card (its text, without the ✓ a pressed one shows). */
const option = (who, text) => page(who).locator("#motion-options button", { hasText: new RegExp(`^${text}$`) });
const receipt = (who) => page(who).locator("#vote-receipt");

/** Opens `name`'s page with a grant from the test and waits until it is in the room. */
async function join(name, grantOpts, identity = name) {
  const grant = h.grant(ROOM, identity, { name: identity, ...grantOpts });
  await h.openPage(name, { room: ROOM, camera: false, mic: false, extra: { grant } });
  ids[name] = await h.myId(name);
}

/** Picks `options` on the card and casts the vote; waits for the server's receipt. */
async function vote(who, options, receiptText) {
  for (const o of options) await option(who, o).click();
  await page(who).locator("#cast-vote").click();
  await h.waitFor(`${who}'s vote to count`, async () =>
    (await receipt(who).textContent())?.includes(receiptText) || { ok: false, receipt: await receipt(who).textContent() });
}

/** The result table's caption on `who`'s page once the motion titled `title` is closed. */
async function resultOf(who, title) {
  await page(who).getByRole("heading", { name: title }).waitFor();
  const caption = page(who).locator("#motion-result caption");
  await caption.waitFor();
  return caption.textContent();
}

step("a host, three members, a guest and a listener join; the host sets a quorum and sees it", async () => {
  await join("chair", { host: true, publish: true });
  await join("ann", { publish: true });
  await join("bob", { publish: true });
  await join("cat", { publish: true });
  await join("gus", { publish: true, role: "guest", invitedBy: "ann" });
  await join("lou", { publish: false });
  await h.openTab("chair", "Host");
  const indicator = page("chair").locator("#quorum-indicator");
  await h.waitFor("the host to see who is present", async () =>
    /5 members present \(\+1 guest\)/.test(await indicator.textContent()) || { ok: false, text: await indicator.textContent() });
  await page("chair").getByLabel("Quorum rule").selectOption("members");
  await page("chair").getByLabel("Quorum: number of members or percent").fill("4");
  await button("chair", "Set quorum").click();
  await h.waitFor("the quorum to hold", async () =>
    /quorum 4: met/.test(await indicator.textContent()) || { ok: false, text: await indicator.textContent() });
  await h.screenshot("chair", "governance-host");
});

step("a recorded vote: members and the listener vote, the guest is refused, the last choice of a member in two tabs counts", async () => {
  const chair = page("chair");
  await chair.getByText("Write a motion").click();
  await chair.getByLabel("Title").fill("Adopt the 2026 budget");
  await chair.getByLabel("Text", { exact: true }).fill("That the members adopt the budget as presented.");
  await button("chair", "Write motion").click();
  await button("chair", "Open the vote on Adopt the 2026 budget").click();
  for (const who of ["ann", "bob", "cat", "gus", "lou"]) {
    await page(who).getByRole("heading", { name: "Adopt the 2026 budget" }).waitFor();
  }
  await h.screenshot("ann", "governance-vote");
  await vote("ann", ["For"], "Your vote counts: For");
  await vote("bob", ["Against"], "Your vote counts: Against");
  await vote("lou", ["For"], "Your vote counts: For");
  await vote("cat", ["Abstain"], "Your vote counts: Abstain");

  // The guest's buttons say why they do not vote; a vote sent anyway is refused.
  assert.equal(await receipt("gus").textContent(), "Guests do not vote on this motion.");
  assert.equal(await option("gus", "For").getAttribute("aria-disabled"), "true");
  await page("gus").evaluate(() => window.plenary.client.vote("MO_1", [0]));
  const refused = await h.waitFor("the guest's vote to be refused", () =>
    page("gus").evaluate(() => window.plenary.ui.lastGovernanceError || false));
  assert.equal(refused.code, "not_eligible");

  // Cat opens a second tab: the first is replaced, the new one knows her vote and changes it.
  await join("cat2", { publish: true }, "cat");
  await h.waitFor("cat's second tab to show her vote", async () =>
    (await receipt("cat2").textContent())?.includes("Your vote counts: Abstain") || { ok: false, text: await receipt("cat2").textContent() });
  await h.waitFor("cat's first tab to be replaced", () =>
    page("cat").evaluate(() => window.plenary.client.state === "closed"));
  await vote("cat2", ["For"], "Your vote counts: For");
  await h.waitFor("the host to see four votes", async () =>
    /4 have voted/.test(await chair.locator("#motion-meta").textContent()) || { ok: false, text: await chair.locator("#motion-meta").textContent() });
  await button("chair", "Close the vote on Adopt the 2026 budget").click();
  for (const who of ["chair", "ann", "gus", "lou", "cat2"]) {
    assert.equal(await resultOf(who, "Adopt the 2026 budget"),
      "4 of 5 voted: For 3 (75.0%), Against 1 (25.0%), Abstain 0 (0.0%). Quorum held.", who);
  }
  await page("bob").getByText("Who voted what").click();
  const names = await page("bob").locator("#motion-result details").textContent();
  assert.match(names, /For: ann, lou, cat/);
  assert.match(names, /Against: bob/);
  await h.screenshot("bob", "governance-result");
});

step("a secret ballot with two choices: cast once and final; nobody sees who chose what", async () => {
  const chair = page("chair");
  await chair.getByText("Write a motion").click();
  await chair.getByLabel("Title").fill("Elect the board");
  await chair.getByLabel("How members vote").selectOption("secret");
  await chair.getByLabel("Options, one per line").fill("Alma\nBea\nCyd");
  await chair.getByLabel("Each voter may choose up to").fill("2");
  await button("chair", "Write motion").click();
  await button("chair", "Open the vote on Elect the board").click();
  await page("ann").getByText("Secret ballot: nobody, not even the hosts").waitFor();
  await vote("ann", ["Alma", "Bea"], "Your secret ballot is cast");
  // A ballot is final: the buttons are off, and a second one sent anyway is refused.
  assert.equal(await page("ann").locator("#cast-vote").isHidden(), true);
  await page("ann").evaluate(() => window.plenary.client.vote("MO_2", [2]));
  const again = await h.waitFor("ann's second ballot to be refused", () =>
    page("ann").evaluate(() => window.plenary.ui.lastGovernanceError || false));
  assert.equal(again.code, "already_voted");
  await vote("cat2", ["Bea"], "Your secret ballot is cast");
  await vote("bob", ["Cyd"], "Your secret ballot is cast");
  await vote("chair", ["Alma"], "Your secret ballot is cast");
  const before = await page("chair").evaluate(() => window.plenary.ui.governance().motions.find((m) => m.id === "MO_2"));
  assert.equal(before.votes_cast, 4);
  assert.equal(before.result, undefined, "no tally before it closes");
  await button("chair", "Close the vote on Elect the board").click();
  const caption = await resultOf("lou", "Elect the board");
  assert.equal(caption, "4 of 5 voted: Alma 2 (50.0%), Bea 2 (50.0%), Cyd 1 (25.0%). Quorum held.");
  assert.equal(await page("lou").locator("#motion-result details").count(), 0, "no names for a secret ballot");
});

step("a speaker's countdown is visible to all and the host is told when it runs out", async () => {
  await page("chair").getByLabel("Seconds per speaker").fill("6");
  await button("chair", "Set speaking time").click();
  await button("lou", "Raise hand").click();
  await button("chair", "Give the floor to lou").click();
  for (const who of ["ann", "lou", "chair"]) {
    await h.waitFor(`${who} to see lou's countdown`, async () =>
      /lou has the floor: 0:0\d left/.test(await page(who).locator("#speaking-bar").textContent()) ||
      { ok: false, text: await page(who).locator("#speaking-bar").textContent() });
  }
  await h.waitFor("the host to be told lou's time is up", async () =>
    /lou's speaking time is up/.test(await page("chair").locator("#status").textContent()) ||
    { ok: false, text: await page("chair").locator("#status").textContent() }, 20_000, 250);
  await h.waitFor("ann's countdown to reach zero", async () =>
    /lou: speaking time is up/.test(await page("ann").locator("#speaking-bar").textContent()) ||
    { ok: false, text: await page("ann").locator("#speaking-bar").textContent() }, 5000, 250);
  await button("chair", "Take the floor back from lou").click();
  await h.waitFor("the speaking bar to go", () => page("ann").locator("#speaking-bar").isHidden());
});

step("the host downloads the minutes: attendance, speakers, both votes and their results", async () => {
  const chair = page("chair");
  const [md] = await Promise.all([chair.waitForEvent("download"), button("chair", "Download minutes (Markdown)").click()]);
  const text = readFileSync(await md.path(), "utf8");
  h.log(`minutes: ${text.length} characters`);
  for (const needle of [
    `# Minutes of ${ROOM}`,
    "## Attendance (6)",
    "| gus | gus | guest (invited by ann) |",
    "### MO_1: Adopt the 2026 budget (recorded vote)",
    "| For | 3 | 75.0 | 60.0 |",
    "- cat (cat): For",
    "### MO_2: Elect the board (secret ballot, up to 2 choices)",
    "Voted (secret ballot; who chose what is not recorded): ann, bob, cat, chair.",
    "quorum held: 5 members present, 4 required",
    "| lou |",
  ]) {
    assert.ok(text.includes(needle), `${needle} in the minutes:\n${text}`);
  }
  const [json] = await Promise.all([chair.waitForEvent("download"), button("chair", "Download minutes (JSON)").click()]);
  const doc = JSON.parse(readFileSync(await json.path(), "utf8"));
  const m = doc.meetings[0];
  assert.equal(m.attendance.length, 6, "one row per identity");
  const cat = m.attendance.find((a) => a.identity === "cat");
  assert.equal(cat.sessions.length, 2, "two tabs: two sessions, one attendee");
  assert.equal(cat.sessions[0].leave_reason, "replaced");
  assert.equal(m.attendance.find((a) => a.identity === "lou").role, "member");
  assert.equal(m.motions[1].votes.length, 0, "no choices of a secret ballot");
  assert.deepEqual(m.motions[1].voters.map((v) => v.identity), ["ann", "bob", "cat", "chair"]);
  assert.equal(m.speakers[0].identity, "lou");
  assert.equal(m.speakers[0].over_time, true);
  // A member's grant does not open the minutes.
  const status = await page("ann").evaluate(async (room) => {
    const res = await fetch(`/api/minutes/${room}`, { headers: { Authorization: `Bearer ${window.plenary.client.grant}` } });
    return res.status;
  }, ROOM);
  assert.equal(status, 403);
});

// End-to-end test of Plenary's web client in headless Chromium.
//
// Starts the Plenary binary on free loopback ports (dev mode is on for loopback), opens
// three publishing pages and one listener in one room, and checks through the page's
// `window.plenary.stats()` that every page decodes the others' video and receives their
// audio; then one page leaves and the others must see it gone, and a newcomer's media flows
// on the m-lines the leaver freed.
//
// Env: PLENARY_BIN (default <repo>/target/debug/plenary), CHROMIUM (default
// /usr/bin/chromium), WAIT_SECS (bound on every wait, default 45), PLENARY_LOG or RUST_LOG
// (the server's log filter, default info),
// PLENARY_URL (test a server that is already running there instead of starting one).
// Output (screenshots, server log, browser consoles): <repo>/test-output/browser/.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { createSocket } from "node:dgram";
import { mkdirSync, createWriteStream, writeFileSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "..", "..");
const BIN = process.env.PLENARY_BIN || path.join(repo, "target", "debug", "plenary");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = Number(process.env.WAIT_SECS || 45) * 1000;
const OUT = path.join(repo, "test-output", "browser");
const ROOM = `gm-${process.pid}`;

const CHROME_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--use-fake-device-for-media-stream",
  "--use-fake-ui-for-media-stream",
  "--autoplay-policy=no-user-gesture-required",
];
// The listener runs in a browser of its own without the fake-media flags: with
// --use-fake-ui-for-media-stream every page counts as having media permission, and Chromium
// would then show it its real host addresses. A real listener has no permission, so
// Chromium hides its host candidates behind mDNS names, which the server cannot resolve:
// it must learn the address from the ICE checks. That is the path this browser exercises.
const LISTENER_ARGS = CHROME_ARGS.filter((a) => !a.startsWith("--use-fake-"));

let server = null;
let serverExited = null;
let browser = null;
let listenerBrowser = null;
let baseUrl = "";
const pages = new Map(); // name → {page, context, console: string[]}
const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** A timer that does not keep node alive: for bounding cleanup steps. */
const bound = (ms) => new Promise((r) => setTimeout(r, ms).unref());

function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function freeUdpPort() {
  return new Promise((resolve, reject) => {
    const sock = createSocket("udp4");
    sock.once("error", reject);
    sock.bind(0, "127.0.0.1", () => {
      const { port } = sock.address();
      sock.close(() => resolve(port));
    });
  });
}

/** Polls `fn` until it returns a truthy value; fails after `ms` with `what` and the last value. */
async function waitFor(what, fn, ms = WAIT_MS, every = 500) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    if (serverExited) throw new Error(`server exited (${serverExited}) while waiting for ${what}`);
    try {
      last = await fn();
      if (last && (typeof last !== "object" || last.ok !== false)) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${ms / 1000}s waiting for ${what}; last: ${detail}`);
    }
    await sleep(every);
  }
}

function killServer() {
  if (server && server.exitCode === null && server.signalCode === null) {
    server.kill("SIGTERM");
    const s = server;
    setTimeout(() => {
      if (s.exitCode === null && s.signalCode === null) s.kill("SIGKILL");
    }, 5000).unref();
  }
}
process.on("exit", () => {
  if (server && server.exitCode === null && server.signalCode === null) server.kill("SIGKILL");
});

async function startServer() {
  const httpPort = await freeTcpPort();
  const mediaPort = await freeUdpPort();
  baseUrl = `http://127.0.0.1:${httpPort}`;
  const log = createWriteStream(path.join(OUT, "server.log"));
  // The server refuses unknown PLENARY_* variables (PLENARY_BIN and PLENARY_URL are ours).
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith("PLENARY_")),
  );
  server = spawn(BIN, [], {
    env: {
      ...env,
      PLENARY_HTTP_ADDR: `127.0.0.1:${httpPort}`,
      PLENARY_MEDIA_ADDR: `127.0.0.1:${mediaPort}`,
      // The server's log filter (tracing EnvFilter syntax); RUST_LOG is accepted as an alias.
      PLENARY_LOG: process.env.PLENARY_LOG || process.env.RUST_LOG || "info",
      NO_COLOR: "1",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  server.stdout.pipe(log);
  server.stderr.pipe(log);
  server.on("error", (err) => {
    serverExited = `spawn error: ${err.message}`;
  });
  server.on("exit", (code, signal) => {
    serverExited = `code ${code}, signal ${signal}`;
  });

  await waitFor(`GET ${baseUrl}/healthz`, async () => {
    const res = await fetch(`${baseUrl}/healthz`);
    return res.status === 200;
  });
  console.log(`[${elapsed()}] server up at ${baseUrl} (media udp ${mediaPort})`);
}

before(async () => {
  mkdirSync(OUT, { recursive: true });
  if (process.env.PLENARY_URL) baseUrl = process.env.PLENARY_URL.replace(/\/$/, "");
  else await startServer();

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROME_ARGS,
    timeout: WAIT_MS,
  });
  listenerBrowser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: LISTENER_ARGS,
    timeout: WAIT_MS,
  });
  console.log(`[${elapsed()}] chromium ${browser.version()} launched (twice)`);
});

after(async () => {
  // Leave the browser consoles behind for whoever debugs a failure.
  for (const [name, p] of pages) {
    writeFileSync(path.join(OUT, `console-${name}.log`), p.console.join("\n") + "\n");
  }
  try {
    await Promise.race([
      Promise.all([browser?.close(), listenerBrowser?.close()]),
      bound(10_000),
    ]);
  } catch {}
  killServer();
  if (server && server.exitCode === null && server.signalCode === null) {
    await Promise.race([new Promise((r) => server.once("exit", r)), bound(6000)]);
  }
});

async function openPage(name, { camera, mic, inBrowser = browser }) {
  const context = await inBrowser.newContext({ viewport: { width: 1024, height: 720 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const entry = { page, context, console: [] };
  pages.set(name, entry);
  page.on("console", (m) => entry.console.push(`[${elapsed()}] ${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => entry.console.push(`[${elapsed()}] pageerror: ${e.message}`));
  const q = new URLSearchParams({
    room: ROOM,
    name,
    autojoin: "1",
    camera: camera ? "1" : "0",
    mic: mic ? "1" : "0",
  });
  await page.goto(`${baseUrl}/?${q}`);
  await waitFor(`${name} to join`, () =>
    page.evaluate(() =>
      (window.plenary?.client?.state === "joined" && window.plenary.client.me?.id) ||
      { ok: false, status: document.getElementById("status")?.textContent },
    ),
  );
  return entry;
}

const myId = (name) => pages.get(name).page.evaluate(() => window.plenary.client.me.id);
const stats = (name) => pages.get(name).page.evaluate(() => window.plenary.stats());

/**
 * Waits until `name` decodes video from and receives growing audio from each of the
 * participant ids in `from`.
 */
async function expectMediaFrom(name, from) {
  const want = new Set(from);
  const summary = (s) =>
    s.map((x) => `${x.participant_id}/${x.kind}: ` +
      (x.kind === "video" ? `frames=${x.framesDecoded} ` : "") + `pkts=${x.packetsReceived}`);
  const decodingVideo = (s) =>
    new Set(s.filter((x) => x.kind === "video" && x.framesDecoded > 0 && want.has(x.participant_id))
      .map((x) => x.participant_id));
  const audioFrom = (s) =>
    new Map(s.filter((x) => x.kind === "audio" && want.has(x.participant_id))
      .map((x) => [x.participant_id, x.packetsReceived]));

  await waitFor(`${name} to decode video and receive audio from ${[...want]}`, async () => {
    const s = await stats(name);
    const v = decodingVideo(s);
    const a = audioFrom(s);
    const ok = v.size === want.size && [...want].every((id) => (a.get(id) ?? 0) > 0);
    return ok || { ok: false, stats: summary(s) };
  });
  // Audio keeps flowing: packetsReceived grows between two polls.
  const first = audioFrom(await stats(name));
  await waitFor(`${name}'s audio packet counters to grow`, async () => {
    const now = audioFrom(await stats(name));
    const grown = [...want].every((id) => (now.get(id) ?? 0) > (first.get(id) ?? 0));
    return grown || { ok: false, first: [...first], now: [...now] };
  }, WAIT_MS, 1000);
  // And the page shows it: each sender's tile plays video with real dimensions, and audio.
  await waitFor(`${name}'s tiles to play video and audio from ${[...want]}`, () =>
    pages.get(name).page.evaluate((ids) => ids.map((id) => {
      const tile = document.querySelector(`#grid .tile[data-participant-id="${id}"]`);
      const video = tile?.querySelector("video");
      const audio = tile?.querySelector("audio");
      const live = (el, kind) =>
        !!el?.srcObject?.getTracks().some((t) => t.kind === kind && t.readyState === "live");
      return !!tile && video.videoWidth > 0 && !video.paused && live(video, "video") &&
        !audio.paused && live(audio, "audio");
    }).every(Boolean), [...want]),
  );
  const s = await stats(name);
  console.log(`[${elapsed()}] ${name}: ${summary(s).join(", ")}`);
}

async function screenshot(name, label) {
  await pages.get(name).page.screenshot({ path: path.join(OUT, `${label}-${name}.png`) });
}

test("three publishers and a listener see and hear each other; a leaver disappears; a newcomer reuses its m-lines", async () => {
  try {
    await scenario();
  } catch (err) {
    showDiagnostics();
    throw err;
  }
});

/** On failure, prints the tails of the browser consoles and of the server log. */
function showDiagnostics() {
  const tail = (text, n) => text.trimEnd().split("\n").slice(-n);
  for (const [name, p] of pages) {
    for (const line of tail(p.console.join("\n"), 15)) console.log(`console ${name}: ${line}`);
  }
  try {
    const log = readFileSync(path.join(OUT, "server.log"), "utf8");
    for (const line of tail(log, 40)) console.log(`server: ${line}`);
  } catch {}
}

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

  await openPage("dave", { camera: false, mic: false, inBrowser: listenerBrowser });
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

  // Every publisher shows a tile for each of the three others (the listener included).
  for (const name of publishers) {
    await waitFor(`${name} to show 3 tiles`, () =>
      pages.get(name).page.evaluate(() => document.querySelectorAll("#grid .tile:not(.self)").length === 3),
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

// Reachable from every network, in real Chromium:
// - TURN: Debian's coturn, started here on loopback with the shared-secret scheme; a page
//   that may use only the relay (`?relay=1`, iceTransportPolicy "relay") exchanges audio and
//   video with a direct page, its selected candidate pair is a relay, and coturn refuses
//   expired credentials while it takes fresh ones from the welcome;
// - ICE over TCP: a page in a network namespace of the test's own (netns.mjs) whose UDP is
//   all dropped joins over the server's passive TCP candidate and receives every speaker;
//   with that TCP port blocked too, the page says plainly that media cannot get through;
// - ICE restart: a page whose UDP (and ICE-TCP) is dropped for 5 s comes back within 5 s of
//   the network's return on the same session — same participant, hand still up, same place
//   in the queue, no rejoin.
// Needs root (network namespace, nftables) and Debian's coturn. Machinery: harness.mjs.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Harness, sleep, freeTcpPort } from "./harness.mjs";
import { Netns } from "./netns.mjs";
import { Coturn } from "./coturn.mjs";

const SECRET = `reach-turn-secret-${process.pid}-0123456789`;
const coturn = new Coturn({ port: await freeTcpPort(), secret: SECRET, name: "coturn-reach" });
const loop = new Harness({
  name: "reach-turn",
  env: {
    PLENARY_TURN_URLS: JSON.stringify(coturn.urls()),
    PLENARY_TURN_SECRET: SECRET,
    PLENARY_TURN_TTL: "600",
  },
});
const ns = new Netns((process.pid % 200) + 1);
const net = new Harness({ name: "reach-net", host: ns.hostIp });
let tcpPort = 0;
const TURN_ROOM = `turn-${process.pid}`;
const ROOM = `reach-${process.pid}`;
const ids = {};
let netBrowser = null;

before(async () => {
  await coturn.start();
  await loop.start();
  ns.up();
  tcpPort = await freeTcpPort(ns.hostIp);
  net.env.PLENARY_MEDIA_TCP_ADDR = `${ns.hostIp}:${tcpPort}`;
  await net.start();
  netBrowser = await net.launch("fake", { executablePath: ns.wrapper });
});
after(async () => {
  await loop.stop();
  await net.stop();
  await coturn.stop();
  ns.down();
});

function step(name, h, fn) {
  test(name, async () => {
    try {
      await fn();
    } catch (err) {
      h.showDiagnostics();
      throw err;
    }
  });
}

/** The selected candidate pair of page `who`: {local, remote} candidate stats. */
function selectedPair(h, who) {
  return h.page(who).evaluate(async () => {
    const report = await window.plenary.client.pc.getStats();
    let pair = null;
    report.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
    });
    if (!pair) return null;
    const c = (id) => {
      const x = report.get(id);
      return x && { type: x.candidateType, protocol: x.protocol, address: x.address, port: x.port, relayProtocol: x.relayProtocol };
    };
    return { local: c(pair.localCandidateId), remote: c(pair.remoteCandidateId), state: pair.state };
  });
}

/** Joins `who` to the namespace harness's room with a test-minted grant. */
async function netJoin(who, { browser, publish = false, camera = publish, mic = publish }) {
  const grant = net.grant(ROOM, who, { publish });
  await net.newPage(who, {
    inBrowser: browser,
    query: { room: ROOM, name: who, grant, autojoin: "1", camera: camera ? "1" : "0", mic: mic ? "1" : "0" },
  });
  ids[who] = await net.waitJoined(who);
}

// ---- TURN through coturn ------------------------------------------------------------------

step("TURN: a relay-only page and a direct page exchange audio and video; the pair is a relay", loop, async () => {
  await loop.openPage("direct", { room: TURN_ROOM, camera: true, mic: true });
  await loop.openPage("relayed", { room: TURN_ROOM, camera: true, mic: true, extra: { relay: "1" } });
  ids.direct = await loop.myId("direct");
  ids.relayed = await loop.myId("relayed");
  const servers = await loop.page("relayed").evaluate(() => window.plenary.client.iceServers);
  const turn = servers.find((s) => s.urls.some((u) => u.startsWith("turn:")));
  assert.ok(turn, `welcome names the TURN server: ${JSON.stringify(servers)}`);
  assert.match(turn.username, /^\d+:dev:/, "username expiry:identity");
  assert.ok(!JSON.stringify(servers).includes(SECRET), "never the secret");
  await loop.expectMediaFrom("direct", [ids.relayed]);
  await loop.expectMediaFrom("relayed", [ids.direct]);
  const pair = await selectedPair(loop, "relayed");
  loop.log(`relayed page's selected pair: ${JSON.stringify(pair)}`);
  assert.equal(pair?.local?.type, "relay", "the relay-only page sends through coturn");
  const direct = await selectedPair(loop, "direct");
  assert.equal(direct?.local?.type, "host", "the other page does not");
  await loop.screenshot("relayed", "reach-turn-relayed");
});

step("TURN: coturn refuses expired credentials and takes the welcome's", loop, async () => {
  const fresh = await loop.page("relayed").evaluate(() =>
    window.plenary.client.iceServers.find((s) => s.urls.some((u) => u.startsWith("turn:"))));
  const identity = fresh.username.slice(fresh.username.indexOf(":") + 1);
  const expired = coturn.credentials(identity, Math.floor(Date.now() / 1000) - 60);
  const gather = (server) => loop.page("relayed").evaluate(async (server) => {
    const pc = new RTCPeerConnection({ iceServers: [server], iceTransportPolicy: "relay" });
    const candidates = [];
    const errors = [];
    pc.onicecandidate = (e) => e.candidate && candidates.push(e.candidate.type);
    pc.onicecandidateerror = (e) => errors.push(e.errorCode);
    pc.createDataChannel("probe");
    await pc.setLocalDescription();
    const t0 = Date.now();
    while (pc.iceGatheringState !== "complete" && Date.now() - t0 < 20_000) {
      await new Promise((r) => setTimeout(r, 100));
    }
    pc.close();
    return { candidates, errors };
  }, server);
  const urls = coturn.urls();
  const bad = await gather({ urls, ...expired });
  const good = await gather({ urls, username: fresh.username, credential: fresh.credential });
  loop.log(`expired credentials: ${JSON.stringify(bad)}; fresh: ${JSON.stringify(good)}`);
  assert.deepEqual(bad.candidates, [], "no relay with expired credentials");
  assert.ok(bad.errors.includes(401), `coturn answers 401 Unauthorized (${bad.errors})`);
  assert.ok(good.candidates.includes("relay"), "a relay with the welcome's credentials");
});

// ---- ICE over TCP ---------------------------------------------------------------------------

step("ICE-TCP: a page on a network that drops all UDP joins over TCP and receives every speaker", net, async () => {
  await netJoin("ann", { publish: true });
  await netJoin("ben", { publish: true });
  ns.block({ udp: true });
  net.log("namespace: all UDP dropped");
  await netJoin("tcp", { browser: netBrowser });
  await net.expectMediaFrom("tcp", [ids.ann, ids.ben]);
  const pair = await selectedPair(net, "tcp");
  net.log(`UDP-less page's selected pair: ${JSON.stringify(pair)}`);
  assert.equal(pair?.local?.protocol, "tcp", "media over TCP");
  assert.equal(pair?.remote?.port, tcpPort, "to the server's ICE-TCP port");
  // The server's gauges are published once a second.
  const open = await net.waitFor("the server to count the ICE-TCP connection", async () => {
    const metrics = await (await fetch(`${net.baseUrl}/metrics`)).text();
    const n = Number(/^plenary_ice_tcp_connections (\d+)/m.exec(metrics)?.[1] ?? 0);
    return n >= 1 ? n : { ok: false, metrics: metrics.split("\n").filter((l) => l.includes("tcp")) };
  }, 5000);
  net.log(`ICE-TCP connections open at the server: ${open}`);
  await net.screenshot("tcp", "reach-ice-tcp");
});

step("ICE-TCP: with that TCP port blocked as well, the page says media cannot get through", net, async () => {
  ns.block({ udp: true, tcpPorts: [tcpPort] });
  net.log(`namespace: all UDP and TCP port ${tcpPort} dropped`);
  const page = net.page("tcp");
  const t0 = Date.now();
  const grant = net.grant(ROOM, "tcp", { publish: false });
  await page.goto(`${net.baseUrl}/?${new URLSearchParams({ room: ROOM, name: "tcp", grant, autojoin: "1" })}`);
  await net.waitJoined("tcp");
  const text = await net.waitFor("the page to say media cannot get through", () =>
    page.evaluate(() => {
      const b = document.getElementById("banner");
      return !b.hidden && /cannot get through/.test(b.textContent) && b.textContent.replace(/\s+/g, " ").trim();
    }), 40_000);
  const secs = (Date.now() - t0) / 1000;
  net.log(`message after ${secs.toFixed(1)} s: ${text}`);
  assert.match(text, /network/, "it names the network as the cause");
  assert.match(await page.evaluate(() => document.getElementById("status").textContent), /cannot get through/);
  assert.equal(await page.evaluate(() => window.plenary.client.state), "joined", "still in the meeting (chat works)");
  assert.ok(await page.getByRole("button", { name: "Try again" }).isVisible(), "a way to try again");
  await net.screenshot("tcp", "reach-media-blocked");
  await net.closePage("tcp");
  ns.clear();
});

// ---- ICE restart ----------------------------------------------------------------------------

step("ICE restart: UDP and ICE-TCP dropped for 5 s, back within 5 s as the same participant, hand and place kept", net, async () => {
  await netJoin("roam", { browser: netBrowser, publish: true, camera: false });
  await net.expectAudioFrom("roam", ids.ann);
  await net.expectAudioFrom("ann", ids.roam);
  await net.page("ann").evaluate(() => window.plenary.client.raiseHand(true));
  await net.waitFor("ann's hand in roam's queue", () => net.page("roam").evaluate((a) =>
    window.plenary.client.handQueue[0] === a, ids.ann));
  await net.page("roam").evaluate(() => window.plenary.client.raiseHand(true));
  const queue = [ids.ann, ids.roam];
  await net.waitFor("the queue ann, roam", () => net.page("ben").evaluate((q) =>
    JSON.stringify(window.plenary.client.handQueue) === JSON.stringify(q), queue));
  await net.recordStates("roam");
  const pkts = () => net.page("roam").evaluate(async (ann) =>
    (await window.plenary.client.stats()).filter((x) => x.participant_id === ann && x.kind === "audio")
      .reduce((n, x) => n + x.packetsReceived, 0), ids.ann);

  ns.block({ udp: true, tcpPorts: [tcpPort] });
  net.log("roam's UDP and ICE-TCP dropped");
  await sleep(5000);
  ns.clear();
  const restored = Date.now();
  net.log("roam's network restored");
  const p0 = await pkts();
  await net.waitFor("roam's media to flow again", async () => {
    const state = await net.page("roam").evaluate(() => window.plenary.client.pc?.connectionState);
    return state === "connected" && (await pkts()) > p0 + 10;
  }, 15_000, 200);
  const back = (Date.now() - restored) / 1000;
  const roam = await net.page("roam").evaluate(() => ({
    id: window.plenary.client.me.id,
    restarts: window.plenary.client.iceRestarts,
    seen: window.__seen,
    state: window.plenary.client.state,
  }));
  net.log(`roam back ${back.toFixed(1)} s after the network returned; ICE restarts ${roam.restarts}; states ${JSON.stringify(roam.seen)}`);
  assert.ok(back <= 5, `media back within 5 s of the network (${back.toFixed(1)} s)`);
  assert.equal(roam.id, ids.roam, "the same participant (no rejoin)");
  assert.ok(roam.restarts >= 1, "by ICE restart");
  assert.ok(!roam.seen.includes("reconnecting"), "without a new session");
  for (const who of ["roam", "ben"]) {
    assert.deepEqual(await net.page(who).evaluate(() => window.plenary.client.handQueue), queue,
      `${who} sees roam's hand still up, second in line`);
  }
  assert.ok(await net.page("ben").evaluate((r) => window.plenary.client.participants.get(r)?.hand_raised, ids.roam));
  await net.expectAudioFrom("ann", ids.roam);
  const metrics = await (await fetch(`${net.baseUrl}/metrics`)).text();
  assert.ok(Number(/^plenary_ice_restarts_total (\d+)/m.exec(metrics)?.[1] ?? 0) >= 1, "the server counts the restart");
});

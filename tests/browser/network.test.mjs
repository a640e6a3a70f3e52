// Attendees on weak links, in real Chromium: one listener runs inside a network namespace
// of the test's own (netns.mjs), whose media downlink nftables polices to 400 kbit/s, then to
// 1.5 Mbit/s, then drops 5 % of at random; three speakers (simulcast cameras) and an
// unconstrained listener run beside it. The weak listener must keep every speaker's audio and
// get the low video layer (or video paused for its connection), the video it plays most
// never stalling over 2 s, and at 1.5 Mbit/s every video it
// plays decodes without a stall over 2 s; the strong one gets the high layer where its tile
// is large and the low one where it is small; the speakers' keyframe rate must not follow the
// weak listener's losses. Figures are printed; needs root (CI runs as root).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Harness, sleep } from "./harness.mjs";
import { Netns } from "./netns.mjs";

const ROOM = `net-${process.pid}`;
const ns = new Netns();
// RED_OFF=1 runs the same checks with the server's audio redundancy off (a baseline).
const RED_OFF = process.env.RED_OFF === "1";
const h = new Harness({
  name: "network",
  host: ns.hostIp,
  env: {
    // The allocator's decisions in the server log, whose tail a failure prints.
    PLENARY_LOG: process.env.PLENARY_LOG || "info,plenary::alloc=debug",
    ...(RED_OFF ? { PLENARY_MEDIA_AUDIO_REDUNDANCY: "false" } : {}),
  },
});
const ids = {};
const SPEAKERS = ["ann", "ben", "cy"];

before(async () => {
  ns.up();
  await h.start();
});
after(async () => {
  await h.stop();
  ns.down();
});

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

/** Joins `who` with a grant, in `browser`. */
async function join(who, { browser, publish = false, viewport, camera = publish, mic = publish }) {
  const grant = h.grant(ROOM, who, { publish });
  await h.newPage(who, {
    inBrowser: browser,
    viewport,
    query: { room: ROOM, name: who, grant, autojoin: "1", camera: camera ? "1" : "0", mic: mic ? "1" : "0" },
  });
  ids[who] = await h.waitJoined(who);
}

/** Cumulative receive figures of page `who`, per remote track, straight from getStats. */
function inbound(who) {
  return h.page(who).evaluate(async () => {
    const c = window.plenary.client;
    const report = await c.pc.getStats();
    const out = {};
    report.forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      const mapped = c.midMap.get(s.mid);
      if (!mapped) return;
      out[mapped.track_id] = {
        pid: mapped.participant_id,
        kind: s.kind,
        received: s.packetsReceived ?? 0,
        lost: Math.max(0, s.packetsLost ?? 0),
        concealed: s.concealedSamples ?? 0,
        samples: s.totalSamplesReceived ?? 0,
        frames: s.framesDecoded ?? 0,
        framesIn: s.framesReceived ?? 0,
        keyframes: s.keyFramesDecoded ?? 0,
        plis: s.pliCount ?? 0,
        bytes: s.bytesReceived ?? 0,
        width: s.frameWidth ?? 0,
        freeze: s.totalFreezesDuration ?? 0,
        nacks: s.nackCount ?? 0,
        rtx: s.retransmittedPacketsReceived ?? 0,
        codec: report.get(s.codecId)?.mimeType ?? "",
        fec: s.fecPacketsReceived ?? 0,
        jbDelay: s.jitterBufferDelay ?? 0,
        jbEmitted: s.jitterBufferEmittedCount ?? 0,
        bwPaused: c.bwPaused.has(mapped.track_id),
      };
    });
    return out;
  });
}

/** What changed between two readings, per track. */
function delta(a, b) {
  const out = {};
  for (const [id, x] of Object.entries(b)) {
    const y = a[id] ?? { received: 0, lost: 0, concealed: 0, samples: 0, frames: 0, freeze: 0, nacks: 0, rtx: 0 };
    out[id] = {
      ...x,
      received: x.received - y.received,
      lost: x.lost - y.lost,
      concealed: x.concealed - y.concealed,
      samples: x.samples - y.samples,
      frames: x.frames - y.frames,
      freeze: x.freeze - y.freeze,
      nacks: x.nacks - y.nacks,
      rtx: x.rtx - y.rtx,
      fec: x.fec - (y.fec ?? 0),
      jbMs: (x.jbEmitted - (y.jbEmitted ?? 0)) > 0
        ? Math.round(((x.jbDelay - (y.jbDelay ?? 0)) / (x.jbEmitted - (y.jbEmitted ?? 0))) * 1000) : 0,
    };
  }
  return out;
}

/**
 * Reads page `who` every 250 ms for `ms`: the first and last readings, and per video track
 * the longest stall (time between two readings where its decoded frames grew, while the
 * server had not paused it for the connection) and the freezes Chrome counted. Chrome's
 * `totalFreezesDuration` is a sum of every freeze (each inter-frame gap over
 * max(3 × mean, mean + 150 ms)); the issue's "no freeze longer than 2 s" is the longest.
 */
async function watchVideo(who, ms) {
  const first = await inbound(who);
  const stalls = {};
  let last = first;
  const start = Date.now();
  while (Date.now() - start < ms) {
    await sleep(250);
    const now = await inbound(who);
    const t = Date.now();
    for (const [id, x] of Object.entries(now)) {
      if (x.kind !== "video") continue;
      const st = (stalls[id] ??= { since: t, longestMs: 0, played: false, widest: 0, history: [] });
      // What the page saw at each reading, to tell (in the log) why a long stall happened:
      // packets that stopped coming, or frames that came and did not decode.
      st.history.push({ t, pkts: x.received, bytes: x.bytes, lost: x.lost, nacks: x.nacks, rtx: x.rtx, framesIn: x.framesIn, decoded: x.frames, keyframes: x.keyframes, plis: x.plis, paused: x.bwPaused });
      // frameWidth is the last decoded frame's: read only when frames were decoded since the
      // last reading (a video paused or switched keeps showing its old width).
      if (x.frames > (last[id]?.frames ?? 0)) st.widest = Math.max(st.widest, x.width);
      if (x.bwPaused || x.frames > (last[id]?.frames ?? 0)) {
        if (!x.bwPaused && st.played) st.longestMs = Math.max(st.longestMs, t - st.since);
        st.played ||= !x.bwPaused;
        st.since = t;
      }
    }
    last = now;
  }
  const t = Date.now();
  for (const st of Object.values(stalls)) if (st.played) st.longestMs = Math.max(st.longestMs, t - st.since);
  for (const [id, st] of Object.entries(stalls)) logLongStall(who, id, st.history);
  return { first, last, stalls };
}

/**
 * Logs, for each stall over 1.5 s in `history` (readings of one video), what changed while
 * it lasted: packets, losses, NACKs, retransmissions, frames received and decoded,
 * keyframes, keyframe requests (the page's own) — with the wall-clock time, to match
 * the server's log.
 */
function logLongStall(who, id, history) {
  let from = 0;
  for (let i = 1; i <= history.length; i++) {
    const end = i === history.length || history[i].decoded > history[i - 1].decoded || history[i].paused;
    if (!end) continue;
    const a = history[from];
    const b = history[i - 1];
    if (b.t - a.t > 1500 && !a.paused) {
      const d = (k) => b[k] - a[k];
      h.log(`${who}: video ${id} stalled ${((b.t - a.t) / 1000).toFixed(1)} s from ${new Date(a.t).toISOString()}: ` +
        `packets +${d("pkts")} (${d("pkts") ? Math.round(d("bytes") / d("pkts")) : 0} bytes each), lost +${d("lost")}, nacks +${d("nacks")}, rtx +${d("rtx")}, frames received +${d("framesIn")}, ` +
        `decoded +${d("decoded")}, keyframes +${d("keyframes")}, keyframe requests +${d("plis")}`);
    }
    from = i;
  }
}

/**
 * A measuring window on the weak listener: what changed per track (`delta`), each video with
 * its longest stall in seconds (`stallS`, null if it never played) and, read at the same
 * time, the strong listener's longest stall on the same video (`strongStallS`: a stall both
 * see comes from the publisher or the machine, not the weak link), and the speakers'
 * keyframe requests per second meanwhile.
 */
async function weakWindow() {
  const k0 = await keyframeRequests();
  const [watched, strong] = await Promise.all([watchVideo("weak", WINDOW_MS), watchVideo("strong", WINDOW_MS)]);
  const rate = ((await keyframeRequests()) - k0) / (WINDOW_MS / 1000);
  const d = delta(watched.first, watched.last);
  const stallS = (w, id) => (w.stalls[id]?.played ? w.stalls[id].longestMs / 1000 : null);
  for (const [id, x] of Object.entries(d)) {
    if (x.kind !== "video") continue;
    x.stallS = stallS(watched, id);
    x.widest = watched.stalls[id]?.widest ?? 0;
    x.strongStallS = stallS(strong, id);
  }
  return { d, rate };
}

/**
 * Waits until the weak listener plays some video (over 10 frames of an unpaused stream in
 * 2 s), counting from `since`; fails with `what` past `boundMs`. Returns the seconds taken.
 */
async function videoPlaysWithin(since, boundMs, what) {
  for (;;) {
    const s1 = await inbound("weak");
    await sleep(2000);
    const playing = Object.values(delta(s1, await inbound("weak")))
      .filter((x) => x.kind === "video" && !x.bwPaused && x.frames > 10);
    if (playing.length > 0) return (Date.now() - since) / 1000;
    assert.ok(Date.now() - since < boundMs, what);
  }
}

/** Audio figures over a window: loss and concealment, all speakers together. */
function audioFigures(d) {
  const audio = Object.values(d).filter((x) => x.kind === "audio");
  const received = audio.reduce((n, x) => n + x.received, 0);
  const lost = audio.reduce((n, x) => n + x.lost, 0);
  const samples = audio.reduce((n, x) => n + x.samples, 0);
  const concealed = audio.reduce((n, x) => n + x.concealed, 0);
  return {
    tracks: audio.length,
    received,
    loss: received + lost ? lost / (received + lost) : 1,
    concealment: samples ? concealed / samples : 1,
  };
}

/** The publishers' keyframe requests received so far (outbound-rtp pliCount + firCount). */
async function keyframeRequests() {
  let n = 0;
  for (const who of SPEAKERS) {
    n += await h.page(who).evaluate(async () => {
      const report = await window.plenary.client.pc.getStats();
      let k = 0;
      report.forEach((s) => {
        if (s.type === "outbound-rtp" && s.kind === "video") k += (s.pliCount ?? 0) + (s.firCount ?? 0);
      });
      return k;
    });
  }
  return n;
}

const WINDOW_MS = 20_000;
let baseline = null;

step("three simulcast speakers, a strong listener and a weak one (in its own network namespace) join", async () => {
  for (const who of SPEAKERS) await join(who, { publish: true });
  // A general meeting: one person speaks, the others listen with their cameras on (the
  // fake microphones all beep alike, which would make the speaker change every second).
  for (const who of SPEAKERS.slice(1)) await h.page(who).evaluate(() => window.plenary.client.setMuted("microphone", true));
  const netBrowser = await h.launch("none", { executablePath: ns.wrapper });
  const plain = await h.launch("none");
  await join("strong", { browser: plain, viewport: { width: 1400, height: 900 } });
  await join("weak", { browser: netBrowser });
  await h.expectMediaFrom("weak", [ids[SPEAKERS[0]]], { video: [] });
  await h.expectMediaFrom("strong", [ids[SPEAKERS[0]]], { video: [] });
  // The speakers' keyframe requests with only healthy listeners, as the baseline.
  const k0 = await keyframeRequests();
  await sleep(WINDOW_MS);
  baseline = ((await keyframeRequests()) - k0) / (WINDOW_MS / 1000);
  h.log(`keyframe requests at the speakers, healthy room: ${baseline.toFixed(2)}/s`);
});

step("at 400 kbit/s the weak listener keeps every speaker's audio and gets low or paused video", async () => {
  ns.cap(400);
  h.log("weak listener's media downlink policed to 400 kbit/s");
  // Adapting: the estimate falls with the policer's losses, the loss cap holds it at what got
  // through, then the allocator settles on what fits (audio first, then a low layer).
  const policed = Date.now();
  await sleep(10_000);
  const adapted = await videoPlaysWithin(policed, 90_000, "within 90 s at 400 kbit/s some video plays at a low layer");
  h.log(`adapted: video playing ${adapted.toFixed(1)} s after the policing began`);
  const { d, rate } = await weakWindow();
  const audio = audioFigures(d);
  const video = Object.values(d).filter((x) => x.kind === "video");
  h.log(`weak @400k: audio loss ${(audio.loss * 100).toFixed(2)} %, concealment ${(audio.concealment * 100).toFixed(2)} %, ` +
    `video ${JSON.stringify(video.map((v) => ({ w: v.widest, frames: v.frames, freezes_sum_s: +v.freeze.toFixed(1), longest_stall_s: v.stallS, strong_listener_longest_stall_s: v.strongStallS, lost: v.lost, nacks: v.nacks, rtx: v.rtx, paused: v.bwPaused })))}, ` +
    `keyframe requests at the speakers ${rate.toFixed(2)}/s (healthy ${baseline.toFixed(2)}/s)`);
  assert.ok(Object.values(d).some((x) => x.kind === "audio" && x.pid === ids[SPEAKERS[0]] && x.received > 500),
    "the speaker's audio keeps coming");
  assert.ok(audio.loss < 0.01, `audio loss ${(audio.loss * 100).toFixed(2)} % < 1 %`);
  assert.ok(audio.concealment < 0.02, `audio concealment ${(audio.concealment * 100).toFixed(2)} % < 2 %`);
  for (const v of video) {
    assert.ok(v.widest <= 320, `video at the low layer or paused for the connection (widest frame decoded ${v.widest})`);
  }
  // The issue's "no freeze longer than 2 s after adapting", for the video the listener gets
  // most of: its longest stall between two readings (Chrome's totalFreezesDuration is a sum
  // of every freeze over ~200 ms). The stalls of 3 s and more that some runs showed were
  // Chrome dropping a new layer's frames as old after a switch (VP8 picture numbers, now
  // kept continuous by the server); since, 0.3 s in every run.
  const best = [...video].sort((x, y) => y.frames - x.frames)[0];
  h.log(`the video that plays most at 400 kbit/s: ${best ? `${best.frames} frames, longest stall ${best.stallS?.toFixed(1)} s (target ≤ 2 s; the strong listener's on the same video ${best.strongStallS?.toFixed(1)} s), Chrome's freezes ${best.freeze.toFixed(1)} s in all${best.bwPaused ? ", paused at the end" : ""}` : "none"}`);
  assert.ok(best && best.frames > 50, `a video plays at 400 kbit/s (${best?.frames ?? 0} frames in ${WINDOW_MS / 1000} s)`);
  assert.ok(best.stallS !== null && best.stallS <= 2, `no stall over 2 s in the video that plays most (${best.stallS} s)`);
  assert.ok(rate <= baseline + 0.5, `the weak listener does not raise the speakers' keyframe rate (${rate.toFixed(2)}/s)`);
  await h.screenshot("weak", "network-weak-listener");
});

step("at 1.5 Mbit/s the weak listener's video decodes continuously", async () => {
  ns.cap(1500);
  h.log("weak listener's media downlink policed to 1.5 Mbit/s");
  const since = Date.now();
  await sleep(5_000);
  // The loss cap from 400 kbit/s holds for a minute before it rises again.
  await videoPlaysWithin(since, 100_000, "within 100 s at 1.5 Mbit/s video plays");
  const { d, rate } = await weakWindow();
  const audio = audioFigures(d);
  const video = Object.values(d).filter((x) => x.kind === "video");
  h.log(`weak @1.5M: audio loss ${(audio.loss * 100).toFixed(2)} %, concealment ${(audio.concealment * 100).toFixed(2)} %, ` +
    `video ${JSON.stringify(video.map((v) => ({ w: v.widest, frames: v.frames, longest_stall_s: v.stallS, strong_listener_longest_stall_s: v.strongStallS, paused: v.bwPaused })))}, ` +
    `keyframe requests at the speakers ${rate.toFixed(2)}/s (healthy ${baseline.toFixed(2)}/s)`);
  assert.ok(audio.loss < 0.01, `audio loss ${(audio.loss * 100).toFixed(2)} % < 1 %`);
  assert.ok(audio.concealment < 0.02, `audio concealment ${(audio.concealment * 100).toFixed(2)} % < 2 %`);
  const playing = video.filter((v) => v.frames > 0 && v.stallS !== null);
  assert.ok(video.some((v) => v.frames > 50), "video plays at 1.5 Mbit/s");
  for (const v of playing) {
    assert.ok(v.stallS <= 2, `video decodes continuously: longest stall ${v.stallS} s ≤ 2 s (${v.frames} frames)`);
  }
  assert.ok(rate <= baseline + 0.5, `the weak listener does not raise the speakers' keyframe rate (${rate.toFixed(2)}/s)`);
});

step("the strong listener gets the high layer on its large stage and the low layer on small tiles", async () => {
  const strong = h.page("strong");
  await h.openTab("strong", "People");
  await strong.getByRole("button", { name: `Pin ${SPEAKERS[0]} to the main view` }).click();
  const pinned = ids[SPEAKERS[0]];
  const widths = await h.waitFor("the pinned speaker at the high layer and the others low", async () => {
    const s = await inbound("strong");
    const v = Object.values(s).filter((x) => x.kind === "video");
    const stage = v.find((x) => x.pid === pinned);
    const others = v.filter((x) => x.pid !== pinned);
    const ok = stage?.width >= 640 && others.length === 2 && others.every((x) => x.width <= 320 && x.width > 0);
    const told = await strong.evaluate(() => [...window.plenary.client.paused]);
    return ok ? v.map((x) => [x.pid, x.width]) : { ok: false, v: v.map((x) => [x.pid, x.width]), told };
  }, 45_000, 1000);
  h.log(`strong listener's frame widths: ${JSON.stringify(widths)}`);
  await h.screenshot("strong", "network-strong-listener");
});

step("5 % random loss on the weak listener's downlink: video recovers by retransmission, audio by redundancy", async () => {
  // First the policing ends: the listener's video must come back (the loss cap remembers
  // the policed rate for a minute, then the estimate may probe up again). Only then the
  // random loss, so that what is measured is loss on a link with room, not congestion.
  ns.clear();
  const restored = Date.now();
  const back = await videoPlaysWithin(restored, 100_000, "the weak listener's video comes back within 100 s of its link recovering");
  h.log(`weak listener's link restored: video back after ${back.toFixed(1)} s`);
  ns.loss(5);
  h.log("weak listener's media downlink: 5 % random loss");
  await sleep(10_000);
  // Random loss on a link with room is not congestion: the video keeps (or comes back to)
  // playing. Bounded wait, then the window.
  const lossy = Date.now();
  // (A loss cap the policing left holds for a minute, then rises: hence the bound.)
  await videoPlaysWithin(lossy, 100_000, "at 5 % random loss the weak listener's video plays within 100 s");
  const a = await inbound("weak");
  await sleep(WINDOW_MS);
  const b = await inbound("weak");
  const d = delta(a, b);
  const audio = audioFigures(d);
  const video = Object.values(d).filter((x) => x.kind === "video" && !x.bwPaused && x.received > 0);
  const vr = video.reduce((n, x) => n + x.received, 0);
  const vl = video.reduce((n, x) => n + x.lost, 0);
  const nacks = video.reduce((n, x) => n + x.nacks, 0);
  const rtx = video.reduce((n, x) => n + x.rtx, 0);
  // Chrome counts a packet lost on its first way even when a retransmission repairs it
  // (RTX packets are counted on their own stream), so what stays lost is what was lost
  // less what came again, at most; RTX also carries the estimator's probes, so this is an
  // upper bound only when retransmissions outnumber losses.
  const residual = vr + vl ? Math.max(0, vl - rtx) / (vr + vl) : 0;
  const frozen = video.reduce((n, x) => Math.max(n, x.freeze), 0);
  h.log(`weak @5% loss: video lost on first send ${(vl / (vr + vl) * 100).toFixed(2)} %, NACKs ${nacks}, ` +
    `retransmissions received ${rtx}, residual ≤ ${(residual * 100).toFixed(2)} %, longest freeze ${frozen.toFixed(1)} s ` +
    `(per video: ${JSON.stringify(video.map((x) => ({ pid: x.pid, w: x.width, frames: x.frames, freezes_s: +x.freeze.toFixed(1), lost: x.lost, nacks: x.nacks, rtx: x.rtx })))}); ` +
    `audio loss ${(audio.loss * 100).toFixed(2)} %, concealment ${(audio.concealment * 100).toFixed(2)} %, ` +
    `audio per speaker ${JSON.stringify(Object.values(d).filter((x) => x.kind === "audio").map((x) => ({ codec: x.codec, lost: x.lost, received: x.received, concealed: x.samples ? +(x.concealed / x.samples * 100).toFixed(2) : null, fec: x.fec, jbMs: x.jbMs })))}`);
  // Audio: packets are lost on the way (RTP loss stays ~5 %), but the repeats (RED) the
  // server adds for a lossy listener rebuild them, so almost nothing is concealed.
  assert.ok(audio.loss > 0.01, `the path does lose audio packets (${(audio.loss * 100).toFixed(2)} %)`);
  if (!RED_OFF) {
    // Chrome's stats name the codec inside RED; its answer shows RED was agreed.
    const answer = await h.page("weak").evaluate(() => window.plenary.client.pc.currentLocalDescription?.sdp ?? "");
    assert.match(answer, /a=rtpmap:\d+ red\/48000\/2/, "the listener's answer accepts audio redundancy (RED)");
    assert.ok(audio.concealment < 0.01, `residual audio loss (concealment) ${(audio.concealment * 100).toFixed(2)} % < 1 %`);
  }
  assert.ok(vr > 0, "video flows");
  if (vl > 0) assert.ok(nacks >= vl * 0.8, `the listener asks again for what it lost (${nacks} NACKs for ${vl} losses)`);
  assert.ok(residual < 0.01, `residual video loss after NACK/RTX ${(residual * 100).toFixed(2)} % < 1 %`);
  ns.clear();
});

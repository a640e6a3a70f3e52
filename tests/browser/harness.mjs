// Shared pieces of the browser tests: start the Plenary binary on free loopback ports, launch
// headless Chromium (fake camera and microphone), open pages, bounded waits, media checks,
// screenshots, diagnostics and cleanup.
//
// Env: PLENARY_BIN (default <repo>/target/debug/plenary), CHROMIUM (default
// /usr/bin/chromium), WAIT_SECS (bound on every wait, default 45), PLENARY_LOG or RUST_LOG
// (the server's log filter, default info), PLENARY_URL (test a server that is already
// running there instead of starting one), WEB_FROM_DISK=1 (serve web/ from the working tree
// through a small loopback proxy in front of the server, so that the web client can be
// tested without rebuilding the binary that embeds it).
// Output (screenshots, server log, browser consoles): <repo>/test-output/browser/.

import { spawn } from "node:child_process";
import { createServer, connect } from "node:net";
import http from "node:http";
import { createSocket } from "node:dgram";
import { mkdirSync, createWriteStream, writeFileSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, "..", "..");
export const BIN = process.env.PLENARY_BIN || path.join(repo, "target", "debug", "plenary");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const WAIT_MS = Number(process.env.WAIT_SECS || 45) * 1000;
export const OUT = path.join(repo, "test-output", "browser");

export const CHROME_ARGS = [
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
  // getDisplayMedia picks the whole (virtual) screen without a picker.
  "--auto-select-desktop-capture-source=Entire screen",
];
// A listener runs in a browser of its own without the fake-media flags: with
// --use-fake-ui-for-media-stream every page counts as having media permission, and Chromium
// would then show it its real host addresses. A real listener has no permission, so
// Chromium hides its host candidates behind mDNS names, which the server cannot resolve:
// it must learn the address from the ICE checks.
export const LISTENER_ARGS = CHROME_ARGS.filter((a) => !a.startsWith("--use-fake-"));

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** A timer that does not keep node alive: for bounding cleanup steps. */
export const bound = (ms) => new Promise((r) => setTimeout(r, ms).unref());

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

/**
 * One test file's world: a server, browsers, pages. `name` prefixes the output files;
 * `env` adds PLENARY_* settings for the server (e.g. limits).
 */
export class Harness {
  constructor({ name, env = {} }) {
    this.name = name;
    this.env = env;
    this.server = null;
    this.serverExited = null;
    this.browser = null;
    this.listenerBrowser = null;
    this.baseUrl = "";
    /** name → {page, context, console: string[]} */
    this.pages = new Map();
    this.t0 = Date.now();
    this.logFile = path.join(OUT, name === "browser" ? "server.log" : `server-${name}.log`);
    process.on("exit", () => {
      const s = this.server;
      if (s && s.exitCode === null && s.signalCode === null) s.kill("SIGKILL");
    });
  }

  elapsed() {
    return `${((Date.now() - this.t0) / 1000).toFixed(1)}s`;
  }

  log(text) {
    console.log(`[${this.elapsed()}] ${text}`);
  }

  /** Polls `fn` until it returns a truthy value; fails after `ms` with `what` and the last value. */
  async waitFor(what, fn, ms = WAIT_MS, every = 500) {
    const deadline = Date.now() + Math.min(ms, WAIT_MS);
    let last;
    for (;;) {
      if (this.serverExited) {
        throw new Error(`server exited (${this.serverExited}) while waiting for ${what}`);
      }
      try {
        last = await fn();
        if (last && (typeof last !== "object" || last.ok !== false)) return last;
      } catch (err) {
        last = err;
      }
      if (Date.now() > deadline) {
        const detail = last instanceof Error ? last.message : JSON.stringify(last);
        throw new Error(`timed out after ${Math.round(ms / 1000)}s waiting for ${what}; last: ${detail}`);
      }
      await sleep(every);
    }
  }

  async start({ listenerBrowser = false } = {}) {
    mkdirSync(OUT, { recursive: true });
    if (process.env.PLENARY_URL) this.baseUrl = process.env.PLENARY_URL.replace(/\/$/, "");
    else await this.startServer();
    const launch = (args) =>
      chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: WAIT_MS });
    this.browser = await launch(CHROME_ARGS);
    if (listenerBrowser) this.listenerBrowser = await launch(LISTENER_ARGS);
    this.log(`chromium ${this.browser.version()} launched`);
  }

  async startServer() {
    const httpPort = await freeTcpPort();
    const mediaPort = await freeUdpPort();
    this.baseUrl = `http://127.0.0.1:${httpPort}`;
    const log = createWriteStream(this.logFile);
    // The server refuses unknown PLENARY_* variables (PLENARY_BIN and PLENARY_URL are ours).
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !k.startsWith("PLENARY_")),
    );
    const server = spawn(BIN, [], {
      env: {
        ...env,
        PLENARY_HTTP_ADDR: `127.0.0.1:${httpPort}`,
        PLENARY_MEDIA_ADDR: `127.0.0.1:${mediaPort}`,
        // The server's log filter (tracing EnvFilter syntax); RUST_LOG is accepted as an alias.
        PLENARY_LOG: process.env.PLENARY_LOG || process.env.RUST_LOG || "info",
        NO_COLOR: "1",
        ...this.env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.server = server;
    server.stdout.pipe(log);
    server.stderr.pipe(log);
    server.on("error", (err) => {
      this.serverExited = `spawn error: ${err.message}`;
    });
    server.on("exit", (code, signal) => {
      this.serverExited = `code ${code}, signal ${signal}`;
    });
    await this.waitFor(`GET ${this.baseUrl}/healthz`, async () => {
      const res = await fetch(`${this.baseUrl}/healthz`);
      return res.status === 200;
    });
    this.log(`server up at ${this.baseUrl} (media udp ${mediaPort})`);
    if (process.env.WEB_FROM_DISK === "1") await this.startWebProxy();
  }

  /** Serves web/ from disk and forwards everything else (and WebSocket upgrades) upstream. */
  async startWebProxy() {
    const upstream = new URL(this.baseUrl);
    const files = {
      "/": ["index.html", "text/html"],
      "/app.js": ["app.js", "text/javascript"],
      "/client.js": ["client.js", "text/javascript"],
      "/style.css": ["style.css", "text/css"],
      "/invite": ["invite.html", "text/html"],
      "/invite.js": ["invite.js", "text/javascript"],
      "/invitations": ["invitations.html", "text/html"],
      "/invitations.js": ["invitations.js", "text/javascript"],
    };
    const proxy = http.createServer((req, res) => {
      const file = files[new URL(req.url, "http://x").pathname];
      if (req.method === "GET" && file) {
        res.writeHead(200, { "content-type": `${file[1]}; charset=utf-8`, "cache-control": "no-cache" });
        res.end(readFileSync(path.join(repo, "web", file[0])));
        return;
      }
      const up = http.request(
        { host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: req.headers },
        (r) => {
          res.writeHead(r.statusCode, r.headers);
          r.pipe(res);
        },
      );
      up.on("error", () => res.destroy());
      req.pipe(up);
    });
    proxy.on("upgrade", (req, socket, head) => {
      const up = connect(Number(upstream.port), upstream.hostname, () => {
        const lines = [`${req.method} ${req.url} HTTP/1.1`];
        for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
        up.write(lines.join("\r\n") + "\r\n\r\n");
        if (head?.length) up.write(head);
        up.pipe(socket);
        socket.pipe(up);
      });
      const end = () => {
        up.destroy();
        socket.destroy();
      };
      up.on("error", end);
      socket.on("error", end);
      up.on("close", end);
      socket.on("close", end);
    });
    await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
    proxy.unref();
    this.proxy = proxy;
    this.baseUrl = `http://127.0.0.1:${proxy.address().port}`;
    this.log(`serving web/ from disk at ${this.baseUrl}`);
  }

  /** Closes the browsers and kills the server, bounded; writes the browser consoles. */
  async stop() {
    for (const [name, p] of this.pages) {
      writeFileSync(path.join(OUT, `console-${this.name}-${name}.log`), p.console.join("\n") + "\n");
    }
    try {
      await Promise.race([
        Promise.all([this.browser?.close(), this.listenerBrowser?.close()]),
        bound(10_000),
      ]);
    } catch {}
    const s = this.server;
    if (s && s.exitCode === null && s.signalCode === null) {
      s.kill("SIGTERM");
      const exited = await Promise.race([
        new Promise((r) => s.once("exit", () => r(true))),
        bound(5000).then(() => false),
      ]);
      if (!exited && s.exitCode === null && s.signalCode === null) {
        s.kill("SIGKILL");
        await Promise.race([new Promise((r) => s.once("exit", r)), bound(2000)]);
      }
    }
  }

  /** A new page (own browser context); `query` becomes the URL's query string. */
  async newPage(name, { query = {}, inBrowser, viewport = { width: 1024, height: 720 } } = {}) {
    const context = await (inBrowser ?? this.browser).newContext({ viewport });
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    const entry = { page, context, console: [] };
    this.pages.set(name, entry);
    page.on("console", (m) => entry.console.push(`[${this.elapsed()}] ${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => entry.console.push(`[${this.elapsed()}] pageerror: ${e.message}`));
    await page.goto(`${this.baseUrl}/?${new URLSearchParams(query)}`);
    return entry;
  }

  /** Opens a page that joins at once (`autojoin=1`) and waits until it is in the room. */
  async openPage(name, { room, camera, mic, inBrowser, extra = {} }) {
    const entry = await this.newPage(name, {
      inBrowser,
      query: {
        room,
        name,
        autojoin: "1",
        camera: camera ? "1" : "0",
        mic: mic ? "1" : "0",
        ...extra,
      },
    });
    await this.waitJoined(name);
    return entry;
  }

  /** Waits until page `name`'s client is in the room; returns its participant id. */
  waitJoined(name, what = `${name} to join`) {
    const { page } = this.pages.get(name);
    return this.waitFor(what, () =>
      page.evaluate(() =>
        (window.plenary?.client?.state === "joined" && window.plenary.client.me?.id) ||
        { ok: false, state: window.plenary?.client?.state, status: document.getElementById("status")?.textContent },
      ),
    );
  }

  page(name) {
    return this.pages.get(name).page;
  }

  myId(name) {
    return this.page(name).evaluate(() => window.plenary.client.me.id);
  }

  stats(name) {
    return this.page(name).evaluate(() => window.plenary.stats());
  }

  /**
   * Waits until `name` decodes video from and receives growing audio from each of the
   * participant ids in `from` (video only from `video` ids, if given), and the page plays it.
   */
  async expectMediaFrom(name, from, { video = from, audio = from } = {}) {
    const wantV = new Set(video);
    const wantA = new Set(audio);
    const summary = (s) =>
      s.map((x) => `${x.participant_id}/${x.kind}: ` +
        (x.kind === "video" ? `frames=${x.framesDecoded} ` : "") + `pkts=${x.packetsReceived}`);
    const decodingVideo = (s) =>
      new Set(s.filter((x) => x.kind === "video" && x.framesDecoded > 0 && wantV.has(x.participant_id))
        .map((x) => x.participant_id));
    const audioFrom = (s) =>
      new Map(s.filter((x) => x.kind === "audio" && wantA.has(x.participant_id))
        .map((x) => [x.participant_id, x.packetsReceived]));

    await this.waitFor(`${name} to decode video from ${[...wantV]} and receive audio from ${[...wantA]}`, async () => {
      const s = await this.stats(name);
      const v = decodingVideo(s);
      const a = audioFrom(s);
      const ok = v.size === wantV.size && [...wantA].every((id) => (a.get(id) ?? 0) > 0);
      return ok || { ok: false, stats: summary(s) };
    });
    // Audio keeps flowing: packetsReceived grows between two polls.
    const first = audioFrom(await this.stats(name));
    await this.waitFor(`${name}'s audio packet counters to grow`, async () => {
      const now = audioFrom(await this.stats(name));
      const grown = [...wantA].every((id) => (now.get(id) ?? 0) > (first.get(id) ?? 0));
      return grown || { ok: false, first: [...first], now: [...now] };
    }, WAIT_MS, 1000);
    // And the page shows it: each sender's tile plays video with real dimensions, and their
    // audio plays (audio elements live apart from the tiles, so that off-page people are heard).
    await this.waitFor(`${name}'s page to play video from ${[...wantV]} and audio from ${[...wantA]}`, () =>
      this.page(name).evaluate(([vids, aids]) => {
        const live = (el, kind) =>
          !!el?.srcObject?.getTracks().some((t) => t.kind === kind && t.readyState === "live");
        const v = vids.map((id) => {
          const video = document.querySelector(`#grid .tile[data-participant-id="${id}"] video`);
          return !!video && video.videoWidth > 0 && !video.paused && live(video, "video");
        });
        const a = aids.map((id) =>
          [...document.querySelectorAll(`#audio-sink audio[data-audio-for="${id}"]`)]
            .some((el) => !el.paused && live(el, "audio")));
        return [...v, ...a].every(Boolean) || { ok: false, v, a };
      }, [[...wantV], [...wantA]]),
    );
    const s = await this.stats(name);
    this.log(`${name}: ${summary(s).join(", ")}`);
  }

  /** Waits until `name` receives growing audio packets from participant `id`. */
  async expectAudioFrom(name, id) {
    const pkts = async () =>
      (await this.stats(name)).filter((x) => x.kind === "audio" && x.participant_id === id)
        .reduce((n, x) => n + x.packetsReceived, 0);
    const first = await this.waitFor(`${name} to receive audio from ${id}`, async () => (await pkts()) || false);
    await this.waitFor(`${name}'s audio from ${id} to keep coming`, async () => (await pkts()) > first, WAIT_MS, 700);
  }

  async screenshot(name, label) {
    await this.page(name).screenshot({ path: path.join(OUT, `${label}.png`) });
  }

  /** On failure, prints the tails of the browser consoles and of the server log. */
  showDiagnostics() {
    const tail = (text, n) => text.trimEnd().split("\n").slice(-n);
    for (const [name, p] of this.pages) {
      for (const line of tail(p.console.join("\n"), 15)) console.log(`console ${name}: ${line}`);
    }
    try {
      const log = readFileSync(this.logFile, "utf8");
      for (const line of tail(log, 40)) console.log(`server: ${line}`);
    } catch {}
  }
}

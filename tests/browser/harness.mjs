// Shared pieces of the browser tests: start the Plenary binary on free loopback ports, launch
// headless Chromium (fake camera and microphone), open pages, bounded waits, media checks,
// screenshots, diagnostics and cleanup.
//
// Env: PLENARY_BIN (default <repo>/target/debug/plenary), CHROMIUM (default
// /usr/bin/chromium), WAIT_SECS (bound on every wait, default 45), PLENARY_LOG or RUST_LOG
// (the server's log filter, default info), PLENARY_URL (test a server that is already
// running there instead of starting one), WEB_FROM_DISK=1 (serve web/ from the working tree
// through a small loopback proxy in front of the server, so that the web client can be
// tested without rebuilding the binary that embeds it), WEB_DIR=… (with WEB_FROM_DISK=1,
// serve that copy of the client instead, e.g. an older one, to see a test fail without a fix).
// Output (screenshots, server log, browser consoles): <repo>/test-output/browser/.

import { spawn, execFileSync } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { createServer, connect } from "node:net";
import http from "node:http";
import { mkdirSync, createWriteStream, writeFileSync, readFileSync, existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, "..", "..");
export const BIN = process.env.PLENARY_BIN || path.join(repo, "target", "debug", "plenary");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const WAIT_MS = Number(process.env.WAIT_SECS || 45) * 1000;
export const OUT = path.join(repo, "test-output", "browser");
/** With WEB_FROM_DISK=1, the web client served (default: the working tree's web/). */
const WEB_DIR = process.env.WEB_DIR || path.join(repo, "web");

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
// it must learn the address from the ICE checks. This browser also has no camera and no
// microphone at all (getUserMedia answers NotFoundError), like many attendees' machines.
export const LISTENER_ARGS = CHROME_ARGS.filter((a) => !a.startsWith("--use-fake-"));
/** Devices exist, but the person refuses them (getUserMedia answers NotAllowedError). */
export const DENIED_ARGS = CHROME_ARGS.filter((a) => a !== "--use-fake-ui-for-media-stream");
/** A microphone and no camera. */
export const MIC_ONLY_ARGS = CHROME_ARGS.map((a) =>
  a === "--use-fake-device-for-media-stream" ? "--use-fake-device-for-media-stream=device-count=0" : a);

/** Browsers by the devices they have. */
export const BROWSERS = { fake: CHROME_ARGS, none: LISTENER_ARGS, denied: DENIED_ARGS, micOnly: MIC_ONLY_ARGS };

// Every page records the tracks getUserMedia hands it, so that tests can check that nothing
// stays open (`window.__media.tracks`) and count the requests by kind (`window.__media.asked`).
const TRACK_RECORDER = () => {
  const media = { tracks: [], asked: { audio: 0, video: 0 } };
  Object.defineProperty(window, "__media", { value: media });
  const md = navigator.mediaDevices;
  if (!md?.getUserMedia) return;
  const original = md.getUserMedia.bind(md);
  md.getUserMedia = async (constraints) => {
    if (constraints?.audio) media.asked.audio += 1;
    if (constraints?.video) media.asked.video += 1;
    const stream = await original(constraints);
    media.tracks.push(...stream.getTracks());
    return stream;
  };
};

/** Runs an nft script (nftables from Debian; root). */
function nft(script) {
  execFileSync("nft", ["-f", "-"], { input: script, stdio: ["pipe", "inherit", "inherit"] });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** A timer that does not keep node alive: for bounding cleanup steps. */
export const bound = (ms) => new Promise((r) => setTimeout(r, ms).unref());

export function freeTcpPort(host = "127.0.0.1") {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, host, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * One test file's world: a server, browsers, pages. `name` prefixes the output files;
 * `env` adds PLENARY_* settings for the server (e.g. limits).
 */
export class Harness {
  /**
   * `host`: the address the server listens on (default 127.0.0.1, dev mode). Any other
   * address turns dev mode off: the server gets an API key and pages join with grants
   * the test mints (`grant()`).
   */
  constructor({ name, env = {}, host = "127.0.0.1" }) {
    this.name = name;
    this.env = env;
    this.host = host;
    this.apiSecret = "browser-test-secret-that-is-long-enough-1234";
    this.server = null;
    this.serverExited = null;
    this.browser = null;
    this.listenerBrowser = null;
    /** Every browser launched, for stop(). */
    this.extraBrowsers = [];
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
    this.browser = await this.launch("fake");
    if (listenerBrowser) this.listenerBrowser = await this.launch("none");
    this.log(`chromium ${this.browser.version()} launched`);
  }

  /**
   * Launches one more Chromium with the devices of `kind` (see BROWSERS); closed by stop().
   * `executablePath` may be a wrapper (e.g. one that starts it in a network namespace).
   */
  async launch(kind, { executablePath = CHROMIUM } = {}) {
    // Cameras and microphones need a secure origin: loopback is one; the test's own
    // non-loopback server is declared one.
    const args = this.host === "127.0.0.1"
      ? BROWSERS[kind]
      : [...BROWSERS[kind], `--unsafely-treat-insecure-origin-as-secure=${this.baseUrl}`];
    const browser = await chromium.launch({ executablePath, headless: true, args, timeout: WAIT_MS });
    this.extraBrowsers.push(browser);
    return browser;
  }

  /** Starts the server (on `httpPort`, e.g. the one a stopped server used, or a free one). */
  async startServer({ httpPort } = {}) {
    httpPort ??= await freeTcpPort(this.host);
    this.httpPort = httpPort;
    this.serverExited = null;
    const proxied = !!this.proxy;
    if (!proxied) this.baseUrl = `http://${this.host}:${httpPort}`;
    const auth = this.host === "127.0.0.1"
      ? {}
      : { PLENARY_AUTH_API_KEYS: `{ test = "${this.apiSecret}" }` };
    const log = createWriteStream(this.logFile);
    // PLENARY_BIN and PLENARY_URL are ours, not the server's (it would only warn about them).
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !k.startsWith("PLENARY_")),
    );
    const server = spawn(BIN, [], {
      env: {
        ...env,
        PLENARY_HTTP_ADDR: `${this.host}:${httpPort}`,
        // Each media shard binds an ephemeral port of its own and announces it.
        PLENARY_MEDIA_ADDR: `${this.host}:0`,
        ...auth,
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
    const direct = `http://${this.host}:${httpPort}`;
    await this.waitFor(`GET ${direct}/healthz`, async () => {
      const res = await fetch(`${direct}/healthz`);
      return res.status === 200;
    });
    this.log(`server up at ${direct}`);
    if (process.env.WEB_FROM_DISK === "1" && !proxied) await this.startWebProxy();
  }

  /**
   * Sends `signal` to the server, whose exit is then expected (not an error); resolves with
   * its exit code (or signal name), or "timeout" after `ms`.
   */
  signalServer(signal = "SIGTERM", ms = 15_000) {
    const s = this.server;
    s.removeAllListeners("exit");
    this.server = null;
    const exited = Promise.race([
      new Promise((r) => s.once("exit", (code, sig) => r(code ?? sig))),
      bound(ms).then(() => "timeout"),
    ]);
    s.kill(signal);
    return exited;
  }

  /** Serves web/ from disk and forwards everything else (and WebSocket upgrades) upstream. */
  async startWebProxy() {
    const upstream = new URL(this.baseUrl);
    const types = { html: "text/html", js: "text/javascript", css: "text/css", svg: "image/svg+xml" };
    // The same names the server serves: web/x.html is also /x.
    const fileFor = (pathname) => {
      const name = pathname === "/" ? "index.html" : pathname.slice(1);
      if (name.includes("/") || name.startsWith(".")) return null;
      for (const candidate of [name, `${name}.html`]) {
        const ext = candidate.split(".").pop();
        if (types[ext] && existsSync(path.join(WEB_DIR, candidate))) return [candidate, types[ext]];
      }
      return null;
    };
    const proxy = http.createServer((req, res) => {
      const file = fileFor(new URL(req.url, "http://x").pathname);
      if (req.method === "GET" && file) {
        res.writeHead(200, { "content-type": `${file[1]}; charset=utf-8`, "cache-control": "no-cache" });
        res.end(readFileSync(path.join(WEB_DIR, file[0])));
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
        Promise.all(this.extraBrowsers.map((b) => b.close())),
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
    await context.addInitScript(TRACK_RECORDER);
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    const entry = { page, context, console: [], errors: [] };
    this.pages.set(name, entry);
    page.on("console", (m) => {
      entry.console.push(`[${this.elapsed()}] ${m.type()}: ${m.text()}`);
      if (m.type() === "error") entry.errors.push(m.text());
    });
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

  /**
   * A room grant signed with the test's API key (HS256), as a backend would mint it.
   * `publish`: camera and microphone allowed. `role` "guest" with `invitedBy` makes a
   * guest grant as an invitation would.
   */
  grant(room, identity, { publish = false, host = false, role, invitedBy, name = identity } = {}) {
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: "test", aud: "plenary", sub: identity, name, room,
      role: role ?? (host ? "host" : "member"),
      ...(invitedBy ? { invited_by: invitedBy } : {}),
      permissions: {
        can_publish: publish, can_publish_sources: [], can_subscribe: true,
        can_publish_data: true, is_host: host,
      },
      nbf: now - 5, exp: now + 300, jti: randomBytes(12).toString("hex"),
    };
    const head = `${b64({ alg: "HS256", typ: "JWT", kid: "test" })}.${b64(claims)}`;
    const sig = createHmac("sha256", this.apiSecret).update(head).digest("base64url");
    return `${head}.${sig}`;
  }

  /** Closes page `name` (its console stays for the output files). */
  async closePage(name) {
    await Promise.race([this.pages.get(name).context.close(), bound(10_000)]);
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

  /**
   * Starts recording, in page `name`, the client's states and the banner's texts
   * (`window.__seen`), so a passing state (a reconnection may take 100 ms) can be checked
   * afterwards.
   */
  recordStates(name) {
    return this.page(name).evaluate(() => {
      window.__seen = [];
      window.plenary.client.addEventListener("state", (e) => window.__seen.push(e.detail.state));
      const banner = document.getElementById("banner");
      new MutationObserver(() => {
        if (!banner.hidden) window.__seen.push(`banner: ${banner.textContent}`);
      }).observe(banner, { attributes: true, childList: true, subtree: true, characterData: true });
    });
  }

  /** Opens the tab `tab` ("People", "Chat", "Host") of page `name`'s side panel. */
  async openTab(name, tab) {
    await this.page(name).getByRole("tab", { name: new RegExp(`^${tab}`) }).click();
  }

  /** The readyState of every track getUserMedia gave page `name` so far. */
  heldTracks(name) {
    return this.page(name).evaluate(() => window.__media.tracks.map((t) => `${t.kind}:${t.readyState}`));
  }

  /**
   * Cuts page `name`'s media path (its selected ICE candidate pair on loopback) with an
   * nftables table of our own, as if its network went away; returns a function that
   * restores it. Needs root (CI runs as root) and Debian's nftables.
   */
  async cutMedia(name) {
    // The page's side and the server's side of the path (each media shard has a port).
    const [port, serverPort] = await this.waitFor(`${name}'s selected candidate pair`, () =>
      this.page(name).evaluate(async () => {
        const report = await window.plenary.client.pc.getStats();
        let pair = null;
        report.forEach((s) => {
          if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
        });
        const local = pair && report.get(pair.localCandidateId)?.port;
        const remote = pair && report.get(pair.remoteCandidateId)?.port;
        return local && remote ? [local, remote] : false;
      }));
    const table = `plenary_test_${process.pid}`;
    const rules = [
      `add table inet ${table}`,
      `add chain inet ${table} out { type filter hook output priority 0; policy accept; }`,
      `add rule inet ${table} out udp sport ${port} udp dport ${serverPort} drop`,
      `add rule inet ${table} out udp sport ${serverPort} udp dport ${port} drop`,
    ].join("\n");
    nft(rules);
    this.log(`cut ${name}'s media path (udp ${port} <-> ${serverPort})`);
    let restored = false;
    const restore = () => {
      if (restored) return;
      restored = true;
      nft(`delete table inet ${table}`);
    };
    process.on("exit", restore);
    return restore;
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
      // A panic's message first (the tail may hold only its backtrace).
      const lines = log.split("\n");
      lines.forEach((line, i) => {
        if (/panicked at/.test(line)) for (const l of lines.slice(i, i + 3)) console.log(`server panic: ${l}`);
      });
      for (const line of tail(log, 40)) console.log(`server: ${line}`);
    } catch {}
  }
}

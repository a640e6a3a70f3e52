// Debian's coturn (`turnserver`), started by a test on an address of its choosing with the
// TURN REST API scheme Plenary uses (`use-auth-secret` + `static-auth-secret`): credentials
// `expiry:identity` / base64(HMAC-SHA1(secret, username)). Killed by stop() and at exit.
// Needs `apt-get install coturn` (scripts/test-all does it).

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { createWriteStream, mkdirSync } from "node:fs";
import { connect } from "node:net";
import path from "node:path";
import { OUT, sleep } from "./harness.mjs";

export const TURNSERVER = process.env.TURNSERVER || "turnserver";

export class Coturn {
  /**
   * `ip`: where it listens and relays from; `port`: its UDP and TCP port; `secret`: shared
   * with Plenary. On loopback, coturn refuses to relay to loopback peers unless told
   * (`--allow-loopback-peers`), which a test on 127.0.0.1 needs.
   */
  constructor({ ip = "127.0.0.1", port, secret, realm = "plenary.test", name = "coturn" }) {
    Object.assign(this, { ip, port, secret, realm });
    this.logFile = path.join(OUT, `${name}.log`);
    this.proc = null;
  }

  async start() {
    const args = [
      "-n", "--no-cli", "--no-tls", "--no-dtls", "--fingerprint",
      `--listening-ip=${this.ip}`, `--relay-ip=${this.ip}`, `--listening-port=${this.port}`,
      "--min-port=49160", "--max-port=49400",
      "--use-auth-secret", `--static-auth-secret=${this.secret}`, `--realm=${this.realm}`,
      "--no-multicast-peers", "--simple-log", "--log-file=stdout", "--pidfile=/dev/null", "-v",
    ];
    if (this.ip.startsWith("127.")) args.push("--allow-loopback-peers");
    mkdirSync(OUT, { recursive: true });
    const log = createWriteStream(this.logFile);
    this.proc = spawn(TURNSERVER, args, { stdio: ["ignore", "pipe", "pipe"] });
    this.proc.stdout.pipe(log);
    this.proc.stderr.pipe(log);
    let exited = null;
    this.proc.on("error", (err) => {
      exited = `cannot start ${TURNSERVER}: ${err.message} (apt-get install coturn)`;
    });
    this.proc.on("exit", (code, signal) => {
      exited = `code ${code}, signal ${signal}`;
    });
    process.on("exit", () => this.proc?.kill("SIGKILL"));
    // Up when its TCP listener accepts.
    for (let i = 0; i < 100; i++) {
      if (exited) throw new Error(`turnserver exited (${exited}); see ${this.logFile}`);
      const up = await new Promise((resolve) => {
        const s = connect(this.port, this.ip, () => {
          s.destroy();
          resolve(true);
        });
        s.on("error", () => resolve(false));
      });
      if (up) return;
      await sleep(100);
    }
    throw new Error(`turnserver did not listen on ${this.ip}:${this.port}; see ${this.logFile}`);
  }

  /** Credentials as Plenary makes them, for `identity`, expiring at `expiry` (Unix s). */
  credentials(identity, expiry) {
    const username = `${expiry}:${identity}`;
    const credential = createHmac("sha1", this.secret).update(username).digest("base64");
    return { username, credential };
  }

  urls() {
    return [`turn:${this.ip}:${this.port}?transport=udp`, `turn:${this.ip}:${this.port}?transport=tcp`];
  }

  async stop() {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill("SIGTERM");
    await Promise.race([new Promise((r) => p.once("exit", r)), sleep(3000)]);
    if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
  }
}

// Benchmark: one three-person room of real headless Chromium pages (fake camera and
// microphone) on a release Plenary; prints the SFU's CPU (fraction of one core), RSS, and
// packet rates over 20 s, read from /proc and /metrics.
// Run: cargo build --release && (cd tests/browser && npm ci) && node loadtest/browser-room.mjs
import { spawn } from "node:child_process";
import fs from "node:fs";
import { chromium } from "../tests/browser/node_modules/playwright-core/index.mjs";
const port = 21000 + Math.floor(Math.random() * 500);
const bin = process.argv[2] || new URL("../target/release/plenary", import.meta.url).pathname;
const srv = spawn(bin, ["--log", "warn"], { env: { PATH: process.env.PATH, PLENARY_HTTP_ADDR: `127.0.0.1:${port}`, PLENARY_MEDIA_ADDR: `127.0.0.1:${port + 1}` }, stdio: ["ignore", "inherit", "inherit"] });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
await sleep(800);
const b = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--autoplay-policy=no-user-gesture-required"] });
const pages = [];
for (const n of ["a", "b", "c"]) {
  const p = await (await b.newContext()).newPage();
  await p.goto(`http://127.0.0.1:${port}/?room=m&name=${n}&autojoin=1`);
  pages.push(p);
}
const stat = () => {
  const s = fs.readFileSync(`/proc/${srv.pid}/stat`, "utf8").split(") ")[1].split(" ");
  const ticks = Number(s[11]) + Number(s[12]);
  const rss = fs.readFileSync(`/proc/${srv.pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/)[1];
  return { ticks, rssKb: Number(rss) };
};
await sleep(10000);
const metrics = async () => (await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());
const num = (t, name) => Number((t.match(new RegExp(`^${name} (\\S+)`, "m")) || [])[1] || 0);
const m0 = await metrics(); const s0 = stat(); const t0 = Date.now();
await sleep(20000);
const m1 = await metrics(); const s1 = stat(); const t1 = Date.now();
const secs = (t1 - t0) / 1000;
const cpu = (s1.ticks - s0.ticks) / 100 / secs;
const fwd = num(m1, "plenary_rtp_forwarded_total") - num(m0, "plenary_rtp_forwarded_total");
const pin = num(m1, "plenary_udp_packets_in_total") - num(m0, "plenary_udp_packets_in_total");
const pout = num(m1, "plenary_udp_packets_out_total") - num(m0, "plenary_udp_packets_out_total");
const calls = num(m1, "plenary_udp_send_calls_total") - num(m0, "plenary_udp_send_calls_total");
console.log(JSON.stringify({ window_s: secs, cpu_core_fraction: cpu.toFixed(4), rss_mb: (s1.rssKb / 1024).toFixed(1), forwarded_per_s: (fwd / secs).toFixed(0), packets_in_per_s: (pin / secs).toFixed(0), packets_out_per_s: (pout / secs).toFixed(0), datagrams_per_send_call: (pout / Math.max(calls, 1)).toFixed(2), cpu_us_per_forwarded: (cpu * 1e6 / (fwd / secs)).toFixed(1) }));
await b.close(); srv.kill("SIGTERM");

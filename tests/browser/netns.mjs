// A network namespace of the test's own, for pages whose network must be worse than
// loopback: a veth pair (10.77.N.1 on the host side, 10.77.N.2 inside), nftables rules
// inside the namespace that police or drop the media coming in (this kernel has no netem),
// and a Chromium wrapper that starts the browser inside it. Needs root and Debian's iproute2
// and nftables. Everything is removed by down() (and at exit).

import { execFileSync } from "node:child_process";
import { writeFileSync, chmodSync, rmSync } from "node:fs";
import { CHROMIUM } from "./harness.mjs";

const run = (cmd, args, input) =>
  execFileSync(cmd, args, { input, stdio: [input ? "pipe" : "ignore", "pipe", "pipe"] }).toString();

export class Netns {
  constructor(tag = process.pid % 200) {
    this.tag = tag;
    this.name = `plen${tag}`;
    this.hostIf = `vph${tag}`;
    this.nsIf = `vpn${tag}`;
    this.hostIp = `10.77.${tag}.1`;
    this.nsIp = `10.77.${tag}.2`;
    this.wrapper = `/tmp/chromium-in-${this.name}.sh`;
    this.isUp = false;
  }

  /** Creates the namespace and the link. */
  up() {
    this.down();
    run("ip", ["netns", "add", this.name]);
    this.isUp = true;
    process.on("exit", () => this.down());
    run("ip", ["link", "add", this.hostIf, "type", "veth", "peer", "name", this.nsIf]);
    run("ip", ["link", "set", this.nsIf, "netns", this.name]);
    // No IPv6 on the link: its address would come up (duplicate address detection) a second
    // or two later, and Chromium, seeing the network change, fails the page loads then in
    // flight (ERR_NETWORK_CHANGED).
    writeFileSync(`/proc/sys/net/ipv6/conf/${this.hostIf}/disable_ipv6`, "1");
    run("ip", ["addr", "add", `${this.hostIp}/24`, "dev", this.hostIf]);
    run("ip", ["link", "set", this.hostIf, "up"]);
    const inNs = (...args) => run("ip", ["netns", "exec", this.name, ...args]);
    inNs("sh", "-c", `echo 1 > /proc/sys/net/ipv6/conf/${this.nsIf}/disable_ipv6`);
    inNs("ip", "addr", "add", `${this.nsIp}/24`, "dev", this.nsIf);
    inNs("ip", "link", "set", this.nsIf, "up");
    inNs("ip", "link", "set", "lo", "up");
    writeFileSync(this.wrapper, `#!/bin/sh\nexec ip netns exec ${this.name} ${CHROMIUM} "$@"\n`);
    chmodSync(this.wrapper, 0o755);
  }

  /** Replaces the namespace's rules for UDP coming from the host (the media). */
  shape(rule) {
    this.clear();
    const script = [
      "add table inet shape",
      "add chain inet shape in { type filter hook input priority 0; policy accept; }",
      `add rule inet shape in ip saddr ${this.hostIp} meta l4proto udp ${rule}`,
    ].join("\n");
    run("ip", ["netns", "exec", this.name, "nft", "-f", "-"], script);
  }

  /**
   * Blocks, inside the namespace, all UDP (both ways) when `udp`, and TCP to and from each
   * of the host's `tcpPorts` — a network that lets only some TCP through.
   */
  block({ udp = false, tcpPorts = [] }) {
    this.clear();
    const rules = [
      "add table inet shape",
      "add chain inet shape in { type filter hook input priority 0; policy accept; }",
      "add chain inet shape out { type filter hook output priority 0; policy accept; }",
    ];
    if (udp) rules.push("add rule inet shape in meta l4proto udp drop", "add rule inet shape out meta l4proto udp drop");
    for (const port of tcpPorts) {
      rules.push(`add rule inet shape out ip daddr ${this.hostIp} tcp dport ${port} drop`);
      rules.push(`add rule inet shape in ip saddr ${this.hostIp} tcp sport ${port} drop`);
    }
    run("ip", ["netns", "exec", this.name, "nft", "-f", "-"], rules.join("\n"));
  }

  /** Polices the media downlink to `kbit` kbit/s (a bottleneck with a small buffer). */
  cap(kbit) {
    const kbytes = Math.max(1, Math.round(kbit / 8));
    this.shape(`limit rate over ${kbytes} kbytes/second burst ${Math.max(4, Math.round(kbytes / 4))} kbytes drop`);
  }

  /** Drops `percent` % of the media downlink at random. */
  loss(percent) {
    this.shape(`numgen random mod 100 < ${percent} drop`);
  }

  /** Removes the rules. */
  clear() {
    if (!this.isUp) return;
    try {
      run("ip", ["netns", "exec", this.name, "nft", "delete", "table", "inet", "shape"]);
    } catch {}
  }

  down() {
    try {
      run("ip", ["netns", "del", this.name]);
    } catch {}
    try {
      run("ip", ["link", "del", this.hostIf]);
    } catch {}
    rmSync(this.wrapper, { force: true });
    this.isUp = false;
  }
}

// Interoperability with a WebRTC stack that is not a browser: an aiortc client
// (tests/interop/aiortc_client.py, from PyPI in tests/interop/.venv) joins through the
// documented protocol with `max-bundle`, publishes audio and video and receives a Chromium
// page's, both ways, through Plenary; every m-section of the server's answer carries the
// candidates and `a=end-of-candidates`; and when it leaves (saying `leave`, waiting for the
// server to close, then closing its peer connection) the page sees it `left`, not
// `disconnected`. Machinery: harness.mjs.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { Harness, repo } from "./harness.mjs";

const PYTHON = path.join(repo, "tests", "interop", ".venv", "bin", "python");
const CLIENT = path.join(repo, "tests", "interop", "aiortc_client.py");
const ROOM = `interop-${process.pid}`;
const h = new Harness({ name: "interop" });
let aio = null;
/** Everything the aiortc client reported, in order. */
const events = [];

before(() => h.start());
after(async () => {
  aio?.kill("SIGKILL");
  await h.stop();
});

/** The last event of `kind` the client reported. */
const last = (kind) => events.filter((e) => e.event === kind).at(-1);

test("an aiortc client and a Chromium page exchange audio and video; it leaves as `left`", async () => {
  try {
    assert.ok(existsSync(PYTHON),
      `no aiortc virtualenv at ${PYTHON}: python3 -m venv tests/interop/.venv && ` +
      "tests/interop/.venv/bin/pip install -r tests/interop/requirements.txt (scripts/test-all does it)");
    await h.openPage("web", { room: ROOM, camera: true, mic: true });
    const webId = await h.myId("web");
    await h.page("web").evaluate(() => {
      window.__left = [];
      window.plenary.client.ws.addEventListener("message", (e) => {
        const m = JSON.parse(e.data);
        if (m.type === "participants_changed") window.__left.push(...(m.left ?? []));
      });
    });
    const res = await fetch(`${h.baseUrl}/api/dev/grant`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ room: ROOM, name: "aiortc", publish: true }),
    });
    const { grant } = await res.json();
    const ws = `${h.baseUrl.replace(/^http/, "ws")}/rtc`;
    aio = spawn(PYTHON, [CLIENT, "--ws", ws, "--grant", grant, "--timeout", "150"], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    const stderr = [];
    aio.stderr.on("data", (d) => stderr.push(d.toString()));
    createInterface({ input: aio.stdout }).on("line", (line) => {
      try {
        events.push(JSON.parse(line));
      } catch {
        stderr.push(line);
      }
    });
    const exited = new Promise((r) => aio.once("exit", (code) => r(code)));
    const waitEvent = (what, fn, ms) => h.waitFor(what, () => fn() || { ok: false, stderr: stderr.join("").slice(-600) }, ms);

    const welcome = await waitEvent("aiortc's welcome", () => last("welcome"));
    const aioId = welcome.participant_id;
    const answer = await waitEvent("the server's answer to aiortc", () => last("answer"));
    h.log(`answer sections seen by aiortc: ${JSON.stringify(answer.sections)}`);
    assert.ok(answer.sections.length >= 3, "data channel, audio, video");
    for (const s of answer.sections) {
      assert.ok(s.candidates > 0 && s.end_of_candidates, `mid ${s.mid} has the candidates and their end`);
    }
    await waitEvent("aiortc to connect", () => events.some((e) => e.event === "connection" && e.state === "connected"));
    const got = await waitEvent("aiortc to decode the page's audio and video", () => {
      const f = last("receiving")?.from?.[webId];
      return f && f.audio >= 50 && f.video >= 10 && f;
    });
    h.log(`aiortc decoded from the page: ${JSON.stringify(got)}`);
    await h.expectMediaFrom("web", [aioId]);
    await h.screenshot("web", "interop-aiortc");

    aio.stdin.write("leave\n");
    const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r("timeout"), 20_000))]);
    assert.equal(code, 0, `aiortc left cleanly (${stderr.join("").slice(-400)})`);
    assert.equal(last("left")?.closed_by_server, true, "the server closed the socket after leave");
    const left = await h.waitFor("the page to see aiortc go", () =>
      h.page("web").evaluate((id) => window.__left.find((l) => l.id === id), aioId));
    assert.equal(left.reason, "left", "announced as left, not disconnected");
  } catch (err) {
    h.showDiagnostics();
    for (const e of events.slice(-5)) console.log(`aiortc: ${JSON.stringify(e)}`);
    throw err;
  }
});

// Plenary's minimal web client: join form, participant grid, leave.
import { PlenaryClient } from "./client.js";

const $ = (id) => document.getElementById(id);
const form = $("join-form");
const statusLine = $("status");
const grid = $("grid");
const meeting = $("meeting");
const preview = $("preview");
const muteMic = $("mute-mic");
const muteCamera = $("mute-camera");

let info = { dev_mode: false, version: "" };
let client = null;
let localStream = null;
/** participant id → tile element */
const tiles = new Map();

function setStatus(text) {
  statusLine.textContent = text;
}

// What tests and curious people can reach from the console.
window.plenary = {
  get client() {
    return client;
  },
  get info() {
    return info;
  },
  async stats() {
    return client ? client.stats() : [];
  },
  join,
  leave,
};

async function loadInfo() {
  try {
    const res = await fetch("/api/info");
    if (res.ok) info = await res.json();
  } catch {
    // Leave the defaults: no dev mode.
  }
  $("dev-mode").hidden = !info.dev_mode;
  $("version").textContent = info.version ? `v${info.version}` : "";
  $("grant-field").hidden = !!info.dev_mode;
  $("grant").required = !info.dev_mode;
}

function wsUrlFrom(wsUrl) {
  const url = new URL(wsUrl || "/rtc", location.href);
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  return url.href;
}

async function fetchDevGrant(room, name, publish) {
  const res = await fetch("/api/dev/grant", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ room, name, publish }),
  });
  let body = {};
  try {
    body = await res.json();
  } catch {}
  if (!res.ok) throw new Error(body.error || `grant refused (HTTP ${res.status})`);
  return body;
}

/** The signed-in member (from /api/me), if any. */
let member = null;
/** A grant handed over in the URL fragment (invitations), used for the next join. */
let handedGrant = null;

async function loadMember() {
  try {
    const res = await fetch("/api/me");
    if (res.ok) member = await res.json();
    return res.status !== 404; // 404: sign-in is not configured on this server
  } catch {
    return false;
  }
}

async function fetchMemberGrant(room) {
  const res = await fetch("/api/grant", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ room }),
  });
  let body = {};
  try {
    body = await res.json();
  } catch {}
  if (res.status === 401) {
    location.assign(`/login`);
    throw new Error("please sign in again");
  }
  if (!res.ok) throw new Error(body.error || `grant refused (HTTP ${res.status})`);
  return body;
}

async function join() {
  if (client && client.state !== "closed") return;
  const name = $("name").value.trim();
  const room = $("room").value.trim();
  const wantCamera = $("camera").checked;
  const wantMic = $("microphone").checked;
  if (!name || !room) {
    setStatus("Please give your name and the room.");
    return;
  }
  $("join").disabled = true;
  try {
    // A pure listener never asks for a camera or microphone.
    const publish = [];
    if (wantCamera || wantMic) {
      setStatus("Asking for your camera and microphone…");
      localStream = await navigator.mediaDevices.getUserMedia({
        audio: wantMic,
        video: wantCamera
          ? { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 20 } }
          : false,
      });
      for (const track of localStream.getAudioTracks()) publish.push({ track, source: "microphone" });
      for (const track of localStream.getVideoTracks()) publish.push({ track, source: "camera" });
    }

    setStatus("Getting a room grant…");
    let grant;
    let wsUrl;
    if (handedGrant) {
      // From an invitation page (or a backend), once: a grant is single-use.
      grant = handedGrant;
      handedGrant = null;
    } else if (member) {
      const g = await fetchMemberGrant(room);
      grant = g.grant;
      wsUrl = g.ws_url;
    } else if (info.dev_mode) {
      const g = await fetchDevGrant(room, name, publish.length > 0);
      grant = g.grant;
      wsUrl = g.ws_url;
    } else {
      grant = $("grant").value.trim();
      if (!grant) throw new Error("please sign in with your co-op's account first");
    }

    client = new PlenaryClient({ url: wsUrlFrom(wsUrl), grant, room, publish });
    client.addEventListener("state", onState);
    client.addEventListener("participants", renderParticipants);
    client.addEventListener("tracks", renderTracks);
    client.addEventListener("muted", renderParticipants);
    client.addEventListener("log", (e) => console.info("plenary:", e.detail.message));
    client.addEventListener("error", (e) => setStatus(`Server: ${e.detail.message}`));

    setStatus("Joining…");
    showMeeting(name, publish);
    await client.join();
  } catch (err) {
    console.error(err);
    setStatus(`Could not join: ${err.message ?? err}`);
    stopLocal();
    hideMeeting();
  } finally {
    $("join").disabled = false;
  }
}

function leave() {
  client?.leave();
  stopLocal();
  hideMeeting();
  setStatus("You left the meeting.");
}

function stopLocal() {
  localStream?.getTracks().forEach((t) => t.stop());
  localStream = null;
  preview.srcObject = null;
}

function showMeeting(name, publish) {
  form.hidden = true;
  meeting.hidden = false;
  $("self-name").textContent = `${name} (you)`;
  const hasVideo = publish.some((p) => p.track.kind === "video");
  preview.hidden = !hasVideo;
  preview.srcObject = hasVideo ? localStream : null;
  muteMic.hidden = !publish.some((p) => p.source === "microphone");
  muteCamera.hidden = !hasVideo;
  muteMic.setAttribute("aria-pressed", "false");
  muteCamera.setAttribute("aria-pressed", "false");
}

function hideMeeting() {
  meeting.hidden = true;
  form.hidden = false;
  for (const tile of tiles.values()) tile.remove();
  tiles.clear();
}

function onState(e) {
  const { state, reason } = e.detail;
  if (state === "joined") {
    setStatus(`In room “${client.room}” as ${client.me?.name ?? "you"}.`);
  } else if (state === "closed" && reason !== "left" && client?.me) {
    stopLocal();
    hideMeeting();
    setStatus(`Disconnected (${reason}).`);
  }
}

function tileFor(p) {
  let tile = tiles.get(p.id);
  if (!tile) {
    tile = document.createElement("figure");
    tile.className = "tile";
    tile.dataset.participantId = p.id;
    const video = document.createElement("video");
    video.muted = true;
    video.playsInline = true;
    video.autoplay = true;
    video.setAttribute("muted", "");
    video.setAttribute("playsinline", "");
    video.setAttribute("autoplay", "");
    const audio = document.createElement("audio");
    audio.autoplay = true;
    audio.setAttribute("autoplay", "");
    const caption = document.createElement("figcaption");
    tile.append(video, audio, caption);
    grid.append(tile);
    tiles.set(p.id, tile);
  }
  const label = p.name || p.identity || p.id;
  const micMuted = [...client.roomTracks.values()].some(
    (t) => t.participant_id === p.id && t.source === "microphone" && t.muted,
  );
  const text = micMuted ? `${label} (muted)` : label;
  tile.querySelector("figcaption").textContent = text;
  tile.setAttribute("aria-label", text);
  return tile;
}

function renderParticipants() {
  if (!client) return;
  const present = new Set();
  for (const p of client.participants.values()) {
    tileFor(p);
    present.add(p.id);
  }
  for (const [id, tile] of tiles) {
    if (!present.has(id)) {
      tile.remove();
      tiles.delete(id);
    }
  }
  renderTracks();
  const n = client.participants.size;
  if (client.state === "joined") {
    setStatus(`In room “${client.room}” with ${n} other${n === 1 ? "" : "s"}.`);
  }
}

function attach(el, track) {
  const current = el.srcObject?.getTracks()[0];
  if (current === track) return;
  el.srcObject = track ? new MediaStream([track]) : null;
  if (track) el.play().catch(() => {});
}

function renderTracks() {
  if (!client) return;
  const byParticipant = new Map();
  for (const r of client.remote.values()) {
    const slot = byParticipant.get(r.participant_id) ?? {};
    slot[r.kind] = r.track;
    byParticipant.set(r.participant_id, slot);
  }
  for (const [id, tile] of tiles) {
    const slot = byParticipant.get(id) ?? {};
    attach(tile.querySelector("video"), slot.video ?? null);
    attach(tile.querySelector("audio"), slot.audio ?? null);
  }
}

function toggle(button, source, pressedLabel, label) {
  const muted = button.getAttribute("aria-pressed") !== "true";
  client?.setMuted(source, muted);
  button.setAttribute("aria-pressed", String(muted));
  button.textContent = muted ? pressedLabel : label;
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  join();
});
$("leave").addEventListener("click", leave);
muteMic.addEventListener("click", () => toggle(muteMic, "microphone", "Unmute microphone", "Mute microphone"));
muteCamera.addEventListener("click", () => toggle(muteCamera, "camera", "Start camera", "Stop camera"));

// ?room=x&name=y&camera=0&mic=0&grant=...&autojoin=1
const params = new URLSearchParams(location.search);
const flag = (v) => !(v === "0" || v === "false" || v === "no" || v === "off");
if (params.has("room")) $("room").value = params.get("room");
if (params.has("name")) $("name").value = params.get("name");
if (params.has("camera")) $("camera").checked = flag(params.get("camera"));
if (params.has("mic")) $("microphone").checked = flag(params.get("mic"));
if (params.has("grant")) $("grant").value = params.get("grant");

// An invitation hands its guest grant over in the fragment (never sent to a server);
// read it, then take it out of the address bar.
const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
if (fragment.has("grant")) {
  handedGrant = fragment.get("grant");
  for (const [k, v] of fragment) if (k !== "grant") params.set(k, v);
  if (fragment.has("room")) $("room").value = fragment.get("room");
  if (fragment.has("name")) $("name").value = fragment.get("name");
  if (fragment.has("camera")) $("camera").checked = flag(fragment.get("camera"));
  if (fragment.has("mic")) $("microphone").checked = flag(fragment.get("mic"));
  params.set("autojoin", "1");
  history.replaceState(null, "", location.pathname);
}

await loadInfo();
const signInConfigured = !info.dev_mode && (await loadMember());
if (member) {
  $("name").value = member.display_name;
  $("grant-field").hidden = true;
  $("grant").required = false;
  $("signed-in").textContent = `Signed in as ${member.handle}${member.is_host ? " (host)" : ""}`;
  $("signed-in").hidden = false;
  $("sign-out").hidden = false;
  $("my-invitations").hidden = false;
} else if (signInConfigured && !handedGrant) {
  $("grant-field").hidden = true;
  $("grant").required = false;
  $("sign-in").hidden = false;
}
$("sign-out").addEventListener("click", async () => {
  await fetch("/auth/logout", { method: "POST" });
  location.reload();
});
setStatus(
  info.dev_mode
    ? "Dev mode: anyone on this machine can join."
    : member || handedGrant
      ? "Ready."
      : signInConfigured
        ? "Sign in with your co-op's account to join."
        : "Ready.",
);
if (params.get("autojoin") === "1") join();

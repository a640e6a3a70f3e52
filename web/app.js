// Plenary's web client: pre-join screen, meeting view (active speaker, paginated grid,
// people list, chat), host tools, reconnection. Speaks docs/protocol.md through client.js.
import { PlenaryClient } from "./client.js";

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
};

const form = $("join-form");
const statusLine = $("status");
const grid = $("grid");
const meeting = $("meeting");
const prejoin = $("prejoin");
const preview = $("preview");
const prejoinVideo = $("prejoin-video");
const muteMic = $("mute-mic");
const muteCamera = $("mute-camera");
const shareScreen = $("share-screen");
const raiseHand = $("raise-hand");

/** Rooms above this size (or in listener mode) are joined with the microphone muted. */
const JOIN_MUTED_ABOVE = 20;
const SPEAKING_LEVEL = 0.02;

const params = new URLSearchParams(location.search);
const flag = (v) => !(v === "0" || v === "false" || v === "no" || v === "off");

let info = { dev_mode: false, version: "" };
/** @type {PlenaryClient|null} */
let client = null;
/** The stream we publish from (camera + microphone). */
let localStream = null;
/** The pre-join preview stream (handed to the meeting on join). */
let prejoinStream = null;
let screenStream = null;
let joinedName = "";
let joinedRoom = "";
/** The output device for remote audio ("" = default). */
let speakerId = "";

// ---- UI state ----------------------------------------------------------------------------
/** participant id (or "pid:screen") → tile element */
const tiles = new Map();
/** track id → <audio> in the audio sink */
const audioEls = new Map();
/** participant id → smoothed audio level */
const levels = new Map();
let selfLevel = 0;
let activeSpeaker = null;
let activeSince = 0;
/** A participant the user pinned to the main view (e.g. a sign-language interpreter). */
let pinned = null;
/** The active speaker stays at least this long before someone louder takes over. */
const SPEAKER_HOLD_MS = 2500;
let page = 0;
let pageSize = Number(params.get("page_size")) || 0;
let peopleFilter = "";
let chatUnread = 0;
let openMenu = null;
let lastQuality = null;
let statsTimer = null;
let qualityTimer = null;
let renderQueued = false;
let lastLayout = { stage: null, page: 0, pages: 1, visible: [], paused: [] };

function setStatus(text) {
  statusLine.textContent = text;
}

function showBanner(text, actions = [], kind = "info") {
  $("banner-text").textContent = text;
  const box = $("banner-actions");
  box.replaceChildren(...actions.map(([label, fn, cls]) =>
    el("button", { type: "button", class: cls || "secondary", text: label, onclick: fn })));
  $("banner").className = `banner ${kind}`;
  $("banner").hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
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
  ui: {
    /** The current layout: stage participant, page, visible tiles, paused tracks. */
    layout: () => ({ ...lastLayout, activeSpeaker, pinned }),
    setPageSize(n) {
      pageSize = n;
      page = 0;
      scheduleRender();
    },
    goToPage(n) {
      page = n;
      scheduleRender();
    },
    levels: () => Object.fromEntries(levels),
    quality: () => lastQuality,
    get localStream() {
      return localStream;
    },
  },
};

// ---- server info, sign-in, grants ----------------------------------------------------------

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

function joinMutedAbove() {
  const p = Number(params.get("muted_above"));
  if (params.has("muted_above") && Number.isFinite(p)) return p;
  return Number.isFinite(info.join_muted_above) ? info.join_muted_above : JOIN_MUTED_ABOVE;
}

function wsUrlFrom(wsUrl) {
  const url = new URL(wsUrl || "/rtc", location.href);
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  return url.href;
}

async function fetchDevGrant(room, name, publish) {
  const body = { room, name, publish };
  if (params.get("host") === "1") body.host = true;
  const res = await fetch("/api/dev/grant", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  let data = {};
  try {
    data = await res.json();
  } catch {}
  if (!res.ok) throw new Error(data.error || `grant refused (HTTP ${res.status})`);
  return data;
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

// ---- pre-join: preview, level meter, devices, speaker test ---------------------------------

let audioCtx = null;
let meterSource = null;
let meterAnalyser = null;
let meterTimer = null;

function ctx() {
  if (!audioCtx) audioCtx = new AudioContext();
  if (audioCtx.state === "suspended") audioCtx.resume().catch(() => {});
  return audioCtx;
}

/** Feeds `stream`'s audio into the level meter (pre-join) and the self speaking indicator. */
function meterOn(stream) {
  meterOff();
  const track = stream?.getAudioTracks()[0];
  if (!track) return;
  try {
    const ac = ctx();
    meterSource = ac.createMediaStreamSource(new MediaStream([track]));
    meterAnalyser = ac.createAnalyser();
    meterAnalyser.fftSize = 512;
    meterSource.connect(meterAnalyser);
    const buf = new Float32Array(meterAnalyser.fftSize);
    meterTimer = setInterval(() => {
      if (!meterAnalyser) return;
      meterAnalyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const x of buf) sum += x * x;
      const rms = Math.sqrt(sum / buf.length);
      const level = track.enabled ? Math.min(1, rms * 4) : 0;
      selfLevel = selfLevel * 0.6 + level * 0.4;
      $("mic-level").value = selfLevel;
      const self = $("self-tile");
      self.classList.toggle("speaking", selfLevel > SPEAKING_LEVEL * 4);
    }, 100);
  } catch (err) {
    console.warn("level meter:", err);
  }
}

function meterOff() {
  clearInterval(meterTimer);
  meterTimer = null;
  try {
    meterSource?.disconnect();
  } catch {}
  meterSource = null;
  meterAnalyser = null;
  $("mic-level").value = 0;
}

async function fillDevicePickers() {
  if (!navigator.mediaDevices?.enumerateDevices) return;
  let devices = [];
  try {
    devices = await navigator.mediaDevices.enumerateDevices();
  } catch {
    return;
  }
  const fill = (select, kind, fallback) => {
    const current = select.value;
    const list = devices.filter((d) => d.kind === kind);
    select.replaceChildren(
      ...(list.length ? list : [{ deviceId: "", label: fallback }]).map((d, i) =>
        el("option", { value: d.deviceId, text: d.label || `${fallback} ${i + 1}` })),
    );
    if ([...select.options].some((o) => o.value === current)) select.value = current;
  };
  fill($("camera-select"), "videoinput", "Camera");
  fill($("mic-select"), "audioinput", "Microphone");
  fill($("speaker-select"), "audiooutput", "Default speakers");
  // setSinkId is what makes a speaker choice possible; without it only the default plays.
  $("speaker-select").disabled = !("setSinkId" in HTMLMediaElement.prototype);
}

function videoConstraints() {
  const id = $("camera-select").value;
  return {
    width: { ideal: 640 },
    height: { ideal: 360 },
    frameRate: { ideal: 20 },
    ...(id ? { deviceId: { exact: id } } : {}),
  };
}

function audioConstraints() {
  const id = $("mic-select").value;
  return id ? { deviceId: { exact: id } } : true;
}

let previewSeq = 0;
/** (Re)starts the pre-join preview for the chosen devices. */
async function startPreview() {
  const seq = ++previewSeq;
  stopPreview();
  const wantCamera = $("camera").checked;
  const wantMic = $("microphone").checked;
  $("preview-off").hidden = wantCamera;
  if (!wantCamera && !wantMic) return;
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: wantMic ? audioConstraints() : false,
      video: wantCamera ? videoConstraints() : false,
    });
    if (seq !== previewSeq || !prejoin.isConnected || prejoin.hidden) {
      stream.getTracks().forEach((t) => t.stop());
      return;
    }
    prejoinStream = stream;
    prejoinVideo.srcObject = wantCamera ? stream : null;
    prejoinVideo.play().catch(() => {});
    meterOn(stream);
    await fillDevicePickers();
  } catch (err) {
    if (seq !== previewSeq) return;
    console.warn("preview:", err);
    setStatus(`Cannot use your camera or microphone (${err.name || err.message}). You can still join to listen.`);
  }
}

function stopPreview() {
  meterOff();
  prejoinStream?.getTracks().forEach((t) => t.stop());
  prejoinStream = null;
  prejoinVideo.srcObject = null;
}

/** Plays a short generated tone on the chosen speakers. */
async function testSpeakers() {
  const ac = ctx();
  const dest = ac.createMediaStreamDestination();
  const osc = ac.createOscillator();
  const gain = ac.createGain();
  osc.type = "sine";
  osc.frequency.value = 523.25;
  gain.gain.setValueAtTime(0.0001, ac.currentTime);
  gain.gain.exponentialRampToValueAtTime(0.3, ac.currentTime + 0.05);
  gain.gain.exponentialRampToValueAtTime(0.0001, ac.currentTime + 0.8);
  osc.connect(gain).connect(dest);
  const audio = new Audio();
  audio.srcObject = dest.stream;
  if (speakerId && audio.setSinkId) await audio.setSinkId(speakerId).catch(() => {});
  osc.start();
  osc.stop(ac.currentTime + 0.85);
  await audio.play().catch(() => {});
  setStatus("Playing a test tone. If you did not hear it, pick other speakers.");
  window.plenary.ui.lastToneAt = Date.now();
  setTimeout(() => {
    audio.srcObject = null;
  }, 1200);
}

// ---- join / leave ------------------------------------------------------------------------

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
  hideBanner();
  try {
    // A pure listener never asks for a camera or microphone.
    const publish = [];
    if (wantCamera || wantMic) {
      let stream = prejoinStream;
      const has = (kind) => !!stream?.getTracks().some((t) => t.kind === kind && t.readyState === "live");
      if (!stream || has("video") !== wantCamera || has("audio") !== wantMic) {
        setStatus("Asking for your camera and microphone…");
        stopPreview();
        stream = await navigator.mediaDevices.getUserMedia({
          audio: wantMic ? audioConstraints() : false,
          video: wantCamera ? videoConstraints() : false,
        });
      }
      // The preview stream becomes the meeting's stream.
      meterOff();
      prejoinStream = null;
      prejoinVideo.srcObject = null;
      localStream = stream;
      for (const track of localStream.getAudioTracks()) publish.push({ track, source: "microphone" });
      for (const track of localStream.getVideoTracks()) publish.push({ track, source: "camera" });
    } else {
      stopPreview();
      localStream = new MediaStream();
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
      const wantPublish = params.has("publish") ? flag(params.get("publish")) : publish.length > 0;
      const g = await fetchDevGrant(room, name, wantPublish);
      grant = g.grant;
      wsUrl = g.ws_url;
    } else {
      grant = $("grant").value.trim();
      if (!grant) throw new Error("please sign in with your co-op's account first");
    }

    joinedName = name;
    joinedRoom = room;
    client = new PlenaryClient({ url: wsUrlFrom(wsUrl), grant, room, publish });
    wireClient(client);
    setStatus("Joining…");
    await client.join();
  } catch (err) {
    console.error(err);
    const msg = explainError(err.code) || `Could not join: ${err.message ?? err}`;
    setStatus(msg);
    stopLocal();
    showPrejoin();
    if (err.code === "room_locked" || err.code === "barred" || err.code === "denied") {
      showBanner(msg, [], "warn");
    }
  } finally {
    $("join").disabled = false;
  }
}

function explainError(code) {
  switch (code) {
    case "room_locked":
      return "The room is locked: a host has closed it to newcomers.";
    case "barred":
      return "A host removed you from this meeting; you cannot rejoin it.";
    case "denied":
      return "A host did not let you in.";
    case "removed":
      return "A host removed you from the meeting.";
    case "meeting_ended":
      return "The meeting has ended.";
    case "replaced":
      return "You joined this meeting from another window or device.";
    case "server_shutdown":
      return "The server is shutting down.";
    case "resume_failed":
      return "Your place in the meeting could not be restored.";
    case "invalid_grant":
      return "Your room grant is not valid (expired, or for another room).";
    default:
      return "";
  }
}

function wireClient(c) {
  c.addEventListener("state", onState);
  c.addEventListener("participants", () => {
    scheduleRender();
    updateHostPanel();
  });
  c.addEventListener("tracks", scheduleRender);
  c.addEventListener("muted", scheduleRender);
  c.addEventListener("chat", (e) => addChat(e.detail));
  c.addEventListener("hands", () => {
    updateHandButton();
    updateHostPanel();
    scheduleRender();
  });
  c.addEventListener("permissions", onPermissions);
  c.addEventListener("room", onRoomState);
  c.addEventListener("lobby", onLobby);
  c.addEventListener("host_muted", onHostMuted);
  c.addEventListener("asked_to_unmute", onAskedToUnmute);
  c.addEventListener("published", updateControls);
  c.addEventListener("refused", updateControls);
  c.addEventListener("connection", (e) => {
    if (e.detail.state === "connected") updateQuality();
  });
  c.addEventListener("log", (e) => console.info("plenary:", e.detail.message));
  c.addEventListener("error", (e) => {
    const { code, message } = e.detail;
    if (code === "permission_denied") {
      setStatus(`Not allowed: ${message}`);
      window.plenary.ui.lastDenied = { code, message, at: Date.now() };
    } else if (code !== "resume_failed") {
      setStatus(explainError(code) || `Server: ${message}`);
    }
  });
}

function leave() {
  client?.leave();
  stopLocal();
  hideMeeting();
  showPrejoin();
  setStatus("You left the meeting.");
}

function stopLocal() {
  localStream?.getTracks().forEach((t) => t.stop());
  localStream = null;
  screenStream?.getTracks().forEach((t) => t.stop());
  screenStream = null;
  preview.srcObject = null;
  meterOff();
}

function showPrejoin() {
  meeting.hidden = true;
  $("waiting-room").hidden = true;
  prejoin.hidden = false;
  $("room-title").hidden = true;
  $("conn-quality").hidden = true;
  startPreview();
}

function showMeeting() {
  prejoin.hidden = true;
  $("waiting-room").hidden = true;
  meeting.hidden = false;
  $("room-title").textContent = `Room: ${joinedRoom}`;
  $("room-title").hidden = false;
  $("self-name").textContent = `${joinedName} (you)`;
  attachVideo(preview, localStream?.getVideoTracks()[0] ?? null);
  meterOn(localStream);
  const narrow = matchMedia("(max-width: 700px)").matches;
  setPanel("people", !narrow);
  setPanel("chat", !narrow);
  updateControls();
  startStatsLoop();
  // The Join button is gone: put the focus on the first control.
  if (!meeting.contains(document.activeElement)) muteMic.focus({ preventScroll: true });
}

function hideMeeting() {
  meeting.hidden = true;
  for (const [id, tile] of tiles) tile.remove();
  tiles.clear();
  for (const a of audioEls.values()) a.remove();
  audioEls.clear();
  levels.clear();
  activeSpeaker = null;
  pinned = null;
  page = 0;
  $("chat-log").replaceChildren();
  chatUnread = 0;
  updateUnread();
  $("host-panel").hidden = true;
  $("toggle-host").hidden = true;
  closeMenu();
  stopStatsLoop();
}

function onState(e) {
  if (e.target !== client) return;
  const { state, reason } = e.detail;
  if (state === "waiting") {
    prejoin.hidden = true;
    meeting.hidden = true;
    $("waiting-room").hidden = false;
    setStatus("Waiting in the lobby until a host lets you in…");
    $("waiting-leave").focus();
  } else if (state === "joined") {
    if (reason === "resumed") {
      hideBanner();
      setStatus("Reconnected: you are back in the meeting.");
      scheduleRender();
      return;
    }
    showMeeting();
    const rs = client.roomState;
    const large = rs && (rs.size > joinMutedAbove() || rs.listener_mode);
    const mayMic = client.mayPublish("microphone");
    let text = `In room “${client.room}” as ${client.me?.name ?? "you"}.`;
    if (large && mayMic && localStream?.getAudioTracks().length) {
      client.setMuted("microphone", true);
      text += ` You joined muted because the room is large (${rs.size} people). Press M to unmute.`;
    } else if (!mayMic && localStream?.getAudioTracks().length) {
      text += " You are listening: raise your hand (H) to ask for the floor.";
    }
    setStatus(text);
    updateControls();
  } else if (state === "reconnecting") {
    showBanner("Connection lost: reconnecting…", [], "warn");
    setStatus("Reconnecting…");
  } else if (state === "closed") {
    if (reason === "left") return;
    const wasIn = !!client?.me;
    stopLocal();
    hideMeeting();
    showPrejoin();
    if (!wasIn) return;
    const msg = explainError(reason) || `Disconnected (${reason}).`;
    setStatus(msg);
    const canRetry = !["removed", "barred", "meeting_ended", "denied", "replaced"].includes(reason);
    showBanner(
      canRetry ? `${msg} You can join again with a new grant.` : msg,
      canRetry ? [["Join again", () => join(), "primary"]] : [],
      "warn",
    );
  }
}

// ---- permissions, floor, moderation events -----------------------------------------------

async function onPermissions(e) {
  const { permissions, previous } = e.detail;
  if (!previous) {
    updateHostVisibility();
    updateControls();
    return;
  }
  const had = previous.can_publish?.includes("microphone");
  const has = permissions.can_publish?.includes("microphone");
  if (!previous.is_host && permissions.is_host) setStatus("You are now a host of this meeting.");
  if (!had && has) {
    // Given the floor: publish the microphone (the client releases one it held back).
    if (!client.publishing("microphone") && !client.held.some((p) => p.source === "microphone")) {
      try {
        const s = await navigator.mediaDevices.getUserMedia({ audio: audioConstraints() });
        const track = s.getAudioTracks()[0];
        localStream ??= new MediaStream();
        localStream.addTrack(track);
        await client.addTrack(track, "microphone");
        meterOn(localStream);
      } catch (err) {
        setStatus(`You have the floor, but your microphone is not available (${err.name || err.message}).`);
        return;
      }
    } else {
      client.setMuted("microphone", false);
    }
    setStatus("A host gave you the floor: your microphone is on. Press M to mute.");
  } else if (had && !has) {
    setStatus("The floor was taken back: you are listening again.");
    if (screenStream && !permissions.can_publish?.includes("screen")) stopScreenShare();
  }
  updateHostVisibility();
  updateControls();
  scheduleRender();
}

function onRoomState() {
  updateHostPanel();
}

let lastWaitingCount = 0;
function onLobby(e) {
  const n = e.detail.waiting.length;
  if (n > lastWaitingCount) setStatus(`${n} waiting in the lobby.`);
  lastWaitingCount = n;
  updateHostPanel();
}

function onHostMuted(e) {
  const { source } = e.detail;
  if (source === "screen" || source === "screen_audio") {
    stopScreenShare();
    setStatus("A host stopped your screen share.");
  } else if (source === "camera") {
    setStatus("A host turned your camera off.");
  } else {
    setStatus("A host muted your microphone. You can unmute when you need to speak.");
  }
  updateControls();
}

function onAskedToUnmute(e) {
  const host = client?.participants.get(e.detail.by);
  const who = host?.name || "A host";
  showBanner(`${who} asks you to unmute your microphone.`, [
    ["Unmute", () => {
      hideBanner();
      if (client?.isMuted("microphone")) toggleMic();
    }, "primary"],
    ["Not now", hideBanner],
  ]);
}

// ---- controls ---------------------------------------------------------------------------

function setLabel(button, text) {
  button.querySelector(".label").textContent = text;
}

function updateControls() {
  if (!client) return;
  const hasMic = client.publishing("microphone");
  const micMuted = client.isMuted("microphone");
  const mayMic = client.mayPublish("microphone");
  if (hasMic) {
    setLabel(muteMic, micMuted ? "Unmute microphone" : "Mute microphone");
    muteMic.setAttribute("aria-pressed", String(micMuted));
    muteMic.removeAttribute("aria-disabled");
  } else {
    setLabel(muteMic, mayMic ? "Turn microphone on" : "Microphone (needs the floor)");
    muteMic.setAttribute("aria-pressed", "true");
    muteMic.toggleAttribute("aria-disabled", !mayMic);
  }
  const hasCam = client.publishing("camera");
  const camMuted = client.isMuted("camera");
  if (hasCam) {
    setLabel(muteCamera, camMuted ? "Start camera" : "Stop camera");
    muteCamera.setAttribute("aria-pressed", String(camMuted));
    muteCamera.removeAttribute("aria-disabled");
  } else {
    const mayCam = client.mayPublish("camera");
    setLabel(muteCamera, mayCam ? "Turn camera on" : "Camera (needs permission)");
    muteCamera.setAttribute("aria-pressed", "true");
    muteCamera.toggleAttribute("aria-disabled", !mayCam);
  }
  const sharing = !!screenStream;
  setLabel(shareScreen, sharing ? "Stop sharing" : "Share screen");
  shareScreen.setAttribute("aria-pressed", String(sharing));
  shareScreen.toggleAttribute(
    "aria-disabled",
    !sharing && (!client.mayPublish("screen") || !navigator.mediaDevices?.getDisplayMedia),
  );
  $("self-tile").classList.toggle("no-video", !hasCam || camMuted);
  $("self-tile").querySelector(".avatar").textContent = initials(joinedName);
  const selfCaption = `${joinedName} (you)${hasMic && !micMuted ? "" : " · muted"}`;
  $("self-name").textContent = selfCaption;
  updateHandButton();
}

function updateHandButton() {
  if (!client) return;
  const raised = !!client.me && client.handQueue.includes(client.me.id);
  const pos = raised ? client.handQueue.indexOf(client.me.id) + 1 : 0;
  setLabel(raiseHand, raised ? `Lower hand (${ordinal(pos)} in queue)` : "Raise hand");
  raiseHand.setAttribute("aria-pressed", String(raised));
}

const ordinal = (n) => `${n}${["th", "st", "nd", "rd"][(n % 100 > 10 && n % 100 < 14) || n % 10 > 3 ? 0 : n % 10]}`;

/** How the microphone and camera buttons differ. */
const DEVICES = {
  microphone: {
    label: "Microphone",
    forbidden: "You can speak once a host gives you the floor: raise your hand (H).",
    mutedText: "Microphone muted.",
    onText: "Microphone on.",
    get: async () =>
      (await navigator.mediaDevices.getUserMedia({ audio: audioConstraints() })).getAudioTracks()[0],
    started: () => meterOn(localStream),
  },
  camera: {
    label: "Camera",
    forbidden: "You may not show your camera in this meeting now.",
    mutedText: "Camera off.",
    onText: "Camera on.",
    get: async () =>
      (await navigator.mediaDevices.getUserMedia({ video: videoConstraints() })).getVideoTracks()[0],
    started: (track) => attachVideo(preview, track),
  },
};

/** Mutes/unmutes a published microphone or camera, or publishes it when allowed. */
async function toggleDevice(source) {
  if (!client || client.state !== "joined") return;
  const d = DEVICES[source];
  if (!client.publishing(source)) {
    if (!client.mayPublish(source)) {
      setStatus(d.forbidden);
      return;
    }
    try {
      const track = await d.get();
      localStream ??= new MediaStream();
      localStream.addTrack(track);
      await client.addTrack(track, source);
      d.started(track);
    } catch (err) {
      setStatus(`${d.label} not available (${err.name || err.message}).`);
    }
    updateControls();
    return;
  }
  const muted = !client.isMuted(source);
  client.setMuted(source, muted);
  setStatus(muted ? d.mutedText : d.onText);
  updateControls();
}

const toggleMic = () => toggleDevice("microphone");
const toggleCamera = () => toggleDevice("camera");

async function toggleScreenShare() {
  if (!client || client.state !== "joined") return;
  if (screenStream) {
    stopScreenShare();
    return;
  }
  if (!client.mayPublish("screen")) {
    setStatus("You may not share your screen now.");
    return;
  }
  if (!navigator.mediaDevices?.getDisplayMedia) {
    setStatus("This browser cannot share the screen.");
    return;
  }
  try {
    screenStream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: true });
  } catch (err) {
    setStatus(`Screen share cancelled (${err.name || err.message}).`);
    return;
  }
  const video = screenStream.getVideoTracks()[0];
  const audio = screenStream.getAudioTracks()[0];
  video.addEventListener("ended", () => stopScreenShare());
  await client.addTrack(video, "screen");
  if (audio && client.mayPublish("screen_audio")) await client.addTrack(audio, "screen_audio");
  setStatus(audio ? "Sharing your screen with its sound." : "Sharing your screen.");
  updateControls();
}

function stopScreenShare() {
  if (!screenStream) return;
  screenStream = null;
  client?.removeTrack("screen");
  client?.removeTrack("screen_audio");
  setStatus("Screen share stopped.");
  updateControls();
}

function toggleHand() {
  if (!client || client.state !== "joined") return;
  const raised = client.handQueue.includes(client.me?.id);
  client.raiseHand(!raised);
  setStatus(raised ? "Hand lowered." : "Hand raised: the hosts see you in the speaker queue.");
}

function setPanel(which, open) {
  const panel = $(`${which}-panel`);
  const button = $(`toggle-${which}`);
  panel.hidden = !open;
  button.setAttribute("aria-expanded", String(open));
  if (which === "chat" && open) {
    chatUnread = 0;
    updateUnread();
  }
  $("side").hidden = ["people", "chat", "host"].every((w) => $(`${w}-panel`).hidden);
}

function togglePanel(which, focusId) {
  const open = $(`${which}-panel`).hidden;
  setPanel(which, open);
  if (open && focusId) $(focusId).focus();
}

// ---- the grid: active speaker, pages, subscriptions ----------------------------------------

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
  // Hidden pages get no animation frames; render anyway.
  setTimeout(() => {
    if (renderQueued) {
      renderQueued = false;
      render();
    }
  }, 200);
}

function initials(name) {
  return (name || "?").split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join("");
}

function currentPageSize() {
  if (pageSize > 0) return pageSize;
  const w = window.innerWidth;
  return w < 500 ? 4 : w < 900 ? 6 : 9;
}

/** Remote tracks (TrackInfo + received MediaStreamTrack) by participant. */
function tracksByParticipant() {
  const map = new Map();
  for (const t of client.roomTracks.values()) {
    const slot = map.get(t.participant_id) ?? {};
    slot[t.source] = { info: t, track: client.remote.get(t.id)?.track ?? null };
    map.set(t.participant_id, slot);
  }
  return map;
}

function pickActiveSpeaker(others, screens) {
  const now = Date.now();
  let loudest = null;
  let loudestLevel = SPEAKING_LEVEL;
  for (const p of others) {
    const l = levels.get(p.id) ?? 0;
    if (l > loudestLevel) {
      loudest = p.id;
      loudestLevel = l;
    }
  }
  const present = new Set(others.map((p) => p.id));
  if (pinned && !present.has(pinned)) pinned = null;
  if (activeSpeaker && !present.has(activeSpeaker)) activeSpeaker = null;
  if (loudest && loudest !== activeSpeaker) {
    const currentLevel = levels.get(activeSpeaker) ?? 0;
    if (!activeSpeaker || (now - activeSince > SPEAKER_HOLD_MS && currentLevel < loudestLevel * 0.7)) {
      activeSpeaker = loudest;
      activeSince = now;
    }
  }
  if (!activeSpeaker && others.length) {
    // Nobody has spoken yet: someone with video, else the first.
    const byP = tracksByParticipant();
    activeSpeaker = (others.find((p) => byP.get(p.id)?.camera) ?? others[0]).id;
    activeSince = now;
  }
  return activeSpeaker;
}

function render() {
  if (!client || meeting.hidden) return;
  const byP = tracksByParticipant();
  const others = [...client.participants.values()];
  const screens = others.filter((p) => byP.get(p.id)?.screen);
  const speaker = pickActiveSpeaker(others, screens);
  // The stage: whom the user pinned, else a screen share, else the active speaker.
  const stageKey = pinned ?? (screens.length ? `${screens[0].id}:screen` : speaker);
  // The grid: everyone else, cameras first, then in order of arrival.
  const order = new Map(others.map((p, i) => [p.id, i]));
  const rest = others
    .filter((p) => p.id !== stageKey)
    .sort((a, b) => {
      const va = byP.get(a.id)?.camera ? 0 : byP.get(a.id)?.microphone ? 1 : 2;
      const vb = byP.get(b.id)?.camera ? 0 : byP.get(b.id)?.microphone ? 1 : 2;
      return va - vb || order.get(a.id) - order.get(b.id);
    });
  const size = currentPageSize();
  const pages = Math.max(1, Math.ceil(rest.length / size));
  page = Math.min(Math.max(0, page), pages - 1);
  const onPage = rest.slice(page * size, page * size + size);

  // Tiles: stage first, then the page. Others get none (they are in the people list).
  const wanted = [];
  if (stageKey) {
    if (stageKey.endsWith(":screen")) {
      const pid = stageKey.slice(0, -":screen".length);
      // The sharer's camera stays in the grid like everyone else's.
      wanted.push({ key: stageKey, p: client.participants.get(pid), screen: true, stage: true });
    } else {
      wanted.push({ key: stageKey, p: client.participants.get(stageKey), stage: true });
    }
  }
  for (const p of onPage) wanted.push({ key: p.id, p });
  const keep = new Set(wanted.map((w) => w.key));
  for (const [key, tile] of tiles) {
    if (!keep.has(key)) {
      tile.remove();
      tiles.delete(key);
    }
  }
  let prev = $("self-tile");
  for (const w of wanted) {
    if (!w.p) continue;
    const tile = renderTile(w, byP.get(w.p.id) ?? {});
    if (w.stage) {
      if (grid.firstElementChild !== tile) grid.prepend(tile);
    } else if (prev.nextElementSibling !== tile) {
      prev.after(tile);
    }
    if (!w.stage) prev = tile;
  }

  // Subscriptions: only the video of visible tiles is forwarded.
  const visibleVideo = new Set();
  for (const w of wanted) {
    const slot = byP.get(w.p?.id) ?? {};
    const src = w.screen ? slot.screen : slot.camera;
    if (src) visibleVideo.add(src.info.id);
  }
  const updates = [];
  for (const t of client.roomTracks.values()) {
    if (t.kind !== "video" || t.participant_id === client.me?.id) continue;
    updates.push({ track_id: t.id, paused: !visibleVideo.has(t.id) });
  }
  client.setSubscription(updates);

  // Audio: every remote audio track plays, whether or not its tile is shown.
  renderAudio();

  $("pager").hidden = pages <= 1;
  $("page-label").textContent = `Page ${page + 1} of ${pages}`;
  $("page-prev").disabled = page === 0;
  $("page-next").disabled = page >= pages - 1;
  lastLayout = {
    stage: stageKey,
    page,
    pages,
    pageSize: size,
    visible: wanted.map((w) => w.key),
    paused: updates.filter((u) => u.paused).map((u) => u.track_id),
  };
  grid.classList.toggle("has-stage", !!stageKey);
  renderPeople(byP);
}

function renderTile(w, slot) {
  let tile = tiles.get(w.key);
  if (!tile) {
    tile = el("figure", { class: "tile", "data-participant-id": w.p.id });
    const video = el("video", { muted: true, playsInline: true, autoplay: true });
    video.setAttribute("muted", "");
    video.setAttribute("playsinline", "");
    video.setAttribute("autoplay", "");
    tile.append(video, el("div", { class: "avatar", "aria-hidden": "true" }), el("figcaption"));
    tiles.set(w.key, tile);
  }
  const p = w.p;
  const src = w.screen ? slot.screen : slot.camera;
  const track = src && !src.info.muted ? src.track : null;
  attachVideo(tile.querySelector("video"), track);
  tile.classList.toggle("no-video", !track);
  tile.classList.toggle("stage", !!w.stage);
  tile.classList.toggle("screen", !!w.screen);
  tile.classList.toggle("speaking", !w.screen && (levels.get(p.id) ?? 0) > SPEAKING_LEVEL);
  tile.querySelector(".avatar").textContent = initials(p.name);
  const micMuted = !!slot.microphone && slot.microphone.info.muted;
  const hand = client.handQueue.includes(p.id) ? " · hand raised" : "";
  const label = w.screen
    ? `${p.name}'s screen`
    : `${p.name || p.identity || p.id}${micMuted ? " (muted)" : ""}${hand}`;
  tile.querySelector("figcaption").textContent = label;
  const role = pinned === p.id ? ", pinned" : ", active speaker";
  tile.setAttribute("aria-label", w.stage && !w.screen ? `${label}${role}` : label);
  return tile;
}

function attachVideo(video, track) {
  const current = video.srcObject?.getTracks()[0] ?? null;
  if (current === track) return;
  video.srcObject = track ? new MediaStream([track]) : null;
  if (track) video.play().catch(() => {});
}

function renderAudio() {
  const sink = $("audio-sink");
  const want = new Set();
  for (const r of client.remote.values()) {
    if (r.kind !== "audio") continue;
    want.add(r.track_id);
    let audio = audioEls.get(r.track_id);
    if (!audio) {
      audio = el("audio", { autoplay: true });
      audio.setAttribute("autoplay", "");
      audio.dataset.audioFor = r.participant_id;
      audio.dataset.trackId = r.track_id;
      if (speakerId && audio.setSinkId) audio.setSinkId(speakerId).catch(() => {});
      sink.append(audio);
      audioEls.set(r.track_id, audio);
    }
    audio.dataset.audioFor = r.participant_id;
    const current = audio.srcObject?.getTracks()[0];
    if (current !== r.track) {
      audio.srcObject = new MediaStream([r.track]);
      audio.play().catch(() => {});
    }
  }
  for (const [id, audio] of audioEls) {
    if (!want.has(id)) {
      audio.srcObject = null;
      audio.remove();
      audioEls.delete(id);
    }
  }
}

// ---- people list ---------------------------------------------------------------------------

function badgesFor(p) {
  const out = [];
  if (p.is_host) out.push(["host", "host"]);
  if (p.role === "member") out.push(["member", "member"]);
  if (p.role === "guest") out.push(["guest", p.invited_by ? `guest of ${p.invited_by}` : "guest"]);
  if (p.role === "host" && !p.is_host) out.push(["host", "host"]);
  return out;
}

function renderPeople(byP) {
  const list = $("people");
  // Do not rebuild the list under an open menu; closing it re-renders.
  if (openMenu) return;
  const me = client.me;
  const everyone = me ? [me, ...client.participants.values()] : [...client.participants.values()];
  const q = peopleFilter.trim().toLowerCase();
  const shown = q
    ? everyone.filter((p) => `${p.name} ${p.identity} ${p.invited_by ?? ""}`.toLowerCase().includes(q))
    : everyone;
  $("people-title").textContent = `People (${everyone.length})`;
  const isHost = !!client.permissions?.is_host;
  const items = [];
  const limit = 300; // a very long list is searched rather than scrolled
  for (const p of shown.slice(0, limit)) {
    const self = p.id === me?.id;
    const slot = byP.get(p.id) ?? {};
    const speaking = self ? selfLevel > SPEAKING_LEVEL * 4 : (levels.get(p.id) ?? 0) > SPEAKING_LEVEL;
    const mic = slot.microphone;
    const li = el("li", { class: `person${speaking ? " speaking" : ""}`, "data-participant-id": p.id });
    li.append(
      el("span", {
        class: "speak-dot",
        role: "img",
        "aria-label": speaking ? "speaking" : "not speaking",
        title: speaking ? "speaking" : "",
      }),
      el("span", { class: "person-name", text: `${p.name}${self ? " (you)" : ""}` }),
    );
    for (const [cls, text] of badgesFor(p)) li.append(el("span", { class: `badge ${cls}`, text }));
    const qi = client.handQueue.indexOf(p.id);
    if (qi >= 0) li.append(el("span", { class: "badge hand", text: `hand #${qi + 1}`, title: "hand raised" }));
    if (!self && mic) li.append(el("span", { class: "badge", text: mic.info.muted ? "muted" : "mic on" }));
    if (!self && slot.screen) li.append(el("span", { class: "badge", text: "sharing screen" }));
    if (!self && p.can_publish === false && client.roomState?.listener_mode) {
      li.append(el("span", { class: "badge dim", text: "listening" }));
    }
    if (!self) {
      li.append(el("button", {
        type: "button",
        class: "secondary small pin-button",
        "aria-pressed": String(pinned === p.id),
        "aria-label": `Pin ${p.name} to the main view`,
        text: pinned === p.id ? "Unpin" : "Pin",
        onclick: () => {
          pinned = pinned === p.id ? null : p.id;
          page = 0;
          setStatus(pinned ? `${p.name} is pinned to the main view.` : "The main view follows the active speaker again.");
          render();
        },
      }));
    }
    if (isHost && !self) {
      const btn = el("button", {
        type: "button",
        class: "secondary small menu-button",
        "aria-haspopup": "menu",
        "aria-expanded": "false",
        "aria-label": `Actions for ${p.name}`,
        text: "⋯",
        onclick: (ev) => toggleMenu(p.id, ev.currentTarget),
      });
      li.append(btn);
    }
    items.push(li);
  }
  if (shown.length > limit) items.push(el("li", { class: "hint", text: `…and ${shown.length - limit} more: search to find them.` }));
  if (!shown.length) items.push(el("li", { class: "hint", text: "Nobody matches." }));
  // Rebuild only when something other than who is speaking changed, so that a screen
  // reader's place in the list survives; speaking dots are updated in place.
  const signature = items.map((li) => (li.dataset.participantId ?? "") + li.textContent + (li.querySelector(".pin-button")?.getAttribute("aria-pressed") ?? "")).join("|") + isHost;
  if (signature === lastPeopleSignature && list.children.length === items.length) {
    items.forEach((li, i) => {
      const old = list.children[i];
      const dot = li.querySelector(".speak-dot");
      if (!dot) return;
      old.classList.toggle("speaking", li.classList.contains("speaking"));
      const oldDot = old.querySelector(".speak-dot");
      if (oldDot && oldDot.getAttribute("aria-label") !== dot.getAttribute("aria-label")) {
        oldDot.setAttribute("aria-label", dot.getAttribute("aria-label"));
        oldDot.title = dot.title;
      }
    });
    return;
  }
  lastPeopleSignature = signature;
  const focused = document.activeElement;
  const focusedLabel = list.contains(focused) ? focused.getAttribute("aria-label") : null;
  list.replaceChildren(...items);
  if (focusedLabel) list.querySelector(`[aria-label="${CSS.escape(focusedLabel)}"]`)?.focus();
}
let lastPeopleSignature = "";

// ---- moderation menu -----------------------------------------------------------------------

function closeMenu(refocus = false) {
  if (!openMenu) return;
  const { menu, button } = openMenu;
  menu.remove();
  button.setAttribute("aria-expanded", "false");
  openMenu = null;
  if (refocus) button.focus();
  scheduleRender();
}

function toggleMenu(pid, button) {
  if (openMenu?.pid === pid) return closeMenu(true);
  closeMenu();
  const p = client.participants.get(pid);
  if (!p) return;
  const slot = tracksByParticipant().get(pid) ?? {};
  const act = (label, fn, cls) =>
    el("button", {
      type: "button",
      role: "menuitem",
      class: cls || "",
      text: label,
      onclick: () => {
        closeMenu(true);
        fn();
      },
    });
  const items = [];
  const host = (action, extra = {}) => hostAct(action, { participant_id: pid, ...extra });
  if (!p.is_host) {
    if (p.can_publish && client.roomState?.listener_mode) {
      items.push(act("Take the floor back", () => host("take_floor")));
    } else if (!p.can_publish || client.roomState?.listener_mode) {
      items.push(act("Give the floor", () => host("give_floor")));
    }
  }
  items.push(act("Mute", () => host("mute")));
  items.push(act("Ask to unmute", () => host("ask_unmute")));
  if (slot.camera) items.push(act("Turn camera off", () => host("camera_off")));
  if (slot.screen) items.push(act("Stop screen share", () => host("stop_screen_share")));
  if (!p.is_host) items.push(act("Make host", () => confirmThen(`Make ${p.name} a host of this meeting?`, () => host("make_host"))));
  items.push(act("Remove from meeting…", () => confirmThen(
    `Remove ${p.name} from the meeting?`,
    (bar) => host("remove", { bar }),
    { withBar: true },
  ), "danger-text"));
  const menu = el("div", { class: "menu", role: "menu", "aria-label": `Actions for ${p.name}` }, ...items);
  menu.addEventListener("keydown", (ev) => {
    const buttons = [...menu.querySelectorAll("[role=menuitem]")];
    const i = buttons.indexOf(document.activeElement);
    if (ev.key === "Escape") {
      ev.preventDefault();
      ev.stopPropagation();
      closeMenu(true);
    } else if (ev.key === "ArrowDown") {
      ev.preventDefault();
      buttons[(i + 1) % buttons.length].focus();
    } else if (ev.key === "ArrowUp") {
      ev.preventDefault();
      buttons[(i - 1 + buttons.length) % buttons.length].focus();
    } else if (ev.key === "Tab") {
      closeMenu();
    }
  });
  button.after(menu);
  button.setAttribute("aria-expanded", "true");
  openMenu = { pid, menu, button };
  menu.querySelector("[role=menuitem]")?.focus();
}

function confirmThen(text, fn, { withBar = false } = {}) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-bar-row").hidden = !withBar;
  $("confirm-bar").checked = false;
  dialog.returnValue = "";
  const onClose = () => {
    dialog.removeEventListener("close", onClose);
    if (dialog.returnValue === "ok") fn($("confirm-bar").checked);
  };
  dialog.addEventListener("close", onClose);
  dialog.showModal();
  $("confirm-cancel").focus();
}

// ---- host panel ----------------------------------------------------------------------------

function updateHostVisibility() {
  const isHost = !!client?.permissions?.is_host;
  const wasHidden = $("toggle-host").hidden;
  $("toggle-host").hidden = !isHost;
  if (isHost && wasHidden) setPanel("host", !matchMedia("(max-width: 700px)").matches);
  if (!isHost) setPanel("host", false);
  updateHostPanel();
}

function nameOf(id) {
  if (id === client?.me?.id) return `${client.me.name} (you)`;
  return client?.participants.get(id)?.name ?? id;
}

function updateHostPanel() {
  if (!client || !client.permissions?.is_host) return;
  const queue = client.handQueue;
  const q = $("queue");
  q.replaceChildren(...queue.map((id, i) => {
    const name = nameOf(id);
    const move = (delta) => {
      const order = [...queue];
      const j = i + delta;
      if (j < 0 || j >= order.length) return;
      [order[i], order[j]] = [order[j], order[i]];
      hostAct("reorder_queue", { order });
    };
    return el("li", { "data-participant-id": id },
      el("span", { class: "person-name", text: name }),
      el("span", { class: "button-row" },
        el("button", { type: "button", class: "small", "aria-label": `Give the floor to ${name}`, text: "Give floor",
          onclick: () => hostAct("give_floor", { participant_id: id }) }),
        el("button", { type: "button", class: "secondary small", "aria-label": `Move ${name} up`, text: "↑",
          disabled: i === 0, onclick: () => move(-1) }),
        el("button", { type: "button", class: "secondary small", "aria-label": `Move ${name} down`, text: "↓",
          disabled: i === queue.length - 1, onclick: () => move(1) }),
      ));
  }));
  $("queue-empty").hidden = queue.length > 0;
  $("clear-queue").hidden = queue.length === 0;

  const rs = client.roomState ?? {};
  const floor = [...client.participants.values()].filter(
    (p) => !p.is_host && p.can_publish && (rs.listener_mode || givenFloor.has(p.identity)),
  );
  $("floor-list").replaceChildren(...floor.map((p) =>
    el("li", {},
      el("span", { class: "person-name", text: p.name }),
      el("button", { type: "button", class: "secondary small", "aria-label": `Take the floor back from ${p.name}`,
        text: "Take floor back", onclick: () => {
          givenFloor.delete(p.identity);
          hostAct("take_floor", { participant_id: p.id });
        } }))));
  $("floor-empty").hidden = floor.length > 0;

  const lock = $("lock-room");
  lock.setAttribute("aria-pressed", String(!!rs.locked));
  lock.textContent = rs.locked ? "Unlock room" : "Lock room";
  const lobby = $("lobby-toggle");
  lobby.setAttribute("aria-pressed", String(!!rs.lobby));
  lobby.textContent = rs.lobby ? "Turn lobby off" : "Turn lobby on";
  const flags = [];
  if (rs.locked) flags.push("locked");
  if (rs.lobby) flags.push("lobby on");
  if (rs.listener_mode) flags.push("listener mode");
  $("room-flags").textContent = `${client.participants.size + 1} in the room${flags.length ? ` · ${flags.join(" · ")}` : ""}.`;

  const waiting = client.lobbyWaiting;
  $("waiting-list").replaceChildren(...waiting.map((p) =>
    el("li", { "data-participant-id": p.id },
      el("span", { class: "person-name", text: p.name }),
      ...badgesFor(p).map(([cls, text]) => el("span", { class: `badge ${cls}`, text })),
      el("span", { class: "button-row" },
        el("button", { type: "button", class: "small", "aria-label": `Admit ${p.name}`, text: "Admit",
          onclick: () => hostAct("admit", { participant_id: p.id }) }),
        el("button", { type: "button", class: "secondary small", "aria-label": `Deny ${p.name}`, text: "Deny",
          onclick: () => hostAct("deny", { participant_id: p.id }) })))));
  $("waiting-empty").hidden = waiting.length > 0;
  $("waiting-list-title").textContent = waiting.length ? `Lobby (${waiting.length} waiting)` : "Lobby";
}

/** Identities this host gave the floor to (outside listener mode the records cannot tell). */
const givenFloor = new Set();

/** Sends a host action (and remembers whom we gave the floor, for the floor list). */
function hostAct(action, fields = {}) {
  if (!client) return;
  if (action === "give_floor") {
    const p = client.participants.get(fields.participant_id);
    if (p) givenFloor.add(p.identity);
  }
  client.host(action, fields);
}

// ---- chat ------------------------------------------------------------------------------

function addChat({ participant_id, name, from_host, text }) {
  const log = $("chat-log");
  const self = participant_id === client?.me?.id;
  const li = el("li", { class: `chat-msg${from_host ? " from-host" : ""}${self ? " self" : ""}` },
    el("span", { class: "chat-name", text: self ? `${name} (you)` : name }),
    from_host ? el("span", { class: "badge host", text: "host" }) : null,
    el("span", { class: "visually-hidden", text: ": " }),
    el("span", { class: "chat-text", text }),
  );
  log.append(li);
  while (log.children.length > 500) log.firstElementChild.remove();
  log.scrollTop = log.scrollHeight;
  if ($("chat-panel").hidden && !self) {
    chatUnread += 1;
    updateUnread();
  }
}

function updateUnread() {
  const badge = $("chat-unread");
  badge.hidden = chatUnread === 0;
  badge.textContent = chatUnread ? `${chatUnread} new` : "";
}

// ---- statistics: speaking levels, connection quality ------------------------------------

function startStatsLoop() {
  stopStatsLoop();
  statsTimer = setInterval(updateLevels, 400);
  qualityTimer = setInterval(updateQuality, 2000);
}

function stopStatsLoop() {
  clearInterval(statsTimer);
  clearInterval(qualityTimer);
  statsTimer = qualityTimer = null;
}

async function updateLevels() {
  if (!client || client.state !== "joined") return;
  let s;
  try {
    s = await client.stats();
  } catch {
    return;
  }
  const now = new Map();
  for (const x of s) {
    if (x.kind !== "audio") continue;
    const muted = client.roomTracks.get(x.track_id)?.muted;
    const level = muted ? 0 : x.audioLevel;
    now.set(x.participant_id, Math.max(now.get(x.participant_id) ?? 0, level));
  }
  let changed = false;
  for (const id of new Set([...levels.keys(), ...now.keys()])) {
    const before = levels.get(id) ?? 0;
    const after = before * 0.5 + (now.get(id) ?? 0) * 0.5;
    if ((before > SPEAKING_LEVEL) !== (after > SPEAKING_LEVEL)) changed = true;
    if (after < 0.001 && !now.has(id)) levels.delete(id);
    else levels.set(id, after);
  }
  const prevSpeaker = activeSpeaker;
  if (changed) scheduleRender();
  else {
    // The active speaker may still change while everyone keeps talking.
    pickActiveSpeaker([...client.participants.values()], []);
    if (activeSpeaker !== prevSpeaker) scheduleRender();
  }
}

let lastCounts = null;
async function updateQuality() {
  if (!client || client.state !== "joined") return;
  const q = await client.connectionStats().catch(() => null);
  if (!q) return;
  let loss = 0;
  if (lastCounts) {
    const rec = q.packetsReceived - lastCounts.packetsReceived;
    const lost = q.packetsLost - lastCounts.packetsLost;
    loss = rec + lost > 0 ? Math.max(0, lost) / (rec + lost) : 0;
  }
  lastCounts = q;
  const rtt = q.rtt;
  let level = "good";
  if (q.state !== "connected") level = q.state === "connecting" || q.state === "new" ? "connecting" : "poor";
  else if ((rtt ?? 0) > 400 || loss > 0.08) level = "poor";
  else if ((rtt ?? 0) > 150 || loss > 0.02) level = "fair";
  lastQuality = { level, rtt, loss, state: q.state };
  const node = $("conn-quality");
  node.hidden = false;
  node.className = `conn-quality ${level}`;
  const rttText = rtt != null ? `${Math.round(rtt)} ms` : "–";
  node.textContent = `Connection: ${level}`;
  node.title = `Round trip ${rttText}, packet loss ${(loss * 100).toFixed(1)}%`;
  node.setAttribute("aria-label", `Connection ${level}: round trip ${rttText}, packet loss ${(loss * 100).toFixed(1)} percent`);
}

// ---- wiring ----------------------------------------------------------------------------

form.addEventListener("submit", (e) => {
  e.preventDefault();
  join();
});
$("camera").addEventListener("change", startPreview);
$("microphone").addEventListener("change", startPreview);
$("camera-select").addEventListener("change", startPreview);
$("mic-select").addEventListener("change", startPreview);
$("speaker-select").addEventListener("change", () => {
  speakerId = $("speaker-select").value;
  for (const a of audioEls.values()) a.setSinkId?.(speakerId).catch(() => {});
});
$("speaker-test").addEventListener("click", testSpeakers);
$("leave").addEventListener("click", leave);
$("waiting-leave").addEventListener("click", () => {
  leave();
  setStatus("You left the lobby.");
});
muteMic.addEventListener("click", toggleMic);
muteCamera.addEventListener("click", toggleCamera);
shareScreen.addEventListener("click", toggleScreenShare);
raiseHand.addEventListener("click", toggleHand);
$("toggle-people").addEventListener("click", () => togglePanel("people", "people-search"));
$("toggle-chat").addEventListener("click", () => togglePanel("chat", "chat-input"));
$("toggle-host").addEventListener("click", () => togglePanel("host"));
$("page-prev").addEventListener("click", () => {
  page -= 1;
  render();
});
$("page-next").addEventListener("click", () => {
  page += 1;
  render();
});
$("people-search").addEventListener("input", (e) => {
  peopleFilter = e.target.value;
  render();
});
$("chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("chat-input");
  const text = input.value.trim();
  if (!text || !client) return;
  if (client.permissions && !client.permissions.can_chat) {
    setStatus("You may not write in the chat in this meeting.");
    return;
  }
  client.sendChat(text.slice(0, 2000));
  input.value = "";
});
$("clear-queue").addEventListener("click", () => hostAct("clear_queue"));
$("mute-all").addEventListener("click", () => {
  hostAct("mute_all");
  setStatus("Muted everyone except the hosts.");
});
$("lock-room").addEventListener("click", () => {
  const locked = !client?.roomState?.locked;
  hostAct("lock", { locked });
});
$("lobby-toggle").addEventListener("click", () => {
  const enabled = !client?.roomState?.lobby;
  hostAct("lobby", { enabled });
});
$("end-meeting").addEventListener("click", () =>
  confirmThen("End the meeting for everyone? Everybody will be disconnected.", () => hostAct("end_meeting")));
document.addEventListener("click", (e) => {
  if (openMenu && !openMenu.menu.contains(e.target) && e.target !== openMenu.button) closeMenu();
});
// Keyboard shortcuts (not while typing). Single-key shortcuts can be turned off on the
// pre-join screen (they get in the way of some screen readers' and voice control's keys).
const shortcutsBox = $("shortcuts");
try {
  shortcutsBox.checked = localStorage.getItem("plenary.shortcuts") !== "off";
} catch {}
shortcutsBox.addEventListener("change", () => {
  try {
    localStorage.setItem("plenary.shortcuts", shortcutsBox.checked ? "on" : "off");
  } catch {}
  showShortcutHints();
});
function showShortcutHints() {
  for (const k of document.querySelectorAll(".controls kbd")) k.hidden = !shortcutsBox.checked;
  for (const b of document.querySelectorAll(".controls [data-keys]")) {
    if (shortcutsBox.checked) b.setAttribute("aria-keyshortcuts", b.dataset.keys);
    else b.removeAttribute("aria-keyshortcuts");
  }
}
showShortcutHints();
document.addEventListener("keydown", (e) => {
  if (!shortcutsBox.checked) return;
  if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
  const t = e.target;
  if (t instanceof HTMLElement && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) return;
  if ($("confirm").open) return;
  if (meeting.hidden || !client) return;
  const key = e.key.toLowerCase();
  const actions = {
    m: toggleMic,
    v: toggleCamera,
    s: toggleScreenShare,
    h: toggleHand,
    c: () => togglePanel("chat", "chat-input"),
    p: () => togglePanel("people", "people-search"),
  };
  if (actions[key]) {
    e.preventDefault();
    actions[key]();
  }
});
window.addEventListener("resize", scheduleRender);

// ---- start-up ---------------------------------------------------------------------------

// ?room=x&name=y&camera=0&mic=0&grant=...&autojoin=1&host=1&publish=0&page_size=4
if (params.has("room")) $("room").value = params.get("room");
if (params.has("name")) $("name").value = params.get("name");
if (params.has("camera")) $("camera").checked = flag(params.get("camera"));
if (params.has("mic")) $("microphone").checked = flag(params.get("mic"));
if (params.has("grant")) $("grant").value = params.get("grant");

// An invitation hands its guest grant over in the fragment (never sent to a server);
// read it, then take it out of the address bar. The guest then picks devices and joins.
const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
if (fragment.has("grant")) {
  handedGrant = fragment.get("grant");
  for (const [k, v] of fragment) if (k !== "grant") params.set(k, v);
  if (fragment.has("room")) $("room").value = fragment.get("room");
  if (fragment.has("name")) $("name").value = fragment.get("name");
  if (fragment.has("camera")) $("camera").checked = flag(fragment.get("camera"));
  if (fragment.has("mic")) $("microphone").checked = flag(fragment.get("mic"));
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
$("join-hint").textContent =
  `In rooms of more than ${joinMutedAbove()} people you join with your microphone muted.`;
setStatus(
  info.dev_mode
    ? "Dev mode: anyone on this machine can join."
    : handedGrant
      ? "Your invitation is ready: check your camera and microphone, then join."
      : member
        ? "Ready."
        : signInConfigured
          ? "Sign in with your co-op's account to join."
          : "Ready.",
);
fillDevicePickers();
if (params.get("autojoin") === "1") join();
else startPreview();

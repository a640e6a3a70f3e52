// @ts-check
// Plenary's web client: the page's composition root. It owns the flow — pre-join, lobby,
// meeting, leaving — and wires the modules together:
//   client.js   protocol and media (no DOM)        state.js   the page's one state object
//   layout.js   what the view shows (pure)         grid.js    draws tiles, chips, audio
//   devices.js  cameras, microphones, speakers     controls.js the control bar (model pure)
//   people.js   People tab + moderation menu       host.js    Host tab
//   chat.js     Chat tab                            status.js  the status line (pure)
//   quality.js  connection quality (pure)          dom.js     DOM helpers
//   governance.js motions, votes, quorum (pure)    motions.js the motion card, host motions
//   path.js     is the media path alive (pure, used by client.js for ICE restarts)
// Devices are opened only when the person both wants and may use them: at join once the
// server has said what this participant may publish, or when a host gives the floor.

import { PlenaryClient } from "./client.js";
import { api, ApiError, messageOf } from "./api.js";
import { $, $input, $select, $button, $video, $dialog, el, attachVideo, confirmThen } from "./dom.js";
import { createState, freshView } from "./state.js";
import { NOTICE_MS } from "./status.js";
import { SPEAKING_LEVEL } from "./layout.js";
import {
  openDevices, openDevice, explainMediaError, listDevices, LevelMeter, playTestTone,
  canChooseSpeakers, setSink,
} from "./devices.js";
import { controlModel, applyControl } from "./controls.js";
import { renderGrid, clearGrid, setSpeakers, updateActiveSpeaker } from "./grid.js";
import { renderPeople, closeMenu, outsideMenu } from "./people.js";
import { renderHostPanel } from "./host.js";
import { addChat, showUnread, sendTyped, clearChat } from "./chat.js";
import { qualityLevel, lossBetween } from "./quality.js";
import { ruleFromForm, specFromForm } from "./governance.js";
import { renderGovernance, tickGovernance, resetGovernanceView } from "./motions.js";
import { rejoinDelay, mayRetryJoin, REJOIN_ATTEMPTS } from "./rejoin.js";

/**
 * @typedef {import("./client.js").Source} Source
 * @typedef {import("./client.js").Permissions} Permissions
 * @typedef {import("./client.js").LocalTrack} LocalTrack
 * @typedef {import("./state.js").Tab} Tab
 * @typedef {"microphone"|"camera"} Device
 */

/** Rooms above this size (or in listener mode) are joined with the microphone muted. */
const JOIN_MUTED_ABOVE = 20;
/** Error codes of refused votes and motions: said plainly, nothing changed. */
const GOVERNANCE_ERRORS = new Set([
  "invalid_motion", "unknown_motion", "motion_not_open", "motion_in_progress", "invalid_choice",
  "already_voted", "not_eligible",
]);

const S = createState();
const params = new URLSearchParams(location.search);
/** @param {string|null} v */
const flag = (v) => !(v === "0" || v === "false" || v === "no" || v === "off");

// ---- the status line and the banner --------------------------------------------------------

/** @type {any} */
let statusTimer = null;

/**
 * Says `text` under `key` (replacing that key's message); `ttl` > 0 makes it pass.
 * @param {string} key @param {string} text @param {number} [ttl]
 */
function say(key, text, ttl = 0) {
  S.status.set(key, text, Date.now(), ttl);
  showStatus();
}
/** A passing notice. @param {string} text */
const notice = (text) => say("notice", text, NOTICE_MS);
/** @param {string} key */
function unsay(key) {
  S.status.clear(key);
  showStatus();
}
function showStatus() {
  const now = Date.now();
  $("status").textContent = S.status.current(now);
  clearTimeout(statusTimer);
  const next = S.status.nextExpiry(now);
  if (next) statusTimer = setTimeout(showStatus, next - now + 10);
}

/**
 * @param {string} text
 * @param {[string, () => void, string?][]} [actions]
 * @param {string} [kind]
 */
function showBanner(text, actions = [], kind = "info") {
  $("banner-text").textContent = text;
  $("banner-actions").replaceChildren(...actions.map(([label, fn, cls]) =>
    el("button", { type: "button", class: cls || "secondary", text: label, onclick: fn })));
  $("banner").className = `banner ${kind}`;
  $("banner").hidden = false;
}
const hideBanner = () => {
  $("banner").hidden = true;
};

// ---- what tests and curious people can reach from the console ----------------------------

/** @type {any} */
const ui = {
  /** The current layout: stage, page, visible tiles, paused tracks, active speaker, pin. */
  layout: () => ({ ...(S.view.layout ?? {}), visible: visibleKeys(), activeSpeaker: S.view.activeSpeaker, pinned: S.view.pinned }),
  /** @param {number} n */
  setPageSize(n) {
    S.view.pageSize = n;
    S.view.page = 0;
    scheduleRender();
  },
  /** @param {number} n */
  goToPage(n) {
    S.view.page = n;
    scheduleRender();
  },
  levels: () => Object.fromEntries(S.levels),
  quality: () => S.quality,
  status: () => $("status").textContent,
  lastToneAt: 0,
  /** @type {any} */
  lastDenied: null,
  /** @type {any} */
  lastGovernanceError: null,
  /** Motions, our votes, the quorum and the speakers, as the page knows them. */
  governance: () => {
    const g = S.client?.gov;
    if (!g) return null;
    return { motions: [...g.motions.values()], myVotes: Object.fromEntries(g.myVotes), quorum: g.quorum, speaking: g.speaking };
  },
};
/** @type {any} */ (window).plenary = {
  get client() {
    return S.client;
  },
  get info() {
    return S.info;
  },
  async stats() {
    return S.client ? S.client.stats() : [];
  },
  join,
  leave,
  ui,
};

function visibleKeys() {
  const l = S.view.layout;
  if (!l) return [];
  return [...(l.stage ? [l.stage] : []), ...l.tiles];
}

// ---- server info, sign-in, grants ----------------------------------------------------------

async function loadInfo() {
  try {
    const res = await fetch("/api/info");
    if (res.ok) S.info = await res.json();
  } catch {
    // Leave the defaults: no dev mode.
  }
  $("dev-mode").hidden = !S.info.dev_mode;
  $("version").textContent = S.info.version ? `v${S.info.version}` : "";
  $("grant-field").hidden = !!S.info.dev_mode;
}

/** Loads the signed-in member, where sign-in is configured. Returns whether it is. */
async function loadMember() {
  if (!S.info.sign_in) return false;
  try {
    const res = await fetch("/api/me");
    if (res.ok) S.member = await res.json();
  } catch {}
  return true;
}

function joinMutedAbove() {
  const p = Number(params.get("muted_above"));
  if (params.has("muted_above") && Number.isFinite(p)) return p;
  return Number.isFinite(S.info.join_muted_above) ? Number(S.info.join_muted_above) : JOIN_MUTED_ABOVE;
}

/** @param {string} [wsUrl] */
function wsUrlFrom(wsUrl) {
  const url = new URL(wsUrl || "/rtc", location.href);
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  return url.href;
}

/** A grant for `room`: from an invitation, the member's session, dev mode, or the form. @param {string} room @param {string} name */
async function getGrant(room, name) {
  if (S.handedGrant) {
    // From an invitation page (or a backend), once: a grant is single-use.
    const grant = S.handedGrant;
    S.handedGrant = null;
    return { grant, ws_url: undefined };
  }
  if (S.member) {
    try {
      return await api("POST", "/api/grant", { room });
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        location.assign("/login");
        throw new Error("please sign in again");
      }
      throw err;
    }
  }
  if (S.info.dev_mode) {
    /** @type {any} */
    const body = { room, name, publish: params.has("publish") ? flag(params.get("publish")) : true };
    if (params.get("host") === "1") body.host = true;
    return api("POST", "/api/dev/grant", body);
  }
  const grant = $input("grant").value.trim();
  if (!grant) throw new Error("please sign in with your co-op's account first");
  return { grant, ws_url: undefined };
}

// ---- devices: presence, pickers, the preview ------------------------------------------------

const meter = new LevelMeter((level) => {
  S.selfLevel = level;
  /** @type {HTMLMeterElement} */ ($("mic-level")).value = level;
  const speaking = level > SPEAKING_LEVEL * 4;
  $("self-tile").classList.toggle("speaking", speaking);
  document.getElementById("self-chip")?.classList.toggle("speaking", speaking);
});

/** Checks which kinds of device exist and says so on the pre-join screen. */
async function refreshDevices() {
  const d = await listDevices();
  S.present = { microphone: d.audioinput.length > 0, camera: d.videoinput.length > 0 };
  /** @param {HTMLSelectElement} select @param {MediaDeviceInfo[]} list @param {string} fallback @param {string} current */
  const fill = (select, list, fallback, current) => {
    select.replaceChildren(...(list.length ? list : [{ deviceId: "", label: fallback }]).map((x, i) =>
      el("option", { value: x.deviceId, text: x.label || `${fallback} ${i + 1}` })));
    if ([...select.options].some((o) => o.value === current)) select.value = current;
    select.disabled = list.length === 0;
  };
  fill($select("mic-select"), d.audioinput, "No microphone", S.ids.microphone);
  fill($select("camera-select"), d.videoinput, "No camera", S.ids.camera);
  fill($select("speaker-select"), d.audiooutput, "Default speakers", S.ids.speaker);
  fill($select("set-mic"), d.audioinput, "No microphone", S.ids.microphone);
  fill($select("set-camera"), d.videoinput, "No camera", S.ids.camera);
  fill($select("set-speaker"), d.audiooutput, "Default speakers", S.ids.speaker);
  if (!canChooseSpeakers()) {
    $select("speaker-select").disabled = true;
    $select("set-speaker").disabled = true;
  }
  for (const dev of /** @type {Device[]} */ (["microphone", "camera"])) {
    if (!S.present[dev]) deviceNote(dev, `No ${dev} found: you can join to listen${dev === "camera" ? " and speak" : ""}.`);
  }
  updatePrejoinChecks();
  // Nothing to check without a camera or a microphone.
  for (const id of ["preview-toggle", "waiting-preview"]) {
    $(id).setAttribute("aria-disabled", String(!S.present.microphone && !S.present.camera && !previewing()));
  }
  updateControls();
}

/** A note under a device's checkbox on the pre-join screen ("" hides it). @param {Device} dev @param {string} text */
function deviceNote(dev, text) {
  const note = $(`${dev}-note`);
  note.textContent = text;
  note.hidden = !text;
}

/** Unusable devices are unticked and disabled, so the form says what will happen. */
function updatePrejoinChecks() {
  for (const dev of /** @type {Device[]} */ (["microphone", "camera"])) {
    const box = $input(dev);
    box.disabled = !S.present[dev];
    box.checked = S.present[dev] && S.want[dev];
  }
}

/** The preview: tracks opened on request, shown in one of the preview boxes. */
const preview = {
  /** @type {{microphone?: MediaStreamTrack, camera?: MediaStreamTrack}} */
  tracks: {},
  /** @type {HTMLVideoElement|null} */
  video: null,
  seq: 0,
};

/** Opens the wanted devices and shows them in `video`. @param {HTMLVideoElement} video */
async function startPreview(video) {
  const seq = ++preview.seq;
  stopPreview();
  const want = { microphone: S.want.microphone && S.present.microphone, camera: S.want.camera && S.present.camera };
  if (!want.microphone && !want.camera) {
    notice(S.present.microphone || S.present.camera
      ? "Tick “Microphone on” or “Camera on” to check them."
      : "This device has no camera and no microphone: you can join to listen.");
    return;
  }
  const { tracks, errors } = await openDevices(want, S.ids);
  if (seq !== preview.seq) {
    for (const t of Object.values(tracks)) t.stop();
    return;
  }
  preview.tracks = tracks;
  preview.video = video;
  attachVideo(video, tracks.camera ?? null);
  meter.attach(tracks.microphone ?? null);
  reportDeviceErrors(errors);
  await refreshDevices();
  showPreviewState();
}

function stopPreview() {
  for (const t of Object.values(preview.tracks)) t.stop();
  preview.tracks = {};
  if (preview.video) attachVideo(preview.video, null);
  preview.video = null;
  if (!S.client || S.client.state !== "joined") meter.attach(null);
  showPreviewState();
}

function previewing() {
  return Object.values(preview.tracks).some((t) => t.readyState === "live");
}

function showPreviewState() {
  const on = previewing();
  for (const id of ["preview-toggle", "waiting-preview"]) {
    const b = $(id);
    b.setAttribute("aria-pressed", String(on));
    b.textContent = on ? "Stop checking" : "Check camera and microphone";
  }
  $("preview-off").hidden = !!preview.tracks.camera;
  $("waiting-preview-off").hidden = !!preview.tracks.camera;
}

/** @param {HTMLVideoElement} video */
function togglePreview(video) {
  if (previewing()) stopPreview();
  else startPreview(video);
}

/**
 * Says what went wrong with each device, on the pre-join screen and the status line;
 * returns the sentences ("" when nothing went wrong).
 * @param {import("./devices.js").Failures} errors
 */
function reportDeviceErrors(errors) {
  const texts = [];
  for (const dev of /** @type {Device[]} */ (["microphone", "camera"])) {
    const err = errors[dev];
    if (!err) continue;
    const text = explainMediaError(dev, err);
    deviceNote(dev, text);
    texts.push(text);
  }
  if (texts.length) say("devices", `${texts.join(" ")} You can still join to listen.`);
  else unsay("devices");
  return texts.join(" ");
}

/** What went wrong with the devices at join, said again once in the meeting. */
let joinTrouble = "";

/**
 * Called by the client once the server has said what we may publish: opens only what the
 * person wants and may send, reusing the preview's tracks where it can.
 * @param {Permissions} permissions
 * @returns {Promise<LocalTrack[]>}
 */
async function openMedia(permissions) {
  const may = (/** @type {Source} */ s) => permissions.can_publish.includes(s);
  const want = {
    microphone: S.want.microphone && S.present.microphone && may("microphone"),
    camera: S.want.camera && S.present.camera && may("camera"),
  };
  /** @type {{microphone?: MediaStreamTrack, camera?: MediaStreamTrack}} */
  const have = {};
  for (const dev of /** @type {Device[]} */ (["microphone", "camera"])) {
    const t = preview.tracks[dev];
    if (t && t.readyState === "live" && want[dev]) {
      have[dev] = t;
      delete preview.tracks[dev];
    }
  }
  stopPreview();
  const missing = { microphone: want.microphone && !have.microphone, camera: want.camera && !have.camera };
  joinTrouble = "";
  if (missing.microphone || missing.camera) {
    say("join", "Opening your camera and microphone…");
    const { tracks, errors } = await openDevices(missing, S.ids);
    Object.assign(have, tracks);
    joinTrouble = reportDeviceErrors(errors);
    unsay("devices");
  }
  const rs = S.client?.roomState;
  const large = !!rs && (rs.size > joinMutedAbove() || rs.listener_mode);
  /** @type {LocalTrack[]} */
  const out = [];
  if (have.microphone) out.push({ track: have.microphone, source: "microphone", muted: large });
  if (have.camera) out.push({ track: have.camera, source: "camera", muted: false });
  return out;
}

// ---- join / leave ------------------------------------------------------------------------

/**
 * Joining again after the server went away: attempts so far, the timer, the server's hint.
 * @type {{attempt: number, timer: any, hintMs: number|null}}
 */
const rejoin = { attempt: 0, timer: null, hintMs: null };

/** Schedules the next attempt to join again (or gives up after a while). @param {string} why */
function scheduleRejoin(why) {
  clearTimeout(rejoin.timer);
  if (rejoin.attempt >= REJOIN_ATTEMPTS) {
    rejoin.attempt = 0;
    const msg = `${why} It is not back yet: join again later.`;
    say("join", msg);
    showBanner(msg, [["Join again", () => join(), "primary"]], "warn");
    return;
  }
  const delay = rejoinDelay(rejoin.attempt, rejoin.hintMs);
  rejoin.attempt += 1;
  const secs = Math.max(1, Math.round(delay / 1000));
  say("join", `${why} Joining again in ${secs} seconds.`);
  showBanner(`${why} Joining again in ${secs} s…`, [
    ["Join now", () => join(), "primary"],
    ["Cancel", cancelRejoin, "secondary"],
  ], "warn");
  rejoin.timer = setTimeout(() => join(), delay);
}

function cancelRejoin() {
  clearTimeout(rejoin.timer);
  rejoin.timer = null;
  rejoin.attempt = 0;
  hideBanner();
  say("join", "Press Join when you want to go back in.");
}

async function join() {
  if (S.client && S.client.state !== "closed") return;
  clearTimeout(rejoin.timer);
  rejoin.timer = null;
  const name = $input("name").value.trim();
  const room = $input("room").value.trim();
  if (!name || !room) {
    say("join", "Please give your name and the room.");
    (name ? $input("room") : $input("name")).focus();
    return;
  }
  $button("join").disabled = true;
  hideBanner();
  try {
    say("join", "Getting a room grant…");
    const g = await getGrant(room, name);
    S.name = name;
    S.room = room;
    // `?relay=1`: media only through the TURN server, to check one works.
    const relayOnly = params.get("relay") === "1";
    const client = new PlenaryClient({ url: wsUrlFrom(g.ws_url), grant: g.grant, room, openMedia, relayOnly });
    S.client = client;
    wireClient(client);
    say("join", "Joining…");
    await client.join();
    rejoin.attempt = 0;
    rejoin.hintMs = null;
  } catch (err) {
    const e = /** @type {any} */ (err);
    console.warn("plenary: join failed:", e?.message ?? e);
    const msg = explainError(e.code) || `Could not join: ${e.message ?? e}`;
    stopPreview();
    showPrejoin();
    S.status.reset();
    // Coming back after a restart, or joining while the server drains: try again later.
    if ((rejoin.attempt > 0 || e.code === "shutting_down") && mayRetryJoin(e.code)) {
      scheduleRejoin(msg);
      return;
    }
    rejoin.attempt = 0;
    say("join", msg);
    if (["room_locked", "barred", "denied"].includes(e.code)) showBanner(msg, [], "warn");
  } finally {
    $button("join").disabled = false;
  }
}

/** @param {string|undefined} code */
function explainError(code) {
  /** @type {Record<string, string>} */
  const texts = {
    room_locked: "The room is locked: a host has closed it to newcomers.",
    barred: "A host removed you from this meeting; you cannot rejoin it.",
    denied: "A host did not let you in.",
    removed: "A host removed you from the meeting.",
    meeting_ended: "The meeting has ended.",
    replaced: "You joined this meeting from another window or device.",
    server_shutdown: "The server is shutting down.",
    shutting_down: "The server is restarting.",
    resume_failed: "Your place in the meeting could not be restored.",
    invalid_grant: "Your room grant is not valid (expired, already used, or for another room).",
    unreachable: "The server cannot be reached.",
  };
  return (code && texts[code]) || "";
}

/** @param {PlenaryClient} c */
function wireClient(c) {
  /** @param {string} type @param {(detail: any) => void} fn */
  const on = (type, fn) => c.addEventListener(type, (e) => {
    if (S.client === c) fn(/** @type {CustomEvent} */ (e).detail);
  });
  on("state", onState);
  on("participants", scheduleRender);
  on("tracks", scheduleRender);
  on("muted", scheduleRender);
  on("chat", (m) => addChat(S, m));
  on("hands", scheduleRender);
  on("permissions", onPermissions);
  on("room", scheduleRender);
  on("lobby", onLobby);
  on("host_muted", onHostMuted);
  on("asked_to_unmute", onAskedToUnmute);
  on("published", scheduleRender);
  on("video_paused", scheduleRender);
  on("dominant_speaker", scheduleRender);
  on("unpublished", onUnpublished);
  on("governance", onGovernance);
  const mediaBack = () => {
    if (!S.mediaTrouble) return;
    S.mediaTrouble = false;
    hideBanner();
    unsay("media");
    notice("Audio and video are connected.");
  };
  on("connection", (d) => {
    if (d.state !== "connected") return;
    updateQuality();
    mediaBack();
  });
  on("media_restored", mediaBack);
  on("ice_restart", () => {
    S.mediaTrouble = true;
    say("media", "The network changed: reconnecting audio and video…");
  });
  on("media_unreachable", () => {
    S.mediaTrouble = true;
    const text = "Audio and video cannot get through: this network seems to block the " +
      "meeting's media connection (UDP and TCP). You can still follow the chat. Try another " +
      "network (your phone's, say), or ask the meeting's organisers to set up a TURN server.";
    say("media", "Audio and video cannot get through on this network.");
    showBanner(text, [["Try again", () => {
      hideBanner();
      say("media", "Trying the media connection again…");
      c.retryMedia();
    }, "primary"]], "warn");
  });
  on("log", (d) => console.info("plenary:", d.message));
  on("going_away", (g) => {
    const secs = Math.max(1, Math.ceil(g.closes_in_ms / 1000));
    const msg = `The server is shutting down for a restart: this meeting closes in ${secs} s, and this page joins it again by itself.`;
    showBanner(msg, [], "warn");
    say("connection", msg);
  });
  on("error", ({ code, message }) => {
    if (GOVERNANCE_ERRORS.has(code)) {
      S.ballot.sending = false;
      ui.lastGovernanceError = { code, message, at: Date.now() };
      notice(message.charAt(0).toUpperCase() + message.slice(1));
      scheduleRender();
    } else if (code === "permission_denied") {
      notice(`Not allowed: ${message}`);
      ui.lastDenied = { code, message, at: Date.now() };
    } else if (code !== "resume_failed") {
      notice(explainError(code) || `Server: ${message}`);
    }
  });
}

function leave() {
  S.client?.leave();
  stopLocal();
  hideMeeting();
  showPrejoin();
  S.status.reset();
  say("join", "You left the meeting.");
}

function stopLocal() {
  stopScreenShare(false);
  stopPreview();
  meter.attach(null);
}

function showPrejoin() {
  $("meeting").hidden = true;
  $("waiting-room").hidden = true;
  $("prejoin").hidden = false;
  $("room-title").hidden = true;
  $("conn-quality").hidden = true;
}

function showMeeting() {
  stopPreview();
  $("prejoin").hidden = true;
  $("waiting-room").hidden = true;
  $("meeting").hidden = false;
  $("room-title").textContent = `Room: ${S.room}`;
  $("room-title").hidden = false;
  setSide(!matchMedia("(max-width: 700px)").matches, S.view.tab);
  updateControls();
  startStatsLoop();
  scheduleRender();
  // The Join button is gone: put the focus on the first control.
  if (!$("meeting").contains(document.activeElement)) $("mute-mic").focus({ preventScroll: true });
}

function hideMeeting() {
  $("meeting").hidden = true;
  clearGrid();
  S.levels.clear();
  S.view = freshView();
  S.givenFloor.clear();
  clearChat();
  showUnread(S);
  $("tab-host").hidden = true;
  $("toggle-host").hidden = true;
  closeMenu();
  stopStatsLoop();
  resetGovernanceView();
  S.ballot = { motionId: null, chosen: [], sending: false, dismissed: new Set() };
  $("motion-card").hidden = true;
  $("speaking-bar").hidden = true;
}

/** @param {{state: string, reason?: string}} d */
function onState({ state, reason }) {
  const client = S.client;
  if (!client) return;
  if (state === "waiting") {
    $("prejoin").hidden = true;
    $("meeting").hidden = true;
    $("waiting-room").hidden = false;
    $("waiting-room-name").textContent = S.room;
    $("room-title").textContent = `Room: ${S.room}`;
    $("room-title").hidden = false;
    say("join", "Waiting in the lobby until a host lets you in…");
    $("waiting-leave").focus();
  } else if (state === "joined") {
    unsay("join");
    if (reason === "resumed") {
      hideBanner();
      unsay("connection");
      notice("Reconnected: you are back in the meeting.");
      scheduleRender();
      return;
    }
    showMeeting();
    const rs = client.roomState;
    const large = !!rs && (rs.size > joinMutedAbove() || rs.listener_mode);
    let text = `In room “${client.room}” as ${client.me?.name ?? "you"}.`;
    if (client.publishing("microphone") && large) {
      text += ` You joined muted because the room is large (${rs?.size} people). Press M to unmute.`;
    } else if (!client.mayPublish("microphone")) {
      text += " You are listening: raise your hand (H) to ask for the floor.";
    } else if (!client.publishing("microphone")) {
      text += " You are listening.";
    }
    if (joinTrouble) text += ` ${joinTrouble}`;
    say("room", text);
    updateControls();
  } else if (state === "reconnecting") {
    showBanner("Connection lost: reconnecting…", [], "warn");
    say("connection", "Reconnecting…");
  } else if (state === "closed") {
    if (reason === "left") return;
    const wasIn = !!client.me;
    stopLocal();
    hideMeeting();
    showPrejoin();
    // Refused before the welcome: join() says why.
    if (!wasIn) return;
    S.status.reset();
    if (client.goingAway || reason === "server_shutdown") {
      // The server restarts: no resume survives that; join again with a fresh grant.
      rejoin.attempt = 0;
      rejoin.hintMs = client.goingAway?.reconnect_after_ms ?? null;
      scheduleRejoin("The server is restarting.");
      return;
    }
    const msg = explainError(reason) || `Disconnected (${reason}).`;
    say("join", msg);
    const canRetry = !["removed", "barred", "meeting_ended", "denied", "replaced"].includes(reason ?? "");
    showBanner(canRetry ? `${msg} You can join again with a new grant.` : msg,
      canRetry ? [["Join again", () => join(), "primary"]] : [], "warn");
  }
}

// ---- permissions, floor, moderation events -----------------------------------------------

/** @param {{permissions: Permissions, previous: Permissions|null}} d */
async function onPermissions({ permissions, previous }) {
  const client = S.client;
  if (!client) return;
  const isHost = !!permissions.is_host;
  const wasHost = !!previous?.is_host;
  $("toggle-host").hidden = !isHost;
  $("tab-host").hidden = !isHost;
  if (isHost && !wasHost && previous) notice("You are now a host of this meeting.");
  if (isHost && !wasHost && !matchMedia("(max-width: 700px)").matches) setSide(true, "host");
  if (!isHost && S.view.tab === "host") setSide(S.view.sideOpen, "people");
  if (!previous) {
    scheduleRender();
    return;
  }
  const had = previous.can_publish?.includes("microphone");
  const has = permissions.can_publish?.includes("microphone");
  if (!had && has) {
    // Given the floor: open the microphone now (never before), unless it is already sent.
    if (client.publishing("microphone")) client.setMuted("microphone", false);
    else if (S.present.microphone) {
      try {
        const track = await openDevice("microphone", S.ids.microphone);
        if (!client.mayPublish("microphone") || S.client !== client) {
          track.stop(); // the floor went away while the browser asked
          return;
        }
        await client.addTrack(track, "microphone");
        meter.attach(track);
      } catch (err) {
        say("floor", `You have the floor, but your microphone is not available: ${/** @type {Error} */ (err).message}`);
        updateControls();
        return;
      }
    } else {
      say("floor", "You have the floor, but this device has no microphone.");
      updateControls();
      return;
    }
    say("floor", "A host gave you the floor: your microphone is on. Press M to mute.");
  } else if (had && !has) {
    say("floor", "The floor was taken back: you are listening again.");
    if (S.screen && !permissions.can_publish?.includes("screen")) stopScreenShare();
  }
  updateControls();
  scheduleRender();
}

/** @param {{waiting: unknown[]}} d */
function onLobby({ waiting }) {
  if (waiting.length) say("lobby", `${waiting.length} waiting in the lobby.`);
  else unsay("lobby");
  scheduleRender();
}

/** @param {{source: Source}} d */
function onHostMuted({ source }) {
  if (source === "screen" || source === "screen_audio") {
    stopScreenShare(false);
    notice("A host stopped your screen share.");
  } else if (source === "camera") {
    notice("A host turned your camera off.");
  } else {
    notice("A host muted your microphone. You can unmute when you need to speak.");
  }
  updateControls();
  scheduleRender();
}

/** @param {{by: string}} d */
function onAskedToUnmute({ by }) {
  const who = S.client?.participants.get(by)?.name || "A host";
  showBanner(`${who} asks you to unmute your microphone.`, [
    ["Unmute", () => {
      hideBanner();
      if (S.client?.isMuted("microphone")) toggleDevice("microphone");
    }, "primary"],
    ["Not now", hideBanner],
  ]);
}

/** One of our tracks stopped (it was already stopped by the client). @param {{source: Source, reason: string}} d */
function onUnpublished({ source, reason }) {
  const what = source === "microphone" ? "microphone" : source === "camera" ? "camera" : "screen share";
  if (reason === "ended") {
    notice(`Your ${what} stopped working (disconnected?). Pick another one under Devices, or turn it on again.`);
    refreshDevices();
  } else if (reason === "refused") {
    notice(`The server did not accept your ${what}.`);
  } else if (reason === "not_allowed" && source === "microphone") {
    // Said by the joined message: "You are listening…".
  }
  if (source === "microphone") meter.attach(null);
  if (source === "screen") stopScreenShare(false);
  updateControls();
  scheduleRender();
}

// ---- controls ---------------------------------------------------------------------------

/** @param {Source} s */
const deviceState = (s) => {
  const c = /** @type {PlenaryClient} */ (S.client);
  return {
    publishing: c.publishing(s),
    muted: c.isMuted(s),
    may: c.mayPublish(s),
    present: s === "microphone" || s === "camera" ? S.present[s] : true,
  };
};

function updateControls() {
  const client = S.client;
  if (!client) return;
  const queue = client.handQueue;
  const position = client.me ? queue.indexOf(client.me.id) + 1 : 0;
  const model = controlModel({
    microphone: deviceState("microphone"),
    camera: deviceState("camera"),
    screen: { sharing: !!S.screen, may: client.mayPublish("screen"), supported: !!navigator.mediaDevices?.getDisplayMedia },
    hand: { raised: position > 0, position },
  });
  applyControl($("mute-mic"), model.microphone);
  applyControl($("mute-camera"), model.camera);
  applyControl($("share-screen"), model.screen);
  applyControl($("raise-hand"), model.hand);
  setIcon($("mute-mic"), model.microphone.pressed ? "mic-off" : "mic");
  setIcon($("mute-camera"), model.camera.pressed ? "camera-off" : "camera");
}

/** @param {HTMLElement} button @param {string} name */
function setIcon(button, name) {
  button.querySelector("use")?.setAttribute("href", `#i-${name}`);
}

/** Mutes/unmutes a published microphone or camera, or opens and publishes it when allowed. @param {Device} source */
async function toggleDevice(source) {
  const client = S.client;
  if (!client || client.state !== "joined") return;
  if (!client.publishing(source)) {
    const m = controlModel({
      microphone: deviceState("microphone"),
      camera: deviceState("camera"),
      screen: { sharing: false, may: false, supported: false },
      hand: { raised: false, position: 0 },
    })[source];
    if (m.disabled) {
      notice(m.hint);
      return;
    }
    try {
      const track = await openDevice(source, S.ids[source]);
      await client.addTrack(track, source);
      if (source === "microphone") meter.attach(track);
      S.want[source] = true;
    } catch (err) {
      notice(/** @type {Error} */ (err).message);
    }
    updateControls();
    scheduleRender();
    return;
  }
  const muted = !client.isMuted(source);
  client.setMuted(source, muted);
  notice(source === "microphone" ? (muted ? "Microphone muted." : "Microphone on.") : muted ? "Camera off." : "Camera on.");
  updateControls();
  scheduleRender();
}

async function toggleScreenShare() {
  const client = S.client;
  if (!client || client.state !== "joined") return;
  if (S.screen) {
    stopScreenShare();
    return;
  }
  if (!client.mayPublish("screen")) {
    notice("You may not share your screen now.");
    return;
  }
  if (!navigator.mediaDevices?.getDisplayMedia) {
    notice("This browser cannot share the screen.");
    return;
  }
  try {
    S.screen = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: true });
  } catch (err) {
    notice(`Screen share cancelled (${/** @type {Error} */ (err).name || /** @type {Error} */ (err).message}).`);
    return;
  }
  const video = S.screen.getVideoTracks()[0];
  const audio = S.screen.getAudioTracks()[0];
  await client.addTrack(video, "screen");
  if (audio) {
    if (client.mayPublish("screen_audio")) await client.addTrack(audio, "screen_audio");
    else audio.stop();
  }
  notice(audio && client.mayPublish("screen_audio") ? "Sharing your screen with its sound." : "Sharing your screen.");
  updateControls();
}

function stopScreenShare(tell = true) {
  if (!S.screen) return;
  const stream = S.screen;
  S.screen = null;
  const client = S.client;
  if (client?.publishing("screen")) client.removeTrack("screen");
  if (client?.publishing("screen_audio")) client.removeTrack("screen_audio");
  for (const t of stream.getTracks()) t.stop();
  if (tell) notice("Screen share stopped.");
  updateControls();
}

function toggleHand() {
  const client = S.client;
  if (!client || client.state !== "joined") return;
  const raised = !!client.me && client.handQueue.includes(client.me.id);
  client.raiseHand(!raised);
  notice(raised ? "Hand lowered." : "Hand raised: the hosts see you in the speaker queue.");
}

/** Sends a host action (and remembers whom we gave the floor, for the floor list). @param {string} action @param {any} [fields] */
function hostAct(action, fields = {}) {
  const client = S.client;
  if (!client) return;
  if (action === "give_floor") {
    const p = client.participants.get(fields.participant_id);
    if (p) S.givenFloor.add(p.identity);
  } else if (action === "take_floor") {
    const p = client.participants.get(fields.participant_id);
    if (p) S.givenFloor.delete(p.identity);
  }
  client.host(action, fields);
}

// ---- governance: votes, motions, quorum, minutes ------------------------------------------

/** A governance message arrived (client.gov has it already). @param {any} msg */
function onGovernance(msg) {
  if (msg.type === "vote_recorded") {
    S.ballot.sending = false;
    S.ballot.chosen = [];
  } else if (msg.type === "speaker_time_up") {
    notice(msg.participant_id === S.client?.me?.id ? "Your speaking time is up." : `${msg.name}'s speaking time is up.`);
  }
  scheduleRender();
}

/** Casts the choices picked on the motion card. */
function castVote() {
  const client = S.client;
  const m = client?.gov.open();
  if (!client || !m || m.id !== S.ballot.motionId || !S.ballot.chosen.length || S.ballot.sending) return;
  S.ballot.sending = true;
  client.vote(m.id, S.ballot.chosen);
  scheduleRender();
}

/** A host's grant for the minutes: a fresh one where the page can get one, else the one it joined with. */
async function minutesGrant() {
  if (S.member) return (await api("POST", "/api/grant", { room: S.room })).grant;
  if (S.info.dev_mode) return (await api("POST", "/api/dev/grant", { room: S.room, name: S.name, host: true })).grant;
  return S.client?.grant ?? "";
}

/** Downloads the meeting's minutes. @param {"markdown"|"json"} format */
async function downloadMinutes(format) {
  try {
    const grant = await minutesGrant();
    const res = await fetch(`/api/minutes/${encodeURIComponent(S.room)}?format=${format}`, {
      headers: { Authorization: `Bearer ${grant}` },
    });
    if (!res.ok) throw new Error((await res.json().catch(() => null))?.error ?? `the server said ${res.status}`);
    const blob = await res.blob();
    const day = new Date().toISOString().slice(0, 10);
    const a = el("a", { href: URL.createObjectURL(blob), download: `minutes-${S.room}-${day}.${format === "json" ? "json" : "md"}` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
    notice("Minutes downloaded.");
  } catch (err) {
    notice(`Could not download the minutes: ${/** @type {Error} */ (err).message}`);
  }
}

/** The host's motion form: checked here first, then by the server. */
function writeMotion() {
  const { spec, error } = specFromForm({
    title: $input("motion-title-input").value,
    text: /** @type {HTMLTextAreaElement} */ ($("motion-text-input")).value,
    kind: $select("motion-kind-input").value,
    options: /** @type {HTMLTextAreaElement} */ ($("motion-options-input")).value,
    maxChoices: $input("motion-max-input").value,
    allowGuests: $input("motion-guests-input").checked,
    minutes: $input("motion-minutes-input").value,
  });
  $("motion-form-error").textContent = error ?? "";
  if (!spec) return;
  hostAct("create_motion", { motion: spec });
  /** @type {HTMLFormElement} */ ($("motion-form")).reset();
  /** @type {HTMLDetailsElement} */ ($("motion-form-box")).open = false;
  notice(`Motion written: “${spec.title}”. Open the vote when you are ready.`);
}

// ---- the side panel: People / Chat / Host tabs -----------------------------------------------

/** Opens or closes the side panel on `tab`. @param {boolean} open @param {Tab} tab */
function setSide(open, tab) {
  S.view.sideOpen = open;
  S.view.tab = tab;
  $("side").hidden = !open;
  for (const t of /** @type {Tab[]} */ (["people", "chat", "host"])) {
    const selected = t === tab;
    const tabButton = $(`tab-${t}`);
    tabButton.setAttribute("aria-selected", String(selected));
    tabButton.tabIndex = selected ? 0 : -1;
    $(`${t}-panel`).hidden = !selected;
    $(`toggle-${t}`).setAttribute("aria-expanded", String(open && selected));
  }
  if (open && tab === "chat") {
    S.view.chatUnread = 0;
    showUnread(S);
  }
  scheduleRender();
}

/** A control-bar button: opens its tab, or closes the panel when that tab shows. @param {Tab} tab @param {string} [focusId] */
function toggleTab(tab, focusId) {
  const showing = S.view.sideOpen && S.view.tab === tab;
  setSide(!showing, tab);
  if (!showing && focusId) $(focusId).focus();
}

// ---- drawing ------------------------------------------------------------------------------

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(render);
  // Hidden pages get no animation frames; draw anyway.
  setTimeout(render, 200);
}

function render() {
  if (!renderQueued) return;
  renderQueued = false;
  if (!S.client || $("meeting").hidden) return;
  renderGrid(S);
  renderPeople(S, { onPin, hostAct });
  renderHostPanel(S, hostAct);
  renderGovernance(S, hostAct);
  updateControls();
}

/** @param {string} pid */
function onPin(pid) {
  const p = S.client?.participants.get(pid);
  S.view.pinned = S.view.pinned === pid ? null : pid;
  S.view.page = 0;
  notice(S.view.pinned ? `${p?.name ?? "They"} is pinned to the main view.` : "The main view follows the active speaker again.");
  scheduleRender();
}

// ---- statistics: speaking levels, connection quality ------------------------------------

/** @type {any} */
let statsTimer = null;
/** @type {any} */
let qualityTimer = null;
/** @type {any} */
let governanceTimer = null;
/** @type {{packetsReceived: number, packetsLost: number}|null} */
let lastCounts = null;

function startStatsLoop() {
  stopStatsLoop();
  statsTimer = setInterval(updateLevels, 400);
  qualityTimer = setInterval(updateQuality, 2000);
  governanceTimer = setInterval(() => tickGovernance(S), 1000);
}

function stopStatsLoop() {
  clearInterval(statsTimer);
  clearInterval(qualityTimer);
  clearInterval(governanceTimer);
  statsTimer = qualityTimer = governanceTimer = null;
  lastCounts = null;
}

async function updateLevels() {
  const client = S.client;
  if (!client || client.state !== "joined") return;
  let s;
  try {
    s = await client.stats();
  } catch {
    return;
  }
  /** @type {Map<string, number>} */
  const now = new Map();
  for (const x of s) {
    if (x.kind !== "audio") continue;
    const level = client.roomTracks.get(x.track_id)?.muted ? 0 : x.audioLevel;
    now.set(x.participant_id, Math.max(now.get(x.participant_id) ?? 0, level));
  }
  let changed = false;
  for (const id of new Set([...S.levels.keys(), ...now.keys()])) {
    const before = S.levels.get(id) ?? 0;
    const after = before * 0.5 + (now.get(id) ?? 0) * 0.5;
    if ((before > SPEAKING_LEVEL) !== (after > SPEAKING_LEVEL)) changed = true;
    if (after < 0.001 && !now.has(id)) S.levels.delete(id);
    else S.levels.set(id, after);
  }
  if (changed || updateActiveSpeaker(S)) scheduleRender();
}

async function updateQuality() {
  const client = S.client;
  if (!client || client.state !== "joined") return;
  const q = await client.connectionStats().catch(() => null);
  if (!q) return;
  const loss = lossBetween(lastCounts, q);
  lastCounts = q;
  const level = qualityLevel({ state: q.state, rtt: q.rtt, loss });
  S.quality = { level, rtt: q.rtt, loss, state: q.state };
  const node = $("conn-quality");
  node.hidden = false;
  node.className = `conn-quality ${level}`;
  const rttText = q.rtt != null ? `${Math.round(q.rtt)} ms` : "–";
  node.textContent = `Connection: ${level}`;
  node.title = `Round trip ${rttText}, packet loss ${(loss * 100).toFixed(1)}%`;
  node.setAttribute("aria-label", `Connection ${level}: round trip ${rttText}, packet loss ${(loss * 100).toFixed(1)} percent`);
}

// ---- devices during the meeting ------------------------------------------------------------

function openDevicesDialog() {
  refreshDevices();
  $("devices-note").textContent = "";
  $dialog("devices-dialog").showModal();
}

/** Switches the device behind `dev` (or just remembers it when not in use). @param {Device} dev @param {string} id */
async function switchDevice(dev, id) {
  S.ids[dev] = id;
  $select(dev === "microphone" ? "mic-select" : "camera-select").value = id;
  $select(dev === "microphone" ? "set-mic" : "set-camera").value = id;
  const client = S.client;
  if (client?.publishing(dev)) {
    try {
      const track = await openDevice(dev, id);
      if (await client.replaceTrack(dev, track)) {
        if (dev === "microphone") meter.attach(track);
        $("devices-note").textContent = `Switched the ${dev}.`;
        scheduleRender();
      }
    } catch (err) {
      $("devices-note").textContent = /** @type {Error} */ (err).message;
    }
  } else if (previewing()) {
    startPreview(preview.video ?? $video("prejoin-video"));
  }
}

/** @param {string} id */
function chooseSpeakers(id) {
  S.ids.speaker = id;
  $select("speaker-select").value = id;
  $select("set-speaker").value = id;
  setSpeakers(id);
}

async function testSpeakers() {
  await playTestTone(S.ids.speaker);
  notice("Playing a test tone. If you did not hear it, pick other speakers.");
  ui.lastToneAt = Date.now();
}

// ---- wiring ----------------------------------------------------------------------------

$("join-form").addEventListener("submit", (e) => {
  e.preventDefault();
  join();
});
for (const dev of /** @type {Device[]} */ (["microphone", "camera"])) {
  $input(dev).addEventListener("change", () => {
    S.want[dev] = $input(dev).checked;
    if (previewing()) startPreview(preview.video ?? $video("prejoin-video"));
  });
}
$("mic-select").addEventListener("change", () => switchDevice("microphone", $select("mic-select").value));
$("camera-select").addEventListener("change", () => switchDevice("camera", $select("camera-select").value));
$("set-mic").addEventListener("change", () => switchDevice("microphone", $select("set-mic").value));
$("set-camera").addEventListener("change", () => switchDevice("camera", $select("set-camera").value));
$("speaker-select").addEventListener("change", () => chooseSpeakers($select("speaker-select").value));
$("set-speaker").addEventListener("change", () => chooseSpeakers($select("set-speaker").value));
$("speaker-test").addEventListener("click", testSpeakers);
$("devices-test").addEventListener("click", testSpeakers);
$("preview-toggle").addEventListener("click", () => togglePreview($video("prejoin-video")));
$("waiting-preview").addEventListener("click", () => togglePreview($video("waiting-video")));
$("leave").addEventListener("click", leave);
$("waiting-leave").addEventListener("click", () => {
  leave();
  say("join", "You left the lobby.");
});
$("mute-mic").addEventListener("click", () => toggleDevice("microphone"));
$("mute-camera").addEventListener("click", () => toggleDevice("camera"));
$("share-screen").addEventListener("click", toggleScreenShare);
$("raise-hand").addEventListener("click", toggleHand);
$("open-devices").addEventListener("click", openDevicesDialog);
$("toggle-people").addEventListener("click", () => toggleTab("people", "people-search"));
$("toggle-chat").addEventListener("click", () => toggleTab("chat", "chat-input"));
$("toggle-host").addEventListener("click", () => toggleTab("host"));
for (const t of /** @type {Tab[]} */ (["people", "chat", "host"])) {
  $(`tab-${t}`).addEventListener("click", () => setSide(true, t));
}
// Arrow keys move between tabs (the ARIA tabs pattern).
$("side").querySelector("[role=tablist]")?.addEventListener("keydown", (e) => {
  const ev = /** @type {KeyboardEvent} */ (e);
  if (ev.key !== "ArrowRight" && ev.key !== "ArrowLeft") return;
  const tabs = /** @type {Tab[]} */ (["people", "chat", "host"]).filter((t) => !$(`tab-${t}`).hidden);
  const i = tabs.indexOf(S.view.tab);
  const next = tabs[(i + (ev.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
  setSide(true, next);
  $(`tab-${next}`).focus();
});
$("side-close").addEventListener("click", () => setSide(false, S.view.tab));
$("audio-more").addEventListener("click", () => setSide(true, "people"));
$("page-prev").addEventListener("click", () => {
  S.view.page -= 1;
  scheduleRender();
});
$("page-next").addEventListener("click", () => {
  S.view.page += 1;
  scheduleRender();
});
$("people-search").addEventListener("input", (e) => {
  S.view.peopleFilter = /** @type {HTMLInputElement} */ (e.target).value;
  scheduleRender();
});
$("chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const refusal = sendTyped(S);
  if (refusal) notice(refusal);
});
$("clear-queue").addEventListener("click", () => hostAct("clear_queue"));
$("cast-vote").addEventListener("click", castVote);
$("motion-dismiss").addEventListener("click", () => {
  const m = S.client?.gov.current();
  if (m) S.ballot.dismissed.add(`${m.id}/${m.state}`);
  scheduleRender();
});
$("motion-form").addEventListener("submit", (e) => {
  e.preventDefault();
  writeMotion();
});
$("set-quorum").addEventListener("click", () => {
  const { rule, error } = ruleFromForm($select("quorum-kind").value, $input("quorum-value").value);
  if (rule) hostAct("set_quorum", { rule });
  else notice(error ?? "");
});
$("set-speaker-limit").addEventListener("click", () =>
  hostAct("speaker_limit", { seconds: Math.max(0, Math.round(Number($input("speaker-limit").value) || 0)) }));
$("minutes-md").addEventListener("click", () => downloadMinutes("markdown"));
$("minutes-json").addEventListener("click", () => downloadMinutes("json"));
$("mute-all").addEventListener("click", () => {
  hostAct("mute_all");
  notice("Muted everyone except the hosts.");
});
$("lock-room").addEventListener("click", () => hostAct("lock", { locked: !S.client?.roomState?.locked }));
$("lobby-toggle").addEventListener("click", () => hostAct("lobby", { enabled: !S.client?.roomState?.lobby }));
$("end-meeting").addEventListener("click", () =>
  confirmThen("End the meeting for everyone? Everybody will be disconnected.", () => hostAct("end_meeting")));
document.addEventListener("click", (e) => {
  if (outsideMenu(e.target)) {
    closeMenu();
    scheduleRender();
  }
});
navigator.mediaDevices?.addEventListener?.("devicechange", () => refreshDevices());

// Keyboard shortcuts (not while typing). Single-key shortcuts can be turned off on the
// pre-join screen (they get in the way of some screen readers' and voice control's keys).
const shortcutsBox = $input("shortcuts");
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
  for (const k of /** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll(".controls kbd"))) k.hidden = !shortcutsBox.checked;
  for (const b of /** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll(".controls [data-keys]"))) {
    if (shortcutsBox.checked) b.setAttribute("aria-keyshortcuts", b.dataset.keys ?? "");
    else b.removeAttribute("aria-keyshortcuts");
  }
}
showShortcutHints();
document.addEventListener("keydown", (e) => {
  if (!shortcutsBox.checked) return;
  if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
  const t = e.target;
  if (t instanceof HTMLElement && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) return;
  if ($dialog("confirm").open || $dialog("devices-dialog").open) return;
  if ($("meeting").hidden || !S.client) return;
  /** @type {Record<string, () => void>} */
  const actions = {
    m: () => toggleDevice("microphone"),
    v: () => toggleDevice("camera"),
    s: toggleScreenShare,
    h: toggleHand,
    c: () => toggleTab("chat", "chat-input"),
    p: () => toggleTab("people", "people-search"),
  };
  const action = actions[e.key.toLowerCase()];
  if (action) {
    e.preventDefault();
    action();
  }
});
window.addEventListener("resize", scheduleRender);

// ---- start-up ---------------------------------------------------------------------------

// ?room=x&name=y&camera=0&mic=0&grant=...&autojoin=1&host=1&publish=0&page_size=4
if (params.has("room")) $input("room").value = params.get("room") ?? "";
if (params.has("name")) $input("name").value = params.get("name") ?? "";
if (params.has("camera")) S.want.camera = flag(params.get("camera"));
if (params.has("mic")) S.want.microphone = flag(params.get("mic"));
if (params.has("grant")) $input("grant").value = params.get("grant") ?? "";
if (params.has("page_size")) S.view.pageSize = Number(params.get("page_size")) || 0;

// An invitation hands its guest grant over in the fragment (never sent to a server); read
// it, then take it out of the address bar. The guest then picks devices and joins.
const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
if (fragment.has("grant")) {
  S.handedGrant = fragment.get("grant");
  for (const [k, v] of fragment) if (k !== "grant") params.set(k, v);
  if (fragment.has("room")) $input("room").value = fragment.get("room") ?? "";
  if (fragment.has("name")) $input("name").value = fragment.get("name") ?? "";
  if (fragment.has("camera")) S.want.camera = flag(fragment.get("camera"));
  if (fragment.has("mic")) S.want.microphone = flag(fragment.get("mic"));
  history.replaceState(null, "", location.pathname);
}
updatePrejoinChecks();

await loadInfo();
const signInConfigured = !S.info.dev_mode && (await loadMember());
if (S.member) {
  $input("name").value = S.member.display_name;
  $("grant-field").hidden = true;
  $("signed-in").textContent = `Signed in as ${S.member.handle}${S.member.is_host ? " (host)" : ""}`;
  $("signed-in").hidden = false;
  $("sign-out").hidden = false;
  $("my-invitations").hidden = false;
} else if (signInConfigured && !S.handedGrant) {
  $("grant-field").hidden = true;
  $("sign-in").hidden = false;
}
$("sign-out").addEventListener("click", async () => {
  await fetch("/auth/logout", { method: "POST" });
  location.reload();
});
$("join-hint").textContent = `In rooms of more than ${joinMutedAbove()} people you join with your microphone muted.`;
say("join",
  S.info.dev_mode
    ? "Dev mode: anyone on this machine can join."
    : S.handedGrant
      ? "Your invitation is ready: check your camera and microphone if you like, then join."
      : S.member || !signInConfigured
        ? "Ready."
        : "Sign in with your co-op's account to join.");
await refreshDevices();
if (params.get("autojoin") === "1") join();

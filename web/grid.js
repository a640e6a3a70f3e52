// @ts-check
// Draws the meeting view that layout.js computes: the stage, the page of video tiles, the
// compact list of people without video, the pager, and one <audio> per remote audio track
// (audio plays whether or not its owner is on screen). Tells the server which video tracks
// to pause. Elements are kept between redraws (keyed by participant), so video does not
// flicker and a screen reader keeps its place.

import { $, el, attachVideo, $video } from "./dom.js";
import { computeLayout, pickActiveSpeaker, pageSizeFor, initials, showsVideo, SPEAKING_LEVEL } from "./layout.js";
import { setSink } from "./devices.js";

/**
 * @typedef {import("./state.js").AppState} AppState
 * @typedef {import("./layout.js").Sources} Sources
 * @typedef {import("./client.js").PlenaryClient} PlenaryClient
 */

/** key ("<pid>" or "<pid>:screen") → tile @type {Map<string, HTMLElement>} */
const tiles = new Map();
/** participant id → chip in the audio list @type {Map<string, HTMLElement>} */
const chips = new Map();
/** remote track id → <audio> @type {Map<string, HTMLAudioElement>} */
const audioEls = new Map();

/**
 * Everyone's published tracks by participant, with the received MediaStreamTrack.
 * @param {PlenaryClient} client
 * @returns {Map<string, Sources>}
 */
export function sourcesOf(client) {
  /** @type {Map<string, any>} */
  const map = new Map();
  for (const t of client.roomTracks.values()) {
    const slot = map.get(t.participant_id) ?? {};
    slot[t.source] = { info: t, track: client.remote.get(t.id)?.track ?? null };
    map.set(t.participant_id, slot);
  }
  return map;
}

/**
 * Re-picks the active speaker: the one the server hears (it weighs every voice and holds a
 * moment), else the loudest this page measures; returns whether it changed.
 * @param {AppState} S
 */
export function updateActiveSpeaker(S) {
  const client = S.client;
  if (!client) return false;
  const before = S.view.activeSpeaker;
  const heard = client.dominantSpeaker;
  if (heard && client.participants.has(heard)) {
    if (heard !== before) {
      S.view.activeSpeaker = heard;
      S.view.activeSince = Date.now();
      return true;
    }
    return false;
  }
  const next = pickActiveSpeaker(S.view, [...client.participants.values()], S.levels, sourcesOf(client), Date.now());
  S.view.activeSpeaker = next.activeSpeaker;
  S.view.activeSince = next.activeSince;
  return next.activeSpeaker !== before;
}

/** Draws the view. @param {AppState} S */
export function renderGrid(S) {
  const client = S.client;
  if (!client) return;
  const sources = sourcesOf(client);
  const others = [...client.participants.values()];
  updateActiveSpeaker(S);
  const v = S.view;
  const layout = computeLayout({
    others,
    sources,
    levels: S.levels,
    handQueue: client.handQueue,
    pinned: v.pinned,
    activeSpeaker: v.activeSpeaker,
    page: v.page,
    pageSize: v.pageSize > 0 ? v.pageSize : pageSizeFor(window.innerWidth),
  });
  v.page = layout.page;
  if (v.pinned && !client.participants.has(v.pinned)) v.pinned = null;
  v.layout = layout;

  const grid = $("grid");
  const wanted = [];
  if (layout.stage) {
    const screen = layout.stage.endsWith(":screen");
    const pid = screen ? layout.stage.slice(0, -":screen".length) : layout.stage;
    wanted.push({ key: layout.stage, pid, screen, stage: true });
  }
  for (const pid of layout.tiles) wanted.push({ key: pid, pid, screen: false, stage: false });
  const keep = new Set(wanted.map((w) => w.key));
  for (const [key, tile] of tiles) {
    if (!keep.has(key)) {
      tile.remove();
      tiles.delete(key);
    }
  }
  let prev = $("self-tile");
  for (const w of wanted) {
    const p = client.participants.get(w.pid);
    if (!p) continue;
    const tile = drawTile(S, w, p, sources.get(w.pid) ?? {});
    if (w.stage) {
      if (grid.firstElementChild !== tile) grid.prepend(tile);
    } else if (prev.nextElementSibling !== tile) {
      prev.after(tile);
    }
    if (!w.stage) prev = tile;
  }
  grid.classList.toggle("has-stage", !!layout.stage);
  drawSelf(S);
  drawAudioList(S, layout.audioOnly, layout.audioHidden, sources);

  // What we show of each video, so the server sends a layer that fits the tile (and keeps
  // the stage's video longest when bandwidth runs short).
  const dpr = window.devicePixelRatio || 1;
  /** @type {Map<string, {width: number, height: number, priority: "stage"|"pinned"|"thumbnail"}>} */
  const shown = new Map();
  for (const w of wanted) {
    const slot = sources.get(w.pid) ?? {};
    const src = w.screen ? slot.screen : slot.camera;
    const tile = tiles.get(w.key);
    if (!src || !tile) continue;
    const q = (/** @type {number} */ n) => Math.max(32, Math.round((n * dpr) / 32) * 32);
    shown.set(src.info.id, {
      width: q(tile.clientWidth),
      height: q(tile.clientHeight),
      priority: w.stage ? (v.pinned === w.pid ? "pinned" : "stage") : "thumbnail",
    });
  }
  client.setSubscription(
    [...client.roomTracks.values()]
      .filter((t) => t.kind === "video" && t.participant_id !== client.me?.id)
      .map((t) => {
        const tile = shown.get(t.id);
        return tile && !layout.paused.includes(t.id)
          ? { track_id: t.id, paused: false, ...tile }
          : { track_id: t.id, paused: true };
      }),
  );
  renderAudio(S);

  $("pager").hidden = layout.pages <= 1;
  $("page-label").textContent = `Page ${layout.page + 1} of ${layout.pages}`;
  /** @type {HTMLButtonElement} */ ($("page-prev")).disabled = layout.page === 0;
  /** @type {HTMLButtonElement} */ ($("page-next")).disabled = layout.page >= layout.pages - 1;
}

/**
 * @param {AppState} S
 * @param {{key: string, pid: string, screen: boolean, stage: boolean}} w
 * @param {import("./client.js").Participant} p
 * @param {Sources} slot
 */
function drawTile(S, w, p, slot) {
  let tile = tiles.get(w.key);
  if (!tile) {
    const video = el("video", { muted: true, playsInline: true, autoplay: true });
    video.setAttribute("muted", "");
    video.setAttribute("playsinline", "");
    video.setAttribute("autoplay", "");
    tile = el("figure", { class: "tile", "data-participant-id": p.id },
      video, el("div", { class: "avatar", "aria-hidden": "true" }),
      el("span", { class: "notice", text: "Video paused for your connection" }), el("figcaption"));
    tiles.set(w.key, tile);
  }
  const src = w.screen ? slot.screen : slot.camera;
  const track = src && showsVideo(src) ? src.track : null;
  attachVideo(/** @type {HTMLVideoElement} */ (tile.querySelector("video")), track);
  tile.classList.toggle("no-video", !track);
  // The server stopped this video because our connection cannot carry it (audio goes on).
  tile.classList.toggle("bw-paused", !!src && !!S.client?.bwPaused.has(src.info.id));
  tile.classList.toggle("stage", w.stage);
  tile.classList.toggle("screen", w.screen);
  tile.classList.toggle("speaking", !w.screen && (S.levels.get(p.id) ?? 0) > SPEAKING_LEVEL);
  /** @type {HTMLElement} */ (tile.querySelector(".avatar")).textContent = initials(p.name);
  const micMuted = !!slot.microphone && slot.microphone.info.muted;
  const hand = S.client?.handQueue.includes(p.id) ? " · hand raised" : "";
  const label = w.screen ? `${p.name}'s screen` : `${p.name || p.identity || p.id}${micMuted ? " (muted)" : ""}${hand}`;
  /** @type {HTMLElement} */ (tile.querySelector("figcaption")).textContent = label;
  const role = S.view.pinned === p.id ? ", pinned" : ", active speaker";
  tile.setAttribute("aria-label", w.stage && !w.screen ? `${label}${role}` : label);
  return tile;
}

/** The self view: a tile while our camera shows, else a chip at the head of the list. @param {AppState} S */
function drawSelf(S) {
  const client = S.client;
  if (!client) return;
  const cam = client.localTrack("camera");
  const camOn = !!cam && !client.isMuted("camera");
  const micOn = client.publishing("microphone") && !client.isMuted("microphone");
  const tile = $("self-tile");
  tile.hidden = !camOn;
  attachVideo($video("preview"), camOn ? cam : null);
  const caption = `${S.name} (you)${micOn ? "" : " · muted"}`;
  $("self-name").textContent = caption;
  const speaking = micOn && S.selfLevel > SPEAKING_LEVEL * 4;
  tile.classList.toggle("speaking", speaking);
  let chip = document.getElementById("self-chip");
  if (camOn) {
    chip?.remove();
    return;
  }
  if (!chip) {
    chip = el("li", { id: "self-chip", class: "chip self" },
      el("span", { class: "avatar", "aria-hidden": "true" }),
      el("span", { class: "chip-name" }),
      el("span", { class: "chip-state" }));
  }
  const list = $("audio-list");
  if (list.firstElementChild !== chip) list.prepend(chip);
  chip.classList.toggle("speaking", speaking);
  /** @type {HTMLElement} */ (chip.querySelector(".avatar")).textContent = initials(S.name);
  /** @type {HTMLElement} */ (chip.querySelector(".chip-name")).textContent = `${S.name} (you)`;
  /** @type {HTMLElement} */ (chip.querySelector(".chip-state")).textContent = micOn ? "mic on" : client.publishing("microphone") ? "muted" : "listening";
}

/**
 * People without video, as chips.
 * @param {AppState} S
 * @param {string[]} ids
 * @param {number} hidden
 * @param {Map<string, Sources>} sources
 */
function drawAudioList(S, ids, hidden, sources) {
  const client = S.client;
  if (!client) return;
  const list = $("audio-list");
  const keep = new Set(ids);
  for (const [id, chip] of chips) {
    if (!keep.has(id)) {
      chip.remove();
      chips.delete(id);
    }
  }
  let prev = document.getElementById("self-chip");
  for (const id of ids) {
    const p = client.participants.get(id);
    if (!p) continue;
    let chip = chips.get(id);
    if (!chip) {
      chip = el("li", { class: "chip", "data-participant-id": id },
        el("span", { class: "avatar", "aria-hidden": "true" }),
        el("span", { class: "chip-name" }),
        el("span", { class: "chip-state" }));
      chips.set(id, chip);
    }
    const mic = sources.get(id)?.microphone;
    const speaking = (S.levels.get(id) ?? 0) > SPEAKING_LEVEL;
    const hand = client.handQueue.indexOf(id);
    const state = speaking ? "speaking" : hand >= 0 ? `hand #${hand + 1}` : mic ? (mic.info.muted ? "muted" : "mic on") : "listening";
    chip.classList.toggle("speaking", speaking);
    chip.classList.toggle("hand", hand >= 0);
    /** @type {HTMLElement} */ (chip.querySelector(".avatar")).textContent = initials(p.name);
    /** @type {HTMLElement} */ (chip.querySelector(".chip-name")).textContent = p.name;
    /** @type {HTMLElement} */ (chip.querySelector(".chip-state")).textContent = state;
    chip.setAttribute("aria-label", `${p.name}: ${state}`);
    if (prev ? prev.nextElementSibling !== chip : list.firstElementChild !== chip) {
      if (prev) prev.after(chip);
      else list.prepend(chip);
    }
    prev = chip;
  }
  const more = $("audio-more");
  more.hidden = hidden === 0;
  more.textContent = `…and ${hidden} more listening`;
  $("audio-strip").hidden = list.children.length === 0;
}

/** One playing <audio> per remote audio track. @param {AppState} S */
function renderAudio(S) {
  const client = S.client;
  if (!client) return;
  const sink = $("audio-sink");
  const want = new Set();
  for (const r of client.remote.values()) {
    if (r.kind !== "audio") continue;
    want.add(r.track_id);
    let audio = audioEls.get(r.track_id);
    if (!audio) {
      audio = el("audio", { autoplay: true });
      audio.setAttribute("autoplay", "");
      audio.dataset.trackId = r.track_id;
      setSink(audio, S.ids.speaker);
      sink.append(audio);
      audioEls.set(r.track_id, audio);
    }
    audio.dataset.audioFor = r.participant_id;
    const current = /** @type {MediaStream|null} */ (audio.srcObject)?.getTracks()[0];
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

/** Sends every remote sound to the chosen speakers. @param {string} sinkId */
export function setSpeakers(sinkId) {
  for (const a of audioEls.values()) setSink(a, sinkId);
}

/** Removes every tile, chip and sound (after leaving). */
export function clearGrid() {
  for (const tile of tiles.values()) tile.remove();
  tiles.clear();
  for (const chip of chips.values()) chip.remove();
  chips.clear();
  document.getElementById("self-chip")?.remove();
  for (const a of audioEls.values()) {
    a.srcObject = null;
    a.remove();
  }
  audioEls.clear();
  attachVideo($video("preview"), null);
}

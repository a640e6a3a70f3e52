// @ts-check
// What the meeting view shows, as pure functions of the room: who is on the stage, which
// video tiles are on the current page, who is listed as audio-only, and which remote video
// tracks to pause because nobody sees them. No DOM and no client here, so node's test runner
// checks it (web/test/layout.test.mjs); grid.js draws the result.

/** Level above which a participant counts as speaking (receiver-side audioLevel, 0..1). */
export const SPEAKING_LEVEL = 0.02;
/** The active speaker stays at least this long before someone louder takes over. */
export const SPEAKER_HOLD_MS = 2500;
/** Audio-only participants shown as chips before the "and N more" link. */
export const AUDIO_CHIPS = 24;

/**
 * @typedef {{info: {id: string, muted: boolean}, track: MediaStreamTrack|null}} Slot
 * @typedef {{camera?: Slot, microphone?: Slot, screen?: Slot, screen_audio?: Slot}} Sources
 * @typedef {{id: string, name: string, hand_raised?: boolean}} Person
 */

/** "Ada Lovelace" → "AL". @param {string} name */
export function initials(name) {
  return (name || "?")
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((w) => w[0].toUpperCase())
    .join("");
}

/** 1 → "1st", 12 → "12th", 22 → "22nd". @param {number} n */
export function ordinal(n) {
  const teen = n % 100 > 10 && n % 100 < 14;
  const suffix = teen || n % 10 > 3 ? "th" : ["th", "st", "nd", "rd"][n % 10];
  return `${n}${suffix}`;
}

/** Video tiles per page for a window `width` pixels wide. @param {number} width */
export function pageSizeFor(width) {
  return width < 500 ? 4 : width < 900 ? 6 : 9;
}

/** Whether `slot` carries live, unmuted video. @param {Slot|undefined} slot */
export function showsVideo(slot) {
  return !!slot && !slot.info.muted;
}

/**
 * Picks the active speaker: the loudest participant above the speaking level, who takes
 * over from the current one only after the hold time and when clearly louder. Nobody
 * heard yet: someone with video, else the first.
 * @param {{activeSpeaker: string|null, activeSince: number}} current
 * @param {Person[]} others
 * @param {Map<string, number>} levels  participant id → smoothed level
 * @param {Map<string, Sources>} sources participant id → their tracks
 * @param {number} now  milliseconds
 * @returns {{activeSpeaker: string|null, activeSince: number}}
 */
export function pickActiveSpeaker(current, others, levels, sources, now) {
  let { activeSpeaker, activeSince } = current;
  const present = new Set(others.map((p) => p.id));
  if (activeSpeaker && !present.has(activeSpeaker)) activeSpeaker = null;
  let loudest = null;
  let loudestLevel = SPEAKING_LEVEL;
  for (const p of others) {
    const l = levels.get(p.id) ?? 0;
    if (l > loudestLevel) {
      loudest = p.id;
      loudestLevel = l;
    }
  }
  if (loudest && loudest !== activeSpeaker) {
    const currentLevel = activeSpeaker ? levels.get(activeSpeaker) ?? 0 : 0;
    if (!activeSpeaker || (now - activeSince > SPEAKER_HOLD_MS && currentLevel < loudestLevel * 0.7)) {
      return { activeSpeaker: loudest, activeSince: now };
    }
  }
  if (!activeSpeaker && others.length) {
    const withVideo = others.find((p) => showsVideo(sources.get(p.id)?.camera));
    return { activeSpeaker: (withVideo ?? others[0]).id, activeSince: now };
  }
  return { activeSpeaker, activeSince };
}

/**
 * @typedef {object} LayoutInput
 * @property {Person[]} others       everyone else, in order of arrival
 * @property {Map<string, Sources>} sources
 * @property {Map<string, number>} levels
 * @property {string[]} handQueue
 * @property {string|null} pinned
 * @property {string|null} activeSpeaker
 * @property {number} page
 * @property {number} pageSize
 *
 * @typedef {object} Layout
 * @property {string|null} stage     participant id, or "<id>:screen", or null
 * @property {string[]} tiles        participant ids with a video tile on this page
 * @property {number} page
 * @property {number} pages
 * @property {string[]} audioOnly    participant ids shown as compact chips
 * @property {number} audioHidden    audio-only participants not shown as chips
 * @property {string[]} visibleVideo remote video track ids someone sees
 * @property {string[]} paused       remote video track ids to pause
 */

/**
 * The meeting view. The stage holds the pinned participant, else a screen share, else the
 * active speaker when they show video. Everyone else who shows video gets a tile on the
 * pages of the grid (cameras in order of arrival); people without video are compact
 * audio-only chips (speaking, hands and open microphones first), so a 500-person meeting
 * of listeners costs no grid space. Every video track not on the stage or the current page
 * is paused.
 * @param {LayoutInput} input
 * @returns {Layout}
 */
export function computeLayout({ others, sources, levels, handQueue, pinned, activeSpeaker, page, pageSize }) {
  const present = new Set(others.map((p) => p.id));
  const pin = pinned && present.has(pinned) ? pinned : null;
  const video = (/** @type {string} */ id) => showsVideo(sources.get(id)?.camera);
  const screens = others.filter((p) => sources.get(p.id)?.screen);
  /** @type {string|null} */
  let stage = null;
  if (pin) stage = pin;
  else if (screens.length) stage = `${screens[0].id}:screen`;
  else if (activeSpeaker && present.has(activeSpeaker) && video(activeSpeaker)) stage = activeSpeaker;

  const withVideo = others.filter((p) => p.id !== stage && video(p.id));
  const size = Math.max(1, pageSize);
  const pages = Math.max(1, Math.ceil(withVideo.length / size));
  const current = Math.min(Math.max(0, page), pages - 1);
  const tiles = withVideo.slice(current * size, current * size + size).map((p) => p.id);

  const order = new Map(others.map((p, i) => [p.id, i]));
  const rank = (/** @type {Person} */ p) => {
    if ((levels.get(p.id) ?? 0) > SPEAKING_LEVEL) return 0;
    if (handQueue.includes(p.id)) return 1;
    const mic = sources.get(p.id)?.microphone;
    if (mic && !mic.info.muted) return 2;
    return 3;
  };
  const audio = others
    .filter((p) => p.id !== stage && !video(p.id))
    .sort((a, b) => rank(a) - rank(b) || (order.get(a.id) ?? 0) - (order.get(b.id) ?? 0));
  const audioOnly = audio.slice(0, AUDIO_CHIPS).map((p) => p.id);

  /** @type {string[]} */
  const visibleVideo = [];
  const seen = new Set(tiles);
  if (stage) {
    const screen = stage.endsWith(":screen");
    const pid = screen ? stage.slice(0, -":screen".length) : stage;
    const slot = screen ? sources.get(pid)?.screen : sources.get(pid)?.camera;
    if (slot) visibleVideo.push(slot.info.id);
  }
  for (const id of seen) {
    const slot = sources.get(id)?.camera;
    if (slot) visibleVideo.push(slot.info.id);
  }
  /** @type {string[]} */
  const paused = [];
  for (const p of others) {
    for (const kind of /** @type {const} */ (["camera", "screen"])) {
      const slot = sources.get(p.id)?.[kind];
      if (slot && !visibleVideo.includes(slot.info.id)) paused.push(slot.info.id);
    }
  }
  return {
    stage,
    tiles,
    page: current,
    pages,
    audioOnly,
    audioHidden: audio.length - audioOnly.length,
    visibleVideo,
    paused,
  };
}

// @ts-check
// The People tab: everyone in the room with their badges (host, member, guest of…, hand,
// microphone), search, pinning to the main view, and for hosts the per-person moderation
// menu. The list is rebuilt only when something besides who is speaking changed, so a
// screen reader keeps its place; speaking dots are updated in place.

import { $, el, confirmThen } from "./dom.js";
import { SPEAKING_LEVEL } from "./layout.js";
import { sourcesOf } from "./grid.js";

/**
 * @typedef {import("./state.js").AppState} AppState
 * @typedef {import("./client.js").Participant} Participant
 */

/** Most people drawn; a longer list is searched rather than scrolled. */
const LIMIT = 300;

let signature = "";
/** @type {{pid: string, menu: HTMLElement, button: HTMLElement}|null} */
let openMenu = null;

/** Badges for a participant: [css class, text]. @param {Participant} p @returns {[string, string][]} */
export function badgesFor(p) {
  /** @type {[string, string][]} */
  const out = [];
  if (p.is_host || p.role === "host") out.push(["host", "host"]);
  if (p.role === "member") out.push(["member", "member"]);
  if (p.role === "guest") out.push(["guest", p.invited_by ? `guest of ${p.invited_by}` : "guest"]);
  return out;
}

/**
 * @param {AppState} S
 * @param {{onPin: (pid: string) => void, hostAct: (action: string, fields?: object) => void}} actions
 */
export function renderPeople(S, actions) {
  const client = S.client;
  if (!client) return;
  const list = $("people");
  const me = client.me;
  const everyone = me ? [me, ...client.participants.values()] : [...client.participants.values()];
  $("people-title").textContent = `People (${everyone.length})`;
  $("tab-people").textContent = `People (${everyone.length})`;
  // Do not rebuild the list under an open menu; closing it redraws.
  if (openMenu) return;
  const sources = sourcesOf(client);
  const q = S.view.peopleFilter.trim().toLowerCase();
  const shown = q
    ? everyone.filter((p) => `${p.name} ${p.identity} ${p.invited_by ?? ""}`.toLowerCase().includes(q))
    : everyone;
  const isHost = !!client.permissions?.is_host;
  const items = [];
  for (const p of shown.slice(0, LIMIT)) {
    const self = p.id === me?.id;
    const slot = sources.get(p.id) ?? {};
    const speaking = self ? S.selfLevel > SPEAKING_LEVEL * 4 : (S.levels.get(p.id) ?? 0) > SPEAKING_LEVEL;
    const li = el("li", { class: `person${speaking ? " speaking" : ""}`, "data-participant-id": p.id },
      el("span", { class: "speak-dot", role: "img", "aria-label": speaking ? "speaking" : "not speaking" }),
      el("span", { class: "person-name", text: `${p.name}${self ? " (you)" : ""}` }));
    for (const [cls, text] of badgesFor(p)) li.append(el("span", { class: `badge ${cls}`, text }));
    const qi = client.handQueue.indexOf(p.id);
    if (qi >= 0) li.append(el("span", { class: "badge hand", text: `hand #${qi + 1}`, title: "hand raised" }));
    if (!self && slot.microphone) li.append(el("span", { class: "badge", text: slot.microphone.info.muted ? "muted" : "mic on" }));
    if (!self && slot.screen) li.append(el("span", { class: "badge", text: "sharing screen" }));
    if (!self && !slot.microphone && !slot.camera) li.append(el("span", { class: "badge dim", text: "listening" }));
    if (!self) {
      li.append(el("button", {
        type: "button",
        class: "secondary small pin-button",
        "aria-pressed": String(S.view.pinned === p.id),
        "aria-label": `Pin ${p.name} to the main view`,
        text: S.view.pinned === p.id ? "Unpin" : "Pin",
        onclick: () => actions.onPin(p.id),
      }));
    }
    if (isHost && !self) {
      li.append(el("button", {
        type: "button",
        class: "secondary small menu-button",
        "aria-haspopup": "menu",
        "aria-expanded": "false",
        "aria-label": `Actions for ${p.name}`,
        text: "⋯",
        onclick: (/** @type {Event} */ ev) => toggleMenu(S, actions, p.id, /** @type {HTMLElement} */ (ev.currentTarget)),
      }));
    }
    items.push(li);
  }
  if (shown.length > LIMIT) items.push(el("li", { class: "hint", text: `…and ${shown.length - LIMIT} more: search to find them.` }));
  if (!shown.length) items.push(el("li", { class: "hint", text: "Nobody matches." }));
  const next = items.map((li) => (li.dataset.participantId ?? "") + li.textContent +
    (li.querySelector(".pin-button")?.getAttribute("aria-pressed") ?? "")).join("|") + isHost;
  if (next === signature && list.children.length === items.length) {
    items.forEach((li, i) => {
      const old = list.children[i];
      old.classList.toggle("speaking", li.classList.contains("speaking"));
      const dot = li.querySelector(".speak-dot");
      const oldDot = old.querySelector(".speak-dot");
      if (dot && oldDot && oldDot.getAttribute("aria-label") !== dot.getAttribute("aria-label")) {
        oldDot.setAttribute("aria-label", dot.getAttribute("aria-label") ?? "");
      }
    });
    return;
  }
  signature = next;
  const focused = document.activeElement;
  const focusedLabel = focused && list.contains(focused) ? focused.getAttribute("aria-label") : null;
  list.replaceChildren(...items);
  if (focusedLabel) /** @type {HTMLElement|null} */ (list.querySelector(`[aria-label="${CSS.escape(focusedLabel)}"]`))?.focus();
}

/** Closes the moderation menu (and gives the focus back to its button). */
export function closeMenu(refocus = false) {
  if (!openMenu) return;
  const { menu, button } = openMenu;
  menu.remove();
  button.setAttribute("aria-expanded", "false");
  openMenu = null;
  if (refocus) button.focus();
}

/** Whether a click at `target` is outside the open menu. @param {EventTarget|null} target */
export function outsideMenu(target) {
  return !!openMenu && target instanceof Node && !openMenu.menu.contains(target) && target !== openMenu.button;
}

/**
 * @param {AppState} S
 * @param {{onPin: (pid: string) => void, hostAct: (action: string, fields?: object) => void}} actions
 * @param {string} pid
 * @param {HTMLElement} button
 */
function toggleMenu(S, actions, pid, button) {
  const client = S.client;
  if (!client) return;
  if (openMenu?.pid === pid) return closeMenu(true);
  closeMenu();
  const p = client.participants.get(pid);
  if (!p) return;
  const slot = sourcesOf(client).get(pid) ?? {};
  /** @param {string} label @param {() => void} fn @param {string} [cls] */
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
  /** @param {string} action @param {object} [extra] */
  const host = (action, extra = {}) => actions.hostAct(action, { participant_id: pid, ...extra });
  const items = [];
  const listenerMode = !!client.roomState?.listener_mode;
  if (!p.is_host) {
    if (p.can_publish && (listenerMode || S.givenFloor.has(p.identity))) items.push(act("Take the floor back", () => host("take_floor")));
    else if (!p.can_publish || listenerMode) items.push(act("Give the floor", () => host("give_floor")));
  }
  items.push(act("Mute", () => host("mute")));
  items.push(act("Ask to unmute", () => host("ask_unmute")));
  if (slot.camera) items.push(act("Turn camera off", () => host("camera_off")));
  if (slot.screen) items.push(act("Stop screen share", () => host("stop_screen_share")));
  if (!p.is_host) items.push(act("Make host", () => confirmThen(`Make ${p.name} a host of this meeting?`, () => host("make_host"))));
  items.push(act("Remove from meeting…", () =>
    confirmThen(`Remove ${p.name} from the meeting?`, (bar) => host("remove", { bar }), { withBar: true }), "danger-text"));
  const menu = el("div", { class: "menu", role: "menu", "aria-label": `Actions for ${p.name}` }, ...items);
  menu.addEventListener("keydown", (ev) => {
    const buttons = /** @type {HTMLElement[]} */ ([...menu.querySelectorAll("[role=menuitem]")]);
    const i = buttons.indexOf(/** @type {HTMLElement} */ (document.activeElement));
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
  /** @type {HTMLElement|null} */ (menu.querySelector("[role=menuitem]"))?.focus();
}

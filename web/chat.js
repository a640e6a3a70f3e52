// @ts-check
// The Chat tab: the log (at most 500 messages kept, host messages highlighted), the
// unread counters on the Chat button and tab, and sending.

import { $, el } from "./dom.js";

/** @typedef {import("./state.js").AppState} AppState */

const KEEP = 500;

/**
 * Adds a message to the log; counts it unread when the Chat tab is not in view.
 * @param {AppState} S
 * @param {{participant_id: string, name: string, from_host: boolean, text: string}} m
 */
export function addChat(S, { participant_id, name, from_host, text }) {
  const log = $("chat-log");
  const self = participant_id === S.client?.me?.id;
  log.append(el("li", { class: `chat-msg${from_host ? " from-host" : ""}${self ? " self" : ""}` },
    el("span", { class: "chat-name", text: self ? `${name} (you)` : name }),
    from_host ? el("span", { class: "badge host", text: "host" }) : null,
    el("span", { class: "visually-hidden", text: ": " }),
    el("span", { class: "chat-text", text })));
  while (log.children.length > KEEP) log.firstElementChild?.remove();
  log.scrollTop = log.scrollHeight;
  const seen = S.view.sideOpen && S.view.tab === "chat";
  if (!seen && !self) {
    S.view.chatUnread += 1;
    showUnread(S);
  }
}

/** Draws the unread counters. @param {AppState} S */
export function showUnread(S) {
  const n = S.view.chatUnread;
  for (const id of ["chat-unread", "chat-unread-tab"]) {
    const badge = $(id);
    badge.hidden = n === 0;
    badge.textContent = n ? `${n} new` : "";
  }
}

/** Sends the typed message, if allowed. Returns a refusal text, or "". @param {AppState} S */
export function sendTyped(S) {
  const input = /** @type {HTMLInputElement} */ ($("chat-input"));
  const text = input.value.trim();
  const client = S.client;
  if (!text || !client) return "";
  if (client.permissions && !client.permissions.can_chat) return "You may not write in the chat in this meeting.";
  client.sendChat(text.slice(0, 2000));
  input.value = "";
  return "";
}

/** Empties the log (after leaving). */
export function clearChat() {
  $("chat-log").replaceChildren();
}

// @ts-check
// The Host tab: the speaker queue (give the floor, reorder, clear), who has the floor, the
// room's switches (mute everyone, lock, lobby), the lobby's waiting list (admit, deny) and
// ending the meeting. Every action goes to the server, which checks it; this file only
// draws and sends.

import { $, el } from "./dom.js";
import { badgesFor } from "./people.js";

/**
 * @typedef {import("./state.js").AppState} AppState
 * @typedef {(action: string, fields?: object) => void} HostAct
 */

/** A participant's name for the host's lists. @param {AppState} S @param {string} id */
function nameOf(S, id) {
  const c = S.client;
  if (id === c?.me?.id) return `${c.me.name} (you)`;
  return c?.participants.get(id)?.name ?? id;
}

/** @param {AppState} S @param {HostAct} hostAct */
export function renderHostPanel(S, hostAct) {
  const client = S.client;
  if (!client || !client.permissions?.is_host) return;
  const queue = client.handQueue;
  $("queue").replaceChildren(...queue.map((id, i) => {
    const name = nameOf(S, id);
    /** @param {number} delta */
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
          disabled: i === queue.length - 1, onclick: () => move(1) })));
  }));
  $("queue-empty").hidden = queue.length > 0;
  $("clear-queue").hidden = queue.length === 0;

  const rs = client.roomState ?? { locked: false, lobby: false, listener_mode: false, size: 0 };
  const floor = [...client.participants.values()].filter(
    (p) => !p.is_host && p.can_publish && (rs.listener_mode || S.givenFloor.has(p.identity)),
  );
  $("floor-list").replaceChildren(...floor.map((p) =>
    el("li", {},
      el("span", { class: "person-name", text: p.name }),
      el("button", { type: "button", class: "secondary small", "aria-label": `Take the floor back from ${p.name}`,
        text: "Take floor back", onclick: () => hostAct("take_floor", { participant_id: p.id }) }))));
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
  $("tab-host").textContent = waiting.length ? `Host (${waiting.length} waiting)` : "Host";
}

// @ts-check
// Governance on the page: the motion card everyone sees (large option buttons, a receipt
// once the vote counts, then the result), the countdown of whoever has the floor, and for
// hosts the quorum indicator and the list of motions with Open / Close. State comes from
// `client.gov` (governance.js, pure); this file only draws and sends. Parts that tick
// (countdowns) are updated in place, so a keyboard or screen-reader user keeps their place.

import { $, $button, el } from "./dom.js";
import {
  mayVote, toggleChoice, formatRemaining, quorumIndicator, voteReceipt, resultSummary, ruleText,
} from "./governance.js";

/**
 * @typedef {import("./state.js").AppState} AppState
 * @typedef {import("./governance.js").Motion} Motion
 * @typedef {(action: string, fields?: object) => void} HostAct
 */

let cardSignature = "";
let listSignature = "";

/** Everything governance on the page, drawn from the client's state. @param {AppState} S @param {HostAct} hostAct */
export function renderGovernance(S, hostAct) {
  renderMotionCard(S);
  renderSpeakingBar(S);
  if (S.client?.permissions?.is_host) renderHostGovernance(S, hostAct);
}

/** Redraws only what ticks: countdowns and vote counts. @param {AppState} S */
export function tickGovernance(S) {
  const gov = S.client?.gov;
  if (!gov) return;
  const m = shownMotion(S);
  if (m) $("motion-meta").textContent = metaText(S, m);
  renderSpeakingBar(S);
}

/** The motion the card shows: the open one, else the last closed one until hidden. @param {AppState} S */
function shownMotion(S) {
  const m = S.client?.gov.current() ?? null;
  if (!m || S.ballot.dismissed.has(`${m.id}/${m.state}`)) return null;
  return m;
}

/** @param {AppState} S @param {Motion} m */
function metaText(S, m) {
  const gov = /** @type {NonNullable<AppState["client"]>} */ (S.client).gov;
  if (m.state === "closed") return m.result?.closed_by === "deadline" ? "Closed at its deadline." : "Closed by a host.";
  const voted = `${m.votes_cast} ${m.votes_cast === 1 ? "has" : "have"} voted.`;
  const left = gov.remaining(m.id, Date.now());
  return left == null ? voted : `${voted} Closes in ${formatRemaining(left)}.`;
}

/** @param {AppState} S */
function renderMotionCard(S) {
  const card = $("motion-card");
  const client = S.client;
  const m = shownMotion(S);
  if (!client || !m) {
    card.hidden = true;
    cardSignature = "";
    return;
  }
  card.hidden = false;
  if (S.ballot.motionId !== m.id) {
    S.ballot.motionId = m.id;
    S.ballot.chosen = [];
    S.ballot.sending = false;
  }
  const mine = client.gov.myVotes.get(m.id);
  const sig = JSON.stringify([m.id, m.state, m.result?.votes_cast, S.ballot.chosen, mine, S.ballot.sending, client.me?.role]);
  $("motion-meta").textContent = metaText(S, m);
  if (sig === cardSignature) return;
  cardSignature = sig;

  $("motion-kind").textContent = m.kind === "secret"
    ? "Secret ballot: nobody, not even the hosts, can see what you choose."
    : "Recorded vote: names are shown with the result.";
  $("motion-title").textContent = m.title;
  $("motion-text").replaceChildren(...m.text.split("\n").filter(Boolean).map((line) => el("p", { text: line })));
  const result = $("motion-result");
  const options = $("motion-options");
  const cast = $button("cast-vote");
  if (m.state === "closed") {
    options.replaceChildren();
    options.hidden = true;
    cast.hidden = true;
    $("vote-receipt").textContent = mine ? "You voted." : "";
    result.replaceChildren(resultTable(m));
    result.hidden = false;
    return;
  }
  result.replaceChildren();
  result.hidden = true;
  const { may, why } = mayVote(m, client.me);
  const final = m.kind === "secret" && !!mine;
  const shown = S.ballot.chosen.length ? S.ballot.chosen : mine?.choices ?? [];
  options.hidden = false;
  options.replaceChildren(...m.options.map((option, i) => el("button", {
    type: "button",
    class: "vote-option",
    "aria-pressed": String(shown.includes(i)),
    "aria-disabled": String(!may || final),
    text: option,
    onclick: () => {
      if (!may || final) return;
      S.ballot.chosen = toggleChoice(S.ballot.chosen.length ? S.ballot.chosen : shown, i, m.max_choices);
      renderMotionCard(S);
    },
  })));
  cast.hidden = !may || final;
  const ready = S.ballot.chosen.length > 0 && !S.ballot.sending;
  cast.setAttribute("aria-disabled", String(!ready));
  cast.textContent = m.kind === "secret"
    ? "Cast my secret ballot (final)"
    : mine ? "Change my vote" : "Cast my vote";
  const choose = m.max_choices > 1 ? `Choose up to ${m.max_choices}, then cast your vote.` : "Choose one, then cast your vote.";
  $("vote-receipt").textContent = !may ? why
    : S.ballot.sending ? "Sending your vote…"
    : mine ? voteReceipt(m, mine)
    : choose;
  $("vote-receipt").classList.toggle("counted", !!mine && !S.ballot.sending);
}

/** The result as a table with bars, and for a recorded vote who chose what. @param {Motion} m */
function resultTable(m) {
  const r = /** @type {NonNullable<Motion["result"]>} */ (m.result);
  const rows = r.options.map((o) => el("tr", {},
    el("th", { scope: "row", text: o.option }),
    el("td", { text: String(o.votes) }),
    el("td", {}, el("span", { class: "bar", style: `width: ${(o.percent_of_cast * 0.08).toFixed(2)}rem` }),
      el("span", { text: `${o.percent_of_cast.toFixed(1)}%` })),
    el("td", { text: `${o.percent_of_present.toFixed(1)}%` })));
  const table = el("table", { class: "result-table" },
    el("caption", { text: resultSummary(m) }),
    el("thead", {}, el("tr", {},
      el("th", { scope: "col", text: "Option" }), el("th", { scope: "col", text: "Votes" }),
      el("th", { scope: "col", text: "Of votes cast" }), el("th", { scope: "col", text: "Of those present" }))),
    el("tbody", {}, ...rows));
  /** @type {HTMLElement[]} */
  const parts = [table];
  const q = r.quorum;
  if (q.rule.kind !== "none") {
    parts.push(el("p", { class: `quorum-line ${q.met ? "ok" : "bad"}`,
      text: `Quorum (${ruleText(q.rule)}): ${q.met ? "held" : "NOT held"} when the vote closed, with ${q.members_present} members present.` }));
  }
  if (m.kind === "recorded" && r.options.some((o) => o.voters?.length)) {
    parts.push(el("details", {}, el("summary", { text: "Who voted what" }),
      el("ul", {}, ...r.options.filter((o) => o.voters?.length).map((o) =>
        el("li", { text: `${o.option}: ${(o.voters ?? []).join(", ")}` })))));
  }
  return el("div", {}, ...parts);
}

/** Who has the floor, with their time left. @param {AppState} S */
function renderSpeakingBar(S) {
  const bar = $("speaking-bar");
  const gov = S.client?.gov;
  if (!gov || gov.speaking.length === 0) {
    bar.hidden = true;
    return;
  }
  const now = Date.now();
  bar.hidden = false;
  const parts = gov.speaking.map((s) => {
    const left = gov.speakingLeft(s.participant_id, now);
    if (left == null) return `${s.name} has the floor`;
    return left > 0 ? `${s.name} has the floor: ${formatRemaining(left)} left` : `${s.name}: speaking time is up`;
  });
  const text = parts.join(" · ");
  if (bar.textContent !== text) bar.textContent = text;
  bar.classList.toggle("over", gov.speaking.some((s) => gov.speakingLeft(s.participant_id, now) === 0));
}

/** The hosts' part: the quorum indicator and the motions with their buttons. @param {AppState} S @param {HostAct} hostAct */
function renderHostGovernance(S, hostAct) {
  const gov = /** @type {NonNullable<AppState["client"]>} */ (S.client).gov;
  const q = gov.quorum;
  const indicator = $("quorum-indicator");
  if (q) {
    const { text, tone } = quorumIndicator(q);
    indicator.textContent = text;
    indicator.className = `quorum-indicator ${tone}`;
    syncSettings(q.rule, gov.speakerLimit);
  }
  const motions = [...gov.motions.values()];
  const sig = JSON.stringify(motions.map((m) => [m.id, m.state, m.votes_cast]));
  if (sig === listSignature) return;
  listSignature = sig;
  const open = gov.open();
  $("motion-list").replaceChildren(...motions.map((m) => {
    const state = m.state === "open" ? `open, ${m.votes_cast} voted` : m.state;
    return el("li", { "data-motion-id": m.id },
      el("span", { class: "person-name", text: `${m.title}` }),
      el("span", { class: `badge ${m.state}`, text: `${m.kind === "secret" ? "secret" : "recorded"} · ${state}` }),
      m.state === "draft"
        ? el("button", { type: "button", class: "small", "aria-label": `Open the vote on ${m.title}`, text: "Open vote",
          "aria-disabled": String(!!open), onclick: () => hostAct("open_motion", { motion_id: m.id }) })
        : null,
      m.state === "open"
        ? el("button", { type: "button", class: "danger small", "aria-label": `Close the vote on ${m.title}`, text: "Close vote",
          onclick: () => hostAct("close_motion", { motion_id: m.id }) })
        : null);
  }));
  $("motion-list-empty").hidden = motions.length > 0;
}

let settingsSignature = "";

/**
 * Shows the room's settings in the hosts' inputs when they change (not while typing).
 * @param {import("./governance.js").QuorumRule} rule @param {number|null} limit
 */
function syncSettings(rule, limit) {
  const sig = JSON.stringify([rule, limit]);
  if (sig === settingsSignature) return;
  const inputs = ["quorum-kind", "quorum-value", "speaker-limit"].map($);
  if (inputs.includes(/** @type {HTMLElement} */ (document.activeElement))) return;
  settingsSignature = sig;
  /** @type {HTMLSelectElement} */ (inputs[0]).value = rule.kind;
  const n = rule.kind === "members" ? rule.count : rule.kind === "share" ? rule.percent : "";
  /** @type {HTMLInputElement} */ (inputs[1]).value = String(n);
  /** @type {HTMLInputElement} */ (inputs[2]).value = String(limit ?? 0);
}

/** Forgets what the card drew (after leaving). */
export function resetGovernanceView() {
  cardSignature = "";
  listSignature = "";
  settingsSignature = "";
}

// @ts-check
// Governance as the page knows it, built from the server's messages (docs/protocol.md §6):
// motions, this participant's votes, the quorum (hosts), who has the floor and their time.
// Pure: no DOM, no socket, the time is passed in — node's test runner tests it. client.js
// feeds it; motions.js draws it.

/**
 * @typedef {"recorded"|"secret"} MotionKind
 * @typedef {"draft"|"open"|"closed"} MotionState
 * @typedef {{kind: "none"} | {kind: "members", count: number} | {kind: "share", percent: number}} QuorumRule
 * @typedef {{rule: QuorumRule, members_present: number, required: number, met: boolean}} QuorumCheck
 * @typedef {{option: string, votes: number, percent_of_cast: number, percent_of_present: number,
 *   voters?: string[]}} OptionResult
 * @typedef {{options: OptionResult[], votes_cast: number, eligible_present: number,
 *   quorum: QuorumCheck, closed_by: "host"|"deadline"}} MotionResult
 * @typedef {{title: string, text: string, kind: MotionKind, options: string[], max_choices: number,
 *   allow_guests: boolean, duration_secs?: number}} MotionSpec
 * @typedef {MotionSpec & {id: string, state: MotionState, remaining_ms?: number, votes_cast: number,
 *   result?: MotionResult}} Motion
 * @typedef {{rule: QuorumRule, members_present: number, guests_present: number, required: number,
 *   votes_cast?: number, met?: boolean}} QuorumStatus
 * @typedef {{participant_id: string, name: string, elapsed_ms: number, limit_secs?: number,
 *   remaining_ms?: number}} Speaking
 * @typedef {{choices: number[]|null}} MyVote   null: a secret ballot, cast
 */

/** Limits the server checks too (so the form can say so first). */
export const MAX_TITLE = 200;
export const MAX_TEXT = 10_000;
export const MAX_OPTIONS = 20;

export class Governance {
  constructor() {
    /** id → motion, in the order they came @type {Map<string, Motion>} */
    this.motions = new Map();
    /** id → my vote @type {Map<string, MyVote>} */
    this.myVotes = new Map();
    /** @type {QuorumStatus|null} */
    this.quorum = null;
    /** @type {Speaking[]} */
    this.speaking = [];
    /** @type {number|null} */
    this.speakerLimit = null;
    /** motion id → local time it closes @type {Map<string, number>} */
    this.closesAt = new Map();
    /** participant id → local time their speaking time is up @type {Map<string, number>} */
    this.speakingUntil = new Map();
    /** participant id → local time they got the floor @type {Map<string, number>} */
    this.speakingSince = new Map();
  }

  /**
   * Applies one server message; returns whether it was about governance.
   * @param {any} msg
   * @param {number} now  local milliseconds (Date.now())
   */
  apply(msg, now) {
    switch (msg.type) {
      case "motion": {
        /** @type {Motion} */
        const m = msg.motion;
        this.motions.set(m.id, m);
        if (m.state === "open" && m.remaining_ms != null) this.closesAt.set(m.id, now + m.remaining_ms);
        else this.closesAt.delete(m.id);
        return true;
      }
      case "votes_cast": {
        const m = this.motions.get(msg.motion_id);
        if (m) m.votes_cast = msg.votes_cast;
        return true;
      }
      case "vote_recorded":
        this.myVotes.set(msg.motion_id, { choices: msg.choices ?? null });
        return true;
      case "quorum":
        this.quorum = msg.status;
        return true;
      case "speakers":
        this.speaking = msg.speaking || [];
        this.speakerLimit = msg.limit_secs ?? null;
        this.speakingUntil.clear();
        this.speakingSince.clear();
        for (const s of this.speaking) {
          this.speakingSince.set(s.participant_id, now - s.elapsed_ms);
          if (s.remaining_ms != null) this.speakingUntil.set(s.participant_id, now + s.remaining_ms);
        }
        return true;
      case "speaker_time_up":
        return true;
      default:
        return false;
    }
  }

  /** The open motion, if any. */
  open() {
    for (const m of this.motions.values()) if (m.state === "open") return m;
    return null;
  }

  /** The motion to show everyone: the open one, else the last one closed. */
  current() {
    const open = this.open();
    if (open) return open;
    /** @type {Motion|null} */
    let last = null;
    for (const m of this.motions.values()) if (m.state === "closed") last = m;
    return last;
  }

  /** Milliseconds until motion `id` closes by itself (null: no deadline). @param {string} id @param {number} now */
  remaining(id, now) {
    const at = this.closesAt.get(id);
    return at == null ? null : Math.max(0, at - now);
  }

  /** Speaking time left of `pid` (null: no limit). @param {string} pid @param {number} now */
  speakingLeft(pid, now) {
    const at = this.speakingUntil.get(pid);
    return at == null ? null : Math.max(0, at - now);
  }
}

/**
 * Whether this participant may vote on `m`, and if not, why.
 * @param {Motion} m
 * @param {{role: string, is_host: boolean}|null} me
 * @returns {{may: boolean, why: string}}
 */
export function mayVote(m, me) {
  if (m.state !== "open") return { may: false, why: m.state === "closed" ? "Voting has closed." : "Not open yet." };
  if (me && me.role === "guest" && !me.is_host && !m.allow_guests) {
    return { may: false, why: "Guests do not vote on this motion." };
  }
  return { may: true, why: "" };
}

/**
 * The choices after clicking option `i`: single choice picks it; multiple choice toggles
 * it, up to `max` (a click beyond the limit changes nothing).
 * @param {number[]} chosen @param {number} i @param {number} max
 */
export function toggleChoice(chosen, i, max) {
  if (max <= 1) return [i];
  if (chosen.includes(i)) return chosen.filter((c) => c !== i);
  if (chosen.length >= max) return chosen;
  return [...chosen, i].sort((a, b) => a - b);
}

/** `m:ss` (or `h:mm:ss`) of milliseconds, rounded up to the second. @param {number} ms */
export function formatRemaining(ms) {
  const total = Math.ceil(Math.max(0, ms) / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** A quorum rule in words. @param {QuorumRule} rule */
export function ruleText(rule) {
  if (rule.kind === "members") return `at least ${rule.count} members present`;
  if (rule.kind === "share") return `at least ${rule.percent}% of the members present vote`;
  return "no quorum";
}

/**
 * What the hosts' quorum indicator says, and its tone.
 * @param {QuorumStatus} q
 * @returns {{text: string, tone: "ok"|"bad"|"wait"}}
 */
export function quorumIndicator(q) {
  const guests = q.guests_present ? ` (+${q.guests_present} guest${q.guests_present === 1 ? "" : "s"})` : "";
  const present = `${q.members_present} member${q.members_present === 1 ? "" : "s"} present${guests}`;
  if (q.rule.kind === "none") return { text: `${present} · no quorum rule`, tone: "ok" };
  if (q.rule.kind === "members") {
    return q.met
      ? { text: `${present} · quorum ${q.required}: met`, tone: "ok" }
      : { text: `${present} · quorum ${q.required}: NOT met`, tone: "bad" };
  }
  if (q.met == null) return { text: `${present} · quorum: ${q.required} must vote (${q.rule.percent}%)`, tone: "wait" };
  return q.met
    ? { text: `${present} · ${q.votes_cast} of ${q.required} votes needed: quorum met`, tone: "ok" }
    : { text: `${present} · ${q.votes_cast} of ${q.required} votes needed: quorum NOT met yet`, tone: "bad" };
}

/**
 * A quorum rule from the host's form: kind "none" | "members" | "share" and a number.
 * @param {string} kind @param {string} value
 * @returns {{rule?: QuorumRule, error?: string}}
 */
export function ruleFromForm(kind, value) {
  if (kind === "none") return { rule: { kind: "none" } };
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) return { error: "Give a whole number of at least 1." };
  if (kind === "members") return { rule: { kind: "members", count: n } };
  if (kind === "share") {
    if (n > 100) return { error: "A share is at most 100%." };
    return { rule: { kind: "share", percent: n } };
  }
  return { error: "Choose a kind of quorum." };
}

/**
 * A motion from the host's form. Options: one per line; none gives For, Against, Abstain.
 * @param {{title: string, text: string, kind: string, options: string, maxChoices: string|number,
 *   allowGuests: boolean, minutes: string|number}} f
 * @returns {{spec?: MotionSpec, error?: string}}
 */
export function specFromForm(f) {
  const title = f.title.trim();
  if (!title) return { error: "Give the motion a title." };
  if (title.length > MAX_TITLE) return { error: `A title is at most ${MAX_TITLE} characters.` };
  const text = f.text.trim();
  if (text.length > MAX_TEXT) return { error: `The text is ${text.length} characters long; at most ${MAX_TEXT}.` };
  const options = f.options.split("\n").map((o) => o.trim()).filter(Boolean);
  if (options.length === 1) return { error: "Give at least two options (or none for For / Against / Abstain)." };
  if (options.length > MAX_OPTIONS) return { error: `At most ${MAX_OPTIONS} options.` };
  const count = options.length || 3;
  const maxChoices = Number(f.maxChoices || 1);
  if (!Number.isInteger(maxChoices) || maxChoices < 1 || maxChoices > count) {
    return { error: `Voters may choose 1 to ${count} options.` };
  }
  const kind = f.kind === "secret" ? "secret" : "recorded";
  /** @type {MotionSpec} */
  const spec = { title, text, kind, options, max_choices: maxChoices, allow_guests: !!f.allowGuests };
  const minutes = Number(f.minutes || 0);
  if (minutes) {
    if (!(minutes > 0) || minutes > 24 * 60) return { error: "A deadline is up to 24 hours (in minutes)." };
    spec.duration_secs = Math.max(10, Math.round(minutes * 60));
  }
  return { spec };
}

/**
 * What a voter is shown after voting.
 * @param {Motion} m @param {MyVote|undefined} v
 */
export function voteReceipt(m, v) {
  if (!v) return "";
  if (v.choices == null) return "Your secret ballot is cast and counted. It cannot be changed.";
  const names = v.choices.map((i) => m.options[i]).filter(Boolean).join(", ");
  return `Your vote counts: ${names}. You can change it until the vote closes.`;
}

/**
 * A result in words for screen readers and the minutes view.
 * @param {Motion} m
 */
export function resultSummary(m) {
  const r = m.result;
  if (!r) return "";
  const parts = r.options.map((o) => `${o.option} ${o.votes} (${o.percent_of_cast.toFixed(1)}%)`);
  const q = r.quorum.rule.kind === "none" ? "" : r.quorum.met ? " Quorum held." : " Quorum NOT held.";
  return `${r.votes_cast} of ${r.eligible_present} voted: ${parts.join(", ")}.${q}`;
}

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Governance, mayVote, toggleChoice, formatRemaining, quorumIndicator, ruleFromForm, specFromForm,
  voteReceipt, resultSummary,
} from "../governance.js";

const motion = (o = {}) => ({
  id: "MO_1", title: "Budget", text: "", kind: "recorded", options: ["For", "Against", "Abstain"],
  max_choices: 1, allow_guests: false, state: "open", votes_cast: 0, ...o,
});

test("server messages build the motions, my votes and the deadlines", () => {
  const g = new Governance();
  assert.equal(g.apply({ type: "motion", motion: motion({ remaining_ms: 60_000 }) }, 1000), true);
  assert.equal(g.open()?.id, "MO_1");
  assert.equal(g.remaining("MO_1", 31_000), 30_000);
  g.apply({ type: "votes_cast", motion_id: "MO_1", votes_cast: 4 }, 2000);
  assert.equal(g.motions.get("MO_1")?.votes_cast, 4);
  g.apply({ type: "vote_recorded", motion_id: "MO_1", choices: [1] }, 2000);
  assert.deepEqual(g.myVotes.get("MO_1"), { choices: [1] });
  g.apply({ type: "motion", motion: motion({ state: "closed", result: { options: [] } }) }, 3000);
  assert.equal(g.open(), null);
  assert.equal(g.current()?.state, "closed", "the last result stays in view");
  assert.equal(g.remaining("MO_1", 3000), null);
  assert.equal(g.apply({ type: "chat" }, 0), false);
});

test("a secret ballot's receipt says it is cast, not what it chose", () => {
  const g = new Governance();
  g.apply({ type: "vote_recorded", motion_id: "MO_2" }, 0);
  assert.deepEqual(g.myVotes.get("MO_2"), { choices: null });
  assert.match(voteReceipt(motion({ kind: "secret" }), g.myVotes.get("MO_2")), /secret ballot is cast/);
  assert.equal(voteReceipt(motion(), { choices: [0] }), "Your vote counts: For. You can change it until the vote closes.");
  assert.equal(voteReceipt(motion(), undefined), "");
});

test("speaking time counts down from the server's figures", () => {
  const g = new Governance();
  g.apply({ type: "speakers", speaking: [{ participant_id: "PA_1", name: "Lou", elapsed_ms: 5000, limit_secs: 60, remaining_ms: 55_000 }], limit_secs: 60 }, 10_000);
  assert.equal(g.speakingLeft("PA_1", 20_000), 45_000);
  assert.equal(g.speakingLeft("PA_1", 99_000), 0);
  assert.equal(g.speakingSince.get("PA_1"), 5000);
  assert.equal(g.speakerLimit, 60);
  g.apply({ type: "speakers", speaking: [] }, 30_000);
  assert.equal(g.speakingLeft("PA_1", 30_000), null);
  assert.equal(g.speakerLimit, null);
});

test("guests may vote only where a host allowed it; closed motions take no votes", () => {
  const guest = { role: "guest", is_host: false };
  assert.deepEqual(mayVote(motion(), guest), { may: false, why: "Guests do not vote on this motion." });
  assert.equal(mayVote(motion({ allow_guests: true }), guest).may, true);
  assert.equal(mayVote(motion(), { role: "member", is_host: false }).may, true);
  assert.equal(mayVote(motion({ state: "closed" }), null).why, "Voting has closed.");
});

test("choosing: single choice replaces, multiple choice toggles up to the limit", () => {
  assert.deepEqual(toggleChoice([0], 2, 1), [2]);
  assert.deepEqual(toggleChoice([2], 0, 2), [0, 2]);
  assert.deepEqual(toggleChoice([0, 2], 1, 2), [0, 2], "the limit holds");
  assert.deepEqual(toggleChoice([0, 2], 0, 2), [2]);
});

test("times read as m:ss, rounded up", () => {
  assert.equal(formatRemaining(65_000), "1:05");
  assert.equal(formatRemaining(400), "0:01");
  assert.equal(formatRemaining(-5), "0:00");
  assert.equal(formatRemaining(3_725_000), "1:02:05");
});

test("the quorum indicator says present, required and met", () => {
  const base = { members_present: 8, guests_present: 2, votes_cast: undefined };
  const members = quorumIndicator({ ...base, rule: { kind: "members", count: 10 }, required: 10, met: false });
  assert.equal(members.tone, "bad");
  assert.match(members.text, /8 members present \(\+2 guests\) · quorum 10: NOT met/);
  const share = quorumIndicator({ ...base, rule: { kind: "share", percent: 50 }, required: 4 });
  assert.equal(share.tone, "wait");
  const voting = quorumIndicator({ ...base, rule: { kind: "share", percent: 50 }, required: 4, votes_cast: 4, met: true });
  assert.equal(voting.tone, "ok");
  assert.match(quorumIndicator({ ...base, rule: { kind: "none" }, required: 0, met: true }).text, /no quorum rule/);
});

test("the host's forms become rules and motions, or say what is wrong", () => {
  assert.deepEqual(ruleFromForm("members", "12"), { rule: { kind: "members", count: 12 } });
  assert.deepEqual(ruleFromForm("share", "50"), { rule: { kind: "share", percent: 50 } });
  assert.ok(ruleFromForm("share", "150").error);
  assert.ok(ruleFromForm("members", "x").error);
  const form = { title: " Budget ", text: "", kind: "secret", options: "", maxChoices: "1", allowGuests: false, minutes: "" };
  assert.deepEqual(specFromForm(form).spec, { title: "Budget", text: "", kind: "secret", options: [], max_choices: 1, allow_guests: false });
  const board = specFromForm({ ...form, options: "Alma\n\nBea\nCyd\n", maxChoices: 2, minutes: "5" }).spec;
  assert.deepEqual(board?.options, ["Alma", "Bea", "Cyd"]);
  assert.equal(board?.duration_secs, 300);
  assert.match(specFromForm({ ...form, title: "" }).error ?? "", /title/);
  assert.match(specFromForm({ ...form, options: "Only one" }).error ?? "", /two options/);
  assert.match(specFromForm({ ...form, text: "x".repeat(10_001) }).error ?? "", /at most 10000/);
  assert.match(specFromForm({ ...form, maxChoices: 4 }).error ?? "", /1 to 3/);
});

test("a result reads as one sentence", () => {
  const m = motion({
    state: "closed",
    result: {
      options: [{ option: "For", votes: 2, percent_of_cast: 66.7, percent_of_present: 50 }, { option: "Against", votes: 1, percent_of_cast: 33.3, percent_of_present: 25 }],
      votes_cast: 3, eligible_present: 4, closed_by: "host",
      quorum: { rule: { kind: "members", count: 3 }, members_present: 4, required: 3, met: true },
    },
  });
  assert.equal(resultSummary(m), "3 of 4 voted: For 2 (66.7%), Against 1 (33.3%). Quorum held.");
});

// @ts-check
// The guest's invitation page: the token is in the URL fragment (never sent to a server
// log). Shows what the invitation opens, asks for a display name, redeems the token for a
// guest grant and hands it to the meeting page in the fragment.

import { $, $input } from "./dom.js";
import { api, messageOf } from "./api.js";

const token = decodeURIComponent(location.hash.replace(/^#/, ""));
// Keep the token out of the address bar (and of screenshots) once read.
history.replaceState(null, "", location.pathname);

/** @param {string} text */
function status(text) {
  $("status").textContent = text;
}

async function main() {
  if (!token) {
    status("This link has no invitation in it. Ask the member who invited you for the full link.");
    return;
  }
  let inv;
  try {
    inv = await api("POST", "/api/invitations/preview", { token });
  } catch (e) {
    status(`This invitation cannot be used: ${messageOf(e)}.`);
    return;
  }
  $("room").textContent = inv.room;
  $("inviter").textContent = inv.inviter;
  $("label").textContent = inv.label;
  $("until").textContent = new Date(inv.valid_until * 1000).toLocaleString();
  const may = ["listen and watch", "write in the chat"];
  if (inv.can_speak) may.push("speak");
  if (inv.can_video) may.push("show your camera");
  $("may").textContent = may.join(", ");
  $("details").hidden = false;
  $("redeem").hidden = false;
  status(`${inv.inviter} invites you to the room “${inv.room}”.`);
  $("name").focus();
  $("redeem").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = $input("name").value.trim();
    if (!name) return;
    status("Joining…");
    try {
      const g = await api("POST", "/api/invitations/redeem", { token, name });
      const params = new URLSearchParams({
        grant: g.grant,
        room: g.room,
        name,
        camera: inv.can_video ? "1" : "0",
        mic: inv.can_speak ? "1" : "0",
      });
      location.assign(`/#${params}`);
    } catch (e) {
      status(`Could not join: ${messageOf(e)}.`);
    }
  });
}

main();

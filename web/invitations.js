// @ts-check
// "My invitations": create, list and revoke ambassador invitations (hosts see all).

import { $, $input, el } from "./dom.js";
import { api, ApiError, messageOf } from "./api.js";

/** @type {{handle: string, is_host: boolean}|null} */
let me = null;

/** @param {string} text */
function status(text) {
  $("status").textContent = text;
}

/** @param {{revoked: boolean, valid_until: number, uses: number, max_uses: number}} inv */
function stateOf(inv) {
  if (inv.revoked) return "revoked";
  if (inv.valid_until * 1000 <= Date.now()) return "expired";
  if (inv.uses >= inv.max_uses) return "used up";
  return "active";
}

async function refresh() {
  const { invitations } = await api("GET", `/api/invitations${me?.is_host ? "?all=1" : ""}`);
  const body = /** @type {HTMLElement} */ ($("list").querySelector("tbody"));
  body.replaceChildren(...invitations.map((/** @type {any} */ inv) => {
    const cells = [
      inv.room,
      inv.label,
      inv.inviter_handle,
      new Date(inv.valid_until * 1000).toLocaleString(),
      `${inv.uses} / ${inv.max_uses}`,
      stateOf(inv),
    ].map((text) => el("td", { text }));
    const revoke = stateOf(inv) === "active"
      ? el("button", {
        type: "button",
        text: "Revoke",
        "aria-label": `Revoke the invitation for ${inv.label}`,
        onclick: async () => {
          try {
            await api("DELETE", `/api/invitations/${encodeURIComponent(inv.id)}`);
            status(`Revoked the invitation for ${inv.label}.`);
            await refresh();
          } catch (e) {
            status(`Could not revoke: ${messageOf(e)}.`);
          }
        },
      })
      : null;
    return el("tr", {}, ...cells, el("td", {}, revoke));
  }));
}

async function main() {
  try {
    me = await api("GET", "/api/me");
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      location.assign(`/login`);
      return;
    }
    status(`Cannot load: ${messageOf(e)}.`);
    return;
  }
  if (!me) return;
  $("who").textContent = `${me.handle}${me.is_host ? " (host)" : ""}`;
  $("create").hidden = false;
  status("");
  $("create").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const created = await api("POST", "/api/invitations", {
        room: $input("room").value.trim(),
        label: $input("label").value.trim(),
        valid_hours: Number($input("hours").value),
        max_uses: Number($input("uses").value),
        can_speak: $input("speak").checked,
        can_video: $input("video").checked,
      });
      $input("link").value = created.link;
      $("link-box").hidden = false;
      $input("link").select();
      status(`Invitation created for ${created.invitation.label}.`);
      await refresh();
    } catch (e) {
      status(`Could not create the invitation: ${messageOf(e)}.`);
    }
  });
  await refresh();
}

main();

// "My invitations": create, list and revoke ambassador invitations (hosts see all).
const $ = (id) => document.getElementById(id);
let me = null;

function status(text) {
  $("status").textContent = text;
}

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  let data = {};
  try {
    data = await res.json();
  } catch {}
  if (!res.ok) {
    const err = new Error(data.error || `HTTP ${res.status}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

function stateOf(inv) {
  if (inv.revoked) return "revoked";
  if (inv.valid_until * 1000 <= Date.now()) return "expired";
  if (inv.uses >= inv.max_uses) return "used up";
  return "active";
}

async function refresh() {
  const { invitations } = await api("GET", `/api/invitations${me.is_host ? "?all=1" : ""}`);
  const body = $("list").querySelector("tbody");
  body.replaceChildren();
  for (const inv of invitations) {
    const tr = document.createElement("tr");
    const cells = [
      inv.room,
      inv.label,
      inv.inviter_handle,
      new Date(inv.valid_until * 1000).toLocaleString(),
      `${inv.uses} / ${inv.max_uses}`,
      stateOf(inv),
    ];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    const td = document.createElement("td");
    if (stateOf(inv) === "active") {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = "Revoke";
      b.setAttribute("aria-label", `Revoke the invitation for ${inv.label}`);
      b.addEventListener("click", async () => {
        try {
          await api("DELETE", `/api/invitations/${encodeURIComponent(inv.id)}`);
          status(`Revoked the invitation for ${inv.label}.`);
          await refresh();
        } catch (e) {
          status(`Could not revoke: ${e.message}.`);
        }
      });
      td.append(b);
    }
    tr.append(td);
    body.append(tr);
  }
}

async function main() {
  try {
    me = await api("GET", "/api/me");
  } catch (e) {
    if (e.status === 401) {
      location.assign(`/login`);
      return;
    }
    status(`Cannot load: ${e.message}.`);
    return;
  }
  $("who").textContent = `${me.handle}${me.is_host ? " (host)" : ""}`;
  $("create").hidden = false;
  status("");
  $("create").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const created = await api("POST", "/api/invitations", {
        room: $("room").value.trim(),
        label: $("label").value.trim(),
        valid_hours: Number($("hours").value),
        max_uses: Number($("uses").value),
        can_speak: $("speak").checked,
        can_video: $("video").checked,
      });
      $("link").value = created.link;
      $("link-box").hidden = false;
      $("link").select();
      status(`Invitation created for ${created.invitation.label}.`);
      await refresh();
    } catch (e) {
      status(`Could not create the invitation: ${e.message}.`);
    }
  });
  await refresh();
}

main();

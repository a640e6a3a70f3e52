// @ts-check
// Small DOM helpers shared by the page's modules: typed element lookups, an element builder,
// and the confirmation dialog. No meeting logic here.

/** @param {string} id @returns {HTMLElement} */
export const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
/** @param {string} id @returns {HTMLInputElement} */
export const $input = (id) => /** @type {HTMLInputElement} */ (document.getElementById(id));
/** @param {string} id @returns {HTMLSelectElement} */
export const $select = (id) => /** @type {HTMLSelectElement} */ (document.getElementById(id));
/** @param {string} id @returns {HTMLButtonElement} */
export const $button = (id) => /** @type {HTMLButtonElement} */ (document.getElementById(id));
/** @param {string} id @returns {HTMLVideoElement} */
export const $video = (id) => /** @type {HTMLVideoElement} */ (document.getElementById(id));
/** @param {string} id @returns {HTMLDialogElement} */
export const $dialog = (id) => /** @type {HTMLDialogElement} */ (document.getElementById(id));

/**
 * Builds an element: `el("button", {type: "button", class: "x", text: "Go", onclick}, child…)`.
 * `on*` props become listeners, `text` the text content, booleans set or skip attributes.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, any>} [props]
 * @param {...(Node|string|null|undefined)} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k in node && typeof v !== "string") /** @type {any} */ (node)[k] = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

/**
 * Asks before doing something drastic; `fn(barChecked)` runs on OK.
 * @param {string} text
 * @param {(bar: boolean) => void} fn
 * @param {{withBar?: boolean}} [opts]
 */
export function confirmThen(text, fn, { withBar = false } = {}) {
  const dialog = $dialog("confirm");
  $("confirm-text").textContent = text;
  $("confirm-bar-row").hidden = !withBar;
  $input("confirm-bar").checked = false;
  dialog.returnValue = "";
  const onClose = () => {
    dialog.removeEventListener("close", onClose);
    if (dialog.returnValue === "ok") fn($input("confirm-bar").checked);
  };
  dialog.addEventListener("close", onClose);
  dialog.showModal();
  $("confirm-cancel").focus();
}

/**
 * Shows a media track in a <video>, replacing what it showed (null: nothing).
 * @param {HTMLVideoElement} video
 * @param {MediaStreamTrack|null} track
 */
export function attachVideo(video, track) {
  const current = /** @type {MediaStream|null} */ (video.srcObject)?.getTracks()[0] ?? null;
  if (current === track) return;
  video.srcObject = track ? new MediaStream([track]) : null;
  if (track) video.play().catch(() => {});
}

/** A small inline icon from the sprite in index.html. @param {string} name */
export function icon(name) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  const use = document.createElementNS(ns, "use");
  use.setAttribute("href", `#i-${name}`);
  svg.append(use);
  return svg;
}

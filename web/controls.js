// @ts-check
// The meeting's control bar. `controlModel` turns what the participant sends and may send
// into each button's label, pressed state and whether it is usable (pure, tested by node);
// `applyControl` writes that onto a button: the label, `aria-pressed`, and
// `aria-disabled="true"|"false"` (a disabled control stays focusable, so the person can
// still reach it and learn why, and the style and screen readers both see it).

import { ordinal } from "./layout.js";

/**
 * @typedef {{publishing: boolean, muted: boolean, may: boolean, present: boolean}} DeviceState
 * @typedef {object} ControlInput
 * @property {DeviceState} microphone
 * @property {DeviceState} camera
 * @property {{sharing: boolean, may: boolean, supported: boolean}} screen
 * @property {{raised: boolean, position: number}} hand
 *
 * @typedef {{label: string, pressed: boolean, disabled: boolean, hint: string}} Control
 * @typedef {{microphone: Control, camera: Control, screen: Control, hand: Control}} Controls
 */

/**
 * @param {ControlInput} s
 * @returns {Controls}
 */
export function controlModel(s) {
  const mic = s.microphone;
  const cam = s.camera;
  /** @type {Control} */
  let microphone;
  if (mic.publishing) {
    microphone = {
      label: mic.muted ? "Unmute microphone" : "Mute microphone",
      pressed: mic.muted,
      disabled: false,
      hint: "",
    };
  } else if (!mic.may) {
    microphone = {
      label: "Microphone (needs the floor)",
      pressed: true,
      disabled: true,
      hint: "You can speak once a host gives you the floor: raise your hand.",
    };
  } else if (!mic.present) {
    microphone = { label: "No microphone found", pressed: true, disabled: true, hint: "Connect a microphone to speak." };
  } else {
    microphone = { label: "Turn microphone on", pressed: true, disabled: false, hint: "" };
  }
  /** @type {Control} */
  let camera;
  if (cam.publishing) {
    camera = { label: cam.muted ? "Start camera" : "Stop camera", pressed: cam.muted, disabled: false, hint: "" };
  } else if (!cam.may) {
    camera = {
      label: "Camera (needs permission)",
      pressed: true,
      disabled: true,
      hint: "You may not show your camera in this meeting now.",
    };
  } else if (!cam.present) {
    camera = { label: "No camera found", pressed: true, disabled: true, hint: "Connect a camera to show yourself." };
  } else {
    camera = { label: "Turn camera on", pressed: true, disabled: false, hint: "" };
  }
  const screen = {
    label: s.screen.sharing ? "Stop sharing" : "Share screen",
    pressed: s.screen.sharing,
    disabled: !s.screen.sharing && (!s.screen.may || !s.screen.supported),
    hint: !s.screen.supported ? "This browser cannot share the screen." : !s.screen.may ? "You may not share your screen now." : "",
  };
  const hand = {
    label: s.hand.raised ? `Lower hand (${ordinal(s.hand.position)} in queue)` : "Raise hand",
    pressed: s.hand.raised,
    disabled: false,
    hint: "",
  };
  return { microphone, camera, screen, hand };
}

/**
 * Writes a control onto its button (which holds a `.label` span).
 * @param {HTMLElement} button
 * @param {Control} c
 */
export function applyControl(button, c) {
  const label = button.querySelector(".label");
  if (label && label.textContent !== c.label) label.textContent = c.label;
  button.setAttribute("aria-pressed", String(c.pressed));
  button.setAttribute("aria-disabled", String(c.disabled));
  if (c.hint) button.title = c.hint;
  else button.removeAttribute("title");
}

// @ts-check
// The page's state in one object, shared by the modules (app.js creates it; the modules
// read and change it and redraw). Nothing else in the page keeps meeting state, so a
// reconnect or a new join resets exactly this.

import { StatusBoard } from "./status.js";

/**
 * @typedef {import("./client.js").PlenaryClient} PlenaryClient
 * @typedef {import("./layout.js").Layout} Layout
 * @typedef {"people"|"chat"|"host"} Tab
 *
 * @typedef {object} View
 * @property {number} page
 * @property {number} pageSize        0: from the window's width
 * @property {string|null} pinned
 * @property {string|null} activeSpeaker
 * @property {number} activeSince
 * @property {string} peopleFilter
 * @property {Tab} tab
 * @property {boolean} sideOpen
 * @property {number} chatUnread
 * @property {Layout|null} layout
 *
 * @typedef {object} Ballot
 * @property {string|null} motionId       the motion the choice is for
 * @property {number[]} chosen            options picked, not yet cast
 * @property {boolean} sending            cast, waiting for the server's receipt
 * @property {Set<string>} dismissed      "id/state" of motion cards hidden by the person
 *
 * @typedef {object} AppState
 * @property {{dev_mode: boolean, version: string, join_muted_above?: number, sign_in?: boolean}} info
 * @property {{handle: string, display_name: string, is_host: boolean}|null} member
 * @property {string|null} handedGrant     a grant from an invitation, used once
 * @property {PlenaryClient|null} client
 * @property {string} name
 * @property {string} room
 * @property {{microphone: boolean, camera: boolean}} want   what the person asked for
 * @property {{microphone: string, camera: string, speaker: string}} ids  chosen devices
 * @property {{microphone: boolean, camera: boolean}} present devices the browser lists
 * @property {MediaStream|null} screen
 * @property {Map<string, number>} levels   participant id → smoothed audio level
 * @property {number} selfLevel
 * @property {{level: string, rtt: number|null, loss: number, state: string}|null} quality
 * @property {Set<string>} givenFloor       identities this host gave the floor to
 * @property {Ballot} ballot                what this page is choosing on the motion card
 * @property {StatusBoard} status
 * @property {boolean} mediaTrouble         media is being mended, or cannot get through
 * @property {View} view
 */

/** @returns {View} */
export function freshView() {
  return {
    page: 0,
    pageSize: 0,
    pinned: null,
    activeSpeaker: null,
    activeSince: 0,
    peopleFilter: "",
    tab: "people",
    sideOpen: false,
    chatUnread: 0,
    layout: null,
  };
}

/** @returns {AppState} */
export function createState() {
  return {
    info: { dev_mode: false, version: "" },
    member: null,
    handedGrant: null,
    client: null,
    name: "",
    room: "",
    want: { microphone: true, camera: true },
    ids: { microphone: "", camera: "", speaker: "" },
    present: { microphone: true, camera: true },
    screen: null,
    levels: new Map(),
    selfLevel: 0,
    quality: null,
    givenFloor: new Set(),
    ballot: { motionId: null, chosen: [], sending: false, dismissed: new Set() },
    status: new StatusBoard(),
    mediaTrouble: false,
    view: freshView(),
  };
}

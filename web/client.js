// @ts-check
// Plenary's protocol layer: one WebSocket to `/rtc`, one RTCPeerConnection, the tracks this
// page publishes. Implements docs/protocol.md (version 1). No DOM and no UI here: app.js
// and its modules listen to the events and call the methods.
//
// Media privacy: the client only ever holds tracks it sends. It asks for them through the
// `openMedia(permissions)` callback once the server has said what this participant may
// publish, and it stops every track it can no longer send (permission revoked, server
// refusal, leave), so a listener's page never keeps a microphone open.
//
// Events (dispatched on the client, an EventTarget; `detail` is given):
//   "state"        {state, reason?}   connecting | waiting | joined | reconnecting | closed
//   "participants" {participants}     someone joined, changed or left
//   "tracks"       {remote}           the remote tracks we receive changed
//   "muted"        {track_id, muted}  a remote track was (un)muted by its publisher
//   "data"         {participant_id, text}
//   "chat"         {participant_id, name, from_host, text}
//   "hands"        {queue}            raised hands, in order
//   "permissions"  {permissions, previous}  (revoked tracks are already stopped)
//   "room"         {room_state}
//   "lobby"        {waiting}          (hosts) who waits in the lobby
//   "host_muted"   {track_id, source} a host muted / stopped one of our tracks
//   "asked_to_unmute" {by}
//   "published"    {source, track_id} the server accepted one of our tracks
//   "unpublished"  {source, reason}   one of our tracks stopped: "revoked" | "refused" |
//                                     "not_allowed" | "ended" (the device went away)
//   "connection"   {state}            the peer connection's state
//   "ice_restart"  {count}            the media path broke; ICE restarts on this session
//   "media_restored" {}               the path is back after ICE restarts
//   "media_unreachable" {reason}      media never got through (the network blocks UDP and
//                                     TCP to the server, and no TURN server helps)
//   "video_paused" {track_id, paused}  the server stopped (or resumed) a video for our
//                                     connection's sake
//   "dominant_speaker" {participant_id} who speaks now, as the server hears it
//   "governance"   the server's message  a motion, a vote count, our vote, the quorum,
//                                     the speakers (state in `client.gov`, governance.js)
//   "going_away"   {closes_in_ms, reconnect_after_ms, message}  the server is shutting down:
//                                     the session closes soon ("server_shutdown"); join again
//                                     after reconnect_after_ms, with a fresh grant
//   "error"        {code, message}    an error message from the server
//   "log"          {message}          human-readable trace

import { Governance } from "./governance.js";
import { PathWatch } from "./path.js";

export const PROTOCOL_VERSION = 1;
const PING_INTERVAL_MS = 10_000;
/** No pong for this long: the connection is treated as dropped. */
const PONG_TIMEOUT_MS = 25_000;
/** A resume token is good for a minute after the drop; we stop trying a little before. */
const RESUME_WINDOW_MS = 55_000;
/** Simulcast layers of a camera (low to high), as the server expects their RIDs. */
export const CAMERA_LAYERS = [
  { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 120_000 },
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 350_000 },
  { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 900_000 },
];
/** Media "disconnected" for this long (no ICE answers): restart ICE on the same session. */
const ICE_RESTART_AFTER_MS = 1_000;
/** An ICE restart that has not brought the path back after this long is tried again… */
const ICE_RESTART_WAIT_MS = 4_000;
/** How often the selected candidate pair is looked at (see path.js). */
const PATH_WATCH_MS = 500;
/** …this many times, before coming back on a new connection (join.resume). */
const ICE_RESTARTS_BEFORE_RESUME = 5;
/** A first media connection that has not come up after this long will not: say so. */
const MEDIA_CONNECT_MS = 15_000;
/** Leave reasons after which we do not try to come back. */
const FINAL_REASONS = new Set([
  "left", "replaced", "removed", "meeting_ended", "denied", "server_shutdown", "protocol_error",
]);
/** Error codes after which a plain rejoin cannot help. */
const FINAL_ERRORS = new Set([
  "invalid_grant", "unsupported_version", "room_locked", "barred", "resume_failed", "too_large",
]);

/**
 * @typedef {"microphone"|"camera"|"screen"|"screen_audio"} Source
 * @typedef {{id: string, identity: string, name: string, role: string, invited_by?: string,
 *   is_host: boolean, hand_raised: boolean, can_publish: boolean}} Participant
 * @typedef {{id: string, participant_id: string, kind: "audio"|"video", source: Source,
 *   muted: boolean}} TrackInfo
 * @typedef {{can_publish: Source[], can_subscribe: boolean, can_chat: boolean,
 *   is_host: boolean, has_floor: boolean}} Permissions
 * @typedef {{locked: boolean, lobby: boolean, listener_mode: boolean, size: number}} RoomState
 * @typedef {{track: MediaStreamTrack, source: Source, muted: boolean}} LocalTrack
 * @typedef {LocalTrack & {transceiver?: RTCRtpTransceiver, announced?: boolean}} Published
 * @typedef {{mid: string, track_id: string, participant_id: string, kind: string,
 *   source?: Source, track: MediaStreamTrack}} RemoteTrack
 * @typedef {(permissions: Permissions) => Promise<LocalTrack[]>} OpenMedia
 */

export class PlenaryClient extends EventTarget {
  /**
   * @param {object} opts
   * @param {string} opts.url         absolute ws:// or wss:// URL of `/rtc`
   * @param {string} opts.grant       the room grant (JWT)
   * @param {string} [opts.room]      the room (must equal the grant's)
   * @param {OpenMedia} [opts.openMedia] called once, after the first welcome, with what we
   *        may publish; resolves with the tracks to send (opened only then, so nothing is
   *        opened for a participant who may not use it). Tracks it returns that we may not
   *        send are stopped.
   * @param {boolean} [opts.reconnect] restore the session after a drop (default true)
   * @param {boolean} [opts.relayOnly] media only through the TURN server (to test one)
   */
  constructor({ url, grant, room, openMedia, reconnect = true, relayOnly = false }) {
    super();
    this.relayOnly = relayOnly;
    this.url = url;
    this.grant = grant;
    this.room = room;
    /** @type {OpenMedia|undefined} */
    this.openMedia = openMedia;
    /** Tracks we send, each with its transceiver once added. @type {Published[]} */
    this.publish = [];
    /** Live tracks kept across a reconnection, sent again after the new welcome. @type {LocalTrack[]} */
    this.kept = [];
    this.autoReconnect = reconnect;
    this.state = "new";
    /** @type {Participant|null} */
    this.me = null;
    /** @type {any} */
    this.welcome = null;
    /** @type {Permissions|null} */
    this.permissions = null;
    /** @type {RoomState|null} */
    this.roomState = null;
    /** @type {string[]} */
    this.handQueue = [];
    /** @type {Participant[]} */
    this.lobbyWaiting = [];
    this.resumeToken = "";
    /** participant id → record (others only) @type {Map<string, Participant>} */
    this.participants = new Map();
    /** track id → record (everyone's, from room events) @type {Map<string, TrackInfo>} */
    this.roomTracks = new Map();
    /** mid → remote track @type {Map<string, {track_id: string, participant_id: string}>} */
    this.midMap = new Map();
    /** mid → our own track id (from the server's answer) @type {Map<string, string>} */
    this.ownTracks = new Map();
    /** track id → remote track @type {Map<string, RemoteTrack>} */
    this.remote = new Map();
    /** Motions, our votes, the quorum, the speakers (rebuilt after every welcome). */
    this.gov = new Governance();
    /** remote track id → what we last told the server about it @type {Map<string, string>} */
    this.paused = new Map();
    /** remote video track ids the server paused for our connection @type {Set<string>} */
    this.bwPaused = new Set();
    /** the participant the server hears speaking @type {string|null} */
    this.dominantSpeaker = null;
    /** publish cameras in three simulcast layers */
    this.simulcast = true;
    /** @type {RTCIceServer[]} */
    this.iceServers = [];
    /** @type {WebSocket|null} */
    this.ws = null;
    /** @type {RTCPeerConnection|null} */
    this.pc = null;
    /** @type {RTCDataChannel|null} */
    this.dc = null;
    this.makingOffer = false;
    this.offerWanted = false;
    this.offerSent = false;
    /** @type {RTCIceCandidateInit[]} */
    this.pendingCandidates = [];
    /** @type {Promise<any>} */
    this.chain = Promise.resolve();
    /** @type {any} */
    this.pingTimer = null;
    this.pingId = 0;
    this.lastPong = 0;
    /** @type {string|null} */
    this.closeReason = null;
    /** @type {string|null} */
    this.fatalError = null;
    /** The server's `going_away`, if it said it is shutting down. @type {{closes_in_ms: number, reconnect_after_ms: number, message: string}|null} */
    this.goingAway = null;
    this.dropAt = 0;
    this.reconnects = 0;
    /** @type {any} */
    this.resumeTimer = null;
    /** @type {any} */
    this.mediaLostTimer = null;
    /** @type {any} */
    this.connectTimer = null;
    /** the current peer connection has been connected at least once */
    this.mediaConnected = false;
    /** ICE restarts made (every one, for the page and tests) */
    this.iceRestarts = 0;
    /** ICE restarts since the media path was last seen alive */
    this.restartsInRow = 0;
    /** when ICE was last restarted (ms) */
    this.lastRestartAt = 0;
    /** @type {any} */
    this.watchTimer = null;
    this.pathWatch = new PathWatch();
    /** media never got through on the current connection (see "media_unreachable") */
    this.mediaUnreachable = false;
  }

  /**
   * Opens the socket and joins; resolves with the welcome message (after the lobby, if the
   * room has one on), rejects when the server refuses.
   */
  join() {
    this.setState("connecting");
    return this.connect({ type: "join", protocol: PROTOCOL_VERSION, grant: this.grant });
  }

  /** Leaves the room and tears everything down (every local track stops). */
  leave() {
    if (this.state === "closed") return;
    this.send({ type: "leave" });
    this.closeReason = "left";
    this.shutdown("left");
  }

  /**
   * Publishes one more track (a screen share, the microphone once given the floor…): a new
   * `sendonly` transceiver and a new offer. A track we may not send is stopped and
   * reported (`unpublished`, reason `not_allowed`) unless `force` is set, which sends it
   * anyway so that the server's refusal can be seen.
   * @param {MediaStreamTrack} track
   * @param {Source} source
   */
  addTrack(track, source, { force = false, muted = false } = {}) {
    return this.enqueue(async () => {
      if (!this.pc) {
        track.stop();
        throw new Error("not joined");
      }
      if (!force && !this.mayPublish(source)) {
        track.stop();
        this.emit("unpublished", { source, reason: "not_allowed" });
        return;
      }
      // One track per source: a second one replaces the first.
      if (this.publish.some((p) => p.source === source)) this.dropSource(source, "replaced");
      this.attachTrack({ track, source, muted });
      this.offerWanted = true;
      await this.sendOffer();
    });
  }

  /**
   * Stops publishing `source`: the transceiver goes inactive, a new offer tells the server,
   * and the local track stops.
   * @param {Source} source
   */
  removeTrack(source) {
    return this.enqueue(async () => {
      if (!this.dropSource(source, "removed")) return;
      this.offerWanted = true;
      await this.sendOffer();
    });
  }

  /**
   * Switches the device behind a published source without renegotiating (the old track
   * stops; the new one keeps the mute state). Resolves false when `source` is not published,
   * in which case `track` is stopped.
   * @param {Source} source
   * @param {MediaStreamTrack} track
   */
  async replaceTrack(source, track) {
    const entry = this.publish.find((p) => p.source === source);
    if (!entry || !entry.transceiver) {
      track.stop();
      return false;
    }
    track.enabled = !entry.muted;
    await entry.transceiver.sender.replaceTrack(track);
    const old = entry.track;
    entry.track = track;
    this.watchEnded(entry);
    old.onended = null;
    old.stop();
    return true;
  }

  /** Whether our permissions allow publishing `source` now. @param {Source} source */
  mayPublish(source) {
    return !!this.permissions?.can_publish?.includes(source);
  }

  /** Whether we publish `source` now. @param {Source} source */
  publishing(source) {
    return this.publish.some((p) => p.source === source && p.track.readyState === "live");
  }

  /** Our live local track of `source`, if any. @param {Source} source */
  localTrack(source) {
    const entry = this.publish.find((p) => p.source === source && p.track.readyState === "live");
    return entry ? entry.track : null;
  }

  /**
   * Mutes or unmutes one of our own tracks by source.
   * @param {Source} source
   * @param {boolean} muted
   */
  setMuted(source, muted) {
    for (const entry of this.publish) {
      if (entry.source !== source) continue;
      entry.muted = muted;
      entry.track.enabled = !muted;
    }
    const trackId = this.ownTrackId(source);
    if (trackId) this.send({ type: "mute", track_id: trackId, muted });
  }

  /** Whether our track of `source` is muted (true when we have none). @param {Source} source */
  isMuted(source) {
    const entry = this.publish.find((p) => p.source === source);
    return entry ? !!entry.muted : true;
  }

  /** The server's id for our track of `source`, once answered. @param {Source} source */
  ownTrackId(source) {
    const mid = this.publish.find((p) => p.source === source)?.transceiver?.mid;
    return mid != null ? this.ownTracks.get(mid) : undefined;
  }

  /** Sends a small text message to the room. @param {string} text */
  sendData(text) {
    this.send({ type: "data", text });
  }

  /** Sends a chat message to the room. @param {string} text */
  sendChat(text) {
    this.send({ type: "chat", text });
  }

  /** Raises or lowers our hand. @param {boolean} raised */
  raiseHand(raised) {
    this.send({ type: "raise_hand", raised });
  }

  /**
   * Votes on a motion (the server answers `vote_recorded`, or an error saying why not).
   * @param {string} motionId @param {number[]} choices option indexes
   */
  vote(motionId, choices) {
    this.send({ type: "vote", motion_id: motionId, choices });
  }

  /**
   * A host action: `host("mute", {participant_id})`, `host("lock", {locked: true})`…
   * @param {string} action
   * @param {object} [fields]
   */
  host(action, fields = {}) {
    this.send({ type: "host", action, ...fields });
  }

  /**
   * What we show of remote tracks: paused (not shown), or the size in device pixels and the
   * importance of the tile, so the server sends a layer that fits. Only changes are sent.
   * @param {{track_id: string, paused: boolean, width?: number, height?: number,
   *   priority?: "stage"|"pinned"|"thumbnail"}[]} updates
   */
  setSubscription(updates) {
    const key = (/** @type {any} */ u) => `${u.paused}/${u.width ?? ""}x${u.height ?? ""}/${u.priority ?? ""}`;
    const changed = updates.filter((u) => this.paused.get(u.track_id) !== key(u));
    if (changed.length === 0) return;
    for (const u of changed) this.paused.set(u.track_id, key(u));
    this.send({ type: "subscription", tracks: changed });
  }

  /**
   * Per received track: {track_id, participant_id, kind, mid, framesDecoded,
   * packetsReceived, packetsLost, bytesReceived, audioLevel, frameWidth}, from getStats.
   */
  async stats() {
    if (!this.pc) return [];
    const report = await this.pc.getStats();
    /** @type {Map<string, string>} */
    const byTrackIdentifier = new Map();
    for (const tr of this.pc.getTransceivers()) {
      if (tr.mid != null && tr.receiver.track) byTrackIdentifier.set(tr.receiver.track.id, tr.mid);
    }
    /** @type {any[]} */
    const out = [];
    report.forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      const mid = s.mid ?? byTrackIdentifier.get(s.trackIdentifier);
      const mapped = mid != null ? this.midMap.get(mid) : undefined;
      if (!mapped) return;
      out.push({
        track_id: mapped.track_id,
        participant_id: mapped.participant_id,
        kind: s.kind ?? s.mediaType,
        mid,
        framesDecoded: s.framesDecoded ?? 0,
        frameWidth: s.frameWidth ?? 0,
        packetsReceived: s.packetsReceived ?? 0,
        packetsLost: s.packetsLost ?? 0,
        bytesReceived: s.bytesReceived ?? 0,
        audioLevel: s.audioLevel ?? 0,
      });
    });
    return out;
  }

  /** Connection health: {rtt (ms, or null), packetsReceived, packetsLost, state}. */
  async connectionStats() {
    if (!this.pc) return null;
    const report = await this.pc.getStats();
    /** @type {number|null} */
    let rtt = null;
    let packetsReceived = 0;
    let packetsLost = 0;
    report.forEach((s) => {
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
        if (typeof s.currentRoundTripTime === "number") rtt = s.currentRoundTripTime * 1000;
      } else if (s.type === "inbound-rtp") {
        packetsReceived += s.packetsReceived ?? 0;
        packetsLost += Math.max(0, s.packetsLost ?? 0);
      } else if (s.type === "remote-inbound-rtp" && rtt == null) {
        if (typeof s.roundTripTime === "number") rtt = s.roundTripTime * 1000;
      }
    });
    return { rtt, packetsReceived, packetsLost, state: this.pc.connectionState };
  }

  // ---- internals -------------------------------------------------------------------------

  /**
   * Opens a WebSocket and sends `joinMsg`; resolves on welcome, rejects on refusal.
   * @param {any} joinMsg
   * @returns {Promise<any>}
   */
  connect(joinMsg) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      let welcomed = false;
      /** @param {string} message @param {string} code */
      const fail = (message, code) => reject(Object.assign(new Error(message), { code }));
      ws.onopen = () => {
        if (this.room && !joinMsg.resume) joinMsg.room = this.room;
        this.send(joinMsg);
      };
      ws.onmessage = (ev) => {
        if (ws !== this.ws) return;
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch {
          this.log("unreadable message from server");
          return;
        }
        // Why the server is about to close counts at once, not after the signaling steps
        // queued before it: the socket's close may come first, and must not look like a
        // lost connection to come back from.
        if (msg.type === "closing") this.closeReason = msg.reason;
        if (msg.type === "error" && FINAL_ERRORS.has(msg.code)) this.fatalError = msg.code;
        // Governance is not part of the signaling steps: applied at once, so countdowns
        // start when the message arrives. The server sends it all again after a welcome.
        if (msg.type === "welcome") this.gov = new Governance();
        if (this.gov.apply(msg, Date.now())) {
          this.emit("governance", msg);
          return;
        }
        if (!welcomed && msg.type === "welcome") {
          welcomed = true;
          resolve(msg);
        } else if (!welcomed && msg.type === "error") {
          fail(`${msg.code}: ${msg.message}`, msg.code);
        } else if (!welcomed && msg.type === "closing") {
          fail(`closed by the server: ${msg.reason}`, msg.reason);
        }
        this.enqueue(() => this.onMessage(msg));
      };
      ws.onerror = () => {
        if (!welcomed) fail("could not reach the server", "unreachable");
      };
      ws.onclose = (ev) => {
        if (ws !== this.ws) return; // a socket we replaced
        if (!welcomed) fail(`connection closed (${ev.code})`, "closed");
        this.onSocketClosed(welcomed);
      };
    });
  }

  /** The WebSocket closed: come back if we can, else shut down. @param {boolean} welcomed */
  onSocketClosed(welcomed) {
    if (this.state === "closed") return;
    const final =
      (this.closeReason && FINAL_REASONS.has(this.closeReason)) ||
      (this.fatalError && FINAL_ERRORS.has(this.fatalError));
    if (this.state === "reconnecting") {
      // A resume attempt's socket closed without a welcome: try again (or give up).
      if (final) return this.shutdown(this.fatalError || this.closeReason || "closed");
      return this.scheduleResume();
    }
    if (!welcomed || final || !this.autoReconnect || !this.resumeToken) {
      return this.shutdown(this.fatalError || this.closeReason || "disconnected");
    }
    this.startReconnect("connection lost");
  }

  /** Begins restoring the session with `join.resume` on a new socket and peer connection. @param {string} why */
  startReconnect(why) {
    if (this.state === "closed" || this.state === "reconnecting") return;
    this.log(`reconnecting: ${why}`);
    this.dropAt = Date.now();
    this.setState("reconnecting", why);
    this.teardownMedia();
    const ws = this.ws;
    this.ws = null;
    try {
      ws?.close();
    } catch {}
    this.tryResume();
  }

  scheduleResume() {
    if (this.state !== "reconnecting") return;
    if (Date.now() - this.dropAt > RESUME_WINDOW_MS) {
      this.closeReason = "resume_failed";
      return this.shutdown("resume_failed");
    }
    clearTimeout(this.resumeTimer);
    const delay = Math.min(5000, 500 * 2 ** Math.min(this.reconnects, 4));
    this.resumeTimer = setTimeout(() => this.tryResume(), delay);
  }

  tryResume() {
    if (this.state !== "reconnecting") return;
    this.reconnects += 1;
    this.fatalError = null;
    this.closeReason = null;
    this.connect({ type: "join", protocol: PROTOCOL_VERSION, resume: this.resumeToken }).then(
      () => {
        this.reconnects = 0;
        this.log("session restored");
      },
      (err) => this.log(`resume attempt failed: ${err.message}`),
    );
  }

  /** Closes the peer connection but keeps our live local tracks, for the resume. */
  teardownMedia() {
    clearInterval(this.pingTimer);
    clearInterval(this.watchTimer);
    clearTimeout(this.mediaLostTimer);
    clearTimeout(this.connectTimer);
    this.pingTimer = null;
    try {
      this.pc?.close();
    } catch {}
    this.pc = null;
    this.dc = null;
    this.midMap = new Map();
    this.ownTracks = new Map();
    this.paused = new Map();
    this.bwPaused = new Set();
    this.makingOffer = false;
    this.offerWanted = false;
    this.offerSent = false;
    this.pendingCandidates = [];
    // What we sent goes out again after the new welcome, if its permissions allow.
    this.kept = this.publish
      .filter((p) => p.track.readyState === "live")
      .map(({ track, source, muted }) => ({ track, source, muted }));
    this.publish = [];
    if (this.remote.size) {
      this.remote = new Map();
      this.emitTracks();
    }
  }

  /** @param {object} msg */
  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  /** @param {string} message */
  log(message) {
    this.dispatchEvent(new CustomEvent("log", { detail: { message } }));
  }

  /** @param {string} type @param {any} detail */
  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** @param {string} state @param {string} [reason] */
  setState(state, reason) {
    this.state = state;
    this.emit("state", { state, reason });
  }

  /**
   * Runs signaling steps one after another, so SDP operations never interleave.
   * @param {() => any} fn
   */
  enqueue(fn) {
    this.chain = this.chain.then(fn).catch((err) => {
      console.error("plenary:", err);
      this.log(`error: ${err.message ?? err}`);
    });
    return this.chain;
  }

  /** @param {any} msg */
  async onMessage(msg) {
    switch (msg.type) {
      case "welcome":
        return this.onWelcome(msg);
      case "waiting":
        this.setState("waiting");
        return;
      case "answer":
        return this.onAnswer(msg);
      case "offer":
        return this.onServerOffer(msg);
      case "candidate":
        if (this.pc && msg.candidate && msg.candidate.candidate) {
          await this.pc.addIceCandidate(msg.candidate).catch((e) => this.log(`candidate: ${e}`));
        }
        return;
      case "participants_changed":
        return this.onParticipantsChanged(msg);
      case "track_published":
        this.roomTracks.set(msg.track.id, msg.track);
        this.emitParticipants();
        return;
      case "track_unpublished":
        this.roomTracks.delete(msg.track_id);
        this.paused.delete(msg.track_id);
        this.bwPaused.delete(msg.track_id);
        if (this.remote.delete(msg.track_id)) this.emitTracks();
        this.emitParticipants();
        return;
      case "track_muted": {
        const t = this.roomTracks.get(msg.track_id);
        if (t) t.muted = msg.muted;
        this.emit("muted", msg);
        return;
      }
      case "data":
      case "chat":
      case "asked_to_unmute":
        this.emit(msg.type, msg);
        return;
      case "video_paused":
        if (msg.paused) this.bwPaused.add(msg.track_id);
        else this.bwPaused.delete(msg.track_id);
        this.emit("video_paused", msg);
        return;
      case "dominant_speaker":
        this.dominantSpeaker = msg.participant_id;
        this.emit("dominant_speaker", msg);
        return;
      case "hand_queue":
        this.handQueue = msg.queue || [];
        this.emit("hands", { queue: this.handQueue });
        return;
      case "permissions_changed":
        return this.onPermissions(msg.permissions);
      case "room_state_changed":
        this.roomState = msg.room_state;
        this.emit("room", { room_state: this.roomState });
        return;
      case "lobby":
        this.lobbyWaiting = msg.waiting || [];
        this.emit("lobby", { waiting: this.lobbyWaiting });
        return;
      case "host_muted": {
        // A host muted our microphone, turned our camera off or stopped our screen share.
        const entry = this.publish.find(
          (p) => p.transceiver?.mid != null && this.ownTracks.get(p.transceiver.mid) === msg.track_id,
        );
        const source = msg.source ?? entry?.source;
        for (const p of this.publish) {
          if (p.source !== source) continue;
          p.muted = true;
          p.track.enabled = false;
        }
        this.emit("host_muted", { ...msg, source });
        return;
      }
      case "error":
        console.warn("plenary: server error", msg.code, msg.message);
        this.log(`server error ${msg.code}: ${msg.message}`);
        if (FINAL_ERRORS.has(msg.code)) this.fatalError = msg.code;
        this.emit("error", msg);
        return;
      case "closing":
        this.closeReason = msg.reason;
        this.log(`server closing session: ${msg.reason}`);
        return;
      case "going_away":
        // The server drains before a stop: no resume will work across it, so the page
        // joins again later (see rejoin.js) once this session has closed.
        this.goingAway = {
          closes_in_ms: msg.closes_in_ms,
          reconnect_after_ms: msg.reconnect_after_ms,
          message: msg.message,
        };
        this.log(`server going away: ${msg.message}`);
        this.emit("going_away", this.goingAway);
        return;
      case "pong":
        this.lastPong = Date.now();
        return;
      default:
        this.log(`ignoring unknown message ${msg.type}`);
    }
  }

  /** @param {{joined?: Participant[], updated?: Participant[], left?: {id: string}[]}} msg */
  onParticipantsChanged(msg) {
    const myId = this.me?.id;
    for (const p of [...(msg.joined || []), ...(msg.updated || [])]) {
      if (p.id === myId) this.me = p;
      else this.participants.set(p.id, p);
    }
    let tracksChanged = false;
    for (const l of msg.left || []) {
      this.participants.delete(l.id);
      for (const [id, t] of this.roomTracks) {
        if (t.participant_id === l.id) this.roomTracks.delete(id);
      }
      for (const [id, r] of this.remote) {
        if (r.participant_id === l.id) {
          this.remote.delete(id);
          tracksChanged = true;
        }
      }
    }
    this.emitParticipants();
    if (tracksChanged) this.emitTracks();
    if ((msg.joined || []).length) this.refreshRemote();
  }

  /**
   * New permissions: tracks we may no longer send stop *before* anyone hears of the change,
   * so the page never sees permissions that contradict what it publishes.
   * @param {Permissions} permissions
   */
  async onPermissions(permissions) {
    const previous = this.permissions;
    this.permissions = permissions;
    const revoked = [...new Set(this.publish.filter((p) => !this.mayPublish(p.source)).map((p) => p.source))];
    for (const source of revoked) this.dropSource(source, "revoked");
    this.emit("permissions", { permissions, previous });
    if (revoked.length && this.pc) {
      this.offerWanted = true;
      await this.sendOffer();
    }
  }

  /**
   * Stops every track of `source` we send or mean to send and turns its transceiver
   * inactive; returns whether there was one. The caller renegotiates.
   * @param {Source} source
   * @param {string} reason
   */
  dropSource(source, reason) {
    const gone = this.publish.filter((p) => p.source === source);
    if (gone.length === 0) return false;
    this.publish = this.publish.filter((p) => p.source !== source);
    for (const p of gone) {
      p.track.onended = null;
      p.track.stop();
      if (p.transceiver) {
        try {
          p.transceiver.sender.replaceTrack(null);
          p.transceiver.direction = "inactive";
        } catch {}
      }
    }
    if (reason !== "replaced") this.emit("unpublished", { source, reason });
    return true;
  }

  /** Adds a transceiver for a track we may send. @param {LocalTrack} local */
  attachTrack({ track, source, muted }) {
    track.enabled = !muted;
    /** @type {Published} */
    const entry = { track, source, muted };
    if (this.pc) {
      /** @type {RTCRtpTransceiverInit} */
      const init = { direction: "sendonly", streams: [new MediaStream([track])] };
      // A camera goes out in three layers; the server sends each attendee the one that
      // fits their tile and their connection.
      if (source === "camera" && this.simulcast) init.sendEncodings = CAMERA_LAYERS.map((l) => ({ ...l }));
      entry.transceiver = this.pc.addTransceiver(track, init);
    }
    this.publish.push(entry);
    this.watchEnded(entry);
  }

  /**
   * A device that goes away (unplugged, taken by the system) ends its track: stop
   * publishing it and say so.
   * @param {Published} entry
   */
  watchEnded(entry) {
    const track = entry.track;
    track.onended = () => {
      if (!this.publish.includes(entry) || entry.track !== track) return;
      this.enqueue(async () => {
        if (!this.dropSource(entry.source, "ended")) return;
        this.offerWanted = true;
        await this.sendOffer();
      });
    };
  }

  /** @param {any} msg */
  async onWelcome(msg) {
    const resumed = !!this.welcome;
    this.welcome = msg;
    this.me = msg.me;
    this.participants = new Map();
    this.roomTracks = new Map();
    for (const p of msg.participants) this.participants.set(p.id, p);
    for (const t of msg.tracks) this.roomTracks.set(t.id, t);
    this.iceServers = msg.ice_servers || [];
    /** @type {Permissions} */
    const permissions = msg.permissions;
    this.permissions = permissions;
    this.roomState = msg.room_state ?? null;
    this.handQueue = msg.hand_queue ?? [];
    this.resumeToken = msg.resume_token || this.resumeToken;
    this.lastPong = Date.now();

    // What we send: after a drop, what we sent before; on the first welcome, what the
    // page opens now that it knows what we may publish.
    /** @type {LocalTrack[]} */
    let local = this.kept;
    this.kept = [];
    if (!resumed && this.openMedia) {
      try {
        local = await this.openMedia(permissions);
      } catch (err) {
        this.log(`no media to send: ${err instanceof Error ? err.message : err}`);
        local = [];
      }
    }
    if (this.state === "closed") {
      for (const p of local) p.track.stop();
      return;
    }

    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      iceTransportPolicy: this.relayOnly ? "relay" : "all",
      bundlePolicy: "max-bundle",
      rtcpMuxPolicy: "require",
    });
    this.pc = pc;
    pc.onicecandidate = (ev) => {
      if (pc !== this.pc) return;
      const c = ev.candidate;
      /** @type {RTCIceCandidateInit} */
      const candidate = c
        ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex }
        : { candidate: "" };
      if (candidate.sdpMid == null) delete candidate.sdpMid;
      if (candidate.sdpMLineIndex == null) delete candidate.sdpMLineIndex;
      if (!c && !this.offerSent) return;
      if (this.offerSent) this.send({ type: "candidate", candidate });
      else this.pendingCandidates.push(candidate);
    };
    pc.ontrack = (ev) => {
      if (pc !== this.pc) return;
      // Remote tracks are tied to participants through the mid → track mapping the server
      // sent with its offer; refreshRemote() reads it from the transceivers.
      ev.track.onunmute = () => this.emitTracks();
      this.refreshRemote();
    };
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      this.onConnectionState(pc.connectionState);
    };
    this.mediaConnected = false;
    this.mediaUnreachable = false;
    this.restartsInRow = 0;
    clearTimeout(this.connectTimer);
    this.connectTimer = setTimeout(() => {
      if (pc === this.pc && !this.mediaConnected) this.onMediaUnreachable("timeout");
    }, MEDIA_CONNECT_MS);
    this.pathWatch = new PathWatch();
    clearInterval(this.watchTimer);
    this.watchTimer = setInterval(() => this.watchPath(), PATH_WATCH_MS);
    // Always a data channel, so the offer has an m-line even for a pure listener.
    this.dc = pc.createDataChannel("plenary");

    for (const p of local) {
      if (p.track.readyState !== "live") continue;
      if (this.mayPublish(p.source)) this.attachTrack(p);
      else {
        p.track.stop();
        this.emit("unpublished", { source: p.source, reason: "not_allowed" });
      }
    }

    this.setState("joined", resumed ? "resumed" : undefined);
    this.emit("permissions", { permissions: this.permissions, previous: null });
    if (this.roomState) this.emit("room", { room_state: this.roomState });
    this.emit("hands", { queue: this.handQueue });
    this.emitParticipants();

    await this.sendOffer();
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      this.send({ type: "ping", id: ++this.pingId });
      if (Date.now() - this.lastPong > PONG_TIMEOUT_MS && this.state === "joined") {
        this.startReconnect("the server stopped answering");
      }
    }, PING_INTERVAL_MS);
  }

  /**
   * The media path. A connection that came up and then breaks (Wi-Fi → 4G, a network that
   * drops out) restarts ICE on the same session — same participant, same hand, floor and
   * place in the queue. The break is noticed by the browser's state ("disconnected",
   * "failed") or, sooner, by watchPath(); only when several restarts do not help does the
   * client come back on a new connection with the resume token. A first connection that
   * never comes up is reported ("media_unreachable"), not retried forever in silence.
   * @param {RTCPeerConnectionState} state
   */
  onConnectionState(state) {
    this.log(`media ${state}`);
    this.emit("connection", { state });
    clearTimeout(this.mediaLostTimer);
    if (state === "connected") {
      this.mediaConnected = true;
      this.mediaUnreachable = false;
      clearTimeout(this.connectTimer);
      return;
    }
    if (!this.mediaConnected) {
      if (state === "failed") this.onMediaUnreachable("failed");
      return;
    }
    if (!this.autoReconnect || this.state !== "joined") return;
    if (state === "disconnected" || state === "failed") {
      const pc = this.pc;
      const check = () => {
        const now = pc?.connectionState;
        if (pc !== this.pc || (now !== "disconnected" && now !== "failed")) return;
        this.restartIce("media path lost");
        this.mediaLostTimer = setTimeout(check, ICE_RESTART_WAIT_MS);
      };
      this.mediaLostTimer = setTimeout(check, state === "failed" ? 0 : ICE_RESTART_AFTER_MS);
    }
  }

  /** Looks at the selected candidate pair: a path gone quiet restarts ICE (see path.js). */
  async watchPath() {
    const pc = this.pc;
    if (!pc || !this.mediaConnected || !this.autoReconnect || this.state !== "joined") return;
    /** @type {any} */
    let pair = null;
    try {
      const report = await pc.getStats();
      report.forEach((s) => {
        if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
      });
    } catch {
      return;
    }
    if (pc !== this.pc) return;
    const figures = pair && {
      id: String(pair.id),
      bytesReceived: pair.bytesReceived ?? 0,
      requestsSent: pair.requestsSent ?? 0,
      responsesReceived: pair.responsesReceived ?? 0,
    };
    const verdict = this.pathWatch.update(figures, Date.now());
    if (verdict === "alive") {
      if (this.restartsInRow > 0) {
        this.restartsInRow = 0;
        this.log("media path back");
        this.emit("media_restored", {});
      }
    } else if (verdict === "quiet" && Date.now() - this.lastRestartAt >= ICE_RESTART_WAIT_MS) {
      this.restartIce("no answer on the media path");
    }
  }

  /**
   * Restarts ICE on this session: new credentials, new candidates, a new offer through the
   * signaling socket (protocol §2), and the server answers on the same session.
   * @param {string} why
   */
  restartIce(why) {
    const pc = this.pc;
    if (!pc || this.state !== "joined") return;
    if (Date.now() - this.lastRestartAt < ICE_RESTART_AFTER_MS) return;
    if (this.restartsInRow >= ICE_RESTARTS_BEFORE_RESUME) {
      if (this.resumeToken) this.startReconnect(why);
      return;
    }
    this.restartsInRow += 1;
    this.iceRestarts += 1;
    this.lastRestartAt = Date.now();
    this.log(`restarting ICE (${why})`);
    this.emit("ice_restart", { count: this.iceRestarts });
    pc.restartIce();
    this.offerWanted = true;
    this.enqueue(() => this.sendOffer());
  }

  /** Tries the media connection again after "media_unreachable" (a button on the page). */
  retryMedia() {
    if (!this.pc || this.mediaConnected) return;
    this.mediaUnreachable = false;
    this.restartsInRow = 0;
    const pc = this.pc;
    clearTimeout(this.connectTimer);
    this.connectTimer = setTimeout(() => {
      if (pc === this.pc && !this.mediaConnected) this.onMediaUnreachable("timeout");
    }, MEDIA_CONNECT_MS);
    this.log("trying the media connection again");
    pc.restartIce();
    this.offerWanted = true;
    this.enqueue(() => this.sendOffer());
  }

  /** @param {string} reason */
  onMediaUnreachable(reason) {
    if (this.mediaUnreachable || this.state !== "joined") return;
    this.mediaUnreachable = true;
    this.log(`media cannot get through (${reason})`);
    this.emit("media_unreachable", { reason });
  }

  /** Sends our own offer; only from the `stable` state (protocol §2.4). */
  async sendOffer() {
    const pc = this.pc;
    if (!pc) return;
    // Not stable: an answer (ours or the server's) is due; we offer once it is applied.
    if (pc.signalingState !== "stable") {
      this.offerWanted = true;
      return;
    }
    this.offerWanted = false;
    this.makingOffer = true;
    try {
      await pc.setLocalDescription(await pc.createOffer());
      const tracks = this.publish
        .filter((p) => p.transceiver?.mid != null)
        .map((p) => ({ mid: p.transceiver?.mid, source: p.source }));
      this.send({ type: "offer", sdp: pc.localDescription?.sdp, tracks });
      this.offerSent = true;
      for (const c of this.pendingCandidates.splice(0)) this.send({ type: "candidate", candidate: c });
    } finally {
      this.makingOffer = false;
    }
  }

  /** @param {{sdp: string, tracks?: {mid: string, track_id: string}[]}} msg */
  async onAnswer(msg) {
    const pc = this.pc;
    if (!pc || pc.signalingState !== "have-local-offer") {
      this.log("ignoring answer: no offer outstanding");
      return;
    }
    await pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
    for (const t of msg.tracks || []) this.ownTracks.set(t.mid, t.track_id);
    /** @type {Source[]} */
    const refused = [];
    for (const p of this.publish) {
      if (p.announced || p.transceiver?.mid == null) continue;
      const trackId = this.ownTracks.get(p.transceiver.mid);
      if (!trackId) {
        // The server gave this track no id: it refused it (with permission_denied).
        refused.push(p.source);
        continue;
      }
      p.announced = true;
      // Tell the server about tracks that start muted (e.g. joined muted in a large room).
      if (p.muted) this.send({ type: "mute", track_id: trackId, muted: true });
      this.emit("published", { source: p.source, track_id: trackId });
    }
    for (const source of refused) {
      this.log(`the server refused to take our ${source}`);
      this.dropSource(source, "refused");
    }
    this.refreshRemote();
    if (this.offerWanted || refused.length) await this.sendOffer();
  }

  /** @param {{sdp: string, tracks?: {mid: string, track_id: string, participant_id: string}[]}} msg */
  async onServerOffer(msg) {
    const pc = this.pc;
    if (!pc) return;
    // Glare: our own offer is outstanding, so the server will drop its offer and send a
    // new one after answering ours.
    if (this.makingOffer || pc.signalingState !== "stable") {
      this.log("ignoring server offer (our offer is outstanding)");
      return;
    }
    const mapping = new Map();
    for (const t of msg.tracks || []) {
      mapping.set(t.mid, { track_id: t.track_id, participant_id: t.participant_id });
    }
    this.midMap = mapping;
    await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    this.send({ type: "answer", sdp: pc.localDescription?.sdp });
    this.refreshRemote();
    if (this.offerWanted) await this.sendOffer();
  }

  /** Rebuilds the remote track table from the transceivers and the server's mid mapping. */
  refreshRemote() {
    if (!this.pc) return;
    /** @type {Map<string, RemoteTrack>} */
    const next = new Map();
    for (const tr of this.pc.getTransceivers()) {
      if (tr.mid == null) continue;
      const mapped = this.midMap.get(tr.mid);
      if (!mapped) continue;
      const dir = tr.currentDirection;
      if (dir !== "recvonly" && dir !== "sendrecv") continue;
      if (!this.participants.has(mapped.participant_id)) continue;
      next.set(mapped.track_id, {
        mid: tr.mid,
        track_id: mapped.track_id,
        participant_id: mapped.participant_id,
        kind: tr.receiver.track.kind,
        source: this.roomTracks.get(mapped.track_id)?.source,
        track: tr.receiver.track,
      });
    }
    const same =
      next.size === this.remote.size &&
      [...next].every(([id, r]) => this.remote.get(id)?.track === r.track);
    this.remote = next;
    if (!same) this.emitTracks();
  }

  emitParticipants() {
    this.emit("participants", { participants: [...this.participants.values()] });
  }

  emitTracks() {
    this.emit("tracks", { remote: [...this.remote.values()] });
  }

  /** @param {string} reason */
  shutdown(reason) {
    if (this.state === "closed") return;
    clearInterval(this.pingTimer);
    clearTimeout(this.resumeTimer);
    clearTimeout(this.mediaLostTimer);
    clearTimeout(this.connectTimer);
    clearInterval(this.watchTimer);
    this.pingTimer = null;
    // After a leave, the media connection closes once the server has said goodbye (it
    // closes the socket when the others know we left), bounded: hanging up first would
    // look like a lost connection to them.
    const pc = this.pc;
    const ws = this.ws;
    const closePc = () => {
      try {
        pc?.close();
      } catch {}
    };
    if (reason === "left" && ws && ws.readyState === WebSocket.OPEN) {
      this.ws = null; // what the server still says is no longer ours to act on
      const timer = setTimeout(closePc, 2000);
      ws.addEventListener("close", () => {
        clearTimeout(timer);
        closePc();
      });
    } else {
      closePc();
      try {
        ws?.close();
      } catch {}
    }
    for (const p of [...this.publish, ...this.kept]) {
      p.track.onended = null;
      p.track.stop();
    }
    this.publish = [];
    this.kept = [];
    this.participants.clear();
    this.remote.clear();
    this.setState("closed", reason);
  }
}

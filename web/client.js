// Plenary signaling + media client: one WebSocket to `/rtc`, one RTCPeerConnection.
// Implements docs/protocol.md (version 1). No UI here: app.js listens to the events.
//
// Events (dispatched on the client, an EventTarget):
//   "state"        detail: {state, reason?}   connecting | waiting | joined | reconnecting | closed
//   "participants" detail: {participants}     someone joined, changed or left
//   "tracks"       detail: {remote}           the remote tracks we receive changed
//   "muted"        detail: {track_id, muted}
//   "data"         detail: {participant_id, text}
//   "chat"         detail: {participant_id, name, from_host, text}
//   "hands"        detail: {queue}            raised hands, in order
//   "permissions"  detail: {permissions, previous}
//   "room"         detail: {room_state}
//   "lobby"        detail: {waiting}          (hosts) who waits in the lobby
//   "host_muted"   detail: {track_id, source} a host muted / stopped one of our tracks
//   "asked_to_unmute" detail: {by}
//   "published"    detail: {source, track_id} the server accepted one of our tracks
//   "refused"      detail: {source}           the server refused one of our tracks
//   "error"        detail: {code, message}    an error message from the server
//   "log"          detail: {message}          human-readable trace for the status line

export const PROTOCOL_VERSION = 1;
const PING_INTERVAL_MS = 10_000;
/** No pong for this long: the connection is treated as dropped. */
const PONG_TIMEOUT_MS = 25_000;
/** A resume token is good for a minute after the drop; we stop trying a little before. */
const RESUME_WINDOW_MS = 55_000;
/** Leave reasons after which we do not try to come back. */
const FINAL_REASONS = new Set([
  "left", "replaced", "removed", "meeting_ended", "denied", "server_shutdown", "protocol_error",
]);
/** Error codes after which a plain rejoin cannot help. */
const FINAL_ERRORS = new Set([
  "invalid_grant", "unsupported_version", "room_locked", "barred", "resume_failed", "too_large",
]);

export class PlenaryClient extends EventTarget {
  /**
   * @param {object} opts
   * @param {string} opts.url         absolute ws:// or wss:// URL of `/rtc`
   * @param {string} opts.grant       the room grant (JWT)
   * @param {string} [opts.room]      the room (must equal the grant's)
   * @param {Array<{track: MediaStreamTrack, source: string, muted?: boolean}>} [opts.publish]
   *        tracks to send, with their source: microphone, camera, screen, screen_audio.
   *        Tracks whose source the welcome's permissions do not allow are held back (see
   *        `held`) until a host gives the floor.
   * @param {boolean} [opts.reconnect] restore the session after a drop (default true)
   */
  constructor({ url, grant, room, publish = [], reconnect = true }) {
    super();
    this.url = url;
    this.grant = grant;
    this.room = room;
    /** Tracks we send (or mean to send once the transceivers exist). */
    this.publish = [];
    /** Tracks we would send but may not (yet): {track, source, muted}. */
    this.held = [];
    this.wanted = publish.map((p) => ({ track: p.track, source: p.source, muted: !!p.muted }));
    this.autoReconnect = reconnect;
    this.state = "new";
    this.me = null;
    this.welcome = null;
    this.permissions = null;
    this.roomState = null;
    this.handQueue = [];
    this.lobbyWaiting = [];
    this.resumeToken = "";
    /** @type {Map<string, object>} participant id → ParticipantInfo (others only) */
    this.participants = new Map();
    /** @type {Map<string, object>} track id → TrackInfo (everyone's, from room events) */
    this.roomTracks = new Map();
    /** @type {Map<string, {track_id: string, participant_id: string}>} mid → remote track */
    this.midMap = new Map();
    /** @type {Map<string, string>} mid → our own track id (from the server's answer) */
    this.ownTracks = new Map();
    /** @type {Map<string, {mid, track_id, participant_id, kind, track}>} track id → remote */
    this.remote = new Map();
    /** @type {Map<string, boolean>} remote track id → paused (what we asked the server) */
    this.paused = new Map();
    this.iceServers = [];
    this.ws = null;
    this.pc = null;
    this.dc = null;
    this.publishTransceivers = [];
    this.makingOffer = false;
    this.offerWanted = false;
    this.offerSent = false;
    this.pendingCandidates = [];
    this.chain = Promise.resolve();
    this.pingTimer = null;
    this.pingId = 0;
    this.lastPong = 0;
    this.closeReason = null;
    this.fatalError = null;
    this.dropAt = 0;
    this.reconnects = 0;
    this.resumeTimer = null;
  }

  /**
   * Opens the socket and joins; resolves with the welcome message (after the lobby, if the
   * room has one on), rejects when the server refuses.
   */
  join() {
    this.setState("connecting");
    return this.connect({ type: "join", protocol: PROTOCOL_VERSION, grant: this.grant });
  }

  /** Leaves the room and tears everything down. */
  leave() {
    if (this.state === "closed") return;
    this.send({ type: "leave" });
    this.closeReason = "left";
    this.shutdown("left");
  }

  /**
   * Publishes one more track (e.g. a screen share, or the microphone once given the floor)
   * after joining: a new `sendonly` transceiver and a new offer, sent from the `stable`
   * state (or once it is reached). `force` skips our own permission check, so that the
   * server's refusal can be seen.
   */
  addTrack(track, source, { force = false, muted = false } = {}) {
    return this.enqueue(async () => {
      if (!this.pc) throw new Error("not joined");
      if (!force && !this.mayPublish(source)) {
        this.held.push({ track, source, muted });
        this.log(`holding ${source}: not allowed to publish it now`);
        return;
      }
      this.attachTrack(track, source, muted);
      this.offerWanted = true;
      await this.sendOffer();
    });
  }

  /**
   * Stops publishing `source` (all its tracks): the transceiver goes inactive and a new
   * offer tells the server. The local tracks are stopped unless `keep` is set.
   */
  removeTrack(source, { keep = false } = {}) {
    return this.enqueue(async () => {
      const gone = this.publish.filter((p) => p.source === source);
      this.held = this.held.filter((p) => {
        if (p.source !== source) return true;
        if (!keep) p.track.stop();
        return false;
      });
      if (gone.length === 0) return;
      this.publish = this.publish.filter((p) => p.source !== source);
      for (const p of gone) if (!keep) p.track.stop();
      if (!this.pc) return;
      let changed = false;
      this.publishTransceivers = this.publishTransceivers.filter((p) => {
        if (p.source !== source) return true;
        try {
          p.transceiver.sender.replaceTrack(null);
          p.transceiver.direction = "inactive";
        } catch {}
        changed = true;
        return false;
      });
      if (changed) {
        this.offerWanted = true;
        await this.sendOffer();
      }
    });
  }

  /** Whether our permissions allow publishing `source` now. */
  mayPublish(source) {
    return !!this.permissions?.can_publish?.includes(source);
  }

  /** Whether we publish `source` now. */
  publishing(source) {
    return this.publish.some((p) => p.source === source && p.track.readyState === "live");
  }

  /** Mutes or unmutes one of our own tracks by source. */
  setMuted(source, muted) {
    for (const entry of [...this.publish, ...this.held, ...this.wanted]) {
      if (entry.source !== source) continue;
      entry.muted = muted;
      entry.track.enabled = !muted;
    }
    const trackId = this.ownTrackId(source);
    if (trackId) this.send({ type: "mute", track_id: trackId, muted });
  }

  /** Whether our track of `source` is muted (true when we have none). */
  isMuted(source) {
    const entry = this.publish.find((p) => p.source === source);
    return entry ? !!entry.muted : true;
  }

  /** The server's id for our track of `source`, once answered. */
  ownTrackId(source) {
    const entry = this.publishTransceivers.find((p) => p.source === source);
    const mid = entry?.transceiver.mid;
    return mid != null ? this.ownTracks.get(mid) : undefined;
  }

  /** Sends a small text message to the room. */
  sendData(text) {
    this.send({ type: "data", text });
  }

  /** Sends a chat message to the room. */
  sendChat(text) {
    this.send({ type: "chat", text });
  }

  /** Raises or lowers our hand. */
  raiseHand(raised) {
    this.send({ type: "raise_hand", raised });
  }

  /** A host action: `host("mute", {participant_id})`, `host("lock", {locked: true})`… */
  host(action, fields = {}) {
    this.send({ type: "host", action, ...fields });
  }

  /**
   * Pauses or resumes forwarding of remote tracks: `updates` is [{track_id, paused}].
   * Only changes are sent.
   */
  setSubscription(updates) {
    const changed = updates.filter((u) => (this.paused.get(u.track_id) ?? false) !== u.paused);
    if (changed.length === 0) return;
    for (const u of changed) this.paused.set(u.track_id, u.paused);
    this.send({ type: "subscription", tracks: changed });
  }

  /** Drops the connection as if the network went away (for testing resilience). */
  simulateDrop() {
    try {
      this.ws?.close();
    } catch {}
  }

  /**
   * Per remote track: {track_id, participant_id, kind, framesDecoded, packetsReceived,
   * bytesReceived, audioLevel}, from the peer connection's inbound-rtp statistics.
   */
  async stats() {
    if (!this.pc) return [];
    const report = await this.pc.getStats();
    const byTrackIdentifier = new Map();
    for (const tr of this.pc.getTransceivers()) {
      if (tr.mid != null && tr.receiver.track) byTrackIdentifier.set(tr.receiver.track.id, tr.mid);
    }
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

  /** Opens a WebSocket and sends `joinMsg`; resolves on welcome, rejects on refusal. */
  connect(joinMsg) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      let welcomed = false;
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
          this.log(`unreadable message from server`);
          return;
        }
        if (!welcomed && msg.type === "welcome") {
          welcomed = true;
          resolve(msg);
        } else if (!welcomed && msg.type === "error") {
          const err = new Error(`${msg.code}: ${msg.message}`);
          err.code = msg.code;
          reject(err);
        } else if (!welcomed && msg.type === "closing") {
          const err = new Error(`closed by the server: ${msg.reason}`);
          err.code = msg.reason;
          reject(err);
        }
        this.enqueue(() => this.onMessage(msg));
      };
      ws.onerror = () => {
        if (!welcomed) {
          const err = new Error("could not reach the server");
          err.code = "unreachable";
          reject(err);
        }
      };
      ws.onclose = (ev) => {
        if (ws !== this.ws) return; // a socket we replaced
        if (!welcomed) {
          const err = new Error(`connection closed (${ev.code})`);
          err.code = err.code || "closed";
          reject(err);
        }
        this.onSocketClosed(welcomed);
      };
    });
  }

  /** The WebSocket closed: come back if we can, else shut down. */
  onSocketClosed(welcomed) {
    if (this.state === "closed") return;
    const final =
      (this.closeReason && FINAL_REASONS.has(this.closeReason)) ||
      (this.fatalError && FINAL_ERRORS.has(this.fatalError));
    if (this.state === "reconnecting") {
      // A resume attempt's socket closed without a welcome: try again (or give up).
      if (final) return this.shutdown(this.fatalError || this.closeReason);
      return this.scheduleResume();
    }
    if (!welcomed || final || !this.autoReconnect || !this.resumeToken) {
      return this.shutdown(this.fatalError || this.closeReason || "disconnected");
    }
    this.startReconnect("connection lost");
  }

  /** Begins restoring the session with `join.resume` on a new socket and peer connection. */
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

  /** Closes the peer connection but keeps our local tracks, for a rejoin. */
  teardownMedia() {
    clearInterval(this.pingTimer);
    this.pingTimer = null;
    try {
      this.pc?.close();
    } catch {}
    this.pc = null;
    this.dc = null;
    this.publishTransceivers = [];
    this.midMap = new Map();
    this.ownTracks = new Map();
    this.paused = new Map();
    this.makingOffer = false;
    this.offerWanted = false;
    this.offerSent = false;
    this.pendingCandidates = [];
    // What we sent goes back to the wish list; the new welcome's permissions sort it again.
    this.wanted = [...this.publish, ...this.held].filter((p) => p.track.readyState === "live");
    this.publish = [];
    this.held = [];
    if (this.remote.size) {
      this.remote = new Map();
      this.emitTracks();
    }
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  log(message) {
    this.dispatchEvent(new CustomEvent("log", { detail: { message } }));
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  setState(state, reason) {
    this.state = state;
    this.emit("state", { state, reason });
  }

  /** Runs signaling steps one after another, so SDP operations never interleave. */
  enqueue(fn) {
    this.chain = this.chain.then(fn).catch((err) => {
      console.error("plenary:", err);
      this.log(`error: ${err.message ?? err}`);
    });
    return this.chain;
  }

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
      // Protocol before participants_changed (kept for older servers).
      case "participant_joined":
        return this.onParticipantsChanged({ joined: [msg.participant] });
      case "participant_left":
        return this.onParticipantsChanged({ left: [{ id: msg.participant_id, reason: msg.reason }] });
      case "track_published":
        this.roomTracks.set(msg.track.id, msg.track);
        this.emit("participants", { participants: [...this.participants.values()] });
        return;
      case "track_unpublished":
        this.roomTracks.delete(msg.track_id);
        this.paused.delete(msg.track_id);
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
        this.emit("data", msg);
        return;
      case "chat":
        this.emit("chat", msg);
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
        const entry = this.publishTransceivers.find(
          (p) => p.transceiver.mid != null && this.ownTracks.get(p.transceiver.mid) === msg.track_id,
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
      case "asked_to_unmute":
        this.emit("asked_to_unmute", msg);
        return;
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
      case "pong":
        this.lastPong = Date.now();
        return;
      default:
        this.log(`ignoring unknown message ${msg.type}`);
    }
  }

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

  async onPermissions(permissions) {
    const previous = this.permissions;
    this.permissions = permissions;
    // Tracks we held back and may now send go out; tracks we may no longer send stop.
    const release = this.held.filter((p) => this.mayPublish(p.source));
    this.held = this.held.filter((p) => !this.mayPublish(p.source));
    const revoked = this.publish.filter((p) => !this.mayPublish(p.source));
    this.emit("permissions", { permissions, previous });
    if (release.length && this.pc) {
      for (const p of release) this.attachTrack(p.track, p.source, p.muted);
      this.offerWanted = true;
      await this.sendOffer();
    }
    if (revoked.length && this.pc) {
      const sources = new Set(revoked.map((p) => p.source));
      this.publish = this.publish.filter((p) => !sources.has(p.source));
      for (const p of revoked) p.track.stop();
      this.publishTransceivers = this.publishTransceivers.filter((p) => {
        if (!sources.has(p.source)) return true;
        try {
          p.transceiver.sender.replaceTrack(null);
          p.transceiver.direction = "inactive";
        } catch {}
        return false;
      });
      this.offerWanted = true;
      await this.sendOffer();
    }
  }

  attachTrack(track, source, muted) {
    track.enabled = !muted;
    this.publish.push({ track, source, muted });
    const transceiver = this.pc.addTransceiver(track, {
      direction: "sendonly",
      streams: [new MediaStream([track])],
    });
    this.publishTransceivers.push({ source, transceiver });
  }

  async onWelcome(msg) {
    const resumed = !!this.welcome;
    this.welcome = msg;
    this.me = msg.me;
    this.participants = new Map();
    this.roomTracks = new Map();
    for (const p of msg.participants) this.participants.set(p.id, p);
    for (const t of msg.tracks) this.roomTracks.set(t.id, t);
    this.iceServers = msg.ice_servers || [];
    // Older servers send no permissions: then we may publish what we brought.
    this.permissions = msg.permissions ?? {
      can_publish: this.wanted.map((p) => p.source),
      can_subscribe: true,
      can_chat: true,
      is_host: false,
      has_floor: false,
    };
    this.roomState = msg.room_state ?? null;
    this.handQueue = msg.hand_queue ?? [];
    this.resumeToken = msg.resume_token || this.resumeToken;
    this.lastPong = Date.now();
    this.setState("joined", resumed ? "resumed" : undefined);
    this.emit("permissions", { permissions: this.permissions, previous: null });
    if (this.roomState) this.emit("room", { room_state: this.roomState });
    this.emit("hands", { queue: this.handQueue });
    this.emitParticipants();

    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      bundlePolicy: "max-bundle",
      rtcpMuxPolicy: "require",
    });
    this.pc = pc;
    pc.onicecandidate = (ev) => {
      if (pc !== this.pc) return;
      const c = ev.candidate;
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
      this.log(`media ${pc.connectionState}`);
      this.emit("connection", { state: pc.connectionState });
      if (pc.connectionState === "failed" && this.autoReconnect && this.resumeToken) {
        this.startReconnect("media connection failed");
      }
    };

    // Always a data channel, so the offer has an m-line even for a pure listener.
    this.dc = pc.createDataChannel("plenary");

    const wanted = this.wanted.filter((p) => p.track.readyState === "live");
    this.wanted = [];
    const stream = new MediaStream();
    for (const p of wanted) {
      if (!this.mayPublish(p.source)) {
        this.held.push(p);
        continue;
      }
      p.track.enabled = !p.muted;
      stream.addTrack(p.track);
      this.publish.push(p);
    }
    this.publishTransceivers = this.publish.map((p) => ({
      source: p.source,
      transceiver: pc.addTransceiver(p.track, { direction: "sendonly", streams: [stream] }),
    }));
    if (this.held.length) {
      this.log(`holding ${this.held.map((p) => p.source).join(", ")}: no permission to publish`);
    }

    await this.sendOffer();
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      this.send({ type: "ping", id: ++this.pingId });
      if (Date.now() - this.lastPong > PONG_TIMEOUT_MS && this.state === "joined") {
        this.startReconnect("the server stopped answering");
      }
    }, PING_INTERVAL_MS);
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
      const tracks = this.publishTransceivers
        .filter((p) => p.transceiver.mid != null)
        .map((p) => ({ mid: p.transceiver.mid, source: p.source }));
      this.send({ type: "offer", sdp: pc.localDescription.sdp, tracks });
      this.offerSent = true;
      for (const c of this.pendingCandidates.splice(0)) this.send({ type: "candidate", candidate: c });
    } finally {
      this.makingOffer = false;
    }
  }

  async onAnswer(msg) {
    const pc = this.pc;
    if (!pc || pc.signalingState !== "have-local-offer") {
      this.log("ignoring answer: no offer outstanding");
      return;
    }
    await pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
    for (const t of msg.tracks || []) this.ownTracks.set(t.mid, t.track_id);
    const refused = [];
    for (const p of this.publishTransceivers) {
      const trackId = p.transceiver.mid != null ? this.ownTracks.get(p.transceiver.mid) : undefined;
      const entry = this.publish.find((e) => e.track === p.transceiver.sender.track) ??
        this.publish.find((e) => e.source === p.source);
      if (p.announced || !entry) continue;
      if (!trackId) {
        // The server gave this track no id: it refused it (permission_denied). Keep the
        // track back; it goes out again if our permissions change.
        refused.push(p);
        continue;
      }
      p.announced = true;
      // Tell the server about tracks that start muted (e.g. joined muted in a large room).
      if (entry.muted) this.send({ type: "mute", track_id: trackId, muted: true });
      this.emit("published", { source: p.source, track_id: trackId });
    }
    for (const p of refused) {
      const track = p.transceiver.sender.track;
      const entry = this.publish.find((e) => e.track === track);
      this.publish = this.publish.filter((e) => e !== entry);
      this.publishTransceivers = this.publishTransceivers.filter((e) => e !== p);
      if (entry) this.held.push(entry);
      try {
        p.transceiver.sender.replaceTrack(null);
        p.transceiver.direction = "inactive";
      } catch {}
      this.log(`the server refused to take our ${p.source}`);
      this.emit("refused", { source: p.source });
    }
    this.refreshRemote();
    if (this.offerWanted) await this.sendOffer();
  }

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
    this.send({ type: "answer", sdp: pc.localDescription.sdp });
    this.refreshRemote();
    if (this.offerWanted) await this.sendOffer();
  }

  /** Rebuilds the remote track table from the transceivers and the server's mid mapping. */
  refreshRemote() {
    if (!this.pc) return;
    const next = new Map();
    for (const tr of this.pc.getTransceivers()) {
      if (tr.mid == null || tr.stopped) continue;
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

  shutdown(reason) {
    if (this.state === "closed") return;
    clearInterval(this.pingTimer);
    clearTimeout(this.resumeTimer);
    this.pingTimer = null;
    try {
      this.pc?.close();
    } catch {}
    const ws = this.ws;
    try {
      ws?.close();
    } catch {}
    for (const p of [...this.publish, ...this.held, ...this.wanted]) p.track.stop();
    this.participants.clear();
    this.remote.clear();
    this.setState("closed", reason);
  }
}

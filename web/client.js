// Plenary signaling + media client: one WebSocket to `/rtc`, one RTCPeerConnection.
// Implements docs/protocol.md (version 1). No UI here: app.js listens to the events.
//
// Events (dispatched on the client, an EventTarget):
//   "state"        detail: {state, reason?}   connecting | joined | closed
//   "participants" detail: {participants}     someone joined or left
//   "tracks"       detail: {remote}           the remote tracks we receive changed
//   "muted"        detail: {track_id, muted}
//   "data"         detail: {participant_id, text}
//   "error"        detail: {code, message}    an error message from the server
//   "log"          detail: {message}          human-readable trace for the status line

export const PROTOCOL_VERSION = 1;
const PING_INTERVAL_MS = 10_000;

export class PlenaryClient extends EventTarget {
  /**
   * @param {object} opts
   * @param {string} opts.url         absolute ws:// or wss:// URL of `/rtc`
   * @param {string} opts.grant       the room grant (JWT)
   * @param {string} [opts.room]      the room (must equal the grant's)
   * @param {Array<{track: MediaStreamTrack, source: string}>} [opts.publish]
   *        tracks to send, with their source: microphone, camera, screen, screen_audio
   */
  constructor({ url, grant, room, publish = [] }) {
    super();
    this.url = url;
    this.grant = grant;
    this.room = room;
    this.publish = publish;
    this.state = "new";
    this.me = null;
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
    this.iceServers = [];
    this.ws = null;
    this.pc = null;
    this.dc = null;
    this.makingOffer = false;
    this.offerWanted = false;
    this.offerSent = false;
    this.pendingCandidates = [];
    this.chain = Promise.resolve();
    this.pingTimer = null;
    this.pingId = 0;
  }

  /** Opens the socket and joins; resolves with the welcome message. */
  join() {
    this.setState("connecting");
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      let welcomed = false;
      ws.onopen = () => {
        const msg = { type: "join", protocol: PROTOCOL_VERSION, grant: this.grant };
        if (this.room) msg.room = this.room;
        this.send(msg);
      };
      ws.onmessage = (ev) => {
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
          reject(new Error(`${msg.code}: ${msg.message}`));
        }
        this.enqueue(() => this.onMessage(msg));
      };
      ws.onerror = () => {
        if (!welcomed) reject(new Error("could not reach the server"));
      };
      ws.onclose = (ev) => {
        if (!welcomed) reject(new Error(`connection closed (${ev.code})`));
        this.shutdown(this.closeReason || "disconnected");
      };
    });
  }

  /** Leaves the room and tears everything down. */
  leave() {
    if (this.state === "closed") return;
    this.send({ type: "leave" });
    this.closeReason = "left";
    this.shutdown("left");
  }

  /**
   * Publishes one more track (e.g. a screen share) after joining: a new `sendonly`
   * transceiver and a new offer, sent from the `stable` state (or once it is reached).
   */
  addTrack(track, source) {
    return this.enqueue(async () => {
      if (!this.pc) throw new Error("not joined");
      this.publish.push({ track, source });
      const transceiver = this.pc.addTransceiver(track, {
        direction: "sendonly",
        streams: [new MediaStream([track])],
      });
      this.publishTransceivers.push({ source, transceiver });
      this.offerWanted = true;
      await this.sendOffer();
    });
  }

  /** Mutes or unmutes one of our own tracks by source. */
  setMuted(source, muted) {
    const entry = this.publish.find((p) => p.source === source);
    if (!entry) return;
    entry.track.enabled = !muted;
    const tr = this.pc?.getTransceivers().find((t) => t.sender.track === entry.track);
    const trackId = tr?.mid != null ? this.ownTracks.get(tr.mid) : undefined;
    if (trackId) this.send({ type: "mute", track_id: trackId, muted });
  }

  /** Sends a small text message to the room. */
  sendData(text) {
    this.send({ type: "data", text });
  }

  /**
   * Per remote track: {track_id, participant_id, kind, framesDecoded, packetsReceived,
   * bytesReceived}, from the peer connection's inbound-rtp statistics.
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
        bytesReceived: s.bytesReceived ?? 0,
      });
    });
    return out;
  }

  // ---- internals -------------------------------------------------------------------------

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  log(message) {
    this.dispatchEvent(new CustomEvent("log", { detail: { message } }));
  }

  setState(state, reason) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, reason } }));
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
      case "answer":
        return this.onAnswer(msg);
      case "offer":
        return this.onServerOffer(msg);
      case "candidate":
        if (this.pc && msg.candidate && msg.candidate.candidate) {
          await this.pc.addIceCandidate(msg.candidate).catch((e) => this.log(`candidate: ${e}`));
        }
        return;
      case "participant_joined":
        this.participants.set(msg.participant.id, msg.participant);
        this.emitParticipants();
        this.refreshRemote();
        return;
      case "participant_left":
        this.participants.delete(msg.participant_id);
        for (const [id, t] of this.roomTracks) {
          if (t.participant_id === msg.participant_id) this.roomTracks.delete(id);
        }
        for (const [id, r] of this.remote) {
          if (r.participant_id === msg.participant_id) this.remote.delete(id);
        }
        this.emitParticipants();
        this.emitTracks();
        return;
      case "track_published":
        this.roomTracks.set(msg.track.id, msg.track);
        return;
      case "track_unpublished":
        this.roomTracks.delete(msg.track_id);
        if (this.remote.delete(msg.track_id)) this.emitTracks();
        return;
      case "track_muted": {
        const t = this.roomTracks.get(msg.track_id);
        if (t) t.muted = msg.muted;
        this.dispatchEvent(new CustomEvent("muted", { detail: msg }));
        return;
      }
      case "data":
        this.dispatchEvent(new CustomEvent("data", { detail: msg }));
        return;
      case "error":
        console.warn("plenary: server error", msg.code, msg.message);
        this.log(`server error ${msg.code}: ${msg.message}`);
        this.dispatchEvent(new CustomEvent("error", { detail: msg }));
        return;
      case "closing":
        this.closeReason = msg.reason;
        this.log(`server closing session: ${msg.reason}`);
        return;
      case "pong":
        return;
      default:
        this.log(`ignoring unknown message ${msg.type}`);
    }
  }

  async onWelcome(msg) {
    this.me = msg.me;
    for (const p of msg.participants) this.participants.set(p.id, p);
    for (const t of msg.tracks) this.roomTracks.set(t.id, t);
    this.iceServers = msg.ice_servers || [];
    this.setState("joined");
    this.emitParticipants();

    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      bundlePolicy: "max-bundle",
      rtcpMuxPolicy: "require",
    });
    this.pc = pc;
    pc.onicecandidate = (ev) => {
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
      // Remote tracks are tied to participants through the mid → track mapping the server
      // sent with its offer; refreshRemote() reads it from the transceivers.
      ev.track.onunmute = () => this.emitTracks();
      this.refreshRemote();
    };
    pc.onconnectionstatechange = () => {
      this.log(`media ${pc.connectionState}`);
      if (pc.connectionState === "failed") this.log("media connection failed");
    };

    // Always a data channel, so the offer has an m-line even for a pure listener.
    this.dc = pc.createDataChannel("plenary");

    const stream = new MediaStream(this.publish.map((p) => p.track));
    this.publishTransceivers = this.publish.map((p) => ({
      source: p.source,
      transceiver: pc.addTransceiver(p.track, { direction: "sendonly", streams: [stream] }),
    }));

    await this.sendOffer();
    this.pingTimer = setInterval(() => {
      this.send({ type: "ping", id: ++this.pingId });
    }, PING_INTERVAL_MS);
  }

  /** Sends our own offer; only from the `stable` state (protocol §2.4). */
  async sendOffer() {
    const pc = this.pc;
    // Not stable: an answer (ours or the server's) is due; we offer once it is applied.
    if (pc.signalingState !== "stable") return;
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
    this.dispatchEvent(
      new CustomEvent("participants", { detail: { participants: [...this.participants.values()] } }),
    );
  }

  emitTracks() {
    this.dispatchEvent(new CustomEvent("tracks", { detail: { remote: [...this.remote.values()] } }));
  }

  shutdown(reason) {
    if (this.state === "closed") return;
    clearInterval(this.pingTimer);
    this.pingTimer = null;
    try {
      this.pc?.close();
    } catch {}
    try {
      this.ws?.close();
    } catch {}
    this.participants.clear();
    this.remote.clear();
    this.setState("closed", reason);
  }
}

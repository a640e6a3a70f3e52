// @ts-check
// Cameras, microphones and speakers. `openDevices` asks the browser only for devices that
// exist and that the person wants, in one request, falling back to one request per device
// so that a missing camera never costs the microphone; every failure comes back as a
// sentence a person can act on (`explainMediaError`). Nothing here keeps a track: the
// caller owns what it gets and must stop it. The level meter and the speaker test tone live
// here too. `explainMediaError` and `planRequest` are pure and tested by node.

/** @typedef {"microphone"|"camera"} Device */

/** @type {Record<Device, MediaDeviceKind>} */
const KIND = { microphone: "audioinput", camera: "videoinput" };

/**
 * What to ask for: the wanted devices whose kind the browser lists (before permission it
 * lists kinds without labels). A wanted device with no such kind gets a NotFoundError
 * without asking.
 * @param {{microphone: boolean, camera: boolean}} want
 * @param {Set<string>} kinds  the kinds enumerateDevices listed
 * @returns {{ask: Device[], missing: Device[]}}
 */
export function planRequest(want, kinds) {
  /** @type {Device[]} */
  const ask = [];
  /** @type {Device[]} */
  const missing = [];
  for (const d of /** @type {Device[]} */ (["microphone", "camera"])) {
    if (!want[d]) continue;
    (kinds.has(KIND[d]) ? ask : missing).push(d);
  }
  return { ask, missing };
}

/**
 * A sentence for a failed device request.
 * @param {Device} device
 * @param {{name?: string, message?: string}} err
 */
export function explainMediaError(device, err) {
  const what = device === "microphone" ? "microphone" : "camera";
  switch (err?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return `You did not allow the ${what} (or the browser blocks it). Allow it in the site settings of your browser to use it.`;
    case "NotFoundError":
    case "OverconstrainedError":
      return `No ${what} found.`;
    case "NotReadableError":
    case "AbortError":
      return `The ${what} is in use by another program or cannot be started.`;
    default:
      return `The ${what} is not available (${err?.name || err?.message || "unknown error"}).`;
  }
}

/** @param {string} [id] */
export function audioConstraints(id) {
  return id ? { deviceId: { exact: id } } : true;
}

/**
 * The camera's capture: 960×540, the smallest size at which browsers send all three
 * simulcast layers (240×135, 480×270, 960×540); at 640×360 they send only two.
 * @param {string} [id]
 */
export function videoConstraints(id) {
  return {
    width: { ideal: 960 },
    height: { ideal: 540 },
    frameRate: { ideal: 20 },
    ...(id ? { deviceId: { exact: id } } : {}),
  };
}

/** The devices by kind; empty lists when the browser cannot tell. */
export async function listDevices() {
  /** @type {MediaDeviceInfo[]} */
  let all = [];
  try {
    all = (await navigator.mediaDevices?.enumerateDevices?.()) ?? [];
  } catch {}
  /** @param {MediaDeviceKind} kind */
  const of = (kind) => all.filter((d) => d.kind === kind);
  return { audioinput: of("audioinput"), videoinput: of("videoinput"), audiooutput: of("audiooutput") };
}

/**
 * @typedef {{microphone?: MediaStreamTrack, camera?: MediaStreamTrack}} Opened
 * @typedef {{microphone?: {name: string, message: string}, camera?: {name: string, message: string}}} Failures
 */

/**
 * Opens the wanted devices.
 * @param {{microphone: boolean, camera: boolean}} want
 * @param {{microphone?: string, camera?: string}} [ids] chosen device ids ("" = default)
 * @returns {Promise<{tracks: Opened, errors: Failures}>}
 */
export async function openDevices(want, ids = {}) {
  /** @type {Opened} */
  const tracks = {};
  /** @type {Failures} */
  const errors = {};
  if (!want.microphone && !want.camera) return { tracks, errors };
  if (!navigator.mediaDevices?.getUserMedia) {
    const err = { name: "NotSupportedError", message: "this browser (or an http:// page) offers no devices" };
    if (want.microphone) errors.microphone = err;
    if (want.camera) errors.camera = err;
    return { tracks, errors };
  }
  const d = await listDevices();
  const kinds = new Set([...d.audioinput, ...d.videoinput].map((x) => x.kind));
  const { ask, missing } = planRequest(want, kinds);
  for (const m of missing) errors[m] = { name: "NotFoundError", message: `no ${m}` };
  /** @param {Device[]} which */
  const request = async (which) => {
    const s = await navigator.mediaDevices.getUserMedia({
      audio: which.includes("microphone") ? audioConstraints(ids.microphone) : false,
      video: which.includes("camera") ? videoConstraints(ids.camera) : false,
    });
    const mic = s.getAudioTracks()[0];
    const cam = s.getVideoTracks()[0];
    if (mic) tracks.microphone = mic;
    if (cam) tracks.camera = cam;
  };
  if (ask.length === 0) return { tracks, errors };
  try {
    await request(ask);
  } catch (err) {
    const e = /** @type {{name: string, message: string}} */ (err);
    // Refused by the person or the browser: asking again one by one would only nag.
    if (ask.length === 1 || e.name === "NotAllowedError" || e.name === "SecurityError") {
      for (const a of ask) errors[a] = e;
    } else {
      for (const a of ask) {
        try {
          await request([a]);
        } catch (one) {
          errors[a] = /** @type {{name: string, message: string}} */ (one);
        }
      }
    }
  }
  return { tracks, errors };
}

/**
 * Opens one device (for switching during a meeting or turning it on later).
 * @param {Device} device
 * @param {string} [id]
 * @returns {Promise<MediaStreamTrack>}
 */
export async function openDevice(device, id) {
  const { tracks, errors } = await openDevices(
    { microphone: device === "microphone", camera: device === "camera" },
    { [device]: id },
  );
  const track = tracks[device];
  if (track) return track;
  throw Object.assign(new Error(explainMediaError(device, errors[device] ?? {})), {
    name: errors[device]?.name ?? "Error",
  });
}

/** @type {AudioContext|null} */
let audioCtx = null;

function audioContext() {
  if (!audioCtx) audioCtx = new AudioContext();
  if (audioCtx.state === "suspended") audioCtx.resume().catch(() => {});
  return audioCtx;
}

/** A microphone level meter: calls `onLevel(0..1)` ten times a second while attached. */
export class LevelMeter {
  /** @param {(level: number) => void} onLevel */
  constructor(onLevel) {
    this.onLevel = onLevel;
    /** @type {MediaStreamAudioSourceNode|null} */
    this.source = null;
    /** @type {any} */
    this.timer = null;
    /** @type {MediaStreamTrack|null} */
    this.track = null;
    this.level = 0;
  }

  /** Follows `track` (null: stops). @param {MediaStreamTrack|null} track */
  attach(track) {
    if (track === this.track) return;
    this.detach();
    if (!track) return;
    try {
      const ac = audioContext();
      const source = ac.createMediaStreamSource(new MediaStream([track]));
      const analyser = ac.createAnalyser();
      analyser.fftSize = 512;
      source.connect(analyser);
      const buf = new Float32Array(analyser.fftSize);
      this.source = source;
      this.track = track;
      this.timer = setInterval(() => {
        analyser.getFloatTimeDomainData(buf);
        let sum = 0;
        for (const x of buf) sum += x * x;
        const rms = Math.sqrt(sum / buf.length);
        const level = track.enabled && track.readyState === "live" ? Math.min(1, rms * 4) : 0;
        this.level = this.level * 0.6 + level * 0.4;
        this.onLevel(this.level);
      }, 100);
    } catch (err) {
      console.warn("level meter:", err);
    }
  }

  detach() {
    clearInterval(this.timer);
    this.timer = null;
    try {
      this.source?.disconnect();
    } catch {}
    this.source = null;
    this.track = null;
    this.level = 0;
    this.onLevel(0);
  }
}

/**
 * Plays a short generated tone on the chosen speakers.
 * @param {string} sinkId  "" = default
 */
export async function playTestTone(sinkId) {
  const ac = audioContext();
  const dest = ac.createMediaStreamDestination();
  const osc = ac.createOscillator();
  const gain = ac.createGain();
  osc.type = "sine";
  osc.frequency.value = 523.25;
  gain.gain.setValueAtTime(0.0001, ac.currentTime);
  gain.gain.exponentialRampToValueAtTime(0.3, ac.currentTime + 0.05);
  gain.gain.exponentialRampToValueAtTime(0.0001, ac.currentTime + 0.8);
  osc.connect(gain).connect(dest);
  const audio = new Audio();
  audio.srcObject = dest.stream;
  await setSink(audio, sinkId);
  osc.start();
  osc.stop(ac.currentTime + 0.85);
  await audio.play().catch(() => {});
  setTimeout(() => {
    audio.srcObject = null;
  }, 1200);
}

/** Whether the browser can choose the speakers (setSinkId). */
export const canChooseSpeakers = () => "setSinkId" in HTMLMediaElement.prototype;

/**
 * Sends an element's sound to the chosen speakers, where the browser allows it.
 * @param {HTMLMediaElement} el
 * @param {string} sinkId
 */
export async function setSink(el, sinkId) {
  const media = /** @type {HTMLMediaElement & {setSinkId?: (id: string) => Promise<void>}} */ (el);
  if (sinkId && media.setSinkId) await media.setSinkId(sinkId).catch(() => {});
}

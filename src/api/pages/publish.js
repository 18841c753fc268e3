// streamcore publish page: sends the camera and microphone (or a test pattern and tone) to one
// process over WHIP (RFC 9725). Served at /publish.js and loaded by /publish/{id}.
//
// The page relies on:
//   POST   /whip/{id}     Content-Type: application/sdp (the offer, with the candidates gathered
//                         within GATHER_CAP_MS), answered by 201 + answer, Location, ETag, Link
//   DELETE <Location>     when the user stops, the page goes away, or before a reconnect
// with "Authorization: Bearer <token>" on both when a token is set. There is no trickle ICE: the
// offer carries the candidates, and the server learns the rest peer-reflexively.
//
// Query parameters: ?token= (moved to sessionStorage, out of the address bar), ?source=camera|pattern,
// ?autostart=1 (start without a click). `window.streamcorePublish` holds the state for tests.
//
// The helpers at the top are pure (no DOM) so they can be unit-checked in node;
// the page itself only starts when there is a document.
"use strict";

const GATHER_CAP_MS = 2000; // the offer goes out with what was gathered by then
const POST_TIMEOUT_MS = 15000;
const CONNECT_TIMEOUT_MS = 20000; // answer applied, but ICE/DTLS never came up
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const STABLE_AFTER_MS = 10000; // live this long resets the backoff
const DISCONNECT_GRACE_MS = 3000; // "disconnected" often heals by itself; "failed" does not
const DEFAULT_RETRY_AFTER_MS = 2000;
const TOKEN_KEY = "streamcore.publish-token";
const PATTERN = { width: 1280, height: 720, fps: 30 };

// ---------------------------------------------------------------------------
// Pure helpers (the ones both pages need are in /webrtc.js)
// ---------------------------------------------------------------------------

/** Retry-After (delta-seconds or HTTP-date) in milliseconds, or `fallbackMs`. */
function parseRetryAfter(value, fallbackMs, now = Date.now()) {
  if (value == null || value.trim() === "") return fallbackMs;
  const ms = /^\d+$/.test(value.trim()) ? Number(value) * 1000 : Date.parse(value) - now;
  if (!Number.isFinite(ms)) return fallbackMs;
  return Math.min(Math.max(ms, 500), 300000); // never hammer, never wait absurdly long
}

/**
 * Video codecs (RTCRtpCodec capabilities) in the order this page prefers them: H.264 with
 * packetization-mode=1, constrained baseline first (what every WHEP viewer can decode and
 * what FFmpeg copies most happily), then VP8, then the rest. Retransmission/FEC entries go
 * last; they are kept so that RTX can still be negotiated. The sort is stable.
 */
function sortVideoCodecs(codecs) {
  const rank = (c) => {
    const mime = (c.mimeType ?? "").toLowerCase();
    const fmtp = (c.sdpFmtpLine ?? "").toLowerCase();
    if (mime === "video/h264") {
      if (!/(^|;)\s*packetization-mode=1\b/.test(fmtp)) return 4;
      const profile = /profile-level-id=([0-9a-f]{6})/.exec(fmtp)?.[1] ?? "";
      if (profile.startsWith("42e0")) return 0;
      if (profile.startsWith("42")) return 1;
      return 2;
    }
    if (mime === "video/vp8") return 3;
    if (/\/(rtx|red|ulpfec|flexfec-03)$/.test(mime)) return 6;
    return 5;
  };
  return codecs
    .map((c, i) => ({ c, i, r: rank(c) }))
    .sort((a, b) => a.r - b.r || a.i - b.i)
    .map((x) => x.c);
}

/**
 * What the page does with a failed POST (or a connection that failed):
 * {retry: false} (give up and show the error) or {retry: true, delayMs} (null delay:
 * the caller's backoff). `everConnected`: this run was live before, so the failure is
 * a reconnect attempt and transient refusals (404 while the process restarts, 409 while
 * the server still holds our dropped session) are retried too.
 */
function retryPolicy(status, retryAfter, everConnected) {
  if (status === 401 || status === 403) return { retry: false };
  if (retryAfter != null && retryAfter !== "") {
    return { retry: true, delayMs: parseRetryAfter(retryAfter, DEFAULT_RETRY_AFTER_MS) };
  }
  if (status === 429 || status === 503) return { retry: true, delayMs: DEFAULT_RETRY_AFTER_MS };
  if (status === 0 || status >= 500 || status === 408) return { retry: true, delayMs: null };
  if (everConnected && (status === 404 || status === 409)) return { retry: true, delayMs: null };
  return { retry: false }; // 400/404/406/409/415/422…: the same offer would fail again
}

/** The message shown for an HTTP refusal of the offer. */
function describeRefusal(status, detail, id) {
  const http = `HTTP ${status}${detail ? ": " + detail : ""}`;
  switch (status) {
    case 401:
      return `Token required or wrong (${http}). Enter a publish token and press Start.`;
    case 403:
      return `This token may not publish to "${id}" (${http}).`;
    case 404:
      return `No process "${id}" takes WHIP here; its input address must be {whip} (${http}).`;
    case 405:
      return `This server does not take WHIP (${http}).`;
    case 409:
      return `Another publisher is live on "${id}" (${http}).`;
    case 400:
    case 406:
    case 415:
    case 422:
      return `The server refused the offer (${http}).`;
    case 429:
    case 503:
      return `Server busy (${http}).`;
    default:
      return http;
  }
}

// ---------------------------------------------------------------------------
// WHIP session: one POST and its DELETE
// ---------------------------------------------------------------------------

class WhipError extends Error {
  constructor(message, status = 0, retryAfter = null, fatal = false) {
    super(message);
    this.status = status; // HTTP status; 0 for network errors and timeouts
    this.retryAfter = retryAfter; // raw Retry-After header value
    this.fatal = fatal; // retrying cannot help (e.g. the browser rejected the answer)
  }
}

/** Resolves once ICE gathering is complete, or after `capMs` (to `false`). */
function iceGathered(pc, capMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (complete) => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", onChange);
      pc.removeEventListener("icecandidate", onCandidate);
      resolve(complete);
    };
    const onChange = () => pc.iceGatheringState === "complete" && done(true);
    const onCandidate = (e) => e.candidate === null && done(true);
    const timer = setTimeout(() => done(false), capMs);
    pc.addEventListener("icegatheringstatechange", onChange);
    pc.addEventListener("icecandidate", onCandidate);
  });
}

class WhipSession extends HttpSession {
  /**
   * @param endpoint absolute WHIP endpoint URL
   * @param id the process id, for messages
   * @param token bearer token or ""
   * @param iceServers ICE servers learnt from an earlier 201
   * @param stream MediaStream with one video and one audio track
   * @param onState called with this session on every connection/ICE state change
   */
  constructor(endpoint, id, token, iceServers, stream, onState) {
    super("WHIP", endpoint, token, iceServers);
    this.id = id;
    this.pc = new RTCPeerConnection({ bundlePolicy: "max-bundle", iceServers });
    const changed = () => !this.closed && onState(this);
    this.pc.addEventListener("connectionstatechange", changed);
    this.pc.addEventListener("iceconnectionstatechange", changed);

    const video = stream.getVideoTracks()[0];
    const audio = stream.getAudioTracks()[0];
    this.video = video ? this.pc.addTransceiver(video, { direction: "sendonly", streams: [stream] }) : null;
    this.audio = audio ? this.pc.addTransceiver(audio, { direction: "sendonly", streams: [stream] }) : null;
    if (this.video) preferVideoCodecs(this.video);
  }

  /** Sends the offer; resolves once the answer is applied, throws WhipError otherwise. */
  async start() {
    const pc = this.pc;
    await pc.setLocalDescription(await pc.createOffer());
    const complete = await iceGathered(pc, GATHER_CAP_MS);
    if (!complete) console.warn(`WHIP: ICE gathering not complete after ${GATHER_CAP_MS} ms; offering what there is`);
    if (this.closed) return;

    let res;
    try {
      res = await this._fetch(this.endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/sdp" },
        body: pc.localDescription.sdp,
      }, POST_TIMEOUT_MS);
    } catch (e) {
      const why = e.name === "AbortError" ? `no answer within ${POST_TIMEOUT_MS / 1000} s` : e.message;
      throw new WhipError(`Cannot reach the server (${why}).`);
    }
    if (res.status !== 201) {
      const text = await res.text().catch(() => "");
      throw new WhipError(
        describeRefusal(res.status, text.trim() ? describeBody(text) : "", this.id),
        res.status,
        res.headers.get("Retry-After"),
      );
    }
    const answer = await res.text();
    const location = res.headers.get("Location");
    if (location) {
      // Relative to the URL that answered (after any redirect), which is the endpoint otherwise.
      this.url = new URL(location, res.url || this.endpoint).href;
    } else {
      console.warn("WHIP: 201 without Location; the session cannot be deleted");
    }
    this.etag = res.headers.get("ETag");
    if (this.closed) {
      // close() ran while the POST was in flight: the resource exists now, free it.
      await this._delete(false);
      return;
    }
    const servers = iceServersFromLinks(res.headers.get("Link"));
    if (servers.length) {
      this.iceServers = servers; // the page reuses them for its next connection
      try {
        // Gathering is over, so these only matter from the next gathering on.
        pc.setConfiguration({ ...pc.getConfiguration(), iceServers: servers });
      } catch (e) {
        console.warn("WHIP: ICE servers from Link rejected", e);
      }
    }
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
    } catch (e) {
      await this.close();
      throw new WhipError(`The browser rejected the server's answer: ${e.message}`, 0, null, true);
    }
    await this._keepResolution();
  }

  /**
   * Asks the encoder to lower the frame rate rather than the resolution when CPU or
   * bandwidth run short: a resolution change mid-stream upsets FFmpeg outputs that copy
   * the video (their headers were written for the first one).
   */
  async _keepResolution() {
    const sender = this.video?.sender;
    if (!sender?.getParameters) return;
    try {
      const params = sender.getParameters();
      params.degradationPreference = "maintain-resolution";
      await sender.setParameters(params);
    } catch (e) {
      console.warn("WHIP: degradationPreference not applied", e);
    }
  }
}

/** H.264 (packetization-mode=1) first, then VP8, where the browser lets the page choose. */
function preferVideoCodecs(transceiver) {
  if (typeof transceiver.setCodecPreferences !== "function") return;
  let error = null;
  // The spec takes the receiver's capabilities; some browsers want the sender's for sendonly.
  for (const source of [globalThis.RTCRtpReceiver, globalThis.RTCRtpSender]) {
    const codecs = source?.getCapabilities?.("video")?.codecs;
    if (!codecs?.length) continue;
    try {
      transceiver.setCodecPreferences(sortVideoCodecs(codecs));
      return;
    } catch (e) {
      error = e;
    }
  }
  if (error) console.warn("WHIP: setCodecPreferences failed; the browser's order stays", error);
}

// ---------------------------------------------------------------------------
// Media sources
// ---------------------------------------------------------------------------

/** A 1 kHz beep of 100 ms every second, as a MediaStream audio track (WebAudio). */
function makeTone() {
  const ctx = new AudioContext();
  const osc = ctx.createOscillator();
  osc.frequency.value = 1000;
  const gain = ctx.createGain();
  gain.gain.value = 0;
  const dest = ctx.createMediaStreamDestination();
  osc.connect(gain).connect(dest);
  osc.start();
  let next = 0;
  const schedule = () => {
    next = Math.max(next, Math.ceil(ctx.currentTime));
    for (; next < ctx.currentTime + 2; next++) {
      gain.gain.setValueAtTime(0.25, next);
      gain.gain.setValueAtTime(0, next + 0.1);
    }
  };
  schedule();
  const timer = setInterval(schedule, 500);
  // Without a user gesture (?autostart=1) the context may start suspended; it then resumes
  // on the first click anywhere on the page.
  ctx.resume().catch(() => {});
  const wake = () => ctx.state === "suspended" && ctx.resume().catch(() => {});
  document.addEventListener("click", wake);
  return {
    track: dest.stream.getAudioTracks()[0],
    ctx,
    stop() {
      clearInterval(timer);
      document.removeEventListener("click", wake);
      ctx.close().catch(() => {});
    },
  };
}

/** A moving test pattern with a clock and a frame counter (canvas.captureStream). */
function makePattern(tone, label) {
  const canvas = document.createElement("canvas");
  canvas.width = PATTERN.width;
  canvas.height = PATTERN.height;
  const g = canvas.getContext("2d");
  const { width: w, height: h } = canvas;
  const bars = ["#c0c0c0", "#c0c000", "#00c0c0", "#00c000", "#c000c0", "#c00000", "#0000c0"];
  const t0 = performance.now();
  let frame = 0;
  const draw = () => {
    const now = performance.now();
    // The flash follows the tone's clock when it runs, so picture and beep line up.
    const audioClock = tone.ctx.state === "running" ? tone.ctx.currentTime : null;
    const phase = audioClock !== null ? audioClock % 1 : ((now - t0) / 1000) % 1;
    bars.forEach((c, i) => {
      g.fillStyle = c;
      g.fillRect(Math.floor((i * w) / bars.length), 0, Math.ceil(w / bars.length), h);
    });
    g.fillStyle = phase < 0.1 ? "#fff" : "#111";
    g.fillRect(0, h * 0.7, w, h * 0.3);
    const x = ((now - t0) / 4000) % 1; // a box crossing the picture every 4 s
    g.fillStyle = "#f80";
    g.fillRect(x * (w - h * 0.2), h * 0.05, h * 0.2, h * 0.2);
    g.fillStyle = phase < 0.1 ? "#000" : "#fff";
    g.font = `${Math.round(h * 0.08)}px ui-monospace, monospace`;
    g.textBaseline = "middle";
    const clock = new Date().toISOString().slice(11, 23);
    g.fillText(`${clock}  #${frame++}`, w * 0.04, h * 0.8);
    g.font = `${Math.round(h * 0.05)}px system-ui, sans-serif`;
    g.fillText(label, w * 0.04, h * 0.92);
  };
  draw();
  // A timer, not requestAnimationFrame: rAF stops altogether in a background tab.
  const timer = setInterval(draw, 1000 / PATTERN.fps);
  const track = canvas.captureStream(PATTERN.fps).getVideoTracks()[0];
  return {
    track,
    stop() {
      clearInterval(timer);
    },
  };
}

/**
 * Opens the wanted source: {stream, source, note, stop()}. The camera falls back to the
 * camera without microphone (plus the tone), then to the pattern, with `note` saying why.
 */
async function openMedia(wanted, label) {
  const parts = []; // things to stop
  const finish = (tracks, source, note) => ({
    stream: new MediaStream(tracks),
    source,
    note,
    stop() {
      for (const t of tracks) t.stop();
      for (const p of parts) p.stop();
    },
  });
  const pattern = (note) => {
    const tone = makeTone();
    parts.push(tone);
    const picture = makePattern(tone, label);
    parts.push(picture);
    return finish([picture.track, tone.track], "pattern", note);
  };
  if (wanted !== "camera") return pattern(null);

  if (!navigator.mediaDevices?.getUserMedia) {
    return pattern("No camera access here (the page needs HTTPS or localhost); sending the test pattern.");
  }
  const video = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
  try {
    const s = await navigator.mediaDevices.getUserMedia({ video, audio: true });
    return finish([s.getVideoTracks()[0], s.getAudioTracks()[0]], "camera", null);
  } catch (both) {
    try {
      const s = await navigator.mediaDevices.getUserMedia({ video });
      const tone = makeTone();
      parts.push(tone);
      return finish([s.getVideoTracks()[0], tone.track], "camera",
        `No microphone (${both.name}); sending the camera with a test tone.`);
    } catch (e) {
      return pattern(`No camera (${e.name}: ${e.message}); sending the test pattern.`);
    }
  }
}

// ---------------------------------------------------------------------------
// The page
// ---------------------------------------------------------------------------

function main() {
  const storage = tokenStorage(TOKEN_KEY);
  const $ = (id) => document.getElementById(id);
  const preview = $("preview");
  const tokenField = $("token");
  const sourceField = $("source");
  const startButton = $("start");
  const stopButton = $("stop");

  // Read by automated tests; mutated in place so a held reference stays current.
  const sc = (window.streamcorePublish = {
    // idle | starting | connecting | connected | reconnecting | error | stopped
    state: "idle",
    error: null, // the last error; cleared when a connection comes up
    pcState: "new", // RTCPeerConnection.connectionState of the current session
    iceState: "new",
    source: null, // what is being sent: "camera" or "pattern"
    codec: null, // video mimeType, e.g. "video/H264"
    audioCodec: null,
    framesSent: 0,
    bytesSent: 0, // outbound video bytes
    width: 0,
    height: 0,
    fps: 0,
    bitrateKbps: 0,
    qualityLimitation: null,
    audioPacketsSent: 0,
    resource: null, // the session URL (Location) while there is one
    reconnects: 0,
  });

  const id = idFromPath("publish", location.pathname);
  if (id === null) {
    sc.state = "error";
    sc.error = "No process id in the URL (expected /publish/{id}).";
    setStatus(sc.error, true);
    startButton.disabled = true;
    return;
  }
  document.title = `Publish ${id} – streamcore`;
  $("title").textContent = `Publish: ${id}`;
  const endpoint = new URL(`/whip/${encodeURIComponent(id)}`, location.href).href;

  const query = new URLSearchParams(location.search);
  let token = initialToken(storage);
  tokenField.value = token;
  if (query.get("source") === "pattern" || query.get("source") === "camera") {
    sourceField.value = query.get("source");
  }

  let media = null; // {stream, source, stop()}
  let session = null;
  let run = 0; // bumped by every Start and Stop, so a stale async step can tell
  let everConnected = false; // in this run: failures after that are reconnected
  let iceServers = [];
  let backoff = BACKOFF_MIN_MS;
  let retryTimer = 0;
  let disconnectTimer = 0;
  let stableTimer = 0;
  let connectTimer = 0;
  let lastVideo = null; // previous outbound video stats, for the bitrate

  /** Why the source is not the one asked for, as a suffix for status lines. */
  function note() {
    return media?.note ? ` ${media.note}` : "";
  }

  function setStatus(text, isError = false) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", isError);
  }

  function setState(state) {
    sc.state = state;
    const active = !["idle", "stopped", "error"].includes(state);
    stopButton.disabled = !active;
    startButton.textContent = active ? "Restart" : "Start";
    const live = $("live");
    live.textContent = state === "connected" ? "LIVE" : "";
    live.classList.toggle("on", state === "connected");
    render();
  }

  function clearTimers() {
    for (const t of [retryTimer, disconnectTimer, stableTimer, connectTimer]) clearTimeout(t);
    retryTimer = disconnectTimer = stableTimer = connectTimer = 0;
  }

  function resetStats() {
    Object.assign(sc, {
      pcState: "new", iceState: "new", codec: null, audioCodec: null, framesSent: 0,
      bytesSent: 0, width: 0, height: 0, fps: 0, bitrateKbps: 0, qualityLimitation: null,
      audioPacketsSent: 0, resource: null,
    });
    lastVideo = null;
  }

  /** Ends the session (DELETE) and, unless `keepMedia`, the camera/pattern too. */
  function teardown(keepMedia) {
    clearTimers();
    const s = session;
    session = null;
    const closing = s ? s.close() : Promise.resolve();
    if (!keepMedia && media) {
      media.stop();
      media = null;
      preview.srcObject = null;
    }
    resetStats();
    if (s) sc.pcState = sc.iceState = "closed";
    render();
    return closing;
  }

  /** Start (or Restart): new media, fresh backoff, first connection. */
  async function start() {
    const mine = ++run;
    token = tokenField.value.trim();
    storage("set", token);
    await teardown(false);
    if (mine !== run) return;
    everConnected = false;
    backoff = BACKOFF_MIN_MS;
    sc.error = null;
    sc.reconnects = 0;
    setState("starting");
    setStatus(sourceField.value === "camera" ? "Opening the camera…" : "Starting the test pattern…");
    let opened;
    try {
      opened = await openMedia(sourceField.value, id);
    } catch (e) {
      if (mine === run) fail(`Cannot open the media: ${e.name ?? "Error"}: ${e.message ?? e}`);
      return;
    }
    if (mine !== run) {
      opened.stop();
      return;
    }
    media = opened;
    sc.source = media.source;
    if (media.note) console.warn(media.note);
    preview.srcObject = media.stream;
    preview.play().catch(() => {});
    media.stream.getVideoTracks()[0]?.addEventListener("ended", () => {
      if (mine === run) fail("The camera stopped (unplugged, or access was revoked).");
    });
    connect(mine);
  }

  /** One WHIP session for this run; the previous one, if any, is deleted first. */
  async function connect(mine) {
    clearTimers();
    const old = session;
    session = null;
    if (old) await old.close();
    if (mine !== run) return;
    resetStats();
    setState(everConnected ? "reconnecting" : "connecting");
    setStatus((everConnected ? "Reconnecting…" : "Connecting…") + note());
    const s = new WhipSession(endpoint, id, token, iceServers, media.stream, onState);
    session = s;
    try {
      await s.start();
    } catch (e) {
      if (mine !== run || s !== session) return; // superseded meanwhile
      failed(e);
      return;
    }
    if (mine !== run || s !== session) return;
    if (s.iceServers.length) iceServers = s.iceServers;
    sc.resource = s.url;
    if (sc.state !== "connected") {
      setStatus("Negotiated, connecting media…");
      connectTimer = setTimeout(() => {
        if (s === session && sc.state !== "connected") {
          lostConnection(`The media connection did not come up within ${CONNECT_TIMEOUT_MS / 1000} s.`);
        }
      }, CONNECT_TIMEOUT_MS);
    }
    render();
  }

  /** Maps a failed POST to a retry or to the error state. */
  function failed(e) {
    if (!(e instanceof WhipError)) {
      e = new WhipError(`${e.name ?? "Error"}: ${e.message ?? e}`, 0, null, true);
    }
    const policy = e.fatal ? { retry: false } : retryPolicy(e.status, e.retryAfter, everConnected);
    if (!policy.retry) return fail(e.message);
    retryIn(policy.delayMs ?? nextBackoff(), e.message);
  }

  /** The connection failed or never came up. */
  function lostConnection(why) {
    if (everConnected) retryIn(nextBackoff(), why);
    else fail(`${why} Check that UDP can reach the server (and its ICE servers).`);
  }

  function nextBackoff() {
    const delay = backoff;
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    return delay;
  }

  function retryIn(ms, why) {
    const mine = run;
    teardown(true); // frees the server resource now, not when the retry fires
    sc.error = why;
    sc.reconnects++;
    setState("reconnecting");
    setStatus(`${why} Retrying in ${Math.round(ms / 100) / 10} s.`, true);
    retryTimer = setTimeout(() => connect(mine), ms);
  }

  /** Gives up: error state, nothing left running. */
  function fail(message) {
    run++;
    teardown(false);
    sc.error = message;
    setState("error");
    setStatus(message, true);
  }

  /** The Stop button. */
  function stop() {
    run++;
    teardown(false);
    setState("stopped");
    setStatus("Stopped.");
  }

  function onState(s) {
    if (s !== session) return;
    const pc = s.pc;
    const ice = pc.iceConnectionState;
    // Firefox before 113 has no connectionState; derive it from the ICE state.
    const state = pc.connectionState ??
      ({ checking: "connecting", completed: "connected" }[ice] ?? ice);
    sc.iceState = ice;
    if (state === sc.pcState) return render();
    sc.pcState = state;

    clearTimeout(disconnectTimer);
    if (state === "connected") {
      clearTimeout(connectTimer);
      everConnected = true;
      sc.error = null;
      setState("connected");
      setStatus(`Live: publishing to ${id}.${note()}`);
      stableTimer = setTimeout(() => (backoff = BACKOFF_MIN_MS), STABLE_AFTER_MS);
      return;
    }
    clearTimeout(stableTimer);
    if (state === "failed" || state === "closed") {
      // "closed" without our close(): the server ended the DTLS association.
      lostConnection(state === "failed" ? "The connection failed." : "The server closed the connection.");
    } else if (state === "disconnected") {
      setStatus("Connection interrupted…");
      disconnectTimer = setTimeout(
        () => s === session && lostConnection("The connection was lost."),
        DISCONNECT_GRACE_MS,
      );
    }
    render();
  }

  async function pollStats() {
    const s = session;
    if (!s || s.closed) return;
    const stats = await pollRtpStats(s.pc, "outbound-rtp", lastVideo);
    if (!stats || s !== session) return;
    const { video: v, audio: a } = stats;
    lastVideo = stats.last;
    if (stats.bitrateKbps !== null) sc.bitrateKbps = stats.bitrateKbps;
    if (v) {
      sc.bytesSent = v.bytesSent ?? 0;
      sc.framesSent = v.framesSent ?? v.framesEncoded ?? 0;
      sc.width = v.frameWidth ?? 0;
      sc.height = v.frameHeight ?? 0;
      sc.fps = v.framesPerSecond ?? 0;
      sc.qualityLimitation = v.qualityLimitationReason ?? null;
      sc.codec = stats.videoCodec ?? sc.codec;
    }
    if (a) {
      sc.audioPacketsSent = a.packetsSent ?? 0;
      sc.audioCodec = stats.audioCodec ?? sc.audioCodec;
    }
    render();
  }

  function render() {
    const set = (id, text) => ($(id).textContent = text);
    const codec = (m) => m?.replace(/^(video|audio)\//, "");
    set("s-state", sc.state);
    set("s-pc", sc.pcState);
    set("s-ice", sc.iceState);
    set("s-source", sc.source ?? "–");
    set("s-codec", [codec(sc.codec), codec(sc.audioCodec)].filter(Boolean).join(" / ") || "–");
    set("s-resolution", sc.width ? `${sc.width}×${sc.height}` : "–");
    set("s-fps", sc.fps ? `${Math.round(sc.fps)} fps` : "–");
    set("s-bitrate", `${sc.bitrateKbps} kbit/s`);
    set("s-frames", String(sc.framesSent));
    set("s-limit", sc.qualityLimitation && sc.qualityLimitation !== "none" ? sc.qualityLimitation : "–");
    set("s-audio", String(sc.audioPacketsSent));
  }

  $("form").addEventListener("submit", (e) => {
    e.preventDefault();
    start();
  });
  stopButton.addEventListener("click", stop);

  // Free the publisher slot when the page goes away; keepalive lets the DELETE outlive it.
  window.addEventListener("pagehide", () => {
    run++;
    clearTimers();
    session?.close({ keepalive: true });
    session = null;
    media?.stop();
    media = null;
  });
  // Coming back from the back/forward cache: everything was stopped, show it.
  window.addEventListener("pageshow", (e) => {
    if (e.persisted) {
      setState("stopped");
      setStatus("Stopped while the page was hidden; press Start.");
    }
  });

  setInterval(pollStats, 1000);
  render();
  if (query.get("autostart") === "1") {
    start();
  } else {
    setState("idle");
    setStatus("Choose a source and press Start.");
  }
}

if (typeof document !== "undefined") main();

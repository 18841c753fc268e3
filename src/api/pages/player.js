// streamcore browser player: plays one stream over WHEP (draft-ietf-wish-whep-03)
// with trickle ICE. Served at /player.js and loaded by /player/{id}.
//
// The page relies on:
//   POST   /whep/{id}          Content-Type: application/sdp, answered by 201 + Location/ETag/Link
//   PATCH  <Location>          Content-Type: application/trickle-ice-sdpfrag, If-Match: <ETag>
//                              (or Content-Type: application/sdp for the answer to a 406 counter-offer)
//   DELETE <Location>
// with "Authorization: Bearer <token>" on all three when a token is set.
//
// The helpers at the top are pure (no DOM) so they can be unit-checked in node;
// the page itself only starts when there is a document.
"use strict";

const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const STABLE_AFTER_MS = 10000; // playing this long resets the backoff
const DISCONNECT_GRACE_MS = 3000; // "disconnected" often heals by itself; "failed" does not
const NOT_FOUND_RETRY_MS = 10000;
const DEFAULT_RETRY_AFTER_MS = 2000;
const TOKEN_KEY = "streamcore.token";

// ---------------------------------------------------------------------------
// Pure helpers (the ones both pages need are in /webrtc.js)
// ---------------------------------------------------------------------------

/** ICE credentials, ice-options and m-sections ({kind, mid}) of an SDP. */
function parseSdp(sdp) {
  const attr = (name) => new RegExp(`^a=${name}:(.*)$`, "m").exec(sdp)?.[1].trim() ?? null;
  const media = [];
  for (const section of sdp.split(/\r?\n(?=m=)/).slice(1)) {
    media.push({
      kind: /^m=(\S+)/.exec(section)[1],
      mid: /^a=mid:(.*)$/m.exec(section)?.[1].trim() ?? null,
    });
  }
  const bundle = /^a=group:BUNDLE[ \t]+(.*)$/m.exec(sdp)?.[1].trim().split(/\s+/) ?? [];
  return {
    // Chromium and Safari put ufrag/pwd in every m-section, Firefox at session level;
    // under BUNDLE they are the same everywhere, so the first one is the one.
    ufrag: attr("ice-ufrag"),
    pwd: attr("ice-pwd"),
    iceOptions: attr("ice-options"),
    media,
    bundleTag: bundle[0] ?? media[0]?.mid ?? null,
  };
}

/**
 * Trickle-ICE fragment (RFC 8840, as profiled by RFC 9725 §4.3.1) carrying `candidates`
 * (objects shaped like RTCIceCandidate: candidate, sdpMid, sdpMLineIndex) and, when
 * `endOfCandidates`, the end-of-candidates marker in the BUNDLE-tag m-section.
 */
function buildSdpFrag(localSdp, candidates, endOfCandidates) {
  const sdp = parseSdp(localSdp);
  const lines = [`a=ice-ufrag:${sdp.ufrag}`, `a=ice-pwd:${sdp.pwd}`];
  // RFC 9725 asks for the offer's ice-options to be repeated in every fragment.
  if (sdp.iceOptions) lines.push(`a=ice-options:${sdp.iceOptions}`);

  const sections = new Map(); // mid -> {kind, lines}
  const sectionFor = (mid, index) => {
    const m = sdp.media.find((x) => x.mid === mid) ?? sdp.media[index] ?? sdp.media[0];
    const key = m?.mid ?? mid ?? "0";
    if (!sections.has(key)) sections.set(key, { kind: m?.kind ?? "video", lines: [] });
    return sections.get(key);
  };
  for (const c of candidates) {
    sectionFor(c.sdpMid, c.sdpMLineIndex).lines.push(`a=${c.candidate}`);
  }
  if (endOfCandidates) sectionFor(sdp.bundleTag, 0).lines.push("a=end-of-candidates");

  for (const [mid, s] of sections) {
    lines.push(`m=${s.kind} 9 UDP/TLS/RTP/SAVPF 0`, `a=mid:${mid}`, ...s.lines);
  }
  return lines.join("\r\n") + "\r\n";
}

/** Retry-After (delta-seconds or HTTP-date) in milliseconds, or `fallbackMs`. */
function parseRetryAfter(value, fallbackMs, now = Date.now()) {
  if (value == null || value.trim() === "") return fallbackMs;
  let ms = /^\d+$/.test(value.trim()) ? Number(value) * 1000 : Date.parse(value) - now;
  if (!Number.isFinite(ms)) return fallbackMs;
  return Math.min(Math.max(ms, 500), 300000); // never hammer, never wait absurdly long
}

// ---------------------------------------------------------------------------
// WHEP session: one POST, its trickle PATCHes and its DELETE
// ---------------------------------------------------------------------------

class WhepError extends Error {
  constructor(message, status = 0, retryAfter = null) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter; // raw Retry-After header value
  }
}

class WhepSession extends HttpSession {
  /**
   * @param endpoint absolute WHEP endpoint URL
   * @param token bearer token or ""
   * @param iceServers ICE servers learnt from an earlier 201 (see below)
   * @param hooks {onTrack(session, event), onState(session)}
   */
  constructor(endpoint, token, iceServers, hooks) {
    super("WHEP", endpoint, token, iceServers);
    this.hooks = hooks;
    this.patches = Promise.resolve(); // PATCHes go one at a time, in order
    this.pc = this._newPeerConnection();
  }

  _newPeerConnection() {
    const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle", iceServers: this.iceServers });
    this.pending = []; // candidates gathered but not yet sent
    this.ready = false; // true once the server knows our ICE credentials
    this.gatheringDone = false;
    this.endSent = false;
    pc.addEventListener("icecandidate", (e) => this._onCandidate(pc, e.candidate));
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") this._onCandidate(pc, null);
    });
    pc.addEventListener("track", (e) => pc === this.pc && this.hooks.onTrack(this, e));
    const onState = () => pc === this.pc && this.hooks.onState(this);
    pc.addEventListener("connectionstatechange", onState);
    pc.addEventListener("iceconnectionstatechange", onState);
    return pc;
  }

  /** Sends the offer; resolves once the answer is applied, throws WhepError otherwise. */
  async start() {
    const pc = this.pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    // Posted at once, without waiting for ICE gathering: candidates follow by PATCH.
    const res = await this._fetch(this.endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/sdp" },
      body: offer.sdp,
    }, 15000);
    const type = res.headers.get("Content-Type") ?? "";

    if (res.status === 201) {
      const answer = await res.text();
      if (!this._adopt(res)) return;
      this.ready = true;
      this._flush();
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      return;
    }
    // WHEP -03 §4.2: the server may refuse our offer and send its own (406 + SDP offer
    // + Location); we answer it by PATCH. Players must handle both ways.
    if (res.status === 406 && /^application\/sdp/i.test(type) && res.headers.has("Location")) {
      const serverOffer = await res.text();
      if (!this._adopt(res)) return;
      await this._answerCounterOffer(serverOffer);
      return;
    }
    const text = await res.text().catch(() => "");
    throw new WhepError(
      `HTTP ${res.status}${text.trim() ? ": " + describeBody(text) : ""}`,
      res.status,
      res.headers.get("Retry-After"),
    );
  }

  async _answerCounterOffer(sdp) {
    // A fresh connection rather than a rollback: our recvonly transceivers would
    // otherwise linger unassociated next to the ones the server's offer creates.
    this.pc.close();
    this.pc = this._newPeerConnection();
    await this.pc.setRemoteDescription({ type: "offer", sdp });
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    const res = await this._fetch(this.url, {
      method: "PATCH",
      headers: { "Content-Type": "application/sdp", ...this._ifMatch() },
      body: answer.sdp,
    });
    if (!res.ok) {
      const text = await res.text().catch(() => "");
      throw new WhepError(`answer rejected: HTTP ${res.status} ${describeBody(text)}`, res.status);
    }
    this.ready = true;
    this._flush();
  }

  /** Takes Location, ETag and ICE servers from a 201/406; false if we were closed meanwhile. */
  _adopt(res) {
    const location = res.headers.get("Location");
    if (location) {
      // Relative to the URL that answered (after any 307), which is the endpoint otherwise.
      this.url = new URL(location, res.url || this.endpoint).href;
    } else {
      console.warn("WHEP: no Location header (exposed by CORS?); no trickle, no DELETE");
    }
    this.etag = res.headers.get("ETag");
    if (this.closed) {
      // close() ran while the POST was in flight: the resource exists now, free it.
      this._delete(false);
      return false;
    }
    const servers = iceServersFromLinks(res.headers.get("Link"));
    if (servers.length) {
      this.iceServers = servers; // the player reuses them for the next connection
      try {
        // Gathering is already under way, so browsers may only use these from the
        // next gathering on (an ICE restart or our next connection).
        this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers: servers });
      } catch (e) {
        console.warn("WHEP: ICE servers from Link rejected", e);
      }
    }
    return true;
  }

  _onCandidate(pc, candidate) {
    if (pc !== this.pc || this.closed) return;
    if (candidate === null) this.gatheringDone = true;
    // Firefox also reports an empty candidate per m-section as its end marker.
    else if (candidate.candidate) this.pending.push(candidate);
    this._flush();
  }

  /** Sends what was gathered so far, once the server can take it. */
  _flush() {
    if (!this.ready || !this.url || this.closed) return;
    const end = this.gatheringDone && !this.endSent;
    if (!this.pending.length && !end) return;
    const body = buildSdpFrag(this.pc.localDescription.sdp, this.pending.splice(0), end);
    if (end) this.endSent = true;
    this.patches = this.patches.then(() => this._patch(body));
  }

  async _patch(body) {
    if (this.closed) return;
    try {
      const res = await this._fetch(this.url, {
        method: "PATCH",
        headers: { "Content-Type": "application/trickle-ice-sdpfrag", ...this._ifMatch() },
        body,
      });
      // Trickle is an optimisation: the connection may still come up through
      // peer-reflexive candidates, so a failed PATCH is only logged.
      if (!res.ok) console.warn(`WHEP PATCH: HTTP ${res.status}`, await res.text().catch(() => ""));
    } catch (e) {
      console.warn("WHEP PATCH failed", e);
    }
  }

  _ifMatch() {
    return this.etag ? { "If-Match": this.etag } : {};
  }
}

// ---------------------------------------------------------------------------
// The page
// ---------------------------------------------------------------------------

function main() {
  const storage = tokenStorage(TOKEN_KEY);
  const $ = (id) => document.getElementById(id);
  const video = $("video");
  const tokenField = $("token");

  // Read by automated tests; mutated in place so a held reference stays current.
  const sc = (window.streamcore = {
    state: "new", // RTCPeerConnection.connectionState of the current session
    iceState: "new",
    framesDecoded: 0,
    bytesReceived: 0, // inbound video bytes
    audioPacketsReceived: 0,
    width: 0,
    height: 0,
    codec: null, // video mimeType, e.g. "video/H264"
    audioCodec: null,
    bitrateKbps: 0,
    packetsLost: 0, // video + audio
    lastError: null, // cleared when a session reaches "connected"
  });

  const id = idFromPath("player", location.pathname);
  if (id === null) {
    setStatus("No stream id in the URL (expected /player/{id}).", true);
    return;
  }
  document.title = `${id} – streamcore`;
  $("title").textContent = id;
  const endpoint = new URL(`/whep/${encodeURIComponent(id)}`, location.href).href;

  let token = initialToken(storage);
  tokenField.value = token;

  let session = null;
  let generation = 0; // bumped by every connect(), so a stale attempt can tell
  let iceServers = [];
  let backoff = BACKOFF_MIN_MS;
  let retryTimer = 0;
  let disconnectTimer = 0;
  let stableTimer = 0;
  let lastVideo = null; // previous inbound video stats, for the bitrate

  function setStatus(text, isError = false) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", isError);
    if (isError) sc.lastError = text;
  }

  function clearTimers() {
    clearTimeout(retryTimer);
    clearTimeout(disconnectTimer);
    clearTimeout(stableTimer);
    retryTimer = disconnectTimer = stableTimer = 0;
  }

  function resetStats() {
    Object.assign(sc, {
      state: "new", iceState: "new", framesDecoded: 0, bytesReceived: 0,
      audioPacketsReceived: 0, width: 0, height: 0, codec: null, audioCodec: null,
      bitrateKbps: 0, packetsLost: 0,
    });
    lastVideo = null;
    render();
  }

  async function connect() {
    const mine = ++generation;
    clearTimers();
    // The old resource is always deleted before a new POST, so a reconnecting
    // viewer never holds two viewer slots.
    const old = session;
    session = null;
    if (old) await old.close();
    if (mine !== generation) return;

    resetStats();
    setStatus("Connecting…");
    const s = new WhepSession(endpoint, token, iceServers, { onTrack, onState });
    session = s;
    try {
      await s.start();
      if (s.iceServers.length) iceServers = s.iceServers;
      if (s === session && sc.state !== "connected") setStatus("Negotiated, connecting media…");
    } catch (e) {
      if (mine !== generation || s !== session) return; // superseded meanwhile
      failed(e);
    }
  }

  /** Maps a failed attempt to a message and a retry (or none). */
  function failed(e) {
    const status = e instanceof WhepError ? e.status : 0;
    const msg = e instanceof WhepError ? e.message : `${e.name ?? "Error"}: ${e.message ?? e}`;
    if (status === 401 || status === 403) {
      stop();
      setStatus(`Token required or invalid (${msg}). Enter a token and press Play.`, true);
      tokenField.focus();
    } else if (status === 404) {
      retryIn(NOT_FOUND_RETRY_MS, `Unknown stream (${msg}).`);
    } else if (status === 409 || status === 429 || status === 503) {
      const why = status === 409 ? "No media yet" : "Server busy";
      retryIn(parseRetryAfter(e.retryAfter, DEFAULT_RETRY_AFTER_MS), `${why} (${msg}).`);
    } else if (status >= 400 && status < 500) {
      stop(); // 400/406/422 and friends: the same offer would fail again
      setStatus(msg, true);
    } else {
      retryIn(nextBackoff(), msg); // network error, timeout, 5xx, SDP failure
    }
  }

  function nextBackoff() {
    const delay = backoff;
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    return delay;
  }

  function stop() {
    clearTimers();
    const s = session;
    session = null;
    if (s) {
      s.close();
      sc.state = sc.iceState = "closed";
      render();
    }
  }

  function retryIn(ms, why) {
    stop(); // frees the server resource now, not when the retry fires
    setStatus(`${why} Retrying in ${Math.round(ms / 100) / 10} s.`, true);
    retryTimer = setTimeout(connect, ms);
  }

  function onTrack(s, e) {
    if (s !== session) return;
    // Our own stream per session rather than e.streams[0]: it works whether or not the
    // server's answer carries an msid, and never mixes in ended tracks of an old session.
    s.stream ??= new MediaStream();
    s.stream.addTrack(e.track);
    if (video.srcObject !== s.stream) video.srcObject = s.stream;
    video.play().catch(() => {}); // autoplay may still be refused; the controls remain
    if (e.track.kind === "video") {
      e.track.addEventListener("ended", () => s === session && retryIn(nextBackoff(), "Video track ended."));
    }
  }

  function onState(s) {
    if (s !== session) return;
    const pc = s.pc;
    const ice = pc.iceConnectionState;
    // Firefox before 113 has no connectionState; derive it from the ICE state.
    const state = pc.connectionState ??
      ({ checking: "connecting", completed: "connected" }[ice] ?? ice);
    sc.iceState = ice;
    if (state === sc.state) return render();
    sc.state = state;
    render();

    clearTimeout(disconnectTimer);
    if (state === "connected") {
      sc.lastError = null;
      setStatus("Playing.");
      stableTimer = setTimeout(() => (backoff = BACKOFF_MIN_MS), STABLE_AFTER_MS);
      return;
    }
    clearTimeout(stableTimer);
    if (state === "failed") {
      retryIn(nextBackoff(), "Connection failed.");
    } else if (state === "disconnected") {
      setStatus("Connection interrupted…");
      disconnectTimer = setTimeout(
        () => s === session && retryIn(nextBackoff(), "Connection lost."),
        DISCONNECT_GRACE_MS,
      );
    }
  }

  async function pollStats() {
    const s = session;
    if (!s) return;
    const stats = await pollRtpStats(s.pc, "inbound-rtp", lastVideo);
    if (!stats || s !== session) return;
    const { video: v, audio: a } = stats;
    lastVideo = stats.last;
    if (stats.bitrateKbps !== null) sc.bitrateKbps = stats.bitrateKbps;
    if (v) {
      sc.bytesReceived = v.bytesReceived ?? 0;
      sc.framesDecoded = v.framesDecoded ?? 0;
      sc.width = v.frameWidth ?? video.videoWidth ?? 0;
      sc.height = v.frameHeight ?? video.videoHeight ?? 0;
      sc.codec = stats.videoCodec ?? sc.codec;
    }
    if (a) {
      sc.audioPacketsReceived = a.packetsReceived ?? 0;
      sc.audioCodec = stats.audioCodec ?? sc.audioCodec;
    }
    sc.packetsLost = (v?.packetsLost ?? 0) + (a?.packetsLost ?? 0);
    render();
  }

  function render() {
    const set = (id, text) => ($(id).textContent = text);
    const codec = (m) => m?.replace(/^(video|audio)\//, "");
    set("s-state", sc.state);
    set("s-ice", sc.iceState);
    set("s-codec", [codec(sc.codec), codec(sc.audioCodec)].filter(Boolean).join(" / ") || "–");
    set("s-resolution", sc.width ? `${sc.width}×${sc.height}` : "–");
    set("s-bitrate", `${sc.bitrateKbps} kbit/s`);
    set("s-frames", String(sc.framesDecoded));
    set("s-lost", String(sc.packetsLost));
  }

  // Play applies the token (empty clears it) and starts over with a fresh backoff.
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = tokenField.value.trim();
    storage("set", token);
    backoff = BACKOFF_MIN_MS;
    sc.lastError = null;
    connect();
  });

  // Autoplay only works muted; unmuting needs this click (a user gesture).
  const unmute = $("unmute");
  unmute.addEventListener("click", () => {
    video.muted = !video.muted;
    if (!video.muted) video.play().catch(() => {});
  });
  const syncMute = () => (unmute.textContent = video.muted ? "Unmute" : "Mute");
  video.addEventListener("volumechange", syncMute);
  syncMute();

  // Free the viewer slot when the page goes away; keepalive lets the DELETE outlive it.
  window.addEventListener("pagehide", () => {
    generation++;
    clearTimers();
    session?.close({ keepalive: true });
    session = null;
  });
  // Coming back from the back/forward cache: the old session is gone, start again.
  window.addEventListener("pageshow", (e) => e.persisted && connect());

  setInterval(pollStats, 1000);
  render();
  connect();
}

if (typeof document !== "undefined") main();

// streamcore page helpers shared by the player (/player.js, WHEP) and the publish page
// (/publish.js, WHIP). Served at /webrtc.js and loaded before either page's own script.
// Everything here is pure or touches only the URL and sessionStorage.
"use strict";

/** The id after `/{prefix}/` in a path, URL-decoded; null when absent or malformed. */
function idFromPath(prefix, pathname) {
  // A trailing slash is not part of the id (/player/cam/ is stream "cam").
  const m = new RegExp(`^/${prefix}/(.+?)/?$`).exec(pathname);
  if (!m) return null;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return null;
  }
}

/**
 * Parses an HTTP Link header (RFC 8288) into [{url, params}]. Parameter names are
 * lower-cased; quoted values are unescaped. Several Link headers reach fetch() joined
 * by ", ", and quoted values may themselves hold commas or semicolons (TURN
 * credentials), so a plain split(",") is not safe.
 */
function parseLinkHeader(value) {
  const links = [];
  if (!value) return links;
  const linkRe = /<([^>]*)>((?:\s*;\s*[^;,=\s]+\s*(?:=\s*(?:"(?:[^"\\]|\\.)*"|[^;,]*))?)*)/g;
  const paramRe = /;\s*([^;,=\s]+)\s*(?:=\s*(?:"((?:[^"\\]|\\.)*)"|([^;,]*)))?/g;
  for (const m of value.matchAll(linkRe)) {
    const params = {};
    for (const p of m[2].matchAll(paramRe)) {
      const name = p[1].toLowerCase();
      if (name in params) continue; // RFC 8288 §3: later occurrences are ignored
      params[name] = p[2] !== undefined ? p[2].replace(/\\(.)/g, "$1") : (p[3] ?? "").trim();
    }
    links.push({ url: m[1].trim(), params });
  }
  return links;
}

/** RTCIceServer entries from the rel="ice-server" links of a Link header (RFC 9725 §4.6). */
function iceServersFromLinks(value) {
  return parseLinkHeader(value)
    .filter((l) => (l.params.rel ?? "").toLowerCase().split(/\s+/).includes("ice-server"))
    // Browsers only take password credentials; anything else would be sent as a
    // password and fail, so such a server is left out.
    .filter((l) => (l.params["credential-type"] ?? "password").toLowerCase() === "password")
    .map((l) => {
      const server = { urls: l.url };
      if (l.params.username !== undefined) server.username = l.params.username;
      if (l.params.credential !== undefined) server.credential = l.params.credential;
      return server;
    });
}

/** Short human text for an error body: datarhei {message, details}, problem+json, or text. */
function describeBody(text) {
  const body = text.trim();
  try {
    const j = JSON.parse(body);
    if (j && typeof j === "object" && !Array.isArray(j)) {
      const head = j.message ?? j.title ?? j.error;
      const details = Array.isArray(j.details) ? j.details.join("; ") : j.detail ?? j.details;
      if (head) return details && details !== head ? `${head}: ${details}` : String(head);
    }
    return JSON.stringify(j);
  } catch {
    return body.length > 300 ? body.slice(0, 300) + "…" : body;
  }
}

/**
 * A sessionStorage slot for a token: `storage("get")`, `storage("set", value)` (an empty value
 * removes it). Storage can be disabled; the token then lasts as long as the page.
 */
function tokenStorage(key) {
  return function storage(op, value) {
    try {
      if (op === "get") return sessionStorage.getItem(key);
      if (value) sessionStorage.setItem(key, value);
      else sessionStorage.removeItem(key);
    } catch {
      // storage can be disabled; the token then lasts as long as the page
    }
    return null;
  };
}

/**
 * The token to start with: `?token=` from the URL, else the stored one. A token in the address
 * bar would stay in the history and in logs: it is moved into `storage` (this tab only) and
 * taken out of the URL.
 */
function initialToken(storage) {
  const query = new URLSearchParams(location.search);
  const token = query.get("token") ?? storage("get") ?? "";
  if (query.has("token")) {
    storage("set", token);
    const clean = new URL(location.href);
    clean.searchParams.delete("token");
    history.replaceState(null, "", clean.pathname + clean.search + clean.hash);
  }
  return token;
}

/**
 * One poll of a peer connection's RTP stats, for the player (type "inbound-rtp") and the publish
 * page ("outbound-rtp"): the video entry (with several encodings, the one that moved the most
 * bytes) and the audio entry, their codecs, and the video bitrate since the previous poll.
 * `last` is what the bitrate needs from the previous poll: pass back the `last` returned.
 * Null when the stats cannot be read (the connection closed meanwhile).
 */
async function pollRtpStats(pc, type, last) {
  let report;
  try {
    report = await pc.getStats();
  } catch {
    return null;
  }
  const bytesOf = (r) => (type === "inbound-rtp" ? r.bytesReceived : r.bytesSent) ?? 0;
  let video = null;
  let audio = null;
  report.forEach((r) => {
    if (r.type !== type) return;
    const kind = r.kind ?? r.mediaType; // older Safari says mediaType
    if (kind === "video" && (!video || bytesOf(r) > bytesOf(video))) video = r;
    else if (kind === "audio") audio = r;
  });
  let bitrateKbps = null;
  let next = last;
  if (video) {
    const bytes = bytesOf(video);
    if (last && last.id === video.id && video.timestamp > last.timestamp) {
      // bytes * 8 / milliseconds = kbit/s
      bitrateKbps = Math.round(((bytes - last.bytes) * 8) / (video.timestamp - last.timestamp));
    }
    next = { id: video.id, bytes, timestamp: video.timestamp };
  }
  return {
    video,
    audio,
    bitrateKbps,
    last: next,
    videoCodec: video ? report.get(video.codecId)?.mimeType ?? null : null,
    audioCodec: audio ? report.get(audio.codecId)?.mimeType ?? null : null,
  };
}

/**
 * What a WHEP or WHIP session does over HTTP: fetches with the bearer token and a timeout, and
 * a DELETE of its resource when it closes. Subclasses set `this.pc` and, after the 201,
 * `this.url` (the absolute Location) and `this.etag`.
 */
class HttpSession {
  /** @param label "WHEP" or "WHIP", for log lines; @param token bearer token or "" */
  constructor(label, endpoint, token, iceServers) {
    this.label = label;
    this.endpoint = endpoint;
    this.token = token;
    this.iceServers = iceServers;
    this.url = null; // session resource (Location), absolute
    this.etag = null;
    this.closed = false;
  }

  /** Closes the connection and DELETEs the resource; never throws. */
  async close({ keepalive = false } = {}) {
    if (this.closed) return;
    this.closed = true;
    this.pc.close();
    await this._delete(keepalive);
  }

  async _delete(keepalive) {
    if (!this.url) return;
    try {
      const res = await this._fetch(this.url, { method: "DELETE", keepalive }, 5000);
      if (!res.ok && res.status !== 404) console.warn(`${this.label} DELETE: HTTP ${res.status}`);
    } catch (e) {
      console.warn(`${this.label} DELETE failed`, e);
    }
  }

  async _fetch(url, init, timeoutMs = 10000) {
    const headers = new Headers(init.headers);
    if (this.token) headers.set("Authorization", `Bearer ${this.token}`);
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    try {
      return await fetch(url, { ...init, headers, signal: abort.signal, cache: "no-store" });
    } finally {
      clearTimeout(timer);
    }
  }
}

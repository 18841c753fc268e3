"""A browser-like WebRTC viewer load, for benches/sidebyside/bench.py.

aiortc peers that send RTCP receiver reports and NACKs (no transport-wide congestion control),
like a browser does for a receive-only connection. Frames are assembled from RTP and counted, not
decoded: decoding 30 × 720p would take the machine from the servers being measured.

Reads commands on stdin, one per line, answers on stdout:
  add N   -> connect N more viewers; answers "ok <viewers> <first-frame ms, comma-separated>"
  fps     -> answers "fps <min> <avg>" (video frames per second per viewer since the last fps)
  quit
Signalling: --whep URL (the client offers) or --janus URL --mountpoint ID (Janus offers).
"""

import argparse
import asyncio
import json
import sys
import threading
import time
import urllib.request

import aiortc.rtcrtpreceiver as receiver
from aiortc import RTCPeerConnection, RTCSessionDescription

FRAMES = {}  # id(output queue) -> [frames, first-frame time]
LOCK = threading.Lock()


def counting_worker(loop, input_q, output_q, decode_error):
    """Replaces aiortc's decoder thread: counts assembled video frames instead of decoding."""
    key = id(output_q)
    while True:
        task = input_q.get()
        if task is None:
            break
        codec, frame = task
        if codec.name == "H264":
            with LOCK:
                entry = FRAMES.setdefault(key, [0, None])
                # A decoder shows nothing before the first IDR: count from there.
                if entry[1] is None and is_idr(bytes(frame.data)):
                    entry[1] = time.monotonic()
                if entry[1] is not None:
                    entry[0] += 1


def is_idr(annexb):
    """Whether an Annex B access unit holds an IDR slice (NAL type 5)."""
    for part in annexb.split(b"\x00\x00\x01")[1:]:
        if part and part[0] & 0x1F == 5:
            return True
    return False


receiver.decoder_worker = counting_worker


def http_json(url, body=None, method=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as res:
        return json.loads(res.read())


def http_sdp(url, sdp):
    req = urllib.request.Request(url, data=sdp.encode(), method="POST")
    req.add_header("content-type", "application/sdp")
    with urllib.request.urlopen(req, timeout=30) as res:
        return res.status, res.read().decode()


class Viewer:
    def __init__(self):
        self.pc = RTCPeerConnection()
        self.queue_key = None
        self.started = None

    def video_entry(self):
        with LOCK:
            return FRAMES.get(self.queue_key, [0, None])

    async def whep(self, url):
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.on("track", self.on_track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.started = time.monotonic()
        loop = asyncio.get_running_loop()
        while True:
            try:
                status, answer = await loop.run_in_executor(
                    None, http_sdp, url, self.pc.localDescription.sdp)
                break
            except urllib.error.HTTPError as e:
                if e.code != 409:
                    raise
                await asyncio.sleep(0.5)
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def janus(self, base, mountpoint):
        loop = asyncio.get_running_loop()
        call = lambda url, body=None: loop.run_in_executor(None, http_json, url, body)
        tx = lambda: str(time.monotonic_ns())
        self.pc.on("track", self.on_track)
        self.started = time.monotonic()
        session = (await call(base, {"janus": "create", "transaction": tx()}))["data"]["id"]
        handle = (await call(f"{base}/{session}", {
            "janus": "attach", "plugin": "janus.plugin.streaming", "transaction": tx()}))["data"]["id"]
        await call(f"{base}/{session}/{handle}", {
            "janus": "message", "transaction": tx(), "body": {"request": "watch", "id": mountpoint}})
        offer = None
        while offer is None:
            event = await call(f"{base}/{session}?maxev=1")
            offer = event.get("jsep")
        await self.pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await call(f"{base}/{session}/{handle}", {
            "janus": "message", "transaction": tx(), "body": {"request": "start"},
            "jsep": {"type": "answer", "sdp": self.pc.localDescription.sdp}})

    def on_track(self, track):
        if track.kind == "video":
            self.queue_key = id(track._queue)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--whep")
    parser.add_argument("--janus")
    parser.add_argument("--mountpoint", type=int, default=1)
    args = parser.parse_args()
    viewers = []
    loop = asyncio.get_running_loop()
    last = (time.monotonic(), {})
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().split()
        if not line or line[0] == "quit":
            break
        if line[0] == "add":
            new = [Viewer() for _ in range(int(line[1]))]
            for v in new:
                if args.whep:
                    await v.whep(args.whep)
                else:
                    await v.janus(args.janus, args.mountpoint)
            viewers += new
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(v.video_entry()[1] is None for v in new):
                await asyncio.sleep(0.05)
            firsts = [v.video_entry()[1] for v in new]
            ms = ",".join("%.0f" % ((f - v.started) * 1000) if f else "none" for v, f in zip(new, firsts))
            print("ok", len(viewers), ms or "-", flush=True)
        elif line[0] == "fps":
            now = time.monotonic()
            counts = {id(v): v.video_entry()[0] for v in viewers}
            then, before = last
            rates = [(counts[k] - before.get(k, 0)) / (now - then) for k in counts]
            last = (now, counts)
            if rates:
                print("fps %.1f %.1f" % (min(rates), sum(rates) / len(rates)), flush=True)
            else:
                print("fps nan nan", flush=True)
    for v in viewers:
        await v.pc.close()


if __name__ == "__main__":
    asyncio.run(main())

"""Signalling under a burst: N WHEP offers (aiortc, gathered) prepared first, then POSTed at once
to a streamcore started as in bench.py; prints POST -> 201 percentiles, and the server's threads
and RSS just before each burst (prepared webrtcbins included).

  target/bench-venv/bin/python benches/sidebyside/burst.py --posts 50 --runs 3 [--pool 50]

--pool sets webrtc.viewer_pool (webrtcbins prepared before the offers; the server's default
when not given). The pool fills after the first viewer, which the script connects before the
first burst.
"""

import argparse
import asyncio
import concurrent.futures
import os
import sys
import tempfile
import time
import urllib.error

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from aiortc import RTCPeerConnection  # noqa: E402

import bench  # noqa: E402
import client  # noqa: E402


async def offers(n):
    pcs = []
    for _ in range(n):
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        pcs.append(pc)
    return pcs


def post(url, sdp):
    started = time.monotonic()
    status, _ = client.http_sdp(url, sdp)
    return status, (time.monotonic() - started) * 1000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--binary", default=os.path.join(bench.ROOT, "target/release/streamcore"))
    parser.add_argument("--pool", type=int, help="webrtc.viewer_pool (default: the server's)")
    args = parser.parse_args()
    if args.pool is not None:
        os.environ["STREAMCORE_WEBRTC_VIEWER_POOL"] = str(args.pool)
    clip = bench.make_clip(os.path.join(tempfile.gettempdir(), "sidebyside-720p.mkv"))
    server = bench.Streamcore(clip, args.binary)
    url = server.client_args[1]
    loop = asyncio.new_event_loop()
    try:
        # Media flowing: the first POST that is not a 409.
        deadline = time.time() + 30
        while True:
            pc = loop.run_until_complete(offers(1))[0]
            try:
                post(url, pc.localDescription.sdp)
                break
            except urllib.error.HTTPError as e:
                if e.code != 409 or time.time() > deadline:
                    raise
                time.sleep(0.5)
        for run in range(args.runs):
            pcs = loop.run_until_complete(offers(args.posts))
            time.sleep(2)
            _, threads, rss = bench.sample(server.server.pid)
            with concurrent.futures.ThreadPoolExecutor(args.posts) as pool:
                results = list(pool.map(lambda pc: post(url, pc.localDescription.sdp), pcs))
            ms = sorted(t for status, t in results if status == 201)
            q = lambda p: ms[min(len(ms) - 1, round((len(ms) - 1) * p))]
            print(f"run {run}: {len(ms)}/{args.posts} answered 201, POST->201 p50 {q(0.5):.1f} ms, "
                  f"p95 {q(0.95):.1f} ms, max {ms[-1]:.1f} ms; before it: {threads} threads, "
                  f"RSS {rss / 2**20:.1f} MiB", flush=True)
            for pc in pcs:
                loop.run_until_complete(pc.close())
            time.sleep(12)  # the unanswered viewers are reaped after the connect timeout
    finally:
        server.stop()


if __name__ == "__main__":
    main()

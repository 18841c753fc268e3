"""Side by side: Janus's streaming plugin and streamcore, alternately, on the same clip, with the
same browser-like client (client.py, aiortc), in processes separate from the servers.

Each server gets the same pre-encoded 1280x720 30 fps H.264 2 Mbit/s + Opus clip as RTP over
loopback from an FFmpeg that only copies (`-c copy`): for Janus an FFmpeg started here sends to an
RTP mountpoint; for streamcore the process it runs for a WebRTC-enabled process does the same.
Per server and viewer count it prints CPU-seconds per second (utime+stime from /proc/<pid>/stat),
threads and RSS of the server process, and per run the per-viewer CPU ratio streamcore / Janus.

  scripts/install-bench-deps.sh        # janus + a venv with aiortc in target/bench-venv
  cargo build --release --bin streamcore
  target/bench-venv/bin/python benches/sidebyside/bench.py --runs 3 --viewers 0,10,30 --seconds 20
  target/bench-venv/bin/python benches/sidebyside/bench.py --gop 10 ...   # instant start, 10 s GOP

The machine is shared: compare the two servers within one run (the ratio), not absolute figures
across runs.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
JANUS_LIB = "/usr/lib/x86_64-linux-gnu/janus"
# Below this the client processes did not keep up (the machine is shared): the server then gets
# less feedback and fewer packets leave, so the row says little about the server.
MIN_FPS = 25


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_pair():
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port % 2 == 0 and port < 65000:
            return port, port + 2


def make_clip(path, gop_seconds=2):
    """The clip, made once per GOP length: a key frame every `gop_seconds` (2 s unless asked)."""
    if gop_seconds != 2:
        path = path.replace(".mkv", f"-gop{gop_seconds}.mkv")
    if os.path.exists(path):
        return path
    subprocess.run([
        "ffmpeg", "-hide_banner", "-loglevel", "error",
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "20",
        "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "baseline", "-pix_fmt", "yuv420p",
        "-b:v", "2M", "-maxrate", "2M", "-bufsize", "2M", "-g", str(30 * gop_seconds), "-bf", "0",
        # A long GOP exactly as long (no scene-cut key frames between).
        *([] if gop_seconds == 2 else ["-keyint_min", str(30 * gop_seconds), "-sc_threshold", "0"]),
        "-c:a", "libopus", "-b:a", "64k", "-y", path], check=True)
    return path


def sample(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime=14, stime=15, num_threads=20, rss=24
    ticks = int(fields[11]) + int(fields[12])
    return ticks, int(fields[17]), int(fields[21]) * PAGE


class Server:
    name = ""

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Janus(Server):
    name = "janus"

    def __init__(self, clip):
        self.dir = tempfile.mkdtemp(prefix="bench-janus-")
        self.procs = []
        port = free_port()
        video, audio = free_udp_pair()
        plugins = [f for f in os.listdir(f"{JANUS_LIB}/plugins")
                   if f.endswith(".so") and "streaming" not in f]
        transports = [f for f in os.listdir(f"{JANUS_LIB}/transports")
                      if f.endswith(".so") and "http" not in f]
        with open(f"{self.dir}/janus.jcfg", "w") as f:
            f.write(f"""general: {{
  configs_folder = "{self.dir}"
  plugins_folder = "{JANUS_LIB}/plugins"
  transports_folder = "{JANUS_LIB}/transports"
  events_folder = "{JANUS_LIB}/events"
  loggers_folder = "{JANUS_LIB}/loggers"
  debug_level = 3
  session_timeout = 0
}}
plugins: {{ disable = "{','.join(plugins)}" }}
transports: {{ disable = "{','.join(transports)}" }}
events: {{ broadcast = false }}
loggers: {{ disable = "libjanus_jsonlog.so" }}
nat: {{ nice_debug = false }}
""")
        with open(f"{self.dir}/janus.transport.http.jcfg", "w") as f:
            f.write(f"""general: {{ json = "plain" base_path = "/janus" http = true port = {port} ip = "127.0.0.1" https = false }}
admin: {{ admin_http = false }}
""")
        with open(f"{self.dir}/janus.plugin.streaming.jcfg", "w") as f:
            f.write(f"""general: {{ }}
bench: {{
  type = "rtp"
  id = 1
  description = "bench"
  media = (
    {{ type = "video" mid = "v" port = {video} pt = 96 codec = "h264"
       fmtp = "profile-level-id=42e01f;packetization-mode=1" }},
    {{ type = "audio" mid = "a" port = {audio} pt = 97 codec = "opus" }}
  )
}}
""")
        self.log = open(f"{self.dir}/janus.log", "w")
        self.server = subprocess.Popen(
            ["janus", "-C", f"{self.dir}/janus.jcfg", "-F", self.dir],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.procs.append(self.server)
        self.base = f"http://127.0.0.1:{port}/janus"
        deadline = time.time() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/janus/info", timeout=2)
                break
            except Exception:
                if time.time() > deadline or self.server.poll() is not None:
                    raise RuntimeError(f"janus did not start, see {self.dir}/janus.log")
                time.sleep(0.2)
        self.procs.append(subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
             "-i", clip,
             "-an", "-c:v", "copy", "-f", "rtp", "-payload_type", "96",
             f"rtp://127.0.0.1:{video}?pkt_size=1200",
             "-vn", "-c:a", "copy", "-f", "rtp", "-payload_type", "97",
             f"rtp://127.0.0.1:{audio}?pkt_size=1200"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
        self.pid = self.server.pid
        self.client_args = ["--janus", self.base, "--mountpoint", "1"]


class Streamcore(Server):
    name = "streamcore"

    def __init__(self, clip, binary):
        self.dir = tempfile.mkdtemp(prefix="bench-streamcore-")
        self.procs = []
        port = free_port()
        env = dict(os.environ,
                   STREAMCORE_HTTP_ADDRESS=f"127.0.0.1:{port}",
                   STREAMCORE_DATA_DIR=self.dir,
                   STREAMCORE_DEMO="false",
                   STREAMCORE_LOG=os.environ.get("BENCH_SERVER_LOG", "warn"),
                   STREAMCORE_WEBRTC_MAX_VIEWERS_PER_STREAM="1000",
                   STREAMCORE_WEBRTC_MAX_VIEWERS_TOTAL="1000")
        self.log = open(f"{self.dir}.log", "w")
        self.server = subprocess.Popen([binary], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.procs.append(self.server)
        base = f"http://127.0.0.1:{port}"
        shared = os.path.join(self.dir, "clip.mkv")
        deadline = time.time() + 30
        # Ready first (an idempotent GET, retried: a cold start under load can take seconds while
        # connections wait in the listen backlog), then one POST, so a slow answer is never sent twice.
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/v3/process", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                if time.time() > deadline or self.server.poll() is not None:
                    raise RuntimeError(f"streamcore did not start ({e}), see {self.dir}.log")
                time.sleep(0.2)
        body = json.dumps({
            "id": "bench",
            "input": [{"address": shared, "options": ["-re", "-stream_loop", "-1"]}],
            "output": [{"address": "-", "options": ["-f", "null"]}],
            "webrtc": {"enabled": True}}).encode()
        if not os.path.exists(shared):
            os.link(clip, shared) if os.stat(clip).st_dev == os.stat(self.dir).st_dev \
                else shutil.copy(clip, shared)
        req = urllib.request.Request(f"{base}/api/v3/process", data=body, method="POST")
        req.add_header("content-type", "application/json")
        urllib.request.urlopen(req, timeout=30)
        self.pid = self.server.pid
        self.client_args = ["--whep", f"{base}/whep/bench"]


class Clients:
    def __init__(self, python, args, processes):
        self.procs = [subprocess.Popen([python, os.path.join(HERE, "client.py"), *args],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                      for _ in range(processes)]
        self.viewers = 0
        self.first_ms = []

    def ask(self, proc, line):
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        return proc.stdout.readline().split()

    def grow(self, n):
        while self.viewers < n:
            for p in self.procs:
                if self.viewers >= n:
                    break
                reply = self.ask(p, "add 1")
                if not reply or reply[0] != "ok":
                    raise RuntimeError(f"client failed: {reply}")
                self.first_ms += [float(x) for x in reply[2].split(",") if x not in ("none", "-")]
                self.viewers += 1

    def fps(self):
        rates = [self.ask(p, "fps") for p in self.procs]
        mins = [float(r[1]) for r in rates if r[1] != "nan"]
        avgs = [float(r[2]) for r in rates if r[2] != "nan"]
        return (min(mins) if mins else float("nan"), statistics.mean(avgs) if avgs else float("nan"))

    def close(self):
        for p in self.procs:
            try:
                p.stdin.write("quit\n")
                p.stdin.flush()
            except BrokenPipeError:
                pass
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def measure(server, levels, seconds, python, processes, smaps=None):
    rows = {}
    clients = Clients(python, server.client_args, processes)
    try:
        time.sleep(3)  # media flowing, pipelines built
        for n in levels:
            clients.grow(n)
            time.sleep(4)
            clients.fps()
            t0, _, _ = sample(server.pid)
            start = time.monotonic()
            time.sleep(seconds)
            t1, threads, rss = sample(server.pid)
            if smaps:
                # The server's memory map at each level, for smaps.py.
                shutil.copy(f"/proc/{server.pid}/smaps", os.path.join(smaps, f"{server.name}-{n}.smaps"))
            wall = time.monotonic() - start
            fps_min, fps_avg = clients.fps() if n else (float("nan"), float("nan"))
            rows[n] = dict(cpu=(t1 - t0) / TICKS / wall, threads=threads, rss=rss / 2**20,
                           fps_min=fps_min, fps_avg=fps_avg)
            print(f"  {server.name:10} {n:3} viewers: cpu {rows[n]['cpu']:.4f} CPU-s/s, "
                  f"threads {threads}, rss {rows[n]['rss']:.1f} MiB, fps min {fps_min:.1f} avg {fps_avg:.1f}",
                  file=sys.stderr, flush=True)
        rows["first_ms"] = sorted(clients.first_ms)
    finally:
        clients.close()
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--viewers", default="0,10,30")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/streamcore"))
    parser.add_argument("--servers", default="janus,streamcore")
    parser.add_argument("--gop", type=int, default=2, metavar="SECONDS",
                        help="the clip's key frame interval (instant start is measured on 2 and 10)")
    parser.add_argument("--smaps", metavar="DIR",
                        help="copy each server's /proc/<pid>/smaps here at every level (last run kept)")
    args = parser.parse_args()
    levels = [int(v) for v in args.viewers.split(",")]
    clip = make_clip(os.path.join(tempfile.gettempdir(), "sidebyside-720p.mkv"), args.gop)
    servers = args.servers.split(",")
    results = {s: [] for s in servers}
    for run in range(args.runs):
        order = servers if run % 2 == 0 else list(reversed(servers))
        for name in order:
            server = Janus(clip) if name == "janus" else Streamcore(clip, args.binary)
            try:
                print(f"run {run} {name} (pid {server.pid})", file=sys.stderr, flush=True)
                results[name].append(measure(server, levels, args.seconds, sys.executable,
                                             args.client_processes, args.smaps))
            finally:
                server.stop()

    def med(values):
        values = [v for v in values if v == v]
        return statistics.median(values) if values else float("nan")

    print("\n| server | viewers | CPU-s/s | per viewer | threads | per viewer | RSS MiB | per viewer | fps min |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = levels[0]
    for name in servers:
        for n in levels:
            runs = results[name]
            per = lambda key: med([(r[n][key] - r[base][key]) / (n - base) for r in runs]) if n != base else float("nan")
            print(f"| {name} | {n} | {med([r[n]['cpu'] for r in runs]):.4f} | {per('cpu'):.4f} | "
                  f"{med([r[n]['threads'] for r in runs]):.0f} | {per('threads'):.2f} | "
                  f"{med([r[n]['rss'] for r in runs]):.1f} | {per('rss'):.2f} | "
                  f"{med([r[n]['fps_min'] for r in runs]):.1f} |")
    if set(servers) == {"janus", "streamcore"}:
        print("\nPer-viewer CPU ratio streamcore / Janus (each run's own pair; median of the runs "
              f"where every viewer of both servers received >= {MIN_FPS} fps):")
        for n in levels[1:]:
            pairs = list(zip(results["streamcore"], results["janus"]))
            ratios = [((s[n]["cpu"] - s[base]["cpu"]) / (j[n]["cpu"] - j[base]["cpu"]),
                       min(s[n]["fps_min"], j[n]["fps_min"]) >= MIN_FPS) for s, j in pairs]
            shown = ", ".join("%.2f%s" % (r, "" if ok else " (client-limited)") for r, ok in ratios)
            print(f"  {n} viewers: runs {shown}; median {med([r for r, ok in ratios if ok]):.2f}")
    for name in servers:
        firsts = sorted(x for r in results[name] for x in r["first_ms"])
        if firsts:
            q = lambda p: firsts[min(len(firsts) - 1, round((len(firsts) - 1) * p))]
            print(f"{name}: first frame after signalling start, {len(firsts)} viewers: "
                  f"p50 {q(0.5):.0f} ms, p95 {q(0.95):.0f} ms")


if __name__ == "__main__":
    main()

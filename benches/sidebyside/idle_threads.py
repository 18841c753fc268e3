"""An idle stream's server CPU per thread: streamcore started as in bench.py with the bench's
process and no viewer, then utime+stime of every thread over a window, summed by thread name.

  target/bench-venv/bin/python benches/sidebyside/idle_threads.py [--binary B] [--seconds 15]
"""

import argparse
import collections
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def threads(pid):
    """{tid: (name, utime+stime ticks)} of a process."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
        except OSError:
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[tid] = (name, int(fields[11]) + int(fields[12]))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=os.path.join(bench.ROOT, "target/release/streamcore"))
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--settle", type=float, default=6)
    args = parser.parse_args()
    clip = bench.make_clip(os.path.join(tempfile.gettempdir(), "sidebyside-720p.mkv"))
    server = bench.Streamcore(clip, args.binary)
    try:
        time.sleep(args.settle)
        hz = os.sysconf("SC_CLK_TCK")
        before, started = threads(server.pid), time.monotonic()
        time.sleep(args.seconds)
        after, elapsed = threads(server.pid), time.monotonic() - started
        by_name = collections.Counter()
        for tid, (name, ticks) in after.items():
            by_name[name] += ticks - before.get(tid, (name, 0))[1]
        total = sum(by_name.values())
        print(f"total {total / hz / elapsed:.4f} CPU-s/s, {len(after)} threads")
        for name, ticks in by_name.most_common():
            print(f"  {name:20s} {ticks / hz / elapsed:.4f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()

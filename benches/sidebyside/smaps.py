#!/usr/bin/env python3
"""Where a server's resident memory grows between two viewer levels.

Reads two copies of /proc/<pid>/smaps written by `bench.py --smaps DIR` (e.g.
`streamcore-0.smaps` and `streamcore-30.smaps`) and splits the resident set into thread stacks
(anonymous mappings of the 8 MiB default stack size), other anonymous memory (the heap and
malloc's arenas), and each file. Prints both levels and the growth per viewer.

    python3 benches/sidebyside/smaps.py DIR/streamcore-0.smaps DIR/streamcore-30.smaps --viewers 30
"""

import argparse
import collections
import re

MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")
# glibc's default thread stack is 8 MiB; its mapping is that plus a page or two.
STACK_KIB = range(8188, 8200)


def resident(path):
    """Resident KiB by kind: 'stacks', 'anon' or a file name; and the number of stacks."""
    kib = collections.Counter()
    stacks = 0
    name = size = None
    for line in open(path):
        if MAPPING.match(line):
            fields = line.split()
            name = fields[5] if len(fields) > 5 else "[anon]"
        elif line.startswith("Size:"):
            size = int(line.split()[1])
        elif line.startswith("Rss:"):
            rss = int(line.split()[1])
            if name == "[anon]" and size in STACK_KIB:
                kind = "stacks"
                stacks += 1
            elif name in ("[anon]", "[heap]"):
                kind = "anon"
            else:
                kind = name
            kib[kind] += rss
    return kib, stacks


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--viewers", type=int, required=True, help="viewers added between the two")
    parser.add_argument("--top", type=int, default=8, help="files listed by growth")
    args = parser.parse_args()
    (before, stacks0), (after, stacks1) = resident(args.before), resident(args.after)
    n = args.viewers

    def row(label, a, b):
        print(f"{label:44} {a / 1024:8.1f} {b / 1024:8.1f} {(b - a) / n:10.0f}")

    print(f"{'KiB resident':44} {'MiB then':>8} {'MiB now':>8} {'KiB/viewer':>10}")
    row("total", sum(before.values()), sum(after.values()))
    row(f"thread stacks ({stacks0} -> {stacks1})", before["stacks"], after["stacks"])
    row("other anonymous (heap, malloc arenas)", before["anon"], after["anon"])
    files = [k for k in set(before) | set(after) if k not in ("stacks", "anon")]
    row("files (binary, libraries)", sum(before[k] for k in files), sum(after[k] for k in files))
    grown = sorted(files, key=lambda k: after[k] - before[k], reverse=True)[: args.top]
    for k in grown:
        row("  " + k.rsplit("/", 1)[-1], before[k], after[k])
    if stacks1 > stacks0:
        print(f"touched stack per new thread: {(after['stacks'] - before['stacks']) / (stacks1 - stacks0):.0f} KiB")


if __name__ == "__main__":
    main()

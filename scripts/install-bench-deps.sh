#!/usr/bin/env bash
# Extra dependencies of the side-by-side benchmark (benches/sidebyside/), not needed to build or
# test: Debian's Janus (the server compared against) and a Python venv with aiortc (the
# browser-like client) in target/bench-venv. Run scripts/install-deps.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(janus python3-venv)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  # The package enables a system-wide Janus; the benchmark runs its own.
  systemctl disable --now janus >/dev/null 2>&1 || true
fi

VENV=target/bench-venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet 'aiortc>=1.9,<2'
echo "bench deps ready: $VENV/bin/python benches/sidebyside/bench.py --help"

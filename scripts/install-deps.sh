#!/usr/bin/env bash
# Installs the Debian 12 (bookworm) packages streamcore needs to build, run and test, then checks
# that a Rust toolchain is available. Safe to run again: apt is skipped when everything is present.
# Downloads nothing except through apt; the Rust toolchain itself comes from rustup (not installed here).
set -euo pipefail

# Oldest Rust the locked dependencies build with (Cargo.lock: uuid 1.29 declares rust-version 1.89).
MIN_RUST=1.89

PACKAGES=(
  pkg-config
  build-essential
  ca-certificates
  ffmpeg
  libgstreamer1.0-dev
  libgstreamer-plugins-base1.0-dev
  libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly
  gstreamer1.0-nice
  gstreamer1.0-libav
  gstreamer1.0-tools
  libssl-dev
  chromium
  python3
  # tests/sources.rs: the RTSP camera stand-in (tests/fixtures/rtsp_camera.py, gst-rtsp-server).
  python3-gi
  gir1.2-gst-rtsp-server-1.0
  # tests/security.rs: a second host in a network namespace (ip netns) that speaks HTTP (curl).
  iproute2
  curl
)

say() { printf 'install-deps: %s\n' "$*" >&2; }

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  say "dpkg-query/apt-get not found: this script supports Debian 12 (bookworm) only."
  say "Install these packages with your system's package manager instead: ${PACKAGES[*]}"
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
  say "all ${#PACKAGES[@]} system packages are installed; skipping apt"
else
  say "installing: ${missing[*]}"
  if [[ $(id -u) -eq 0 ]]; then
    as_root=()
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    say "not root and sudo is not available; run this script as root"
    exit 1
  fi
  "${as_root[@]}" apt-get update
  # Installs the whole list, so packages already present are upgraded to the candidate version.
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${PACKAGES[@]}"
fi

# Rust toolchain: cargo on PATH, or rustup's default location.
cargo_bin=$(command -v cargo 2>/dev/null || true)
if [[ -z "$cargo_bin" && -x "$HOME/.cargo/bin/cargo" ]]; then
  # The commands after this script run `cargo` from PATH, so this would fail right away.
  say "found $HOME/.cargo/bin/cargo, but it is not on PATH; run . \"\$HOME/.cargo/env\" (or open a new login shell) and try again"
  exit 1
fi
if [[ -z "$cargo_bin" ]]; then
  say "cargo not found (looked in PATH and \$HOME/.cargo/bin)."
  say "streamcore needs a Rust toolchain >= $MIN_RUST. Install one with rustup (https://rustup.rs):"
  say "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy"
  say "  . \"\$HOME/.cargo/env\""
  exit 1
fi

version=$("$cargo_bin" --version 2>/dev/null | awk '{print $2}')
if [[ ! "$version" =~ ^([0-9]+)\.([0-9]+) ]]; then
  say "cannot read the version of $cargo_bin (got '${version:-nothing}')"
  exit 1
fi
if ((BASH_REMATCH[1] < ${MIN_RUST%%.*} || (BASH_REMATCH[1] == ${MIN_RUST%%.*} && BASH_REMATCH[2] < ${MIN_RUST#*.}))); then
  say "cargo $version at $cargo_bin is too old: streamcore needs Rust >= $MIN_RUST (rustup update stable)"
  exit 1
fi
say "cargo $version ($cargo_bin) ok"

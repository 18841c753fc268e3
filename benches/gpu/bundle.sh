#!/bin/bash
# Packs what benches/gpu/run.sh needs on a bare GPU machine that has an NVIDIA driver but no
# GStreamer, FFmpeg or package registry (such as this workplace's device machines): the release
# server and loadtest bench, a static FFmpeg (imageio-ffmpeg's, from PyPI), Debian's GStreamer
# plugins for the transcode path with every library they link except glibc, and two 1080p clips.
# Output: .gpu/ in the repository root (add `/.gpu/` to .git/info/exclude), about 47 MB.
# gst-libav is left out (with FFmpeg's codec libraries it is over 150 MB): the software decoders
# there are openh264dec and, for H.265, none.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUTDIR=$ROOT/.gpu
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
S=$WORK/stage
mkdir -p "$S/bin" "$S/lib" "$S/gst" "$OUTDIR"

cd "$ROOT"
cargo build --release --bin streamcore
cargo bench --bench loadtest --no-run
T=$ROOT/target/release
cp "$T/streamcore" "$S/bin/streamcore"
cp "$(ls -t "$T"/deps/loadtest-* | grep -v '\.d$' | head -1)" "$S/bin/loadtest"
strip "$S/bin/streamcore" "$S/bin/loadtest"

P=/usr/lib/x86_64-linux-gnu/gstreamer-1.0
PLUGINS=""
for p in coreelements app opusparse alaw mulaw rtp rtpmanager rtpmanagerbad udp videotestsrc \
    audiotestsrc videoconvertscale videorate x264 openh264 nvcodec videoparsersbad audioparsers \
    opus audioconvert audioresample webrtc nice dtls srtp sctp typefindfunctions playback \
    autodetect isomp4 matroska mpegtsdemux id3demux debugutilsbad videofilter; do
  cp "$P/libgst$p.so" "$S/gst/"
  PLUGINS="$PLUGINS $P/libgst$p.so"
done
cp /usr/bin/gst-launch-1.0 /usr/bin/gst-inspect-1.0 \
  /usr/lib/x86_64-linux-gnu/gstreamer1.0/gstreamer-1.0/gst-plugin-scanner "$S/bin/"
# shellcheck disable=SC2086
python3 "$ROOT/benches/gpu/closure.py" $PLUGINS "$S/bin/streamcore" "$S/bin/loadtest" \
  "$S/bin/gst-launch-1.0" "$S/bin/gst-plugin-scanner" | while read -r lib; do cp -L "$lib" "$S/lib/"; done
# ICU's 31 MB of data: libxml2 (under libnice's UPnP helper) links ICU, but nothing on this path
# converts text through it. A stub satisfies the loader; the transfer to the GPU machine is
# size-bound (64 MiB with the repository).
echo 'const char icudt72_dat[64] = {0};' |
  gcc -shared -o "$S/lib/libicudata.so.72" -Wl,-soname,libicudata.so.72 -x c -

python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
  -d "$WORK/wheel" imageio-ffmpeg==0.7.0
(cd "$WORK/wheel" && python3 -m zipfile -e imageio_ffmpeg-*.whl x)
install -m 755 "$WORK"/wheel/x/imageio_ffmpeg/binaries/ffmpeg-linux-x86_64-v7.0.2 "$S/bin/ffmpeg"

tar -C "$S" -cf - . | xz -T0 -9 > "$OUTDIR/bundle.tar.xz"
# Decode-only clips: 6 s of 1080p30, H.264 High with B-frames and H.265 Main.
ffmpeg -v error -f lavfi -i testsrc2=size=1920x1080:rate=30 -t 6 -pix_fmt yuv420p -c:v libx264 \
  -preset veryfast -b:v 2M -g 60 -bf 2 -y "$OUTDIR/h264-1080p.mp4"
ffmpeg -v error -f lavfi -i testsrc2=size=1920x1080:rate=30 -t 6 -pix_fmt yuv420p -c:v libx265 \
  -preset veryfast -b:v 1500k -x265-params keyint=60:log-level=error -tag:v hvc1 \
  -y "$OUTDIR/h265-1080p.mp4"
cp "$ROOT/benches/gpu/run.sh" "$OUTDIR/run.sh"
du -sh "$OUTDIR"/*

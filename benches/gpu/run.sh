#!/bin/bash
# The CUDA path on a real NVIDIA GPU, from the repository root, after benches/gpu/bundle.sh:
# what nvcodec registers, the server's encoder and decoder choice (its start-up tests), decoding
# 1080p30 on NVDEC against OpenH264, and the transcode CPU of the server with NVDEC decoding
# against software decoding (loadtest --force-transcode, auto against webrtc.encoder = x264).
# Writes select-auto.json and dmon-auto.txt (GPU decoder/encoder load) into $OUT.
R=$PWD; B=/opt/streamcore-gpu; O=${OUT:-/tmp/gpu-out}; mkdir -p "$O" $B
tar -xJf .gpu/bundle.tar.xz -C $B || exit 1
export LD_LIBRARY_PATH=$B/lib:/usr/local/nvidia/lib64:/usr/local/nvidia/lib
export GST_PLUGIN_SYSTEM_PATH_1_0=$B/gst GST_PLUGIN_PATH_1_0= GST_PLUGIN_SCANNER_1_0=$B/bin/gst-plugin-scanner
export GST_REGISTRY_1_0=/tmp/gst-registry.bin PATH=$B/bin:$PATH
TIMEFORMAT='real %R user %U sys %S'
step() { echo; echo "=== $* ($(date +%T))"; }

step machine
nproc; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
ldconfig -p | grep -iE 'libcuda\.so|nvcuvid|nvidia-encode'
ls /usr/local/nvidia/lib64 2>/dev/null | grep -iE 'libcuda\.so|nvcuvid|nvidia-encode'

step registry
gst-inspect-1.0 nvcodec 2>&1 | grep -E '^ *nv|Plugin|elements'
gst-inspect-1.0 nvh264enc 2>&1 | head -3

step decode only, 1080p30 6 s, to system memory
for d in "h264 nvh264dec" "h264 openh264dec" "h265 nvh265dec"; do
  set -- $d
  echo "-- $2: frames $( { time gst-launch-1.0 -v filesrc location=.gpu/$1-1080p.mp4 ! qtdemux \
    ! "${1}parse" ! "$2" ! video/x-raw ! fakesink sync=false silent=false 2>&1 | grep -c chain; } 2>&1 | tr '\n' ' ')"
done

for forced in null '"cuda"' '"x264"'; do
  step "select-encoder, webrtc.encoder = $forced"
  echo "{\"forced\":$forced,\"pipelines_dir\":null,\"settings\":{}}" | streamcore select-encoder |
    tee "$O/select-$(echo $forced | tr -d '"').json"
  echo
done

# The bench starts the server from where it was built.
[ -x /work/main/target/release/streamcore ] ||
  { mkdir -p /work/main/target/release && cp $B/bin/streamcore /work/main/target/release/; }
export LOADTEST_SERVER_LOG="warn,streamcore::server=info,streamcore::media=info,streamcore::media::stream=warn"
step "loadtest, auto (NVDEC decoding, x264 encoding where NVENC is missing)"
nvidia-smi dmon -s u -d 3 -c 12 > "$O/dmon-auto.txt" 2>&1 &
loadtest --bench --force-transcode --viewers 0,1 --seconds 10 --runs 2 --posts 5 2>&1 |
  grep -v "pipeline description unavailable" | tail -25
wait; cat "$O/dmon-auto.txt"
step "loadtest, webrtc.encoder = x264 (software decoding)"
STREAMCORE_WEBRTC_ENCODER=x264 loadtest --bench --force-transcode --viewers 0,1 --seconds 10 \
  --runs 2 --posts 5 2>&1 | grep -v "pipeline description unavailable" | tail -25
step done

#!/bin/bash
# Server CPU (CPU-seconds per second, from utime+stime in /proc/<pid>/stat) for one 2 Mbit/s
# publisher and for N readers, RTMP, RTMPS (self-signed certificate from the openssl CLI, readers
# over RTMPS too) then SRT. Usage: cpu.sh <streamcore binary> [readers] [seconds]
# With SRT_PASSPHRASE set (10-79 characters) the SRT server and its callers encrypt.
set -u
BIN=$1; N=${2:-4}; SECS=${3:-20}; D=$(mktemp -d); HZ=$(getconf CLK_TCK)
RTMP=127.0.0.1:$((20000 + RANDOM % 10000)); SRT=127.0.0.1:$((30000 + RANDOM % 10000))
RTMPS=127.0.0.1:$((40000 + RANDOM % 10000))
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -keyout $D/key.pem -out $D/cert.pem 2>/dev/null
ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc=size=1280x720:rate=30 -f lavfi -i sine=sample_rate=48000 -t 10 \
  -c:v libx264 -preset veryfast -g 30 -bf 0 -b:v 1900k -maxrate 2M -bufsize 1M -c:a aac -b:a 96k $D/clip.mp4
STREAMCORE_HTTP_ADDRESS=127.0.0.1:0 STREAMCORE_DATA_DIR=$D/data STREAMCORE_DEMO=false STREAMCORE_WEBRTC_ENABLED=false \
  STREAMCORE_RTMP_ENABLE=true STREAMCORE_RTMP_ADDRESS=$RTMP STREAMCORE_RTMP_ENABLE_TLS=true \
  STREAMCORE_RTMP_ADDRESS_TLS=$RTMPS STREAMCORE_TLS_ENABLE=true STREAMCORE_TLS_CERT_FILE=$D/cert.pem \
  STREAMCORE_TLS_KEY_FILE=$D/key.pem STREAMCORE_SRT_ENABLE=true STREAMCORE_SRT_ADDRESS=$SRT \
  STREAMCORE_SRT_PASSPHRASE=${SRT_PASSPHRASE:-} \
  STREAMCORE_LOG=warn $BIN > $D/server.log 2>&1 &
PID=$!; sleep 2
cpu() { awk '{print $14+$15}' /proc/$PID/stat; }
measure() { local a b; a=$(cpu); sleep $SECS; b=$(cpu); echo "scale=4; ($b-$a)/$HZ/$SECS" | bc; }
run() { # proto publish-url read-url fmt
  ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i $D/clip.mp4 -c copy -f $4 "$2" & local P=$!
  sleep 3; local one=$(measure); local R=()
  for i in $(seq $N); do ffmpeg -hide_banner -loglevel fatal -i "$3" -c copy -f null - & R+=($!); done
  sleep 3; local many=$(measure)
  kill ${R[@]} $P; wait ${R[@]} $P 2>/dev/null
  echo "$1: idle $idle, 1 publisher $one, + $N readers $many CPU-s/s; per publisher $(echo "$one-$idle" | bc), per reader $(echo "scale=4; ($many-$one)/$N" | bc)"
}
idle=$(measure)
run rtmp "rtmp://$RTMP/cam" "rtmp://$RTMP/cam" flv
run rtmps "rtmps://$RTMPS/cam" "rtmps://$RTMPS/cam" flv
S="srt://$SRT?mode=caller&transtype=live&latency=20000${SRT_PASSPHRASE:+&passphrase=$SRT_PASSPHRASE}&streamid=cam"
run srt "$S,mode:publish" "$S,mode:request" mpegts
kill $PID; wait $PID 2>/dev/null; rm -rf $D

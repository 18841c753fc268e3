//! Real FFmpeg stderr for the parsers' tests, and the helpers that feed it.

use super::{IoRef, LineKind, Parser};

// Real FFmpeg 5.1.x stderr (Debian 12); stats lines are separated by '\r' like on the pipe.
pub(super) const TRANSCODE: &str = "Input #0, lavfi, from 'testsrc=size=320x240:rate=25':
  Duration: N/A, start: 0.000000, bitrate: N/A
  Stream #0:0: Video: rawvideo (RGB[24] / 0x18424752), rgb24, 320x240 [SAR 1:1 DAR 4:3], 25 tbr, 25 tbn
Input #1, lavfi, from 'sine=frequency=440:sample_rate=48000':
  Duration: N/A, start: 0.000000, bitrate: 768 kb/s
  Stream #1:0: Audio: pcm_s16le, 48000 Hz, mono, s16, 768 kb/s
Stream mapping:
  Stream #0:0 -> #0:0 (rawvideo (native) -> h264 (libx264))
  Stream #1:0 -> #0:1 (pcm_s16le (native) -> aac (native))
Press [q] to stop, [?] for help
[libx264 @ 0x5622f5122b80] using SAR=1/1
Output #0, mpegts, to '/tmp/x.ts':
  Metadata:
    encoder         : Lavf59.27.100
  Stream #0:0: Video: h264, yuv444p(tv, progressive), 320x240 [SAR 1:1 DAR 4:3], q=2-31, 25 fps, 90k tbn
    Metadata:
      encoder         : Lavc59.37.100 libx264
    Side data:
      cpb: bitrate max/min/avg: 0/0/0 buffer size: 0 vbv_delay: N/A
  Stream #0:1: Audio: aac (LC), 48000 Hz, mono, fltp, 69 kb/s
    Metadata:
      encoder         : Lavc59.37.100 aac
frame=    1 fps=0.0 q=0.0 size=       0kB time=00:00:00.00 bitrate=N/A speed=   0x    \rframe=   13 fps=0.0 q=0.0 size=       0kB time=00:00:00.00 bitrate=N/A speed=   0x    \rframe=   26 fps= 26 q=0.0 size=       0kB time=00:00:00.00 bitrate=N/A speed=   0x    \rframe=   38 fps= 25 q=0.0 size=       0kB time=00:00:00.00 bitrate=N/A speed=   0x    \rframe=   51 fps= 25 q=28.0 size=       6kB time=00:00:00.06 bitrate= 775.5kbits/s speed=0.0318x    \rframe=   63 fps= 25 q=28.0 size=      14kB time=00:00:00.55 bitrate= 206.1kbits/s speed=0.22x    \rframe=   75 fps= 25 q=28.0 size=      25kB time=00:00:02.19 bitrate=  93.8kbits/s speed=0.728x    \rframe=   75 fps= 25 q=-1.0 Lsize=      64kB time=00:00:03.00 bitrate= 173.0kbits/s speed=0.987x    
video:16kB audio:26kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: 53.719635%
";

pub(super) const MULTI_OUTPUT_TAGGED: &str = "[info] Input #0, lavfi, from 'testsrc=size=320x240:rate=25':
[info]   Duration: N/A, start: 0.000000, bitrate: N/A
[info]   Stream #0:0: Video: rawvideo (RGB[24] / 0x18424752), rgb24, 320x240 [SAR 1:1 DAR 4:3], 25 tbr, 25 tbn
[info] Input #1, lavfi, from 'sine':
[info]   Duration: N/A, start: 0.000000, bitrate: 705 kb/s
[info]   Stream #1:0: Audio: pcm_s16le, 44100 Hz, mono, s16, 705 kb/s
[info] Stream mapping:
[info]   Stream #0:0 -> #0:0 (rawvideo (native) -> h264 (libx264))
[info]   Stream #1:0 -> #0:1 (pcm_s16le (native) -> aac (native))
[info]   Stream #0:0 -> #1:0 (rawvideo (native) -> mpeg4 (native))
[info] Output #1, null, to 'pipe:':
[info]   Metadata:
[info]     encoder         : Lavf59.27.100
[info]   Stream #1:0: Video: mpeg4, yuv420p(tv, progressive), 320x240 [SAR 1:1 DAR 4:3], q=2-31, 200 kb/s, 25 fps, 25 tbn
[info]     Metadata:
[info]       encoder         : Lavc59.37.100 mpeg4
[info]     Side data:
[info]       cpb: bitrate max/min/avg: 0/0/200000 buffer size: 0 vbv_delay: N/A
[info] Output #0, mpegts, to '/tmp/o1.ts':
[info]   Metadata:
[info]     encoder         : Lavf59.27.100
[info]   Stream #0:0: Video: h264, yuv444p(tv, progressive), 320x240 [SAR 1:1 DAR 4:3], q=2-31, 25 fps, 90k tbn
[info]     Metadata:
[info]       encoder         : Lavc59.37.100 libx264
[info]     Side data:
[info]       cpb: bitrate max/min/avg: 0/0/0 buffer size: 0 vbv_delay: N/A
[info]   Stream #0:1: Audio: aac (LC), 44100 Hz, mono, fltp, 69 kb/s
[info]     Metadata:
[info]       encoder         : Lavc59.37.100 aac
[info] frame=    1 fps=0.0 q=0.0 q=4.7 size=       0kB time=00:00:00.04 bitrate=   0.0kbits/s speed=5.98x    \r[info] frame=   25 fps=0.0 q=-1.0 Lq=1.6 size=      24kB time=00:00:01.02 bitrate= 192.8kbits/s speed=16.4x    
[info] video:54kB audio:9kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: unknown
";

pub(super) const FILTER_COMPLEX: &str = "Input #0, lavfi, from 'testsrc=size=320x240:rate=25':
  Duration: N/A, start: 0.000000, bitrate: N/A
  Stream #0:0: Video: rawvideo (RGB[24] / 0x18424752), rgb24, 320x240 [SAR 1:1 DAR 4:3], 25 tbr, 25 tbn
Input #1, lavfi, from 'testsrc2=size=160x120:rate=25':
  Duration: N/A, start: 0.000000, bitrate: N/A
  Stream #1:0: Video: rawvideo (I420 / 0x30323449), yuv420p, 160x120 [SAR 1:1 DAR 4:3], 25 tbr, 25 tbn
Stream mapping:
  Stream #0:0 (rawvideo) -> overlay
  Stream #1:0 (rawvideo) -> overlay
  overlay:default -> Stream #0:0 (libx264)
Output #0, mpegts, to '/tmp/fc.ts':
  Stream #0:0: Video: h264, yuv420p(tv, progressive), 320x240 [SAR 1:1 DAR 4:3], q=2-31, 25 fps, 90k tbn
frame=    1 fps=0.0 q=0.0 size=       0kB time=00:00:00.00 bitrate=N/A speed=   0x    \rframe=   25 fps=0.0 q=-1.0 Lsize=      30kB time=00:00:00.88 bitrate= 275.2kbits/s speed=20.9x    
video:22kB audio:0kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: 31.537090%
";

pub(super) const COPY_TWO_OUTPUTS: &str = "Input #0, mpegts, from '/tmp/x.ts':
  Duration: 00:00:03.02, start: 1.458667, bitrate: 172 kb/s
  Program 1 
    Metadata:
      service_name    : Service01
      service_provider: FFmpeg
  Stream #0:0[0x100]: Video: h264 (High 4:4:4 Predictive) ([27][0][0][0] / 0x001B), yuv444p(progressive), 320x240 [SAR 1:1 DAR 4:3], 25 fps, 25 tbr, 90k tbn
  Stream #0:1[0x101]: Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, mono, fltp, 72 kb/s
Output #0, mpegts, to '/tmp/c1.ts':
  Metadata:
    encoder         : Lavf59.27.100
  Stream #0:0: Video: h264 (High 4:4:4 Predictive) ([27][0][0][0] / 0x001B), yuv444p(progressive), 320x240 [SAR 1:1 DAR 4:3], q=2-31, 25 fps, 25 tbr, 90k tbn
  Stream #0:1: Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, mono, fltp, 72 kb/s
Output #1, null, to 'pipe:':
  Metadata:
    encoder         : Lavf59.27.100
  Stream #1:0: Video: h264 (High 4:4:4 Predictive) ([27][0][0][0] / 0x001B), yuv444p(progressive), 320x240 [SAR 1:1 DAR 4:3], q=2-31, 25 fps, 25 tbr, 90k tbn
Stream mapping:
  Stream #0:0 -> #0:0 (copy)
  Stream #0:1 -> #0:1 (copy)
  Stream #0:0 -> #1:0 (copy)
Press [q] to stop, [?] for help
frame=    1 fps=0.0 q=-1.0 q=-1.0 size=       0kB time=00:00:00.00 bitrate=N/A speed=N/A    \rframe=   75 fps=0.0 q=-1.0 Lq=-1.0 size=      64kB time=00:00:03.02 bitrate= 171.8kbits/s speed=5.86e+03x    
video:32kB audio:27kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: 8.058541%
";

pub(super) const AUDIO_ONLY: &str = "Input #0, mpegts, from '/tmp/x.ts':
  Duration: 00:00:03.02, start: 1.458667, bitrate: 172 kb/s
  Program 1 
    Metadata:
      service_name    : Service01
      service_provider: FFmpeg
  Stream #0:0[0x100]: Video: h264 (High 4:4:4 Predictive) ([27][0][0][0] / 0x001B), yuv444p(progressive), 320x240 [SAR 1:1 DAR 4:3], 25 fps, 25 tbr, 90k tbn
  Stream #0:1[0x101]: Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, mono, fltp, 72 kb/s
Stream mapping:
  Stream #0:1 -> #0:0 (aac (native) -> mp3 (libmp3lame))
Press [q] to stop, [?] for help
Output #0, mp3, to '/tmp/a.mp3':
  Metadata:
    TSSE            : Lavf59.27.100
  Stream #0:0: Audio: mp3, 48000 Hz, mono, fltp
    Metadata:
      encoder         : Lavc59.37.100 libmp3lame
size=       0kB time=00:00:00.00 bitrate=N/A speed=N/A    \rsize=      24kB time=00:00:03.04 bitrate=  65.1kbits/s speed= 312x    
video:0kB audio:24kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: 0.964355%
";

pub(super) const PROBE_TS: &str = "Input #0, mpegts, from '/tmp/x.ts':
  Duration: 00:00:03.02, start: 1.458667, bitrate: 172 kb/s
  Program 1 
    Metadata:
      service_name    : Service01
      service_provider: FFmpeg
  Stream #0:0[0x100]: Video: h264 (High 4:4:4 Predictive) ([27][0][0][0] / 0x001B), yuv444p(progressive), 320x240 [SAR 1:1 DAR 4:3], 25 fps, 25 tbr, 90k tbn
  Stream #0:1[0x101]: Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, mono, fltp, 72 kb/s
At least one output file must be specified
";

pub(super) const PROBE_MKV: &str = "Input #0, matroska,webm, from '/tmp/l.mkv':
  Metadata:
    ENCODER         : Lavf59.27.100
  Duration: 00:00:03.03, start: 0.000000, bitrate: 119 kb/s
  Stream #0:0: Video: h264 (High 4:4:4 Predictive), yuv444p(progressive), 320x240 [SAR 1:1 DAR 4:3], 25 fps, 25 tbr, 1k tbn
    Metadata:
      DURATION        : 00:00:03.021000000
  Stream #0:1(eng): Audio: aac (LC), 48000 Hz, mono, fltp
    Metadata:
      DURATION        : 00:00:03.029000000
At least one output file must be specified
";

/// Feeds `text` split like the supervisor does, one line every `dt` seconds.
pub(super) fn feed(p: &mut Parser, text: &str, dt: f64) -> Vec<LineKind> {
    let lines = text.split(['\r', '\n']).filter(|l| !l.trim().is_empty());
    lines
        .enumerate()
        .map(|(i, l)| p.parse_line(l, i as f64 * dt))
        .collect()
}

pub(super) fn refs(n: usize, prefix: &str) -> Vec<IoRef> {
    let io = |i| IoRef {
        id: format!("{prefix}{i}"),
        address: format!("addr-{prefix}{i}"),
    };
    (0..n).map(io).collect()
}

pub(super) fn progress_lines(kinds: &[LineKind]) -> usize {
    kinds
        .iter()
        .filter(|k| matches!(k, LineKind::Progress { .. }))
        .count()
}

/// Feeds the lines before the first stats line, checking that they complete the prelude.
pub(super) fn feed_prelude(p: &mut Parser, text: &str) -> usize {
    let end = text.find("frame=").unwrap();
    let end = text[..end].rfind('\n').unwrap() + 1;
    assert!(progress_lines(&feed(p, &text[..end], 0.0)) == 0 && p.prelude_done());
    end
}

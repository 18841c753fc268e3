//! Load benchmark of the WebRTC egress: one 720p30 H.264 2 Mbit/s + Opus stream (GOP 2 s),
//! served by a real `streamcore` (a separate process) to N WHEP viewers held in this process.
//!
//! `cargo bench --bench loadtest -- [--viewers 0,1,10,50,100] [--seconds 10] [--posts 50] [--runs 3]`
//!
//! Reports, per viewer count: server CPU-seconds per second, RSS and threads (from /proc of the
//! server), and the frame rate the viewers receive; then POST→201 and POST→first frame
//! percentiles for a burst of concurrent POSTs.

mod client;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use client::Viewer;

struct Args {
    viewers: Vec<usize>,
    seconds: u64,
    posts: usize,
    runs: usize,
    force_transcode: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        viewers: vec![0, 1, 10, 50, 100],
        seconds: 10,
        posts: 50,
        runs: 3,
        force_transcode: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--viewers" => {
                args.viewers = it
                    .next()
                    .unwrap()
                    .split(',')
                    .map(|v| v.parse().unwrap())
                    .collect()
            }
            "--seconds" => args.seconds = it.next().unwrap().parse().unwrap(),
            "--posts" => args.posts = it.next().unwrap().parse().unwrap(),
            "--runs" => args.runs = it.next().unwrap().parse().unwrap(),
            "--force-transcode" => args.force_transcode = true,
            _ => {}
        }
    }
    args
}

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamcore"))
        .env("STREAMCORE_HTTP_ADDRESS", "127.0.0.1:0")
        .env("STREAMCORE_DATA_DIR", dir.path())
        .env("STREAMCORE_DEMO", "false")
        .env(
            "STREAMCORE_LOG",
            std::env::var("LOADTEST_SERVER_LOG")
                .unwrap_or_else(|_| "warn,streamcore::server=info".into()),
        )
        .env("STREAMCORE_WEBRTC_MAX_VIEWERS_PER_STREAM", "1000")
        .env("STREAMCORE_WEBRTC_MAX_VIEWERS_TOTAL", "1000")
        .env(
            "STREAMCORE_WEBRTC_VIEWER_QUEUE_BUFFERS",
            std::env::var("LOADTEST_QUEUE_BUFFERS").unwrap_or_else(|_| "0".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start streamcore");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if std::env::var_os("LOADTEST_SERVER_LOG").is_some() {
                eprintln!("server: {line}");
            }
            if let Some(addr) = line.split("address=").nth(1) {
                let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server address");
    Server {
        child,
        base: format!("http://{addr}"),
        _dir: dir,
    }
}

fn make_source(dir: &Path) -> PathBuf {
    let file = dir.join("loadtest-720p.mkv");
    if !file.exists() {
        let ok = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1280x720:rate=30",
            ])
            .args([
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-t",
                "20",
            ])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-profile:v",
                "baseline",
                "-pix_fmt",
                "yuv420p",
            ])
            .args([
                "-b:v", "2M", "-maxrate", "2M", "-bufsize", "2M", "-g", "60", "-bf", "0",
            ])
            .args(["-c:a", "libopus", "-b:a", "64k", "-y"])
            .arg(&file)
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot encode the source");
    }
    file
}

/// CPU ticks, RSS bytes and threads of a process.
fn sample(pid: u32) -> (u64, u64, usize) {
    let process = procfs::process::Process::new(pid as i32).unwrap();
    let stat = process.stat().unwrap();
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    (
        stat.utime + stat.stime,
        stat.rss * procfs::page_size(),
        threads,
    )
}

/// Server threads grouped by name (GStreamer names its streaming threads after their pads).
fn thread_names(pid: u32) -> Vec<(String, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let name: String = name
            .trim()
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
        *counts.entry(name).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    offer: String,
) -> (reqwest::StatusCode, Option<String>, String, Duration) {
    let started = Instant::now();
    let res = http
        .post(url)
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let status = res.status();
    let location = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (
        status,
        location,
        res.text().await.unwrap_or_default(),
        elapsed,
    )
}

/// Applies a 201's answer and records the absolute resource URL. Applying blocks on webrtcbin,
/// so it runs off the runtime and the other POSTs' responses are read on time.
async fn answered(viewer: Viewer, answer: String, location: Option<String>, base: &str) -> Viewer {
    let mut viewer = tokio::task::spawn_blocking(move || {
        viewer.answer(&answer).unwrap();
        viewer
    })
    .await
    .unwrap();
    viewer.resource = location.map(|l| format!("{base}{l}"));
    viewer
}

async fn add_viewer(http: &reqwest::Client, base: &str, id: &str) -> (Viewer, Duration) {
    let url = format!("{base}/whep/{id}");
    loop {
        let (viewer, offer) = tokio::task::spawn_blocking(Viewer::new).await.unwrap();
        let (status, location, body, elapsed) = post(http, &url, offer).await;
        if status == reqwest::StatusCode::CONFLICT {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
        return (answered(viewer, body, location, base).await, elapsed);
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Row {
    viewers: usize,
    cpu: f64,
    rss_mb: f64,
    threads: usize,
    fps_avg: f64,
    fps_min: f64,
}

async fn run(args: Args) {
    gstreamer::init().unwrap();
    let server = start_server();
    let pid = server.child.id();
    let http = reqwest::Client::new();
    // Processes read local files only inside the server's data directory (docs/security.md):
    // the clip is made once in the temp directory and linked in.
    let made = make_source(&std::env::temp_dir());
    let source = server._dir.path().join(made.file_name().unwrap());
    if std::fs::hard_link(&made, &source).is_err() {
        std::fs::copy(&made, &source).expect("copy the clip into the data directory");
    }
    let mut process = serde_json::json!({
        "id": "load",
        "input": [{"address": source.to_string_lossy(), "options": ["-re", "-stream_loop", "-1"]}],
        "output": [{"address": "-", "options": ["-f", "null"]}],
        "webrtc": {"enabled": true}
    });
    if args.force_transcode {
        process["webrtc"]["force_transcode"] = serde_json::json!(true);
    }
    let res = http
        .post(format!("{}/api/v3/process", server.base))
        .json(&process)
        .send()
        .await
        .unwrap();
    let status = res.status();
    assert!(
        status.is_success(),
        "creating the process: {status} {}",
        res.text().await.unwrap_or_default()
    );
    // Wait for media: one throwaway viewer that gets a 201.
    let (probe, _) = add_viewer(&http, &server.base, "load").await;
    if let Some(r) = &probe.resource {
        let _ = http.delete(r).send().await;
    }
    drop(probe);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let ticks = procfs::ticks_per_second() as f64;
    let mut rows = Vec::new();
    for run in 0..args.runs {
        let mut viewers: Vec<Viewer> = Vec::new();
        for &n in &args.viewers {
            while viewers.len() < n {
                let (v, _) = add_viewer(&http, &server.base, "load").await;
                viewers.push(v);
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            let frames0: Vec<u64> = viewers
                .iter()
                .map(|v| v.frames.load(Ordering::Relaxed))
                .collect();
            let (t0, _, _) = sample(pid);
            let start = Instant::now();
            tokio::time::sleep(Duration::from_secs(args.seconds)).await;
            let (t1, rss, threads) = sample(pid);
            let wall = start.elapsed().as_secs_f64();
            let fps: Vec<f64> = viewers
                .iter()
                .zip(frames0)
                .map(|(v, f0)| (v.frames.load(Ordering::Relaxed) - f0) as f64 / wall)
                .collect();
            let row = Row {
                viewers: n,
                cpu: (t1 - t0) as f64 / ticks / wall,
                rss_mb: rss as f64 / 1e6,
                threads,
                fps_avg: if fps.is_empty() {
                    f64::NAN
                } else {
                    fps.iter().sum::<f64>() / fps.len() as f64
                },
                fps_min: fps.iter().cloned().fold(f64::NAN, f64::min),
            };
            eprintln!(
                "run {run} viewers {:>3}: cpu {:.3} CPU-s/s, rss {:.1} MB, threads {}, fps avg {:.1} min {:.1}",
                row.viewers, row.cpu, row.rss_mb, row.threads, row.fps_avg, row.fps_min
            );
            if std::env::var_os("LOADTEST_THREADS").is_some() {
                eprintln!("  server threads by name: {:?}", thread_names(pid));
            }
            rows.push(row);
        }
        for v in &viewers {
            if let Some(r) = &v.resource {
                let _ = http.delete(r).send().await;
            }
        }
        drop(viewers);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    // Burst: N offers prepared first, then POSTed at once.
    let mut prepared = Vec::new();
    for _ in 0..args.posts {
        prepared.push(tokio::task::spawn_blocking(Viewer::new).await.unwrap());
    }
    let url = format!("{}/whep/load", server.base);
    let posts = prepared.into_iter().map(|(viewer, offer)| {
        let http = http.clone();
        let url = url.clone();
        let base = server.base.clone();
        async move {
            let started = Instant::now();
            let (status, location, body, elapsed) = post(&http, &url, offer).await;
            assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
            (
                answered(viewer, body, location, &base).await,
                started,
                elapsed,
            )
        }
    });
    let done = futures_join_all(posts).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline
        && done
            .iter()
            .any(|(v, _, _)| v.first_frame.lock().unwrap().is_none())
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut to_201: Vec<f64> = done
        .iter()
        .map(|(_, _, e)| e.as_secs_f64() * 1000.0)
        .collect();
    let mut to_frame: Vec<f64> = done
        .iter()
        .filter_map(|(v, s, _)| {
            v.first_frame
                .lock()
                .unwrap()
                .map(|f| f.duration_since(*s).as_secs_f64() * 1000.0)
        })
        .collect();
    to_201.sort_by(f64::total_cmp);
    to_frame.sort_by(f64::total_cmp);

    println!("\n| viewers | server CPU-s/s | RSS MB | threads | fps avg | fps min |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in &args.viewers {
        let of: Vec<&Row> = rows.iter().filter(|r| r.viewers == *n).collect();
        let median = |f: &dyn Fn(&Row) -> f64| {
            let mut v: Vec<f64> = of.iter().map(|r| f(r)).collect();
            v.sort_by(f64::total_cmp);
            percentile(&v, 0.5)
        };
        println!(
            "| {n} | {:.3} | {:.1} | {:.0} | {:.1} | {:.1} |",
            median(&|r| r.cpu),
            median(&|r| r.rss_mb),
            median(&|r| r.threads as f64),
            median(&|r| r.fps_avg),
            median(&|r| r.fps_min)
        );
    }
    println!(
        "\n{} concurrent POSTs: POST→201 p50 {:.1} ms, p95 {:.1} ms; POST→first frame p50 {:.0} ms, p95 {:.0} ms ({} of {} got a frame)",
        args.posts,
        percentile(&to_201, 0.5),
        percentile(&to_201, 0.95),
        percentile(&to_frame, 0.5),
        percentile(&to_frame, 0.95),
        to_frame.len(),
        done.len()
    );
}

/// Runs the futures concurrently on the runtime and collects their outputs in order.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

fn main() {
    // `cargo test --all-targets` runs benches without `--bench`: the load run is for `cargo bench` only.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("loadtest: run it with `cargo bench --bench loadtest`");
        return;
    }
    let args = parse_args();
    tokio::runtime::Runtime::new().unwrap().block_on(run(args));
}

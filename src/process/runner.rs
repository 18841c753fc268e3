//! Supervision of one FFmpeg process: spawn, watch stderr, sample resources, stop, reconnect.
//!
//! One tokio task per process owns the child and is the only writer of its execution state; the
//! API reads snapshots from [`Runner`] and steers it with commands.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant};
use utoipa::ToSchema;

use super::probe;
use super::progress::{ByteCounter, IoRef, LineKind, Parser, ProbeIo, Progress};
use super::report::{ProcessReport, Report};
use super::sampler::Sampler;
use super::sandbox::Sandbox;
use crate::model::process::{Limits, Order};

/// The execution state of a process (datarhei `exec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Exec {
    /// Not running; the last run ended normally (or never ran).
    Finished,
    /// Being spawned.
    Starting,
    /// Running.
    Running,
    /// Asked to stop, not exited yet.
    Finishing,
    /// Exited with an error, or could not be spawned.
    Failed,
    /// Ended by a signal.
    Killed,
}

/// The state of a process as the API shows it (datarhei `ProcessState`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProcessState {
    /// The persisted intent.
    pub order: Order,
    /// What is happening now.
    pub exec: Exec,
    /// Seconds since the last change of `exec`.
    pub runtime_seconds: i64,
    /// Seconds until a pending reconnect, or -1.
    pub reconnect_seconds: i64,
    /// Last non-progress stderr line of the current run.
    pub last_logline: String,
    /// Progress of the current run.
    pub progress: Progress,
    /// Resident memory of ffmpeg.
    pub memory_bytes: u64,
    /// CPU use in percent of the whole machine.
    pub cpu_usage: f64,
    /// The argv after placeholder resolution (without the binary).
    pub command: Vec<String>,
}

/// Everything the runner needs to run a process; built by the registry from a resolved config.
#[derive(Clone)]
pub struct Spec {
    /// The ffmpeg binary.
    pub binary: PathBuf,
    /// Arguments after the binary.
    pub argv: Vec<String>,
    /// Inputs by file index, for the progress parser.
    pub inputs: Vec<IoRef>,
    /// Outputs by file index.
    pub outputs: Vec<IoRef>,
    /// Restart after an exit while the order is start.
    pub reconnect: bool,
    /// Delay before such a restart.
    pub reconnect_delay: Duration,
    /// Restart when frames stop advancing for this long.
    pub stale_timeout: Option<Duration>,
    /// CPU and memory limits.
    pub limits: Limits,
    /// Time between SIGINT and SIGKILL.
    pub kill_timeout: Duration,
    /// Report sizes.
    pub log_max_lines: usize,
    /// Report history size.
    pub log_max_history: usize,
    /// Told about each run.
    pub hooks: Option<Arc<dyn RunHooks>>,
    /// The account and directory FFmpeg runs in.
    pub sandbox: Arc<Sandbox>,
    /// Bytes the outputs wrote so far where FFmpeg cannot tell (see [`super::written`]).
    pub written: Option<ByteCounter>,
    /// Global options and inputs only, for a probe before a run.
    pub probe_argv: Vec<String>,
    /// The arguments chosen per run from what FFmpeg reports about the inputs.
    pub legs: Option<Arc<dyn Legs>>,
}

/// The part of the command line chosen per run from the codecs FFmpeg reports for the inputs
/// (the WebRTC legs, `super::discovery`), appended to [`Spec::argv`].
pub trait Legs: Send + Sync {
    /// The arguments of the next run, as the API shows them (no side effects).
    fn args(&self) -> Vec<String>;
    /// The arguments of a run that starts now (whoever receives the legs learns their format).
    fn start(&self) -> Vec<String>;
    /// Whether to probe the inputs before the next run (bounded by [`LEG_PROBE_TIMEOUT`]). May
    /// touch the file system: called on the blocking pool.
    fn wants_probe(&self) -> bool;
    /// The input streams FFmpeg reported, by a probe or a run's prelude; true when the legs
    /// `used` by the run do not fit them and it should start again with new ones.
    fn discovered(&self, streams: &[ProbeIo], used: &[String]) -> bool;
}

/// How long a probe before a run may take: it reads local files only, which open in
/// milliseconds; past this the run starts with the legs the rules choose.
pub const LEG_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What else must happen around each FFmpeg run (all called from the supervisor task).
pub trait RunHooks: Send + Sync {
    /// Right before FFmpeg is spawned.
    fn before_spawn(&self) {}
    /// Right after FFmpeg was spawned.
    fn after_spawn(&self) {}
    /// After FFmpeg exited, or failed to spawn.
    fn after_exit(&self) {}
}

enum Command {
    Start,
    Stop(oneshot::Sender<()>),
    Restart,
    Shutdown(oneshot::Sender<()>),
}

struct Live {
    order: Order,
    exec: Exec,
    since: Instant,
    reconnect_at: Option<Instant>,
    last_logline: String,
    progress: Progress,
    cpu: f64,
    memory: u64,
    report: Report,
    pid: Option<u32>,
    /// The argv of the current (or next) run, without the binary.
    command: Vec<String>,
}

/// Handle to a supervised process. Dropping it ends the supervisor (and kills a running child).
pub struct Runner {
    tx: mpsc::UnboundedSender<Command>,
    live: Arc<Mutex<Live>>,
}

impl Runner {
    /// Starts the supervisor task with the process stopped.
    pub fn new(spec: Spec) -> Runner {
        let spec = Arc::new(spec);
        let live = Arc::new(Mutex::new(Live {
            order: Order::Stop,
            exec: Exec::Finished,
            since: Instant::now(),
            reconnect_at: None,
            last_logline: String::new(),
            progress: Progress::default(),
            cpu: 0.0,
            memory: 0,
            report: Report::new(spec.log_max_lines, spec.log_max_history),
            pid: None,
            command: spec
                .argv
                .iter()
                .cloned()
                .chain(spec.legs.iter().flat_map(|l| l.args()))
                .collect(),
        }));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(supervise(spec, live.clone(), rx));
        Runner { tx, live }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the order to start and runs the process unless it already runs.
    pub fn start(&self) {
        self.live().order = Order::Start;
        let _ = self.tx.send(Command::Start);
    }

    /// Sets the order to stop, stops the process and waits until it exited.
    pub async fn stop(&self) {
        self.live().order = Order::Stop;
        let (ack, done) = oneshot::channel();
        if self.tx.send(Command::Stop(ack)).is_ok() {
            let _ = done.await;
        }
    }

    /// Stops a running process and starts it again at once; nothing happens when the order is stop.
    pub fn restart(&self) {
        if self.live().order == Order::Start {
            let _ = self.tx.send(Command::Restart);
        }
    }

    /// Stops the process without changing its order, and ends the supervisor.
    pub async fn shutdown(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Command::Shutdown(ack)).is_ok() {
            let _ = done.await;
        }
    }

    /// The state snapshot for the API.
    pub fn state(&self) -> ProcessState {
        let live = self.live();
        let now = Instant::now();
        let reconnect_seconds = match live.reconnect_at {
            Some(at) if live.order == Order::Start => {
                at.saturating_duration_since(now).as_secs_f64().ceil() as i64
            }
            _ => -1,
        };
        ProcessState {
            order: live.order,
            exec: live.exec,
            runtime_seconds: now.duration_since(live.since).as_secs() as i64,
            reconnect_seconds,
            last_logline: live.last_logline.clone(),
            progress: live.progress.clone(),
            memory_bytes: live.memory,
            cpu_usage: (live.cpu * 1000.0).round() / 1000.0,
            command: live.command.clone(),
        }
    }

    /// The report snapshot for the API.
    pub fn report(&self) -> ProcessReport {
        self.live().report.snapshot()
    }

    /// Takes over the report history of a runner this one replaces.
    pub fn adopt_history(&self, old: &Runner) {
        let old = old.live();
        self.live().report.adopt_history(&old.report);
    }
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn set_exec(live: &Mutex<Live>, exec: Exec) {
    let mut live = live.lock().unwrap_or_else(|e| e.into_inner());
    live.exec = exec;
    live.since = Instant::now();
}

/// What the supervisor does next when no child runs.
enum Next {
    Idle,
    StartAt(Instant),
}

async fn supervise(
    spec: Arc<Spec>,
    live: Arc<Mutex<Live>>,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let mut next = Next::Idle;
    loop {
        let wake = match next {
            Next::StartAt(at) => at,
            Next::Idle => Instant::now() + Duration::from_secs(86400 * 365),
        };
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => return,
                Some(Command::Start) | Some(Command::Restart) => next = Next::StartAt(Instant::now()),
                Some(Command::Stop(ack)) => {
                    next = Next::Idle;
                    live.lock().unwrap_or_else(|e| e.into_inner()).reconnect_at = None;
                    let _ = ack.send(());
                }
                Some(Command::Shutdown(ack)) => {
                    let _ = ack.send(());
                    return;
                }
            },
            _ = sleep_until(wake), if matches!(next, Next::StartAt(_)) => {
                live.lock().unwrap_or_else(|e| e.into_inner()).reconnect_at = None;
                let end = run_once(&spec, &live, &mut rx).await;
                for ack in end.stop_acks {
                    let _ = ack.send(());
                }
                if let Some(ack) = end.shutdown {
                    let _ = ack.send(());
                    return;
                }
                let order = live.lock().unwrap_or_else(|e| e.into_inner()).order;
                next = if order == Order::Stop {
                    Next::Idle
                } else if end.restart_now {
                    Next::StartAt(Instant::now())
                } else if spec.reconnect {
                    let at = Instant::now() + spec.reconnect_delay;
                    live.lock().unwrap_or_else(|e| e.into_inner()).reconnect_at = Some(at);
                    Next::StartAt(at)
                } else {
                    Next::Idle
                };
            }
        }
    }
}

struct RunEnd {
    stop_acks: Vec<oneshot::Sender<()>>,
    shutdown: Option<oneshot::Sender<()>>,
    restart_now: bool,
}

/// Why the supervisor itself asked the child to stop.
fn log_line(live: &Mutex<Live>, line: &str, in_prelude: bool) {
    let mut live = live.lock().unwrap_or_else(|e| e.into_inner());
    live.report.push(unix_now(), line, in_prelude);
    live.last_logline = line.to_string();
}

async fn run_once(
    spec: &Spec,
    live: &Mutex<Live>,
    rx: &mut mpsc::UnboundedReceiver<Command>,
) -> RunEnd {
    let mut end = RunEnd {
        stop_acks: Vec::new(),
        shutdown: None,
        restart_now: false,
    };
    {
        let mut l = live.lock().unwrap_or_else(|e| e.into_inner());
        l.report.new_run(unix_now());
        l.last_logline.clear();
        l.progress = Progress::default();
    }
    set_exec(live, Exec::Starting);
    let Some(legs) = run_legs(spec, rx, &mut end).await else {
        set_exec(live, Exec::Finished);
        return end;
    };
    let argv: Vec<String> = spec.argv.iter().chain(&legs).cloned().collect();
    live.lock().unwrap_or_else(|e| e.into_inner()).command = argv.clone();
    let mut command = spec.sandbox.command(&spec.binary, &argv);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Own process group: a Ctrl-C on the server's terminal must not reach the children directly.
        .process_group(0);
    if let Some(hooks) = &spec.hooks {
        hooks.before_spawn();
    }
    let spawned = command.spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            let msg = format!("cannot start {}: {err}", spec.binary.display());
            tracing::warn!(binary = %spec.binary.display(), error = %err, "ffmpeg spawn failed");
            log_line(live, &msg, false);
            set_exec(live, Exec::Failed);
            if let Some(hooks) = &spec.hooks {
                hooks.after_exit();
            }
            return end;
        }
    };
    let pid = child.id().unwrap_or(0);
    if let Some(hooks) = &spec.hooks {
        hooks.after_spawn();
    }
    live.lock().unwrap_or_else(|e| e.into_inner()).pid = Some(pid);
    set_exec(live, Exec::Running);
    tracing::info!(pid, "ffmpeg started");

    let (line_tx, mut lines) = mpsc::channel::<String>(256);
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(read_lines(stderr, line_tx));
    }
    let mut parser =
        Parser::new(spec.inputs.clone(), spec.outputs.clone()).with_written(spec.written.clone());
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut sampler = Sampler::new(pid as i32);
    let mut over_limit_since: Option<Instant> = None;
    let mut kill_at: Option<Instant> = None;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut stderr_open = true;
    let mut status: Option<std::io::Result<ExitStatus>> = None;
    let mut inputs_reported = spec.legs.is_none();

    let interrupt = |kill_at: &mut Option<Instant>, why: Option<&str>| {
        if let Some(why) = why {
            log_line(live, why, false);
        }
        if kill_at.is_none() {
            set_exec(live, Exec::Finishing);
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGINT);
            *kill_at = Some(Instant::now() + spec.kill_timeout);
        }
    };

    // Runs until the child exited and its stderr is drained (bounded, in case a grandchild keeps it).
    let mut drain_deadline: Option<Instant> = None;
    while status.is_none() || (stderr_open && drain_deadline.is_some_and(|d| Instant::now() < d)) {
        let far = Instant::now() + Duration::from_secs(86400);
        tokio::select! {
            line = lines.recv(), if stderr_open => match line {
                None => stderr_open = false,
                Some(line) => {
                    let now = started.elapsed().as_secs_f64();
                    let in_prelude = !parser.prelude_done();
                    let kind = parser.parse_line(&line, now);
                    let reported = match inputs_reported {
                        false => parser.reported_inputs(),
                        true => None,
                    };
                    if let Some(streams) = reported {
                        inputs_reported = true;
                        if spec.legs.as_ref().is_some_and(|l| l.discovered(&streams, &legs)) {
                            end.restart_now = true;
                            let why = "Restarting: the WebRTC legs do not fit the input's codecs";
                            if status.is_none() {
                                interrupt(&mut kill_at, Some(why));
                            } else {
                                // An exited child's pid may already be someone else's.
                                log_line(live, why, false);
                            }
                        }
                    }
                    match kind {
                        LineKind::Progress { frames_advanced } => {
                            if frames_advanced {
                                last_progress = Instant::now();
                            }
                            live.lock().unwrap_or_else(|e| e.into_inner()).progress = parser.progress();
                        }
                        LineKind::Log => log_line(live, &line, in_prelude),
                    }
                }
            },
            exit = child.wait(), if status.is_none() => {
                status = Some(exit);
                if let Some(hooks) = &spec.hooks {
                    hooks.after_exit();
                }
                drain_deadline = Some(Instant::now() + Duration::from_secs(1));
            },
            _ = sleep_until(drain_deadline.unwrap_or(far)), if status.is_some() => break,
            _ = sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() && status.is_none() => {
                tracing::warn!(pid, "ffmpeg ignored SIGINT; sending SIGKILL");
                let _ = child.start_kill();
                kill_at = None;
            },
            _ = ticker.tick(), if status.is_none() => {
                if let Some(sample) = sampler.sample() {
                    let mut l = live.lock().unwrap_or_else(|e| e.into_inner());
                    l.cpu = sample.cpu_percent;
                    l.memory = sample.rss_bytes;
                    drop(l);
                    if exceeds(&spec.limits, sample) {
                        let since = *over_limit_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= Duration::from_secs(spec.limits.waitfor_seconds) {
                            interrupt(&mut kill_at, Some("Stopping because limits are exceeded"));
                        }
                    } else {
                        over_limit_since = None;
                    }
                }
                if let Some(timeout) = spec.stale_timeout {
                    if last_progress.elapsed() > timeout && kill_at.is_none() {
                        interrupt(&mut kill_at, Some("Stopping because no progress was made (stale)"));
                    }
                }
            },
            cmd = rx.recv(), if status.is_none() => match cmd {
                Some(Command::Start) | None => {}
                Some(Command::Stop(ack)) => {
                    end.stop_acks.push(ack);
                    interrupt(&mut kill_at, None);
                }
                Some(Command::Restart) => {
                    end.restart_now = true;
                    interrupt(&mut kill_at, None);
                }
                Some(Command::Shutdown(ack)) => {
                    end.shutdown = Some(ack);
                    interrupt(&mut kill_at, None);
                }
            },
        }
    }

    let exec = match status {
        Some(Ok(status)) => match status.code() {
            Some(0) | Some(255) => Exec::Finished,
            Some(_) => Exec::Failed,
            None => Exec::Killed,
        },
        _ => Exec::Killed,
    };
    tracing::info!(pid, ?exec, "ffmpeg exited");
    {
        let mut l = live.lock().unwrap_or_else(|e| e.into_inner());
        l.pid = None;
        l.cpu = 0.0;
        l.memory = 0;
        l.progress = Progress::default();
    }
    set_exec(live, exec);
    end
}

/// The legs of this run, after a probe of the inputs where the legs want one. A command that
/// arrives meanwhile is served at once (the probe is dropped, which kills it); `None` then: the
/// run ends before it started.
async fn run_legs(
    spec: &Spec,
    rx: &mut mpsc::UnboundedReceiver<Command>,
    end: &mut RunEnd,
) -> Option<Vec<String>> {
    let Some(legs) = &spec.legs else {
        return Some(Vec::new());
    };
    let asked = legs.clone();
    if tokio::task::spawn_blocking(move || asked.wants_probe())
        .await
        .unwrap_or(false)
    {
        let probe = probe::run_within(
            &spec.sandbox,
            &spec.binary,
            &spec.probe_argv,
            LEG_PROBE_TIMEOUT,
        );
        tokio::pin!(probe);
        loop {
            tokio::select! {
                found = &mut probe => {
                    legs.discovered(&found.streams, &[]);
                    break;
                }
                cmd = rx.recv() => match cmd {
                    Some(Command::Start) => {}
                    None => return None,
                    Some(Command::Stop(ack)) => {
                        end.stop_acks.push(ack);
                        return None;
                    }
                    Some(Command::Restart) => {
                        end.restart_now = true;
                        return None;
                    }
                    Some(Command::Shutdown(ack)) => {
                        end.shutdown = Some(ack);
                        return None;
                    }
                },
            }
        }
    }
    Some(legs.start())
}

fn exceeds(limits: &Limits, sample: super::sampler::Sample) -> bool {
    let cpu = limits.cpu_usage > 0.0 && sample.cpu_percent > limits.cpu_usage;
    let memory = limits.memory_mbytes > 0
        && sample.rss_bytes > limits.memory_mbytes.saturating_mul(1024 * 1024);
    cpu || memory
}

/// Longest line kept; ffmpeg never prints more, and a hostile input must not grow memory.
const MAX_LINE: usize = 16 * 1024;

/// Splits stderr on `\r` and `\n` (ffmpeg ends its stats line with `\r`).
async fn read_lines(mut stderr: tokio::process::ChildStderr, tx: mpsc::Sender<String>) {
    let mut buf = [0u8; 8192];
    let mut line: Vec<u8> = Vec::with_capacity(256);
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' || b == b'\r' {
                if !line.is_empty() {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    line.clear();
                    if tx.send(text).await.is_err() {
                        return;
                    }
                }
            } else if line.len() < MAX_LINE {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        let _ = tx.send(String::from_utf8_lossy(&line).into_owned()).await;
    }
}

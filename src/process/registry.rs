//! The set of processes: validation, persistence, and their supervisors.
//!
//! Mutations are serialised by one async lock so that a stop that waits for ffmpeg cannot
//! interleave with another change; reads go through a plain `RwLock` and never wait on ffmpeg.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;

use super::access::Access;
use super::argv::{self, Context, ReferenceError, Resolved, WhipInput, WHIP_ADDRESS};
use super::discovery::{CodecMemory, LegsOf, WebRtcLegs};
use super::progress::{ByteCounter, IoRef};
use super::runner::{RunHooks, Runner, Spec};
use super::sandbox::Sandbox;
use super::written;
use crate::fs::cleanup::{Cleanup, Rule};
use crate::fs::mem::MemFs;
use crate::media::ingest::Ingest;
use crate::media::{Media, Stream, StreamOptions};
use crate::model::process::{short_id, Order, ProcessConfig};
use crate::store::{ProcessRecord, Store, StoreError};

/// Settings the registry applies to every process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// ffmpeg binary name or path.
    pub binary: String,
    /// Most processes with order start; 0 is unlimited.
    pub max_processes: usize,
    /// The directory `{diskfs}` stands for.
    pub disk_dir: PathBuf,
    /// Log lines kept per run.
    pub log_max_lines: usize,
    /// Earlier runs kept.
    pub log_max_history: usize,
    /// SIGINT → SIGKILL delay.
    pub kill_timeout: Duration,
    /// What definitions may read and write.
    pub access: Arc<Access>,
    /// How FFmpeg is started.
    pub sandbox: Arc<Sandbox>,
    /// What `{memfs}` and `{fs:mem}` stand for.
    pub memfs_url: String,
    /// The memory file system, which counts what processes write to it.
    pub memfs: Arc<MemFs>,
    /// The file cleanup rules of every process's outputs.
    pub cleanup: Arc<Cleanup>,
    /// `{rtmp}` and `{srt}` of the built-in servers.
    pub servers: super::argv::ServerTemplates,
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No process with that id.
    #[error("unknown process")]
    NotFound,
    /// The id is taken.
    #[error("process already exists")]
    Duplicate,
    /// The definition is not valid.
    #[error("{0}")]
    Invalid(String),
    /// Too many processes would run.
    #[error("max. number of running processes ({0}) reached")]
    MaxProcesses(usize),
    /// The ffmpeg binary cannot be run.
    #[error("{0}")]
    Binary(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Duplicate => RegistryError::Duplicate,
            StoreError::NotFound => RegistryError::NotFound,
            other => RegistryError::Store(other),
        }
    }
}

type Result<T> = std::result::Result<T, RegistryError>;

/// A process: its stored definition and its supervisor.
pub struct Entry {
    /// What is stored.
    pub record: ProcessRecord,
    /// Why the stored definition cannot run, if it cannot.
    pub invalid: Option<String>,
    runner: Arc<Runner>,
    outputs: Vec<String>,
    stream: Option<Arc<Stream>>,
    /// The stream options this definition asks for; applied to a live stream only once the
    /// definition is accepted and stored, so a refused request changes nothing that runs.
    stream_options: Option<StreamOptions>,
    ingest: Option<Arc<Ingest>>,
}

impl Entry {
    /// The supervisor.
    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// The WebRTC stream, when the process has WebRTC enabled.
    pub fn stream(&self) -> Option<&Arc<Stream>> {
        self.stream.as_ref()
    }

    /// The WHIP input, when an input's address is `{whip}`.
    pub fn ingest(&self) -> Option<&Arc<Ingest>> {
        self.ingest.as_ref()
    }

    /// Hands the accepted definition's options to its (possibly shared, live) stream.
    fn apply_stream_options(&self) {
        if let (Some(stream), Some(options)) = (&self.stream, &self.stream_options) {
            stream.set_options(options.clone());
        }
    }
}

/// A process command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessCommand {
    /// Order start.
    Start,
    /// Order stop.
    Stop,
    /// Stop and start again.
    Restart,
    /// Rebuild from the stored definition.
    Reload,
}

/// All processes.
pub struct Registry {
    store: Arc<Store>,
    media: Option<Arc<Media>>,
    settings: Settings,
    entries: RwLock<BTreeMap<String, Arc<Entry>>>,
    write: tokio::sync::Mutex<()>,
    /// The codecs FFmpeg reported for each process's inputs (the WebRTC legs' choice).
    codecs: Arc<CodecMemory>,
}

impl Registry {
    /// Loads every stored process and starts those whose order is start.
    pub fn boot(
        store: Arc<Store>,
        settings: Settings,
        media: Option<Arc<Media>>,
    ) -> Result<Registry> {
        let registry = Registry {
            store,
            media,
            settings,
            entries: RwLock::new(BTreeMap::new()),
            write: tokio::sync::Mutex::new(()),
            codecs: Arc::default(),
        };
        let records = registry.store.processes()?;
        // Two passes so that `#id:output=` references to processes stored later still resolve.
        for pass in 0..2 {
            for record in &records {
                let entry = registry.build(record.clone(), None);
                if pass == 1 || entry.invalid.is_none() {
                    registry.put(entry).apply_stream_options();
                }
            }
        }
        for entry in registry.list() {
            registry.set_cleanup(&entry.record.config);
            if entry.record.order == Order::Start {
                if let Some(why) = &entry.invalid {
                    tracing::warn!(id = %entry.record.config.id, %why, "stored process is invalid; not started");
                } else {
                    entry.runner.start();
                }
            }
        }
        Ok(registry)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Entry>>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn put(&self, entry: Entry) -> Arc<Entry> {
        let entry = Arc::new(entry);
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(entry.record.config.id.clone(), entry.clone());
        entry
    }

    fn remove(&self, id: &str) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Every process, ordered by id.
    pub fn list(&self) -> Vec<Arc<Entry>> {
        self.read().values().cloned().collect()
    }

    /// One process.
    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.read().get(id).cloned()
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Gives inputs and outputs with an empty id a generated one.
    pub fn assign_io_ids(config: &mut ProcessConfig) {
        for list in [&mut config.input, &mut config.output] {
            for io in list.iter_mut() {
                if io.id.trim().is_empty() {
                    io.id = short_id();
                }
            }
        }
    }

    /// Adds a process (ids already assigned); starts it when `autostart`.
    pub async fn create(&self, config: ProcessConfig) -> Result<ProcessConfig> {
        let _guard = self.write.lock().await;
        let config = normalise(config);
        let now = chrono::Utc::now().timestamp();
        let order = if config.autostart {
            Order::Start
        } else {
            Order::Stop
        };
        let record = ProcessRecord {
            config,
            order,
            created_at: now,
            updated_at: now,
        };
        let entry = self.build(record, None);
        if let Some(why) = entry.invalid {
            return Err(RegistryError::Invalid(why));
        }
        if self.get(&entry.record.config.id).is_some() {
            return Err(RegistryError::Duplicate);
        }
        if order == Order::Start {
            self.check_capacity(None)?;
        }
        self.store.insert_process(&entry.record)?;
        self.set_cleanup(&entry.record.config);
        let entry = self.put(entry);
        entry.apply_stream_options();
        if order == Order::Start {
            entry.runner.start();
        }
        Ok(entry.record.config.clone())
    }

    /// Replaces the definition of `id` (possibly renaming it); order, metadata and report history
    /// carry over, and the process runs again if its order is start.
    pub async fn update(&self, id: &str, config: ProcessConfig) -> Result<ProcessConfig> {
        let _guard = self.write.lock().await;
        let old = self.get(id).ok_or(RegistryError::NotFound)?;
        let config = normalise(config);
        let now = chrono::Utc::now().timestamp();
        let record = ProcessRecord {
            config,
            order: old.record.order,
            created_at: now,
            updated_at: now,
        };
        let entry = self.build(record, Some(id));
        if let Some(why) = entry.invalid {
            return Err(RegistryError::Invalid(why));
        }
        let new_id = entry.record.config.id.clone();
        if new_id != id && self.get(&new_id).is_some() {
            return Err(RegistryError::Duplicate);
        }
        self.store.replace_process(id, &entry.record)?;
        old.runner.shutdown().await;
        // As in Core: the old rules purge their files, then the new rules apply.
        self.unset_cleanup(id).await;
        self.set_cleanup(&entry.record.config);
        entry.runner.adopt_history(&old.runner);
        self.remove(id);
        let entry = self.put(entry);
        entry.apply_stream_options();
        if entry.record.order == Order::Start {
            entry.runner.start();
        }
        Ok(entry.record.config.clone())
    }

    /// Stops and deletes a process.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let _guard = self.write.lock().await;
        let entry = self.get(id).ok_or(RegistryError::NotFound)?;
        entry.runner.stop().await;
        self.store.delete_process(id)?;
        entry.runner.shutdown().await;
        self.remove(id);
        self.codecs.forget(id);
        close_webrtc(&entry).await;
        self.unset_cleanup(id).await;
        Ok(())
    }

    fn set_cleanup(&self, config: &ProcessConfig) {
        self.settings.cleanup.set(&config.id, cleanup_rules(config));
    }

    /// Drops the rules of `id`, deleting the files of those with `purge_on_delete` (off the
    /// async workers: the disk may be slow).
    async fn unset_cleanup(&self, id: &str) {
        let (cleanup, id) = (self.settings.cleanup.clone(), id.to_string());
        let _ = tokio::task::spawn_blocking(move || cleanup.unset(&id)).await;
    }

    /// Runs a command; the new order is persisted before it takes effect.
    pub async fn command(&self, id: &str, command: ProcessCommand) -> Result<()> {
        let _guard = self.write.lock().await;
        let entry = self.get(id).ok_or(RegistryError::NotFound)?;
        match command {
            ProcessCommand::Start => {
                if let Some(why) = &entry.invalid {
                    return Err(RegistryError::Invalid(format!(
                        "invalid process definition: {why}"
                    )));
                }
                self.check_binary()?;
                if entry.record.order != Order::Start {
                    self.check_capacity(Some(id))?;
                    self.set_order(&entry, Order::Start)?;
                }
                self.get(id).expect("just stored").runner.start();
            }
            ProcessCommand::Stop => {
                if entry.record.order != Order::Stop {
                    self.set_order(&entry, Order::Stop)?;
                }
                entry.runner.stop().await;
                close_webrtc(&entry).await;
            }
            ProcessCommand::Restart => entry.runner.restart(),
            ProcessCommand::Reload => {
                let fresh = self.build(entry.record.clone(), Some(id));
                if let Some(why) = fresh.invalid {
                    return Err(RegistryError::Invalid(why));
                }
                entry.runner.shutdown().await;
                let fresh = self.put(fresh);
                fresh.apply_stream_options();
                if fresh.record.order == Order::Start {
                    fresh.runner.start();
                }
            }
        }
        Ok(())
    }

    fn set_order(&self, entry: &Entry, order: Order) -> Result<()> {
        self.store.set_order(&entry.record.config.id, order)?;
        let mut record = entry.record.clone();
        record.order = order;
        self.put(Entry {
            record,
            invalid: entry.invalid.clone(),
            runner: entry.runner.clone(),
            outputs: entry.outputs.clone(),
            stream: entry.stream.clone(),
            stream_options: entry.stream_options.clone(),
            ingest: entry.ingest.clone(),
        });
        Ok(())
    }

    fn check_capacity(&self, except: Option<&str>) -> Result<()> {
        let max = self.settings.max_processes;
        if max == 0 {
            return Ok(());
        }
        let running = self
            .read()
            .values()
            .filter(|e| {
                e.record.order == Order::Start && Some(e.record.config.id.as_str()) != except
            })
            .count();
        if running >= max {
            return Err(RegistryError::MaxProcesses(max));
        }
        Ok(())
    }

    fn check_binary(&self) -> Result<()> {
        let path = resolve_binary(&self.settings.binary);
        if is_executable(&path) {
            Ok(())
        } else {
            Err(RegistryError::Binary(format!(
                "ffmpeg binary {} is missing or not executable",
                path.display()
            )))
        }
    }

    /// Process metadata (all keys).
    pub fn metadata(&self, id: &str) -> Result<BTreeMap<String, Value>> {
        self.get(id).ok_or(RegistryError::NotFound)?;
        Ok(self.store.process_metadata(id)?)
    }

    /// Sets or (with `None`) deletes a process metadata key.
    pub async fn set_metadata(&self, id: &str, key: &str, value: Option<&Value>) -> Result<()> {
        let _guard = self.write.lock().await;
        self.get(id).ok_or(RegistryError::NotFound)?;
        Ok(self.store.set_process_metadata(id, key, value)?)
    }

    /// Stops every process without changing its order, so the next boot starts them again.
    pub async fn shutdown(&self) {
        let _guard = self.write.lock().await;
        for entry in self.list() {
            entry.runner.shutdown().await;
        }
    }

    /// The resolved argv for a probe: global options and inputs only.
    pub fn probe_command(&self, id: &str) -> Option<(PathBuf, Vec<String>)> {
        let entry = self.get(id)?;
        let resolved = self
            .resolve(&entry.record.config, Some(id), entry.ingest.as_deref())
            .ok()?;
        Some((resolve_binary(&self.settings.binary), resolved.probe_argv))
    }

    fn build(&self, record: ProcessRecord, replacing: Option<&str>) -> Entry {
        let mut invalid = None;
        let ingest = self
            .ingest_for(&record.config, replacing)
            .unwrap_or_else(|why| {
                invalid = Some(why);
                None
            });
        let resolved = self
            .resolve(&record.config, replacing, ingest.as_deref())
            .unwrap_or_else(|why| {
                invalid.get_or_insert(why);
                Resolved::default()
            });
        let (stream, stream_options) = match self.stream_for(&record.config, replacing) {
            Ok(found) => found,
            Err(why) => {
                invalid.get_or_insert(why);
                (None, None)
            }
        };
        let legs = match (&stream, &stream_options, &invalid) {
            (Some(stream), Some(options), None) => Some(WebRtcLegs::new(LegsOf {
                config: &record.config,
                inputs: &resolved.inputs,
                memory: self.codecs.clone(),
                encoding: argv::LegEncoding {
                    video_encoder: self
                        .media
                        .as_ref()
                        .and_then(|m| m.capabilities())
                        .map(|c| c.video_encoder.clone()),
                    settings: options.transcode.clone(),
                },
                stream,
                options: options.clone(),
            })),
            _ => None,
        };
        let outputs = resolved.outputs.iter().map(|o| o.address.clone()).collect();
        let written = self.written(&resolved.argv);
        let resolved_probe = resolved.probe_argv;
        let mut spec = self.spec(
            &record.config,
            resolved.argv,
            resolved.inputs,
            resolved.outputs,
        );
        spec.written = written;
        spec.probe_argv = resolved_probe;
        spec.legs = legs.map(|l| Arc::new(l) as Arc<dyn super::runner::Legs>);
        if let Some(ingest) = &ingest {
            spec.hooks = Some(Arc::new(IngestHooks(Arc::downgrade(ingest))));
        }
        Entry {
            record,
            invalid,
            runner: Arc::new(Runner::new(spec)),
            outputs,
            stream,
            stream_options,
            ingest,
        }
    }

    /// The WHIP input of a process with a `{whip}` input: the one it (or the process it replaces)
    /// has, so its ports and its publisher survive updates, or a new one.
    fn ingest_for(
        &self,
        config: &ProcessConfig,
        replacing: Option<&str>,
    ) -> std::result::Result<Option<Arc<Ingest>>, String> {
        let whip_inputs = config
            .input
            .iter()
            .filter(|io| io.address.trim() == WHIP_ADDRESS)
            .count();
        match whip_inputs {
            0 => return Ok(None),
            1 => {}
            _ => return Err(format!("only one input may be {WHIP_ADDRESS}")),
        }
        let Some(media) = &self.media else {
            return Err(format!(
                "a {WHIP_ADDRESS} input needs the WebRTC media engine (webrtc.enabled)"
            ));
        };
        let existing = [Some(config.id.as_str()), replacing]
            .into_iter()
            .flatten()
            .find_map(|id| self.get(id).and_then(|e| e.ingest.clone()));
        match existing {
            Some(ingest) => Ok(Some(ingest)),
            None => media
                .create_ingest(&config.id)
                .map(|i| Some(Arc::new(i)))
                .ok_or_else(|| {
                    "no free RTP ports for the WHIP input (webrtc.rtp_port_min/max)".to_string()
                }),
        }
    }

    /// The stream of a WebRTC-enabled process: the one it (or the process it replaces) has, or a
    /// new one, with the options the definition asks for. Keeping it across updates keeps its
    /// ports, so viewers survive FFmpeg restarts; the options reach a live stream only through
    /// [`Entry::apply_stream_options`], after the definition is accepted.
    fn stream_for(
        &self,
        config: &ProcessConfig,
        replacing: Option<&str>,
    ) -> std::result::Result<(Option<Arc<Stream>>, Option<StreamOptions>), String> {
        if !config.webrtc.enabled {
            return Ok((None, None));
        }
        let Some(media) = &self.media else {
            tracing::warn!(id = %config.id, "webrtc.enabled, but the media engine is off");
            return Ok((None, None));
        };
        let legs = argv::leg_format(config, self.codecs.get(config).as_ref());
        let options = StreamOptions {
            mpegts: legs == argv::LegFormat::MpegTs,
            force_transcode: config.webrtc.force_transcode,
            transcode: media.config().transcode.with(&config.webrtc.transcode),
        };
        if let Err(e) = options.transcode.validate() {
            return Err(format!("webrtc.transcode: {e}"));
        }
        let existing = [Some(config.id.as_str()), replacing]
            .into_iter()
            .flatten()
            .find_map(|id| self.get(id).and_then(|e| e.stream.clone()));
        let stream = match existing {
            Some(stream) => stream,
            None => media
                .create_stream(&config.id, options.clone())
                .map(Arc::new)
                .ok_or_else(|| {
                    "no free RTP port pair for the WebRTC legs (webrtc.rtp_port_min/max)"
                        .to_string()
                })?,
        };
        Ok((Some(stream), Some(options)))
    }

    fn spec(
        &self,
        config: &ProcessConfig,
        argv: Vec<String>,
        inputs: Vec<IoRef>,
        outputs: Vec<IoRef>,
    ) -> Spec {
        Spec {
            binary: resolve_binary(&self.settings.binary),
            argv,
            inputs,
            outputs,
            reconnect: config.reconnect,
            reconnect_delay: Duration::from_secs(config.reconnect_delay_seconds),
            stale_timeout: (config.stale_timeout_seconds > 0)
                .then(|| Duration::from_secs(config.stale_timeout_seconds)),
            limits: config.limits.clone(),
            kill_timeout: self.settings.kill_timeout,
            log_max_lines: self.settings.log_max_lines,
            log_max_history: self.settings.log_max_history,
            hooks: None,
            sandbox: self.settings.sandbox.clone(),
            written: None,
            probe_argv: Vec::new(),
            legs: None,
        }
    }

    /// Counts what the outputs (the argv after the last input) write to `{memfs}`.
    fn written(&self, argv: &[String]) -> Option<ByteCounter> {
        let outputs_at = argv.iter().rposition(|a| a == "-i").map_or(0, |i| i + 2);
        let patterns = written::memfs_patterns(
            &argv[outputs_at.min(argv.len())..],
            &self.settings.memfs_url,
        );
        if patterns.is_empty() {
            return None;
        }
        let tracker = self.settings.memfs.track(patterns);
        Some(Arc::new(move || tracker.bytes()))
    }

    /// Validates a definition and resolves it into an argv, with what this registry knows: its
    /// settings, the process's WHIP input, and the outputs of the other processes.
    fn resolve(
        &self,
        config: &ProcessConfig,
        replacing: Option<&str>,
        ingest: Option<&Ingest>,
    ) -> std::result::Result<Resolved, String> {
        let output_address = |pid: &str, oid: &str| {
            let entries = self.read();
            let other = entries.get(pid).ok_or(ReferenceError::UnknownProcess)?;
            let index = other
                .record
                .config
                .output
                .iter()
                .position(|o| o.id == oid)
                .ok_or(ReferenceError::UnknownOutput)?;
            other
                .outputs
                .get(index)
                .cloned()
                .ok_or(ReferenceError::Invalid)
        };
        let whip = ingest.map(|ingest| WhipInput {
            sdp_path: ingest.sdp_path(),
            read_timeout: self
                .media
                .as_ref()
                .and_then(|m| m.config().whip_read_timeout),
        });
        argv::resolve(
            config,
            &Context {
                disk_dir: &self.settings.disk_dir,
                memfs_url: &self.settings.memfs_url,
                access: &self.settings.access,
                replacing,
                whip,
                output_address: &output_address,
                servers: &self.settings.servers,
            },
        )
    }
}

/// Hands a WHIP input's ports to FFmpeg for each run (the ingest holds them in between, so no
/// one else takes them), and has the publisher send a key frame to every new FFmpeg.
struct IngestHooks(std::sync::Weak<Ingest>);

impl RunHooks for IngestHooks {
    fn before_spawn(&self) {
        if let Some(ingest) = self.0.upgrade() {
            ingest.release_ports();
        }
    }

    fn after_spawn(&self) {
        if let Some(ingest) = self.0.upgrade() {
            ingest.ffmpeg_started();
        }
    }

    fn after_exit(&self) {
        if let Some(ingest) = self.0.upgrade() {
            ingest.hold_ports();
        }
    }
}

/// Closes a process's viewers and its publisher off the async runtime (teardown waits on
/// GStreamer).
async fn close_webrtc(entry: &Entry) {
    let (stream, ingest) = (entry.stream.clone(), entry.ingest.clone());
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(stream) = stream {
            stream.close_viewers();
        }
        if let Some(ingest) = ingest {
            ingest.close();
        }
    })
    .await;
}

/// The cleanup rules of a definition's outputs, with `{processid}`, `{reference}` and
/// `{outputid}` resolved. Broken rules are skipped with a warning, as Core skips them.
fn cleanup_rules(config: &ProcessConfig) -> Vec<Rule> {
    let mut rules = Vec::new();
    for output in &config.output {
        let values = [
            ("processid", config.id.as_str()),
            ("reference", config.reference.as_str()),
            ("outputid", output.id.as_str()),
        ];
        for cleanup in &output.cleanup {
            let pattern = super::placeholder::replace(&cleanup.pattern, &values);
            match Rule::parse(
                &pattern,
                cleanup.max_files,
                cleanup.max_file_age_seconds,
                cleanup.purge_on_delete,
            ) {
                Ok(rule) => rules.push(rule),
                Err(why) => {
                    tracing::warn!(id = %config.id, %pattern, %why, "cleanup rule ignored")
                }
            }
        }
    }
    rules
}

fn normalise(mut config: ProcessConfig) -> ProcessConfig {
    config.id = config.id.trim().to_string();
    config.kind = "ffmpeg".into();
    config
}

/// Resolves a binary name through `PATH`; paths are returned as they are.
pub fn resolve_binary(name: &str) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|candidate| is_executable(candidate))
        })
        .unwrap_or_else(|| PathBuf::from(name))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

//! Wiring: open the store, boot the registry, serve HTTP, shut down cleanly.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::{self, AppState, Instance};
use crate::auth::Authenticator;
use crate::config::{ensure_jwt_secret, Config};
use crate::coreconfig::{ConfigSource, ConfigState};
use crate::fs::cleanup::Cleanup;
use crate::fs::disk::DiskFs;
use crate::fs::mem::MemFs;
use crate::fs::Filesystems;
use crate::media::{IceConfig, Media, MediaConfig};
use crate::metrics::Metrics;
use crate::process::access::Access;
use crate::process::registry::{resolve_binary, Settings};
use crate::process::sandbox::{Sandbox, SandboxOptions};
use crate::process::Registry;
use crate::store::Store;
use crate::webrtc::token::ProcessTokens;

/// A bound, booted server.
pub struct Server {
    listener: TcpListener,
    state: AppState,
}

/// A listener kept open across a reload, with the address it was bound for, and the memory
/// file system (its files outlive a reload, as a disk's would).
pub struct KeptListener {
    address: String,
    listener: std::net::TcpListener,
    memfs: Arc<MemFs>,
}

/// Why [`Server::serve`] returned.
pub enum Served {
    /// Shut down for good.
    Shutdown,
    /// `GET /api/v3/config/reload`: start again with the stored configuration.
    Reload(Option<KeptListener>),
}

impl Server {
    /// Prepares the data directory, opens the store, starts stored processes and binds.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        Self::bind_with(config, ConfigSource::default(), None).await
    }

    /// [`Server::bind`], reusing `kept` when it was bound for the configured address.
    pub async fn bind_with(
        mut config: Config,
        source: ConfigSource,
        kept: Option<KeptListener>,
    ) -> anyhow::Result<Server> {
        let data_dir = &config.storage.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        // Absolute from here on: FFmpeg runs in the data directory, not in ours, so every path
        // handed to it must be absolute (and is then made relative to its working directory).
        config.storage.data_dir = data_dir.canonicalize()?;
        let data_dir = &config.storage.data_dir;
        let public = config.storage.public_path();
        std::fs::create_dir_all(&public)
            .with_context(|| format!("cannot create public directory {}", public.display()))?;
        let disk_dir = public.canonicalize()?;
        let secret = ensure_jwt_secret(&config)?;
        let auth = Authenticator::new(&config.auth, &secret).map(Arc::new);
        let process_tokens = Arc::new(ProcessTokens::new(&config.auth, &secret));
        let core_config = Arc::new(ConfigState::new(source, &config)?);
        let mut instance = load_instance(data_dir)?;
        if let Some(name) = core_config
            .stored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .config
            .get("name")
            .and_then(|n| n.as_str())
            .filter(|n| !n.trim().is_empty())
        {
            instance.name = name.to_string();
        }
        crate::logring::set_capacity(config.log.max_lines);
        crate::logring::set_level(&config.log.level);
        // Bound before the processes are resolved: `{memfs}` names the port. A reload keeps the
        // listener when the address stays.
        let (kept, kept_memfs) = match kept {
            Some(k) => (Some((k.address, k.listener)), Some(k.memfs)),
            None => (None, None),
        };
        let listener = match kept.filter(|(address, _)| *address == config.http.address) {
            Some((_, kept)) => TcpListener::from_std(kept)?,
            None => TcpListener::bind(&config.http.address)
                .await
                .with_context(|| format!("cannot listen on {}", config.http.address))?,
        };
        let memory = &mut config.storage.memory;
        if memory.auth.enable && memory.auth.password.is_empty() {
            use rand::distributions::{Alphanumeric, DistString};
            memory.auth.password = Alphanumeric.sample_string(&mut rand::thread_rng(), 24);
        }
        let memfs_url = memfs_url(&config, listener.local_addr()?);
        let mem_bytes = config.storage.memory.max_size_mbytes * 1024 * 1024;
        let filesystems = Filesystems {
            disk: Arc::new(DiskFs::new(&disk_dir)?),
            mem: kept_memfs
                .filter(|m| m.same_limits(mem_bytes, config.storage.memory.purge))
                .unwrap_or_else(|| Arc::new(MemFs::new(mem_bytes, config.storage.memory.purge))),
        };
        let cleanup = Arc::new(Cleanup::new(filesystems.clone()));

        let db = config.storage.database_path();
        let store = Arc::new(
            Store::open(&db).with_context(|| format!("cannot open database {}", db.display()))?,
        );
        let binary = resolve_binary(&config.ffmpeg.binary);
        if !binary.is_file() {
            tracing::error!(binary = %binary.display(), "ffmpeg binary not found; processes will fail to start");
        }
        let mut access = Access::new(
            data_dir,
            &disk_dir,
            reserved_files(&config),
            &config.ffmpeg.access.input,
            &config.ffmpeg.access.output,
        )?;
        // The server's own memory file system is inside the server, whatever the lists say.
        access.allow_internal(&memfs_url);
        let writable = [disk_dir.clone(), data_dir.join("webrtc")];
        let readable: Vec<_> = config.ffmpeg.read_paths.iter().map(Into::into).collect();
        let sandbox = Sandbox::new(
            data_dir,
            &SandboxOptions {
                user: &config.ffmpeg.user,
                confine: config.ffmpeg.sandbox,
                writable: &writable,
                readable: &readable,
            },
        )?;
        restrict_mode(&db);
        let settings = Settings {
            access: Arc::new(access),
            sandbox: Arc::new(sandbox),
            binary: config.ffmpeg.binary.clone(),
            max_processes: config.ffmpeg.max_processes,
            disk_dir: disk_dir.clone(),
            log_max_lines: config.ffmpeg.log_max_lines,
            log_max_history: config.ffmpeg.log_max_history,
            kill_timeout: Duration::from_secs(config.ffmpeg.kill_timeout_seconds),
            memfs_url,
            memfs: filesystems.mem.clone(),
            cleanup: cleanup.clone(),
            servers: crate::ingest::templates(&config.rtmp, &config.srt),
        };
        if config.demo.enabled {
            crate::demo::seed(&store).context("cannot create the demo process")?;
            let (binary, public) = (resolve_binary(&config.ffmpeg.binary), disk_dir.clone());
            tokio::spawn(async move { crate::demo::ensure_clip(binary, &public).await });
        }
        let media = if config.webrtc.enabled {
            let media = Media::start(media_config(&config), data_dir.join("webrtc"))
                .context("cannot start the WebRTC media engine (set webrtc.enabled = false to run without it)")?;
            Some(Arc::new(media))
        } else {
            None
        };
        let metrics = Arc::new(Metrics::default());
        // Before the registry boots, so stored processes reading `{rtmp}`/`{srt}` find them.
        let ingest = Arc::new(crate::ingest::Ingest::start(&config, metrics.clone()).await?);
        let registry = Arc::new(Registry::boot(store.clone(), settings, media.clone())?);
        cleanup.spawn();
        let sessions = crate::sessions::Sessions::start(&config.sessions);
        crate::sessions::webrtc::feed(&sessions, media.as_ref());
        crate::sessions::ingest::feed(&sessions, &ingest);
        let history = crate::history::History::start(
            config.metrics.interval_sec,
            config.metrics.range_sec,
            crate::history::Sources {
                registry: registry.clone(),
                sessions: sessions.clone(),
                data_dir: data_dir.clone(),
                public_dir: disk_dir.clone(),
                started: std::time::Instant::now(),
                memfs: filesystems.mem.clone(),
            },
        );
        let login_limiter = Arc::new(api::login_limit::LoginLimiter::new(&config.auth));
        let state = AppState {
            registry,
            media,
            store,
            auth,
            process_tokens,
            skills: Arc::new(api::skills::SkillsCache::new(binary)),
            config: Arc::new(config),
            metrics,
            ingest,
            instance: Arc::new(instance),
            login_limiter,
            filesystems,
            core_config,
            sessions,
            history,
        };
        Ok(Server { listener, state })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves or a reload is asked for, then stops every process
    /// without changing its order. On reload the listening socket stays open (connections
    /// wait in its backlog) for the next [`Server::bind_with`].
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Served> {
        let registry = self.state.registry.clone();
        let ingest = self.state.ingest.clone();
        let memfs = self.state.filesystems.mem.clone();
        let address = self.state.config.http.address.clone();
        let core_config = self.state.core_config.clone();
        let listener = self.listener.into_std()?;
        let kept = listener.try_clone()?;
        let listener = TcpListener::from_std(listener)?;
        let (why_tx, why_rx) = tokio::sync::oneshot::channel();
        let stop = async move {
            let reload = tokio::select! {
                _ = shutdown => false,
                _ = core_config.reload.notified() => true,
            };
            let _ = why_tx.send(reload);
        };
        let http = &self.state.config.http;
        let limits = crate::serve::Limits {
            header_read_timeout: Duration::from_millis(http.header_read_timeout_ms),
            idle_timeout: Duration::from_secs(http.idle_timeout_seconds),
            body_timeout: Duration::from_secs(http.body_read_timeout_seconds),
            max_connections: http.max_connections,
        };
        tracing::info!(address = %listener.local_addr()?, auth = self.state.auth.is_some(), "streamcore listening");
        // Handlers see the peer as ConnectInfo<SocketAddr>: it decides what a request may do
        // while auth is off (api::client) and keys the login lockout.
        crate::serve::serve(listener, api::router(self.state), limits, stop).await;
        registry.shutdown().await;
        ingest.stop().await;
        if why_rx.await.unwrap_or(false) {
            Ok(Served::Reload(Some(KeptListener {
                address,
                listener: kept,
                memfs,
            })))
        } else {
            Ok(Served::Shutdown)
        }
    }
}

/// What `{memfs}` stands for: the `/memfs` mount as FFmpeg reaches it from this host, with the
/// Basic credentials in the URL when writes need them (as Core builds it).
fn memfs_url(config: &Config, bound: std::net::SocketAddr) -> String {
    let host = match bound.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let auth = &config.storage.memory.auth;
    let userinfo = if auth.enable {
        format!("{}:{}@", userinfo(&auth.username), userinfo(&auth.password))
    } else {
        String::new()
    };
    format!("http://{userinfo}{host}:{}/memfs", bound.port())
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so any credentials fit in a
/// URL's userinfo.
fn userinfo(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The server's own files inside the data directory, which no process definition may name.
fn reserved_files(config: &Config) -> Vec<std::path::PathBuf> {
    let data = &config.storage.data_dir;
    let mut files = database_files(&config.storage.database_path());
    files.extend(
        [
            "jwt_secret",
            "jwt_secret.tmp",
            "instance.json",
            "instance.tmp",
            crate::coreconfig::stored::FILE,
            "core-config.tmp",
            "webrtc",
        ]
        .map(|f| data.join(f)),
    );
    // The RTMPS private key, where it lies in the data directory (set through the API, it must).
    if !config.tls.key_file.is_empty() {
        files.extend(std::path::absolute(&config.tls.key_file).ok());
    }
    files
}

/// The SQLite database and the files SQLite keeps beside it.
fn database_files(db: &std::path::Path) -> Vec<std::path::PathBuf> {
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|suffix| {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            name.into()
        })
        .collect()
}

/// The database holds every process definition: owner-only, like the JWT secret, so FFmpeg
/// running as another user cannot read it.
fn restrict_mode(db: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    for file in database_files(db) {
        // A companion file that does not exist (yet) is created by SQLite with the database's mode.
        let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
    }
}

fn media_config(config: &Config) -> MediaConfig {
    let w = &config.webrtc;
    let turn_servers = w
        .turn_servers
        .iter()
        .filter(|_| !w.turn_username.is_empty())
        .map(|host| format!("turn://{}:{}@{host}", w.turn_username, w.turn_password))
        .collect();
    MediaConfig {
        jitter_latency_ms: w.jitter_latency_ms,
        viewer_queue_buffers: w.viewer_queue_buffers,
        viewer_pool: w.viewer_pool,
        max_viewers_per_stream: w.max_viewers_per_stream,
        max_viewers_total: w.max_viewers_total,
        connect_timeout: Duration::from_secs(w.connect_timeout_seconds),
        consent_timeout: Duration::from_secs(w.consent_timeout_seconds),
        encoder: w.encoder.clone(),
        pipelines_dir: pipelines_dir(&w.pipelines_dir),
        transcode: w.transcode.clone(),
        key_unit_interval: Duration::from_millis(w.key_unit_interval_ms),
        whip_key_interval: (w.whip_key_frame_interval_ms > 0)
            .then(|| Duration::from_millis(w.whip_key_frame_interval_ms)),
        whip_read_timeout: (w.whip_read_timeout_seconds > 0)
            .then(|| Duration::from_secs(w.whip_read_timeout_seconds)),
        rtp_port_min: w.rtp_port_min,
        rtp_port_max: w.rtp_port_max,
        ice: IceConfig {
            min_port: w.ice_port_min,
            max_port: w.ice_port_max,
            public_ip: w.public_ip.parse().ok(),
            interfaces: w.interfaces.iter().filter_map(|i| i.parse().ok()).collect(),
            stun_server: (!w.stun_server.is_empty()).then(|| format!("stun://{}", w.stun_server)),
            turn_servers,
            gather_timeout: Duration::from_millis(w.gather_timeout_ms),
        },
    }
}

/// The descriptions directory: none configured, or the default relative one missing, means the
/// built-in descriptions (a bare start from any working directory must work).
fn pipelines_dir(configured: &str) -> Option<std::path::PathBuf> {
    if configured.is_empty() {
        return None;
    }
    let path = std::path::PathBuf::from(configured);
    if configured == "pipelines" && !path.is_dir() {
        tracing::info!("no ./pipelines directory; using the built-in pipeline descriptions");
        return None;
    }
    Some(path)
}

/// Runs the server until SIGINT or SIGTERM, starting it again in this process on each
/// `GET /api/v3/config/reload` with the configuration `source` gives then.
pub async fn run(mut config: Config, source: ConfigSource) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let mut kept = None;
    loop {
        let server = Server::bind_with(config.clone(), source.clone(), kept.take()).await?;
        let mut stop = stop_rx.clone();
        let served = server
            .serve(async move {
                let _ = stop.wait_for(|stop| *stop).await;
            })
            .await?;
        match served {
            Served::Shutdown => return Ok(()),
            Served::Reload(listener) => {
                kept = listener;
                let reread = source.clone();
                match tokio::task::spawn_blocking(move || reread.load()).await? {
                    Ok(next) => config = next,
                    Err(e) => {
                        tracing::error!(
                            "reload: {e:#}; starting again with the previous configuration"
                        )
                    }
                }
                tracing::info!("restarting services with the reloaded configuration");
            }
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}

/// The persistent id and name of this instance, created on first start.
fn load_instance(data_dir: &std::path::Path) -> anyhow::Result<Instance> {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Stored {
        id: String,
        name: String,
    }
    let path = data_dir.join("instance.json");
    let stored = match std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Stored>(&b).ok())
    {
        Some(stored) => stored,
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            let stored = Stored {
                name: format!("streamcore-{}", &id[..8]),
                id,
            };
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&stored)?)?;
            std::fs::rename(&tmp, &path)?;
            stored
        }
    };
    Ok(Instance {
        id: stored.id,
        name: stored.name,
        started_at: chrono::Utc::now(),
    })
}

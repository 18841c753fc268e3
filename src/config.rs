//! Server configuration: a TOML or JSON file, overridden by `STREAMCORE_*` environment variables.
//!
//! Every key has a default so that a bare `streamcore` starts. The precedence is
//! defaults < config file < environment < command line.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The whole server configuration.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listener.
    pub http: HttpConfig,
    /// Where state lives on disk.
    pub storage: StorageConfig,
    /// Login and JWT settings.
    pub auth: AuthConfig,
    /// The FFmpeg binary and its process limits.
    pub ffmpeg: FfmpegConfig,
    /// Logging.
    pub log: LogConfig,
    /// The demo process created on first start.
    pub demo: DemoConfig,
    /// WebRTC egress.
    pub webrtc: WebRtcConfig,
    /// Public host names (datarhei `host`).
    pub host: HostConfig,
    /// Viewer sessions (datarhei `sessions`).
    pub sessions: SessionsConfig,
    /// The metrics history of `POST /api/v3/metrics` (datarhei `metrics`).
    pub metrics: MetricsConfig,
    /// The built-in RTMP server (datarhei Core's `rtmp` section).
    pub rtmp: RtmpConfig,
    /// The built-in SRT server (datarhei Core's `srt` section).
    pub srt: SrtConfig,
    /// The TLS certificate (datarhei Core's `tls` section; used by RTMPS).
    pub tls: TlsConfig,
}

/// Names under which clients reach this server (datarhei `host`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Public host names; player and embed URLs use the first (`STREAMCORE_HOST_NAME`, comma list).
    pub name: Vec<String>,
    /// With no names set, report the host a client used to reach the API.
    pub auto: bool,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            name: Vec::new(),
            auto: true,
        }
    }
}

/// Session collection and limits (datarhei `sessions`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Collect sessions of HLS/HTTP readers and WebRTC viewers.
    pub enable: bool,
    /// HTTP clients in these networks are not collected (nor limited).
    pub ip_ignorelist: Vec<String>,
    /// An HTTP session ends after this many seconds without a request.
    pub session_timeout_sec: u64,
    /// Most HLS sessions at once; more get 509. 0 is unlimited.
    pub max_sessions: u64,
    /// New HLS sessions get 509 while the HLS egress is at this many Mbit/s. 0 is unlimited.
    pub max_bitrate_mbit: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            enable: true,
            ip_ignorelist: vec!["127.0.0.1/32".into(), "::1/128".into()],
            session_timeout_sec: 30,
            max_sessions: 0,
            max_bitrate_mbit: 0,
        }
    }
}

/// The metrics history (datarhei `metrics`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Reported for datarhei clients; streamcore samples whatever the value.
    pub enable: bool,
    /// Reported for datarhei clients; `/metrics` is always served.
    pub enable_prometheus: bool,
    /// Seconds of history kept.
    pub range_sec: u64,
    /// Seconds between two samples.
    pub interval_sec: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enable: false,
            enable_prometheus: false,
            range_sec: 300,
            interval_sec: 2,
        }
    }
}

/// The RTMP server: publishers push `rtmp://host:port/<app>/<name>`, processes and players read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtmpConfig {
    /// Listen for RTMP (`STREAMCORE_RTMP_ENABLE`).
    pub enable: bool,
    /// Also listen for RTMPS on `address_tls` with the `tls` certificate; needs `tls.enable`
    /// (`STREAMCORE_RTMP_ENABLE_TLS`).
    pub enable_tls: bool,
    /// `host:port` or Go's `:port` (`STREAMCORE_RTMP_ADDRESS`).
    pub address: String,
    /// The RTMPS address, `host:port` or `:port` (`STREAMCORE_RTMP_ADDRESS_TLS`).
    pub address_tls: String,
    /// Path prefix every published name must start with (`STREAMCORE_RTMP_APP`).
    pub app: String,
    /// Required as `?token=` or as the last path element when non-empty (`STREAMCORE_RTMP_TOKEN`).
    pub token: String,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            enable: false,
            enable_tls: false,
            address: ":1935".into(),
            address_tls: ":1936".into(),
            app: "/".into(),
            token: String::new(),
        }
    }
}

/// The certificate RTMPS serves (Core's `tls`; `address` and `email` are Core-only keys carried in
/// the stored document: streamcore serves no HTTPS and has no ACME client).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// TLS is on: `cert_file` and `key_file` must load (`STREAMCORE_TLS_ENABLE`).
    pub enable: bool,
    /// Core's Let's Encrypt certificates; refused while `enable` is on (`STREAMCORE_TLS_AUTO`).
    pub auto: bool,
    /// PEM certificate chain, leaf first (`STREAMCORE_TLS_CERT_FILE`). Set through the API, it
    /// must be inside the data directory (relative paths are taken from there).
    pub cert_file: String,
    /// PEM private key: PKCS#8, PKCS#1 or SEC1 (`STREAMCORE_TLS_KEY_FILE`); as `cert_file`.
    pub key_file: String,
}

/// The SRT server: stream ids `<name>,mode:publish|request[,token:<t>]`, MPEG-TS payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SrtConfig {
    /// Listen for SRT (`STREAMCORE_SRT_ENABLE`).
    pub enable: bool,
    /// `host:port` or Go's `:port` (`STREAMCORE_SRT_ADDRESS`).
    pub address: String,
    /// Callers must encrypt with this passphrase when non-empty (`STREAMCORE_SRT_PASSPHRASE`).
    pub passphrase: String,
    /// Required as `,token:<t>` in the stream id when non-empty (`STREAMCORE_SRT_TOKEN`).
    pub token: String,
    /// Core's libsrt log settings; kept for configuration compatibility, not used.
    pub log: SrtLogConfig,
}

impl Default for SrtConfig {
    fn default() -> Self {
        Self {
            enable: false,
            address: ":6000".into(),
            passphrase: String::new(),
            token: String::new(),
            log: SrtLogConfig::default(),
        }
    }
}

/// Core's `srt.log` (no effect in streamcore).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SrtLogConfig {
    /// Unused.
    pub enable: bool,
    /// Unused.
    pub topics: Vec<String>,
}

/// `host:port`, or Go's `:port` meaning every interface, as a socket address.
pub fn listen_address(address: &str) -> anyhow::Result<std::net::SocketAddr> {
    let full = if address.starts_with(':') {
        format!("0.0.0.0{address}")
    } else {
        address.to_string()
    };
    full.parse()
        .with_context(|| format!("{address:?} is not host:port or :port"))
}

/// WebRTC egress settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebRtcConfig {
    /// Start the media engine (GStreamer); without it `webrtc.enabled` processes get no legs.
    pub enabled: bool,
    /// Loopback UDP range for FFmpeg's RTP legs (pairs: video even, audio odd).
    pub rtp_port_min: u16,
    /// Upper end of that range.
    pub rtp_port_max: u16,
    /// rtpjitterbuffer latency on the per-medium RTP legs (WebM/Ogg sources), in ms; the MPEG-TS
    /// leg has no jitter buffer (loopback does not reorder).
    pub jitter_latency_ms: u32,
    /// Packets a per-viewer leaky queue holds before dropping the oldest; 0 (the default) puts no
    /// queue in the branch, which saves two threads per viewer (see docs/performance.md).
    pub viewer_queue_buffers: u32,
    /// Viewers' webrtcbins kept prepared (ICE, DTLS and RTP session built) before their offers
    /// arrive, so that a burst of viewers is answered sooner; each costs two threads and about
    /// 1 MiB while it waits. The pool fills once the first viewer has asked and empties after an
    /// hour without one. 0 prepares none.
    pub viewer_pool: usize,
    /// Viewers per stream; more get 503.
    pub max_viewers_per_stream: usize,
    /// Viewers in all; more get 503.
    pub max_viewers_total: usize,
    /// Viewers that have not connected after this many seconds are removed.
    pub connect_timeout_seconds: u64,
    /// A connected viewer that sent nothing (consent checks, RTCP) for this many seconds is removed.
    pub consent_timeout_seconds: u64,
    /// Longest ICE gathering before a POST answers 504, in ms.
    pub gather_timeout_ms: u64,
    /// Lowest UDP port for viewers' ICE; 0 lets the OS choose.
    pub ice_port_min: u16,
    /// Highest UDP port for viewers' ICE.
    pub ice_port_max: u16,
    /// Public address advertised instead of private host candidates (1:1 NAT); empty for none.
    pub public_ip: String,
    /// Local addresses to gather candidates on; empty for all.
    pub interfaces: Vec<String>,
    /// STUN server, `host:port`; empty for none.
    pub stun_server: String,
    /// TURN servers, `host:port` (UDP), announced to viewers and used by the server.
    pub turn_servers: Vec<String>,
    /// TURN REST shared secret: viewers get time-limited credentials derived from it.
    pub turn_secret: String,
    /// Static TURN username (when no shared secret is set).
    pub turn_username: String,
    /// Static TURN password.
    pub turn_password: String,
    /// Lifetime of TURN REST credentials, in seconds.
    pub turn_credential_seconds: u64,
    /// Default lifetime of viewer tokens, in seconds.
    pub viewer_token_seconds: u64,
    /// H.264 encoder for the transcode branch: `auto` (CUDA, VAAPI, x264, openh264, the first that
    /// works), a family (`cuda`, `vaapi`, `x264`, `openh264`) or an element name. A forced encoder
    /// that is missing or fails its start-up test stops the server.
    pub encoder: String,
    /// Directory of the pipeline descriptions; empty uses the built-in ones. A relative path that
    /// does not exist falls back to the built-in descriptions with a warning.
    pub pipelines_dir: String,
    /// Default transcode settings (each process may override them in `webrtc.transcode`).
    pub transcode: crate::model::transcode::TranscodeSettings,
    /// Least time between two key frames forced for joining viewers (or their PLIs), in ms.
    pub key_unit_interval_ms: u64,
    /// How often a WHIP publisher is asked for a key frame (RTCP PLI/FIR), in ms; 0 only asks
    /// when FFmpeg (re)starts.
    pub whip_key_frame_interval_ms: u64,
    /// A WHIP input's FFmpeg ends after this many seconds without packets (`-listen_timeout`);
    /// the process's reconnect settings then apply. 0 waits forever.
    pub whip_read_timeout_seconds: u64,
    /// Default lifetime of publish tokens, in seconds.
    pub publish_token_seconds: u64,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rtp_port_min: 40000,
            rtp_port_max: 40999,
            jitter_latency_ms: 200,
            viewer_queue_buffers: 0,
            viewer_pool: 4,
            max_viewers_per_stream: 200,
            max_viewers_total: 500,
            connect_timeout_seconds: 10,
            consent_timeout_seconds: 15,
            gather_timeout_ms: 5000,
            ice_port_min: 0,
            ice_port_max: 0,
            public_ip: String::new(),
            interfaces: Vec::new(),
            stun_server: String::new(),
            turn_servers: Vec::new(),
            turn_secret: String::new(),
            turn_username: String::new(),
            turn_password: String::new(),
            turn_credential_seconds: 86400,
            viewer_token_seconds: 3600,
            encoder: "auto".into(),
            pipelines_dir: "pipelines".into(),
            transcode: Default::default(),
            key_unit_interval_ms: 500,
            whip_key_frame_interval_ms: 2000,
            whip_read_timeout_seconds: 10,
            publish_token_seconds: 86400,
        }
    }
}

/// HTTP listener settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on (`STREAMCORE_HTTP_ADDRESS`).
    pub address: String,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// Origins whose pages may call the control API (`/api`) from a browser; `*` allows all.
    /// Empty (the default) refuses every cross-origin request to it. WHEP/WHIP and public files
    /// are open to every origin regardless.
    pub cors_origins: Vec<String>,
    /// A request head (and a new connection's first request) must arrive within this many ms;
    /// slower clients are disconnected (slowloris).
    pub header_read_timeout_ms: u64,
    /// A request body must arrive completely within this many seconds after its head.
    pub body_read_timeout_seconds: u64,
    /// A connection with no request in flight is closed after this many seconds. HTTP/1.1
    /// keep-alive connections are also bound by the header-read timeout while they wait.
    pub idle_timeout_seconds: u64,
    /// Most connections served at once; when full, the longest-idle one makes room.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            address: "0.0.0.0:8080".into(),
            max_body_bytes: 1024 * 1024,
            cors_origins: Vec::new(),
            header_read_timeout_ms: 10_000,
            body_read_timeout_seconds: 30,
            idle_timeout_seconds: 60,
            // Half the usual 1,024 descriptor limit: WebRTC viewers (UDP sockets, GStreamer
            // pipes), FFmpeg's pipes and the database need the rest.
            max_connections: 512,
        }
    }
}

/// On-disk state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory for the database and generated files (`STREAMCORE_DATA_DIR`).
    pub data_dir: PathBuf,
    /// SQLite database path; relative paths are inside `data_dir`.
    pub database: PathBuf,
    /// Directory served at `/` and substituted for `{diskfs}`; relative paths are inside `data_dir`.
    pub public_dir: PathBuf,
    /// Largest file one PUT/POST may write to `/memfs` or through `/api/v3/fs`, in MiB.
    pub max_file_mbytes: u64,
    /// The in-memory file system mounted at `/memfs` (`{memfs}`).
    pub memory: MemoryStorageConfig,
}

/// The in-memory file system (datarhei `storage.memory`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryStorageConfig {
    /// HTTP Basic credentials for writes to `/memfs`.
    pub auth: MemoryAuthConfig,
    /// Capacity in MiB; 0 is unlimited.
    pub max_size_mbytes: u64,
    /// When full, delete the oldest files to make room instead of refusing the write.
    pub purge: bool,
}

/// Who may write to `/memfs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryAuthConfig {
    /// Require HTTP Basic for PUT/POST/DELETE.
    pub enable: bool,
    /// Basic username.
    pub username: String,
    /// Basic password; a random one is chosen at start when empty.
    pub password: String,
}

impl Default for MemoryAuthConfig {
    fn default() -> Self {
        Self {
            enable: true,
            username: "admin".into(),
            password: String::new(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            database: PathBuf::from("streamcore.db"),
            public_dir: PathBuf::from("public"),
            max_file_mbytes: 64,
            memory: MemoryStorageConfig::default(),
        }
    }
}

impl StorageConfig {
    /// Absolute path of the SQLite database.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(&self.database)
    }

    /// Path of the public (disk) file tree.
    pub fn public_path(&self) -> PathBuf {
        self.data_dir.join(&self.public_dir)
    }
}

/// Login and token settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `false` turns auth off even with credentials set (datarhei `api.auth.enable`); unset means
    /// on when username and password are set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable: Option<bool>,
    /// Admin username (`STREAMCORE_AUTH_USERNAME`); auth is on when username and password are set.
    pub username: String,
    /// Admin password (`STREAMCORE_AUTH_PASSWORD`).
    pub password: String,
    /// JWT signing secret (`STREAMCORE_JWT_SECRET`); generated and kept in `<data_dir>/jwt_secret` when empty.
    pub jwt_secret: String,
    /// Lifetime of access tokens in seconds.
    pub access_token_seconds: u64,
    /// Lifetime of refresh tokens in seconds.
    pub refresh_token_seconds: u64,
    /// Delay before answering a failed login, in milliseconds (slows password guessing).
    pub login_failure_delay_ms: u64,
    /// Failed logins from one client (IPv4 address or IPv6 /64) before it is locked out.
    pub login_max_failures: u32,
    /// Failures further apart than this many seconds are forgotten.
    pub login_failure_window_seconds: u64,
    /// First lockout, in seconds; each further failure doubles it.
    pub login_lockout_seconds: u64,
    /// Longest lockout, in seconds.
    pub login_lockout_max_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enable: None,
            username: String::new(),
            password: String::new(),
            jwt_secret: String::new(),
            access_token_seconds: 600,
            refresh_token_seconds: 86400,
            login_failure_delay_ms: 5000,
            login_max_failures: 5,
            login_failure_window_seconds: 900,
            login_lockout_seconds: 30,
            login_lockout_max_seconds: 3600,
        }
    }
}

impl AuthConfig {
    /// Auth is enforced only when both credentials are configured.
    pub fn enabled(&self) -> bool {
        self.enable != Some(false) && !self.username.is_empty() && !self.password.is_empty()
    }
}

/// FFmpeg settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FfmpegConfig {
    /// Binary name or path (`STREAMCORE_FFMPEG_BINARY`); names are looked up in `PATH`.
    pub binary: String,
    /// Most processes with order `start` at once; 0 is unlimited.
    pub max_processes: usize,
    /// Log lines kept per run in the process report.
    pub log_max_lines: usize,
    /// Earlier runs kept in the process report.
    pub log_max_history: usize,
    /// Seconds between SIGINT and SIGKILL when stopping a process.
    pub kill_timeout_seconds: u64,
    /// User FFmpeg runs as when the server runs as root (`STREAMCORE_FFMPEG_USER`); empty keeps
    /// root, which lets any API user read and write every file on the host.
    pub user: String,
    /// Confine FFmpeg with Landlock where the kernel has it: reads limited to system directories
    /// and the data directory, writes to the data directory (`STREAMCORE_FFMPEG_SANDBOX`).
    pub sandbox: bool,
    /// Directories outside the data directory that a confined FFmpeg may read (add those that
    /// `ffmpeg.access.input.allow` rules name).
    pub read_paths: Vec<String>,
    /// What process definitions may read and write (datarhei `ffmpeg.access`).
    pub access: FfmpegAccess,
}

/// Allow and block lists for FFmpeg's inputs and outputs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FfmpegAccess {
    /// Input addresses.
    pub input: AccessList,
    /// Output addresses.
    pub output: AccessList,
}

/// Regular expressions matched against resolved addresses (datarhei semantics: with a non-empty
/// `allow` only matching addresses pass; `block` always refuses). Local files outside the data
/// directory, devices and local protocols need an `allow` match.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessList {
    /// Addresses that may be used.
    pub allow: Vec<String>,
    /// Addresses that may never be used.
    pub block: Vec<String>,
}

impl Default for FfmpegConfig {
    fn default() -> Self {
        Self {
            binary: "ffmpeg".into(),
            max_processes: 0,
            log_max_lines: 50,
            log_max_history: 3,
            kill_timeout_seconds: 5,
            user: "nobody".into(),
            sandbox: true,
            read_paths: Vec::new(),
            access: FfmpegAccess::default(),
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `streamcore=debug` (`STREAMCORE_LOG`).
    pub level: String,
    /// `text` or `json` (`STREAMCORE_LOG_FORMAT`).
    pub format: LogFormat,
    /// Events kept in memory for `GET /api/v3/log` (`STREAMCORE_LOG_MAX_LINES`).
    pub max_lines: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
            max_lines: 1000,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The demo process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Create the `demo` process on the first start of an empty database (`STREAMCORE_DEMO`).
    pub enabled: bool,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// The `STREAMCORE_*` variables that override file keys, with the key each one sets.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("STREAMCORE_HTTP_ADDRESS", "http.address"),
    ("STREAMCORE_HTTP_MAX_BODY_BYTES", "http.max_body_bytes"),
    ("STREAMCORE_HTTP_CORS_ORIGINS", "http.cors_origins"),
    (
        "STREAMCORE_HTTP_HEADER_READ_TIMEOUT_MS",
        "http.header_read_timeout_ms",
    ),
    (
        "STREAMCORE_HTTP_BODY_READ_TIMEOUT_SECONDS",
        "http.body_read_timeout_seconds",
    ),
    (
        "STREAMCORE_HTTP_IDLE_TIMEOUT_SECONDS",
        "http.idle_timeout_seconds",
    ),
    ("STREAMCORE_HTTP_MAX_CONNECTIONS", "http.max_connections"),
    ("STREAMCORE_DATA_DIR", "storage.data_dir"),
    ("STREAMCORE_DATABASE", "storage.database"),
    ("STREAMCORE_PUBLIC_DIR", "storage.public_dir"),
    (
        "STREAMCORE_STORAGE_MAX_FILE_MBYTES",
        "storage.max_file_mbytes",
    ),
    (
        "STREAMCORE_STORAGE_MEMORY_AUTH_ENABLE",
        "storage.memory.auth.enable",
    ),
    (
        "STREAMCORE_STORAGE_MEMORY_AUTH_USERNAME",
        "storage.memory.auth.username",
    ),
    (
        "STREAMCORE_STORAGE_MEMORY_AUTH_PASSWORD",
        "storage.memory.auth.password",
    ),
    (
        "STREAMCORE_STORAGE_MEMORY_MAX_SIZE_MBYTES",
        "storage.memory.max_size_mbytes",
    ),
    ("STREAMCORE_STORAGE_MEMORY_PURGE", "storage.memory.purge"),
    ("STREAMCORE_AUTH_USERNAME", "auth.username"),
    ("STREAMCORE_AUTH_PASSWORD", "auth.password"),
    ("STREAMCORE_JWT_SECRET", "auth.jwt_secret"),
    (
        "STREAMCORE_AUTH_ACCESS_TOKEN_SECONDS",
        "auth.access_token_seconds",
    ),
    (
        "STREAMCORE_AUTH_REFRESH_TOKEN_SECONDS",
        "auth.refresh_token_seconds",
    ),
    (
        "STREAMCORE_AUTH_LOGIN_FAILURE_DELAY_MS",
        "auth.login_failure_delay_ms",
    ),
    (
        "STREAMCORE_AUTH_LOGIN_MAX_FAILURES",
        "auth.login_max_failures",
    ),
    (
        "STREAMCORE_AUTH_LOGIN_FAILURE_WINDOW_SECONDS",
        "auth.login_failure_window_seconds",
    ),
    (
        "STREAMCORE_AUTH_LOGIN_LOCKOUT_SECONDS",
        "auth.login_lockout_seconds",
    ),
    (
        "STREAMCORE_AUTH_LOGIN_LOCKOUT_MAX_SECONDS",
        "auth.login_lockout_max_seconds",
    ),
    ("STREAMCORE_FFMPEG_BINARY", "ffmpeg.binary"),
    ("STREAMCORE_FFMPEG_MAX_PROCESSES", "ffmpeg.max_processes"),
    ("STREAMCORE_FFMPEG_LOG_MAX_LINES", "ffmpeg.log_max_lines"),
    (
        "STREAMCORE_FFMPEG_LOG_MAX_HISTORY",
        "ffmpeg.log_max_history",
    ),
    (
        "STREAMCORE_FFMPEG_KILL_TIMEOUT_SECONDS",
        "ffmpeg.kill_timeout_seconds",
    ),
    ("STREAMCORE_FFMPEG_USER", "ffmpeg.user"),
    ("STREAMCORE_FFMPEG_SANDBOX", "ffmpeg.sandbox"),
    ("STREAMCORE_FFMPEG_READ_PATHS", "ffmpeg.read_paths"),
    (
        "STREAMCORE_FFMPEG_ACCESS_INPUT_ALLOW",
        "ffmpeg.access.input.allow",
    ),
    (
        "STREAMCORE_FFMPEG_ACCESS_INPUT_BLOCK",
        "ffmpeg.access.input.block",
    ),
    (
        "STREAMCORE_FFMPEG_ACCESS_OUTPUT_ALLOW",
        "ffmpeg.access.output.allow",
    ),
    (
        "STREAMCORE_FFMPEG_ACCESS_OUTPUT_BLOCK",
        "ffmpeg.access.output.block",
    ),
    ("STREAMCORE_LOG", "log.level"),
    ("STREAMCORE_LOG_FORMAT", "log.format"),
    ("STREAMCORE_LOG_MAX_LINES", "log.max_lines"),
    ("STREAMCORE_DEMO", "demo.enabled"),
    ("STREAMCORE_AUTH_ENABLE", "auth.enable"),
    ("STREAMCORE_HOST_NAME", "host.name"),
    ("STREAMCORE_HOST_AUTO", "host.auto"),
    ("STREAMCORE_SESSIONS_ENABLE", "sessions.enable"),
    (
        "STREAMCORE_SESSIONS_IP_IGNORELIST",
        "sessions.ip_ignorelist",
    ),
    (
        "STREAMCORE_SESSIONS_SESSION_TIMEOUT_SEC",
        "sessions.session_timeout_sec",
    ),
    ("STREAMCORE_SESSIONS_MAX_SESSIONS", "sessions.max_sessions"),
    (
        "STREAMCORE_SESSIONS_MAX_BITRATE_MBIT",
        "sessions.max_bitrate_mbit",
    ),
    ("STREAMCORE_METRICS_ENABLE", "metrics.enable"),
    ("STREAMCORE_METRICS_RANGE_SEC", "metrics.range_sec"),
    ("STREAMCORE_METRICS_INTERVAL_SEC", "metrics.interval_sec"),
    ("STREAMCORE_WEBRTC_ENABLED", "webrtc.enabled"),
    ("STREAMCORE_WEBRTC_RTP_PORT_MIN", "webrtc.rtp_port_min"),
    ("STREAMCORE_WEBRTC_ENCODER", "webrtc.encoder"),
    ("STREAMCORE_WEBRTC_PIPELINES_DIR", "webrtc.pipelines_dir"),
    (
        "STREAMCORE_WEBRTC_VIEWER_QUEUE_BUFFERS",
        "webrtc.viewer_queue_buffers",
    ),
    ("STREAMCORE_WEBRTC_VIEWER_POOL", "webrtc.viewer_pool"),
    ("STREAMCORE_WEBRTC_RTP_PORT_MAX", "webrtc.rtp_port_max"),
    (
        "STREAMCORE_WEBRTC_JITTER_LATENCY_MS",
        "webrtc.jitter_latency_ms",
    ),
    (
        "STREAMCORE_WEBRTC_MAX_VIEWERS_PER_STREAM",
        "webrtc.max_viewers_per_stream",
    ),
    (
        "STREAMCORE_WEBRTC_MAX_VIEWERS_TOTAL",
        "webrtc.max_viewers_total",
    ),
    (
        "STREAMCORE_WEBRTC_CONNECT_TIMEOUT_SECONDS",
        "webrtc.connect_timeout_seconds",
    ),
    (
        "STREAMCORE_WEBRTC_GATHER_TIMEOUT_MS",
        "webrtc.gather_timeout_ms",
    ),
    (
        "STREAMCORE_WEBRTC_CONSENT_TIMEOUT_SECONDS",
        "webrtc.consent_timeout_seconds",
    ),
    ("STREAMCORE_WEBRTC_ICE_PORT_MIN", "webrtc.ice_port_min"),
    ("STREAMCORE_WEBRTC_ICE_PORT_MAX", "webrtc.ice_port_max"),
    ("STREAMCORE_WEBRTC_PUBLIC_IP", "webrtc.public_ip"),
    ("STREAMCORE_WEBRTC_INTERFACES", "webrtc.interfaces"),
    ("STREAMCORE_WEBRTC_STUN_SERVER", "webrtc.stun_server"),
    ("STREAMCORE_WEBRTC_TURN_SERVERS", "webrtc.turn_servers"),
    ("STREAMCORE_WEBRTC_TURN_SECRET", "webrtc.turn_secret"),
    ("STREAMCORE_WEBRTC_TURN_USERNAME", "webrtc.turn_username"),
    ("STREAMCORE_WEBRTC_TURN_PASSWORD", "webrtc.turn_password"),
    (
        "STREAMCORE_WEBRTC_TURN_CREDENTIAL_SECONDS",
        "webrtc.turn_credential_seconds",
    ),
    (
        "STREAMCORE_WEBRTC_VIEWER_TOKEN_SECONDS",
        "webrtc.viewer_token_seconds",
    ),
    (
        "STREAMCORE_WEBRTC_WHIP_KEY_FRAME_INTERVAL_MS",
        "webrtc.whip_key_frame_interval_ms",
    ),
    (
        "STREAMCORE_WEBRTC_WHIP_READ_TIMEOUT_SECONDS",
        "webrtc.whip_read_timeout_seconds",
    ),
    (
        "STREAMCORE_WEBRTC_PUBLISH_TOKEN_SECONDS",
        "webrtc.publish_token_seconds",
    ),
    ("STREAMCORE_RTMP_ENABLE", "rtmp.enable"),
    ("STREAMCORE_RTMP_ADDRESS", "rtmp.address"),
    ("STREAMCORE_RTMP_APP", "rtmp.app"),
    ("STREAMCORE_RTMP_TOKEN", "rtmp.token"),
    ("STREAMCORE_RTMP_ENABLE_TLS", "rtmp.enable_tls"),
    ("STREAMCORE_RTMP_ADDRESS_TLS", "rtmp.address_tls"),
    ("STREAMCORE_TLS_ENABLE", "tls.enable"),
    ("STREAMCORE_TLS_AUTO", "tls.auto"),
    ("STREAMCORE_TLS_CERT_FILE", "tls.cert_file"),
    ("STREAMCORE_TLS_KEY_FILE", "tls.key_file"),
    ("STREAMCORE_SRT_ENABLE", "srt.enable"),
    ("STREAMCORE_SRT_ADDRESS", "srt.address"),
    ("STREAMCORE_SRT_PASSPHRASE", "srt.passphrase"),
    ("STREAMCORE_SRT_TOKEN", "srt.token"),
];

impl Config {
    /// Reads `path` (TOML, or JSON when it ends in `.json`) or the defaults when `path` is
    /// `None`, then the settings stored through `PUT /api/v3/config` in the data directory, then
    /// applies the variables of [`ENV_OVERRIDES`] taken from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Config> {
        let file = Self::load_with(path, &env, None)?;
        let stored = crate::coreconfig::stored::read(&file.storage.data_dir)?;
        Self::load_with(path, &env, stored.as_ref())
    }

    /// [`Config::load`] with the stored datarhei document given (`None`: none).
    pub(crate) fn load_with(
        path: Option<&Path>,
        env: &impl Fn(&str) -> Option<String>,
        stored: Option<&serde_json::Value>,
    ) -> anyhow::Result<Config> {
        let mut tree = match path {
            Some(path) => read_tree(path)?,
            None => serde_json::Value::Object(Default::default()),
        };
        // Checked against the schema before the overrides so a typo in the file is reported as such.
        serde_json::from_value::<Config>(tree.clone())
            .with_context(|| format!("invalid configuration file {}", display(path)))?;
        let api_paths = api_set_paths(&tree, stored, env);
        if let Some(doc) = stored {
            crate::coreconfig::keys::overlay(&mut tree, doc);
            serde_json::from_value::<Config>(tree.clone())
                .context("invalid value in the configuration stored through the API")?;
        }
        for (var, key) in ENV_OVERRIDES {
            if let Some(value) = env(var) {
                set_key(&mut tree, key, &value);
            }
        }
        // Credentials from the environment mean auth on, whatever a stored `api.auth.enable`
        // says, unless the environment also says otherwise.
        let env_credentials = ["STREAMCORE_AUTH_USERNAME", "STREAMCORE_AUTH_PASSWORD"]
            .iter()
            .any(|v| env(v).is_some());
        if env_credentials && env("STREAMCORE_AUTH_ENABLE").is_none() {
            if let Some(auth) = tree.get_mut("auth").and_then(|a| a.as_object_mut()) {
                auth.remove("enable");
            }
        }
        let mut config: Config = serde_json::from_value(tree)
            .context("invalid value in a STREAMCORE_* environment variable")?;
        config.validate()?;
        for key in api_paths {
            let data_dir = config.storage.data_dir.clone();
            let path = match key {
                "tls.cert_file" => &mut config.tls.cert_file,
                _ => &mut config.tls.key_file,
            };
            *path = crate::tls::confine(key, path, &data_dir)?;
        }
        crate::tls::check(&config)?;
        Ok(config)
    }

    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        self.http
            .address
            .parse::<std::net::SocketAddr>()
            .with_context(|| format!("http.address {:?} is not host:port", self.http.address))?;
        if self.ffmpeg.binary.trim().is_empty() {
            anyhow::bail!("ffmpeg.binary must not be empty");
        }
        if !self.webrtc.public_ip.is_empty() {
            self.webrtc
                .public_ip
                .parse::<std::net::IpAddr>()
                .with_context(|| {
                    format!(
                        "webrtc.public_ip {:?} is not an IP address",
                        self.webrtc.public_ip
                    )
                })?;
        }
        for ip in &self.webrtc.interfaces {
            ip.parse::<std::net::IpAddr>()
                .with_context(|| format!("webrtc.interfaces: {ip:?} is not an IP address"))?;
        }
        if self.webrtc.rtp_port_min >= self.webrtc.rtp_port_max {
            anyhow::bail!("webrtc.rtp_port_min must be below webrtc.rtp_port_max");
        }
        if self.webrtc.ice_port_min > self.webrtc.ice_port_max {
            anyhow::bail!("webrtc.ice_port_min must not exceed webrtc.ice_port_max");
        }
        let access = &self.ffmpeg.access;
        for (key, list) in [
            ("input.allow", &access.input.allow),
            ("input.block", &access.input.block),
            ("output.allow", &access.output.allow),
            ("output.block", &access.output.block),
        ] {
            for pattern in list {
                regex::Regex::new(pattern).with_context(|| {
                    format!("ffmpeg.access.{key}: {pattern:?} is not a regular expression")
                })?;
            }
        }
        if self.http.max_body_bytes == 0 {
            anyhow::bail!("http.max_body_bytes must be positive");
        }
        if self.http.max_connections == 0
            || self.http.header_read_timeout_ms == 0
            || self.http.idle_timeout_seconds == 0
            || self.http.body_read_timeout_seconds == 0
        {
            anyhow::bail!("http.max_connections, http.header_read_timeout_ms, http.body_read_timeout_seconds and http.idle_timeout_seconds must be positive");
        }
        if self.storage.max_file_mbytes == 0 {
            anyhow::bail!("storage.max_file_mbytes must be positive");
        }
        let memory = &self.storage.memory;
        if memory.auth.enable && memory.auth.username.is_empty() {
            anyhow::bail!("storage.memory.auth.username must not be empty while storage.memory.auth.enable is on");
        }
        if self.rtmp.enable {
            listen_address(&self.rtmp.address).context("rtmp.address")?;
            if !self.rtmp.app.starts_with('/') {
                anyhow::bail!("rtmp.app must start with '/'");
            }
        }
        self.validate_tls()?;
        if self.srt.enable {
            listen_address(&self.srt.address).context("srt.address")?;
            // libsrt's rule: 10 to 79 characters, or none.
            let len = self.srt.passphrase.chars().count();
            if len != 0 && !(10..=79).contains(&len) {
                anyhow::bail!("srt.passphrase must be 10 to 79 characters long");
            }
        }
        if self.auth.login_max_failures == 0 {
            anyhow::bail!("auth.login_max_failures must be positive");
        }
        Ok(())
    }
}

/// The file-path keys whose value comes from the document stored through the API: neither the
/// configuration file (`file_tree`) nor the environment gives it.
fn api_set_paths(
    file_tree: &serde_json::Value,
    stored: Option<&serde_json::Value>,
    env: &impl Fn(&str) -> Option<String>,
) -> Vec<&'static str> {
    let Some(doc) = stored else {
        return Vec::new();
    };
    let get = crate::coreconfig::keys::get;
    crate::tls::PATH_KEYS
        .into_iter()
        .filter(|key| {
            let from_env = ENV_OVERRIDES
                .iter()
                .any(|(var, k)| k == key && env(var).is_some());
            let value = get(doc, key).filter(|v| !v.is_null());
            !from_env && value.is_some() && value != get(file_tree, key)
        })
        .collect()
}

impl Config {
    /// Core's rules for `tls` and RTMPS (config/config.go), and streamcore's refusal of ACME.
    fn validate_tls(&self) -> anyhow::Result<()> {
        let tls = &self.tls;
        if tls.enable && tls.auto {
            anyhow::bail!("tls.auto: streamcore cannot obtain Let's Encrypt (ACME) certificates; turn it off and give the certificate and key files");
        }
        if tls.enable && (tls.cert_file.is_empty() || tls.key_file.is_empty()) {
            anyhow::bail!("tls.cert_file and tls.key_file must both be set while tls.enable is on");
        }
        if self.rtmp.enable_tls {
            if !self.rtmp.enable {
                anyhow::bail!("rtmp.enable_tls needs rtmp.enable: RTMPS is a second listener of the RTMP server");
            }
            if !tls.enable {
                anyhow::bail!("rtmp.enable_tls needs tls.enable and a certificate");
            }
            listen_address(&self.rtmp.address_tls).context("rtmp.address_tls")?;
        }
        Ok(())
    }
}

fn display(path: Option<&Path>) -> String {
    path.map(|p| p.display().to_string()).unwrap_or_default()
}

fn read_tree(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
    } else {
        let value: toml::Value = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        Ok(serde_json::to_value(value)?)
    }
}

/// Sets a dotted key (any depth) from an environment string, typed by the shape the schema expects.
fn set_key(tree: &mut serde_json::Value, key: &str, raw: &str) {
    set_value(tree, key, typed_value(key, raw));
}

/// Sets a dotted key (any depth) to `value`, creating the objects on the way.
pub(crate) fn set_value(tree: &mut serde_json::Value, key: &str, value: serde_json::Value) {
    let mut node = tree;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        if !node.is_object() {
            *node = serde_json::Value::Object(Default::default());
        }
        let object = node.as_object_mut().expect("object");
        if parts.peek().is_none() {
            object.insert(part.to_string(), value);
            return;
        }
        node = object
            .entry(part)
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
    }
}

fn typed_value(key: &str, raw: &str) -> serde_json::Value {
    match key {
        "http.cors_origins"
        | "webrtc.interfaces"
        | "webrtc.turn_servers"
        | "ffmpeg.read_paths"
        | "host.name"
        | "sessions.ip_ignorelist" => serde_json::Value::Array(
            raw.split(',')
                .map(|s| serde_json::Value::String(s.trim().to_string()))
                .filter(|v| v.as_str() != Some(""))
                .collect(),
        ),
        // Regular expressions may contain commas, so these lists are split on white space (as
        // Core's CORE_FFMPEG_ACCESS_* variables are).
        k if k.starts_with("ffmpeg.access.") => serde_json::Value::Array(
            raw.split_whitespace()
                .map(|s| serde_json::Value::String(s.to_string()))
                .collect(),
        ),
        // Tokens, passphrases and app paths are text even when they are all digits.
        "rtmp.token" | "rtmp.app" | "rtmp.address" | "rtmp.address_tls" | "srt.token"
        | "srt.passphrase" | "srt.address" | "tls.cert_file" | "tls.key_file" => {
            serde_json::Value::String(raw.to_string())
        }
        "demo.enabled"
        | "webrtc.enabled"
        | "ffmpeg.sandbox"
        | "storage.memory.auth.enable"
        | "storage.memory.purge"
        | "auth.enable"
        | "host.auto"
        | "sessions.enable"
        | "metrics.enable"
        | "rtmp.enable"
        | "rtmp.enable_tls"
        | "tls.enable"
        | "tls.auto"
        | "srt.enable" => match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => serde_json::Value::Bool(true),
            "0" | "false" | "no" | "off" => serde_json::Value::Bool(false),
            _ => serde_json::Value::String(raw.to_string()),
        },
        _ => match raw.trim().parse::<u64>() {
            Ok(n)
                if !key.ends_with("password")
                    && !key.ends_with("secret")
                    && !key.ends_with("username")
                    && !key.ends_with("user")
                    && !key.ends_with("public_ip")
                    && !key.ends_with("encoder")
                    && !key.ends_with("pipelines_dir") =>
            {
                serde_json::Value::from(n)
            }
            _ => serde_json::Value::String(raw.to_string()),
        },
    }
}

/// Returns the configured JWT secret, or reads (creating once) `<data_dir>/jwt_secret` so that
/// tokens survive restarts.
pub fn ensure_jwt_secret(config: &Config) -> anyhow::Result<String> {
    if !config.auth.jwt_secret.is_empty() {
        return Ok(config.auth.jwt_secret.clone());
    }
    let path = config.storage.data_dir.join("jwt_secret");
    if let Ok(secret) = std::fs::read_to_string(&path) {
        let secret = secret.trim().to_string();
        if !secret.is_empty() {
            return Ok(secret);
        }
    }
    use rand::distributions::{Alphanumeric, DistString};
    let secret = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
    write_private(&path, secret.as_bytes())?;
    Ok(secret)
}

/// Replaces `path` with `bytes` at once (a `.tmp` sibling renamed over it), readable by the
/// owner only: secrets live in these files.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_start_bare() {
        let config = Config::load(None, |_| None).unwrap();
        assert_eq!(config.http.address, "0.0.0.0:8080");
        assert!(!config.auth.enabled());
        assert_eq!(config.ffmpeg.log_max_lines, 50);
    }

    /// Core's defaults and `:port` addresses; tokens of digits stay text; libsrt's passphrase rule.
    #[test]
    fn rtmp_and_srt_keys() {
        let config = Config::load(None, |_| None).unwrap();
        assert_eq!(
            (config.rtmp.address.as_str(), config.rtmp.app.as_str()),
            (":1935", "/")
        );
        assert_eq!(config.srt.address, ":6000");
        assert_eq!(listen_address(":1935").unwrap().to_string(), "0.0.0.0:1935");
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let config = Config::load(
            None,
            env(&[
                ("STREAMCORE_RTMP_ENABLE", "true"),
                ("STREAMCORE_RTMP_TOKEN", "12345"),
                ("STREAMCORE_SRT_TOKEN", "678"),
            ]),
        )
        .unwrap();
        assert!(config.rtmp.enable);
        assert_eq!(
            (config.rtmp.token.as_str(), config.srt.token.as_str()),
            ("12345", "678")
        );
        let short = env(&[
            ("STREAMCORE_SRT_ENABLE", "1"),
            ("STREAMCORE_SRT_PASSPHRASE", "short"),
        ]);
        assert!(Config::load(None, short).is_err());
        let app = env(&[
            ("STREAMCORE_RTMP_ENABLE", "1"),
            ("STREAMCORE_RTMP_APP", "live"),
        ]);
        assert!(Config::load(None, app).is_err());
    }

    #[test]
    fn certificate_paths_from_the_api_stay_in_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let path = dir.path().join("c.toml");
        let toml = format!(
            "[storage]\ndata_dir = {:?}\n[tls]\ncert_file = \"/etc/ssl/x.pem\"\n",
            data.to_str().unwrap()
        );
        std::fs::write(&path, toml).unwrap();
        let api = serde_json::json!({"tls": {"cert_file": "/etc/passwd"}});
        let e = Config::load_with(Some(&path), &|_| None, Some(&api)).unwrap_err();
        assert!(
            format!("{e:#}").contains("inside the data directory"),
            "{e:#}"
        );
        // The file's own value, carried in a stored document, and the environment's stay free.
        let same = serde_json::json!({"tls": {"cert_file": "/etc/ssl/x.pem"}});
        assert!(Config::load_with(Some(&path), &|_| None, Some(&same)).is_ok());
        let env = |k: &str| (k == "STREAMCORE_TLS_CERT_FILE").then(|| "/etc/passwd".to_string());
        assert!(Config::load_with(Some(&path), &env, Some(&api)).is_ok());
    }

    #[test]
    fn env_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[http]\naddress = \"127.0.0.1:1\"\n[auth]\nusername = \"a\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&path), |k| match k {
            "STREAMCORE_HTTP_ADDRESS" => Some("127.0.0.1:2".into()),
            "STREAMCORE_AUTH_PASSWORD" => Some("1234".into()),
            "STREAMCORE_DEMO" => Some("false".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(config.http.address, "127.0.0.1:2");
        assert_eq!(config.auth.password, "1234");
        assert!(config.auth.enabled());
        assert!(!config.demo.enabled);
    }

    #[test]
    fn unknown_key_and_bad_address_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, r#"{"http":{"adress":"x"}}"#).unwrap();
        assert!(Config::load(Some(&path), |_| None).is_err());
        assert!(Config::load(None, |k| (k == "STREAMCORE_HTTP_ADDRESS")
            .then(|| "nope".into()))
        .is_err());
    }

    #[test]
    fn stored_document_sits_between_file_and_environment() {
        let doc = serde_json::json!({"address": ":9000", "api": {"auth": {"enable": false}},
            "ffmpeg": {"binary": "/bin/sh", "log": {"max_lines": 9}}});
        let env = |k: &str| match k {
            "STREAMCORE_AUTH_USERNAME" => Some("a".to_string()),
            "STREAMCORE_AUTH_PASSWORD" => Some("b".to_string()),
            "STREAMCORE_FFMPEG_LOG_MAX_LINES" => Some("4".to_string()),
            _ => None,
        };
        let config = Config::load_with(None, &env, Some(&doc)).unwrap();
        assert_eq!(config.http.address, "0.0.0.0:9000");
        assert_eq!(config.ffmpeg.log_max_lines, 4, "the environment wins");
        assert_eq!(config.ffmpeg.binary, "ffmpeg", "read-only through the API");
        assert!(
            config.auth.enabled(),
            "credentials from the environment turn auth on"
        );
        let config = Config::load_with(None, &|_: &str| None, Some(&doc)).unwrap();
        assert!(!config.auth.enabled());
    }

    #[test]
    fn jwt_secret_is_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.storage.data_dir = dir.path().to_path_buf();
        let first = ensure_jwt_secret(&config).unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(ensure_jwt_secret(&config).unwrap(), first);
    }
}

//! The built-in RTMP and SRT servers (datarhei Core's `rtmp` and `srt` sections): publishers push
//! to a name, processes and players read it; `{rtmp}` and `{srt}` in process addresses point at
//! them. docs/ingest-servers.md says which libraries do the protocols and what they lack.

mod hub;
mod rtmp;
mod sessions;
mod srt;

use std::sync::Arc;

use crate::config::{Config, RtmpConfig, SrtConfig};
use crate::metrics::Metrics;
use crate::process::argv::ServerTemplates;

pub use sessions::Session;

/// A server's background task (accept loop or listener supervisor). It owns the listener and the
/// connections, so stopping it frees the port and ends every connection (a reload).
#[derive(Default)]
struct ServerTask(std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>);

impl ServerTask {
    fn set(&self, task: tokio::task::JoinHandle<()>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Aborts the task and waits until it is gone (its sockets closed).
    async fn stop(&self) {
        let task = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }
}

/// The servers that are on, and their sessions.
pub struct Ingest {
    pub rtmp: Option<Arc<rtmp::RtmpServer>>,
    pub srt: Option<Arc<srt::SrtServer>>,
    sessions: Arc<sessions::Sessions>,
}

impl Ingest {
    /// Binds the servers the configuration enables.
    pub async fn start(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Ingest> {
        let sessions = sessions::Sessions::new(metrics);
        let rtmp = match config.rtmp.enable {
            true => {
                // The configuration's load checked the certificate; it is read again here.
                let tls = match config.rtmp.enable_tls {
                    true => Some(crate::tls::server_config(&config.tls)?),
                    false => None,
                };
                Some(rtmp::RtmpServer::start(&config.rtmp, tls, sessions.clone()).await?)
            }
            false => None,
        };
        let srt = match config.srt.enable {
            true => Some(srt::SrtServer::start(&config.srt, sessions.clone()).await?),
            false => None,
        };
        Ok(Ingest {
            rtmp,
            srt,
            sessions,
        })
    }

    /// Stops both servers and frees their ports (before a reload binds them again).
    pub async fn stop(&self) {
        if let Some(rtmp) = &self.rtmp {
            rtmp.stop().await;
        }
        if let Some(srt) = &self.srt {
            srt.stop().await;
        }
    }

    /// The open RTMP and SRT connections (collectors `rtmp` and `srt` of the session API).
    pub fn sessions(&self) -> Vec<Session> {
        self.sessions.list()
    }

    /// Bytes received and sent by one session.
    pub fn session_bytes(&self, id: u64) -> (u64, u64) {
        self.sessions.bytes(id)
    }
}

/// Core's `{rtmp}` and `{srt}` template functions (app/api/api.go): the configured host or
/// `localhost`, the app unless it is `/`, the token and passphrase appended.
pub fn templates(rtmp: &RtmpConfig, srt: &SrtConfig) -> ServerTemplates {
    let host_port = |address: &str| {
        let (host, port) = address.rsplit_once(':').unwrap_or((address, ""));
        let host = if host.is_empty() { "localhost" } else { host };
        format!("{host}:{port}")
    };
    let rtmp_template = rtmp.enable.then(|| {
        let mut t = format!("rtmp://{}", host_port(&rtmp.address));
        if rtmp.app != "/" {
            t.push_str(&rtmp.app);
        }
        t.push_str("/{name}");
        if !rtmp.token.is_empty() {
            t.push_str(&format!("?token={}", rtmp.token));
        }
        t
    });
    let srt_template = |mode: &str| {
        srt.enable.then(|| {
            let mut t = format!(
                "srt://{}?mode=caller&transtype=live&latency={{latency}}&streamid={{name}},mode:{mode}",
                host_port(&srt.address)
            );
            if !srt.token.is_empty() {
                t.push_str(&format!(",token:{}", srt.token));
            }
            if !srt.passphrase.is_empty() {
                t.push_str(&format!("&passphrase={}", srt.passphrase));
            }
            t
        })
    };
    ServerTemplates {
        rtmp: rtmp_template,
        srt_input: srt_template("request"),
        srt_output: srt_template("publish"),
    }
}

//! The `streamcore` command.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use streamcore::{Config, ConfigSource, LogFormat};

/// streamcore: FFmpeg processes under a datarhei-Core-compatible REST API, served over WebRTC.
///
/// Configuration comes from an optional TOML or JSON file (keys in docs/configuration.md),
/// overridden by environment variables: STREAMCORE_HTTP_ADDRESS (default 0.0.0.0:8080),
/// STREAMCORE_DATA_DIR (default ./data: SQLite database, JWT secret, public files),
/// STREAMCORE_AUTH_USERNAME and STREAMCORE_AUTH_PASSWORD (auth is on when both are set),
/// STREAMCORE_JWT_SECRET (generated and kept in the data dir when unset),
/// STREAMCORE_FFMPEG_BINARY (default ffmpeg), STREAMCORE_LOG (e.g. info, streamcore=debug),
/// STREAMCORE_LOG_FORMAT (text|json), STREAMCORE_DEMO (create the demo process on first start).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Configuration file (TOML, or JSON when it ends in .json).
    #[arg(long, short, env = "STREAMCORE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the server (the default).
    Serve,
    /// Print the effective configuration as TOML and exit.
    Config,
}

fn main() -> std::process::ExitCode {
    // The server's own child for the encoder test: no configuration, no logging set-up.
    if std::env::args().nth(1).as_deref() == Some(streamcore::encoder_child::SUBCOMMAND) {
        return streamcore::encoder_child::child_main();
    }
    let cli = Cli::parse();
    let source = ConfigSource::from_process(cli.config.clone());
    let config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("streamcore: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(Command::Config) = cli.command {
        match toml::to_string_pretty(&config) {
            Ok(text) => {
                print!("{text}");
                return std::process::ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("streamcore: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    init_tracing(&config);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(streamcore::run(config, source)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("streamcore: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(config: &Config) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // The ring behind GET /api/v3/log sees what the filter lets through; a configuration
    // reload may change the filter (log.level).
    match config.log.format {
        LogFormat::Json => {
            let builder = builder.json().with_filter_reloading();
            reload_level(builder.reload_handle());
            builder.finish().with(streamcore::log_ring_layer()).init()
        }
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            reload_level(builder.reload_handle());
            builder.finish().with(streamcore::log_ring_layer()).init()
        }
    }
}

fn reload_level<S: 'static>(
    handle: tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, S>,
) where
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, S>: Send + Sync,
{
    streamcore::on_level_change(move |level| {
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_new(level) {
            let _ = handle.reload(filter);
        }
    });
}

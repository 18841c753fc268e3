//! The datarhei Core v3 view of the configuration: `GET/PUT /api/v3/config` and its reload.
//!
//! streamcore's own settings ([`crate::config::Config`]) stay the truth. The datarhei document is
//! rendered from them ([`document::render`]): a key that means the same thing appears under its
//! Core name ([`keys::TABLE`]), every other streamcore key under its own path, and Core-only keys
//! (tls, rtmp, srt, storage.memory, …) are carried from the stored document with Core's defaults.
//! A PUT stores the merged document in the data directory ([`stored`]); the next load (start or
//! reload) lays it between the configuration file and the environment, so the environment keeps
//! the last word (and is what `overrides` lists).

pub mod document;
pub mod keys;
pub mod stored;

use std::path::PathBuf;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::config::{Config, ENV_OVERRIDES};

/// Where the configuration comes from, kept to load it again on reload or to check a PUT.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The configuration file, if any.
    pub path: Option<PathBuf>,
    /// The `STREAMCORE_*` variables of [`ENV_OVERRIDES`] that were set at start.
    pub env: Vec<(String, String)>,
}

impl ConfigSource {
    /// The file named on the command line and this process's environment.
    pub fn from_process(path: Option<PathBuf>) -> ConfigSource {
        let env = ENV_OVERRIDES
            .iter()
            .filter_map(|(var, _)| Some((var.to_string(), std::env::var(var).ok()?)))
            .collect();
        ConfigSource { path, env }
    }

    fn var(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// File < stored document < environment.
    pub fn load(&self) -> anyhow::Result<Config> {
        Config::load(self.path.as_deref(), |k| self.var(k))
    }

    /// The configuration `doc` would give, without storing it.
    pub fn load_with(&self, doc: &Value) -> anyhow::Result<Config> {
        Config::load_with(self.path.as_deref(), &|k| self.var(k), Some(doc))
    }

    /// Core names of the settings the environment decides.
    pub fn overrides(&self) -> Vec<String> {
        let mut names: Vec<String> = ENV_OVERRIDES
            .iter()
            .filter(|(var, _)| self.var(var).is_some())
            .map(|(_, key)| keys::core_name(key))
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// The configuration API's state for one run of the server.
pub struct ConfigState {
    /// Where the configuration came from.
    pub source: ConfigSource,
    /// The document stored through the API (an empty object when none).
    pub stored: Mutex<stored::Stored>,
    /// When this run loaded the configuration.
    pub loaded_at: DateTime<Utc>,
    /// When the stored document last changed (the load time until a PUT).
    pub updated_at: Mutex<DateTime<Utc>>,
    /// Told to restart the services with the stored configuration.
    pub reload: tokio::sync::Notify,
}

impl ConfigState {
    /// Reads the stored document of `config`'s data directory.
    pub fn new(source: ConfigSource, config: &Config) -> anyhow::Result<ConfigState> {
        let now = Utc::now();
        let stored = stored::Stored::read_or_new(&config.storage.data_dir, now)?;
        Ok(ConfigState {
            source,
            stored: Mutex::new(stored),
            loaded_at: now,
            updated_at: Mutex::new(now),
            reload: tokio::sync::Notify::new(),
        })
    }
}

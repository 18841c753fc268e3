//! streamcore: FFmpeg processes under a datarhei-Core-compatible REST API.
//!
//! The binary (`src/main.rs`) is the only user of this library: it loads the [`Config`] and calls
//! [`run`]. Every module is private to the crate, so the compiler reports what nothing uses; the
//! fuzz targets reach the parsers they drive through [`fuzzing`].
//!
//! Imports only point down: HTTP ([`api`], [`serve`], [`auth`]) → processes ([`process`]) and the
//! media engine ([`media`]) → the store ([`store`]) → plain data ([`model`]), with [`config`] read
//! at start-up by all of them. Nothing below the API reaches back up.

mod api;
mod auth;
mod config;
mod coreconfig;
mod demo;
mod fs;
mod history;
mod ingest;
mod logring;
mod media;
mod metrics;
mod model;
mod process;
mod serve;
mod server;
mod sessions;
mod skills;
mod store;
mod tls;
mod webrtc;

pub use config::{Config, LogFormat};
pub use coreconfig::ConfigSource;
pub use logring::{layer as log_ring_layer, on_level_change};
pub use server::{run, Server};

/// The hidden `streamcore select-encoder` command: the server runs the encoder test in a child
/// process of itself (see `media::transcode::isolated`); not an API.
#[doc(hidden)]
pub mod encoder_child {
    pub use crate::media::transcode::isolated::{child_main, SUBCOMMAND};
}

/// The parsers of what clients send the signalling endpoints, for the fuzz targets in `fuzz/`
/// (see docs/fuzzing.md); not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::media::ingest::formats::accept_offer;
    pub use crate::media::sdp::{offer_text, parse_offer, parse_source, select_format};
    pub use crate::webrtc::sdpfrag;
}

//! FFmpeg processes: the registry of definitions (`crate::model::process`), their supervision,
//! progress and reports.

pub mod access;
pub mod argv;
pub mod discovery;
pub mod id;
pub mod placeholder;
pub mod probe;
pub mod progress;
pub mod registry;
pub mod report;
pub mod runner;
pub mod sampler;
pub mod sandbox;
pub mod written;

pub use registry::{ProcessCommand, Registry, RegistryError};

//! FFmpeg processes: the registry of definitions (`crate::model::process`), their supervision,
//! progress and reports.

pub mod access;
pub mod argv;
pub mod id;
pub mod placeholder;
pub mod probe;
pub mod progress;
pub mod registry;
pub mod report;
pub mod runner;
pub mod sampler;
pub mod sandbox;

pub use registry::{ProcessCommand, Registry, RegistryError};

// The definition's old path, kept only for api/whep.rs, which a parallel branch rewrites; once that
// lands, whep.rs imports crate::model::process and this line goes.
pub use crate::model::process as config;

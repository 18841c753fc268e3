//! Plain data types every layer shares: what the configuration file and the process API read and
//! write, their defaults and their validation. Serde and the OpenAPI schema only; no GStreamer, no
//! I/O, nothing from the layers above, so anything may import it.

pub mod process;
pub mod transcode;

//! streamcore: FFmpeg processes under a datarhei-Core-compatible REST API.
//!
//! Requests flow one way: HTTP ([`api`]) → process registry ([`process`]) → store ([`store`]) and
//! supervisors; nothing below the API reaches back up.

pub mod api;
pub mod auth;
pub mod config;
pub mod media;
pub mod metrics;
pub mod model;
pub mod process;
pub mod serve;
pub mod skills;
pub mod store;
pub mod webrtc;

mod demo;
mod server;

pub use server::{run, Server};

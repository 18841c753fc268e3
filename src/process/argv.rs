//! A process definition's FFmpeg command line: validation, placeholders, `#id:output=` references,
//! the WHIP input's options, the access rules and the WebRTC legs.
//!
//! Pure: everything the registry knows (the disk directory, the rules, a WHIP input's SDP file,
//! other processes' outputs) comes in as arguments, so the rules of the command line are tested
//! here without FFmpeg, GStreamer or a registry.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::access::Access;
use super::placeholder;
use super::progress::IoRef;
use crate::model::process::ProcessConfig;

mod codecs;
mod legs;
pub use codecs::{waits_for_publisher, InputCodecs};
pub use legs::{leg_format, webrtc_legs, LegEncoding, LegFormat};

/// The input address that makes an input a WHIP input.
pub const WHIP_ADDRESS: &str = "{whip}";

/// Why an `#<processid>:output=<outputid>` reference does not resolve, as the lookup found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceError {
    /// No process with that id.
    UnknownProcess,
    /// The process has no output with that id.
    UnknownOutput,
    /// The process exists but its definition is invalid, so its outputs have no address.
    Invalid,
}

/// A WHIP input as FFmpeg reads it.
#[derive(Debug, Clone, Copy)]
pub struct WhipInput<'a> {
    /// The SDP file that describes the RTP the ingest forwards.
    pub sdp_path: &'a Path,
    /// `webrtc.whip_read_timeout_seconds`; `None` waits forever.
    pub read_timeout: Option<Duration>,
}

/// The `{rtmp}` and `{srt}` templates of the built-in servers (`None` while a server is off),
/// per section as Core's template functions give them.
#[derive(Debug, Clone, Default)]
pub struct ServerTemplates {
    /// `{rtmp}` in inputs and outputs.
    pub rtmp: Option<String>,
    /// `{srt}` in an input (`mode:request`).
    pub srt_input: Option<String>,
    /// `{srt}` in an output (`mode:publish`).
    pub srt_output: Option<String>,
}

/// `{srt}`'s default parameter: FFmpeg takes the latency in microseconds.
const SRT_DEFAULTS: [(&str, &str); 1] = [("latency", "20000")];

/// What resolving a definition needs besides the definition.
pub struct Context<'a> {
    /// The directory `{diskfs}` and `{fs:disk}` stand for.
    pub disk_dir: &'a Path,
    /// The URL `{memfs}` and `{fs:mem}` stand for.
    pub memfs_url: &'a str,
    /// What definitions may read and write.
    pub access: &'a Access,
    /// The id of the process this definition replaces, which it may not reference either.
    pub replacing: Option<&'a str>,
    /// The process's WHIP input, when it has its ports.
    pub whip: Option<WhipInput<'a>>,
    /// The resolved address of output `outputid` of process `processid`.
    pub output_address: &'a dyn Fn(&str, &str) -> Result<String, ReferenceError>,
    /// `{rtmp}` and `{srt}`.
    pub servers: &'a ServerTemplates,
}

/// A definition's command line and the addresses it reads and writes.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Everything after the binary name.
    pub argv: Vec<String>,
    /// Global options and inputs only, for a probe.
    pub probe_argv: Vec<String>,
    /// Inputs in FFmpeg's order, with resolved addresses.
    pub inputs: Vec<IoRef>,
    /// Outputs in FFmpeg's order, with resolved addresses.
    pub outputs: Vec<IoRef>,
}

/// Validates a definition and resolves placeholders and input references into an argv. The
/// error is the message of the API's 400 answer.
pub fn resolve(config: &ProcessConfig, context: &Context<'_>) -> Result<Resolved, String> {
    let id = config.id.trim();
    if id.is_empty() {
        return Err("an empty ID is not allowed".into());
    }
    super::id::check(id)?;
    if config.input.is_empty() || config.output.is_empty() {
        return Err("at least one input and one output need to be defined".into());
    }
    let access = context.access;
    let disk = context.disk_dir.to_string_lossy().into_owned();
    let global = [("diskfs", disk.as_str()), ("fs:disk", disk.as_str())];
    let mut argv: Vec<String> = config
        .options
        .iter()
        .map(|o| placeholder::replace(o, &global))
        .collect();
    access.check_options(&argv).map_err(|e| e.to_string())?;
    let mut probe_argv = argv.clone();
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    for (kind, list) in [("input", &config.input), ("output", &config.output)] {
        let mut seen = HashSet::new();
        for io in list {
            let base = [("processid", id), ("reference", config.reference.as_str())];
            let io_id = placeholder::replace(io.id.trim(), &base);
            if io_id.is_empty() {
                return Err(format!("an {kind} ID must not be empty"));
            }
            if !seen.insert(io_id.clone()) {
                return Err(format!("the {kind} ID '{io_id}' is already in use"));
            }
            let io_name = if kind == "input" {
                "inputid"
            } else {
                "outputid"
            };
            let values = [
                ("processid", id),
                ("reference", config.reference.as_str()),
                (io_name, io_id.as_str()),
                ("diskfs", disk.as_str()),
                ("fs:disk", disk.as_str()),
                ("memfs", context.memfs_url),
                ("fs:mem", context.memfs_url),
            ];
            let mut address = placeholder::replace(io.address.trim(), &values);
            // Addresses only, as in Core; `$processid`, `$reference` and `$inputid`/`$outputid`
            // may appear in the parameters.
            let vars = &values[..3];
            let servers = context.servers;
            let srt = if kind == "input" {
                &servers.srt_input
            } else {
                &servers.srt_output
            };
            address =
                placeholder::replace_template(&address, "rtmp", servers.rtmp.as_deref(), &[], vars);
            address =
                placeholder::replace_template(&address, "srt", srt.as_deref(), &SRT_DEFAULTS, vars);
            if address.is_empty() {
                return Err(format!("the address of {kind} '{io_id}' must not be empty"));
            }
            let mut options: Vec<String> = io
                .options
                .iter()
                .map(|o| placeholder::replace(o, &values))
                .collect();
            if kind == "input" {
                // References name another process's output, checked when that was stored.
                if !address.starts_with('#') && address != WHIP_ADDRESS {
                    access
                        .check_input(&address, &options)
                        .map_err(|e| e.to_string())?;
                }
                if let Some(reference) = address.strip_prefix('#') {
                    address = resolve_reference(id, reference, context)?;
                } else if address == WHIP_ADDRESS {
                    let whip = context.whip.ok_or("the WHIP input has no ports")?;
                    options.extend(whip_input_options(whip.read_timeout));
                    address = whip.sdp_path.to_string_lossy().into_owned();
                }
                argv.extend(options.iter().cloned());
                argv.extend(["-i".to_string(), address.clone()]);
                probe_argv.extend(options);
                probe_argv.extend(["-i".to_string(), address.clone()]);
                inputs.push(IoRef { id: io_id, address });
            } else {
                access
                    .check_output(&address, &options)
                    .map_err(|e| e.to_string())?;
                argv.extend(options);
                argv.push(address.clone());
                outputs.push(IoRef { id: io_id, address });
            }
        }
    }
    Ok(Resolved {
        argv,
        probe_argv,
        inputs,
        outputs,
    })
}

/// `#<processid>:output=<outputid>` → that process's resolved output address.
fn resolve_reference(own: &str, reference: &str, context: &Context<'_>) -> Result<String, String> {
    let (pid, oid) = reference
        .rsplit_once(":output=")
        .ok_or_else(|| format!("invalid input reference '#{reference}'"))?;
    if pid == own || Some(pid) == context.replacing {
        return Err("a process cannot reference itself".into());
    }
    (context.output_address)(pid, oid).map_err(|e| match e {
        ReferenceError::UnknownProcess => format!("unknown referenced process '{pid}'"),
        ReferenceError::UnknownOutput => format!("unknown output '{oid}' of process '{pid}'"),
        ReferenceError::Invalid => format!("process '{pid}' is invalid"),
    })
}

/// What FFmpeg needs to read a WHIP input's SDP file: the RTP it names comes over UDP, and
/// without packets for the read timeout FFmpeg ends (reconnect rules then apply).
fn whip_input_options(read_timeout: Option<Duration>) -> Vec<String> {
    let timeout = read_timeout.map_or(-1, |t| t.as_secs().max(1) as i64);
    [
        "-protocol_whitelist",
        "file,udp,rtp",
        "-listen_timeout",
        &timeout.to_string(),
    ]
    .map(str::to_string)
    .into()
}

#[cfg(test)]
mod tests;

//! WHEP signalling that is not HTTP: viewer tokens, the ICE servers announced to viewers, and
//! trickle-ICE fragments. The HTTP side lives in [`crate::api::whep`]; what touches webrtcbin
//! lives in [`crate::media::ice`] and [`crate::media::stats`].

pub mod ice_servers;
pub mod sdpfrag;
pub mod token;

//! WHEP signalling that is not HTTP: viewer tokens, the ICE servers announced to viewers,
//! trickle-ICE fragments and the limits on SDP text from clients. No pipelines: media and the API
//! both build on it. The HTTP side lives in [`crate::api::whep`]; what touches webrtcbin
//! lives in [`crate::media::ice`] and [`crate::media::stats`].

pub mod ice_servers;
pub mod sdp_limits;
pub mod sdpfrag;
pub mod token;

//! A trickle/ICE-restart PATCH body (`application/trickle-ice-sdpfrag`) through the parser the
//! handlers use, then what they read out of it. Any panic is a crash.

#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcore::fuzzing::sdpfrag;

fuzz_target!(|data: &[u8]| {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| gstreamer::init().expect("GStreamer initialises"));
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(fragment) = sdpfrag::parse(text) else {
        return;
    };
    let _ = fragment.is_restart("ufrag", "pwd");
    for candidate in fragment
        .session_candidates
        .iter()
        .chain(fragment.media.iter().flat_map(|m| m.candidates.iter()))
    {
        let _ = candidate.usable();
    }
});

//! The ICE servers announced to viewers in `Link: <...>; rel="ice-server"` headers (RFC 9725
//! §4.6, the same for WHEP).
//!
//! With `webrtc.turn_secret` set, TURN credentials follow the "TURN REST API" convention that
//! coturn's `use-auth-secret` implements: the username is `<unix expiry>:streamcore` and the
//! credential is `base64(HMAC-SHA1(secret, username))`, so the TURN server can check them without
//! talking to us, and a leaked credential dies on its own.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::config::WebRtcConfig;

/// The user part of TURN REST usernames.
pub const TURN_USER: &str = "streamcore";

/// Time-limited TURN credentials for `secret`, valid until `expiry` (unix seconds).
pub fn turn_rest_credentials(secret: &str, expiry: u64) -> (String, String) {
    let username = format!("{expiry}:{TURN_USER}");
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

/// The `Link` header values for the configured STUN and TURN servers, at time `now` (unix seconds).
pub fn links(config: &WebRtcConfig, now: u64) -> Vec<String> {
    let mut out = Vec::new();
    let stun = strip_scheme(config.stun_server.trim(), &["stun://", "stun:"]);
    if !stun.is_empty() {
        out.push(format!("<stun:{stun}>; rel=\"ice-server\""));
    }
    let credentials = if !config.turn_secret.is_empty() {
        Some(turn_rest_credentials(
            &config.turn_secret,
            now + config.turn_credential_seconds,
        ))
    } else if !config.turn_username.is_empty() {
        Some((config.turn_username.clone(), config.turn_password.clone()))
    } else {
        None
    };
    for server in &config.turn_servers {
        let host = strip_scheme(server.trim(), &["turn://", "turn:"]);
        if host.is_empty() {
            continue;
        }
        // The configured servers are UDP TURN servers (see `webrtc.turn_servers`).
        let mut link = format!("<turn:{host}?transport=udp>; rel=\"ice-server\"");
        if let Some((username, credential)) = &credentials {
            link.push_str(&format!(
                "; username={}; credential={}; credential-type=\"password\"",
                quoted(username),
                quoted(credential)
            ));
        }
        out.push(link);
    }
    out
}

fn strip_scheme<'a>(value: &'a str, schemes: &[&str]) -> &'a str {
    schemes
        .iter()
        .find_map(|s| value.strip_prefix(s))
        .unwrap_or(value)
}

/// An RFC 8288 quoted-string: backslash-escapes `"` and `\`.
fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_rest_matches_coturn_convention() {
        // Computed independently: printf '%s' 1700000000:streamcore |
        //   openssl dgst -sha1 -hmac s3cret -binary | base64
        let (user, credential) = turn_rest_credentials("s3cret", 1_700_000_000);
        assert_eq!(user, "1700000000:streamcore");
        assert_eq!(credential, "ZnT6RsKkB7J58f2IQLrNEI9vj9Q=");
        assert_ne!(credential, turn_rest_credentials("other", 1_700_000_000).1);
    }

    #[test]
    fn links_for_stun_and_static_turn() {
        let config = WebRtcConfig {
            stun_server: "stun.example.org:3478".into(),
            turn_servers: vec!["turn.example.org:3478".into(), "turn://t2:3479".into()],
            turn_username: "user".into(),
            turn_password: "pa\"ss".into(),
            ..WebRtcConfig::default()
        };
        assert_eq!(
            links(&config, 0),
            vec![
                "<stun:stun.example.org:3478>; rel=\"ice-server\"".to_string(),
                "<turn:turn.example.org:3478?transport=udp>; rel=\"ice-server\"; username=\"user\"; credential=\"pa\\\"ss\"; credential-type=\"password\"".to_string(),
                "<turn:t2:3479?transport=udp>; rel=\"ice-server\"; username=\"user\"; credential=\"pa\\\"ss\"; credential-type=\"password\"".to_string(),
            ]
        );
    }

    #[test]
    fn links_with_a_secret_expire() {
        let config = WebRtcConfig {
            turn_servers: vec!["turn.example.org:3478".into()],
            turn_secret: "s3cret".into(),
            turn_credential_seconds: 100,
            ..WebRtcConfig::default()
        };
        let found = links(&config, 1000);
        assert_eq!(found.len(), 1);
        let (user, credential) = turn_rest_credentials("s3cret", 1100);
        assert!(
            found[0].contains(&format!("username=\"{user}\"")),
            "{}",
            found[0]
        );
        assert!(found[0].contains(&format!("credential=\"{credential}\"")));
        assert!(links(&WebRtcConfig::default(), 0).is_empty());
    }
}

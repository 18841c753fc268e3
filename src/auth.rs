//! Admin credentials and the HS256 JWTs of the datarhei login flow.
//!
//! Tokens carry `iss`, `sub`, `usefor` (`access`, `refresh` or `viewer`), `iat`, `exp`, `exi` (the
//! validity in seconds, which restreamer-ui schedules its refresh by) and a random `jti`. Viewer
//! tokens (see [`crate::webrtc::token`]) add `pid`, the one process they may watch.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::config::AuthConfig;

/// Issuer written into every token; datarhei clients know this name.
pub const ISSUER: &str = "datarhei-core";

/// What a token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenUse {
    /// API calls.
    Access,
    /// Only `GET /api/login/refresh`.
    Refresh,
    /// Only watching the WebRTC stream of the process named in `pid`; never API calls.
    Viewer,
    /// Only publishing over WHIP into the process named in `pid`; never API calls.
    Publish,
}

/// The claims of a streamcore JWT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: the username.
    pub sub: String,
    /// Token kind.
    pub usefor: TokenUse,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Not before, unix seconds: `iat`, as datarhei Core issues it. Absent in tokens issued
    /// before it was added; present, it is checked.
    #[serde(default)]
    pub nbf: u64,
    /// Expiry, unix seconds.
    pub exp: u64,
    /// Validity in seconds (absent in viewer tokens).
    #[serde(default)]
    pub exi: u64,
    /// Unique token id.
    pub jti: String,
    /// The process a viewer token is for; absent in admin tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
}

/// The HMAC key of every token this server signs. It mixes in the admin credentials (when set)
/// so that changing the password invalidates every token issued before, viewer tokens included.
pub fn signing_key(config: &AuthConfig, secret: &str) -> String {
    format!("{}{}{}", config.username, config.password, secret)
}

/// HS256 validation with no leeway, our issuer, `nbf` checked, and the claims every token must
/// carry.
pub fn validation() -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_nbf = true;
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    validation
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Bad signature, wrong algorithm, malformed, or expired.
    #[error("invalid or expired token")]
    Invalid,
    /// A valid token of the wrong kind (e.g. a refresh token used for access).
    #[error("token is not valid for this use")]
    WrongUse,
}

/// Issues and checks tokens; absent when auth is off.
pub struct Authenticator {
    username: String,
    password: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    access_seconds: u64,
    refresh_seconds: u64,
}

impl Authenticator {
    /// Builds the authenticator when auth is enabled. The HMAC key mixes in the credentials so
    /// that changing the password invalidates every token issued before.
    pub fn new(config: &AuthConfig, secret: &str) -> Option<Authenticator> {
        if !config.enabled() {
            return None;
        }
        let key = signing_key(config, secret);
        let validation = validation();
        Some(Authenticator {
            username: config.username.clone(),
            password: config.password.clone(),
            encoding: EncodingKey::from_secret(key.as_bytes()),
            decoding: DecodingKey::from_secret(key.as_bytes()),
            validation,
            access_seconds: config.access_token_seconds,
            refresh_seconds: config.refresh_token_seconds,
        })
    }

    /// Compares credentials in constant time.
    pub fn check_credentials(&self, username: &str, password: &str) -> bool {
        let user_ok = self.username.as_bytes().ct_eq(username.as_bytes());
        let pass_ok = self.password.as_bytes().ct_eq(password.as_bytes());
        (user_ok & pass_ok).into()
    }

    /// Issues a token for the admin user. Viewer and publish tokens come from
    /// [`crate::webrtc::token::ProcessTokens`]; asking for one here gives an access-length token
    /// without a process, which no stream accepts.
    pub fn issue(&self, usefor: TokenUse) -> String {
        let validity = match usefor {
            TokenUse::Access | TokenUse::Viewer | TokenUse::Publish => self.access_seconds,
            TokenUse::Refresh => self.refresh_seconds,
        };
        let iat = now();
        let claims = Claims {
            iss: ISSUER.into(),
            sub: self.username.clone(),
            usefor,
            iat,
            nbf: iat,
            exp: iat + validity,
            exi: validity,
            jti: uuid::Uuid::new_v4().to_string(),
            pid: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding of plain claims cannot fail")
    }

    /// Verifies signature, algorithm, issuer, expiry and use.
    pub fn verify(&self, token: &str, usefor: TokenUse) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| TokenError::Invalid)?;
        if data.claims.usefor != usefor {
            return Err(TokenError::WrongUse);
        }
        Ok(data.claims)
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        let config = AuthConfig {
            username: "admin".into(),
            password: "pw".into(),
            ..Default::default()
        };
        Authenticator::new(&config, "s").unwrap()
    }

    #[test]
    fn disabled_without_credentials() {
        assert!(Authenticator::new(&AuthConfig::default(), "s").is_none());
    }

    #[test]
    fn access_and_refresh_are_not_interchangeable() {
        let a = auth();
        let access = a.issue(TokenUse::Access);
        let claims = a.verify(&access, TokenUse::Access).unwrap();
        assert_eq!(claims.exi, 600);
        assert_eq!(claims.exp - claims.iat, 600);
        assert_eq!(
            a.verify(&access, TokenUse::Refresh).err(),
            Some(TokenError::WrongUse)
        );
        let refresh = a.issue(TokenUse::Refresh);
        assert_eq!(
            a.verify(&refresh, TokenUse::Access).err(),
            Some(TokenError::WrongUse)
        );
    }

    #[test]
    fn a_token_not_yet_valid_is_refused() {
        let a = auth();
        let token = a.issue(TokenUse::Access);
        assert_eq!(a.verify(&token, TokenUse::Access).unwrap().nbf, now());
        let mut claims = a.verify(&token, TokenUse::Access).unwrap();
        claims.nbf = now() + 60;
        let early =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &a.encoding).unwrap();
        assert_eq!(
            a.verify(&early, TokenUse::Access).err(),
            Some(TokenError::Invalid)
        );
    }

    #[test]
    fn alg_none_and_foreign_keys_are_refused() {
        let a = auth();
        let token = a.issue(TokenUse::Access);
        let payload = token.split('.').nth(1).unwrap();
        // {"alg":"none","typ":"JWT"}
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert_eq!(
            a.verify(&none, TokenUse::Access).err(),
            Some(TokenError::Invalid)
        );
        let other = Authenticator::new(
            &AuthConfig {
                username: "admin".into(),
                password: "other".into(),
                ..Default::default()
            },
            "s",
        )
        .unwrap();
        assert_eq!(
            other.verify(&token, TokenUse::Access).err(),
            Some(TokenError::Invalid)
        );
        assert!(a.check_credentials("admin", "pw"));
        assert!(!a.check_credentials("admin", "pw2"));
    }
}

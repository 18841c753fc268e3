//! Viewer and publish tokens: HS256 JWTs that open the WebRTC stream (WHEP) or the WHIP input of
//! one process and nothing else.
//!
//! They are signed with the same key as the admin tokens ([`crate::auth::signing_key`]), but exist
//! when auth is off too: a process with `webrtc.access = "token"` must stay closed to anonymous
//! viewers whatever the admin login settings are.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use crate::auth::{now, signing_key, Claims, TokenError, TokenUse, ISSUER};
use crate::config::AuthConfig;

/// The `sub` of every viewer token.
pub const SUBJECT: &str = "viewer";
/// The `sub` of every publish token.
pub const PUBLISHER_SUBJECT: &str = "publisher";

/// Issues and checks viewer and publish tokens.
pub struct ProcessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

/// A freshly issued viewer token.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The JWT.
    pub token: String,
    /// Expiry, unix seconds.
    pub expires_at: u64,
}

impl ProcessTokens {
    /// Keys derived like the admin tokens' so one secret (and one password change) rules both.
    pub fn new(config: &AuthConfig, secret: &str) -> ProcessTokens {
        let key = signing_key(config, secret);
        ProcessTokens {
            encoding: EncodingKey::from_secret(key.as_bytes()),
            decoding: DecodingKey::from_secret(key.as_bytes()),
            validation: crate::auth::validation(),
        }
    }

    /// A viewer token for process `pid`, valid for `ttl_seconds`.
    pub fn issue(&self, pid: &str, ttl_seconds: u64) -> Issued {
        self.issue_as(TokenUse::Viewer, SUBJECT, pid, ttl_seconds)
    }

    /// A publish token for process `pid`, valid for `ttl_seconds`.
    pub fn issue_publish(&self, pid: &str, ttl_seconds: u64) -> Issued {
        self.issue_as(TokenUse::Publish, PUBLISHER_SUBJECT, pid, ttl_seconds)
    }

    fn issue_as(&self, usefor: TokenUse, sub: &str, pid: &str, ttl_seconds: u64) -> Issued {
        let iat = now();
        let claims = Claims {
            iss: ISSUER.into(),
            sub: sub.into(),
            usefor,
            iat,
            nbf: iat,
            exp: iat + ttl_seconds,
            exi: 0,
            jti: uuid::Uuid::new_v4().to_string(),
            pid: Some(pid.to_string()),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding of plain claims cannot fail");
        Issued {
            token,
            expires_at: claims.exp,
        }
    }

    /// Accepts only a valid, unexpired viewer token for exactly process `pid`.
    pub fn verify(&self, token: &str, pid: &str) -> Result<Claims, TokenError> {
        self.verify_as(token, pid, TokenUse::Viewer, SUBJECT)
    }

    /// Accepts only a valid, unexpired publish token for exactly process `pid`.
    pub fn verify_publish(&self, token: &str, pid: &str) -> Result<Claims, TokenError> {
        self.verify_as(token, pid, TokenUse::Publish, PUBLISHER_SUBJECT)
    }

    fn verify_as(
        &self,
        token: &str,
        pid: &str,
        usefor: TokenUse,
        sub: &str,
    ) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| TokenError::Invalid)?;
        let claims = data.claims;
        // An admin token is not a viewer token (it is checked separately, as an access token),
        // a viewer token publishes nothing, and a token for another process opens nothing here.
        if claims.usefor != usefor || claims.sub != sub {
            return Err(TokenError::WrongUse);
        }
        if claims.pid.as_deref() != Some(pid) {
            return Err(TokenError::WrongUse);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Authenticator;

    fn config() -> AuthConfig {
        AuthConfig {
            username: "admin".into(),
            password: "pw".into(),
            ..Default::default()
        }
    }

    #[test]
    fn viewer_token_opens_only_its_process() {
        let tokens = ProcessTokens::new(&config(), "s");
        let issued = tokens.issue("cam", 60);
        let claims = tokens.verify(&issued.token, "cam").unwrap();
        assert_eq!(claims.pid.as_deref(), Some("cam"));
        assert_eq!(claims.sub, "viewer");
        assert_eq!(claims.exp, issued.expires_at);
        assert_eq!(
            tokens.verify(&issued.token, "other").err(),
            Some(TokenError::WrongUse)
        );
    }

    #[test]
    fn publish_and_viewer_tokens_do_not_mix() {
        let tokens = ProcessTokens::new(&config(), "s");
        let publish = tokens.issue_publish("cam", 60).token;
        assert_eq!(
            tokens.verify_publish(&publish, "cam").unwrap().sub,
            "publisher"
        );
        assert_eq!(
            tokens.verify(&publish, "cam").err(),
            Some(TokenError::WrongUse)
        );
        assert_eq!(
            tokens.verify_publish(&publish, "other").err(),
            Some(TokenError::WrongUse)
        );
        let viewer = tokens.issue("cam", 60).token;
        assert_eq!(
            tokens.verify_publish(&viewer, "cam").err(),
            Some(TokenError::WrongUse)
        );
    }

    #[test]
    fn viewer_and_admin_tokens_do_not_mix() {
        let auth = Authenticator::new(&config(), "s").unwrap();
        let tokens = ProcessTokens::new(&config(), "s");
        let viewer = tokens.issue("cam", 60).token;
        assert_eq!(
            auth.verify(&viewer, TokenUse::Access).err(),
            Some(TokenError::WrongUse)
        );
        let access = auth.issue(TokenUse::Access);
        assert_eq!(
            tokens.verify(&access, "cam").err(),
            Some(TokenError::WrongUse)
        );
    }

    #[test]
    fn expired_and_foreign_tokens_are_invalid() {
        let tokens = ProcessTokens::new(&config(), "s");
        let expired = tokens.issue("cam", 0).token;
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(
            tokens.verify(&expired, "cam").err(),
            Some(TokenError::Invalid)
        );
        let other = ProcessTokens::new(&config(), "other-secret");
        let foreign = other.issue("cam", 60).token;
        assert_eq!(
            tokens.verify(&foreign, "cam").err(),
            Some(TokenError::Invalid)
        );
    }
}

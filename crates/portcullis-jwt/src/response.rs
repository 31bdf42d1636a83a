//! `TokenResponse`: the JSON answer carrying an access token (RFC 6749 §5.1).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::issuer::AccessToken;

/// The token response of RFC 6749 §5.1: what a login or a refresh answers
/// with, as JSON.
///
/// ```
/// use portcullis_jwt::{Algorithm, JwtIssuer, SigningKey, TokenResponse};
///
/// let issuer = JwtIssuer::builder(SigningKey::generate("k1", Algorithm::ES256).unwrap())
///     .issuer("https://auth.example.com")
///     .audience("api")
///     .build()
///     .unwrap();
/// let access = issuer.token("alice").mint().unwrap();
/// let body = serde_json::to_value(access.to_response()).unwrap();
/// assert_eq!(body["token_type"], "Bearer");
/// assert_eq!(body["expires_in"], 900);
/// assert!(body.get("refresh_token").is_none());
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TokenResponse {
    /// The access token (a compact JWS).
    pub access_token: String,
    /// How to present it: `DPoP` for a token bound to the client's DPoP
    /// key ([`AccessToken::jkt`], RFC 9449 §5), `Bearer` otherwise.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The refresh token, when the answer carries one in the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl TokenResponse {
    /// The response for `access` (no refresh token): `token_type: DPoP`
    /// when the token is bound to a DPoP key, `Bearer` otherwise.
    #[must_use]
    pub fn new(access: &AccessToken) -> Self {
        let token_type = if access.jkt.is_some() {
            "DPoP"
        } else {
            "Bearer"
        };
        Self {
            access_token: access.token.clone(),
            token_type: token_type.to_owned(),
            expires_in: access.expires_in,
            refresh_token: None,
        }
    }

    /// Adds a refresh token to the body.
    #[must_use]
    pub fn with_refresh_token(mut self, refresh_token: impl Into<String>) -> Self {
        self.refresh_token = Some(refresh_token.into());
        self
    }
}

impl From<&AccessToken> for TokenResponse {
    fn from(access: &AccessToken) -> Self {
        Self::new(access)
    }
}

impl AccessToken {
    /// This token as an RFC 6749 token response.
    #[must_use]
    pub fn to_response(&self) -> TokenResponse {
        TokenResponse::new(self)
    }
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"REDACTED")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "REDACTED"),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> AccessToken {
        AccessToken {
            token: "secret.jws.value".into(),
            jti: "j".into(),
            expires_at: 1_000,
            expires_in: 900,
            jkt: None,
        }
    }

    #[test]
    fn a_bound_token_is_a_dpop_token() {
        let bound = AccessToken {
            jkt: Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I".into()),
            ..access()
        };
        let body = serde_json::to_value(bound.to_response()).unwrap();
        assert_eq!(body["token_type"], "DPoP");
        assert!(body.get("jkt").is_none() && body.get("cnf").is_none());
    }

    #[test]
    fn serializes_the_rfc_6749_fields() {
        let body = serde_json::to_value(TokenResponse::new(&access())).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"access_token": "secret.jws.value", "token_type": "Bearer", "expires_in": 900})
        );
        let with = access().to_response().with_refresh_token("r");
        let body = serde_json::to_value(&with).unwrap();
        assert_eq!(body["refresh_token"], "r");
        let back: TokenResponse = serde_json::from_value(body).unwrap();
        assert_eq!(back, with);
    }

    #[test]
    fn debug_redacts_both_tokens() {
        let text = format!(
            "{:?}",
            access().to_response().with_refresh_token("refresh-secret")
        );
        assert!(!text.contains("secret.jws"), "{text}");
        assert!(!text.contains("refresh-secret"), "{text}");
        assert!(text.contains("REDACTED"));
    }
}

//! A token family: one login on one device.

use std::time::Duration;

use portcullis_core::{Deadlines, Timestamp, TokenDigest};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::token::FamilyId;

/// Where a family lives: shown in device lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// The `User-Agent` of the last login or refresh.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// The client address of the last login or refresh.
    #[serde(default)]
    pub ip: Option<String>,
}

/// A digest of a rotated token and when it was rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotated {
    /// SHA-256 of the rotated token's secret.
    #[serde(with = "digest_hex")]
    pub digest: TokenDigest,
    /// When it was rotated (the grace window starts here).
    pub at: Timestamp,
}

/// One login on one device, as a store keeps it. Tokens are kept only as
/// SHA-256 digests of their secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Family {
    /// The family id (the access tokens' `sid`).
    pub id: FamilyId,
    /// The user.
    pub user_id: String,
    /// Claims copied into every access token minted for the family (roles,
    /// scope, ..., and the login's `auth_time`, `amr` and `acr`), fixed at
    /// login.
    #[serde(default)]
    pub claims: Map<String, Value>,
    /// Device metadata.
    #[serde(default)]
    pub device: DeviceInfo,
    /// Login time.
    pub created_at: Timestamp,
    /// Last refresh (or login).
    pub last_used_at: Timestamp,
    /// Ends at the idle deadline unless refreshed before, at the absolute
    /// one whatever happens (never extended).
    pub deadlines: Deadlines,
    /// The live token's digest.
    #[serde(with = "digest_hex")]
    pub current: TokenDigest,
    /// The token it replaced, for the grace window.
    #[serde(default)]
    pub previous: Option<Rotated>,
    /// Older tokens (newest last, bounded): presenting one is reuse.
    #[serde(default, with = "digest_hex_vec")]
    pub history: Vec<TokenDigest>,
    /// Number of rotations so far.
    #[serde(default)]
    pub rotations: u64,
    /// The DPoP key the family is bound to (RFC 9449 §5): the RFC 7638
    /// SHA-256 thumbprint of the key whose proof came with the login,
    /// fixed for the family's life. Every refresh of a bound family needs
    /// a proof signed by that key, and its access tokens carry it as
    /// `cnf.jkt`. `None`: an unbound (bearer) family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
}

impl Family {
    /// When the family ends: the earlier deadline.
    #[must_use]
    pub fn expires_at(&self) -> Timestamp {
        self.deadlines.expires_at()
    }

    /// Whether it has ended at `now`.
    #[must_use]
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.deadlines.is_expired(now)
    }

    /// What `presented` is to this family at `now`, with a `grace` window.
    #[must_use]
    pub fn classify(&self, presented: &TokenDigest, now: Timestamp, grace: Duration) -> Presented {
        use subtle::ConstantTimeEq as _;
        let eq = |a: &TokenDigest| bool::from(a.as_bytes().ct_eq(presented.as_bytes()));
        if eq(&self.current) {
            return Presented::Current;
        }
        if let Some(prev) = &self.previous {
            if eq(&prev.digest) {
                return if now.saturating_since(prev.at) <= grace {
                    Presented::InGrace
                } else {
                    Presented::Reused
                };
            }
        }
        if self.history.iter().any(eq) {
            return Presented::Reused;
        }
        Presented::Unknown
    }

    /// Rotates in place: the current token becomes the previous one,
    /// `successor` becomes current, the idle deadline slides (never past the
    /// absolute one).
    pub fn rotate(
        &mut self,
        successor: TokenDigest,
        now: Timestamp,
        idle: Duration,
        history_limit: usize,
        device: &DeviceInfo,
    ) {
        if let Some(prev) = self.previous.take() {
            self.history.push(prev.digest);
            if self.history.len() > history_limit {
                let excess = self.history.len() - history_limit;
                self.history.drain(..excess);
            }
        }
        self.previous = Some(Rotated {
            digest: self.current,
            at: now,
        });
        self.current = successor;
        self.last_used_at = now;
        self.deadlines.idle = (now + idle).min(self.deadlines.absolute);
        self.rotations += 1;
        if device.user_agent.is_some() || device.ip.is_some() {
            self.device = device.clone();
        }
    }
}

/// What a presented token is to its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// The live token: rotate.
    Current,
    /// The immediately rotated token, inside the grace window: answer with
    /// the same successor.
    InGrace,
    /// An older token, or the previous one after the grace window: reuse.
    Reused,
    /// Not a token of this family (forged or garbage): refuse, no revocation.
    Unknown,
}

/// A rotation request to a store: compare-and-swap on the presented digest.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The family.
    pub family: FamilyId,
    /// Digest of the presented token.
    pub presented: TokenDigest,
    /// Digest of its successor (derived by the caller; the same for repeats).
    pub successor: TokenDigest,
    /// The request's time.
    pub now: Timestamp,
    /// The grace window for the previous token.
    pub grace: Duration,
    /// The idle timeout to slide.
    pub idle: Duration,
    /// How many old digests to keep for reuse detection.
    pub history_limit: usize,
    /// The device making the request.
    pub device: DeviceInfo,
}

/// The outcome of [`RefreshStore::rotate`](crate::RefreshStore::rotate).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RotateOutcome {
    /// The presented token was current: the family now has `successor` as
    /// its current token.
    Rotated(Family),
    /// The presented token is the previous one, inside the grace window, and
    /// the family's current token is `successor`: nothing was written; answer
    /// with the same successor.
    Repeat(Family),
    /// Reuse: the family has been deleted (all its tokens, newest included).
    Reused(Family),
    /// No live family, or a token this family never issued: nothing changed.
    Invalid,
    /// The family has passed its idle or absolute deadline and the
    /// presented token is one it issued: nothing rotated (the family may
    /// have been deleted). A store may answer [`Invalid`](Self::Invalid)
    /// instead; with this answer the refresher reports the expiry (event
    /// `family_expired`).
    Expired(Family),
    /// The previous token inside grace, but the current token is not the
    /// successor the caller derived (instances with different rotation
    /// keys): nothing changed.
    KeyMismatch,
}

mod digest_hex {
    use portcullis_core::TokenDigest;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &TokenDigest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.to_hex())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TokenDigest, D::Error> {
        let s = String::deserialize(d)?;
        TokenDigest::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

mod digest_hex_vec {
    use portcullis_core::TokenDigest;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &[TokenDigest], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(d.iter().map(TokenDigest::to_hex))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<TokenDigest>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| TokenDigest::from_hex(s).map_err(serde::de::Error::custom))
            .collect()
    }
}
